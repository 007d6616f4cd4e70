"""Where a training run saves its checkpoints and how many CPU threads it may use.

Neither is part of the recipe.  Training runs in a lower-priority process, so by default it uses
every core and napari still gets the CPU whenever it needs it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QWidget

from .._common import friendly_error
from .._widgets import field_spin, form_layout, path_row

FOLDER_NAME = "napari-unet-models"


class RunOptions(QWidget):
    """The checkpoint folder field and the CPU-threads spin box of the Train dock."""

    def __init__(self, config_cls: type, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = form_layout(self)
        row, self.folder_edit, self.folder_btn = path_row(
            "next to the stack (else a temporary folder)"
        )
        form.addRow("Checkpoints", row)
        cpus = max(os.cpu_count() or 1, 1)
        self.threads = field_spin(config_cls, "num_threads", special="all")
        self.threads.setMaximum(cpus)
        self.threads.set_field(None)
        self.threads.setToolTip(
            "CPU threads for training on the CPU (all: every core; training runs at a lower "
            "priority than the viewer, so napari stays responsive)"
        )
        form.addRow("CPU threads", self.threads)
        self.folder_btn.clicked.connect(self._choose_folder)

    def folder(self, source: Path | None) -> Path:
        """The chosen folder, else one next to the stack file ``source``, else a temporary one."""
        text = self.folder_edit.text().strip()
        if text:
            return Path(text).expanduser()
        if source is not None and os.access(source.parent, os.W_OK):
            return source.parent / FOLDER_NAME
        return Path(tempfile.gettempdir()) / FOLDER_NAME

    def num_threads(self) -> int | None:
        return self.threads.field()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for checkpoints")
        if folder:
            self.folder_edit.setText(folder)


def folder_problem(folder: Path) -> str | None:
    """Create ``folder``; why it cannot hold checkpoints (None when it can)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return friendly_error(exc, f"cannot create the checkpoint folder {folder}")
    if not os.access(folder, os.W_OK):
        return f"checkpoint folder {folder} is not writable: choose another folder"
    return None
