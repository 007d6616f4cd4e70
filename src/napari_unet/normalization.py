"""The one estimator of an image's intensity statistics, and applying them.

Training, the CLI and the window all normalise a stack as ``(x - mean) / std``
with statistics from :func:`compute_normalization`, stored in the checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .slices import array_shape, read_block

__all__ = ["compute_normalization", "estimate_normalization", "normalize"]

#: pixels and slices read by default (a strided subsample; a volume is never loaded whole)
MAX_SAMPLES = 4_000_000
MAX_SLICES = 32


def _strided_slice(image: Any, prefix: tuple[Any, ...], step: int) -> np.ndarray:
    try:
        return read_block(image, (*prefix, slice(None, None, step), slice(None, None, step)))
    except (IndexError, TypeError, ValueError, NotImplementedError):
        # some array types only support unit-stride slicing: read the slice
        return read_block(image, prefix if prefix else ...)[::step, ::step]


def compute_normalization(
    image: Any, max_samples: int = MAX_SAMPLES, max_slices: int = MAX_SLICES
) -> dict[str, float]:
    """Mean and standard deviation of an image, from a strided subsample.

    At most ``max_slices`` evenly spaced slices are read, each with a pixel
    stride chosen so that about ``max_samples`` pixels are read in total.
    Non-finite pixels are left out.  The result depends only on the pixel
    values: a numpy array and a dask or zarr array with the same data agree.

    Returns
    -------
    dict
        ``{"mean": float, "std": float}``; ``std`` is 1.0 for a constant image,
        so that ``(x - mean) / std`` is always defined.

    Raises
    ------
    ValueError
        If the image is not 2D/3D, is empty or has no finite pixel.
    """
    shape = array_shape(image)
    if len(shape) not in (2, 3):
        raise ValueError(f"image must be (Z, H, W) or (H, W), got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"image is empty (shape {shape})")
    if int(max_samples) < 1 or int(max_slices) < 1:
        raise ValueError("max_samples and max_slices must be >= 1")
    nz = shape[0] if len(shape) == 3 else 1
    h, w = shape[-2:]
    zs = np.unique(np.linspace(0, nz - 1, min(nz, int(max_slices))).round().astype(int))
    per_slice = max(1, int(max_samples) // len(zs))
    step = max(1, math.ceil(math.sqrt(h * w / per_slice)))
    blocks = []
    for z in zs:
        prefix: tuple[Any, ...] = (int(z),) if len(shape) == 3 else ()
        values = _strided_slice(image, prefix, step).astype(np.float64, copy=False).ravel()
        finite = np.isfinite(values)
        blocks.append(values if finite.all() else values[finite])
    values = np.concatenate(blocks)
    if values.size == 0:
        raise ValueError("the image has no finite pixel values: cannot normalise it")
    mean = float(values.mean())
    std = float(np.sqrt(np.mean(np.square(values - mean))))
    if not math.isfinite(std) or std < 1e-8 * max(1.0, abs(mean)):
        std = 1.0
    return {"mean": mean, "std": std}


#: the name prediction used for the same estimator
estimate_normalization = compute_normalization


def normalize(data: np.ndarray, stats: dict[str, float] | None) -> np.ndarray:
    """``(data - mean) / std`` as float32 (``data`` as float32 when ``stats`` is None)."""
    out = np.asarray(data, dtype=np.float32)
    if stats is None:
        return out
    return (out - np.float32(stats["mean"])) / np.float32(stats["std"])
