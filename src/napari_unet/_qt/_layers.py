"""Facts about napari layers that several docks need, and how class labels are shown.

Where an image came from, which slices a paint event touched, the class colours of a labels layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import label_colormap

if TYPE_CHECKING:
    from napari.layers import Labels


def image_source_path(layer: Any) -> Path | None:
    """The file an image layer was read from, if known."""
    meta = getattr(layer, "metadata", None) or {}
    p = (meta.get("napari_unet") or {}).get("path") if isinstance(meta, dict) else None
    if not p:
        source = getattr(layer, "source", None)
        p = getattr(source, "path", None)
    return Path(p) if p else None


def atom_slices(atom: Any, ndim: int) -> set[int]:
    """The z indices touched by one napari Labels history atom."""
    if ndim < 3:
        return {0}
    key = getattr(atom, "slice_key", None)
    if key is not None:  # _MaskedPaintAtom
        s = key[ndim - 3]
        if isinstance(s, slice):
            return set(range(s.start or 0, s.stop if s.stop is not None else (s.start or 0) + 1))
        return {int(s)}
    try:
        indices = atom[0]
        return {int(z) for z in np.unique(np.asarray(indices[ndim - 3]))}
    except (TypeError, IndexError, ValueError):
        return set()


def paint_slices(event: Any, ndim: int) -> set[int]:
    """The z indices a Labels ``paint`` event touched (empty when it cannot tell)."""
    zs: set[int] = set()
    for atom in getattr(event, "value", None) or ():
        zs |= atom_slices(atom, ndim)
    return zs


def style_labels(layer: Labels, names: Sequence[str], colors: Sequence[str]) -> None:
    """Colour ``layer`` by class (0 transparent) and record the classes in its metadata."""
    layer.colormap = label_colormap(colors)
    md = dict(layer.metadata.get("napari_unet", {}))
    md.update(class_names=list(names), class_colors=list(colors))
    layer.metadata = {**layer.metadata, "napari_unet": md}
    try:
        layer.features = {"index": np.arange(len(names) + 1), "class": ["unlabelled", *names]}
    except (ValueError, TypeError):  # pragma: no cover - features are a nicety
        pass
