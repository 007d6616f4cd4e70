"""Tiled (overlap-tile) prediction of 2-D slices and Z-stacks of any size.

Two entry points:

:func:`predict_tiled`
    Predicts a 2-D image ``(H, W)`` or a stack ``(Z, H, W)`` held in anything
    sliceable -- a numpy array, an ``np.memmap``, a dask or a zarr array -- one
    slice at a time, writing each finished slice into ``out`` (which may itself
    be a memmap or a zarr array), so that volumes and results larger than RAM
    never sit in memory.

:func:`predict_dask`
    Maps the same engine over the Z-slices of a dask array on any dask
    scheduler (threaded, processes, ``dask.distributed``), optionally writing
    into a zarr array.

Geometry
--------
*Valid-padded networks* (the paper's, ``padding="valid"``) use the
overlap-tile strategy of Ronneberger et al. (2015, Fig. 2): every slice is
extended by mirroring (``np.pad(mode="reflect")``, repeated for pads larger
than the slice, so even a 1x1 image works), output tiles are laid
edge-to-edge and each is predicted from its input tile, the output tile plus
``model.context`` pixels of context.  Tiles step by ``s``, the largest
multiple of ``model.size_multiple`` (``2**(depth-1)``) that is not larger
than the network's output tile: the pooling grid of every tile is then
aligned with that of the whole image (for depth >= 4 a valid U-Net's output
tile is never such a multiple -- 388 for 572 -- and stepping by the full
output tile would change the result by O(1) at the seams).  A tile's output
beyond ``s`` pixels is discarded.  The stitched result is therefore *exactly*
the network's output on the whole mirrored image, independent of the tile
size, up to floating-point rounding (different conv algorithms for different
tile sizes: ~1e-6).

*Same-padded networks* (``padding="same"``) see zero padding at every tile
edge, so tiles overlap and only each tile's core is kept: adjacent tiles
share ``overlap`` pixels and each discards ``overlap / 2`` of them.  Tiles
start at multiples of ``size_multiple`` (aligned pooling grids) and their
sizes are multiples of it.  The first tile is flush with the top/left image
edge and the last one with the bottom/right edge of the slice reflect-padded
(only there, by less than ``size_multiple`` pixels) to a multiple of
``size_multiple``.  The reference "whole-image prediction" of a same-padded
network is the network applied to that padded slice, cropped.  With the
default ``overlap`` (:func:`exact_overlap`: the smallest one for which every
kept pixel's receptive field, computed exactly per pooling phase, lies inside
its tile -- 96 for depth 4, 192 for depth 5, about ``2 * model.context``)
every kept pixel sees exactly the data it sees in the whole-image prediction,
so the tiled result equals it up to rounding *everywhere* (the image borders
included, because border tiles are flush with the image edges).  A smaller
``overlap`` (e.g. ``model.context``, about the receptive-field radius) is
faster, at the price of seam differences.  Tile-statistics norms (``norm="instance"`` /
``"group"``) make any tiled prediction depend slightly on the tile size;
batch norm (eval mode, running statistics) does not.

In both cases tiles are balanced: a slice that needs ``k`` tiles along an axis
gets ``k`` equal tiles just large enough, and a slice smaller than one tile
is predicted with one small tile.

Pipeline
--------
Slices are read (``np.asarray(image[z])``), normalised as
``(x - mean) / std`` in float32 and mirror-padded in a background thread
(a one-worker ``ThreadPoolExecutor``) while the previous slice is computed;
finished slices are converted to labels (argmax + 1, smallest unsigned dtype)
and written to ``out`` by a second one-worker thread.  At most one slice is
prefetched and at most two finished slices wait to be written, so memory is
bounded by a few slices whatever the volume size.  The tiles of a slice go to
the device in batches; a batch never mixes slices, so each slice's result is
independent of the others (and :func:`predict_dask`, one slice per block, is
bit-identical to :func:`predict_tiled` with the same tile and batch sizes).

Devices
-------
``model.eval()`` + ``torch.inference_mode()`` always, on a copy of the network
with eval-mode batch norm folded into the convolutions, in ``channels_last``
(NHWC) memory format on CUDA and on the CPU (faster convolutions: ~1.6x for
the "small" preset on a CPU; the caller's model is not modified).  On
CUDA it runs under ``torch.autocast`` in bfloat16 (float16 where bf16 is
unsupported) when ``amp=True``; softmax/argmax are computed in float32.  On
the CPU there is no autocast (bf16 on CPUs without AMX is slower than float32
and changes the result).  Default tile and batch sizes come from the device:
on CUDA from the free memory and an estimate of the activation memory of a
tile (:func:`estimate_tile_bytes`); on the CPU a 512 px tile (same-padded) or
a 572 px input tile (valid-padded), and about 512 x 512 input pixels per
batch (1 to 4 tiles), within a memory budget.  A CUDA out-of-memory error empties the cache and halves the
batch, then the tile, and the prediction carries on (a
:class:`TilingWarning` says so).

This module never imports Qt or napari.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import math
import numbers
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .devices import free_memory_bytes, resolve_device

__all__ = [
    "AxisPlan",
    "PredictionCancelled",
    "TilePlan",
    "TilingWarning",
    "default_tile_and_batch",
    "estimate_normalization",
    "estimate_tile_bytes",
    "exact_overlap",
    "label_dtype",
    "plan_tiles",
    "predict_dask",
    "predict_tiled",
]

ProgressCallback = Callable[[int, int], "bool | None"]

#: Default target input tile (pixels per side) on the CPU.
CPU_TILE_SAME = 512
CPU_TILE_VALID = 572
#: Largest default batch on the CPU / on CUDA.
CPU_MAX_BATCH = 4
#: On the CPU a batch holds about this many input pixels (batching big tiles
#: does not speed up the CPU, it only costs memory; small tiles are batched).
CPU_BATCH_PIXELS = 512 * 512
CUDA_MAX_BATCH = 32
#: Candidate target tiles on CUDA, largest first.
CUDA_TILES = (1024, 768, 512, 384, 256)
#: Multiplier from "sum over levels of channels x pixels" to peak activation memory.
ACTIVATION_FACTOR = 4.0
#: Fraction of the free CUDA memory the default tile/batch may use.
CUDA_MEMORY_FRACTION = 0.5
#: Memory budget for the activations on the CPU (also capped by MemAvailable / 4).
CPU_MEMORY_BUDGET = 2 << 30

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


class PredictionCancelled(Exception):
    """Raised by :func:`predict_tiled` when the ``progress`` callback returns ``False``.

    Attributes
    ----------
    done_slices : int
        Number of leading Z-slices that were completely predicted and written
        to ``out`` (slices ``0 .. done_slices - 1``).  The slice that was in
        progress and all later slices were not written: ``out`` still holds
        what it held before there.
    total_slices : int
        Number of slices of the image (1 for a 2-D image).
    """

    def __init__(self, done_slices: int, total_slices: int) -> None:
        self.done_slices = int(done_slices)
        self.total_slices = int(total_slices)
        super().__init__(
            f"prediction cancelled after {self.done_slices} of {self.total_slices} slice(s)"
        )


class TilingWarning(UserWarning):
    """Emitted when the tiling had to change on the fly (e.g. after a CUDA OOM)."""


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------
def _check_model(model: Any) -> None:
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


def _image_shape(image: Any) -> tuple[int, ...]:
    shape = getattr(image, "shape", None)
    if shape is None:
        raise TypeError(
            f"image must be an array (numpy, memmap, dask, zarr), got {type(image).__name__}"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"image must be 2-D (H, W) or 3-D (Z, H, W) single-channel, got shape {shape}"
        )
    if any(s == 0 for s in shape):
        raise ValueError(f"image is empty: shape {shape}")
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    if dtype.kind not in "biuf":
        raise TypeError(f"image must have a real numeric dtype, got {dtype}")
    return shape


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
        items = list(value)
    else:
        items = [value, value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be a positive integer, got {value!r}")
        if int(item) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        out.append(int(item))
    return out[0], out[1]


def _check_batch(batch_size: Any) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return int(batch_size)


def _check_normalization(normalization: Any) -> tuple[float, float] | None:
    if normalization is None:
        return None
    if not hasattr(normalization, "get"):
        raise TypeError(
            f"normalization must be a dict with 'mean' and 'std', got {type(normalization).__name__}"
        )
    try:
        mean = float(normalization["mean"])
        std = float(normalization["std"])
    except KeyError as exc:
        raise ValueError(
            f"normalization must have the keys 'mean' and 'std', got {sorted(normalization)}"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise TypeError(f"normalization mean/std must be numbers: {normalization!r}") from exc
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise ValueError(
            f"normalization needs a finite mean and a finite std > 0, got {mean}, {std}"
        )
    return mean, std


def label_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype that holds the class values ``1..n_classes``."""
    return np.dtype(np.min_scalar_type(int(n_classes)))


def _argmax_channels_torch(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``argmax + 1`` over dim 1 of ``(N, C, H, W)`` as ``dtype`` (first maximum on ties).

    An elementwise running maximum over the channels: much faster on the CPU
    than ``torch.argmax(dim=1)`` (a strided reduction over few channels) and
    it writes the small label dtype directly.
    """
    best = x[:, 0]
    labels = torch.ones(best.shape, dtype=dtype, device=x.device)
    for c in range(1, x.shape[1]):
        value = x[:, c]
        better = value > best
        best = torch.where(better, value, best)
        labels.masked_fill_(better, c + 1)
    return labels


def _labels_from_probs(probs: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``argmax(probs, axis=0) + 1`` as ``dtype`` (first maximum on ties), channel by channel."""
    best = probs[0].copy()
    labels = np.ones(best.shape, dtype)
    for c in range(1, probs.shape[0]):
        better = probs[c] > best
        np.copyto(best, probs[c], where=better)
        labels[better] = c + 1
    return labels


def _check_out(out: Any, shape: tuple[int, ...], n_classes: int, what: str = "out") -> None:
    out_shape = getattr(out, "shape", None)
    if out_shape is None or not hasattr(out, "__setitem__"):
        raise TypeError(f"{what} must be a writable array (numpy, memmap, zarr), got {type(out)}")
    if tuple(int(s) for s in out_shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(out_shape)}, expected {tuple(shape)}")
    dtype = np.dtype(out.dtype)
    if what == "out":
        if dtype.kind not in "ui":
            raise TypeError(f"out must have an integer dtype for class labels, got {dtype}")
        if np.iinfo(dtype).max < n_classes:
            raise ValueError(f"out dtype {dtype} cannot hold {n_classes} classes")
    elif dtype.kind != "f":
        raise TypeError(f"{what} must have a floating-point dtype, got {dtype}")
    if getattr(out, "flags", None) is not None and not out.flags.writeable:
        raise ValueError(f"{what} is read-only")


def estimate_normalization(
    image: Any, max_samples: int = 1 << 20, max_slices: int = 16
) -> dict[str, float]:
    """Mean and standard deviation of ``image`` from a strided subsample.

    Up to ``max_slices`` evenly spaced Z-slices are read one at a time and
    subsampled on a regular grid with the same stride along Y and X, about
    ``max_samples`` pixels in all.  A constant image gets ``std = 1``.  The
    result depends only on the pixel values, so a numpy array and a dask or
    zarr array holding the same data give the same statistics.

    Parameters
    ----------
    image : array-like, (H, W) or (Z, H, W)
    max_samples, max_slices : int

    Returns
    -------
    dict
        ``{"mean": float, "std": float}``
    """
    shape = _image_shape(image)
    n_z = 1 if len(shape) == 2 else shape[0]
    height, width = shape[-2:]
    zs = np.unique(np.linspace(0, n_z - 1, min(n_z, max_slices)).round().astype(np.int64))
    per_slice = max(1, max_samples // len(zs))
    stride = max(1, math.ceil(math.sqrt(height * width / per_slice)))
    total = 0.0
    total_sq = 0.0
    count = 0
    for z in zs:
        data = _read_slice(image, int(z), len(shape) == 2)[::stride, ::stride]
        values = data.astype(np.float64).ravel()
        total += float(values.sum())
        count += values.size
    mean = total / count
    for z in zs:
        data = _read_slice(image, int(z), len(shape) == 2)[::stride, ::stride]
        values = data.astype(np.float64).ravel() - mean
        total_sq += float(np.dot(values, values))
    std = math.sqrt(total_sq / count)
    if not math.isfinite(std) or std <= 0:
        std = 1.0
    return {"mean": float(mean), "std": float(std)}


def _read_slice(image: Any, z: int, is_2d: bool) -> np.ndarray:
    """Read one slice into memory (the only place the image is read)."""
    data = image[...] if is_2d else image[z]
    return np.asarray(data)


# ---------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------
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


def _default_overlap(model: nn.Module) -> int:
    return exact_overlap(int(model.depth))


def _resolve_overlap(model: nn.Module, overlap: Any) -> int:
    m = int(model.size_multiple)
    if model.padding == "valid":
        if overlap is not None:
            raise ValueError(
                "overlap applies only to padding='same' networks; a valid-padded network "
                "always uses its context"
            )
        return int(model.context)
    if overlap is None:
        return _default_overlap(model)
    if isinstance(overlap, bool) or not isinstance(overlap, numbers.Integral) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer or None, got {overlap!r}")
    return _ceil_to(int(overlap), m) if overlap else 0


def _round_tile(model: nn.Module, target: int, overlap: int) -> int:
    """Round a requested input tile up to a possible size, at least the minimum."""
    m = int(model.size_multiple)
    target = max(int(target), _min_tile(model, overlap))
    if model.padding == "valid":
        return int(model.valid_input_size(target))
    return _ceil_to(target, m)


def _plan_axis_valid(model: nn.Module, n: int, target: int) -> AxisPlan:
    m = int(model.size_multiple)
    c = int(model.context)
    t_max = _round_tile(model, target, c)
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
    t_max = _round_tile(model, target, overlap)
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
    """The tiling :func:`predict_tiled` uses for a slice of ``shape``.

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
    _check_model(model)
    if len(shape) != 2:
        raise ValueError(f"shape must be (height, width), got {shape!r}")
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    ty, tx = _pair(tile_size, "tile_size")
    ov = _resolve_overlap(model, overlap)
    if model.padding == "valid":
        return TilePlan(_plan_axis_valid(model, height, ty), _plan_axis_valid(model, width, tx))
    return TilePlan(_plan_axis_same(model, height, ty, ov), _plan_axis_same(model, width, tx, ov))


def estimate_tile_bytes(
    model: nn.Module, tile: int | Sequence[int], bytes_per_value: int = 4
) -> int:
    """Rough peak activation memory of one input tile in a forward pass.

    ``sum over levels l of channels_l * pixels_l * bytes * ACTIVATION_FACTOR``
    where level ``l`` has ``base_channels * 2**l`` channels and
    ``tile_pixels / 4**l`` pixels.  The factor covers the two convolution
    outputs, the kept skip connection, the up-convolution and the
    concatenation alive at the same time.
    """
    ty, tx = _pair(tile, "tile")
    base = int(getattr(model, "base_channels", 64))
    total = 0.0
    for level in range(int(model.depth)):
        total += base * 2**level * (ty / 2**level) * (tx / 2**level)
    total += (1 + int(model.n_classes)) * ty * tx  # input and logits
    return int(total * bytes_per_value * ACTIVATION_FACTOR)


def _cpu_budget() -> int:
    budget = CPU_MEMORY_BUDGET
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    budget = min(budget, int(line.split()[1]) * 1024 // 4)
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    return max(budget, 64 << 20)


def _amp_bytes(device: torch.device, amp: bool) -> int:
    return 2 if (amp and device.type == "cuda") else 4


def default_tile_and_batch(
    model: nn.Module,
    device: torch.device | str,
    shape: Sequence[int] | None = None,
    amp: bool = True,
    overlap: int | None = None,
) -> tuple[int, int]:
    """Default ``(tile_size, batch_size)`` for ``model`` on ``device``.

    CUDA: the largest tile of :data:`CUDA_TILES` whose estimated activation
    memory (:func:`estimate_tile_bytes`, 2 bytes per value under autocast)
    fits in half the free memory, and as many tiles per batch as fit
    (at most :data:`CUDA_MAX_BATCH`).  CPU/MPS: :data:`CPU_TILE_SAME` or
    :data:`CPU_TILE_VALID`, halved while one tile exceeds the CPU memory
    budget, and a batch of about :data:`CPU_BATCH_PIXELS` input pixels (1 to
    :data:`CPU_MAX_BATCH` tiles) within the budget.  When ``shape``
    (the slice's height, width) is given the batch is computed for the
    balanced tile actually used for that slice.
    """
    _check_model(model)
    dev = resolve_device(device)
    ov = _resolve_overlap(model, overlap)
    nbytes = _amp_bytes(dev, amp)
    if dev.type == "cuda":
        free = free_memory_bytes(dev) or 0
        budget = int(free * CUDA_MEMORY_FRACTION)
        candidates = [_round_tile(model, t, ov) for t in CUDA_TILES]
    else:
        budget = _cpu_budget()
        first = CPU_TILE_VALID if model.padding == "valid" else CPU_TILE_SAME
        candidates = []
        t = first
        while t >= 64:
            candidates.append(_round_tile(model, t, ov))
            t //= 2
    tile = candidates[-1]
    for cand in candidates:
        if estimate_tile_bytes(model, cand, nbytes) <= budget:
            tile = cand
            break
    actual: tuple[int, int] = (tile, tile)
    if shape is not None:
        actual = plan_tiles(model, shape, tile, overlap=overlap).tile
    return tile, _default_batch(model, dev, actual, amp)


def _default_batch(model: nn.Module, device: torch.device, tile: tuple[int, int], amp: bool) -> int:
    """Tiles per batch for input tiles of size ``tile`` (see :func:`default_tile_and_batch`)."""
    per_tile = max(1, estimate_tile_bytes(model, tile, _amp_bytes(device, amp)))
    if device.type == "cuda":
        budget = int((free_memory_bytes(device) or 0) * CUDA_MEMORY_FRACTION)
        return int(max(1, min(CUDA_MAX_BATCH, budget // per_tile)))
    by_pixels = CPU_BATCH_PIXELS // max(1, tile[0] * tile[1])
    return int(max(1, min(CPU_MAX_BATCH, by_pixels, _cpu_budget() // per_tile)))


def _pad_slice(data: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Mirror-extend a slice (``np.pad`` "reflect" repeats the reflection for large pads)."""
    pad = plan.pad_width
    if pad == ((0, 0), (0, 0)):
        return np.ascontiguousarray(data)
    # np.pad reflects repeatedly when a pad exceeds the axis, and a length-1 axis
    # reflects to its only value
    return np.pad(data, pad, mode="reflect")


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` (0..7) of the dihedral group on the last two axes."""
    if k >= 4:
        x = x[..., ::-1]
    return np.rot90(x, k % 4, axes=(-2, -1))


def _dihedral_inverse(x: np.ndarray, k: int) -> np.ndarray:
    x = np.rot90(x, -(k % 4), axes=(-2, -1))
    if k >= 4:
        x = x[..., ::-1]
    return x


# ---------------------------------------------------------------------------
# model preparation
# ---------------------------------------------------------------------------
#: Devices where the network runs in ``channels_last`` (NHWC) memory format:
#: cuDNN and oneDNN convolutions are faster so (~1.6x for the small preset on
#: a CPU).
_CHANNELS_LAST_DEVICES = ("cpu", "cuda")


#: Attribute set on networks prepared by :func:`_prepare_for_inference`.
_READY = "_napari_unet_inference_device"


def _fuse_batchnorm(net: nn.Module) -> None:
    """Fold every eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` into the conv.

    Works on ``nn.Sequential`` containers (the UNet's double-conv blocks);
    the folded norm becomes an ``Identity``.  Saves a full pass over every
    feature map (~15% of the CPU time of the "small" preset); the result
    changes only by rounding.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if (
                type(conv) is nn.Conv2d
                and type(norm) is nn.BatchNorm2d
                and norm.track_running_stats
                and norm.running_mean is not None
                and norm.running_var is not None
            ):
                module[i] = fuse_conv_bn_eval(conv.eval(), norm.eval())
                module[i + 1] = nn.Identity()


def _prepare_for_inference(net: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, batch norm folded, on ``device``, channels_last where it pays (in place)."""
    net.eval()
    _fuse_batchnorm(net)
    if device.type in _CHANNELS_LAST_DEVICES:
        net = net.to(device=device, memory_format=torch.channels_last)
    else:
        net = net.to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    setattr(net, _READY, str(device))
    return net


_PREPARED: OrderedDict[tuple[int, str], tuple[Any, tuple[Any, ...], nn.Module]] = OrderedDict()
_PREPARED_LOCK = threading.Lock()
_PREPARED_SIZE = 2


def _weights_signature(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple(
        (t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device))
        for t in itertools.chain(model.parameters(), model.buffers())
    )


@contextlib.contextmanager
def _inference_model(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The network to run: a prepared copy of ``model`` (see :func:`_prepare_for_inference`).

    The caller's model is never modified.  The copy is cached (two entries)
    while the model's weights stay the same (same tensors, same in-place
    version counters), so predicting a stack slice by slice does not copy the
    network every time; training steps change the counters and invalidate it.
    A network prepared by this module for the same device (the per-worker
    cache of :func:`predict_dask`) is used as it is.
    """
    if getattr(model, _READY, None) == str(device):
        yield model
        return
    key = (id(model), str(device))
    signature = _weights_signature(model)
    with _PREPARED_LOCK:
        entry = _PREPARED.get(key)
        if entry is not None and entry[0]() is model and entry[1] == signature:
            _PREPARED.move_to_end(key)
            net = entry[2]
        else:
            net = _prepare_for_inference(copy.deepcopy(model), device)
            # the entry goes when the model does (no lock: called by the GC)
            ref = weakref.ref(model, lambda _, key=key: _PREPARED.pop(key, None))
            _PREPARED[key] = (ref, signature, net)
            while len(_PREPARED) > _PREPARED_SIZE:
                _PREPARED.popitem(last=False)
    yield net


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------
class _ShrinkTiles(Exception):
    """Raised inside the engine when a batch of one tile ran out of CUDA memory."""


def _oom_error_types() -> tuple[type[BaseException], ...]:
    err = getattr(torch.cuda, "OutOfMemoryError", None)
    return (err,) if err is not None else ()


_Item = tuple["_SubSlice", tuple[Any, ...]]


class _SliceState:
    """Accumulators of one Z-slice while its tiles are computed."""

    __slots__ = ("acc", "labels", "n_tiles", "remaining", "z")

    def __init__(self, z: int) -> None:
        self.z = z
        self.acc: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.remaining = 0
        self.n_tiles = 0


class _SubSlice:
    """One (slice, dihedral transform) pair being tiled."""

    __slots__ = ("buffer", "plan", "remaining", "slice", "tensor", "transform")

    def __init__(
        self, state: _SliceState, transform: int, plan: TilePlan, tensor: torch.Tensor
    ) -> None:
        self.slice = state
        self.transform = transform
        self.plan = plan
        self.tensor: torch.Tensor | None = tensor
        self.remaining = plan.n_tiles
        self.buffer: np.ndarray | None = None


class _Engine:
    """Streams the tiles of consecutive slices through the network in batches."""

    def __init__(
        self,
        model: nn.Module,
        image: Any,
        shape: tuple[int, ...],
        device: torch.device,
        *,
        amp: bool,
        tile_size: tuple[int, int] | None,
        batch_size: int | None,
        overlap: int | None,
        norm: tuple[float, float],
        tta: bool,
        out: Any,
        probs_out: Any,
        probs_dtype: np.dtype,
        progress: ProgressCallback | None,
    ) -> None:
        self.model = model
        self.image = image
        self.is_2d = len(shape) == 2
        self.n_slices = 1 if self.is_2d else shape[0]
        self.hw = (shape[-2], shape[-1])
        self.device = device
        self.overlap = overlap
        self.mean, self.std = norm
        self.transforms = tuple(range(8)) if tta else (0,)
        self.out = out
        self.probs_out = probs_out
        self.probs_dtype = probs_dtype
        self.need_probs = probs_out is not None or tta
        self.progress = progress
        self.n_classes = int(model.n_classes)
        self.label_dtype = np.dtype(out.dtype)
        self.device_label_dtype = torch.uint8 if self.n_classes <= 255 else torch.int32
        self.autocast_dtype: torch.dtype | None = None
        if amp and device.type == "cuda":
            self.autocast_dtype = (
                torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            )

        self._plans: dict[tuple[tuple[int, int], tuple[int, int]], TilePlan] = {}
        if tile_size is None:
            tile, batch = default_tile_and_batch(model, device, self.hw, amp, overlap)
            self.tile = (tile, tile)
        else:
            self.tile = tile_size
            batch = _default_batch(model, device, self.plan_for(self.hw).tile, amp)
        self.batch = batch if batch_size is None else batch_size

        self.done_slices = 0  # slices finished (handed to the writer)
        self.done_tiles = 0  # tiles computed, for progress
        self.finished_tiles = 0  # tiles of finished slices
        self.total_tiles = 0
        self._prefetch: Future | None = None
        self._writes: list[Future] = []
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-read")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-write")

    # -- geometry --------------------------------------------------------
    def plan_for(self, hw: tuple[int, int], tile: tuple[int, int] | None = None) -> TilePlan:
        tile = self.tile if tile is None else tile
        key = (hw, tile)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_tiles(self.model, hw, tile, overlap=self.overlap)
            self._plans[key] = plan
        return plan

    def tiles_per_slice(self) -> int:
        total = 0
        for k in self.transforms:
            hw = self.hw if k % 2 == 0 else (self.hw[1], self.hw[0])
            total += self.plan_for(hw).n_tiles
        return total

    # -- I/O (background threads) ------------------------------------------
    def _load(
        self, z: int, tile: tuple[int, int]
    ) -> tuple[np.ndarray | None, torch.Tensor, TilePlan]:
        """Read, normalise and mirror-pad slice ``z`` (runs in the reader thread).

        Returns the normalised slice (only kept for TTA), the padded slice as a
        CPU tensor (in pinned memory for an asynchronous copy to CUDA) and the
        tile plan it was padded for.
        """
        raw = _read_slice(self.image, z, self.is_2d)
        if raw.shape != self.hw:
            raise ValueError(f"slice {z} has shape {raw.shape}, expected {self.hw}")
        data = raw.astype(np.float32, copy=True)
        data -= np.float32(self.mean)
        data /= np.float32(self.std)
        plan = self.plan_for(self.hw, tile)
        padded = self._host_tensor(_pad_slice(data, plan))
        return (data if len(self.transforms) > 1 else None), padded, plan

    def _host_tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor

    def _finish_and_write(self, state: _SliceState) -> None:
        """Labels (and probabilities) of a finished slice into the outputs (writer thread)."""
        probs = None
        if self.need_probs:
            probs = state.acc
            if len(self.transforms) > 1:
                probs /= np.float32(len(self.transforms))
            labels = _labels_from_probs(probs, self.label_dtype)
        else:
            labels = state.labels
        if self.is_2d:
            self.out[...] = labels
        else:
            self.out[state.z] = labels
        if self.probs_out is not None and probs is not None:
            values = probs.astype(self.probs_dtype, copy=False)
            if self.is_2d:
                self.probs_out[...] = values
            else:
                self.probs_out[:, state.z] = values

    def _submit_write(self, state: _SliceState) -> None:
        while len(self._writes) >= 2:  # bounded: at most two finished slices in flight
            self._writes.pop(0).result()
        self._writes.append(self._writer.submit(self._finish_and_write, state))

    def _drain_writes(self, raise_errors: bool = True) -> None:
        while self._writes:
            fut = self._writes.pop(0)
            try:
                fut.result()
            except BaseException:
                if raise_errors:
                    raise

    def _wait_prefetch(self) -> None:
        fut, self._prefetch = self._prefetch, None
        if fut is not None:
            with contextlib.suppress(BaseException):
                fut.result()

    # -- tiles -------------------------------------------------------------
    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return host
        # from pinned memory (CUDA) the copy is asynchronous; the caching host
        # allocator keeps the pinned block alive until the copy is done
        return host.to(self.device, non_blocking=host.is_pinned())

    def _stream(self, z0: int) -> Iterator[_Item]:
        """Yield ``(sub_slice, tile)`` for every tile of slices ``z0, z0 + 1, ...``."""
        if z0 < self.n_slices:
            self._prefetch = self._reader.submit(self._load, z0, self.tile)
        for z in range(z0, self.n_slices):
            fut, self._prefetch = self._prefetch, None
            data, padded0, plan0 = fut.result()  # type: ignore[union-attr]
            if z + 1 < self.n_slices:
                self._prefetch = self._reader.submit(self._load, z + 1, self.tile)
            state = _SliceState(z)
            if self.need_probs:
                state.acc = np.zeros((self.n_classes, *self.hw), np.float32)
            else:
                state.labels = np.zeros(self.hw, self.label_dtype)
            state.remaining = len(self.transforms)
            state.n_tiles = self.tiles_per_slice()
            for k in self.transforms:
                if k == 0 and plan0.tile == self.plan_for(self.hw).tile:
                    padded, plan = padded0, plan0
                else:
                    if data is None:  # recover the unpadded slice from the mirrored one
                        (top, _), (left, _) = plan0.pad_width
                        data = padded0.numpy()[top : top + self.hw[0], left : left + self.hw[1]]
                    view = _dihedral(data, k)
                    plan = self.plan_for((view.shape[0], view.shape[1]))
                    padded = self._host_tensor(_pad_slice(view, plan))
                sub = _SubSlice(state, k, plan, self._to_device(padded))
                if not self.need_probs:
                    sub.buffer = state.labels
                elif len(self.transforms) == 1:
                    sub.buffer = state.acc
                else:
                    sub.buffer = np.empty((self.n_classes, *plan.shape), np.float32)
                del padded
                for tile in plan.tiles():
                    yield sub, tile
            del data, padded0

    def _forward(self, items: list[_Item]) -> np.ndarray:
        ty, tx = items[0][0].plan.tile
        crops = [sub.tensor[y0 : y0 + ty, x0 : x0 + tx] for sub, (y0, x0, _, _) in items]  # type: ignore[index]
        batch = torch.stack(crops).unsqueeze(1)
        if self.device.type in _CHANNELS_LAST_DEVICES:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type="cuda", dtype=self.autocast_dtype):
                logits = self.model(batch)
        else:
            logits = self.model(batch)
        if self.need_probs:
            result = torch.softmax(logits.float(), dim=1)
        else:
            result = _argmax_channels_torch(logits, self.device_label_dtype)
        return result.cpu().numpy()

    def _scatter(self, items: list[_Item], result: np.ndarray) -> None:
        for (sub, (_, _, ky, kx)), tile_out in zip(items, result):
            sy0, sy1, dy0, dy1 = ky
            sx0, sx1, dx0, dx1 = kx
            if self.need_probs:
                sub.buffer[:, dy0:dy1, dx0:dx1] = tile_out[:, sy0:sy1, sx0:sx1]  # type: ignore[index]
            else:
                sub.buffer[dy0:dy1, dx0:dx1] = tile_out[sy0:sy1, sx0:sx1]  # type: ignore[index]
            sub.remaining -= 1
            if sub.remaining == 0:
                self._sub_done(sub)

    def _sub_done(self, sub: _SubSlice) -> None:
        state = sub.slice
        if self.need_probs and len(self.transforms) > 1:
            state.acc += _dihedral_inverse(sub.buffer, sub.transform)  # type: ignore[operator]
        sub.buffer = None
        sub.tensor = None
        state.remaining -= 1
        if state.remaining == 0:
            self._submit_write(state)
            self.done_slices += 1
            self.finished_tiles += state.n_tiles

    def _run_batch(self, items: list[_Item]) -> None:
        oom = _oom_error_types()
        i = 0
        while i < len(items):
            chunk = items[i : i + self.batch]
            try:
                result = self._forward(chunk)
            except oom as exc:
                torch.cuda.empty_cache()
                if self.batch > 1:
                    self.batch = max(1, min(self.batch, len(chunk)) // 2)
                    warnings.warn(
                        f"CUDA out of memory: batch size reduced to {self.batch}",
                        TilingWarning,
                        stacklevel=2,
                    )
                    continue
                raise _ShrinkTiles(exc) from None
            self._scatter(chunk, result)
            i += len(chunk)
            self.done_tiles += len(chunk)

    def _report(self) -> None:
        if self.progress is None:
            return
        if self.progress(self.done_tiles, self.total_tiles) is False:
            self._drain_writes()
            raise PredictionCancelled(self.done_slices, self.n_slices)

    def _run_from(self, z0: int) -> None:
        pending: list[_Item] = []
        stream = self._stream(z0)
        try:
            for item in stream:
                if pending and (
                    len(pending) >= self.batch
                    or item[0].slice is not pending[0][0].slice
                    or item[0].plan.tile != pending[0][0].plan.tile
                ):
                    self._run_batch(pending)
                    pending = []
                    self._report()
                pending.append(item)
            if pending:
                self._run_batch(pending)
                self._report()
        finally:
            stream.close()

    def _shrink(self, exc: BaseException) -> None:
        """After an OOM with one tile per batch: halve the tile, restart unfinished slices."""
        self._wait_prefetch()
        self._drain_writes()
        ov = _resolve_overlap(self.model, self.overlap)
        smallest = _round_tile(self.model, 1, ov)
        current = self.plan_for(self.hw).tile
        if max(current) <= smallest:
            raise exc
        self.tile = (max(smallest, current[0] // 2), max(smallest, current[1] // 2))
        warnings.warn(
            f"CUDA out of memory with batch size 1: tile reduced to {self.tile}",
            TilingWarning,
            stacklevel=3,
        )
        self.done_tiles = self.finished_tiles
        self.total_tiles = self.finished_tiles + (self.n_slices - self.done_slices) * (
            self.tiles_per_slice()
        )

    def run(self) -> None:
        cudnn_benchmark = torch.backends.cudnn.benchmark
        try:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            self.total_tiles = self.tiles_per_slice() * self.n_slices
            self._report()
            with torch.inference_mode():
                while True:
                    try:
                        self._run_from(self.done_slices)
                        break
                    except _ShrinkTiles as shrink:
                        self._shrink(shrink.args[0])
            self._drain_writes()
        finally:
            torch.backends.cudnn.benchmark = cudnn_benchmark
            self._drain_writes(raise_errors=False)
            self._wait_prefetch()
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._writer.shutdown(wait=True)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def predict_tiled(
    model: nn.Module,
    image: Any,
    *,
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    amp: bool = True,
    out: Any = None,
    return_probabilities: bool = False,
    progress: ProgressCallback | None = None,
    normalization: dict[str, float] | None = None,
    tta: bool = False,
    probabilities_dtype: Any = np.float32,
    probabilities_out: Any = None,
    overlap: int | None = None,
) -> Any:
    """Predict the class map of a 2-D image or a Z-stack, tile by tile.

    Parameters
    ----------
    model : UNet
        A napari_unet :class:`~napari_unet.model.UNet` with ``in_channels == 1``
        (multi-channel input is not supported).  It is run in eval mode under
        ``torch.inference_mode()`` as a copy on the device (channels_last,
        eval-mode batch norm folded into the convolutions); the caller's model
        is never moved or modified.
    image : array-like, (H, W) or (Z, H, W)
        Any array with ``shape``/``dtype`` that can be indexed by slice:
        numpy, ``np.memmap``, dask, zarr.  It is read one Z-slice at a time
        (``np.asarray(image[z])``).  Any size, also smaller than a tile.
    tile_size : int or (int, int), optional
        Largest network *input* tile (see :func:`plan_tiles`); default from
        the device (:func:`default_tile_and_batch`).  For valid padding the
        result does not depend on it.
    batch_size : int, optional
        Tiles per forward pass (tiles of one slice, or of its TTA
        transforms); default from the device and the tile memory estimate.
    device : str or torch.device, default "auto"
        See :func:`napari_unet.devices.resolve_device`.
    amp : bool, default True
        CUDA only: autocast to bfloat16 (float16 where bf16 is unsupported).
        Ignored on the CPU, which always computes in float32.
    out : array, optional
        Preallocated integer array of shape ``image.shape`` (numpy, memmap,
        zarr); each slice is written once, when finished.  Default a new
        numpy array of the smallest unsigned dtype holding ``n_classes``
        (uint8 up to 255 classes).
    return_probabilities : bool, default False
        Also return the softmax probabilities, shape ``(C, H, W)`` or
        ``(C, Z, H, W)``.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``, called once before the first
        batch and after every batch (from the calling thread).  Returning
        ``False`` cancels: :class:`PredictionCancelled` is raised after the
        slices already finished have been written; the slice in progress and
        later ones are not written.  Any other return value continues.
    normalization : dict, optional
        ``{"mean": m, "std": s}`` (the checkpoint's): the network sees
        ``(x - m) / s`` in float32.  Default: estimated from the volume with
        :func:`estimate_normalization` (a strided subsample of up to 16
        slices); callers normally pass the statistics the network was trained
        with.
    tta : bool, default False
        Test-time augmentation: average the softmax over the 8 dihedral
        transforms (flips and 90-degree rotations) of each slice, each
        predicted with the same tiling rules and transformed back (8x the
        compute).
    probabilities_dtype : numpy dtype, default float32
        ``float32`` or ``float16`` for the returned probabilities (labels are
        always computed from the float32 values).
    probabilities_out : array, optional
        Preallocated float array of shape ``(C, *image.shape)`` for the
        probabilities (implies ``return_probabilities=True``); its dtype wins
        over ``probabilities_dtype``.
    overlap : int, optional
        Same-padded networks only: overlap of adjacent input tiles in pixels
        (rounded up to a multiple of ``model.size_multiple``).  Default
        :func:`exact_overlap` (every kept pixel's receptive field inside its
        tile), which makes the tiled result equal the whole-image prediction
        up to rounding; ``model.context`` (about half of that) is faster,
        with seam errors.

    Returns
    -------
    labels : array
        ``out`` (or a new numpy array) with class values ``1..n_classes``
        (argmax + 1).
    probabilities : array
        Only with ``return_probabilities=True`` (or ``probabilities_out``):
        ``(labels, probabilities)``.

    Raises
    ------
    TypeError, ValueError
        For a model that is not a single-channel UNet, an image that is not
        2-D/3-D numeric, a wrong ``out`` shape/dtype, bad parameters.
    PredictionCancelled
        When ``progress`` returned ``False``.
    """
    _check_model(model)
    shape = _image_shape(image)
    dev = resolve_device(device)
    n_classes = int(model.n_classes)
    tile = None if tile_size is None else _pair(tile_size, "tile_size")
    batch = _check_batch(batch_size)
    _resolve_overlap(model, overlap)  # validate early
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
    probs_dtype = np.dtype(probabilities_dtype)
    if probs_dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"probabilities_dtype must be float16 or float32, got {probs_dtype}")
    norm = _check_normalization(normalization)
    if norm is None:
        stats = estimate_normalization(image)
        norm = (stats["mean"], stats["std"])

    if out is None:
        out = np.zeros(shape, label_dtype(n_classes))
    else:
        _check_out(out, shape, n_classes)
    if probabilities_out is not None:
        _check_out(probabilities_out, (n_classes, *shape), n_classes, "probabilities_out")
        return_probabilities = True
    elif return_probabilities:
        probabilities_out = np.zeros((n_classes, *shape), probs_dtype)
    if probabilities_out is not None:
        probs_dtype = np.dtype(probabilities_out.dtype)

    with _inference_model(model, dev) as net:
        engine = _Engine(
            net,
            image,
            shape,
            dev,
            amp=bool(amp),
            tile_size=tile,
            batch_size=batch,
            overlap=overlap,
            norm=norm,
            tta=bool(tta),
            out=out,
            probs_out=probabilities_out,
            probs_dtype=probs_dtype,
            progress=progress,
        )
        engine.run()
    if return_probabilities:
        return out, probabilities_out
    return out


# ---------------------------------------------------------------------------
# dask
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _ModelSpec:
    """What a dask worker needs to rebuild the network (picklable)."""

    token: str
    config: dict[str, Any] | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    path: str | None = None


_WORKER_MODELS: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
_WORKER_LOCK = threading.Lock()
_WORKER_CACHE_SIZE = 4


def _state_token(config: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _load_checkpoint(path: str) -> tuple[nn.Module, dict[str, Any]]:
    from .checkpoint import load_checkpoint

    model, metadata = load_checkpoint(path, map_location="cpu")
    return model, dict(metadata or {})


def _spec_for(model_or_checkpoint: Any) -> tuple[_ModelSpec, nn.Module, dict[str, Any]]:
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(model_or_checkpoint))
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        model, metadata = _load_checkpoint(path)
        _check_model(model)
        stat = os.stat(path)
        token = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        return _ModelSpec(token=token, path=path), model, metadata
    _check_model(model_or_checkpoint)
    model = model_or_checkpoint
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError("model must be a napari_unet UNet with a 'config' property")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    token = _state_token(config, state)
    return _ModelSpec(token=token, config=dict(config), state_dict=state), model, {}


def _worker_model(spec: _ModelSpec, device: str | torch.device | None) -> nn.Module:
    """Rebuild (once per process, device and model) the network in a dask worker."""
    dev = resolve_device(device)
    key = (spec.token, str(dev))
    with _WORKER_LOCK:
        model = _WORKER_MODELS.get(key)
        if model is not None:
            _WORKER_MODELS.move_to_end(key)
            return model
        if spec.path is not None:
            model, _ = _load_checkpoint(spec.path)
        else:
            from .model import UNet

            model = UNet(**spec.config)  # type: ignore[arg-type]
            model.load_state_dict(spec.state_dict)  # type: ignore[arg-type]
        model = _prepare_for_inference(model, dev)
        _WORKER_MODELS[key] = model
        while len(_WORKER_MODELS) > _WORKER_CACHE_SIZE:
            _WORKER_MODELS.popitem(last=False)
        return model


def _dask_block(
    block: np.ndarray,
    spec: _ModelSpec,
    *,
    probabilities: bool,
    kwargs: dict[str, Any],
) -> np.ndarray:
    model = _worker_model(spec, kwargs.get("device"))
    if probabilities:
        _, probs = predict_tiled(
            model, block, return_probabilities=True, probabilities_dtype=np.float32, **kwargs
        )
        return probs
    return predict_tiled(model, block, **kwargs)


def _zarr_target(target: Any, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype):
    if isinstance(target, (str, os.PathLike)):
        import zarr

        return zarr.open_array(
            os.fspath(target), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
        )
    if tuple(int(s) for s in getattr(target, "shape", ())) != tuple(shape):
        raise ValueError(
            f"output array has shape {tuple(getattr(target, 'shape', ()))}, expected {shape}"
        )
    return target


def predict_dask(
    model_or_checkpoint: Any,
    array: Any,
    *,
    out: Any = None,
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    normalization: dict[str, float] | None = None,
    return_probabilities: bool = False,
    probabilities_out: Any = None,
    amp: bool = True,
    tta: bool = False,
    overlap: int | None = None,
) -> Any:
    """Predict a (possibly larger-than-memory) dask array slice by slice on any scheduler.

    The array is rechunked to one full Z-slice per block (``(1, H, W)``) and
    :func:`predict_tiled` runs on every block, so the result is identical to
    ``predict_tiled`` on the whole array with the same ``tile_size``,
    ``batch_size``, ``normalization`` and device (blocks keep whole slices,
    hence the same mirrored borders and tile grid; YX chunks are merged).
    Pass ``tile_size`` explicitly for bit-identical results on CUDA, whose
    default tile depends on the free memory at call time.

    Parameters
    ----------
    model_or_checkpoint : UNet or str or os.PathLike
        A UNet (its config and CPU ``state_dict`` are shipped to the workers
        once and the network is rebuilt and cached per worker process) or a
        checkpoint path (loaded by every worker with
        :func:`napari_unet.checkpoint.load_checkpoint`; its
        ``normalization`` metadata is used when ``normalization`` is None).
    array : dask array or array-like, (H, W) or (Z, H, W)
        Non-dask inputs (numpy, zarr) are wrapped with ``dask.array.from_array``.
    out : str, os.PathLike or zarr array, optional
        Where to write the labels: a path creates a zarr array there (chunks
        ``1`` in Z and the input's chunks in Y and X); the computation then
        runs at once (``dask.array.to_zarr``) and the zarr array is returned.
        Default: return a lazy dask array.
    tile_size, batch_size, device, amp, tta, overlap
        As in :func:`predict_tiled`, applied in every worker.
    normalization : dict, optional
        ``{"mean", "std"}``; default the checkpoint's, else estimated once
        from the whole array with :func:`estimate_normalization` (so all
        blocks share it, as in ``predict_tiled``).
    return_probabilities : bool, default False
        Also return float32 probabilities ``(C, ...)``; the labels are their
        argmax + 1, computed from the same blocks.
    probabilities_out : str, os.PathLike or zarr array, optional
        Where to write the probabilities when ``out`` is given (required then
        with ``return_probabilities=True``).

    Returns
    -------
    dask.array.Array or zarr.Array, or a pair of them
        Labels (and probabilities), lazily unless ``out`` was given.
    """
    import dask
    import dask.array as da

    spec, model, metadata = _spec_for(model_or_checkpoint)
    if isinstance(array, da.Array):
        darr = array
    else:
        _image_shape(array)
        darr = da.from_array(array, chunks=getattr(array, "chunks", "auto"))
    shape = _image_shape(darr)
    is_2d = len(shape) == 2
    n_classes = int(model.n_classes)
    ldtype = label_dtype(n_classes)
    tile = None if tile_size is None else _pair(tile_size, "tile_size")
    batch = _check_batch(batch_size)
    _resolve_overlap(model, overlap)
    norm = _check_normalization(normalization)
    if norm is None and metadata.get("normalization") is not None:
        norm = _check_normalization(metadata["normalization"])
    if norm is None:
        stats = estimate_normalization(darr)
        norm = (stats["mean"], stats["std"])
    if out is not None and return_probabilities and probabilities_out is None:
        raise ValueError("with out and return_probabilities=True, also pass probabilities_out")

    yx_chunks = tuple(int(c[0]) for c in darr.chunks[-2:])
    vol = darr[None] if is_2d else darr
    vol = vol.rechunk((1, shape[-2], shape[-1]))
    kwargs = {
        "tile_size": tile,
        "batch_size": batch,
        "device": str(device) if isinstance(device, torch.device) else device,
        "amp": bool(amp),
        "tta": bool(tta),
        "overlap": overlap,
        "normalization": {"mean": norm[0], "std": norm[1]},
    }
    model_key = hashlib.sha1(spec.token.encode()).hexdigest()
    spec_delayed = dask.delayed(spec, pure=True, name=f"napari-unet-model-{model_key}")
    probs = None
    if return_probabilities:
        probs = da.map_blocks(
            _dask_block,
            vol,
            spec_delayed,
            probabilities=True,
            kwargs=kwargs,
            new_axis=0,
            chunks=((n_classes,), *vol.chunks),
            dtype=np.float32,
            meta=np.empty((0, 0, 0, 0), np.float32),
            token="napari-unet-probabilities",
        )
        labels = da.map_blocks(
            _labels_from_probs,
            probs,
            ldtype,
            drop_axis=0,
            dtype=ldtype,
            meta=np.empty((0, 0, 0), ldtype),
        )
    else:
        labels = da.map_blocks(
            _dask_block,
            vol,
            spec_delayed,
            probabilities=False,
            kwargs=kwargs,
            dtype=ldtype,
            meta=np.empty((0, 0, 0), ldtype),
            token="napari-unet-labels",
        )
    if is_2d:
        labels = labels[0]
        if probs is not None:
            probs = probs[:, 0]
    if out is None:
        return (labels, probs) if probs is not None else labels

    zchunks = yx_chunks if is_2d else (1, *yx_chunks)
    target = _zarr_target(out, shape, zchunks, ldtype)
    stores = [da.to_zarr(labels, target, compute=False)]
    ptarget = None
    if probs is not None:
        ptarget = _zarr_target(probabilities_out, (n_classes, *shape), (1, *zchunks), np.float32)
        stores.append(da.to_zarr(probs, ptarget, compute=False))
    dask.compute(*stores)
    return (target, ptarget) if ptarget is not None else target
