"""Sliding-window geometry: where each tile of a slice starts and which part of it is kept.

Valid-padded networks step on the pooling grid; same-padded ones overlap (see docs/TILING.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..checks import check_int

__all__ = ["AxisPlan", "TilePlan", "exact_overlap", "plan_tiles"]

#: what tiling reads from a network (a napari_unet UNet has them all)
_REQUIRED_ATTRIBUTES = (
    "padding",
    "depth",
    "n_classes",
    "in_channels",
    "context",
    "size_multiple",
    "output_size",
    "valid_input_size",
)


def check_model(model: Any) -> None:
    """Raise unless ``model`` is a single-channel napari_unet UNet (or quacks like one)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a napari_unet UNet (a torch.nn.Module), got {type(model).__name__}"
        )
    missing = [name for name in _REQUIRED_ATTRIBUTES if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"model must be a napari_unet UNet; {type(model).__name__} lacks {', '.join(missing)}"
        )
    if model.padding not in ("valid", "same"):
        raise ValueError(f"model.padding must be 'valid' or 'same', got {model.padding!r}")
    if int(model.in_channels) != 1:
        raise ValueError(
            f"tiled prediction supports single-channel (grayscale) networks only; this "
            f"model has in_channels={model.in_channels}"
        )


def tile_pair(value: Any, name: str) -> tuple[int, int]:
    """An int or a ``(height, width)`` pair of positive ints, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
        items = list(value)
    else:
        items = [value, value]
    height, width = (check_int(name, item, 1) for item in items)
    return height, width


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one image axis.

    Attributes
    ----------
    size : int
        Image length along the axis.
    tile : int
        Network input tile length.
    out_tile : int
        Network output tile length (``tile`` for same padding).
    pad_before, pad_after : int
        Mirror padding of the slice before the first / after the last pixel.
    starts : tuple of int
        Input tile origins in padded coordinates.
    keep : tuple of (int, int, int, int)
        Per tile ``(src_start, src_stop, dst_start, dst_stop)``: the part of the
        network output tile that is kept and where it goes in the image.
    """

    size: int
    tile: int
    out_tile: int
    pad_before: int
    pad_after: int
    starts: tuple[int, ...]
    keep: tuple[tuple[int, int, int, int], ...]

    @property
    def padded(self) -> int:
        return self.pad_before + self.size + self.pad_after

    @property
    def n_tiles(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class TilePlan:
    """Tiling of a 2-D slice: the product of two :class:`AxisPlan`."""

    y: AxisPlan
    x: AxisPlan

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.size, self.x.size

    @property
    def tile(self) -> tuple[int, int]:
        return self.y.tile, self.x.tile

    @property
    def n_tiles(self) -> int:
        return self.y.n_tiles * self.x.n_tiles

    @property
    def pad_width(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.y.pad_before, self.y.pad_after), (self.x.pad_before, self.x.pad_after)

    def tiles(self) -> Iterator[tuple[int, int, tuple[int, ...], tuple[int, ...]]]:
        """Yield ``(y0, x0, keep_y, keep_x)`` for every tile, row-major."""
        for y0, ky in zip(self.y.starts, self.y.keep):
            for x0, kx in zip(self.x.starts, self.x.keep):
                yield y0, x0, ky, kx


def _min_tile(model: nn.Module, overlap: int) -> int:
    """Smallest useful input tile: one that keeps at least ``size_multiple`` pixels."""
    m = int(model.size_multiple)
    if model.padding == "valid":
        return int(model.valid_input_size(int(model.context) + m))
    return overlap + m


def _same_extents(depth: int) -> list[tuple[int, int]]:
    """Exact receptive-field extents ``(left, right)`` of a same-padded output pixel.

    Entry ``p`` is for a pixel at position ``p`` modulo ``2**(depth - 1)``
    relative to the pooling grid.  Interval arithmetic through the UNet's
    graph: two 3x3 convolutions per level (+-2 feature pixels), 2x2 pooling
    (level ``l`` position ``r`` covers ``2r, 2r + 1`` of level ``l - 1``) and
    2x2 stride-2 up-convolutions (level ``l`` position ``a`` comes from
    ``a // 2`` of level ``l + 1``).  Pooling and up-convolution make the
    extents depend on the phase: they are asymmetric and, for some phases,
    larger than the receptive-field radius ``(receptive_field - 1) / 2``.
    """

    def encoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2
        if level == 0:
            return lo, hi
        return encoder(level - 1, 2 * lo, 2 * hi + 1)

    def decoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2
        skip_lo, skip_hi = encoder(level, lo, hi)
        if level + 1 == depth - 1:
            up_lo, up_hi = encoder(depth - 1, lo // 2, hi // 2)
        else:
            up_lo, up_hi = decoder(level + 1, lo // 2, hi // 2)
        return min(skip_lo, up_lo), max(skip_hi, up_hi)

    out = []
    for p in range(2 ** (depth - 1)):
        lo, hi = encoder(0, p, p) if depth == 1 else decoder(0, p, p)
        out.append((p - lo, hi - p))
    return out


@functools.lru_cache(maxsize=32)
def exact_overlap(depth: int) -> int:
    """Smallest tile overlap that makes same-padded tiling exact for a UNet of ``depth``.

    A multiple of ``m = 2**(depth - 1)`` (tiles start on the pooling grid),
    even, such that with ``overlap / 2`` pixels discarded on each shared edge
    every kept pixel's receptive field (:func:`_same_extents`, per phase) lies
    inside its tile: 4, 16, 44, 96, 192, 384, 768 for depths 1 to 7 (for
    depths 3 to 7 the receptive field rounded up to a multiple of ``m``).
    Checked against brute force (tiled vs whole-image) in the tests.
    """
    m = 2 ** (depth - 1)
    ext = _same_extents(depth)
    overlap = 0
    while True:
        if overlap % 2 == 0:
            half = overlap // 2
            left_ok = all(ext[x % m][0] <= x for x in range(half, half + m))
            right_ok = all(ext[(-1 - half - j) % m][1] <= half + j for j in range(m))
            if left_ok and right_ok:
                return overlap
        overlap += m


def resolve_overlap(model: nn.Module, overlap: Any) -> int:
    """Overlap of adjacent input tiles: ``context`` (valid), the given or exact one (same)."""
    if model.padding == "valid":
        if overlap is not None:
            raise ValueError(
                "overlap applies only to padding='same' networks; a valid-padded network "
                "always uses its context"
            )
        return int(model.context)
    if overlap is None:
        return exact_overlap(int(model.depth))
    overlap = check_int("overlap", overlap, 0)
    return _ceil_to(overlap, int(model.size_multiple)) if overlap else 0


def round_tile(model: nn.Module, target: int, overlap: int) -> int:
    """Round a requested input tile up to a possible size, at least the minimum."""
    m = int(model.size_multiple)
    target = max(int(target), _min_tile(model, overlap))
    if model.padding == "valid":
        return int(model.valid_input_size(target))
    return _ceil_to(target, m)


def _plan_axis_valid(model: nn.Module, n: int, target: int) -> AxisPlan:
    m = int(model.size_multiple)
    c = int(model.context)
    t_max = round_tile(model, target, c)
    s_max = (int(model.output_size(t_max)) // m) * m
    k = -(-n // s_max)
    s = _ceil_to(-(-n // k), m)
    t = int(model.valid_input_size(s + c))
    o = int(model.output_size(t))
    starts = tuple(i * s for i in range(k))
    keep = tuple((0, min(s, n - i * s), i * s, min(i * s + s, n)) for i in range(k))
    pad_before = c // 2
    pad_after = (k - 1) * s + t - pad_before - n
    return AxisPlan(n, t, o, pad_before, pad_after, starts, keep)


def _plan_axis_same(model: nn.Module, n: int, target: int, overlap: int) -> AxisPlan:
    m = int(model.size_multiple)
    p = _ceil_to(n, m)
    t_max = round_tile(model, target, overlap)
    if p <= t_max:
        return AxisPlan(n, p, p, 0, p - n, (0,), ((0, n, 0, n),))
    s_max = t_max - overlap
    k = -(-(p - overlap) // s_max)
    s = _ceil_to(-(-(p - overlap) // k), m)
    t = s + overlap
    half = overlap // 2
    starts = [i * s for i in range(k - 1)] + [p - t]
    bounds = [0] + [i * s + half for i in range(1, k)] + [n]
    keep = tuple(
        (bounds[i] - starts[i], bounds[i + 1] - starts[i], bounds[i], bounds[i + 1])
        for i in range(k)
    )
    return AxisPlan(n, t, t, 0, p - n, tuple(starts), keep)


def plan_tiles(
    model: nn.Module,
    shape: Sequence[int],
    tile_size: int | Sequence[int],
    overlap: int | None = None,
) -> TilePlan:
    """The tiling :func:`~napari_unet.tiling.predict_tiled` uses for a slice of ``shape``.

    Parameters
    ----------
    model : UNet
    shape : (int, int)
        Slice height and width.
    tile_size : int or (int, int)
        Largest network *input* tile; rounded up to a possible size (valid
        padding: :meth:`UNet.valid_input_size`; same padding: a multiple of
        ``size_multiple``) and to at least the smallest tile that keeps
        ``size_multiple`` pixels.  Tiles are then balanced (equal and just
        large enough), so they may be smaller.
    overlap : int, optional
        Same padding only: overlap of adjacent input tiles (rounded up to a
        multiple of ``size_multiple``); default :func:`exact_overlap`.

    Returns
    -------
    TilePlan
    """
    check_model(model)
    if len(shape) != 2:
        raise ValueError(f"shape must be (height, width), got {shape!r}")
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    ty, tx = tile_pair(tile_size, "tile_size")
    ov = resolve_overlap(model, overlap)
    if model.padding == "valid":
        return TilePlan(_plan_axis_valid(model, height, ty), _plan_axis_valid(model, width, tx))
    return TilePlan(_plan_axis_same(model, height, ty, ov), _plan_axis_same(model, width, tx, ov))


def pad_slice(data: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Mirror-extend a slice for ``plan`` (contiguous; a copy only when it is padded).

    ``np.pad(mode="reflect")`` reflects repeatedly when a pad exceeds the axis,
    and a length-1 axis reflects to its only value, so even a 1x1 slice works.
    """
    pad = plan.pad_width
    if pad == ((0, 0), (0, 0)):
        return np.ascontiguousarray(data)
    return np.pad(data, pad, mode="reflect")
