"""1 Annotate: the training labels layer, its classes, labelled-slice table and autosave.

The widget picks the image, creates (or adopts) the training Labels layer of
the image's shape, scale and translate, names and colours the classes
(``0`` = unlabelled), lists the labelled slices with their class balance, and
saves the labels next to the stack every few seconds while they change, in a
background thread, so that a crash loses at most the last few seconds of
painting.  Creating labels for a stack that has an autosave file restores it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..io import InvalidImageError, atomic_write, check_same_shape, read_tiff, write_labels_tiff
from ._common import (
    CLASS_PRESETS,
    PALETTE,
    Throttle,
    current_z,
    default_colors,
    friendly_error,
    label_colormap,
    sanitize_name,
    set_current_z,
    spatial_kwargs,
)
from ._layers import atom_slices, image_source_path
from ._state import is_generated, is_source_image
from ._widgets import LayerCombo, UNetWidget, path_row
from ._workers import Job

if TYPE_CHECKING:
    import napari

AUTOSAVE_SUFFIX = ".napari-unet-labels.tif"
CLASSES_SUFFIX = ".napari-unet-labels.json"
#: environment variable overriding the default autosave folder (images without a file)
AUTOSAVE_ENV = "NAPARI_UNET_AUTOSAVE_DIR"


def default_autosave_dir() -> Path:
    env = os.environ.get(AUTOSAVE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".napari-unet" / "autosave"


def autosave_path_for(layer: Any, folder: str | os.PathLike | None = None) -> Path:
    """``<stem>.napari-unet-labels.tif`` next to the stack, else in ``folder``.

    A stack in a folder that is not writable falls back to ``folder`` (or the
    default autosave folder).
    """
    src = image_source_path(layer)
    if src is not None and os.access(src.parent, os.W_OK):
        return src.with_name(src.stem + AUTOSAVE_SUFFIX)
    base = Path(folder) if folder else default_autosave_dir()
    stem = src.stem if src is not None else sanitize_name(layer.name)
    return base / (stem + AUTOSAVE_SUFFIX)


def _digest(arr: np.ndarray, classes: dict[str, Any] | None = None) -> str:
    h = hashlib.blake2b(np.ascontiguousarray(arr).data, digest_size=16)
    if classes is not None:
        h.update(json.dumps(classes, sort_keys=True).encode())
    return h.hexdigest()


def _save_labels_job(
    snapshot: np.ndarray,
    path: Path,
    scale: tuple[float, ...],
    classes: dict[str, Any],
    last_digest: str | None,
) -> Any:
    """Worker: write ``snapshot`` atomically unless it is what was saved last."""
    digest = _digest(snapshot, classes)
    if digest == last_digest:
        yield ("unchanged", path, digest)
        return
    if last_digest is None and not snapshot.any():
        # nothing painted in this session: never write (or overwrite an autosave with) zeros
        yield ("unchanged", path, last_digest)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_labels_tiff(path, snapshot, scale=scale, unit="pixel")
    side = path.with_name(path.name[: -len(AUTOSAVE_SUFFIX)] + CLASSES_SUFFIX)
    text = json.dumps(classes, indent=1)
    atomic_write(side, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    yield ("saved", path, digest)


def _slice_stats_job(data: Any, n_classes: int) -> Any:
    """Worker: per-slice class counts of a whole labels volume."""
    out: dict[int, np.ndarray] = {}
    arr = data if data.ndim >= 3 else data[None]
    for z in range(arr.shape[0]):
        out[z] = np.bincount(np.asarray(arr[z]).ravel(), minlength=n_classes + 1)
        if z % 16 == 15:
            yield ("partial", dict(out))
            out.clear()
    yield ("partial", out)


class AnnotateWidget(UNetWidget):
    """Create/adopt the training labels, name the classes, track and autosave what is painted."""

    key = "annotate"

    def __init__(
        self,
        napari_viewer: napari.Viewer,
        parent: QWidget | None = None,
        autosave_interval: float = 5.0,
    ) -> None:
        super().__init__(napari_viewer, parent)
        self._adopted: Labels | None = None
        self._stats: dict[int, np.ndarray] = {}
        self._dirty_slices: set[int] = set()
        self._stats_all = False
        self._dirty = False  # labels changed since the last autosave
        self._maybe_dirty = False
        self._last_digest: str | None = None
        self.last_saved: Path | None = None
        self.last_saved_time: float | None = None
        self.save_count = 0
        self._updating_classes = False
        self._offered: set[Path] = set()

        # -- source ---------------------------------------------------------------------
        form = self.add_form()
        self.image_combo = LayerCombo(self.viewer, Image, accept=is_source_image)
        form.addRow("Image", self.image_combo)
        self.labels_combo = LayerCombo(
            self.viewer,
            Labels,
            allow_none=True,
            none_text="(none)",
            accept=lambda lay: not is_generated(lay),
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

        # -- classes --------------------------------------------------------------------
        box = QGroupBox("Classes (0 = unlabelled)")
        vb = QVBoxLayout(box)
        prow = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(CLASS_PRESETS))
        self.preset_btn = QPushButton("Use preset")
        prow.addWidget(self.preset_combo, 1)
        prow.addWidget(self.preset_btn)
        vb.addLayout(prow)
        self.class_table = QTableWidget(0, 3)
        self.class_table.setHorizontalHeaderLabels(["value", "name", "colour"])
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.class_table.setMaximumHeight(130)
        vb.addWidget(self.class_table)
        crow = QHBoxLayout()
        self.add_class_btn = QPushButton("Add class")
        self.remove_class_btn = QPushButton("Remove last")
        crow.addWidget(self.add_class_btn)
        crow.addWidget(self.remove_class_btn)
        vb.addLayout(crow)
        self.layout().addWidget(box)

        # -- labelled slices ------------------------------------------------------------------
        box2 = QGroupBox("Labelled slices (double-click to go there)")
        vb2 = QVBoxLayout(box2)
        self.slice_table = QTableWidget(0, 3)
        self.slice_table.setHorizontalHeaderLabels(["slice", "labelled px", "class balance"])
        self.slice_table.verticalHeader().setVisible(False)
        self.slice_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.slice_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.slice_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.slice_table.setMinimumHeight(120)
        vb2.addWidget(self.slice_table)
        self.summary = QLabel("")
        vb2.addWidget(self.summary)
        self.layout().addWidget(box2)

        # -- autosave -----------------------------------------------------------------------
        box3 = QGroupBox("Autosave")
        f3 = QVBoxLayout(box3)
        arow = QHBoxLayout()
        self.autosave_check = QCheckBox("every")
        self.autosave_check.setChecked(True)
        self.interval_spin = QDoubleSpinBox()
        self.interval_spin.setRange(0.1, 600.0)
        self.interval_spin.setDecimals(1)
        self.interval_spin.setSuffix(" s")
        self.interval_spin.setValue(float(autosave_interval))
        arow.addWidget(self.autosave_check)
        arow.addWidget(self.interval_spin)
        arow.addStretch(1)
        f3.addLayout(arow)
        drow, self.folder_edit, self.folder_btn = path_row(
            f"next to the stack, else {default_autosave_dir()}"
        )
        drow.insertWidget(0, QLabel("Project folder"))
        f3.addLayout(drow)
        self.autosave_label = QLabel("")
        self.autosave_label.setWordWrap(True)
        f3.addWidget(self.autosave_label)
        self.layout().addWidget(box3)
        self.finish_layout()

        # -- timers / throttles ---------------------------------------------------------------
        self._stats_throttle = Throttle(self._update_stats, 400, self)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self._autosave_tick)
        self._apply_interval()

        # -- connections ------------------------------------------------------------------------
        self.image_combo.layer_changed.connect(self._on_image_combo)
        self.labels_combo.layer_changed.connect(self._on_labels_combo)
        self.create_btn.clicked.connect(self.create_labels)
        self.preset_btn.clicked.connect(self._apply_preset)
        self.add_class_btn.clicked.connect(self.add_class)
        self.remove_class_btn.clicked.connect(self.remove_last_class)
        self.class_table.itemChanged.connect(self._on_class_item_changed)
        self.class_table.cellClicked.connect(self._on_class_cell_clicked)
        self.slice_table.cellDoubleClicked.connect(self._on_slice_double_clicked)
        self.autosave_check.toggled.connect(self._apply_interval)
        self.interval_spin.valueChanged.connect(self._apply_interval)
        self.folder_btn.clicked.connect(self._choose_folder)
        self.folder_edit.editingFinished.connect(self._update_autosave_hint)
        self.state.classes_changed.connect(self._on_classes_changed)
        self.state.labels_changed.connect(self._on_state_labels)
        self.state.image_changed.connect(self._on_state_image)

        self._fill_class_table()
        if self.state.image_layer is not None:
            self.image_combo.set_value(self.state.image_layer)
        else:
            self._on_image_combo(self.image_combo.value)
        if self.state.labels_layer is not None:
            self.labels_combo.set_value(self.state.labels_layer)
            self._attach(self.state.labels_layer)
        else:
            for lay in self.viewer.layers:  # a layer we created before (e.g. another dock)
                md = lay.metadata.get("napari_unet", {}) if isinstance(lay, Labels) else {}
                if md.get("training_labels"):
                    self.labels_combo.set_value(lay)
                    break

    # ================================================================= image / labels selection
    @property
    def image_layer(self) -> Image | None:
        return self.state.image_layer

    @property
    def labels_layer(self) -> Labels | None:
        return self.state.labels_layer

    def _on_image_combo(self, layer: Image | None) -> None:
        self.state.set_image_layer(layer)

    def _on_state_image(self, layer: Image | None) -> None:
        if layer is not None and self.image_combo.value is not layer:
            self.image_combo.set_value(layer)
        lab = self.state.labels_layer
        if (
            layer is not None
            and lab is not None
            and tuple(lab.data.shape) != tuple(layer.data.shape)
        ):
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
            return
        if layer is self.state.labels_layer:
            return
        self.adopt_labels(layer)

    def _on_state_labels(self, layer: Labels | None) -> None:
        if layer is not None and self.labels_combo.value is not layer:
            self.labels_combo.blockSignals(True)
            self.labels_combo.set_value(layer)
            self.labels_combo.blockSignals(False)
        if layer is None and self.labels_combo.value is not None:
            self.labels_combo.blockSignals(True)
            self.labels_combo.set_value(None)
            self.labels_combo.blockSignals(False)
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
            self.labels_combo.blockSignals(True)
            self.labels_combo.set_value(self.state.labels_layer)
            self.labels_combo.blockSignals(False)
            return False
        md = dict(layer.metadata.get("napari_unet", {}))
        names = md.get("class_names")
        if names:
            colors = md.get("class_colors") or default_colors(len(names))
            self.state.set_classes(list(names), list(colors)[: len(names)])
        else:
            hi = int(np.max(layer.data)) if layer.data.size and not _is_lazy(layer.data) else 0
            if hi > len(self.state.class_names):
                names = list(self.state.class_names) + [
                    f"class {k}" for k in range(len(self.state.class_names) + 1, hi + 1)
                ]
                self.state.set_classes(names, default_colors(len(names)))
        md["training_labels"] = True
        layer.metadata = {**layer.metadata, "napari_unet": md}
        self.state.set_labels_layer(layer)
        self._style_labels(layer)
        self.info(f"training labels: {layer.name!r}", notify=False)
        return True

    def create_labels(self) -> Labels | None:
        """Create the training Labels layer for the current image (restoring an autosave)."""
        image = self.grayscale_image(
            "no image layer: open a stack (File > Open) or a sample, then create labels"
        )
        if image is None:
            return None
        shape = tuple(image.data.shape)
        data = np.zeros(shape, dtype=np.uint8)
        restored: Path | None = None
        path = self.autosave_path()
        if self.restore_check.isChecked() and path is not None and path.exists():
            loaded = self._read_autosave(path, shape)
            if loaded is not None:
                data, restored = loaded, path
        md = {
            "training_labels": True,
            "image": image.name,
            "class_names": list(self.state.class_names),
            "class_colors": list(self.state.class_colors),
        }
        layer = self.viewer.add_labels(
            data,
            name=f"{image.name} labels",
            opacity=0.6,
            metadata={"napari_unet": md},
            **spatial_kwargs(image),
        )
        self._style_labels(layer)
        self.state.set_labels_layer(layer)
        self.labels_combo.set_value(layer)
        try:
            layer.mode = "paint"
            layer.selected_label = 1
            self.viewer.layers.selection.active = layer
        except (ValueError, AttributeError):  # pragma: no cover - cosmetic
            pass
        if restored is not None:
            self._last_digest = _digest(data, self._classes_dict())
            self.last_saved = restored
            self.info(f"restored autosaved labels from {restored}")
        else:
            self.info(
                f"created {layer.name!r}: paint a few slices (class 1 = {self.state.class_names[0]})",
                notify=False,
            )
        return layer

    def _read_autosave(self, path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        try:
            td = read_tiff(path, as_labels=True, memory_budget=None)
            arr = np.asarray(td.data)
            check_same_shape(arr.shape, shape, what=f"autosaved labels {path.name}")
        except InvalidImageError as exc:
            self.warning(f"{exc}; the autosave was not restored (it is kept on disk)")
            return None
        side = path.with_name(path.name[: -len(AUTOSAVE_SUFFIX)] + CLASSES_SUFFIX)
        try:
            classes = json.loads(side.read_text())
            names, colors = list(classes["class_names"]), list(classes["class_colors"])
            if names and len(names) == len(colors):
                self.state.set_classes(names, colors)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        hi = int(arr.max()) if arr.size else 0
        if hi > len(self.state.class_names):
            names = list(self.state.class_names) + [
                f"class {k}" for k in range(len(self.state.class_names) + 1, hi + 1)
            ]
            self.state.set_classes(names, default_colors(len(names)))
        return arr.astype(np.uint8 if hi < 256 else np.uint16, copy=False)

    def _style_labels(self, layer: Labels) -> None:
        names, colors = self.state.class_names, self.state.class_colors
        layer.colormap = label_colormap(colors)
        md = dict(layer.metadata.get("napari_unet", {}))
        md.update(class_names=list(names), class_colors=list(colors))
        layer.metadata = {**layer.metadata, "napari_unet": md}
        try:
            layer.features = {
                "index": np.arange(len(names) + 1),
                "class": ["unlabelled", *names],
            }
        except (ValueError, TypeError):  # pragma: no cover - features are a nicety
            pass

    # ============================================================== attach: events, stats, autosave
    def _attach(self, layer: Labels | None) -> None:
        old = self._adopted
        if old is layer:
            return
        if old is not None:
            if self._dirty or self._maybe_dirty:
                self._save_sync(old)  # e.g. the layer was deleted or the viewer is closing
            for ev, cb in (
                (old.events.paint, self._on_paint),
                (old.events.data, self._on_data),
                (old.events.set_data, self._on_set_data),
            ):
                try:
                    ev.disconnect(cb)
                except (TypeError, ValueError, RuntimeError):
                    pass
        self._adopted = layer
        self._stats.clear()
        self._dirty = self._maybe_dirty = False
        if layer is None:
            self._last_digest = None
            self._refresh_table()
            return
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)
        layer.events.set_data.connect(self._on_set_data)
        self._last_digest = None
        self._stats_all = True
        self._stats_throttle.trigger()
        self._update_autosave_hint()

    def _on_paint(self, event: Any) -> None:
        self._dirty = True
        layer = self._adopted
        if layer is None:
            return
        for atom in event.value or ():
            self._dirty_slices.update(atom_slices(atom, layer.ndim))
        self._stats_throttle.trigger()

    def _on_data(self, event: Any = None) -> None:
        self._dirty = True
        self._stats_all = True
        self._stats_throttle.trigger()

    def _on_set_data(self, event: Any = None) -> None:
        # refresh() after a direct write, undo/redo or a slice change: maybe changed
        layer = self._adopted
        if layer is None:
            return
        self._maybe_dirty = True
        self._dirty_slices.add(current_z(self.viewer, layer))
        self._stats_throttle.trigger()

    def mark_dirty(self, slices: Any = None) -> None:
        """Tell the widget that the labels changed (e.g. after a scripted write)."""
        self._dirty = True
        if slices is None:
            self._stats_all = True
        else:
            self._dirty_slices.update(int(z) for z in slices)
        self._stats_throttle.trigger()

    # -- statistics ----------------------------------------------------------------------------
    def _update_stats(self) -> None:
        layer = self._adopted
        if layer is None:
            return
        k = len(self.state.class_names)
        if self._stats_all:
            self._stats_all = False
            self._dirty_slices.clear()
            if self.busy("stats"):
                self._jobs["stats"].cancel()
            self._stats.clear()
            job = Job(
                _slice_stats_job,
                layer.data,
                k,
                on_yield=self._on_stats,
                on_error=lambda e: self.error(friendly_error(e, "counting labelled pixels")),
            )
            self.start_job("stats", job)
            return
        data = layer.data
        for z in sorted(self._dirty_slices):
            sl = np.asarray(data[z] if data.ndim >= 3 else data)
            self._stats[z] = np.bincount(sl.ravel(), minlength=k + 1)
        self._dirty_slices.clear()
        self._refresh_table()

    def _on_stats(self, item: tuple[str, dict[int, np.ndarray]]) -> None:
        self._stats.update(item[1])
        self._refresh_table()

    def labelled_slices(self) -> dict[int, np.ndarray]:
        """``{z: counts per value 0..K}`` of the slices with at least one labelled pixel."""
        return {z: c for z, c in sorted(self._stats.items()) if c[1:].sum() > 0}

    def _refresh_table(self) -> None:
        rows = self.labelled_slices()
        names = self.state.class_names
        table = self.slice_table
        table.setRowCount(len(rows))
        total = np.zeros(len(names) + 1, dtype=np.int64)
        for r, (z, counts) in enumerate(rows.items()):
            n = int(counts[1:].sum())
            c = np.zeros(len(names) + 1, dtype=np.int64)
            m = min(len(c), len(counts))
            c[:m] = counts[:m]
            total += c
            balance = " · ".join(
                f"{name} {100.0 * c[i + 1] / n:.0f}%" for i, name in enumerate(names) if c[i + 1]
            )
            for col, text in enumerate((str(z), f"{n:,}", balance)):
                item = QTableWidgetItem(text)
                if col < 2:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                table.setItem(r, col, item)
        n_total = int(total[1:].sum())
        if n_total:
            bal = ", ".join(
                f"{name} {100.0 * total[i + 1] / n_total:.0f}%" for i, name in enumerate(names)
            )
            self.summary.setText(f"{len(rows)} labelled slice(s), {n_total:,} px: {bal}")
        else:
            self.summary.setText("no labelled pixels yet: paint some slices")

    def _on_slice_double_clicked(self, row: int, col: int) -> None:
        item = self.slice_table.item(row, 0)
        if item is not None and self._adopted is not None:
            self.go_to_slice(int(item.text()))

    def go_to_slice(self, z: int) -> None:
        layer = self._adopted or self.state.image_layer
        if layer is not None:
            set_current_z(self.viewer, layer, z)

    # -- classes -------------------------------------------------------------------------------
    def _fill_class_table(self) -> None:
        self._updating_classes = True
        try:
            names, colors = self.state.class_names, self.state.class_colors
            t = self.class_table
            t.setRowCount(len(names))
            for r, (name, color) in enumerate(zip(names, colors)):
                v = QTableWidgetItem(str(r + 1))
                v.setFlags(v.flags() & ~Qt.ItemFlag.ItemIsEditable)
                t.setItem(r, 0, v)
                t.setItem(r, 1, QTableWidgetItem(name))
                c = QTableWidgetItem("")
                c.setFlags(c.flags() & ~Qt.ItemFlag.ItemIsEditable)
                c.setBackground(QColor(color))
                c.setToolTip(f"{color} (click to change)")
                t.setItem(r, 2, c)
        finally:
            self._updating_classes = False

    def _on_classes_changed(self) -> None:
        self._dirty = True  # the class names/colours are saved with the labels
        self._fill_class_table()
        for layer in (self.state.labels_layer, self._adopted):
            if layer is not None:
                self._style_labels(layer)
        self._refresh_table()

    def _on_class_item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating_classes or item.column() != 1:
            return
        names = list(self.state.class_names)
        text = item.text().strip()
        if not text:
            self.warning("a class needs a name")
            self._fill_class_table()
            return
        names[item.row()] = text
        self.state.set_classes(names, list(self.state.class_colors))

    def _on_class_cell_clicked(self, row: int, col: int) -> None:
        if col != 2:
            return
        color = QColorDialog.getColor(QColor(self.state.class_colors[row]), self, "Class colour")
        if color.isValid():
            self.set_class_color(row + 1, color.name())

    def set_class_color(self, value: int, color: str) -> None:
        colors = list(self.state.class_colors)
        colors[value - 1] = color
        self.state.set_classes(list(self.state.class_names), colors)

    def set_classes(self, names: list[str], colors: list[str] | None = None) -> None:
        self.state.set_classes(list(names), list(colors) if colors else default_colors(len(names)))

    def add_class(self, name: str | None = None) -> None:
        names = list(self.state.class_names)
        colors = list(self.state.class_colors)
        k = len(names) + 1
        if k > 255:
            self.error("at most 255 classes")
            return
        names.append(name or f"class {k}")
        colors.append(PALETTE[(k - 1) % len(PALETTE)])
        self.state.set_classes(names, colors)

    def remove_last_class(self) -> None:
        names = list(self.state.class_names)
        if len(names) <= 1:
            self.warning("at least one class is needed")
            return
        k = len(names)
        counts = sum((c[k] if len(c) > k else 0) for c in self._stats.values())
        if counts:
            self.warning(
                f"class {k} ({names[-1]}) is painted on {counts:,} pixels: erase them first"
            )
            return
        self.state.set_classes(names[:-1], list(self.state.class_colors)[:-1])

    def _apply_preset(self) -> None:
        names = list(CLASS_PRESETS[self.preset_combo.currentText()])
        self.state.set_classes(names, default_colors(len(names)))

    # -- autosave ------------------------------------------------------------------------------
    def autosave_path(self) -> Path | None:
        image = self.state.image_layer
        if image is None:
            return None
        return autosave_path_for(image, self.folder_edit.text().strip() or None)

    def set_autosave(
        self, interval: float | None = None, folder: str | os.PathLike | None = None
    ) -> None:
        """Scripting/test hook: change the interval (s) and/or the project folder."""
        if folder is not None:
            self.folder_edit.setText(str(folder))
        if interval is not None:
            self.interval_spin.setValue(float(interval))
        self._apply_interval()

    def _apply_interval(self, *_: Any) -> None:
        if self.autosave_check.isChecked():
            self._autosave_timer.start(max(int(self.interval_spin.value() * 1000), 100))
        else:
            self._autosave_timer.stop()
        self._update_autosave_hint()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder for autosaved labels")
        if folder:
            self.folder_edit.setText(folder)
            self._update_autosave_hint()

    def _update_autosave_hint(self) -> None:
        path = self.autosave_path()
        if path is None:
            self.autosave_hint.setText("")
            self.autosave_label.setText("")
            return
        if self.state.labels_layer is None and path.exists():
            self.autosave_hint.setText(
                f"Autosaved labels found: {path.name} (restored on 'Create training labels')"
            )
            if path not in self._offered:
                self._offered.add(path)
                self.info(
                    f"autosaved labels found for {self.state.image_layer.name!r} ({path}): "
                    "press 'Create training labels' in '1 Annotate' to restore them"
                )
        else:
            self.autosave_hint.setText("")
        when = (
            time.strftime("%H:%M:%S", time.localtime(self.last_saved_time))
            if self.last_saved_time
            else "not yet"
        )
        self.autosave_label.setText(f"→ {path}\nlast saved: {when}")

    def _snapshot(self, layer: Labels) -> np.ndarray:
        return np.array(layer.data, copy=True)

    def _classes_dict(self) -> dict[str, Any]:
        return {
            "class_names": list(self.state.class_names),
            "class_colors": list(self.state.class_colors),
        }

    def _autosave_tick(self) -> None:
        layer = self._adopted
        if layer is None or not (self._dirty or self._maybe_dirty) or self.busy("autosave"):
            return
        path = self.autosave_path()
        if path is None:
            return
        snapshot = self._snapshot(layer)  # GUI thread: painting cannot race the copy
        self._dirty = self._maybe_dirty = False
        job = Job(
            _save_labels_job,
            snapshot,
            path,
            tuple(float(s) for s in layer.scale),
            self._classes_dict(),
            self._last_digest,
            on_yield=self._on_saved,
            on_error=self._on_save_error,
        )
        self.start_job("autosave", job)

    def _on_saved(self, item: tuple[str, Path, str]) -> None:
        what, path, digest = item
        self._last_digest = digest
        if what == "saved":
            self.save_count += 1
            self.last_saved = path
            self.last_saved_time = time.time()
            self._update_autosave_hint()

    def _on_save_error(self, exc: BaseException) -> None:
        self._dirty = True  # try again at the next tick
        self.autosave_check.setChecked(False)
        self.error(
            friendly_error(exc, "autosave of the labels failed")
            + " (autosave paused: choose a writable project folder and tick it again)"
        )

    def save_now(self) -> Path | None:
        """Save the labels synchronously (GUI thread); return the file written."""
        layer = self._adopted
        return self._save_sync(layer) if layer is not None else None

    def _save_sync(self, layer: Labels) -> Path | None:
        path = self.autosave_path()
        if path is None:
            return None
        try:
            for what, p, digest in _save_labels_job(
                self._snapshot(layer),
                path,
                tuple(float(s) for s in layer.scale),
                self._classes_dict(),
                self._last_digest,
            ):
                self._on_saved((what, p, digest))
        except (InvalidImageError, OSError) as exc:
            self.error(friendly_error(exc, "saving the labels failed"))
            return None
        self._dirty = self._maybe_dirty = False
        return path

    def before_shutdown(self) -> None:
        self._autosave_timer.stop()
        if self._adopted is not None and (self._dirty or self._maybe_dirty):
            job = self._jobs.get("autosave")
            if job is not None:
                job.wait(5.0)
            self._save_sync(self._adopted)


def _is_lazy(data: Any) -> bool:
    return not isinstance(data, np.ndarray)
