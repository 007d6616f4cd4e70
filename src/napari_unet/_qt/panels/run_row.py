"""The run row of a dock (start and stop buttons, a progress bar below) and rows of buttons.

Train and Predict use :class:`RunRow`; :meth:`RunRow.set_running` keeps its buttons consistent.
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget


def button_row(*texts: str) -> tuple[QHBoxLayout, list[QPushButton]]:
    """Push buttons side by side."""
    row = QHBoxLayout()
    buttons = [QPushButton(text) for text in texts]
    for button in buttons:
        row.addWidget(button)
    return row, buttons


class RunRow(QWidget):
    """Start / stop buttons (stop disabled until running) and a progress bar."""

    def __init__(self, start: str, stop: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row, (self.start_btn, self.stop_btn) = button_row(start, stop)
        self.stop_btn.setEnabled(False)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        layout.addWidget(self.progress)

    def set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)

    def set_progress(self, value: int, total: int | None) -> None:
        """``total`` None or 0: a busy indicator."""
        self.progress.setRange(0, total or 0)
        if total:
            self.progress.setValue(min(int(value), int(total)))
