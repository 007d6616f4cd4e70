"""6 Correct: accept the prediction of a slice into the training labels, undoably, then fine-tune.

Edits and the fine-tune request go through the viewer's state, never to another dock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import QCheckBox, QLabel, QPushButton, QWidget

from ._common import current_z, label_colormap
from ._widgets import LayerCombo, UNetWidget
from .panels.run_row import button_row

if TYPE_CHECKING:
    import napari


class CorrectWidget(UNetWidget):
    """Turn a corrected prediction into training labels, then fine-tune."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        form = self.add_form()
        self.pred_combo = LayerCombo(
            self.viewer, Labels, allow_none=True, none_text="(no prediction)"
        )
        self.pred_combo.setToolTip("the prediction to accept (from '5 Predict')")
        form.addRow("Prediction", self.pred_combo)
        self.labels_info = QLabel("")
        self.labels_info.setWordWrap(True)
        form.addRow("Training labels", self.labels_info)
        self.replace = QCheckBox("replace painted pixels too")
        self.replace.setToolTip(
            "off (default): only unlabelled pixels (0) take the predicted class; "
            "on: the prediction also overwrites what you painted on this slice"
        )
        form.addRow(self.replace)
        row, (self.accept_btn, self.undo_btn) = button_row(
            "Accept prediction for this slice", "Undo"
        )
        self.undo_btn.setToolTip("napari's undo of the training labels (Ctrl+Z on the layer)")
        row.setStretch(0, 1)
        self.layout().addLayout(row)
        self.train_btn = QPushButton("Train (fine-tune the model in memory)")
        self.layout().addWidget(self.train_btn)
        hint = QLabel(
            "Tip: fix the prediction by painting on the training labels, accept the "
            "slices you agree with, then fine-tune."
        )
        hint.setWordWrap(True)
        self.layout().addWidget(hint)
        self.finish_layout()

        self.accept_btn.clicked.connect(lambda: self.accept_slice())
        self.undo_btn.clicked.connect(self.undo)
        self.train_btn.clicked.connect(self.fine_tune)
        self.state.prediction_changed.connect(self._on_prediction)
        self.state.labels_changed.connect(self._update_labels_info)
        if self.state.prediction_layer is not None:
            self.pred_combo.set_value(self.state.prediction_layer)
        else:
            self._pick_prediction()
        self._update_labels_info()

    def _pick_prediction(self) -> None:
        for lay in self.viewer.layers:
            md = lay.metadata.get("napari_unet", {}) if isinstance(lay, Labels) else {}
            if md.get("prediction"):
                self.pred_combo.set_value(lay)

    def _on_prediction(self, layer: Any) -> None:
        if layer is not None:
            self.pred_combo.set_value(layer)

    def _update_labels_info(self, *_: Any) -> None:
        lab = self.state.labels_layer
        self.labels_info.setText(
            lab.name if lab is not None else "(none: create them in '1 Annotate')"
        )

    def accept_slice(self, z: int | None = None) -> int:
        """Copy the prediction of slice ``z`` (default: the current one) into the labels.

        Returns the number of pixels changed (0 after an error).
        """
        labels = self.state.labels_layer
        pred = self.pred_combo.value
        if labels is None:
            self.error("no training labels layer: create one in '1 Annotate'")
            return 0
        if pred is None:
            self.error("no prediction: run '5 Predict' first (or pick the prediction layer)")
            return 0
        if pred is labels:
            self.error("the prediction layer is the training labels layer: pick the prediction")
            return 0
        if tuple(pred.data.shape) != tuple(labels.data.shape):
            self.error(
                f"prediction shape {tuple(pred.data.shape)} does not match the training labels "
                f"{tuple(labels.data.shape)}"
            )
            return 0
        is_3d = labels.ndim >= 3
        if z is None:
            z = current_z(self.viewer, labels) if is_3d else 0
        p = np.asarray(pred.data[z] if is_3d else pred.data)
        lab = np.asarray(labels.data[z] if is_3d else labels.data)
        if not p.any():
            self.warning(f"slice {z} has not been predicted yet: predict it in '5 Predict'")
            return 0
        k = len(self.state.class_names)
        if int(p.max()) > max(k, 1):
            self.warning(
                f"the prediction has classes up to {int(p.max())} but the labels have {k} "
                "classes: add classes in '1 Annotate' first"
            )
            return 0
        mask = p > 0
        if not self.replace.isChecked():
            mask &= lab == 0
        mask &= lab != p
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            self.info(f"slice {z}: nothing to accept (labels already agree)", notify=False)
            return 0
        values = p[ys, xs].astype(labels.data.dtype, copy=False)
        if is_3d:
            indices = (np.full(ys.shape, z, dtype=np.intp), ys, xs)
        else:
            indices = (ys, xs)
        if labels.ndim > len(indices):  # leading singleton axes
            extra = tuple(
                np.zeros(ys.shape, dtype=np.intp) for _ in range(labels.ndim - len(indices))
            )
            indices = extra + indices
        if not labels.visible:
            # napari 0.9's data_setitem updates the layer's current slice view, which is
            # stale (IndexError) while the layer is hidden; the user should see the change
            labels.visible = True
        labels.data_setitem(indices, values)  # recorded in napari's undo history
        labels.colormap = label_colormap(self.state.class_colors)
        self.state.mark_labels_edited([z])
        self.info(
            f"slice {z}: {ys.size:,} pixel(s) accepted from the prediction (undo with Ctrl+Z)",
            notify=False,
        )
        return int(ys.size)

    def undo(self) -> None:
        labels = self.state.labels_layer
        if labels is None:
            self.error("no training labels layer")
            return
        labels.undo()
        self.state.mark_labels_edited(None)  # napari does not say which slices the undo touched
        self.info("undone", notify=False)

    def fine_tune(self) -> None:
        """Ask the Train dock to fine-tune (it picks the model in memory when there is one)."""
        if self.state.training_busy:
            self.info("training is running: it picks up the accepted slices by itself")
            return
        if not self.state.request_training():
            self.info("open '4 Train' (Plugins > napari U-Net) and press Start to fine-tune")
