"""1 Annotate: the training labels layer, its classes, the labelled-slice table and the autosave.

Creates (restoring an autosave) or adopts the labels of the image, publishes the labelled slices
in the shared state, autosaves the painted slices in a worker (:mod:`napari_unet.autosave`) and
suggests the next slice to correct (:mod:`.panels.suggestions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QWidget

from ..autosave import (
    MAX_CLASSES,
    LabelsAutosave,
    PendingChanges,
)
from ..classes import reconcile_classes
from ..io import InvalidImageError, check_same_shape
from ..label_store import LabelStore
from ..labels import label_dtype
from ._annotate_autosave import AutosaveMixin
from ._common import (
    Throttle,
    current_z,
    friendly_error,
    n_slices,
    put_layer,
    set_current_z,
    spatial_kwargs,
)
from ._layers import HistoryWatch, check_labels_by_dtype, paint_slices, style_labels
from ._state import is_generated, is_source_image
from ._widgets import LayerCombo, UNetWidget
from ._workers import Job
from .panels.autosave_box import AutosaveBox
from .panels.class_table import ClassPanel
from .panels.slice_table import SlicePanel, count_slices, count_values
from .panels.suggestions import SuggestionPanel

if TYPE_CHECKING:
    import napari

_NEW = "new"  # origin of labels created empty (not restored, not adopted)


def _count_some(labels: Any, zs: list[int], n_classes: int, chunk: int = 4) -> Any:
    """Worker: :func:`.panels.slice_table.count_values` of slices ``zs``, a few at a time."""
    for start in range(0, len(zs), chunk):
        yield {z: count_values(labels, z, n_classes) for z in zs[start : start + chunk]}


class AnnotateWidget(AutosaveMixin, UNetWidget):
    """Create/adopt the training labels, name the classes, track and autosave what is painted."""

    def __init__(
        self,
        napari_viewer: napari.Viewer,
        parent: QWidget | None = None,
        autosave_interval: float = 5.0,
    ) -> None:
        super().__init__(napari_viewer, parent)
        self._adopted: Labels | None = None
        self._recount = PendingChanges(0)  # slices to count again (``reread``: all)
        self._grow_classes = False  # name the values above the classes once counted
        # the TIFF autosave, or the on-disk labels store of a big stack; one thread at a time
        self._autosave: LabelsAutosave | LabelStore | None = None
        self._new_store: LabelStore | None = None  # the store create_labels made the next layer in
        self._changes = PendingChanges(0)  # what the next autosave takes
        self._origin: Path | str | None = None  # how create_labels made the next layer
        self.last_saved: Path | None = None
        self.last_saved_time: float | None = None
        self.save_count = 0
        self._offered: set[Path] = set()
        self._build_source()
        self.slices = SlicePanel()
        self.slice_table = self.slices.table
        self.classes = ClassPanel(self.state, self.slices.painted)
        self.class_table = self.classes.table
        self.preset_combo, self.preset_btn = self.classes.preset_combo, self.classes.preset_btn
        # class edits for scripts: set_classes(names[, colors]), set_class_color(value, colour),
        # add_class([name]), remove_last_class()
        self.set_classes, self.set_class_color = self.classes.set_classes, self.classes.set_color
        self.add_class = self.classes.add_class
        self.remove_last_class = self.classes.remove_last_class
        self.autosave_box = AutosaveBox(autosave_interval)
        # the unlabelled slices ranked by the model's uncertainty, and "go to the next suggestion"
        self.suggestions = SuggestionPanel(self.viewer, self.state, self.start_job)
        self.suggestion_table, self.next_btn = self.suggestions.table, self.suggestions.next_btn
        self.go_to_next_suggestion = self.suggestions.go_to_next
        for panel in (self.classes, self.slices, self.suggestions, self.autosave_box):
            self.layout().addWidget(panel)
        self.finish_layout()
        self._stats_throttle = Throttle(self._update_stats, 400, self)
        self._connect()
        self._follow_state()
        self._update_autosave_hint()

    # ================================================================= layout
    def _build_source(self) -> None:
        form = self.add_form()
        self.image_combo = LayerCombo(self.viewer, Image, accept=is_source_image)
        form.addRow("Image", self.image_combo)
        self.labels_combo = LayerCombo(
            self.viewer, Labels, allow_none=True, accept=lambda lay: not is_generated(lay)
        )
        self.labels_combo.setToolTip(
            "training labels layer: pick an existing Labels layer to adopt it, or create one"
        )
        form.addRow("Training labels", self.labels_combo)
        row = QHBoxLayout()
        self.create_btn = QPushButton("Create training labels")
        self.create_btn.setToolTip("a new Labels layer with the image's shape, scale and translate")
        self.restore_check = QCheckBox("restore autosaved labels")
        self.restore_check.setChecked(True)
        row.addWidget(self.create_btn)
        row.addWidget(self.restore_check)
        self.layout().addLayout(row)
        self.autosave_hint = QLabel("")
        self.autosave_hint.setWordWrap(True)
        self.layout().addWidget(self.autosave_hint)

    def _connect(self) -> None:
        state, box = self.state, self.autosave_box
        for signal, slot in (
            (self.image_combo.layer_changed, state.set_image_layer),
            (self.labels_combo.layer_changed, self._on_labels_combo),
            (self.create_btn.clicked, self.create_labels),
            (self.classes.message, lambda level, text: getattr(self, level)(text)),
            (self.suggestions.message, lambda level, text: getattr(self, level)(text)),
            (self.slice_table.slice_activated, self.go_to_slice),
            (self.suggestions.slice_activated, self.go_to_slice),
            (box.tick, self._autosave_tick),
            (box.folder_changed, self._update_autosave_hint),
            (state.classes_changed, self._on_classes_changed),
            (state.labels_changed, self._on_state_labels),
            (state.image_changed, self._on_state_image),
            (state.labels_edited, self.mark_dirty),  # Correct's accept / undo
        ):
            signal.connect(slot)

    def _follow_state(self) -> None:
        if self.state.image_layer is not None:
            self.image_combo.set_value(self.state.image_layer)
        else:
            self.state.set_image_layer(self.image_combo.value)
        if self.state.labels_layer is not None:
            self.labels_combo.set_value(self.state.labels_layer)
            self._attach(self.state.labels_layer)
            return
        for lay in self.viewer.layers:  # a layer we created before (e.g. another dock)
            md = lay.metadata.get("napari_unet", {}) if isinstance(lay, Labels) else {}
            if md.get("training_labels"):
                self.labels_combo.set_value(lay)
                break

    # ================================================================= image / labels selection
    def _on_state_image(self, layer: Image | None) -> None:
        if layer is not None and self.image_combo.value is not layer:
            self.image_combo.set_value(layer)
        lab = self.state.labels_layer
        if layer is not None and lab is not None and lab.data.shape != layer.data.shape:
            self.warning(
                f"training labels {lab.name!r} {tuple(lab.data.shape)} do not match the image "
                f"{layer.name!r} {tuple(layer.data.shape)}: create or pick labels for this image"
            )
            self.labels_combo.set_value(None)
        self._update_autosave_hint()

    def _on_labels_combo(self, layer: Labels | None) -> None:
        if layer is None:
            if self.state.labels_layer is not None:
                self.state.set_labels_layer(None)
        elif layer is not self.state.labels_layer:
            self.adopt_labels(layer)

    def _show_in_combo(self, layer: Labels | None) -> None:
        self.labels_combo.blockSignals(True)
        self.labels_combo.set_value(layer)
        self.labels_combo.blockSignals(False)

    def _on_state_labels(self, layer: Labels | None) -> None:
        if self.labels_combo.value is not layer:
            self._show_in_combo(layer)
        self._attach(layer)

    def adopt_labels(self, layer: Labels) -> bool:
        """Use an existing Labels layer as the training labels (its shape must match the image)."""
        image = self.state.image_layer
        if image is None:
            self.error("pick an image layer first, then the labels layer to adopt")
            self.labels_combo.set_value(self.state.labels_layer)
            return False
        try:
            check_same_shape(layer.data.shape, image.data.shape, what="labels layer")
        except InvalidImageError as exc:
            self.error(f"{exc}: pick or create labels for image {image.name!r}")
            self._show_in_combo(self.state.labels_layer)
            return False
        md = dict(layer.metadata.get("napari_unet", {}))
        names = md.get("class_names")
        if names:  # otherwise the values above the classes are named once counted
            self.state.set_classes(*reconcile_classes(len(names), names, md.get("class_colors")))
        md["training_labels"] = True
        layer.metadata = {**layer.metadata, "napari_unet": md}
        self.state.set_labels_layer(layer)
        self._style_labels(layer)
        self.info(f"training labels: {layer.name!r}", notify=False)
        return True

    def create_labels(self) -> Labels | None:
        """Create the training Labels layer for the current image (restoring an autosave).

        All or nothing: if anything fails, the classes are put back and no layer is left.
        """
        image = self.grayscale_image(
            "no image layer: open a stack (File > Open) or a sample, then create labels"
        )
        if image is None:
            return None
        before = (list(self.state.class_names), list(self.state.class_colors))
        try:
            layer, restored = self._new_labels(image)
        except Exception as exc:  # nothing half-applied: no half-styled layer, the old classes
            self.state.set_classes(*before)
            self.error(friendly_error(exc, "creating the training labels failed"))
            return None
        self._origin = restored or _NEW
        self.state.set_labels_layer(layer)  # shown in the combo box by _on_state_labels
        try:
            layer.mode = "paint"
            layer.selected_label = 1
            self.viewer.layers.selection.active = layer
        except (ValueError, AttributeError):  # pragma: no cover - cosmetic
            pass
        if restored is not None:
            self.last_saved = restored
            self.info(f"restored autosaved labels from {restored}")
        else:
            first = self.state.class_names[0]
            self.info(
                f"created {layer.name!r}: paint a few slices (class 1 = {first})", notify=False
            )
        return layer

    def _new_labels(self, image: Image) -> tuple[Labels, Path | None]:
        """The new labels layer (the autosave's labels and classes, else zeros) and its source."""
        shape = tuple(image.data.shape)
        data, restored = self._read_autosave(shape)
        if data is None:
            data = np.zeros(shape, dtype=label_dtype(len(self.state.class_names)))
        md = {"napari_unet": {"training_labels": True, "image": image.name}}
        layer = put_layer(
            self.viewer, None, f"{image.name} labels", "labels", data,
            opacity=0.6, metadata=md, **spatial_kwargs(image),
        )  # fmt: skip
        try:
            self._style_labels(layer)
        except Exception:
            self.viewer.layers.remove(layer)
            raise
        return layer, restored

    def _style_labels(self, layer: Labels) -> None:
        style_labels(layer, self.state.class_names, self.state.class_colors)

    # ================================================================= attach: events, stats, autosave
    def _layer_events(self, layer: Labels) -> list[tuple[Any, Any]]:
        ev = layer.events
        return [
            (ev.paint, self._on_paint),
            (ev.data, self._on_data),
            (ev.set_data, self._on_set_data),
        ]

    def _attach(self, layer: Labels | None) -> None:
        old = self._adopted
        if old is layer:
            return
        if old is not None:
            if self._unsaved():
                self._save_sync()  # e.g. the layer was deleted or the viewer is closing
            for event, callback in self._layer_events(old):
                try:
                    event.disconnect(callback)
                except (TypeError, ValueError, RuntimeError):
                    pass
        origin, self._origin = self._origin, None
        store, self._new_store = self._new_store, None
        store = store if store is not None and getattr(layer, "data", None) is store.array else None
        self._adopted = layer
        self._history = HistoryWatch()  # undo/redo rewrite slices without a paint event
        self._history.reset(layer)
        self.slices.counts.clear()
        n = n_slices(layer) if layer is not None else 0
        self._recount = PendingChanges(n, reread=store is None)
        if store is not None:  # count only the slices with chunks on disk, in a worker
            self._recount.mark(store.stored_slices())
        restored = isinstance(origin, Path)
        # adopted or restored labels: the worker reads all their slices at the first autosave
        self._changes = PendingChanges(n, reread=origin != _NEW and store is None)
        if layer is None:
            self._autosave = None
            self._refresh_table()
            return
        scale = tuple(float(s) for s in layer.scale)
        self._autosave = store or LabelsAutosave(layer.data.shape, scale)
        named = layer.metadata.get("napari_unet", {}).get("class_names")
        self._grow_classes = restored or (origin is None and not named)
        check_labels_by_dtype(layer)  # a zarr store: no slice read per brush dab
        for event, callback in self._layer_events(layer):
            event.connect(callback)
        self._stats_throttle.trigger()
        self._update_autosave_hint()

    def _on_paint(self, event: Any) -> None:
        if self._adopted is not None:
            self.mark_dirty(paint_slices(event, self._adopted.ndim) or None)

    def _on_data(self, event: Any = None) -> None:
        self.mark_dirty()

    def _on_set_data(self, event: Any = None) -> None:
        # refresh() after a direct write, undo/redo or a slice change: the shown slice may differ,
        # and an undo/redo rewrote the slices of its history item
        if self._adopted is not None:
            moved = self._history.moved(self._adopted)
            self.mark_dirty(sorted({current_z(self.viewer, self._adopted), *moved}))

    def mark_dirty(self, slices: Any = None) -> None:
        """The labels changed on ``slices`` (None: unknown ones, e.g. after a scripted write)."""
        if slices is not None:
            slices = list(slices)
        self._changes.mark(slices)
        self._recount.mark(slices)
        self._stats_throttle.trigger()

    # -- statistics ----------------------------------------------------------------------------
    def _update_stats(self) -> None:
        layer = self._adopted
        if layer is None:
            return
        k = len(self.state.class_names)
        everything, zs = self._recount.reread, sorted(self._recount.slices)
        self._recount.clear()
        if isinstance(self._autosave, LabelStore):  # the store knows every slice written to
            self._count_in_worker(layer, k, sorted({*zs, *self._autosave.take_touched_slices()}))
            return
        if not everything:
            for z in zs:
                self.slices.counts[z] = count_values(layer.data, z, k)
            self._refresh_table()
            return
        self._count_in_worker(layer, k)

    def _count_in_worker(self, layer: Labels, k: int, zs: list[int] | None = None) -> None:
        """Count slices ``zs`` (None: all, cancelling a running count) in a worker."""
        if self.busy("stats"):
            if zs is not None:  # counted after the running count
                self._recount.mark(zs)
                self._stats_throttle.trigger()
                return
            self._jobs["stats"].cancel()
        if zs is None:
            self.slices.counts.clear()
        elif not zs:
            return
        work = (count_slices, layer.data, k) if zs is None else (_count_some, layer.data, zs, k)
        job = Job(
            *work,
            on_yield=self._on_counts,
            on_error=lambda e: self.error(friendly_error(e, "counting labelled pixels")),
            on_finished=lambda: setattr(self, "_grow_classes", False),
        )
        self.start_job("stats", job)

    def _on_counts(self, counts: dict[int, np.ndarray]) -> None:
        self.slices.counts.update(counts)
        top = max((len(c) - 1 for c in counts.values()), default=0)
        names, colors = self.state.class_names, self.state.class_colors
        if self._grow_classes and top > MAX_CLASSES > len(names):
            self.warning(
                f"the labels hold values up to {top:,}: only classes 1..{MAX_CLASSES} are named"
            )
        top = min(top, MAX_CLASSES)
        if self._grow_classes and top > len(names):
            self.state.set_classes(*reconcile_classes(top, names, colors))
        else:
            self._refresh_table()

    def labelled_slices(self) -> dict[int, np.ndarray]:
        """``{z: counts per value 0..K}`` of the slices with at least one labelled pixel."""
        return self.slices.labelled()

    def _refresh_table(self) -> None:
        self.state.set_labelled_slices(self.slices.refresh(self.state.class_names))
        self.slices.summary.setToolTip(self.slices.summary.text())  # it may be cut off

    def go_to_slice(self, z: int) -> None:
        layer = self._adopted or self.state.image_layer
        if layer is not None:
            set_current_z(self.viewer, layer, z)

    # -- classes -------------------------------------------------------------------------------
    def _on_classes_changed(self) -> None:
        self._changes.dirty = True  # the class names/colours are saved with the labels
        self.classes.fill()
        for layer in (self.state.labels_layer, self._adopted):
            if layer is not None:
                self._style_labels(layer)
        self._refresh_table()
