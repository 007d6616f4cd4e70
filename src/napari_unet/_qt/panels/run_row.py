"""The run row of a dock (start and stop buttons, a progress bar below) and rows of buttons.

Train and Predict use :class:`RunRow`; :meth:`RunRow.set_running` keeps its buttons consistent, and
:func:`set_value_later` moves a bar without an immediate repaint.
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
            set_value_later(self.progress, min(int(value), int(total)))


def set_value_later(bar: QProgressBar, value: int) -> None:
    """``bar.setValue(value)`` redrawn with the window's next update, not at once.

    ``QProgressBar.setValue`` repaints synchronously, and each repaint of a window that holds
    napari's OpenGL canvas composites the whole window (tens of ms with software OpenGL); a
    deferred update is drawn in the same pass as the other pending ones (a canvas redraw).
    """
    if bar.value() == value:
        return
    bar.setUpdatesEnabled(False)
    try:
        bar.setValue(value)
    finally:
        bar.setUpdatesEnabled(True)  # schedules one update() of the bar
