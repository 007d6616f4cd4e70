"""Export writers for masks and probabilities, shared by the Export dock, the autosave and the CLI.

Masks are labels TIFFs (lazy volumes streamed slice by slice) or PNGs; probabilities are
an ImageJ (Z, C, Y, X) hyperstack with the pixel size, or a zarr array in (C, Z, Y, X) order.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import InvalidImageError, atomic_write, write_labels_tiff
from .labels import LabelValueError, smallest_unsigned_dtype
from .slices import read_block, read_slice

__all__ = [
    "create_zarr",
    "write_label_stack",
    "write_mask_tiff",
    "write_pngs",
    "write_probabilities_tiff",
    "write_probabilities_zarr",
]


def _n_slices(data: Any) -> int:
    return int(data.shape[0]) if len(data.shape) >= 3 else 1


def _slice_dtype(data: Any) -> np.dtype:
    """The smallest unsigned dtype that holds every slice of ``data`` (read one at a time)."""
    try:
        dtypes = [smallest_unsigned_dtype(read_slice(data, z)) for z in range(_n_slices(data))]
    except LabelValueError as exc:
        raise InvalidImageError(str(exc)) from exc
    return max(dtypes, key=lambda d: d.itemsize)


def write_label_stack(
    path: str | os.PathLike,
    pages: Iterable[np.ndarray | bytes],
    shape: Sequence[int],
    dtype: Any,
    scale: Sequence[float] | None = None,
) -> Path:
    """Write a labels TIFF that Fiji opens as a stack, one slice at a time, atomically.

    ``pages`` yields the ``(H, W)`` slices of a ``(Z, H, W)`` or ``(H, W)`` ``shape``
    in order, as ``dtype`` arrays or as zlib-compressed bytes of such an array
    (one strip per page).  ``scale`` (Z, Y, X) becomes the ImageJ spacing and resolution.
    """
    import tifffile

    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    scale = tuple(float(s) for s in (scale or (1.0,) * len(shape)))
    metadata: dict[str, Any] = {"axes": "ZYX" if len(shape) == 3 else "YX"}
    if len(shape) == 3:
        metadata["spacing"] = scale[-3] if len(scale) >= 3 else 1.0
    options = {
        "imagej": dtype != np.uint32,  # ImageJ stacks hold 8/16-bit (or float) pixels only
        "resolution": (1.0 / scale[-1], 1.0 / scale[-2]),
        "rowsperstrip": shape[-2],
        "compression": "zlib",
        "photometric": "minisblack",
    }
    return atomic_write(
        path,
        lambda tmp: tifffile.imwrite(
            str(tmp), iter(pages), shape=shape, dtype=dtype, metadata=metadata, **options
        ),
    )


def write_mask_tiff(
    path: str | os.PathLike, data: Any, scale: Sequence[float] | None = None
) -> Path:
    """A label mask as a TIFF in its smallest unsigned dtype (pixel units).

    numpy masks go through :func:`napari_unet.io.write_labels_tiff`; lazy ones
    (dask, zarr, memmap) are read and written one slice at a time, never whole.
    """
    if type(data) is np.ndarray:
        return write_labels_tiff(path, data, scale=scale, unit="pixel")
    dtype = _slice_dtype(data)
    pages = (read_slice(data, z).astype(dtype, copy=False) for z in range(_n_slices(data)))
    return write_label_stack(path, pages, tuple(data.shape), dtype, scale)


def write_pngs(folder: str | os.PathLike, data: Any) -> list[Path]:
    """One ``slice_NNNN.png`` per slice of a label volume (uint8 or uint16), written atomically."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = _slice_dtype(data)
    if dtype.itemsize > 2:
        raise InvalidImageError("labels above 65535 do not fit in a PNG: export TIFF instead")
    out = []
    for z in range(_n_slices(data)):
        sl = read_slice(data, z).astype(dtype, copy=False)
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

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.uint8, np.uint16):
        raise InvalidImageError(
            f"probabilities TIFF (an ImageJ hyperstack) holds float32, not {dtype}: write zarr"
        )
    arr = read_block(probs, ...).astype(dtype, copy=False)
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


def create_zarr(path: str | os.PathLike, shape: Sequence[int], dtype: Any) -> Any:
    """A new zarr array of zeros at ``path``, one chunk per slice (in tiles of 1024 x 1024)."""
    import zarr

    shape = tuple(int(n) for n in shape)
    chunks = tuple([1] * (len(shape) - 2) + [min(shape[-2], 1024), min(shape[-1], 1024)])
    return zarr.open_array(
        str(path), mode="w", shape=shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0
    )


def write_probabilities_zarr(path: str | os.PathLike, probs: Any, dtype: Any = np.float32) -> Path:
    """Write probabilities (any leading axes, then Y, X) as a zarr array, renamed into place."""

    path = Path(path)
    parent = path.parent
    if not os.access(parent, os.W_OK):
        raise InvalidImageError(f"{parent}: folder is not writable")
    tmp = parent / f".{path.name}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    shape = tuple(probs.shape)
    try:
        z = create_zarr(tmp, shape, dtype)
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
