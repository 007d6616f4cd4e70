"""OME-NGFF (OME-Zarr) metadata: an image's multiscales, and the metadata of label images.

Reads NGFF 0.4 (zarr v2, metadata at the top of the attributes) and 0.5 (zarr v3, under ``"ome"``);
builds ``multiscales`` and ``image-label`` (class names and colours) for
:mod:`napari_unet.ngff_labels`, which writes label images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import InvalidImageError

__all__ = [
    "NGFF_VERSION",
    "Multiscale",
    "image_label_metadata",
    "image_multiscale",
    "image_scale",
    "label_group_metadata",
    "level0_path",
    "ome_attrs",
    "read_attrs",
    "read_multiscale",
]

#: the version written for new label images
NGFF_VERSION = "0.4"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_UNIT_NAMES = {"um": "micrometer", "µm": "micrometer", "nm": "nanometer", "mm": "millimeter"}


@dataclasses.dataclass
class Multiscale:
    """The first ``multiscales`` entry of an OME-Zarr image, normalised across versions."""

    paths: list[str]  # dataset paths, full resolution first
    axes: list[dict[str, Any]]  # {"name", "type", "unit"} per array axis
    scales: list[list[float]]  # per level, per axis (the multiscale's own transform applied)
    translation: list[float] | None  # of level 0, per axis
    name: str | None
    version: str
    image_label: dict[str, Any] | None  # the ``image-label`` metadata of a label image


def ome_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The OME metadata in a node's attributes and its version (None when there is none)."""
    ome = attrs.get("ome")
    if isinstance(ome, Mapping):  # 0.5
        return dict(ome), str(ome.get("version", "0.5"))
    if not any(key in attrs for key in ("multiscales", "image-label", "labels")):
        return {}, None
    version = None
    ms = attrs.get("multiscales")
    if isinstance(ms, list) and ms and isinstance(ms[0], Mapping):
        version = ms[0].get("version")
    label = attrs.get("image-label")
    if version is None and isinstance(label, Mapping):
        version = label.get("version")
    return dict(attrs), str(version or NGFF_VERSION)


def _axes(raw: Any, ndim: int) -> list[dict[str, Any]]:
    """Axes as dicts; 0.3 wrote names, 0.1/0.2 none (then the last ``ndim`` of t c z y x)."""
    if not isinstance(raw, list) or not raw:
        raw = list("tczyx"[-ndim:]) if ndim <= 5 else []
    out = []
    for ax in raw:
        if isinstance(ax, str):
            ax = {"name": ax}
        if not isinstance(ax, Mapping) or not isinstance(ax.get("name"), str):
            raise InvalidImageError(f"OME-Zarr metadata: an axis must have a name, got {ax!r}")
        name = ax["name"]
        out.append({"name": name, "type": ax.get("type") or _AXIS_TYPES.get(name.lower())})
        if isinstance(ax.get("unit"), str):
            out[-1]["unit"] = ax["unit"]
    return out


def _transform(transforms: Any, kind: str, ndim: int) -> list[float] | None:
    """The ``scale`` or ``translation`` vector of a coordinateTransformations list, if given."""
    if not isinstance(transforms, list):
        return None
    for t in transforms:
        if isinstance(t, Mapping) and t.get("type") == kind and isinstance(t.get(kind), list):
            values = t[kind]
            if len(values) != ndim:
                raise InvalidImageError(
                    f"OME-Zarr metadata: a {kind} has {len(values)} values for {ndim} axes"
                )
            try:
                return [float(v) for v in values]
            except (TypeError, ValueError):
                raise InvalidImageError(f"OME-Zarr metadata: bad {kind} {values!r}") from None
    return None


def read_multiscale(attrs: Mapping[str, Any], ndim: int | None = None) -> Multiscale | None:
    """The image's first multiscale (None when ``attrs`` hold none); bad metadata raise.

    ``ndim``: the dimensions of the arrays (for old files that list no axes).
    """
    ome, version = ome_attrs(attrs)
    ms = ome.get("multiscales")
    if version is None or not ms:
        return None
    if not isinstance(ms, list) or not isinstance(ms[0], Mapping):
        raise InvalidImageError("OME-Zarr metadata: 'multiscales' must be a list of objects")
    first = ms[0]
    datasets = first.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InvalidImageError("OME-Zarr metadata: the multiscale lists no datasets")
    paths = [d.get("path") for d in datasets if isinstance(d, Mapping)]
    if len(paths) != len(datasets) or not all(isinstance(p, str) and p for p in paths):
        raise InvalidImageError("OME-Zarr metadata: every dataset needs a 'path'")
    axes = _axes(first.get("axes"), ndim or 0)
    n = len(axes)
    overall = _transform(first.get("coordinateTransformations"), "scale", n) or [1.0] * n
    scales = []
    for d in datasets:
        own = _transform(d.get("coordinateTransformations"), "scale", n) or [1.0] * n
        scales.append([a * b for a, b in zip(own, overall)])
    translation = _transform(datasets[0].get("coordinateTransformations"), "translation", n)
    label = ome.get("image-label")
    return Multiscale(
        [str(p) for p in paths],
        axes,
        scales,
        translation,
        first.get("name") if isinstance(first.get("name"), str) else None,
        version,
        dict(label) if isinstance(label, Mapping) else None,
    )


def level0_path(path: str | os.PathLike) -> Path | None:
    """The full-resolution array of the OME-Zarr image at ``path`` (None when it is not one)."""
    attrs = read_attrs(Path(path))
    if attrs is None:
        return None
    try:
        ms = read_multiscale(attrs)
    except InvalidImageError:
        return None
    return None if ms is None else Path(path) / ms.paths[0]


def read_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of the zarr group at ``path`` (v2 or v3), or None when it is none."""
    import json

    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        f = path / name
        if f.is_file():
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                return None
            if key is None:
                return doc if isinstance(doc, dict) else None
            if isinstance(doc, dict) and doc.get("node_type", "group") == "group":
                attrs = doc.get(key) or {}
                return attrs if isinstance(attrs, dict) else None
    return None


# --------------------------------------------------------------------------- building


def _rgba(colour: str | Sequence[Any]) -> list[int]:
    """``"#rrggbb"``/``"#rrggbbaa"`` or 3/4 numbers (0..1 or 0..255) -> 0..255 RGBA."""
    if isinstance(colour, str):
        text = colour.lstrip("#")
        if len(text) not in (6, 8) or any(ch not in "0123456789abcdefABCDEF" for ch in text):
            raise InvalidImageError(f"colour {colour!r}: use '#rrggbb'")
        values = [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    else:
        values = [float(v) for v in colour]
        if len(values) not in (3, 4):
            raise InvalidImageError(f"colour {colour!r}: give 3 or 4 values")
        if all(v <= 1.0 for v in values):
            values = [round(v * 255) for v in values]
        values = [int(min(255, max(0, v))) for v in values]
    return values + [255] * (4 - len(values))


def image_label_metadata(
    class_names: Sequence[str] | None,
    colors: Sequence[Any] | None,
    values: Sequence[int] | None = None,
    version: str = NGFF_VERSION,
    source: str | None = None,
) -> dict[str, Any]:
    """``image-label``: one colour and one ``class`` property per class value (class k -> ``values[k-1]``)."""
    from .classes import default_colors

    names = list(class_names or [])
    n = max(len(names), len(colors or []), len(values or []))
    values = [int(v) for v in values] if values is not None else list(range(1, n + 1))
    colors = list(colors) if colors else default_colors(n)
    colors = colors + default_colors(n)[len(colors) :]
    label: dict[str, Any] = {
        "colors": [{"label-value": v, "rgba": _rgba(c)} for v, c in zip(values, colors)],
        "properties": [{"label-value": v, "class": str(s)} for v, s in zip(values, names)],
    }
    if version != "0.5":
        label["version"] = version
    if source is not None:
        label["source"] = {"image": source}
    return label


def _multiscales(
    name: str, ndim: int, scale: Sequence[float], unit: str, n_levels: int, version: str
) -> list[dict[str, Any]]:
    names = "zyx"[-ndim:]
    unit_name = _UNIT_NAMES.get(unit, unit) if unit and unit != "pixel" else None
    axes = [
        {"name": a, "type": "space", **({"unit": unit_name} if unit_name else {})} for a in names
    ]
    datasets = []
    for level in range(n_levels):
        factor = [1.0] * (ndim - 2) + [2.0**level] * 2
        level_scale = [float(s) * f for s, f in zip(scale, factor)]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": level_scale}],
            }
        )
    ms: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version != "0.5":
        ms = {"version": version, **ms}
    return [ms]


def _scale_of(scale: Sequence[float] | None, ndim: int) -> list[float]:
    values = [float(s) for s in (scale or ())][-ndim:]
    return [1.0] * (ndim - len(values)) + values


def image_multiscale(path: str | os.PathLike) -> Multiscale | None:
    """The multiscale of the OME-Zarr image (not label image) at ``path``, or None."""
    path = Path(path)
    attrs = read_attrs(path) if path.is_dir() else None
    ms = read_multiscale(attrs) if attrs is not None else None
    return None if ms is None or ms.image_label is not None else ms


def image_scale(path: Path, ndim: int) -> tuple[list[float] | None, str]:
    """The pixel size and unit of the image at ``path`` (its last ``ndim`` axes), if it is one."""
    ms = image_multiscale(path)
    if ms is None or len(ms.scales[0]) < ndim:
        return None, "um"
    unit = ms.axes[-1].get("unit")
    return ms.scales[0][-ndim:], unit if isinstance(unit, str) else "pixel"


def label_group_metadata(
    name: str, shape: tuple[int, ...], scale: Any, unit: str, classes: Mapping[str, Any],
    version: str, inside: bool, n_levels: int,
) -> dict[str, Any]:  # fmt: skip
    label = image_label_metadata(
        classes.get("class_names"), classes.get("colors"), classes.get("values"), version,
        source="../../" if inside else None,
    )  # fmt: skip
    ms = _multiscales(name, len(shape), _scale_of(scale, len(shape)), unit, n_levels, version)
    return {"multiscales": ms, "image-label": label}
