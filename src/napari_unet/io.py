"""Reading EM stacks (TIFF, OME-TIFF, ImageJ; lazily when large) and writing label masks as TIFF.

Every bad input raises an :class:`InvalidImageError` (a ``ValueError``) a user can act on.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from . import labels as _labels
from .outputs import replace_atomically

# tifffile logs odd metadata as warnings: keep them off stderr unless logging is set up
logging.getLogger("tifffile").addHandler(logging.NullHandler())

#: Stacks whose uncompressed size reaches this many bytes open lazily.
DEFAULT_MEMORY_BUDGET = 1 << 30  # 1 GiB

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: micrometres per unit, for the unit names found in TIFF, OME and NGFF metadata
UNIT_TO_UM = {
    "nm": 1e-3,
    "nanometer": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "\u03bcm": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}


class InvalidImageError(ValueError):
    """A file or array cannot be used as an EM image or label mask."""


class ImageNotFoundError(InvalidImageError, FileNotFoundError):
    """The path given does not exist."""


class ShapeMismatchError(InvalidImageError):
    """A labels array does not have the shape of its image."""


class WriteError(InvalidImageError, OSError):
    """A file could not be written: the message names the user's path and the reason."""


@dataclass
class TiffData:
    """What :func:`read_tiff` found in a file.

    Attributes
    ----------
    data
        ``(Z, Y, X)`` or ``(Y, X)`` array: numpy, ``numpy.memmap`` or dask.
    scale
        Pixel size per axis (same length as ``data.shape``), in ``unit``.
    unit
        Physical unit of ``scale`` (``"um"`` when the file had a known unit,
        ``"pixel"`` when it had none).
    axes
        Axis letters of ``data`` (``"ZYX"`` or ``"YX"``).
    is_labels
        Whether the file looks like a label mask (or was declared one).
    lazy
        Whether ``data`` is a lazy view (memmap/dask) rather than in memory.
    """

    data: Any
    scale: tuple[float, ...]
    unit: str
    axes: str
    is_labels: bool
    lazy: bool
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


# --------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InvalidImageError(f"{path}: is a folder, not a TIFF file")
    size = path.stat().st_size
    if size == 0:
        raise InvalidImageError(f"{path}: the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in _TIFF_MAGIC:
        raise InvalidImageError(
            f"{path}: not a TIFF file (it does not start with a TIFF header); "
            "napari-unet reads .tif/.tiff stacks"
        )


def _ome_scale(ome_xml: str | None) -> dict[str, float]:
    """Physical pixel sizes (in µm) from OME-XML, keyed by axis letter."""
    if not ome_xml:
        return {}
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return {}
    out: dict[str, float] = {}
    for elem in root.iter():
        if elem.tag.endswith("Pixels"):
            for ax in "XYZ":
                value = elem.get(f"PhysicalSize{ax}")
                if value is None:
                    continue
                unit = elem.get(f"PhysicalSize{ax}Unit", "µm")
                factor = UNIT_TO_UM.get(unit, 1.0)
                try:
                    out[ax] = float(value) * factor
                except ValueError:
                    continue
            break
    return out


def _imagej_scale(tif: tifffile.TiffFile) -> tuple[dict[str, float], str]:
    """Pixel sizes from the resolution tags and ImageJ metadata."""
    out: dict[str, float] = {}
    ij = tif.imagej_metadata or {}
    unit = str(ij.get("unit", "")).strip()
    page = tif.pages.first
    for ax, tagname in (("X", "XResolution"), ("Y", "YResolution")):
        tag = page.tags.get(tagname)
        if tag is None:
            continue
        try:
            num, den = tag.value
            if num > 0 and den > 0:
                res = num / den  # pixels per unit
                if res != 1.0 or unit:
                    out[ax] = 1.0 / res
        except (TypeError, ValueError, ZeroDivisionError):
            continue
    if "spacing" in ij:
        try:
            out["Z"] = float(ij["spacing"])
        except (TypeError, ValueError):
            pass
    if not unit:
        resunit = page.tags.get("ResolutionUnit")
        if resunit is not None and out:
            code = int(resunit.value)
            if code == 3:  # centimetre
                unit = "cm"
            elif code == 2:  # inch
                out = {k: v * 25400.0 for k, v in out.items()}
                unit = "um"
    return out, unit


def _looks_like_labels(sample: np.ndarray) -> bool:
    """Heuristic: an integer image that is piecewise constant or has few values."""
    if not np.issubdtype(sample.dtype, np.integer) and sample.dtype != bool:
        return False
    if sample.dtype == bool:
        return True
    n_unique = np.unique(sample).size
    if n_unique <= 16:
        return True
    if sample.ndim >= 2 and sample.shape[-1] > 1:
        same = np.mean(sample[..., 1:] == sample[..., :-1])
        return bool(same > 0.8)
    return False


def _lazy_array(series: tifffile.TiffPageSeries, path: Path) -> tuple[Any, str]:
    """A lazy view on ``series``: memmap if contiguous and uncompressed, else dask."""
    if series.dataoffset is not None:
        try:
            return tifffile.memmap(str(path), series=0, mode="r"), "memmap"
        except (ValueError, OSError):
            pass
    import dask.array as da
    import zarr

    store = series.aszarr()
    arr = zarr.open(store, mode="r")
    if not hasattr(arr, "shape"):  # a multiscale group: level 0
        arr = arr[0]
    chunks = (1,) * (len(series.shape) - 2) + tuple(series.shape[-2:])
    return da.from_zarr(arr, chunks=chunks), "dask"


def _check_pages_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Fail early on a truncated file: every strip/tile must lie inside the file."""
    size = path.stat().st_size
    for page in tif.pages:
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        for off, cnt in zip(offsets, counts):
            if off + cnt > size:
                raise InvalidImageError(
                    f"{path}: the file is truncated (page data ends past the end of the file); "
                    "re-export or re-copy the stack"
                )


def _squeeze_axes(shape: Sequence[int], axes: str) -> tuple[tuple[int, ...], str, list[int]]:
    keep = [i for i, n in enumerate(shape) if n != 1 or axes[i] in "YX"]
    return tuple(shape[i] for i in keep), "".join(axes[i] for i in keep), keep


def read_tiff(
    path: str | os.PathLike,
    *,
    as_labels: bool | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> TiffData:
    """Open a TIFF stack for napari-unet.

    Parameters
    ----------
    path
        A ``.tif``/``.tiff`` file: multipage stack, single page, ImageJ
        hyperstack or OME-TIFF holding one grayscale channel.
    as_labels
        ``True`` to read the file as a label mask, ``False`` as an image,
        ``None`` to guess (integer data with few values or piecewise constant).
    memory_budget
        Stacks whose uncompressed size reaches this many bytes open lazily: a
        ``numpy.memmap`` when the pixels are stored contiguously and
        uncompressed, else a dask array over tifffile's zarr store.  ``None``
        always loads into memory.

    Returns
    -------
    TiffData

    Raises
    ------
    ImageNotFoundError
        If ``path`` does not exist.
    InvalidImageError
        For an empty, non-TIFF, truncated or corrupt file, an RGB image, a
        stack with more than three dimensions, or an unsupported dtype.
    """
    path = Path(path)
    _check_file(path)
    try:
        tif = tifffile.TiffFile(str(path))
    except Exception as exc:  # tifffile raises many kinds on corrupt headers
        raise InvalidImageError(f"{path}: corrupt TIFF file ({exc})") from exc
    keep_open = False
    try:
        series, shape, dtype = _grayscale_series(tif, path)
        scale, unit = _physical_scale(tif, len(shape))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        lazy = memory_budget is not None and nbytes >= memory_budget
        if lazy:
            data, how = _lazy_array(series, path)
            data = data.reshape(shape)
            keep_open = how == "dask"  # the zarr store reads through this TiffFile
        else:
            data, how = _read_into_memory(series, path, shape), "memory"
        meta = {"storage": how, "source_axes": series.axes, "dtype": str(dtype)}
        is_labels = decide_is_labels(data, dtype, as_labels, path)
        axes = "ZYX"[-len(shape) :]
        return TiffData(data, scale, unit, axes, is_labels, lazy, path, metadata=meta)
    finally:
        if not keep_open:
            tif.close()


def _grayscale_series(
    tif: tifffile.TiffFile, path: Path
) -> tuple[tifffile.TiffPageSeries, tuple[int, ...], np.dtype]:
    """The first series, its shape without singleton axes and its dtype, if napari-unet reads it."""
    if not tif.series:
        raise InvalidImageError(f"{path}: corrupt TIFF file: it holds no readable image data")
    series = tif.series[0]
    shape, axes, _ = _squeeze_axes(series.shape, series.axes)
    dtype = np.dtype(series.dtype)
    if "S" in axes or (axes and axes[-1] in "S") or series.keyframe.samplesperpixel > 1:
        hint = ""
        if series.axes.startswith("S") and series.shape[0] in (3, 4):
            hint = (
                f"; if this is a {series.shape[0]}-slice stack saved as colour planes, "
                "re-save it as grayscale (tifffile: photometric='minisblack')"
            )
        raise InvalidImageError(
            f"{path}: RGB/multi-sample images are not supported "
            f"(shape {tuple(series.shape)}, axes {series.axes}); convert to grayscale "
            f"(8 or 16 bit){hint}"
        )
    if len(shape) > 3:
        raise InvalidImageError(
            f"{path}: a {len(shape)}D stack (shape {shape}, axes {axes}) is not supported; "
            "napari-unet needs one grayscale channel: a single image (YX) or a stack (ZYX)"
        )
    if len(shape) < 2:
        raise InvalidImageError(f"{path}: not an image (shape {tuple(series.shape)})")
    if dtype.kind not in "uifb":
        raise InvalidImageError(f"{path}: unsupported pixel type {dtype}")
    _check_pages_complete(tif, path)
    return series, shape, dtype


def _physical_scale(tif: tifffile.TiffFile, ndim: int) -> tuple[tuple[float, ...], str]:
    """Pixel size per output axis (ZYX or YX) and its unit ("um", another unit or "pixel")."""
    scales: dict[str, float] = {}
    unit = ""
    if tif.is_ome:
        scales = _ome_scale(tif.ome_metadata)
        unit = "um" if scales else ""
    if not scales:
        scales, unit = _imagej_scale(tif)
        if unit:
            factor = UNIT_TO_UM.get(unit.lower().replace("\\u00b5", "µ"))
            if factor is not None:
                scales = {k: v * factor for k, v in scales.items()}
                unit = "um"
    # the remaining non-YX axis (Z, T, I, Q, ...) maps onto Z
    scale = tuple(float(scales.get(ax, 1.0)) for ax in "ZYX"[-ndim:])
    return scale, unit or "pixel"


def _read_into_memory(
    series: tifffile.TiffPageSeries, path: Path, shape: tuple[int, ...]
) -> np.ndarray:
    try:
        return series.asarray().reshape(shape)
    except Exception as exc:
        raise InvalidImageError(
            f"{path}: could not read the pixel data, the file is truncated or corrupt ({exc})"
        ) from exc


def decide_is_labels(data: Any, dtype: np.dtype, as_labels: bool | None, path: Path) -> bool:
    """``as_labels``, or a guess from a crop of the middle slice (cheap even for huge pages)."""
    if as_labels is None:
        crop = (slice(0, 1024), slice(0, 1024))
        sample = data[(data.shape[0] // 2, *crop)] if data.ndim == 3 else data[crop]
        is_labels = _looks_like_labels(np.asarray(sample))
    else:
        is_labels = bool(as_labels)
    if is_labels and dtype.kind == "f":
        if as_labels:
            raise InvalidImageError(
                f"{path}: a label mask must hold integers, this file holds {dtype}"
            )
        is_labels = False
    return is_labels


def check_same_shape(
    labels_shape: Sequence[int], image_shape: Sequence[int], what: str = "labels"
) -> None:
    """Raise :class:`ShapeMismatchError` unless the two shapes are equal."""
    if tuple(labels_shape) != tuple(image_shape):
        raise ShapeMismatchError(
            f"{what} shape {tuple(labels_shape)} does not match image {tuple(image_shape)}"
        )


# --------------------------------------------------------------------------- writing


def smallest_unsigned_dtype(data: np.ndarray) -> np.dtype:
    """:func:`napari_unet.labels.smallest_unsigned_dtype`, raising :class:`InvalidImageError`."""
    try:
        return _labels.smallest_unsigned_dtype(data)
    except _labels.LabelValueError as exc:
        raise InvalidImageError(str(exc)) from exc


def atomic_write(path: str | os.PathLike, write: Any, suffix: str = ".tif") -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` over ``path``.

    A failure (disk full, exception in ``write``) removes the temporary file
    and leaves any existing ``path`` untouched; an ``OSError`` becomes a
    :class:`WriteError` naming ``path`` and the reason in words.  The file gets
    the user's umask (see :func:`napari_unet.outputs.replace_atomically`).
    """
    return replace_atomically(path, write, suffix=suffix, error=WriteError)


def write_labels_tiff(
    path: str | os.PathLike,
    data: Any,
    *,
    scale: Sequence[float] | None = None,
    unit: str = "um",
    compress: bool = True,
) -> Path:
    """Write a label mask as a (multipage) TIFF that Fiji/ImageJ opens as a stack.

    Parameters
    ----------
    path
        Output file (``.tif``).
    data
        Integer labels, ``(Z, Y, X)`` or ``(Y, X)`` after squeezing singleton
        axes; numpy or dask (read slice by slice).
    scale
        Pixel size per axis of ``data`` (e.g. a napari layer's ``scale``); it
        becomes the ImageJ ``spacing`` (Z) and the resolution tags (Y, X).
    unit
        Unit of ``scale``; ``"pixel"`` writes no physical unit.
    compress
        zlib (deflate) compression, lossless, read by Fiji and tifffile.

    Returns
    -------
    Path
        ``path``.  The file is written to a temporary file and renamed, so a
        failed write never leaves a half file over an old one.
    """
    arr = np.asarray(data)
    squeezed = arr.squeeze() if arr.ndim > 2 else arr
    if squeezed.ndim == 1 or arr.ndim < 2:
        raise InvalidImageError(f"labels must be 2D or 3D, got shape {arr.shape}")
    if squeezed.ndim > 3:
        raise InvalidImageError(f"labels must be 2D (YX) or 3D (ZYX), got shape {arr.shape}")
    if scale is not None:
        scale = [float(s) for s in scale]
        if len(scale) == arr.ndim and squeezed.ndim != arr.ndim:
            scale = [s for s, n in zip(scale, arr.shape) if n != 1][-squeezed.ndim :]
        scale = list(scale)[-squeezed.ndim :]
        if len(scale) < squeezed.ndim:
            scale = [1.0] * (squeezed.ndim - len(scale)) + scale
    else:
        scale = [1.0] * squeezed.ndim
    dtype = smallest_unsigned_dtype(squeezed)
    out = squeezed.astype(dtype, copy=False)
    axes = "ZYX" if out.ndim == 3 else "YX"
    sy, sx = scale[-2], scale[-1]
    imagej = dtype != np.uint32  # ImageJ hyperstacks hold 8/16-bit or float32 only
    metadata: dict[str, Any] = {"axes": axes}
    if unit and unit != "pixel":
        metadata["unit"] = "um" if unit in ("um", "µm", "micron") else unit
    if out.ndim == 3:
        metadata["spacing"] = float(scale[0])

    def _write(tmp: Path) -> None:
        tifffile.imwrite(
            str(tmp),
            out,
            imagej=imagej,
            resolution=(1.0 / sx, 1.0 / sy),
            metadata=metadata if imagej else {"axes": axes},
            compression="zlib" if compress else None,
            photometric="minisblack",
        )

    return atomic_write(path, _write)
