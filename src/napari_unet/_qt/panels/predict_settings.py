"""The settings form of the Predict dock: model source, slices, tiles, device, probabilities, storage.

Plain widgets the dock reads when Predict is pressed; the storage choice is applied by the worker.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ...devices import DEVICE_CHOICES
from .._widgets import path_row

SOURCES = ("model in memory", "checkpoint file")
RANGES = ("current slice", "visible slices", "all slices", "range")
STORAGE = ("auto", "memory", "disk (zarr)")


def _auto_spin(maximum: int, step: int = 1) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(0, maximum)
    spin.setSingleStep(step)
    spin.setSpecialValueText("auto")
    return spin


def _short_list(names: list[str], most: int = 6, longest: int = 24) -> str:
    """``"a, b, c, … (300 in all)"``: at most ``most`` names, each cut to ``longest`` characters."""
    shown = [n if len(n) <= longest else n[: longest - 1] + "…" for n in map(str, names[:most])]
    more = f", … ({len(names)} in all)" if len(names) > most else ""
    return ", ".join(shown) + more


class PredictSettings(QWidget):
    """What to predict with, which slices, and how (tile, batch, device, TTA, outputs)."""

    #: the model source changed (the dock describes the model again)
    source_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.source = QComboBox()
        self.source.addItems(list(SOURCES))
        form.addRow("Model", self.source)
        row, self.ckpt_edit, self.ckpt_btn = path_row("checkpoint .pt")
        form.addRow("Checkpoint", row)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        row = QHBoxLayout()
        self.range = QComboBox()
        self.range.addItems(list(RANGES))
        self.range.setCurrentText("all slices")
        self.range_edit = QLineEdit()
        self.range_edit.setPlaceholderText("e.g. 0-9,15")
        row.addWidget(self.range, 1)
        row.addWidget(self.range_edit, 1)
        form.addRow("Slices", row)
        self.tile = _auto_spin(8192, 64)
        form.addRow("Tile size", self.tile)
        self.batch = _auto_spin(512)
        form.addRow("Batch size", self.batch)
        self.device = QComboBox()
        self.device.addItems(list(DEVICE_CHOICES))
        form.addRow("Device", self.device)
        self.tta = QCheckBox("test-time augmentation (8 flips/rotations, 8x slower)")
        form.addRow(self.tta)
        row = QHBoxLayout()
        self.probs = QCheckBox("probabilities of")
        self.prob_class = QComboBox()
        # sized for a short name: long or many class names never widen the dock
        self.prob_class.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.prob_class.setMinimumContentsLength(12)
        row.addWidget(self.probs)
        row.addWidget(self.prob_class, 1)
        form.addRow(row)
        self.storage = QComboBox()
        self.storage.addItems(list(STORAGE))
        self.storage.setToolTip(
            "auto: stream into a temporary zarr array for lazily loaded or very large stacks"
        )
        form.addRow("Result storage", self.storage)
        self.range.currentTextChanged.connect(self._on_range)
        self.source.currentTextChanged.connect(self._on_source)
        self.ckpt_btn.clicked.connect(self._choose_checkpoint)
        self._on_range()
        self._on_source()

    def uses_checkpoint(self) -> bool:
        return self.source.currentText() == "checkpoint file"

    def checkpoint(self) -> str | None:
        return self.ckpt_edit.text().strip() or None

    def show_model(self, model: Any, metadata: dict[str, Any]) -> None:
        """Describe the model in memory (nothing when a checkpoint file is chosen)."""
        if self.uses_checkpoint():
            text = ""
        elif model is None:
            text = "no model in memory yet: train one in '4 Train' or use a checkpoint"
        else:
            names = _short_list(metadata.get("class_names") or [])
            text = (
                f"in memory: depth {model.depth}, {model.base_channels} base channels, "
                f"{model.n_classes} classes ({names}), {metadata.get('iterations', 0)} iterations"
            )
        self.model_label.setText(text)

    def fill_classes(self, names: list[str]) -> None:
        """Offer the probabilities of classes ``1..K`` (keeping the current choice)."""
        current = self.prob_class.currentIndex()
        self.prob_class.clear()
        for k, name in enumerate(names, start=1):
            self.prob_class.addItem(f"{k}: {name}", k)
            self.prob_class.setItemData(k - 1, name, Qt.ItemDataRole.ToolTipRole)
        if 0 <= current < len(names):
            self.prob_class.setCurrentIndex(current)

    def prob_class_value(self) -> int:
        """The class (1..K) whose probabilities are shown."""
        return int(self.prob_class.currentData() or 1)

    def options(self) -> dict[str, Any]:
        """Tile, batch (None = auto), device, TTA, probabilities and storage."""
        return {
            "tile": int(self.tile.value()) or None,
            "batch": int(self.batch.value()) or None,
            "device": self.device.currentText(),
            "tta": self.tta.isChecked(),
            "probabilities": self.probs.isChecked(),
            "storage": self.storage.currentText(),
        }

    def _on_range(self, *_: Any) -> None:
        self.range_edit.setEnabled(self.range.currentText() == "range")

    def _on_source(self, *_: Any) -> None:
        self.ckpt_edit.setEnabled(self.uses_checkpoint())
        self.ckpt_btn.setEnabled(self.uses_checkpoint())
        self.source_changed.emit()

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.ckpt_edit.setText(path)
            self.source.setCurrentText("checkpoint file")
