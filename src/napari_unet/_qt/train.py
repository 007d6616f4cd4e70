"""4 Train: train (or fine-tune) a U-Net on the painted slices, in a child process, with live feedback.

The form edits ``state.config``; :func:`settings_to_config` makes the TrainConfig the process gets.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QWidget

from ..devices import DEVICE_CHOICES
from ..fields import field_bounds
from ..losses import LOSS_MODES
from ..model import PRESETS
from ..training import (
    CheckpointSaved,
    Diverged,
    Finished,
    Iteration,
    Preview,
    TrainConfig,
    TrainingStarted,
    TrainingWarning,
)
from ..training.remote import ModelStart, TrainerReady, TrainingProcess, TrainResult
from ._common import (
    Throttle,
    current_z,
    friendly_error,
    n_slices,
    sanitize_name,
)
from ._compute import describe_device_job, warm_process_job, warm_torch
from ._layers import image_source_path
from ._widgets import Guard, UNetWidget
from ._workers import Job
from .panels.model_source import MEMORY, ModelSource
from .panels.run_options import RunOptions, folder_problem
from .panels.train_settings import (
    RunContext,
    TrainSettings,
    augmentation_summary,
    settings_to_config,
)
from .panels.training_progress import TrainingProgress
from .panels.training_view import PREVIEW_SUFFIX, LabelsLink, PreviewOverlay, visible_view

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

__all__ = ["PREVIEW_SUFFIX", "TrainWidget"]


def _choices(config: TrainConfig, name: str, fallback: tuple[Any, ...]) -> tuple[Any, ...]:
    """The accepted values of field ``name``, the value of ``config`` first."""
    bounds = field_bounds(TrainConfig).get(name)
    choices = bounds.choices if bounds is not None and bounds.choices else fallback
    return tuple(sorted(choices, key=lambda c: c != getattr(config, name)))


class TrainWidget(UNetWidget):
    """Train (or fine-tune) a U-Net on the painted slices, with live feedback."""

    #: emitted on the GUI thread when a run ends: "completed", "stopped", "time_limit" or "error"
    training_finished = Signal(str)
    #: emitted when a preview overlay was updated (for scripts and benchmarks)
    preview_updated = Signal(int)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        #: the warm process the next run takes, the one training now, and all of them (to close)
        self._process: TrainingProcess | None = None
        self._running: TrainingProcess | None = None
        self._processes: list[TrainingProcess] = []
        self._labels_link = LabelsLink(self.viewer, self._on_labels_edited)
        self._overlay = PreviewOverlay(self.viewer)
        self._writing = Guard()
        self.last_reason: str | None = None
        self.last_checkpoint: str | None = None
        self.checkpoints: list[str] = []
        self.preview_count = 0
        self.t_start: float | None = None
        self.t_first_iteration: float | None = None
        self.t_first_preview: float | None = None
        self.last_ready: TrainerReady | None = None
        self._build()
        self._wire()

    def _build(self) -> None:
        config = self.state.config
        self.source = ModelSource(_choices(config, "model", PRESETS))
        self.model_combo, self.ckpt_edit = self.source.combo, self.source.ckpt_edit
        self.layout().addWidget(self.source)
        choices = {"loss": _choices(config, "loss", LOSS_MODES), "device": DEVICE_CHOICES}
        self.settings = TrainSettings(config, choices)
        self.layout().addWidget(self.settings)
        s = self.settings  # its widgets, under the names scripts and tests use
        self.loss_combo, self.patch, self.batch, self.lr = s.loss_combo, s.patch, s.batch, s.lr
        self.iterations, self.minutes, self.val_edit = s.iterations, s.minutes, s.val_edit
        self.augment, self.aug_summary, self.seed = s.augment, s.aug_summary, s.seed
        self.device, self.device_label = s.device, s.device_label
        self.preview_every = s.preview_every
        self.options = RunOptions(TrainConfig)
        self.layout().addWidget(self.options)
        self.folder_edit, self.folder_btn = self.options.folder_edit, self.options.folder_btn
        self.threads = self.options.threads
        self.run = TrainingProgress()
        self.layout().addWidget(self.run)
        self.run_row, self.run_label, self.plot = (
            self.run.run_row,
            self.run.run_label,
            self.run.plot,
        )
        self.start_btn, self.stop_btn = self.run_row.start_btn, self.run_row.stop_btn
        self.progress = self.run_row.progress
        self.finish_layout()

    def _wire(self) -> None:
        self._view_throttle = Throttle(self._send_view, 200, self)
        processes = self._processes  # closing the dock alone ends them too (not via self)
        self.destroyed.connect(lambda *_: [p.close() for p in processes])
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(self.stop)
        self.device.currentIndexChanged.connect(lambda *_: self._describe_device())
        self.source.choice_changed.connect(self._on_source)
        self.settings.edited.connect(self._on_settings_edited)
        self.state.config_changed.connect(self._on_config_changed)
        self.state.augmentation_changed.connect(self._update_aug_summary)
        self.state.model_changed.connect(self._on_model_changed)
        self.state.training_requested.connect(self._on_training_requested)
        self.state.labels_edited.connect(self._on_labels_edited)  # Correct's accept / undo
        self.state.labelled_slices_changed.connect(self._on_labelled)
        self.viewer.dims.events.current_step.connect(self._on_view)
        scene = getattr(self.viewer, "scene", self.viewer)  # napari >= 0.9: viewer.scene.camera
        scene.camera.events.zoom.connect(self._on_view)
        scene.camera.events.center.connect(self._on_view)
        self._update_aug_summary()
        if self.state.model is not None:
            self._on_model_changed()
        self.start_job("warmup", Job(warm_torch))
        self._describe_device()

    # ================================================================== settings <-> state
    def set_model_choice(self, key: str) -> None:
        """``key``: a preset ("small", "paper"), "memory" or "checkpoint"."""
        self.source.set_choice(key)

    def model_choice(self) -> str:
        return self.source.choice()

    def set_loss(self, key: str) -> None:
        index = self.loss_combo.findData(key)
        if index < 0:
            raise ValueError(f"unknown loss {key!r}")
        self.loss_combo.setCurrentIndex(index)

    def _on_source(self, key: str) -> None:
        if self.source.is_new() and key != self.state.config.model:
            try:
                self._update_state(model=key)
            except ValueError as exc:
                self.error(f"model: {exc}")

    def _write_settings(self) -> None:
        """The form into ``state.config`` (raises ValueError with the setting's message)."""
        image = self.state.image_layer
        self._update_state(**self.settings.values(n_slices(image) if image is not None else None))

    def _on_settings_edited(self) -> None:
        try:
            self._write_settings()
        except ValueError as exc:  # shown quietly while editing; Start reports it
            self.status.setText(f"training settings: {exc}")
            self.status.setStyleSheet("color: #ffcc00;")

    def _update_state(self, **fields: Any) -> None:
        with self._writing:
            self.state.update_config(**fields)

    def _on_config_changed(self) -> None:
        if not self._writing.active:
            self.settings.display(self.state.config)

    def _on_model_changed(self) -> None:
        if self.state.model is not None and not self.busy():
            self.set_model_choice(MEMORY)

    def _update_aug_summary(self) -> None:
        self.aug_summary.setText("  " + augmentation_summary(self.state.augmentation))

    def _describe_device(self) -> None:
        self.device_label.setText("checking…")
        job = Job(describe_device_job, self.device.currentData(), on_yield=self._on_device)
        self.start_job("device", job)

    def _on_device(self, item: tuple[str, str]) -> None:
        choice, text = item
        if choice == self.device.currentData():
            self.device_label.setText(text)

    def checkpoint_folder(self) -> Path:
        image = self.state.image_layer
        return self.options.folder(image_source_path(image) if image is not None else None)

    def build_config(self) -> TrainConfig:
        """The TrainConfig a run gets now (raises ValueError with a message)."""
        self._write_settings()
        image = self.state.image_layer
        stem = sanitize_name(image.name) if image is not None else "unet"
        name = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}.pt"
        run = RunContext(
            checkpoint_path=str(self.checkpoint_folder() / name),
            class_names=list(self.state.class_names),
            class_colors=list(self.state.class_colors),
            new_model=self.source.is_new(),
            num_threads=self.options.num_threads(),
            augment=self.augment.isChecked(),
        )
        return settings_to_config(self.state.config, run)

    def _set_running(self, running: bool) -> None:
        for w in (self.settings, self.options):
            w.setEnabled(not running)
        self.source.set_editable(not running)
        self.run_row.set_running(running)
        self.state.set_training_busy(running)

    # ================================================================== start / stop
    def _check_inputs(self) -> str | None:
        """Why training cannot start now (None when it can)."""
        problem = self.layers_problem()
        if problem is not None:
            return problem
        image = self.state.image_layer
        if getattr(image, "rgb", False):
            return f"image {image.name!r} is RGB: napari-unet needs a grayscale stack"
        if len(self.state.class_names) < 2:
            return "at least 2 classes are needed to train: add a class in '1 Annotate'"
        choice = self.model_choice()
        if choice == MEMORY and self.state.model is None:
            return "no model in memory: train a new model first or fine-tune a checkpoint file"
        if choice == "checkpoint" and not self.source.checkpoint_file():
            return "choose the checkpoint file to fine-tune (the '…' button)"
        return None

    def start(self) -> Job | None:
        """Validate the inputs and start training in a worker; return the job (or None)."""
        if self.busy():
            self.warning("training is already running: press Stop first")
            return None
        if self.state.closed:
            return None
        problem = self._check_inputs()
        if problem is not None:
            self.error(problem)
            return None
        try:
            config = self.build_config()
        except (ValueError, TypeError) as exc:
            self.error(f"training settings: {exc}")
            return None
        problem = folder_problem(Path(config.checkpoint_path).parent)
        if problem is not None:
            self.error(problem)
            return None
        image, labels = self.state.image_layer, self.state.labels_layer
        memory = self.model_choice() == MEMORY
        start = ModelStart(
            self.model_choice(),
            self.state.model if memory else None,
            self.state.metadata if memory else None,
            self.source.checkpoint_file(),
        )
        self.last_reason = None
        process = self._take_process()
        seconds = None if config.max_minutes is None else 60.0 * config.max_minutes
        self.run.reset(config.iterations, seconds)
        job = Job(
            process.run,  # relays the process's events, TrainerReady first, TrainResult last
            image.data,
            labels.data,  # live: painting continues during training
            config,
            start,
            (list(self.state.class_names), list(self.state.class_colors)),
            on_yield=self._on_event,
            on_error=self._on_error,
            on_finished=self._on_finished,
            cancel=process.stop,
            quit_on_cancel=False,
        )
        self._running = process
        process.set_view(*visible_view(self.viewer, image))
        self._labels_link.connect(labels)
        self._set_running(True)
        if config.preview_every_s > 0:
            # napari's cost of adding a layer lands on the button press, not mid-run
            z = current_z(self.viewer, image)
            classes = (list(self.state.class_names), list(self.state.class_colors))
            self._overlay.show(image, np.zeros(image.data.shape[-2:], np.uint8), z, None, classes)
        self.t_start = time.perf_counter()
        self.t_first_iteration = self.t_first_preview = None
        self.info("preparing training (scanning labels, normalisation)…", notify=False)
        return self.start_job("main", job)

    # ================================================================== the training process
    def _on_labelled(self, slices: Any) -> None:
        if slices and self._running is None:
            self._ensure_process()

    def _ensure_process(self) -> None:
        """Spawn a process for the next run ahead of it: it imports torch while the user paints."""
        p = self._process
        if self.state.closed or (p is not None and p.process.exitcode is None):
            return
        self._process = p = TrainingProcess()
        self._processes[:] = [q for q in self._processes if q.process.exitcode is None] + [p]
        self.start_job("process", Job(warm_process_job, p))

    def _take_process(self) -> TrainingProcess:
        self._ensure_process()
        process, self._process = self._process, None
        assert process is not None
        return process

    def stop(self) -> None:
        """Stop after the current iteration, or within about a second inside a slow one (the
        process is then ended); a checkpoint is saved either way."""
        if self.cancel_job("main"):
            self.stop_btn.setEnabled(False)
            self.info("stopping after this iteration…", notify=False)

    def _on_training_requested(self) -> None:
        if self.busy():
            return
        if self.state.model is not None:
            self.set_model_choice(MEMORY)
        self.start()

    @property
    def iterations_seen(self) -> int:
        return self.run.iterations_seen

    @property
    def labels_changed_slices(self) -> list[int]:
        return self.run.labels_changed_slices

    # ================================================================== events (GUI thread)
    @functools.singledispatchmethod
    def _on_event(self, ev: object) -> None:
        """The run's display takes the other events (iterations, validations, new labels)."""
        self.run.on_event(ev)

    @_on_event.register
    def _(self, ev: Iteration) -> None:
        if self.t_first_iteration is None and self.t_start is not None:
            self.t_first_iteration = time.perf_counter() - self.t_start
        self.run.on_event(ev)

    @_on_event.register
    def _(self, ev: TrainerReady) -> None:
        self.last_ready = ev
        what = {
            "memory": "fine-tuning the model in memory",
            "checkpoint": "fine-tuning the checkpoint",
        }.get(ev.source, f"training a new {ev.source} U-Net")
        if ev.iterations_before:
            what += f" ({ev.iterations_before} iterations so far)"
        self.info(what, notify=False)

    @_on_event.register
    def _(self, ev: TrainResult) -> None:
        self.state.set_model(ev.model, ev.metadata, ev.checkpoint_path)
        self.last_reason = ev.reason
        if ev.checkpoint_path:
            self.last_checkpoint = ev.checkpoint_path

    @_on_event.register
    def _(self, ev: TrainingStarted) -> None:
        self.run.on_started(ev)
        self.device_label.setText(ev.device_description)

    @_on_event.register
    def _(self, ev: Preview) -> None:
        image = self.state.image_layer
        if image is None:
            return
        region = getattr(ev, "region", None)  # a RegionPreview covers only the visible part
        self._overlay.show(image, ev.labels, int(ev.slice_index), region)
        self.preview_count += 1
        if self.t_first_preview is None and self.t_start is not None:
            self.t_first_preview = time.perf_counter() - self.t_start
        self.preview_updated.emit(int(ev.slice_index))

    @_on_event.register
    def _(self, ev: CheckpointSaved) -> None:
        self.last_checkpoint = ev.path
        if ev.path not in self.checkpoints:
            self.checkpoints.append(ev.path)

    @_on_event.register
    def _(self, ev: TrainingWarning) -> None:
        self.warning(f"training: {ev.message}")

    @_on_event.register
    def _(self, ev: Diverged) -> None:
        self.error(f"training: {ev.message}")

    @_on_event.register
    def _(self, ev: Finished) -> None:
        self.last_reason = ev.reason
        if ev.checkpoint_path:
            self.last_checkpoint = ev.checkpoint_path

    @property
    def preview_layer(self) -> Labels | None:
        return self._overlay.layer

    def _on_error(self, exc: BaseException) -> None:
        self.last_reason = "error"
        self.error(friendly_error(exc, "training failed"))

    def _on_finished(self) -> None:
        self.run.finish()
        self._labels_link.disconnect()
        self._running = None
        self._set_running(False)
        reason = self.last_reason or "error"
        where = f"; checkpoint: {self.last_checkpoint}" if self.last_checkpoint else ""
        if reason == "diverged":
            self.warning(
                f"training diverged after {self.iterations_seen} iterations; the model keeps "
                f"its last finite weights{where}"
            )
        elif reason != "error":
            verbs = {"stopped": "stopped", "time_limit": "reached the time limit"}
            verb = verbs.get(reason, "finished")
            self.info(f"training {verb} after {self.iterations_seen} iterations{where}")
        if reason != "error" and self.state.model is not None:
            self.set_model_choice(MEMORY)
        self.last_reason = reason
        self.training_finished.emit(reason)

    # ================================================================== live links
    def _on_view(self, event: Any = None) -> None:
        if self._running is not None:
            self._view_throttle.trigger()

    def _send_view(self) -> None:
        image = self.state.image_layer
        if self._running is not None and image is not None:
            self._running.set_view(*visible_view(self.viewer, image))

    def _on_labels_edited(self, slices: list[int] | None) -> None:
        """Edited label slices (None: any): the running trainer gets them within an iteration."""
        if self._running is not None:
            self._running.notify_labels(slices)
        else:
            self._ensure_process()

    def before_shutdown(self) -> None:
        self.run.close_bar()
        self._labels_link.disconnect()
        if self._process is not None:  # the warm one; a running one stops with its job
            self._process.close()
