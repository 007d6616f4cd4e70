"""The model-source row of the Train dock: a new preset, the model in memory or a checkpoint file.

The presets come from the training configuration's choices; a checkpoint needs its path.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from .._widgets import form_layout, path_row

#: how the presets are described (a preset without an entry is "new <name> U-Net")
PRESET_TEXT = {
    "small": "new small U-Net (fast, CPU friendly)",
    "paper": "new paper U-Net (Ronneberger 2015)",
}
MEMORY = "memory"
CHECKPOINT = "checkpoint"
SOURCE_TEXT = {
    MEMORY: "continue: model in memory",
    CHECKPOINT: "fine-tune a checkpoint file",
}


class ModelSource(QWidget):
    """Choose what Train starts from; ``choice()`` is a preset name, "memory" or "checkpoint"."""

    choice_changed = Signal(str)

    def __init__(self, presets: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._keys = [*presets, MEMORY, CHECKPOINT]
        form = form_layout(self)
        self.combo = QComboBox()
        for key in self._keys:
            self.combo.addItem(PRESET_TEXT.get(key) or SOURCE_TEXT.get(key) or f"new {key} U-Net")
        form.addRow("Model", self.combo)
        row, self.ckpt_edit, self.ckpt_btn = path_row("checkpoint .pt to fine-tune")
        form.addRow("Checkpoint", row)
        self.combo.currentIndexChanged.connect(self._on_index)
        self.ckpt_btn.clicked.connect(self._choose_checkpoint)
        self._on_index()

    def choice(self) -> str:
        return self._keys[self.combo.currentIndex()]

    def is_new(self) -> bool:
        return self.choice() not in (MEMORY, CHECKPOINT)

    def set_choice(self, key: str) -> None:
        if key not in self._keys:
            raise ValueError(f"unknown model choice {key!r}: choose one of {', '.join(self._keys)}")
        self.combo.setCurrentIndex(self._keys.index(key))

    def checkpoint_file(self) -> str:
        return self.ckpt_edit.text().strip()

    def set_editable(self, editable: bool) -> None:
        self.combo.setEnabled(editable)
        is_ckpt = self.choice() == CHECKPOINT
        self.ckpt_edit.setEnabled(editable and is_ckpt)
        self.ckpt_btn.setEnabled(editable and is_ckpt)

    def _on_index(self, *_: object) -> None:
        self.set_editable(self.combo.isEnabled())
        self.choice_changed.emit(self.choice())

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint to fine-tune", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.ckpt_edit.setText(path)
