"""The one estimator of an image's intensity statistics, and applying them to another stack.

Training, the CLI and the window all normalise a stack as ``(x - mean) / std`` with statistics
from :func:`compute_normalization`, stored in the checkpoint with the stack's intensity range.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .slices import array_shape, read_block

__all__ = [
    "PERCENTILES",
    "RANGE_TOLERANCE",
    "check_intensity",
    "compute_normalization",
    "estimate_normalization",
    "intensity_reference",
    "normalize",
    "stack_normalization",
    "training_statistics",
]

#: pixels and slices read by default (a strided subsample; a volume is never loaded whole)
MAX_SAMPLES = 4_000_000
MAX_SLICES = 32
#: the robust intensity range of a stack: these percentiles of its finite pixels
PERCENTILES = (1.0, 99.0)
#: a stack whose range agrees with the training stack's to within this fraction of its
#: width at both ends is normalised with the recorded statistics as they are
RANGE_TOLERANCE = 0.25


def _strided_slice(image: Any, prefix: tuple[Any, ...], step: int) -> np.ndarray:
    try:
        return read_block(image, (*prefix, slice(None, None, step), slice(None, None, step)))
    except (IndexError, TypeError, ValueError, NotImplementedError):
        # some array types only support unit-stride slicing: read the slice
        return read_block(image, prefix if prefix else ...)[::step, ::step]


def _finite_sample(image: Any, max_samples: int, max_slices: int) -> np.ndarray:
    """The finite pixel values (float64) of a strided subsample of ``image``."""
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
    return values


def _mean_std(values: np.ndarray) -> dict[str, float]:
    mean = float(values.mean())
    std = float(np.sqrt(np.mean(np.square(values - mean))))
    if not math.isfinite(std) or std < 1e-8 * max(1.0, abs(mean)):
        std = 1.0
    return {"mean": mean, "std": std}


def _reference(image: Any, values: np.ndarray) -> dict[str, Any]:
    low, high = (float(v) for v in np.percentile(values, PERCENTILES))
    dtype = str(np.dtype(getattr(image, "dtype", values.dtype)))
    return {"dtype": dtype, "percentiles": list(PERCENTILES), "low": low, "high": high}


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
    return _mean_std(_finite_sample(image, max_samples, max_slices))


def intensity_reference(
    image: Any, max_samples: int = MAX_SAMPLES, max_slices: int = MAX_SLICES
) -> dict[str, Any]:
    """The intensity range of a stack, recorded in a checkpoint as its ``intensity``.

    ``{"dtype", "percentiles", "low", "high"}``: the stack's dtype and the
    :data:`PERCENTILES` of its finite pixels (same subsample as
    :func:`compute_normalization`).
    """
    return _reference(image, _finite_sample(image, max_samples, max_slices))


def training_statistics(image: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`compute_normalization` and :func:`intensity_reference` of ``image`` in one read."""
    values = _finite_sample(image, MAX_SAMPLES, MAX_SLICES)
    return _mean_std(values), _reference(image, values)


def check_intensity(record: Any) -> dict[str, Any]:
    """``record`` if it is a valid :func:`intensity_reference`, else a one-line ``ValueError``."""
    ok = isinstance(record, Mapping) and isinstance(record.get("dtype"), str)
    if ok:
        low, high = record.get("low"), record.get("high")
        ok = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in (low, high)
        )
        ok = ok and low <= high and len(record["dtype"]) <= 32
    if not ok:
        shown = reprlib.repr(record)
        raise ValueError(
            f"intensity must be {{'dtype': str, 'low': number, 'high': number >= low}}, got {shown}"
        )
    return dict(record)


def _far_apart(values: np.ndarray, stats: Mapping[str, float]) -> str | None:
    """A note when the image's statistics are far from ``stats`` (no recorded range)."""
    own = _mean_std(values)
    ratio = own["std"] / stats["std"]
    if abs(own["mean"] - stats["mean"]) <= 3 * stats["std"] and 1 / 3 <= ratio <= 3:
        return None
    return (
        f"the image's intensities (mean {own['mean']:.4g}, std {own['std']:.4g}) are far from "
        f"the training stack's (mean {stats['mean']:.4g}, std {stats['std']:.4g}) and the "
        "checkpoint records no intensity range to map them: the result may be wrong; convert "
        "the image to the training stack's dtype and range"
    )


def stack_normalization(
    image: Any, normalization: Mapping[str, float] | None, intensity: Mapping[str, Any] | None
) -> tuple[dict[str, float], str | None]:
    """The statistics that normalise ``image`` as the training stack was, and a note (or None).

    With a recorded ``intensity`` range (:func:`intensity_reference`) whose
    ends the image's own range misses by more than :data:`RANGE_TOLERANCE` of
    its width (another dtype, a x257 or 0..1 copy), the image's range is
    mapped linearly onto the training range: the statistics become
    ``mean' = low' + (mean - low) * s`` and ``std' = std * s`` with
    ``s = (high' - low') / (high - low)``, so a rescaled copy of the training
    stack is normalised to the same values.  Otherwise the recorded
    statistics are used as they are; without a recorded range a note warns
    when the image's statistics are far from them.  ``normalization`` None:
    the image's own statistics.
    """
    values = _finite_sample(image, MAX_SAMPLES, MAX_SLICES)
    if normalization is None:
        return _mean_std(values), None
    stats = {"mean": float(normalization["mean"]), "std": float(normalization["std"])}
    if intensity is None:
        return stats, _far_apart(values, stats)
    ref = _reference(image, values)
    rlo, rhi = float(intensity["low"]), float(intensity["high"])
    width, own = rhi - rlo, ref["high"] - ref["low"]
    tol = RANGE_TOLERANCE * width
    if width <= 0 or own <= 0 or (abs(ref["low"] - rlo) <= tol and abs(ref["high"] - rhi) <= tol):
        return stats, None
    scale = own / width
    mapped = {"mean": ref["low"] + (stats["mean"] - rlo) * scale, "std": stats["std"] * scale}
    span = f"percentiles {PERCENTILES[0]:g}-{PERCENTILES[1]:g}"
    note = (
        f"the image's intensities ({ref['dtype']}, {span} {ref['low']:.4g}..{ref['high']:.4g}) "
        f"differ from the training stack's ({intensity['dtype']}, {rlo:.4g}..{rhi:.4g}): "
        "mapped linearly onto them"
    )
    return mapped, note


#: the name prediction used for the same estimator
estimate_normalization = compute_normalization


def normalize(data: np.ndarray, stats: dict[str, float] | None) -> np.ndarray:
    """``(data - mean) / std`` as float32 (``data`` as float32 when ``stats`` is None)."""
    out = np.asarray(data, dtype=np.float32)
    if stats is None:
        return out
    return (out - np.float32(stats["mean"])) / np.float32(stats["std"])
