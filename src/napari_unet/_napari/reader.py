"""npe2 reader for .tif/.tiff EM stacks and label masks.

A file becomes an image or labels layer with its pixel size; a bad one a notification.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import InvalidImageError, TiffData, read_tiff
from . import notify_error

LayerData = tuple[Any, ...]
_SUFFIXES = (".tif", ".tiff")


def layer_data_from_tiff(td: TiffData, *, as_labels: bool | None = None) -> LayerData:
    """Turn :class:`~napari_unet.io.TiffData` into a napari layer-data tuple."""
    is_labels = td.is_labels if as_labels is None else as_labels
    meta: dict[str, Any] = {
        "name": td.path.stem,
        "scale": td.scale,
        "metadata": {
            "napari_unet": {"path": str(td.path), "unit": td.unit, "lazy": td.lazy, **td.metadata}
        },
    }
    if td.unit not in ("pixel", ""):
        meta["units"] = ("µm" if td.unit == "um" else td.unit,) * len(td.scale)
    if is_labels:
        return (td.data, meta, "labels")
    if not td.lazy:
        lo, hi = float(td.data.min()), float(td.data.max())
        if hi > lo:
            meta["contrast_limits"] = (lo, hi)
    meta["colormap"] = "gray"
    return (td.data, meta, "image")


def read_path(path: str | os.PathLike, *, as_labels: bool | None = None) -> list[LayerData]:
    """Read one TIFF into layer data; a bad file becomes a notification and no layer."""
    try:
        td = read_tiff(path, as_labels=as_labels)
    except InvalidImageError as exc:
        notify_error(str(exc))
        return [(None,)]  # napari's sentinel: handled, nothing to add
    return [layer_data_from_tiff(td, as_labels=as_labels)]


def _read(paths: str | list[str]) -> list[LayerData]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[LayerData] = []
    for p in paths:
        out.extend(d for d in read_path(p) if d[0] is not None)
    return out or [(None,)]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``napari_get_reader``: claim .tif/.tiff paths."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(Path(p).suffix.lower() in _SUFFIXES for p in paths):
        return None
    return _read
