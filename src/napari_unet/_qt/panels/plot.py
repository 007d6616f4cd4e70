"""The live loss / validation curve of the Train dock, drawn with QPainter (no plotting dependency).

Points are only stored by ``add_*``; the widget repaints at most ``fps`` times per second, or when
its owner calls :meth:`CurvePlot.flush` (``fps=0``), together with its other updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = "#ff9500"
METRIC_COLOR = "#34c759"


@dataclass
class _Axes:
    """The plot rectangle and the data ranges it maps (loss on the left, metric 0..1 right)."""

    rect: QRectF
    x0: float
    x1: float
    ylo: float
    yhi: float
    log: bool

    def f(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def point(
        self, x: float, y: float, ylo: float | None = None, yhi: float | None = None
    ) -> QPointF:
        lo = self.ylo if ylo is None else ylo
        hi = self.yhi if yhi is None else yhi
        r = self.rect
        px = r.left() + (x - self.x0) / (self.x1 - self.x0) * r.width()
        py = r.bottom() - (y - lo) / (hi - lo) * r.height()
        return QPointF(px, py)

    def label(self, v: float) -> str:
        return f"{10**v:.3g}" if self.log else f"{v:.3g}"


class CurvePlot(QWidget):
    """A minimal line plot: ``loss`` (left axis, log scale when it spans more than a decade)
    and ``metric`` (right axis, 0..1, drawn as dots) over the iterations."""

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
        if fps > 0:
            self._timer.setInterval(max(int(1000 / fps), 50))
            self._timer.timeout.connect(self.flush)
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

    def flush(self) -> None:
        """Repaint if points were added since the last repaint."""
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

    def _axes(self, rect: QRectF, pts: list[tuple[float, float]]) -> _Axes:
        xs = [x for x, _ in self.loss] + [x for x, _ in self.metric]
        x0 = min(xs)
        x1 = max(max(xs), self.x_max or 0.0, x0 + 1.0)
        ys = [y for _, y in pts]
        lo, hi = min(ys), max(ys)
        axes = _Axes(rect, x0, x1, 0.0, 1.0, lo > 0 and hi / lo > 10.0)
        axes.ylo, axes.yhi = axes.f(lo), axes.f(hi)
        if axes.yhi - axes.ylo < 1e-12:
            axes.ylo, axes.yhi = axes.ylo - 0.5, axes.yhi + 0.5
        return axes

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
        axes = self._axes(rect, pts)
        self._draw_loss(p, axes, pts)
        if self.metric:
            self._draw_metric(p, axes)
        self._draw_labels(p, axes, fg)
        p.end()

    def _draw_loss(self, p: QPainter, axes: _Axes, pts: list[tuple[float, float]]) -> None:
        path = QPainterPath()
        for i, (x, y) in enumerate(pts):
            q = axes.point(x, axes.f(y))
            if i == 0:
                path.moveTo(q)
            else:
                path.lineTo(q)
        p.setPen(QPen(QColor(LOSS_COLOR), 1.5))
        p.drawPath(path)

    def _draw_metric(self, p: QPainter, axes: _Axes) -> None:
        p.setPen(QPen(QColor(METRIC_COLOR), 1.5))
        p.setBrush(QColor(METRIC_COLOR))
        prev = None
        for x, y in self.metric:
            q = axes.point(x, min(max(y, 0.0), 1.0), 0.0, 1.0)
            if prev is not None:
                p.drawLine(prev, q)
            p.drawEllipse(q, 2.5, 2.5)
            prev = q

    def _draw_labels(self, p: QPainter, axes: _Axes, fg: QColor) -> None:
        rect = axes.rect
        right, left = Qt.AlignmentFlag.AlignRight, Qt.AlignmentFlag.AlignLeft
        p.setPen(QPen(fg, 1))
        small = p.font()
        small.setPointSizeF(max(small.pointSizeF() * 0.8, 6.0))
        p.setFont(small)
        text: Callable[..., None] = p.drawText
        text(QRectF(0, rect.top() - 6, 42, 14), right, axes.label(axes.yhi))
        text(QRectF(0, rect.bottom() - 8, 42, 14), right, axes.label(axes.ylo))
        bottom = QRectF(rect.left(), rect.bottom() + 2, rect.width(), 16)
        text(bottom, left, f"{axes.x0:.0f}")
        text(bottom, right, f"{axes.x1:.0f} it")
        p.setPen(QPen(QColor(LOSS_COLOR), 1))
        text(
            QRectF(rect.left() + 4, rect.top() + 2, 200, 14),
            0,
            "loss" + (" (log)" if axes.log else ""),
        )
        if self.metric:
            p.setPen(QPen(QColor(METRIC_COLOR), 1))
            text(QRectF(rect.right() + 2, rect.top() - 6, 38, 14), left, "1")
            text(QRectF(rect.right() + 2, rect.bottom() - 8, 38, 14), left, "0")
            last = f"{self.metric_name} {self.metric[-1][1]:.3f}"
            text(QRectF(rect.left() + 4, rect.top() + 16, 260, 14), 0, last)
