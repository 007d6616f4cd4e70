"""Facts about napari layers that several docks need: where an image came from,
which slices a paint event touched.  No widgets here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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
