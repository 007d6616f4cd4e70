"""Flips and 90-degree rotations of the last two axes (numpy arrays and torch tensors).

Augmentation draws them; test-time augmentation applies each and its inverse.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["N_TRANSFORMS", "dihedral", "dihedral_inverse", "flip_rotate"]

#: the eight elements of the dihedral group of the square
N_TRANSFORMS = 8


def _flip(x: Any, axis: int) -> Any:
    if isinstance(x, np.ndarray):
        return np.flip(x, axis)
    return x.flip(axis)


def _rot90(x: Any, k: int) -> Any:
    if isinstance(x, np.ndarray):
        return np.rot90(x, k, axes=(-2, -1))
    import torch

    return torch.rot90(x, k, dims=(-2, -1))


def flip_rotate(x: Any, flip_y: bool, flip_x: bool, k: int) -> Any:
    """Flip Y and/or X, then rotate by ``k`` quarter turns: ``out(p) = x(D p)`` about the centre."""
    if flip_y:
        x = _flip(x, -2)
    if flip_x:
        x = _flip(x, -1)
    if k % 4:
        x = _rot90(x, k % 4)
    return x


def dihedral(x: Any, k: int) -> Any:
    """Transform ``k`` (0..7): a flip of X for ``k >= 4``, then ``k % 4`` quarter turns."""
    return flip_rotate(x, False, k >= 4, k % 4)


def dihedral_inverse(x: Any, k: int) -> Any:
    """The inverse of :func:`dihedral` ``(x, k)``."""
    if k % 4:
        x = _rot90(x, -(k % 4))
    return _flip(x, -1) if k >= 4 else x
