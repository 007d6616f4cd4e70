"""Facts about napari layers that several docks need, and how class labels are shown.

Where an image came from, which slices a paint event (or an undo/redo) touched, the class colours of
a labels layer.
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


class HistoryWatch:
    """The slices an undo or redo of a Labels layer rewrote: napari emits no ``paint`` event for
    them, only ``set_data`` (as for any refresh); the history stacks tell which item moved."""

    def __init__(self) -> None:
        self._lengths = (0, 0)

    def reset(self, layer: Any) -> None:
        self._lengths = self._stacks(layer)

    @staticmethod
    def _stacks(layer: Any) -> tuple[int, int]:
        undo, redo = getattr(layer, "_undo_history", ()), getattr(layer, "_redo_history", ())
        return len(undo), len(redo)

    def moved(self, layer: Any) -> set[int]:
        """The z indices of the history item undone or redone since the last call (O(1) when
        none was: call it on every ``set_data``)."""
        before, self._lengths = self._lengths, self._stacks(layer)
        (n_undo, n_redo), (was_undo, was_redo) = self._lengths, before
        if n_redo > was_redo:  # an undo moved the item onto the redo stack
            item = layer._redo_history[-1]
        elif n_redo < was_redo and n_undo >= was_undo:  # a redo moved it back
            item = layer._undo_history[-1] if n_undo else ()
        else:
            return set()
        zs: set[int] = set()
        for atom in item:
            zs |= atom_slices(atom, layer.ndim)
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


def check_labels_by_dtype(layer: Labels) -> None:
    """Make each paint of a lazy (zarr, dask) labels layer check the label against ``data.dtype``.

    napari validates every brush dab with ``get_dtype(layer)``, which reads ``data[0]``: a whole
    slice of a zarr array (17-60 ms for 4096 x 4096 in 512 x 512 chunks), on the GUI thread, at
    every dab.  The dtype is on the array itself; the range check stays napari's.  numpy data (a
    cheap view) and a napari without that method are left alone.
    """
    data = getattr(layer, "data", None)
    validate = getattr(type(layer), "_validate_label_in_range", None)
    if isinstance(data, np.ndarray) or validate is None or not hasattr(data, "dtype"):
        return
    from napari.utils._dtype import get_dtype_limits

    def _validate(label: int) -> None:
        low, high = get_dtype_limits(np.dtype(layer.data.dtype))
        if low <= label <= high:
            return
        validate(layer, label)  # napari's own check raises its own error

    layer._validate_label_in_range = _validate
