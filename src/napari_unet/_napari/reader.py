"""npe2 reader for EM volumes and label masks: TIFF, OME-Zarr, zarr, N5 and HDF5 (see :mod:`napari_unet.volumes`).

A volume becomes an image or labels layer with its pixel size (an OME-Zarr pyramid a multiscale
layer, everything but a small TIFF lazily); a bad one a notification; a zarr result whose
completion record says slices are missing opens with a warning naming them.

A dataset inside an HDF5 file: napari opens only paths that exist (``file.h5:/volumes/raw``
and ``file.h5/volumes/raw`` do not) or URLs with a host, so ``viewer.open`` and the ``napari``
command take it as a file URL, ``file://localhost/abs/file.h5:/volumes/raw``
(:func:`napari_location` writes one); ``file.h5`` itself opens every image dataset in it.
Datasets inside zarr and N5 stores are folders and open by their path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse
from urllib.request import url2pathname

import numpy as np

from ..io import InvalidImageError
from ..volumes import Volume, as_volume, is_volume_path, member_locations, open_volume
from . import notify_error

LayerData = tuple[Any, ...]
#: pixels read at most to set the contrast of a lazy image
_SAMPLE = 1024


def _sample(vol: Volume) -> np.ndarray:
    """A bounded crop of the middle slice of the smallest level (what the contrast is set from)."""
    data = vol.levels[-1] if vol.levels else vol.data
    index = (int(data.shape[0]) // 2,) if data.ndim == 3 else ()
    return np.asarray(data[(*index, slice(0, _SAMPLE), slice(0, _SAMPLE))])


def _contrast(vol: Volume) -> tuple[float, float] | None:
    sample = vol.data if not vol.lazy else _sample(vol)
    finite = np.asarray(sample)
    if finite.dtype.kind == "f":
        finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else None


def _labels_colormap(vol: Volume) -> dict[Any, Any] | None:
    """The colours of an NGFF label image as a napari direct colormap (value -> RGBA 0..1)."""
    label = vol.metadata.get("image_label") or {}
    colors = {}
    for entry in label.get("colors") or ():
        try:
            value, rgba = int(entry["label-value"]), [float(c) / 255 for c in entry["rgba"]]
        except (KeyError, TypeError, ValueError):
            continue
        if len(rgba) == 4:
            colors[value] = rgba
    if not colors:
        return None
    return {None: [0.0, 0.0, 0.0, 0.0], 0: [0.0, 0.0, 0.0, 0.0], **colors}


def layer_data_from_volume(vol: Any, *, as_labels: bool | None = None) -> LayerData:
    """Turn a :class:`~napari_unet.volumes.Volume` (or ``TiffData``) into a napari layer-data tuple."""
    vol = as_volume(vol)
    is_labels = vol.is_labels if as_labels is None else as_labels
    info = {"path": vol.location, "unit": vol.unit, "lazy": vol.lazy, "format": vol.format}
    meta: dict[str, Any] = {
        "name": vol.name,
        "scale": vol.scale,
        "metadata": {"napari_unet": {**info, **vol.metadata}},
    }
    if vol.unit not in ("pixel", ""):
        meta["units"] = ("µm" if vol.unit == "um" else vol.unit,) * len(vol.scale)
    data: Any = list(vol.levels) if vol.levels else vol.data
    if vol.levels:
        meta["multiscale"] = True
    if is_labels:
        colormap = _labels_colormap(vol)
        if colormap is not None:
            meta["colormap"] = colormap
        return (data, meta, "labels")
    limits = _contrast(vol)
    if limits is not None:
        meta["contrast_limits"] = limits
    meta["colormap"] = "gray"
    return (data, meta, "image")


#: the name the TIFF-only reader had (``napari-unet gui`` uses it)
layer_data_from_tiff = layer_data_from_volume


def _warn_incomplete(vol: Volume) -> None:
    """Warn (still opening it) when a zarr result's completion record names missing slices."""
    from ..completion import describe_missing, missing_slices

    stored = vol.stored
    if stored is None:
        return
    missing = missing_slices(stored)
    if missing:
        from napari.utils.notifications import show_warning

        show_warning(
            f"{vol.location}: incomplete result: {describe_missing(stored, missing)} (they "
            "read as 0); finish it with 'napari-unet predict ... --resume'"
        )


def read_path(path: str | os.PathLike, *, as_labels: bool | None = None) -> list[LayerData]:
    """Read one volume (an OME-Zarr image with its labels, every image of an HDF5 file or zarr
    group) into layer data; a bad file becomes a notification and no layer."""
    out: list[LayerData] = []
    for location in member_locations(path):
        try:
            vol = open_volume(location, as_labels=as_labels)
        except InvalidImageError as exc:
            notify_error(str(exc))
            continue
        _warn_incomplete(vol)
        out.append(layer_data_from_volume(vol, as_labels=as_labels))
    return out or [(None,)]  # napari's sentinel: handled, nothing to add


def local_location(path: str | os.PathLike) -> str:
    """The location a napari path names: a local ``file:`` URL (``file://localhost/...`` or
    ``file:///...``) becomes its path, inner ``:/dataset`` kept; anything else is unchanged."""
    text = os.fspath(path)
    parsed = urlparse(text)
    if parsed.scheme.lower() != "file" or parsed.netloc.lower() not in ("", "localhost"):
        return text
    return url2pathname(parsed.path)


def napari_location(location: str | os.PathLike) -> str:
    """What to hand ``viewer.open`` (or the ``napari`` command) for ``location``: a
    ``file://localhost`` URL for a dataset inside an HDF5 file (napari refuses paths that do
    not exist), else the location unchanged."""
    from ..volumes import split_location

    path, inner, kind = split_location(location)
    if kind != "hdf5" or not inner:
        return os.fspath(location)
    uri = Path(path).resolve().as_uri()  # file:///abs/file.h5, percent-encoded
    return f"file://localhost{uri[len('file://') :]}:/{quote(inner.strip('/'))}"


def _read(paths: str | list[str]) -> list[LayerData]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[LayerData] = []
    for p in paths:
        out.extend(d for d in read_path(local_location(p)) if d[0] is not None)
    return out or [(None,)]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``napari_get_reader``: claim TIFF files and zarr/N5/HDF5 stores, paths inside them,
    and local ``file:`` URLs of those (see the module doc)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_volume_path(local_location(p)) for p in paths):
        return None
    return _read
