"""YX blocks of a slice and the exact input each needs: the unit of out-of-core prediction.

A block is a rectangle of the output slice. For each test-time transform it is mapped into that
transform's frame, the tiles of the frame's plan that keep pixels inside it are selected (their
kept parts clipped to the block), and the mirrored input those tiles read is gathered from the
image by index: reflection (``np.pad(mode="reflect")``), flips and the transpose become index
arrays into one bounding box of the original slice. Every tile sees exactly the pixels it sees
in the whole-slice prediction, so a block result is bit-identical to that part of the slice.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..dihedral import dihedral
from .geometry import AxisPlan, TilePlan

__all__ = [
    "Block",
    "FrameBlock",
    "FrameMap",
    "block_grid",
    "frame_block",
    "frame_map",
    "reflect_index",
]

#: ``(y0, y1, x0, x1)``: a rectangle of the output slice
Block = tuple[int, int, int, int]


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """The pixel ``np.pad(mode="reflect")`` puts at (unpadded) position ``index`` of an axis of ``n``."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


@dataclass(frozen=True)
class FrameMap:
    """How transform ``k``'s frame maps to the original slice.

    Frame rows run along the original axis ``row_axis`` (0: Y, 1: X), reversed when
    ``row_reversed``; frame columns along the other axis, reversed when ``col_reversed``.
    """

    row_axis: int
    row_reversed: bool
    col_reversed: bool

    @property
    def transposed(self) -> bool:
        return self.row_axis == 1

    def frame_shape(self, hw: tuple[int, int]) -> tuple[int, int]:
        return (hw[1], hw[0]) if self.transposed else hw


@functools.lru_cache(maxsize=8)
def frame_map(k: int) -> FrameMap:
    """Decode :func:`napari_unet.dihedral.dihedral` ``k`` from a 2x3 probe (no second definition)."""
    probe = np.arange(6).reshape(2, 3)  # value = 3 * y + x
    d = dihedral(probe, k)
    transposed = d.shape == (3, 2)
    y0, x0 = divmod(int(d[0, 0]), 3)
    if transposed:  # rows follow X, columns follow Y
        return FrameMap(1, x0 == 2, y0 == 1)
    return FrameMap(0, y0 == 1, x0 == 2)


def _group_axis(axis: AxisPlan, size: int) -> list[tuple[int, int]]:
    """Consecutive tiles whose kept extent is at most ``size`` (one tile at least), as output ranges."""
    groups: list[tuple[int, int]] = []
    start = axis.keep[0][2]
    for i in range(axis.n_tiles):
        stop = axis.keep[i][3]
        nxt = axis.keep[i + 1][3] if i + 1 < axis.n_tiles else None
        if nxt is None or nxt - start > size:
            groups.append((start, stop))
            start = stop
    return groups


def block_grid(plan: TilePlan, block_size: int | tuple[int, int]) -> list[Block]:
    """The blocks of a slice, row-major: whole tiles of ``plan``, at most ``block_size`` kept pixels per side.

    Aligned with the tiles, so no tile is computed twice; a slice smaller than a block is one block.
    """
    by, bx = (block_size, block_size) if isinstance(block_size, int) else block_size
    rows, cols = _group_axis(plan.y, by), _group_axis(plan.x, bx)
    return [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]


@dataclass(frozen=True)
class FrameBlock:
    """One block in one transform's frame: its tiles, and the input they read.

    ``shape`` is the block in the frame; ``tiles`` are ``(y0, x0, keep_y, keep_x)`` with ``y0, x0``
    in the gathered input and ``keep`` ``(src_start, src_stop, dst_start, dst_stop)`` with ``dst``
    in the block; ``rows``/``cols`` index the original slice's axes ``map.row_axis`` and the other.
    """

    k: int
    map: FrameMap
    plan: TilePlan
    shape: tuple[int, int]
    tiles: tuple[tuple[int, int, tuple[int, ...], tuple[int, ...]], ...]
    rows: np.ndarray
    cols: np.ndarray

    @property
    def tile(self) -> tuple[int, int]:
        return self.plan.tile

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    def bounds(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the part of the original slice this frame block reads."""
        ys, xs = (self.cols, self.rows) if self.map.transposed else (self.rows, self.cols)
        return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1

    def gather(self, data: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """This frame's input from ``data``, the original slice's part starting at ``origin``."""
        ys, xs = (self.cols, self.rows) if self.map.transposed else (self.rows, self.cols)
        ys, xs = ys - origin[0], xs - origin[1]
        region = data[_index(ys), :][:, _index(xs)]
        return np.ascontiguousarray(region.T if self.map.transposed else region)


def _index(idx: np.ndarray) -> slice | np.ndarray:
    """A slice when ``idx`` is an ascending run (a view, no copy), else the index array."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _axis_range(lo: int, hi: int, n: int, reversed_: bool) -> tuple[int, int]:
    return (n - hi, n - lo) if reversed_ else (lo, hi)


def _axis_tiles(
    axis: AxisPlan, lo: int, hi: int
) -> tuple[list[tuple[int, tuple[int, int, int, int]]], int, int]:
    """Tiles keeping pixels in ``[lo, hi)``: ``(start, clipped keep)``, first input, end of input."""
    out = []
    for start, (s0, s1, d0, d1) in zip(axis.starts, axis.keep):
        a, b = max(d0, lo), min(d1, hi)
        if a < b:
            out.append((start, (s0 + a - d0, s1 - (d1 - b), a - lo, b - lo)))
    return out, out[0][0], out[-1][0] + axis.tile


def _original(frame_idx: np.ndarray, n: int, reversed_: bool) -> np.ndarray:
    return (n - 1 - frame_idx) if reversed_ else frame_idx


def frame_block(k: int, plan: TilePlan, block: Block, hw: tuple[int, int]) -> FrameBlock:
    """Block ``block`` of a slice of shape ``hw`` in transform ``k``'s frame, tiled by ``plan``.

    ``plan`` is the plan of the frame (of shape ``frame_map(k).frame_shape(hw)``).
    """
    fm = frame_map(k)
    y0, y1, x0, x1 = block
    ny, nx = fm.frame_shape(hw)
    (r_lo, r_hi), (c_lo, c_hi) = ((x0, x1), (y0, y1)) if fm.transposed else ((y0, y1), (x0, x1))
    r_lo, r_hi = _axis_range(r_lo, r_hi, ny, fm.row_reversed)
    c_lo, c_hi = _axis_range(c_lo, c_hi, nx, fm.col_reversed)
    ty, ry0, ry1 = _axis_tiles(plan.y, r_lo, r_hi)
    tx, rx0, rx1 = _axis_tiles(plan.x, c_lo, c_hi)
    tiles = tuple((sy - ry0, sx - rx0, ky, kx) for sy, ky in ty for sx, kx in tx)
    rows = reflect_index(np.arange(ry0, ry1) - plan.y.pad_before, ny)
    cols = reflect_index(np.arange(rx0, rx1) - plan.x.pad_before, nx)
    rows = _original(rows, ny, fm.row_reversed)
    cols = _original(cols, nx, fm.col_reversed)
    return FrameBlock(k, fm, plan, (r_hi - r_lo, c_hi - c_lo), tiles, rows, cols)


def union_bounds(frames: Sequence[FrameBlock]) -> tuple[int, int, int, int]:
    """The bounding box of what ``frames`` read (one read of the source serves them all)."""
    boxes = [f.bounds() for f in frames]
    return (
        min(b[0] for b in boxes),
        max(b[1] for b in boxes),
        min(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def iter_blocks(n_slices: int, blocks: Sequence[Block], z0: int = 0) -> Iterator[tuple[int, Block]]:
    """``(z, block)`` for every block of slices ``z0 .. n_slices - 1``, slice by slice."""
    for z in range(z0, n_slices):
        for block in blocks:
            yield z, block
