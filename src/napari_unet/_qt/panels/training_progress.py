"""The live display of a training run: start/stop row, progress bar, a status line and the curve.

The Train dock forwards the trainer's events; iterations, validations and new labels show here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...training import Iteration, LabelsChanged, TrainingStarted, Validation
from .plot import CurvePlot
from .run_row import RunRow

#: milliseconds between redraws of the run's display
REFRESH_MS = 2000


class TrainingProgress(QWidget):
    """Run row (with its progress bar), run description and loss / validation curve.

    No napari ``progress``: its status-bar spinner redraws the window ~30 times a second,
    which with software OpenGL costs more than half a core taken from training.

    Events only store what they carry; every 2 s (:data:`REFRESH_MS`) the status line
    (through ``show_status``), the progress bar and the curve are redrawn together: each
    redraw of a window holding napari's OpenGL canvas costs CPU (much with software GL).
    """

    def __init__(self, show_status: Callable[[str], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._show_status = show_status
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
        self._show_status(text)
        self.plot.flush()
