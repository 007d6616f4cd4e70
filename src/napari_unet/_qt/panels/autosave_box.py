"""The autosave box of the Annotate dock: on/off, the interval and the project folder.

It ticks every interval while switched on and shows where the labels go and when they last went.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from ...autosave import default_autosave_dir
from .._widgets import path_row


class AutosaveBox(QGroupBox):
    """Autosave settings; :attr:`tick` fires every interval while the box is ticked."""

    tick = Signal()
    #: the project folder was edited (the autosave file may move)
    folder_changed = Signal()

    def __init__(self, interval: float = 5.0, parent: QWidget | None = None) -> None:
        super().__init__("Autosave", parent)
        vb = QVBoxLayout(self)
        row = QHBoxLayout()
        self.enabled = QCheckBox("every")
        self.enabled.setChecked(True)
        self.interval = QDoubleSpinBox()
        self.interval.setRange(0.1, 600.0)
        self.interval.setDecimals(1)
        self.interval.setSuffix(" s")
        self.interval.setValue(float(interval))
        row.addWidget(self.enabled)
        row.addWidget(self.interval)
        row.addStretch(1)
        vb.addLayout(row)
        row, self.folder_edit, self.folder_btn = path_row(
            f"next to the stack, else {default_autosave_dir()}"
        )
        row.insertWidget(0, QLabel("Project folder"))
        vb.addLayout(row)
        self.target = QLabel("")
        self.target.setWordWrap(True)
        vb.addWidget(self.target)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.tick)
        self.enabled.toggled.connect(self._apply)
        self.interval.valueChanged.connect(self._apply)
        self.folder_btn.clicked.connect(self._choose_folder)
        self.folder_edit.editingFinished.connect(self.folder_changed)
        self._apply()

    def folder(self) -> str | None:
        """The project folder typed or chosen (None: the default)."""
        return self.folder_edit.text().strip() or None

    def configure(
        self, interval: float | None = None, folder: str | os.PathLike | None = None
    ) -> None:
        if folder is not None:
            self.folder_edit.setText(str(folder))
            self.folder_changed.emit()
        if interval is not None:
            self.interval.setValue(float(interval))

    def pause(self) -> None:
        self.enabled.setChecked(False)

    def stop(self) -> None:
        self._timer.stop()

    def show_target(self, path: Path | None, last_saved_time: float | None) -> None:
        if path is None:
            self.target.setText("")
            return
        when = "not yet"
        if last_saved_time:
            when = time.strftime("%H:%M:%S", time.localtime(last_saved_time))
        self.target.setText(f"→ {path}\nlast saved: {when}")

    def _apply(self, *_: Any) -> None:
        if self.enabled.isChecked():
            self._timer.start(max(int(self.interval.value() * 1000), 100))
        else:
            self._timer.stop()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder for autosaved labels")
        if folder:
            self.folder_edit.setText(folder)
            self.folder_changed.emit()
