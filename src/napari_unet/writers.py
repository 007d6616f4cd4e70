"""Export writers for masks and probabilities, shared by the Export dock and the CLI.

Probabilities have one layout on disk: an ImageJ hyperstack (Z, C, Y, X) with the
pixel size, which Fiji opens as channels x slices; zarr keeps the (C, Z, Y, X) order.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import InvalidImageError, atomic_write
from .labels import LabelValueError, smallest_unsigned_dtype
from .slices import read_block

__all__ = ["write_pngs", "write_probabilities_tiff", "write_probabilities_zarr"]


def _slice_dtype(arr: Any) -> np.dtype:
    """The smallest unsigned dtype that holds every slice of ``arr`` (read one at a time)."""
    try:
        dtypes = [smallest_unsigned_dtype(read_block(arr, z)) for z in range(arr.shape[0])]
    except LabelValueError as exc:
        raise InvalidImageError(str(exc)) from exc
    return max(dtypes, key=lambda d: d.itemsize)


def write_pngs(folder: str | os.PathLike, data: Any) -> list[Path]:
    """One ``slice_NNNN.png`` per slice of a label volume (uint8 or uint16), written atomically."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = data if data.ndim >= 3 else data[None]
    dtype = _slice_dtype(arr)
    if dtype.itemsize > 2:
        raise InvalidImageError("labels above 65535 do not fit in a PNG: export TIFF instead")
    out = []
    for z in range(arr.shape[0]):
        sl = read_block(arr, z).astype(dtype, copy=False)
        path = folder / f"slice_{z:04d}.png"
        atomic_write(path, lambda tmp, sl=sl: iio.imwrite(tmp, sl, extension=".png"), suffix=".png")
        out.append(path)
    return out


def write_probabilities_tiff(
    path: str | os.PathLike,
    probs: Any,
    scale: Sequence[float] | None = None,
    dtype: Any = np.float32,
) -> Path:
    """Write ``(C, Z, Y, X)`` or ``(C, Y, X)`` probabilities as an ImageJ hyperstack.

    ``tifffile.imread`` returns ``(Z, C, Y, X)`` (``(C, Y, X)`` for one slice);
    Fiji shows C channels of Z slices with the pixel size of ``scale`` (Z, Y, X).
    """
    import tifffile

    arr = read_block(probs, ...).astype(np.dtype(dtype), copy=False)
    if arr.ndim not in (3, 4):
        raise InvalidImageError(f"probabilities must be (C, Z, Y, X) or (C, Y, X), got {arr.shape}")
    scale = tuple(float(s) for s in (scale or (1.0,) * (arr.ndim - 1)))
    metadata: dict[str, Any] = {"axes": "ZCYX" if arr.ndim == 4 else "CYX"}
    if arr.ndim == 4:
        arr = np.moveaxis(arr, 0, 1)  # ImageJ order: Z C Y X
        metadata["spacing"] = scale[-3] if len(scale) >= 3 else 1.0
    sy, sx = scale[-2], scale[-1]

    def _write(tmp: Path) -> None:
        tifffile.imwrite(
            str(tmp), arr, imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=metadata,
            compression="zlib", photometric="minisblack",
        )  # fmt: skip

    return atomic_write(path, _write)


def write_probabilities_zarr(path: str | os.PathLike, probs: Any, dtype: Any = np.float32) -> Path:
    """Write probabilities (any leading axes, then Y, X) as a zarr array, renamed into place."""
    import zarr

    path = Path(path)
    parent = path.parent
    if not os.access(parent, os.W_OK):
        raise InvalidImageError(f"{parent}: folder is not writable")
    tmp = parent / f".{path.name}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    shape = tuple(probs.shape)
    chunks = tuple([1] * (len(shape) - 2) + [min(shape[-2], 1024), min(shape[-1], 1024)])
    try:
        z = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype=np.dtype(dtype))
        for idx in np.ndindex(*shape[:-2]):
            z[idx] = read_block(probs, idx).astype(np.dtype(dtype), copy=False)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InvalidImageError(
            f"{path}: could not write the zarr array ({exc.strerror or exc})"
        ) from exc
    return path
