"""Reusable Qt pieces: a layer picker, a base class for the dock widgets, a loss plot."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ._common import notify_error, notify_info, notify_warning
from ._state import UNetState, get_state, unwrap_viewer

if TYPE_CHECKING:
    import napari

    from ._workers import Job


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one type, kept in sync with the layer list."""

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: napari.Viewer,
        layer_type: type,
        parent: QWidget | None = None,
        allow_none: bool = False,
        none_text: str = "(none)",
        accept: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self._accept = accept
        self._viewer = viewer
        self._type = layer_type
        self._allow_none = allow_none
        self._none_text = none_text
        self._layers: list[Any] = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.currentIndexChanged.connect(self._emit)
        ev = viewer.layers.events
        ev.inserted.connect(self.refresh)
        ev.removed.connect(self.refresh)
        ev.moved.connect(self.refresh)
        self.refresh()

    def _candidates(self) -> list[Any]:
        return [
            lay
            for lay in self._viewer.layers
            if isinstance(lay, self._type) and (self._accept is None or self._accept(lay))
        ]

    def refresh(self, event: Any = None) -> None:
        current = self.value
        layers = self._candidates()
        for lay in layers:  # follow renames
            try:
                lay.events.name.disconnect(self.refresh)
            except (TypeError, ValueError, RuntimeError):
                pass
            lay.events.name.connect(self.refresh)
        self.blockSignals(True)
        try:
            self.clear()
            self._layers = ([None] if self._allow_none else []) + layers
            for lay in self._layers:
                self.addItem(self._none_text if lay is None else lay.name)
            if current in self._layers:
                self.setCurrentIndex(self._layers.index(current))
            elif self._layers:
                self.setCurrentIndex(0)
        finally:
            self.blockSignals(False)
        if self.value is not current:
            self._emit()

    @property
    def value(self) -> Any:
        i = self.currentIndex()
        if 0 <= i < len(self._layers):
            return self._layers[i]
        return None

    def set_value(self, layer: Any) -> None:
        if layer is None and self._allow_none:
            self.setCurrentIndex(0)
            return
        if layer not in self._layers:
            self.refresh()
        if layer in self._layers:
            self.setCurrentIndex(self._layers.index(layer))

    def _emit(self, *_: Any) -> None:
        self.layer_changed.emit(self.value)


def path_row(placeholder: str) -> tuple[QHBoxLayout, QLineEdit, QPushButton]:
    """A path field with a narrow browse button ("…") beside it."""
    row = QHBoxLayout()
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    button = QPushButton("…")
    button.setMaximumWidth(30)
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row, edit, button


class UNetWidget(QWidget):
    """Base of the napari-unet dock widgets: viewer, shared state, status line, job."""

    #: key under which the widget registers itself in ``state.widgets``
    key: str = ""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a PublicOnlyProxy of the viewer; layers obtained
        # through it are proxies too, which breaks `layer is state.labels_layer`
        self.viewer = unwrap_viewer(napari_viewer)
        self.state: UNetState = get_state(self.viewer)
        if self.key:
            self.state.widgets[self.key] = self
        self._jobs: dict[str, Job] = {}
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.setLayout(QVBoxLayout())
        self.layout().setContentsMargins(6, 6, 6, 6)
        self.state.shutting_down.connect(self._on_shutdown)
        # closing the dock alone (not the viewer) also stops the jobs; the lambda
        # holds the job dict, not self (which is being destroyed)
        jobs = self._jobs
        self.destroyed.connect(lambda *_: _shutdown_jobs(jobs))
        QTimer.singleShot(0, self._hook_window)

    def _hook_window(self) -> None:
        """Once docked, let the shared state watch the main window for Close."""
        try:
            top: QWidget = self
            while top.parentWidget() is not None:
                top = top.parentWidget()
        except RuntimeError:  # deleted before the event loop ran
            return
        if top is not self:
            self.state.attach_window(top)

    def showEvent(self, event: Any) -> None:
        self._hook_window()
        super().showEvent(event)

    # -- layout helpers --------------------------------------------------------------------
    def add_form(self) -> QFormLayout:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.layout().addLayout(form)
        return form

    def add_run_row(self, start: str, stop: str) -> tuple[QPushButton, QPushButton, QProgressBar]:
        """A start and a (disabled) stop button side by side, and a progress bar below."""
        row = QHBoxLayout()
        start_btn = QPushButton(start)
        stop_btn = QPushButton(stop)
        stop_btn.setEnabled(False)
        row.addWidget(start_btn)
        row.addWidget(stop_btn)
        self.layout().addLayout(row)
        progress = QProgressBar()
        progress.setRange(0, 1)
        progress.setValue(0)
        self.layout().addWidget(progress)
        return start_btn, stop_btn, progress

    def grayscale_image(self, missing: str) -> Any:
        """The chosen image layer if it is a grayscale stack; else notify (``missing``) and None."""
        image = self.state.image_layer
        if image is None:
            self.error(missing)
            return None
        if getattr(image, "rgb", False):
            self.error(f"image {image.name!r} is RGB: napari-unet needs a grayscale stack")
            return None
        return image

    def finish_layout(self) -> None:
        self.layout().addWidget(self.status)
        self.layout().addStretch(1)

    # -- messages --------------------------------------------------------------------------
    def error(self, message: str) -> None:
        notify_error(message, self.status)

    def warning(self, message: str) -> None:
        notify_warning(message, self.status)

    def info(self, message: str, notify: bool = True) -> None:
        if notify:
            notify_info(message, self.status)
        else:
            self.status.setText(message)
            self.status.setStyleSheet("")

    # -- jobs ------------------------------------------------------------------------------
    def start_job(self, name: str, job: Job) -> Job:
        """Remember ``job`` under ``name`` and start it (not once the viewer is closing)."""
        self._hook_window()
        self._jobs[name] = job
        if self.state.closed:
            job.disconnect()
            return job
        return job.start()

    def job(self, name: str = "main") -> Job | None:
        return self._jobs.get(name)

    def busy(self, name: str = "main") -> bool:
        job = self._jobs.get(name)
        return job is not None and job.running

    def _on_shutdown(self) -> None:
        self.before_shutdown()
        _shutdown_jobs(self._jobs)

    def before_shutdown(self) -> None:
        """Hook run on the GUI thread when the viewer closes, before the jobs stop."""

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every job has finished (for scripts and tests)."""
        return all(job.wait(timeout) for job in list(self._jobs.values()))


def _shutdown_jobs(jobs: dict[str, Job]) -> None:
    # finished jobs too: their last signals may still be queued for a widget being deleted
    for job in list(jobs.values()):
        job.shutdown()


class CurvePlot(QWidget):
    """A minimal line plot drawn with QPainter (no plotting dependency).

    Two series share the x axis: ``loss`` (left axis, log scale when it spans
    more than a decade) and ``metric`` (right axis, 0..1, drawn as dots).
    ``add_*`` only stores points; the widget repaints at most ``fps`` times
    per second.
    """

    def __init__(self, parent: QWidget | None = None, fps: float = 4.0) -> None:
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.loss: list[tuple[float, float]] = []
        self.metric: list[tuple[float, float]] = []
        self.metric_name = "validation"
        self.x_max: float | None = None
        self._dirty = False
        self.paint_count = 0
        self._timer = QTimer(self)
        self._timer.setInterval(max(int(1000 / fps), 50))
        self._timer.timeout.connect(self._maybe_update)
        self._timer.start()

    def clear(self) -> None:
        self.loss.clear()
        self.metric.clear()
        self._dirty = True

    def add_loss(self, x: float, y: float) -> None:
        if math.isfinite(y):
            self.loss.append((float(x), float(y)))
            self._dirty = True

    def add_metric(self, x: float, y: float) -> None:
        if math.isfinite(y):
            self.metric.append((float(x), float(y)))
            self._dirty = True

    def _maybe_update(self) -> None:
        if self._dirty and self.isVisible():
            self._dirty = False
            self.update()

    @staticmethod
    def _smooth(
        points: Sequence[tuple[float, float]], max_points: int
    ) -> list[tuple[float, float]]:
        if len(points) <= max_points:
            return list(points)
        step = len(points) / max_points
        out = []
        for i in range(max_points):
            chunk = points[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]
            out.append((chunk[-1][0], sum(p[1] for p in chunk) / len(chunk)))
        return out

    def paintEvent(self, event: Any) -> None:
        self.paint_count += 1
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        rect = QRectF(self.rect()).adjusted(44, 8, -40, -20)
        p.setPen(QPen(fg, 1))
        p.drawRect(rect)
        if not self.loss:
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "loss curve appears here")
            p.end()
            return
        pts = self._smooth(self.loss, max(int(rect.width()), 2))
        xs = [x for x, _ in self.loss] + [x for x, _ in self.metric]
        x0 = min(xs)
        x1 = max(max(xs), self.x_max or 0.0, x0 + 1.0)
        ys = [y for _, y in pts]
        lo, hi = min(ys), max(ys)
        log = lo > 0 and hi / lo > 10.0
        f = (lambda v: math.log10(v)) if log else (lambda v: v)
        flo, fhi = f(lo), f(hi)
        if fhi - flo < 1e-12:
            flo, fhi = flo - 0.5, fhi + 0.5

        def to_px(x: float, y: float, ylo: float, yhi: float) -> QPointF:
            px = rect.left() + (x - x0) / (x1 - x0) * rect.width()
            py = rect.bottom() - (y - ylo) / (yhi - ylo) * rect.height()
            return QPointF(px, py)

        path = QPainterPath()
        for i, (x, y) in enumerate(pts):
            q = to_px(x, f(y), flo, fhi)
            if i == 0:
                path.moveTo(q)
            else:
                path.lineTo(q)
        p.setPen(QPen(QColor("#ff9500"), 1.5))
        p.drawPath(path)
        if self.metric:
            p.setPen(QPen(QColor("#34c759"), 1.5))
            p.setBrush(QColor("#34c759"))
            prev = None
            for x, y in self.metric:
                q = to_px(x, min(max(y, 0.0), 1.0), 0.0, 1.0)
                if prev is not None:
                    p.drawLine(prev, q)
                p.drawEllipse(q, 2.5, 2.5)
                prev = q
        p.setPen(QPen(fg, 1))
        small = p.font()
        small.setPointSizeF(max(small.pointSizeF() * 0.8, 6.0))
        p.setFont(small)
        fmt = (lambda v: f"{10**v:.3g}") if log else (lambda v: f"{v:.3g}")
        p.drawText(QRectF(0, rect.top() - 6, 42, 14), Qt.AlignmentFlag.AlignRight, fmt(fhi))
        p.drawText(QRectF(0, rect.bottom() - 8, 42, 14), Qt.AlignmentFlag.AlignRight, fmt(flo))
        p.drawText(
            QRectF(rect.left(), rect.bottom() + 2, rect.width(), 16),
            Qt.AlignmentFlag.AlignLeft,
            f"{x0:.0f}",
        )
        p.drawText(
            QRectF(rect.left(), rect.bottom() + 2, rect.width(), 16),
            Qt.AlignmentFlag.AlignRight,
            f"{x1:.0f} it",
        )
        p.setPen(QPen(QColor("#ff9500"), 1))
        p.drawText(
            QRectF(rect.left() + 4, rect.top() + 2, 200, 14), 0, "loss" + (" (log)" if log else "")
        )
        if self.metric:
            p.setPen(QPen(QColor("#34c759"), 1))
            p.drawText(
                QRectF(rect.right() + 2, rect.top() - 6, 38, 14), Qt.AlignmentFlag.AlignLeft, "1"
            )
            p.drawText(
                QRectF(rect.right() + 2, rect.bottom() - 8, 38, 14), Qt.AlignmentFlag.AlignLeft, "0"
            )
            p.drawText(
                QRectF(rect.left() + 4, rect.top() + 16, 260, 14),
                0,
                f"{self.metric_name} {self.metric[-1][1]:.3f}",
            )
        p.end()
