"""Objects: instances of one class from the last prediction, measured, listed and edited.

Reads the probabilities (or the prediction layer) from the shared state, runs
:func:`napari_unet.objects.label_objects` and :func:`napari_unet.measure.measure_objects`
in a worker, and shows an instance Labels layer (aligned with the image, ``features`` =
the measurements) and a table; merge, delete and split-by-seeds go through the Labels
layer's own undo history.  The settings start from the parameters the model in memory
stores for the class (``metadata["objects"]``, else the class rules); "Remember for this
model" writes the tuned ones there, so the next save of the model carries them.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels, Points
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..measure import measure_objects
from ..objects import (
    METADATA_KEY,
    ObjectParams,
    ObjectsWarning,
    default_params,
    label_objects,
    params_to_dict,
    source_class,
    split_by_seeds,
)
from ._widgets import UNetWidget

if TYPE_CHECKING:
    import napari

#: table columns: (feature column, header)
TABLE_COLUMNS = (("label", "label"), ("z_first", "from z"), ("z_last", "to z"),
                 ("size", "size"), ("equivalent_diameter", "diameter"))  # fmt: skip
SEEDS_LAYER = "object seeds"


class Stopped(Exception):
    """The user stopped the objects step."""


def _find_objects(source: Any, kind: str, cls: int, params: ObjectParams, scale, translate, name,
                  stop: threading.Event):  # fmt: skip
    """Worker body: the instances and their measurements (yields once, at the end)."""

    def check(done: int, total: int) -> None:
        if stop.is_set():
            raise Stopped("stopped")

    result = label_objects(source, cls, kind=kind, params=params, scale=scale, progress=check)
    table = measure_objects(
        result.labels, scale=scale, translate=translate, dims=params.dims, class_name=name
    )
    yield result, table


class ObjectsWidget(UNetWidget):
    """Find the objects of a class in the last prediction; list, measure and edit them."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        form = self.add_form()
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("the class whose objects you want (cells, mitochondria...)")
        form.addRow("Class", self.class_combo)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["auto", "boundary", "objects"])
        self.mode_combo.setToolTip(
            "auto: cells between membranes by watershed when the model has a membrane class, "
            "else connected components of the class"
        )
        form.addRow("Method", self.mode_combo)
        self.dims_combo = QComboBox()
        self.dims_combo.addItems(["2D (per slice)", "3D (across slices)"])
        form.addRow("Objects in", self.dims_combo)
        self.min_size = QDoubleSpinBox()
        self.min_size.setRange(0.0, 1e12)
        self.min_size.setDecimals(3)
        self.min_size.setSpecialValueText(f"{ObjectParams().min_pixels} pixels")
        self.min_size.setToolTip("smallest object in the image's units (area 2D, volume 3D)")
        form.addRow("Min size", self.min_size)
        self.split = QCheckBox("split touching objects")
        form.addRow(self.split)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setToolTip("boundary: probability >= this is membrane; objects: is object")
        form.addRow("Threshold", self.threshold)
        self.seed_depth = QDoubleSpinBox()
        self.seed_depth.setRange(0.0, 1000.0)
        self.seed_depth.setDecimals(1)
        self.seed_depth.setToolTip(
            "seed depth h (pixels): higher merges more (fewer, larger cells); lower splits more"
        )
        form.addRow("Seed depth", self.seed_depth)
        self.remember_btn = QPushButton("Remember for this model")
        self.remember_btn.setToolTip(
            "store these settings for this class in the model in memory: the next save of the "
            "model (Export, or training on from it) carries them, and the CLI uses them"
        )
        form.addRow(self.remember_btn)
        self.run_btn, self.stop_btn, self.progress = self.add_run_row("Find objects", "Stop")
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([h for _, h in TABLE_COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(160)
        self.layout().addWidget(self.table)
        row = QHBoxLayout()
        self.merge_btn = QPushButton("Merge")
        self.merge_btn.setToolTip("merge the selected objects (two or more rows) into the first")
        self.delete_btn = QPushButton("Delete")
        self.seeds_btn = QPushButton("Seeds")
        self.seeds_btn.setToolTip(f"add a Points layer {SEEDS_LAYER!r}: click seeds in an object")
        self.split_btn = QPushButton("Split")
        self.split_btn.setToolTip("split the object holding the seeds, one part per seed")
        self.undo_btn = QPushButton("Undo")
        for b in (self.merge_btn, self.delete_btn, self.seeds_btn, self.split_btn, self.undo_btn):
            row.addWidget(b)
        self.layout().addLayout(row)
        self.finish_layout()

        self.layer: Labels | None = None
        #: (first slice, last slice, labels) of each edit, for undo
        self._undo_ranges: list[tuple[int, int, set[int]]] = []
        self.run_btn.clicked.connect(lambda: self.find_objects())
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(lambda: self.cancel_job())
        self.table.itemSelectionChanged.connect(self._on_row)
        self.merge_btn.clicked.connect(lambda: self.merge_selected())
        self.delete_btn.clicked.connect(lambda: self.delete_selected())
        self.seeds_btn.clicked.connect(lambda: self.seeds_layer())
        self.split_btn.clicked.connect(lambda: self.split_at_seeds())
        self.undo_btn.clicked.connect(lambda: self.undo())
        self.remember_btn.clicked.connect(lambda: self.remember())
        self.state.classes_changed.connect(self._fill_classes)
        self.state.model_changed.connect(self.load_settings)
        self.state.prediction_changed.connect(lambda *_: self.load_settings())
        self.class_combo.currentIndexChanged.connect(lambda *_: self.load_settings())
        self.mode_combo.currentIndexChanged.connect(lambda *_: self.load_settings())
        self._fill_classes()

    # -- settings ----------------------------------------------------------------------------
    def _fill_classes(self) -> None:
        current = self.class_combo.currentText()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItems(list(self.state.class_names))
        if current in self.state.class_names:
            self.class_combo.setCurrentText(current)
        else:  # the non-boundary class by default: "cell", "mitochondria"
            self.class_combo.setCurrentIndex(len(self.state.class_names) - 1)
        self.class_combo.blockSignals(False)
        self.load_settings()

    def _stored(self) -> ObjectParams:
        """The model's (or the class rules') parameters for the class and method chosen."""
        names = list(self.state.class_names)
        k = self.class_combo.currentIndex() + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ObjectsWarning)
            _, params = default_params(names, k, self.state.object_metadata())
        for w in caught:
            self.warning(str(w.message))
        mode = self.mode_combo.currentText()
        if mode not in ("auto", params.mode):  # that method's defaults, not the stored ones
            params = default_params(names, k)[1].replace(mode=mode, h=None)
        return params

    def load_settings(self) -> None:
        """Show the stored (or default) parameters of the class chosen."""
        if self.class_combo.count() == 0:
            return
        p = self._stored()
        self.dims_combo.setCurrentIndex(1 if p.dims == 3 else 0)
        self.min_size.setSpecialValueText(f"{p.min_pixels} pixels")
        self.min_size.setValue(p.min_size or 0.0)
        self.split.setChecked(p.split)
        self.threshold.setValue(p.threshold)
        self.seed_depth.setValue(p.seed_depth())

    def params(self) -> tuple[int, ObjectParams]:
        """The source class and the parameters chosen (defaults: the model's, or the rules)."""
        names = list(self.state.class_names)
        k = self.class_combo.currentIndex() + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ObjectsWarning)  # shown by load_settings
            _, params = default_params(names, k, self.state.object_metadata())
        mode = self.mode_combo.currentText()
        size = self.min_size.value()
        params = params.replace(
            mode=params.mode if mode == "auto" else mode,
            dims=3 if self.dims_combo.currentIndex() == 1 else 2,
            min_size=size if size > 0 else None,
            split=self.split.isChecked(),
            threshold=float(self.threshold.value()),
            h=float(self.seed_depth.value()),
        )
        return source_class(names, k, params.mode), params

    def remember(self) -> bool:
        """Store the settings of the class chosen in the metadata of the model in memory."""
        if self.state.model is None:
            self.error("no model in memory to remember the settings in: train one first")
            return False
        try:
            _, params = self.params()
        except ValueError as exc:
            self.error(f"objects: {exc}")
            return False
        name = self.class_combo.currentText()
        meta = dict(self.state.metadata)
        old = meta.get(METADATA_KEY)
        table = dict(old) if isinstance(old, Mapping) else {}
        table[name] = params_to_dict(params)
        meta[METADATA_KEY] = table
        self.state.metadata = meta  # the next save of this model carries it
        shown = self.state.prediction_metadata
        if shown is not None:  # the prediction's checkpoint: shown from now on as remembered
            shown[METADATA_KEY] = {**dict(shown.get(METADATA_KEY) or {}), name: table[name]}
        self.info(f"object settings of {name!r} remembered: the next save of the model keeps them")
        return True

    def _source(self) -> tuple[Any, str] | None:
        """The probabilities, else the prediction layer's class map; notify when neither."""
        image = self.state.image_layer
        if image is None:
            self.error("no image layer: open a stack and predict it in 'Predict' first")
            return None
        shape = tuple(image.data.shape)
        probs = self.state.probabilities
        if probs is not None and tuple(probs.shape[1:]) == shape:
            return probs, "probabilities"
        if probs is not None and len(shape) == 2 and tuple(probs.shape[-2:]) == shape:
            return probs[:, 0] if len(probs.shape) == 4 else probs, "probabilities"
        pred = self.state.prediction_layer
        if pred is not None and tuple(pred.data.shape) == shape:
            return pred.data, "classes"
        self.error("no prediction of this image: predict it in 'Predict' first")
        return None

    # -- run ---------------------------------------------------------------------------------
    def find_objects(self) -> bool:
        """Start the objects step in a worker; False (with a notification) when it cannot."""
        if self.busy():
            return False
        found = self._source()
        if found is None:
            return False
        source, kind = found
        try:
            cls, params = self.params()
        except ValueError as exc:
            self.error(f"objects: {exc}")
            return False
        if kind == "probabilities" and cls > int(source.shape[0]):
            self.error(f"the probabilities have no class {cls}: predict with this model again")
            return False
        image = self.state.image_layer
        scale, translate = tuple(image.scale), tuple(image.translate)
        name = self.class_combo.currentText()
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        stop = threading.Event()
        self.info(f"finding the objects of {name!r}...", notify=False)
        from ._workers import Job

        job = Job(
            _find_objects, source, kind, cls, params, scale, translate, name, stop,
            on_yield=self._show, on_error=self._failed, on_finished=self._done, cancel=stop.set,
        )  # fmt: skip
        self.start_job("main", job)
        return True

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Stopped):
            self.info("objects: stopped", notify=False)
        else:
            self.error(f"objects: {exc}")

    def _done(self) -> None:
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _show(self, value: Any) -> None:
        result, table = value
        image = self.state.image_layer
        name = f"{self.class_combo.currentText()} objects"
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.data = result.labels
        else:
            self.layer = self.viewer.add_labels(
                result.labels, name=name, scale=image.scale, translate=image.translate,
                opacity=0.6,
            )  # fmt: skip
        self.layer.metadata["napari_unet"] = {"objects": True, "dims": result.params.dims}
        self.layer.features = table
        self._undo_ranges.clear()
        self._fill_table()
        self.info(f"{result.n_objects} objects of {self.class_combo.currentText()!r}")

    # -- table -------------------------------------------------------------------------------
    def _fill_table(self) -> None:
        feats = self.layer.features if self.layer is not None else None
        n = 0 if feats is None else len(feats)
        self.table.setRowCount(n)
        if not n:
            return
        size_col = "volume" if "volume" in feats else "area"
        for c, (col, _) in enumerate(TABLE_COLUMNS):
            key = size_col if col == "size" else col
            values = feats[key].to_numpy() if key in feats else np.full(n, np.nan)
            for r, v in enumerate(values):
                text = f"{v:.4g}" if isinstance(v, float) else str(v)
                self.table.setItem(r, c, QTableWidgetItem(text))

    def selected_labels(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        feats = self.layer.features if self.layer is not None else None
        if feats is None:
            return []
        return [int(feats["label"].iloc[r]) for r in rows if r < len(feats)]

    def _on_row(self) -> None:
        labels = self.selected_labels()
        if not labels or self.layer is None:
            return
        self.centre_on(labels[0])

    def centre_on(self, label: int) -> None:
        """Centre the view on object ``label`` (and go to its middle slice in 3D)."""
        feats = self.layer.features
        row = feats[feats["label"] == label]
        if row.empty:
            return
        axes = [a for a in "zyx" if f"centroid_{a}" in row]
        world = [float(row[f"centroid_{a}"].iloc[0]) for a in axes]
        if len(world) == 3:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, world[0])
        scene = getattr(self.viewer, "scene", self.viewer)  # napari >= 0.9: viewer.scene.camera
        scene.camera.center = tuple(world[-2:])
        self.layer.selected_label = int(label)

    # -- edits (through the layer's undo history) --------------------------------------------
    def _z_range(self, labels: list[int]) -> tuple[int, int]:
        feats = self.layer.features
        rows = feats[feats["label"].isin(labels)]
        if "z_first" not in rows or rows.empty:
            return 0, 0
        return int(rows["z_first"].min()), int(rows["z_last"].max())

    def _edit(self, labels: list[int], change: Any) -> bool:
        """Apply ``change(block, z0) -> (indices, values)`` on the objects' slices, undoably."""
        if self.layer is None:
            self.error("no objects yet: press 'Find objects' first")
            return False
        z0, z1 = self._z_range(labels)
        data = self.layer.data
        block = np.asarray(data[z0 : z1 + 1] if data.ndim == 3 else data)
        try:
            indices, values = change(block)
        except ValueError as exc:
            self.error(str(exc))
            return False
        if data.ndim == 3:
            indices = (indices[0] + z0, *indices[1:])
        self.layer.data_setitem(indices, values)
        affected = {int(v) for v in np.unique(values)} | {int(v) for v in labels}
        self._undo_ranges.append((z0, z1, affected - {0}))
        self._remeasure(z0, z1, affected - {0})
        return True

    def merge_selected(self) -> bool:
        labels = self.selected_labels()
        if len(labels) < 2:
            self.error("select two or more objects in the table to merge them")
            return False
        keep = labels[0]

        def change(block: np.ndarray) -> tuple[Any, Any]:
            return np.nonzero(np.isin(block, labels[1:])), keep

        return self._edit(labels, change)

    def delete_selected(self) -> bool:
        labels = self.selected_labels()
        if not labels:
            self.error("select the objects to delete in the table")
            return False
        return self._edit(labels, lambda block: (np.nonzero(np.isin(block, labels)), 0))

    def seeds_layer(self) -> Points:
        """The Points layer of split seeds (added, aligned with the objects, when missing)."""
        for lay in self.viewer.layers:
            if isinstance(lay, Points) and lay.name == SEEDS_LAYER:
                return lay
        ref = self.layer if self.layer is not None else self.state.image_layer
        ndim = ref.ndim if ref is not None else 2
        pts = self.viewer.add_points(
            np.zeros((0, ndim)), name=SEEDS_LAYER, size=6, face_color="yellow",
            scale=None if ref is None else ref.scale,
            translate=None if ref is None else ref.translate,
        )  # fmt: skip
        pts.mode = "add"
        return pts

    def split_at_seeds(self) -> bool:
        """Split the object under the seeds into one object per seed (then clear the seeds)."""
        if self.layer is None:
            self.error("no objects yet: press 'Find objects' first")
            return False
        pts = self.seeds_layer()
        idx = [tuple(np.round(self.layer.world_to_data(pts.data_to_world(p))).astype(int))
               for p in pts.data]  # fmt: skip
        data = self.layer.data
        inside = [i for i in idx if all(0 <= v < n for v, n in zip(i, data.shape))]
        hit = {int(data[i]) for i in inside} - {0}
        if len(inside) < 2 or len(hit) != 1:
            self.error("place two or more seeds inside one object (layer 'object seeds')")
            return False
        label = hit.pop()
        top = (
            int(np.max(data))
            if isinstance(data, np.ndarray)
            else int(self.layer.features["label"].max())
        )
        z0 = self._z_range([label])[0]

        def change(block: np.ndarray) -> tuple[Any, Any]:
            local = [(i[0] - z0, *i[1:]) if data.ndim == 3 else i for i in inside]
            parts = split_by_seeds(block == label, local, self.layer.scale[-block.ndim :])
            where = np.nonzero(parts > 1)
            return where, (top + parts[where] - 1).astype(data.dtype)

        if self._edit([label], change):
            pts.data = np.zeros((0, pts.ndim))
            return True
        return False

    def undo(self) -> None:
        """Undo the last edit (napari's Labels undo) and update the table."""
        if self.layer is None or not self._undo_ranges:
            self.info("nothing to undo", notify=False)
            return
        self.layer.undo()
        self._remeasure(*self._undo_ranges.pop())

    def _remeasure(self, z0: int, z1: int, affected: set[int]) -> None:
        """Re-measure the ``affected`` objects, all within slices z0..z1 (bounded work)."""
        import pandas as pd

        layer = self.layer
        data = layer.data
        block = np.asarray(data[z0 : z1 + 1] if data.ndim == 3 else data)
        scale, translate = list(layer.scale), list(layer.translate)
        if data.ndim == 3:
            translate[0] += z0 * scale[0]
        dims = layer.metadata.get("napari_unet", {}).get("dims", 2)
        name = self.class_combo.currentText()
        new = pd.DataFrame(
            measure_objects(block, scale=scale, translate=translate, dims=dims, class_name=name)
        )
        if data.ndim == 3:
            new["z_first"] += z0
            new["z_last"] += z0
        old = layer.features
        keep_old = ~old["label"].isin(affected)
        merged = pd.concat([old[keep_old], new[new["label"].isin(affected)]], ignore_index=True)
        layer.features = merged.sort_values("label", ignore_index=True)
        self._fill_table()
