"""Reading blocks of a class and stitching labels across blocks: helpers of :mod:`.objects`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import ArgumentError
from .slices import read_block

# --------------------------------------------------------------------------- reading


def spatial_shape(source: Any, kind: str) -> tuple[int, ...]:
    shape = tuple(int(n) for n in source.shape)
    if kind == "probabilities":
        if len(shape) not in (3, 4):
            raise ArgumentError(f"probabilities must be (C, Y, X) or (C, Z, Y, X), got {shape}")
        return shape[1:]
    if kind == "classes":
        if len(shape) not in (2, 3):
            raise ArgumentError(f"a class map must be (Y, X) or (Z, Y, X), got {shape}")
        return shape
    raise ArgumentError(f"kind must be 'probabilities' or 'classes', got {kind!r}")


def read_class_prob(source: Any, kind: str, cls: int, z0: int, z1: int, is3d: bool) -> np.ndarray:
    """The probability (or 0/1 indicator) of class ``cls`` for slices z0..z1-1, (Z', Y, X)."""
    if kind == "probabilities":
        block = read_block(source, (cls - 1, slice(z0, z1)) if is3d else (cls - 1,))
        block = block.astype(np.float32, copy=False)
    else:
        block = read_block(source, slice(z0, z1) if is3d else ...) == cls
        block = block.astype(np.float32)
    return block if is3d else block[None]


def check_class_present(source: Any, kind: str, cls: int) -> None:
    """One-line error when class ``cls`` is not in the source (bounded reads)."""
    if kind == "probabilities":
        n = int(source.shape[0])
        if not 1 <= cls <= n:
            raise ArgumentError(f"class {cls} is not in probabilities of {n} classes")
        return
    shape = tuple(source.shape)
    n = shape[0] if len(shape) == 3 else 1
    for z in range(n):
        if np.any(read_block(source, z if len(shape) == 3 else ...) == cls):
            return
    raise ArgumentError(f"the class map holds no pixel of class {cls}")


# --------------------------------------------------------------------------- stitching


class UnionFind:
    def __init__(self) -> None:
        self.parent = np.zeros(1, np.int64)

    def grow(self, n: int) -> None:
        old = len(self.parent)
        if n + 1 > old:
            self.parent = np.concatenate([self.parent, np.arange(old, n + 1, dtype=np.int64)])

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[a] != root:
            self.parent[a], a = root, int(self.parent[a])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], np.int64)


def stitch(uf: UnionFind, below: np.ndarray, above: np.ndarray, any_overlap: bool) -> None:
    """Join labels of two neighbouring slices from different blocks that overlap.

    Objects join on any overlap (exactly 3D connectivity); boundary segments only
    when the overlap covers more than half of the smaller of the two.
    """
    both = (below > 0) & (above > 0)
    if not both.any():
        return
    pairs, counts = np.unique(np.stack([below[both], above[both]]), axis=1, return_counts=True)
    size_b = np.bincount(below.ravel())
    size_a = np.bincount(above.ravel())
    for (a, b), c in zip(pairs.T, counts):
        if any_overlap or c > 0.5 * min(size_b[a], size_a[b]):
            uf.union(int(a), int(b))
