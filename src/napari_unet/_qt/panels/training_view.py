"""What a running training sees of the viewer: label edits, the slice and region on screen, the overlay.

GUI thread only; each handler does a bounded amount of work (a set of slice indices, one layer update).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._common import current_z, label_colormap, put_layer, slice_placement
from .._layers import paint_slices

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

PREVIEW_SUFFIX = " training preview"

Region = tuple[int, int, int, int]


def visible_view(viewer: napari.Viewer, image: Image) -> tuple[int, Region | None]:
    """The slice of ``image`` shown and its visible part ``(y0, y1, x0, x1)`` (None: all)."""
    z = current_z(viewer, image)
    if viewer.dims.ndisplay != 2:
        return z, None
    try:
        (y0, x0), (y1, x1) = np.asarray(image.corner_pixels, dtype=int)[:, -2:]
    except (AttributeError, TypeError, ValueError):
        return z, None
    return z, ((y0, y1 + 1, x0, x1 + 1) if y1 > y0 and x1 > x0 else None)


class LabelsLink:
    """Calls ``edited(slices | None)`` when a labels layer changes: paint strokes (their slices),
    undo/redo and scripted refreshes (the slice shown), a new data array (None: any slice)."""

    def __init__(self, viewer: napari.Viewer, edited: Callable[[list[int] | None], None]) -> None:
        self._viewer = viewer
        self._edited = edited
        self.layer: Labels | None = None

    def _events(self, lab: Labels) -> list[tuple[Any, Any]]:
        ev = lab.events
        return [
            (ev.paint, self._on_paint),
            (ev.set_data, self._on_set_data),
            (ev.data, self._on_data),
        ]

    def connect(self, labels: Labels) -> None:
        self.disconnect()
        for event, callback in self._events(labels):
            event.connect(callback)
        self.layer = labels

    def disconnect(self) -> None:
        lab, self.layer = self.layer, None
        if lab is not None:
            for event, callback in self._events(lab):
                try:
                    event.disconnect(callback)
                except (TypeError, ValueError, RuntimeError):
                    pass

    def _on_paint(self, event: Any) -> None:
        if self.layer is not None:
            self._edited(sorted(paint_slices(event, self.layer.ndim)) or None)

    def _on_set_data(self, event: Any = None) -> None:
        if self.layer is not None:
            self._edited([current_z(self._viewer, self.layer)])

    def _on_data(self, event: Any = None) -> None:
        self._edited(None)


class PreviewOverlay:
    """The training preview layer: made once per run, then only its data (and offset) change
    (in place when the shape holds: its layer-list thumbnail keeps the first preview)."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self._viewer = viewer
        self.layer: Labels | None = None
        self._classes: tuple[list[str], list[str]] = ([], [])

    def show(
        self,
        image: Image,
        labels2d: np.ndarray,
        z: int,
        region: Sequence[int] | None = None,
        classes: tuple[list[str], list[str]] | None = None,
    ) -> Labels:
        """``labels2d`` (of ``region`` ``(y0, y1, x0, x1)``, None: the slice) at slice ``z``;
        ``classes`` (names, colours) make the layer anew (at the start of a run)."""
        placement = slice_placement(image, z)
        if region is not None:
            t, sc = list(placement["translate"]), placement["scale"]
            t[-2] += int(region[0]) * sc[-2]
            t[-1] += int(region[2]) * sc[-1]
            placement["translate"] = tuple(t)
        data = labels2d[None] if image.ndim >= 3 else labels2d
        layer = self.layer
        alive = layer is not None and layer in self._viewer.layers and layer.ndim == data.ndim
        if classes is None and alive:
            moved = tuple(layer.translate) != placement["translate"]
            if moved:
                layer.translate = placement["translate"]
            old = layer.data
            if isinstance(old, np.ndarray) and (old.shape, old.dtype) == (data.shape, data.dtype):
                # in place: a canvas redraw only; a new array also redraws the thumbnail in the
                # layer list (one more pass over the window, tens of ms with software OpenGL)
                old[...] = data
                layer.refresh(thumbnail=False, highlight=False, extent=moved)
            else:
                layer.data = data
            return layer
        if classes is not None:
            self._classes = (list(classes[0]), list(classes[1]))
        names, colors = self._classes
        meta = {"generated": True, "training_preview": True, "class_names": list(names)}
        self.layer = put_layer(
            self._viewer,
            layer,
            f"{image.name}{PREVIEW_SUFFIX}",
            "labels",
            data,
            opacity=0.45,
            colormap=label_colormap(colors),
            metadata={"napari_unet": meta},
            **placement,
        )
        return self.layer
