"""The live display of a training run: start/stop row, progress bar, a status line and the curve.

The Train dock forwards the trainer's events; iterations, validations and new labels show here.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from qtpy.QtCore import QRectF, Qt, QTimer
from qtpy.QtGui import QPainter
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...training import Iteration, LabelsChanged, TrainingStarted, Validation
from .plot import CurvePlot
from .run_row import RunRow

#: milliseconds between redraws of the run's display
REFRESH_MS = 2000


class LiveLine(QWidget):
    """Two lines of text drawn by the widget itself: a new text repaints it and nothing else.

    A ``QLabel`` whose text changes asks its layout again; in the dock that cost two more
    passes over the window (each a composite of the whole window, with napari's canvas).
    """

    LINES = 2

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * self.LINES + 2)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # as QLabel's
        if text != self._text:
            self._text = text
            self.setToolTip(text)
            self.update()

    def paintEvent(self, event: Any) -> None:
        p = QPainter(self)
        flags = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
        p.drawText(QRectF(self.rect()), int(flags), self._text)
        p.end()


class TrainingProgress(QWidget):
    """Run row (with its progress bar), the live line, run description and loss curve.

    No napari ``progress``: its status-bar spinner redraws the window ~30 times a second,
    which with software OpenGL costs more than half a core taken from training.

    Events only store what they carry; every 2 s (:data:`REFRESH_MS`) the live line, the
    progress bar and the curve are redrawn together, in one pass over the window: each redraw
    of a window holding napari's OpenGL canvas costs CPU (tens of ms with software GL).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._bar_total: int | None = None
        self._bar_counts_seconds = False
        self.latest: dict[str, Any] = {}
        self.iterations_seen = 0
        #: slices whose newly painted labels the running trainer picked up
        self.labels_changed_slices: list[int] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.run_row = RunRow("Start training", "Stop")
        layout.addWidget(self.run_row)
        #: iteration, loss, speed, time, validation of the running training
        self.live = LiveLine()
        layout.addWidget(self.live)
        self.run_label = QLabel("")
        self.run_label.setWordWrap(True)
        layout.addWidget(self.run_label)
        self.plot = CurvePlot(fps=0)
        layout.addWidget(self.plot)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    def reset(self, iterations: int | None, seconds: float | None = None) -> None:
        """A run of ``iterations`` (None: a time limit of ``seconds``) starts.

        The bar counts iterations, else seconds: a busy indicator would redraw all the time.
        """
        self._bar_total = int(iterations or math.ceil(seconds or 0)) or None
        self._bar_counts_seconds = not iterations
        self.latest = {}
        self.live.setText("")
        self.run_label.setText("")
        self.labels_changed_slices = []
        self.iterations_seen = 0
        self.plot.clear()
        self.plot.x_max = iterations
        self.run_row.set_progress(0, self._bar_total)
        self._timer.start()

    def finish(self) -> None:
        self._timer.stop()
        self.refresh()
        self.close_bar()

    def close_bar(self) -> None:
        """Stop the display's refresh (the viewer is closing)."""
        self._timer.stop()

    # -- events ------------------------------------------------------------------------------
    @functools.singledispatchmethod
    def on_event(self, ev: object) -> None:
        """Events the display does not show."""

    @on_event.register
    def _(self, ev: Iteration) -> None:
        self.iterations_seen = ev.iteration
        self.latest.update(
            it=ev.iteration, total=ev.total, loss=ev.loss, sps=ev.samples_per_s,
            elapsed=ev.elapsed_s, lr=ev.lr,
        )  # fmt: skip
        self.plot.add_loss(ev.iteration, ev.loss)

    def on_started(self, ev: TrainingStarted) -> None:
        self.run_label.setText(
            f"{ev.device_description} · {ev.n_parameters / 1e6:.2f} M parameters · "
            f"{len(ev.labelled_slices)} labelled slice(s), {ev.n_labelled_pixels:,} px · "
            f"patch {ev.patch_size} · batch {ev.batch_size} · {ev.precision}"
        )

    @on_event.register
    def _(self, ev: Validation) -> None:
        value = ev.metrics.get("mean_iou", float("nan"))
        self.plot.metric_name = "val mean IoU"
        self.plot.add_metric(ev.iteration, value)
        self.latest["val"] = (value, ev.metrics.get("pixel_error", float("nan")))

    @on_event.register
    def _(self, ev: LabelsChanged) -> None:
        self.labels_changed_slices.extend(ev.slices)
        self.latest["picked"] = sorted(set(ev.slices))

    def refresh(self) -> None:
        d = self.latest
        if "it" not in d:
            return
        it, total = d["it"], d["total"]
        done = int(d["elapsed"]) if self._bar_counts_seconds else it
        if self._bar_total:
            self.run_row.set_progress(min(done, self._bar_total), self._bar_total)
        text = f"iteration {it}" + (f"/{total}" if total else "") + f" · loss {d['loss']:.4f}"
        text += f" · {d['sps']:.1f} samples/s · {d['elapsed']:.0f} s"
        if total and it and d["elapsed"] > 0:
            text += f" · ETA {d['elapsed'] / it * (total - it):.0f} s"
        if "val" in d:
            text += f" · val mean IoU {d['val'][0]:.3f}"
        if d.get("picked"):
            text += f" · picked up new labels on slice(s) {', '.join(map(str, d['picked']))}"
        self.live.setText(text)
        self.plot.flush()
