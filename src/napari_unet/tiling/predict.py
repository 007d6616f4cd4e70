"""Tiled prediction of a 2-D image or a Z-stack of any size: :func:`predict_tiled`.

Checks the arguments, picks the outputs and the normalisation, runs the engine on a prepared net.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import check_int
from ..devices import resolve_device
from ..labels import label_dtype
from ..normalization import estimate_normalization
from ..slices import array_shape
from .engine import Engine, NonFiniteWarning, PredictionCancelled, ProgressCallback, TilingWarning
from .geometry import check_model, resolve_overlap, tile_pair
from .inference import inference_model
from .memory import default_block_size

__all__ = [
    "NonFiniteWarning",
    "PredictionCancelled",
    "TilingWarning",
    "predict_blocks",
    "predict_tiled",
]


def check_image(image: Any) -> tuple[int, ...]:
    """The shape of a non-empty, real-valued ``(H, W)`` or ``(Z, H, W)`` array."""
    shape = array_shape(image)
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


def check_tiling(
    model: nn.Module, tile_size: Any, batch_size: Any, overlap: Any
) -> tuple[tuple[int, int] | None, int | None]:
    """The checked tile pair and batch size (None: the default); also checks ``overlap``."""
    tile = None if tile_size is None else tile_pair(tile_size, "tile_size")
    batch = None if batch_size is None else check_int("batch_size", batch_size, 1)
    resolve_overlap(model, overlap)
    return tile, batch


def resolve_block_size(
    model: nn.Module, block_size: Any, probabilities: bool, tta: bool
) -> tuple[int, int]:
    """The checked ``block_size`` as a pair, or the default for this network and outputs."""
    if block_size is None:
        size = default_block_size(int(model.n_classes), probabilities, tta)
        return size, size
    return tile_pair(block_size, "block_size")


def check_normalization(normalization: Any) -> tuple[float, float] | None:
    """``(mean, std)`` from a ``{"mean", "std"}`` mapping, or None for None."""
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


def image_normalization(image: Any, normalization: Any) -> tuple[float, float]:
    """The checked ``normalization``, or the image's statistics when it is None."""
    norm = check_normalization(normalization)
    if norm is None:
        stats = estimate_normalization(image)
        norm = (stats["mean"], stats["std"])
    return norm


def check_out(out: Any, shape: tuple[int, ...], n_classes: int, what: str = "out") -> None:
    """Raise unless ``out`` is a writable label (or, else, float probability) array of ``shape``."""
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


def _check_probabilities_dtype(probabilities_dtype: Any) -> np.dtype:
    probs_dtype = np.dtype(probabilities_dtype)
    if probs_dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"probabilities_dtype must be float16 or float32, got {probs_dtype}")
    return probs_dtype


def _check_progress(progress: Any) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")


def _outputs(
    model: nn.Module, shape: tuple[int, ...], out: Any, probs_out: Any, probs: bool, dtype: Any
) -> tuple[Any, Any]:
    """The checked (or new) labels and probabilities (None unless ``probs`` or ``probs_out``)."""
    n_classes = int(model.n_classes)
    if out is None:
        out = np.zeros(shape, label_dtype(n_classes))
    else:
        check_out(out, shape, n_classes)
    if probs_out is not None:
        check_out(probs_out, (n_classes, *shape), n_classes, "probabilities_out")
    elif probs:
        probs_out = np.zeros((n_classes, *shape), dtype)
    return out, probs_out


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
    block_size: int | Sequence[int] | None = None,
) -> Any:
    """Predict the class map of a 2-D image or a Z-stack, block by block, tile by tile (docs/TILING.md).

    Parameters
    ----------
    model : UNet
        A single-channel napari_unet UNet; it runs as a prepared copy (eval mode,
        batch norm folded, channels_last): the caller's model is never modified.
    image : array-like, (H, W) or (Z, H, W)
        numpy, memmap, dask or zarr, read one YX block (with its halo) at a time; any size.
    tile_size, batch_size : int, optional
        Largest network input tile (an int or ``(h, w)``, see :func:`plan_tiles`)
        and tiles per forward pass; default from the device (:func:`default_tile_and_batch`).
    device, amp
        See :func:`napari_unet.devices.resolve_device`; ``amp``: bfloat16 autocast on CUDA.
    out, probabilities_out : array, optional
        Preallocated labels (integer, ``image.shape``) and probabilities (float,
        ``(C, *image.shape)``; implies ``return_probabilities``): numpy, memmap or
        zarr, each block written once.  Default: new numpy arrays (labels only, in the
        smallest unsigned dtype, unless probabilities are asked for).
    return_probabilities : bool, default False
        Also return the softmax probabilities (``probabilities_dtype``: float32 or float16).
    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` before the first batch and after
        each; returning ``False`` raises :class:`PredictionCancelled` once the
        finished slices are written (later ones are not).
    normalization : dict, optional
        ``{"mean", "std"}``: the network sees ``(x - mean) / std``; default the
        image's statistics (:func:`napari_unet.normalization.compute_normalization`).
    tta : bool, default False
        Average the softmax over the 8 flips/rotations of each slice.
    overlap : int, optional
        Same padding only: the input tiles' overlap; default :func:`exact_overlap`.
    block_size : int or (int, int), optional
        Largest YX block (output pixels per side, whole tiles) held at once; default
        :func:`~napari_unet.tiling.memory.default_block_size`.  Any block size gives the
        bit-identical result; memory is bounded by the block, not the slice.

    Returns
    -------
    labels, or (labels, probabilities)
        Class values ``1..n_classes`` (argmax + 1).  Bad arguments raise TypeError/ValueError;
        NaN/inf pixels are predicted as the mean intensity (a :class:`NonFiniteWarning`).
    """
    check_model(model)
    shape = check_image(image)
    dev = resolve_device(device)
    tile, batch = check_tiling(model, tile_size, batch_size, overlap)
    _check_progress(progress)
    pdtype = _check_probabilities_dtype(probabilities_dtype)
    norm = image_normalization(image, normalization)
    out, probs_out = _outputs(model, shape, out, probabilities_out, return_probabilities, pdtype)
    blocks = resolve_block_size(model, block_size, probs_out is not None, bool(tta))
    with inference_model(model, dev) as net:
        engine = Engine(
            net,
            image,
            dev,
            amp=bool(amp),
            tile_size=tile,
            batch_size=batch,
            overlap=overlap,
            norm=norm,
            tta=bool(tta),
            out=out,
            probs_out=probs_out,
            progress=progress,
            block_size=blocks,
        )
        engine.run()
    if (warning := engine.nonfinite_warning()) is not None:
        warnings.warn(warning, stacklevel=2)
    return out if probs_out is None else (out, probs_out)


def predict_blocks(
    model: nn.Module,
    image: Any,
    blocks: Sequence[tuple[int, tuple[int, int, int, int]]],
    *,
    out: Any,
    normalization: dict[str, float],
    probabilities_out: Any = None,
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    amp: bool = True,
    tta: bool = False,
    overlap: int | None = None,
) -> None:
    """Predict only the YX ``blocks`` ``(z, (y0, y1, x0, x1))`` of ``image`` into ``out`` (a dask task).

    Each block reads just its input (with the halo its tiles need) and is written once, at its
    place in ``out`` (and ``probabilities_out``); the pixels equal :func:`predict_tiled`'s.
    ``z`` is 0 for a 2-D image.
    """
    check_model(model)
    shape = check_image(image)
    dev = resolve_device(device)
    tile, batch = check_tiling(model, tile_size, batch_size, overlap)
    norm = check_normalization(normalization)
    if norm is None:
        raise ValueError("predict_blocks needs the normalization of the whole image")
    check_out(out, shape, int(model.n_classes))
    if probabilities_out is not None:
        check_out(probabilities_out, (int(model.n_classes), *shape), 0, "probabilities_out")
    with inference_model(model, dev) as net:
        engine = Engine(
            net,
            image,
            dev,
            amp=bool(amp),
            tile_size=tile,
            batch_size=batch,
            overlap=overlap,
            norm=norm,
            tta=bool(tta),
            out=out,
            probs_out=probabilities_out,
            progress=None,
            block_size=(shape[-2], shape[-1]),
            blocks=list(blocks),
        )
        engine.run()
    if (warning := engine.nonfinite_warning()) is not None:
        warnings.warn(warning, stacklevel=2)
