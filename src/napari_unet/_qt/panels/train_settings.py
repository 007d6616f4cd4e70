"""The recipe form of the Train dock and :func:`settings_to_config`, the one way to its TrainConfig.

The form shows a TrainConfig's fields (ranges and choices from its field bounds) and gives them back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QWidget,
)

from ...augment import INTENSITY_FIELDS, Augmentation
from ...fields import field_bounds
from ...slices import SLICES_HELP, format_slices
from .._common import parse_slice_ranges
from .._widgets import check_box, field_spin, form_layout, set_choices

if TYPE_CHECKING:
    from ...training import TrainConfig

LOSS_TEXT = {
    "wce+dice": "weighted cross-entropy + Dice",
    "wce": "weighted cross-entropy (paper)",
    "dice": "Dice",
    "jaccard": "Jaccard (soft IoU)",
    "wce+jaccard": "weighted cross-entropy + Jaccard",
}
SCHEDULE_TEXT = {
    "cosine": "cosine decay",
    "constant": "constant",
    "cyclic": "cyclic (triangular)",
}
#: the schedules that use the lowest learning rate, and those with a period
_USES_MIN_LR = ("cosine", "cyclic")
_USES_PERIOD = ("cyclic",)


#: TrainConfig fields the window fills in at start from the viewer and the machine (the
#: checkpoint folder, Annotate's classes, the CPU threads left to napari): not the recipe
RUN_FIELDS = ("checkpoint_path", "n_classes", "class_names", "class_colors", "num_threads")


@dataclass(frozen=True)
class RunContext:
    """What a run takes from the window besides the recipe (see :data:`RUN_FIELDS`)."""

    checkpoint_path: str
    class_names: list[str]
    class_colors: list[str]
    new_model: bool
    num_threads: int | None
    augment: bool = True


def settings_to_config(config: TrainConfig, run: RunContext) -> TrainConfig:
    """The TrainConfig the worker gets: the window's recipe ``config`` plus the run's context."""
    new = run.new_model and len(run.class_names) >= 2
    result = replace(
        config,
        augmentation=config.augmentation if run.augment else Augmentation.none(),
        n_classes=len(run.class_names) if new else None,
        class_names=list(run.class_names) if new else None,
        class_colors=list(run.class_colors) if new else None,
        checkpoint_path=run.checkpoint_path,
        num_threads=run.num_threads,
    )
    result.validate()
    return result


def augmentation_summary(aug: Augmentation) -> str:
    """One line naming what ``aug`` does ("none" when nothing)."""
    parts = []
    if aug.elastic and aug.elastic_sigma > 0 and aug.elastic_p > 0:
        parts.append(f"elastic {aug.elastic_grid}x{aug.elastic_grid} σ={aug.elastic_sigma:g}")
    if aug.flip:
        parts.append("flips")
    if aug.rot90:
        parts.append("rot90")
    if aug.rotate_degrees:
        parts.append(f"rotate ±{aug.rotate_degrees:g}°")
    parts += [
        f"{n.replace('_', ' ')} {getattr(aug, n):g}" for n in INTENSITY_FIELDS if getattr(aug, n)
    ]
    return ", ".join(parts) if parts else "none"


class TrainSettings(QWidget):
    """Loss, patch, batch, limits, learning rate, validation slices, device, previews, seed."""

    #: a field was edited by the user
    edited = Signal()

    def __init__(
        self, config: Any, choices: dict[str, tuple[Any, ...]], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        cls = type(config)
        form = form_layout(self)
        self.loss_combo = QComboBox()
        set_choices(self.loss_combo, choices["loss"], LOSS_TEXT)
        form.addRow("Loss", self.loss_combo)
        self.patch = field_spin(cls, "patch_size", special="auto", step=32)
        self.patch.setToolTip(
            "input patch side in pixels (auto: small preset 128 on a CPU, 256 on CUDA; paper 572)"
        )
        form.addRow("Patch size", self.patch)
        self.batch = field_spin(cls, "batch_size")
        form.addRow("Batch size", self.batch)
        limits = QHBoxLayout()
        self.iterations = field_spin(cls, "iterations", special="no limit", step=100)
        self.minutes = field_spin(cls, "max_minutes", special="no limit", decimals=1)
        self.minutes.setSuffix(" min")
        limits.addWidget(self.iterations, 1)
        limits.addWidget(QLabel("or"))
        limits.addWidget(self.minutes, 1)
        form.addRow("Iterations", limits)
        self.lr = QLineEdit()
        self.lr.setToolTip("peak learning rate (the top of the cyclic schedule)")
        form.addRow("Learning rate", self.lr)
        self._schedule_rows(cls, form)
        self.augment = check_box("augment (settings in '2 Preview augmentation')")
        form.addRow(self.augment)
        self.aug_summary = QLabel("")
        self.aug_summary.setWordWrap(True)
        form.addRow(self.aug_summary)
        self.val_edit = QLineEdit()
        self.val_edit.setPlaceholderText("optional, e.g. 20-22,25")
        self.val_edit.setToolTip("labelled slices held out for validation: " + SLICES_HELP)
        form.addRow("Validation slices", self.val_edit)
        self.device = QComboBox()
        set_choices(self.device, choices["device"])
        form.addRow("Device", self.device)
        self.device_label = QLabel("…")
        self.device_label.setWordWrap(True)
        form.addRow("", self.device_label)
        self.preview_every = field_spin(cls, "preview_every_s", special="off", decimals=1)
        self.preview_every.setSuffix(" s")
        form.addRow("Preview every", self.preview_every)
        self.seed = field_spin(cls, "seed")
        form.addRow("Seed", self.seed)
        self.display(config)
        for spin in (self.patch, self.batch, self.iterations, self.minutes):
            spin.valueChanged.connect(self.edited)
        for spin in (self.preview_every, self.seed):
            spin.valueChanged.connect(self.edited)
        self.loss_combo.currentIndexChanged.connect(self.edited)
        self.device.currentIndexChanged.connect(self.edited)
        self.lr.editingFinished.connect(self.edited)
        self.schedule.currentIndexChanged.connect(self._show_schedule_fields)
        self.schedule.currentIndexChanged.connect(self.edited)
        self.min_lr.editingFinished.connect(self.edited)
        self.period.valueChanged.connect(self.edited)

    def _schedule_rows(self, cls: Any, form: Any) -> None:
        """The schedule's choice (from the field bounds), its lowest rate and its period."""
        self.schedule = QComboBox()
        set_choices(self.schedule, field_bounds(cls)["lr_schedule"].choices, SCHEDULE_TEXT)
        form.addRow("LR schedule", self.schedule)
        self.min_lr = QLineEdit()
        self.min_lr.setPlaceholderText("auto: 5 % of the rate")
        self.min_lr.setToolTip("the lowest learning rate of the cosine and cyclic schedules")
        self.min_lr_label = QLabel("lowest")
        self.period = field_spin(cls, "lr_period", step=50)
        self.period.setSuffix(" it")
        self.period.setToolTip("iterations of one cycle: lowest -> learning rate -> lowest")
        self.period_label = QLabel("period")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for w in (self.min_lr_label, self.min_lr, self.period_label, self.period):
            row.addWidget(w)
        self.schedule_box = QWidget()
        self.schedule_box.setLayout(row)
        form.addRow("", self.schedule_box)

    def _show_schedule_fields(self) -> None:
        """The lowest rate only where the schedule uses it, the period only for cyclic."""
        kind = self.schedule.currentData()
        for w in (self.min_lr_label, self.min_lr):
            w.setVisible(kind in _USES_MIN_LR)
        for w in (self.period_label, self.period):
            w.setVisible(kind in _USES_PERIOD)
        self.schedule_box.setVisible(kind in _USES_MIN_LR or kind in _USES_PERIOD)
        self.val_edit.editingFinished.connect(self.edited)

    def display(self, config: Any) -> None:
        """Show ``config`` without emitting :attr:`edited`."""
        self.blockSignals(True)
        try:
            self.loss_combo.setCurrentIndex(max(self.loss_combo.findData(config.loss), 0))
            self.patch.set_field(config.patch_size)
            self.batch.set_field(config.batch_size)
            self.iterations.set_field(config.iterations)
            self.minutes.set_field(config.max_minutes)
            if _number(self.lr.text()) != config.learning_rate:
                self.lr.setText(f"{config.learning_rate:g}")
            self.schedule.setCurrentIndex(max(self.schedule.findData(config.lr_schedule), 0))
            self._show_schedule_fields()
            low, text = config.min_learning_rate, self.min_lr.text().strip()
            if (_number(text) != low) if text else (low is not None):
                self.min_lr.setText("" if low is None else f"{low:g}")
            self.period.set_field(config.lr_period)
            if parse_slice_ranges(self.val_edit.text()) != sorted(config.val_slices or []):
                self.val_edit.setText(format_slices(config.val_slices or []))
            self.device.setCurrentIndex(max(self.device.findData(config.device), 0))
            self.preview_every.set_field(config.preview_every_s)
            self.seed.set_field(config.seed)
        except ValueError:
            pass  # a half-typed field: left as the user wrote it
        finally:
            self.blockSignals(False)

    def values(self, n_slices: int | None = None) -> dict[str, Any]:
        """The form as TrainConfig fields (``n_slices`` bounds the validation slices)."""
        lr = _number(self.lr.text())
        if lr is None:
            raise ValueError(f"learning rate {self.lr.text()!r} is not a number (e.g. 1e-3)")
        val = parse_slice_ranges(self.val_edit.text(), n_slices)
        return {
            "loss": self.loss_combo.currentData(),
            "lr_schedule": self.schedule.currentData(),
            "min_learning_rate": _optional_number(self.min_lr.text(), "lowest learning rate"),
            "lr_period": self.period.field(),
            "patch_size": self.patch.field(),
            "batch_size": self.batch.field(),
            "iterations": self.iterations.field(),
            "max_minutes": self.minutes.field(),
            "learning_rate": lr,
            "val_slices": val or None,
            "device": self.device.currentData(),
            "preview_every_s": self.preview_every.field(),
            "seed": self.seed.field(),
        }


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _optional_number(text: str, what: str) -> float | None:
    """``None`` for a blank field, else its number (a ValueError naming ``what`` if it is none)."""
    if not text.strip():
        return None
    value = _number(text)
    if value is None:
        raise ValueError(f"{what} {text!r} is not a number (e.g. 1e-5) nor blank (auto)")
    return value
