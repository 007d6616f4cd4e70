"""Flips and rotations shared by augmentation and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.dihedral import N_TRANSFORMS, dihedral, dihedral_inverse, flip_rotate


@pytest.mark.parametrize("k", range(N_TRANSFORMS))
def test_inverse_undoes_each_transform_for_numpy_and_torch(k: int) -> None:
    x = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(dihedral_inverse(dihedral(x, k), k), x)
    t = torch.from_numpy(x.copy())
    assert torch.equal(dihedral_inverse(dihedral(t, k), k), t)
    np.testing.assert_array_equal(dihedral(t, k).numpy(), dihedral(x, k))


def test_the_eight_transforms_are_distinct() -> None:
    x = np.arange(9).reshape(3, 3)
    assert len({dihedral(x, k).tobytes() for k in range(N_TRANSFORMS)}) == N_TRANSFORMS


def test_flip_rotate_flips_then_rotates() -> None:
    x = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(flip_rotate(x, True, False, 0), [[3, 4], [1, 2]])
    np.testing.assert_array_equal(flip_rotate(x, False, True, 1), np.rot90(x[:, ::-1]))
    np.testing.assert_array_equal(flip_rotate(x, True, True, 0), np.rot90(x, 2))
