"""npe2 writers for Labels layers: Fiji-readable multipage TIFF, and OME-NGFF labels (zarr).

``.tif``/``.tiff``: one multipage TIFF in the smallest unsigned dtype.  ``.zarr``/``.ome.zarr``:
OME-NGFF label image (``image-label`` with the class names and colours, the layer's scale, a
pyramid) via :func:`napari_unet.ngff_labels.write_ngff_labels`.  Saved onto an existing OME-Zarr
image it goes into ``image.ome.zarr/labels/<layer name>`` (listed there); as ``name.zarr``
inside one (or inside its ``labels`` folder: a save dialog opens a folder it is given rather
than choosing it) into ``image.ome.zarr/labels/name``; anywhere else it becomes a standalone
label image.  Both are written atomically (a temporary beside the target, renamed into place).
A failed write becomes a notification and leaves no file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..io import InvalidImageError, WriteError, write_labels_tiff
from . import notify_error

__all__ = ["write_labels", "write_labels_ngff"]


def _unit(meta: dict[str, Any]) -> str:
    """The layer's unit as napari-unet names it ("um", "nm", "pixel", ...)."""
    units = meta.get("units")
    if not units:
        return "um"
    u = str(units[-1])
    if u in ("pixel", "px"):
        return "pixel"
    return "um" if u in ("µm", "um", "micrometer", "micron") else u


def _full_resolution(data: Any, meta: dict[str, Any]) -> Any:
    """Level 0 of a multiscale layer's pyramid, else ``data``."""
    return data[0] if meta.get("multiscale") else data


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer as TIFF; return ``[path]`` (or ``[]`` after a notified error)."""
    data = _full_resolution(data, meta)
    try:
        written = write_labels_tiff(path, data, scale=meta.get("scale"), unit=_unit(meta))
    except InvalidImageError as exc:
        notify_error(f"could not save labels: {exc}")
        return []
    return [str(written)]


def _class_names(meta: dict[str, Any]) -> list[str]:
    """Class names the layer carries: napari-unet's own, else an NGFF label image's."""
    ours = (meta.get("metadata") or {}).get("napari_unet") or {}
    names = ours.get("class_names")
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return list(names)
    label = ours.get("image_label") or {}
    props = {}
    for entry in label.get("properties") or ():
        try:
            props[int(entry["label-value"])] = str(entry["class"])
        except (KeyError, TypeError, ValueError):
            continue
    return [props.get(v, f"class {v}") for v in range(1, max(props, default=0) + 1)]


def _colors(meta: dict[str, Any], n: int) -> list[list[float]] | None:
    """The layer's colours of values 1..n (RGBA 0..1), None when it has no usable colormap."""
    colormap = meta.get("colormap")
    if n == 0 or not hasattr(colormap, "map"):
        return None
    try:
        rgba = np.asarray(colormap.map(np.arange(1, n + 1)), dtype=float)
    except (TypeError, ValueError):
        return None
    if rgba.shape != (n, 4) or not np.isfinite(rgba).all():
        return None
    return [[float(c) for c in row] for row in np.clip(rgba, 0.0, 1.0)]


def _label_name(name: Any) -> str:
    """A plain NGFF label name (no ``/``, not hidden)."""
    name = re.sub(r"[/\\]+", "_", str(name or "")).strip().lstrip(".")
    return name or "labels"


def _target(path: str, meta: dict[str, Any]) -> tuple[Path, str]:
    """(where :func:`write_ngff_labels` writes, the label name) for a save to ``path``."""
    from ..ngff import image_multiscale

    target = Path(path)
    if image_multiscale(target) is not None:
        return target, _label_name(meta.get("name"))
    parent = target.parent
    image = parent.parent if parent.name == "labels" else parent
    if image_multiscale(image) is not None:
        stem = re.sub(r"(\.ome)?\.zarr$", "", target.name, flags=re.IGNORECASE)
        return image, _label_name(stem)
    return target, _label_name(meta.get("name"))


def write_labels_ngff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer as OME-NGFF labels; return ``[label image path]`` (``[]`` after a
    notified error)."""
    from ..ngff_labels import write_ngff_labels

    data, names = _full_resolution(data, meta), _class_names(meta)
    target, name = _target(path, meta)
    try:
        written = write_ngff_labels(
            target,
            data,
            name=name,
            scale=meta.get("scale"),
            unit=_unit(meta),
            class_names=names or None,
            colors=_colors(meta, len(names)),
        )
    except (InvalidImageError, WriteError) as exc:
        notify_error(f"could not save labels: {exc}")
        return []
    return [str(written)]
