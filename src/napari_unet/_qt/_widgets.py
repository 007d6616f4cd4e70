"""Reusable Qt pieces of the docks: a layer picker, a path field and the docks' base class.

The base class gives every dock the viewer, the shared state, a status line and its jobs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..fields import field_bounds
from ._common import notify_error, notify_info, notify_warning
from ._state import UNetState, get_state, unwrap_viewer
from .panels.run_row import RunRow

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


def form_layout(panel: QWidget | None = None) -> QFormLayout:
    """A form whose fields grow; set on ``panel`` (without margins) when given."""
    form = QFormLayout(panel) if panel is not None else QFormLayout()
    if panel is not None:
        form.setContentsMargins(0, 0, 0, 0)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def check_box(text: str, checked: bool = True, tooltip: str = "") -> QCheckBox:
    """A check box, ticked by default."""
    box = QCheckBox(text)
    box.setChecked(checked)
    if tooltip:
        box.setToolTip(tooltip)
    return box


class Guard:
    """A re-entrancy flag: ``with guard:`` marks a block, ``guard.active`` is true inside it.

    Docks use it so that showing a state change in their widgets is not written back.
    """

    def __init__(self) -> None:
        self.active = False

    def __enter__(self) -> Guard:
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False


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

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a PublicOnlyProxy of the viewer; layers obtained
        # through it are proxies too, which breaks `layer is state.labels_layer`
        self.viewer = unwrap_viewer(napari_viewer)
        self.state: UNetState = get_state(self.viewer)
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
        form = form_layout()
        self.layout().addLayout(form)
        return form

    def add_run_row(self, start: str, stop: str) -> tuple[QPushButton, QPushButton, QProgressBar]:
        """A start and a (disabled) stop button side by side, and a progress bar below."""
        row = RunRow(start, stop)
        self.layout().addWidget(row)
        return row.start_btn, row.stop_btn, row.progress

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

    def layers_problem(self) -> str | None:
        """Why the image and training labels cannot be used together (None when they can)."""
        image, labels = self.state.image_layer, self.state.labels_layer
        if image is None:
            return "no image layer: open a stack (File > Open) and pick it in '1 Annotate'"
        if labels is None:
            return "no training labels layer: create one in '1 Annotate' and paint some slices"
        if tuple(labels.data.shape) != tuple(image.data.shape):
            return (
                f"labels layer shape {tuple(labels.data.shape)} does not match image "
                f"{tuple(image.data.shape)}: create labels for this image in '1 Annotate'"
            )
        return None

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

    def cancel_job(self, name: str = "main") -> bool:
        """Ask job ``name`` to stop if it runs; return whether it did."""
        job = self._jobs.get(name)
        if job is None or not job.running:
            return False
        job.cancel()
        return True

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


# ----------------------------------------------------------------------------- config fields

#: the largest value a spin box can show (Qt's int range; a float box goes as far)
SPIN_MAX = 2**31 - 1


class _FieldSpinMixin:
    """A spin box for one dataclass field: range from its bounds; optional fields show
    ``special`` at the minimum, which means None."""

    _optional = False
    _is_int = True

    def _setup(self, cls: Any, name: str, special: str | None, step: float | None) -> None:
        bounds = field_bounds(cls).get(name)
        annotation = str(next(f.type for f in dataclasses.fields(cls) if f.name == name))
        self._optional = bounds.optional if bounds is not None else "None" in annotation
        low = bounds.low if bounds is not None and bounds.low is not None else 0
        if bounds is not None and bounds.low_open:
            low += 1 if self._is_int else 10.0 ** -self.decimals()  # type: ignore[attr-defined]
        high = bounds.high if bounds is not None and bounds.high is not None else SPIN_MAX
        minimum = 0 if self._optional and special else low
        cast = int if self._is_int else float
        self.setRange(cast(minimum), cast(high))  # type: ignore[attr-defined]
        if step is not None:
            self.setSingleStep(cast(step))  # type: ignore[attr-defined]
        if special:
            self.setSpecialValueText(special)  # type: ignore[attr-defined]
        self._special = bool(special)

    def field(self) -> Any:
        """The value as the field stores it (None at the special minimum of an optional field)."""
        value = self.value()  # type: ignore[attr-defined]
        if self._optional and self._special and value == self.minimum():  # type: ignore[attr-defined]
            return None
        return int(value) if self._is_int else float(value)

    def set_field(self, value: Any) -> None:
        self.setValue(self.minimum() if value is None else value)  # type: ignore[attr-defined]


class IntFieldSpin(_FieldSpinMixin, QSpinBox):
    _is_int = True


class FloatFieldSpin(_FieldSpinMixin, QDoubleSpinBox):
    _is_int = False


def field_spin(
    cls: Any,
    name: str,
    *,
    special: str | None = None,
    step: float | None = None,
    decimals: int | None = None,
) -> IntFieldSpin | FloatFieldSpin:
    """A spin box over the accepted values of field ``name`` of the dataclass ``cls``."""
    bounds = field_bounds(cls).get(name)
    annotation = str(next(f.type for f in dataclasses.fields(cls) if f.name == name))
    is_int = bounds.kind == "int" if bounds is not None else annotation.startswith("int")
    spin: IntFieldSpin | FloatFieldSpin = IntFieldSpin() if is_int else FloatFieldSpin()
    if decimals is not None and isinstance(spin, FloatFieldSpin):
        spin.setDecimals(decimals)
    spin._setup(cls, name, special, step)
    return spin


def set_choices(
    combo: QComboBox, choices: Sequence[Any], text: dict[Any, str] | None = None
) -> None:
    """Fill ``combo`` with ``choices`` (item data), shown as ``text[choice]`` or the choice."""
    combo.clear()
    for choice in choices:
        combo.addItem((text or {}).get(choice, str(choice)), choice)
