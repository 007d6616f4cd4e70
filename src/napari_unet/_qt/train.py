"""4 Train: run :class:`napari_unet.training.Trainer` in a worker thread.

The worker builds the trainer (which scans the labels and estimates the
normalisation, so that happens off the GUI thread too) and forwards its typed
events by yielding them; the widget turns them into a napari progress bar, an
in-widget progress bar, a live loss / validation curve, a "training preview"
Labels layer for the slice being looked at, and notifications.  The GUI talks
back only through :class:`TrainControl`, whose methods are thread-safe
(``stop``, ``set_preview_slice``, ``notify_labels_changed``).

The trainer reads the live labels layer data, so painting continues during
training.  At the end the trained model and its metadata go to the viewer's
shared state, where Predict finds them and the next Train fine-tunes them.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ..augment import Augmentation
from ._common import (
    Throttle,
    current_z,
    friendly_error,
    label_colormap,
    n_slices,
    parse_slice_ranges,
    sanitize_name,
)
from ._compute import warm_torch
from ._layers import atom_slices, image_source_path
from ._widgets import CurvePlot, UNetWidget, path_row
from ._workers import Job

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

MODEL_CHOICES = {
    "new small U-Net (fast, CPU friendly)": "small",
    "new paper U-Net (Ronneberger 2015)": "paper",
    "continue: model in memory": "memory",
    "fine-tune a checkpoint file": "checkpoint",
}
LOSS_CHOICES = {
    "weighted cross-entropy + Dice": "wce+dice",
    "weighted cross-entropy (paper)": "wce",
    "Dice": "dice",
}
DEVICES = ("auto", "cuda", "mps", "cpu")
PREVIEW_SUFFIX = " training preview"


class TrainControl:
    """Thread-safe handle on the trainer that lives in the worker thread."""

    def __init__(self, preview_z: int | None = None) -> None:
        self._lock = threading.Lock()
        self._trainer: Any = None
        self.stop_requested = False
        self._preview_z = preview_z
        self._pending_slices: set[int] = set()

    def attach(self, trainer: Any) -> None:
        """Called in the worker once the trainer exists: apply what the GUI asked for."""
        with self._lock:
            self._trainer = trainer
            if self._preview_z is not None:
                try:
                    trainer.set_preview_slice(self._preview_z)
                except ValueError:
                    pass
            if self._pending_slices:
                trainer.notify_labels_changed(sorted(self._pending_slices))
            if self.stop_requested:
                trainer.stop()

    def stop(self) -> None:
        with self._lock:
            self.stop_requested = True
            if self._trainer is not None:
                self._trainer.stop()

    def set_preview_slice(self, z: int) -> None:
        with self._lock:
            self._preview_z = int(z)
            if self._trainer is not None:
                try:
                    self._trainer.set_preview_slice(int(z))
                except ValueError:
                    pass

    def notify_labels_changed(self, slices: list[int] | None) -> None:
        with self._lock:
            if self._trainer is not None:
                self._trainer.notify_labels_changed(slices)
            elif slices:
                self._pending_slices.update(slices)


@dataclass
class TrainerReady:
    """Yielded by the worker once the trainer is built."""

    source: str
    iterations_before: int
    n_classes: int
    class_names: list[str]
    checkpoint_path: str | None


@dataclass
class TrainResult:
    """Last value yielded by the worker: the trained model (no longer used by the worker)."""

    model: Any
    metadata: dict[str, Any]
    checkpoint_path: str | None
    reason: str


def _train_job(
    image: Any,
    labels: Any,
    config: Any,
    source: str,
    model: Any,
    metadata: dict[str, Any] | None,
    checkpoint_file: str | None,
    class_names: list[str],
    class_colors: list[str],
    control: TrainControl,
) -> Any:
    from ..training import Trainer

    if source == "checkpoint":
        from ..checkpoint import load_checkpoint

        model, metadata = load_checkpoint(checkpoint_file)
    elif source == "memory":
        model = copy.deepcopy(model)  # Predict may be using the model in memory
        metadata = copy.deepcopy(metadata or {})
    if model is not None:
        k = int(model.n_classes)
        if len(class_names) == k:
            config = replace(config, class_names=list(class_names), class_colors=list(class_colors))
        else:
            config = replace(config, class_names=None, class_colors=None)
    if control.stop_requested:
        return
    trainer = Trainer(image, labels, config, model=model, metadata=metadata)
    control.attach(trainer)
    yield TrainerReady(
        source=source,
        iterations_before=int((metadata or {}).get("iterations") or 0),
        n_classes=trainer.n_classes,
        class_names=list(trainer.class_names),
        checkpoint_path=config.checkpoint_path,
    )
    reason = "completed"
    checkpoint = None
    for event in trainer.run():
        if event.kind == "finished":
            reason, checkpoint = event.reason, event.checkpoint_path
        yield event
    trainer.model.eval()
    yield TrainResult(trainer.model, trainer.metadata, checkpoint, reason)


def _describe_job(choice: str) -> Any:
    from ..devices import describe_device, resolve_device

    try:
        dev = resolve_device(choice)
    except ValueError as exc:
        yield (choice, f"not available: {exc}")
        return
    yield (choice, describe_device(dev))


class TrainWidget(UNetWidget):
    """Train (or fine-tune) a U-Net on the painted slices, with live feedback."""

    key = "train"
    #: emitted on the GUI thread when a run ends: "completed", "stopped", "time_limit" or "error"
    training_finished = Signal(str)
    #: emitted when a preview overlay was updated (for scripts and benchmarks)
    preview_updated = Signal(int)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self._control: TrainControl | None = None
        self._pbar: Any = None
        self._latest: dict[str, Any] = {}
        self._labels_connected: Labels | None = None
        self.preview_layer: Labels | None = None
        self.last_reason: str | None = None
        self.last_checkpoint: str | None = None
        self.checkpoints: list[str] = []
        self.iterations_seen = 0
        self.preview_count = 0
        self.t_start: float | None = None
        self.t_first_preview: float | None = None
        self.last_ready: TrainerReady | None = None
        #: slices whose newly painted labels the running trainer picked up
        self.labels_changed_slices: list[int] = []

        from ..training import TrainConfig

        defaults = TrainConfig()  # the dock starts from the same defaults as the API and CLI

        # -- model -----------------------------------------------------------------------
        form = self.add_form()
        self.model_combo = QComboBox()
        self.model_combo.addItems(list(MODEL_CHOICES))
        form.addRow("Model", self.model_combo)
        crow, self.ckpt_edit, self.ckpt_btn = path_row("checkpoint .pt to fine-tune")
        form.addRow("Checkpoint", crow)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(list(LOSS_CHOICES))
        form.addRow("Loss", self.loss_combo)
        self.patch = QSpinBox()
        self.patch.setRange(0, 4096)
        self.patch.setSingleStep(32)
        self.patch.setValue(0)
        self.patch.setSpecialValueText("auto")
        self.patch.setToolTip(
            "input patch side in pixels (auto: small preset 128 on a CPU, 256 on CUDA; paper 572)"
        )
        form.addRow("Patch size", self.patch)
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(defaults.batch_size)
        form.addRow("Batch size", self.batch)
        lrow = QHBoxLayout()
        self.iterations = QSpinBox()
        self.iterations.setRange(0, 10_000_000)
        self.iterations.setSingleStep(100)
        self.iterations.setValue(defaults.iterations or 0)
        self.iterations.setSpecialValueText("no limit")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 100_000.0)
        self.minutes.setDecimals(1)
        self.minutes.setValue(0.0)
        self.minutes.setSpecialValueText("no limit")
        self.minutes.setSuffix(" min")
        lrow.addWidget(self.iterations, 1)
        lrow.addWidget(QLabel("or"))
        lrow.addWidget(self.minutes, 1)
        form.addRow("Iterations", lrow)
        self.lr = QLineEdit(f"{defaults.learning_rate:g}")
        form.addRow("Learning rate", self.lr)
        self.augment = QCheckBox("augment (settings in '2 Preview augmentation')")
        self.augment.setChecked(True)
        form.addRow(self.augment)
        self.aug_summary = QLabel("")
        self.aug_summary.setWordWrap(True)
        form.addRow(self.aug_summary)
        self.val_edit = QLineEdit()
        self.val_edit.setPlaceholderText("optional, e.g. 20-22,25")
        self.val_edit.setToolTip("labelled slices held out for validation (0-based)")
        form.addRow("Validation slices", self.val_edit)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        form.addRow("Device", self.device)
        self.device_label = QLabel("…")
        self.device_label.setWordWrap(True)
        form.addRow("", self.device_label)
        drow, self.folder_edit, self.folder_btn = path_row(
            "next to the stack (else a temporary folder)"
        )
        form.addRow("Checkpoints", drow)
        self.preview_every = QDoubleSpinBox()
        self.preview_every.setRange(0.0, 3600.0)
        self.preview_every.setDecimals(1)
        self.preview_every.setValue(5.0)
        self.preview_every.setSuffix(" s")
        self.preview_every.setSpecialValueText("off")
        form.addRow("Preview every", self.preview_every)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed)
        self.threads = QSpinBox()
        self.threads.setRange(0, max(os.cpu_count() or 1, 1))
        self.threads.setSpecialValueText("all")
        self.threads.setValue(max((os.cpu_count() or 1) - 1, 1))
        self.threads.setToolTip(
            "CPU threads for training on the CPU; the default leaves one core to napari "
            "so the viewer stays responsive"
        )
        form.addRow("CPU threads", self.threads)

        # -- run ----------------------------------------------------------------------------
        self.start_btn, self.stop_btn, self.progress = self.add_run_row("Start training", "Stop")
        self.run_label = QLabel("")
        self.run_label.setWordWrap(True)
        self.layout().addWidget(self.run_label)
        self.plot = CurvePlot()
        self.layout().addWidget(self.plot)
        self.finish_layout()
        self._settings_widgets = [
            self.model_combo, self.ckpt_edit, self.ckpt_btn, self.loss_combo, self.patch,
            self.batch, self.iterations, self.minutes, self.lr, self.augment, self.val_edit,
            self.device, self.folder_edit, self.folder_btn, self.preview_every, self.seed,
            self.threads,
        ]  # fmt: skip

        # -- wiring -------------------------------------------------------------------------
        self._ui_timer = QTimer(self)
        self._ui_timer.setInterval(250)
        self._ui_timer.timeout.connect(self._refresh_ui)
        self._dims_throttle = Throttle(self._send_preview_slice, 200, self)
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(self.stop)
        self.ckpt_btn.clicked.connect(self._choose_checkpoint)
        self.folder_btn.clicked.connect(self._choose_folder)
        self.device.currentTextChanged.connect(self._describe_device)
        self.model_combo.currentTextChanged.connect(self._on_model_choice)
        self.state.augmentation_changed.connect(self._update_aug_summary)
        self.state.model_changed.connect(self._on_model_changed)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self._update_aug_summary()
        self._on_model_choice(self.model_combo.currentText())
        if self.state.model is not None:
            self._on_model_changed()
        self.start_job("warmup", Job(warm_torch))
        self._describe_device(self.device.currentText())

    # ================================================================== settings helpers
    def set_model_choice(self, key: str) -> None:
        """``key``: "small", "paper", "memory" or "checkpoint"."""
        for text, k in MODEL_CHOICES.items():
            if k == key:
                self.model_combo.setCurrentText(text)
                return
        raise ValueError(f"unknown model choice {key!r}")

    def model_choice(self) -> str:
        return MODEL_CHOICES[self.model_combo.currentText()]

    def set_loss(self, key: str) -> None:
        for text, k in LOSS_CHOICES.items():
            if k == key:
                self.loss_combo.setCurrentText(text)
                return
        raise ValueError(f"unknown loss {key!r}")

    def _on_model_choice(self, text: str) -> None:
        is_ckpt = MODEL_CHOICES.get(text) == "checkpoint"
        self.ckpt_edit.setEnabled(is_ckpt and not self.busy())
        self.ckpt_btn.setEnabled(is_ckpt and not self.busy())

    def _on_model_changed(self) -> None:
        if self.state.model is not None and not self.busy():
            self.set_model_choice("memory")

    def _update_aug_summary(self) -> None:
        aug = self.state.augmentation
        parts = []
        if aug.elastic and aug.elastic_sigma > 0 and aug.elastic_p > 0:
            parts.append(f"elastic {aug.elastic_grid}x{aug.elastic_grid} σ={aug.elastic_sigma:g}")
        if aug.flip:
            parts.append("flips")
        if aug.rot90:
            parts.append("rot90")
        if aug.rotate_degrees:
            parts.append(f"rotate ±{aug.rotate_degrees:g}°")
        for name in ("gaussian_noise", "brightness", "contrast", "gamma"):
            v = getattr(aug, name)
            if v:
                parts.append(f"{name.replace('_', ' ')} {v:g}")
        self.aug_summary.setText("  " + (", ".join(parts) if parts else "none"))

    def _describe_device(self, choice: str) -> None:
        self.device_label.setText("checking…")
        job = Job(_describe_job, choice, on_yield=self._on_device_described)
        self.start_job("device", job)

    def _on_device_described(self, item: tuple[str, str]) -> None:
        choice, text = item
        if choice == self.device.currentText():
            self.device_label.setText(text)

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint to fine-tune", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.ckpt_edit.setText(path)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for checkpoints")
        if folder:
            self.folder_edit.setText(folder)

    def checkpoint_folder(self) -> Path:
        text = self.folder_edit.text().strip()
        if text:
            return Path(text).expanduser()
        image = self.state.image_layer
        src = image_source_path(image) if image is not None else None
        if src is not None and os.access(src.parent, os.W_OK):
            return src.parent / "napari-unet-models"
        return Path(tempfile.gettempdir()) / "napari-unet-models"

    def _set_running(self, running: bool) -> None:
        for w in self._settings_widgets:
            w.setEnabled(not running)
        if not running:
            self._on_model_choice(self.model_combo.currentText())
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)

    # ================================================================== start / stop
    def build_config(self) -> Any:
        """A :class:`TrainConfig` from the form (raises ValueError with a message)."""
        from ..training import TrainConfig

        image = self.state.image_layer
        try:
            lr = float(self.lr.text())
        except ValueError:
            raise ValueError(
                f"learning rate {self.lr.text()!r} is not a number (e.g. 1e-3)"
            ) from None
        iterations = int(self.iterations.value()) or None
        minutes = float(self.minutes.value()) or None
        if iterations is None and minutes is None:
            raise ValueError("set a number of iterations or minutes: training needs a limit")
        val = parse_slice_ranges(self.val_edit.text(), n_slices(image)) if image is not None else []
        choice = self.model_choice()
        names = list(self.state.class_names)
        ws = self.state.weight_settings
        folder = self.checkpoint_folder()
        stem = sanitize_name(image.name) if image is not None else "unet"
        ckpt = folder / f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}.pt"
        aug = self.state.augmentation if self.augment.isChecked() else Augmentation.none()
        obj = ws.get("object_class")
        cfg = TrainConfig(
            model=choice if choice in ("small", "paper") else "small",
            loss=LOSS_CHOICES[self.loss_combo.currentText()],
            patch_size=int(self.patch.value()) or None,
            batch_size=int(self.batch.value()),
            iterations=iterations,
            max_minutes=minutes,
            learning_rate=lr,
            augmentation=aug,
            w0=float(ws["w0"]),
            sigma=float(ws["sigma"]),
            class_weights=ws.get("class_weights"),
            object_class=int(obj) if obj is not None and int(obj) < len(names) else None,
            n_classes=max(len(names), 2) if choice in ("small", "paper") else None,
            class_names=names if choice in ("small", "paper") and len(names) >= 2 else None,
            class_colors=list(self.state.class_colors)
            if choice in ("small", "paper") and len(names) >= 2
            else None,
            val_slices=val or None,
            val_every=max(10, min(100, (iterations or 1000) // 10)),
            preview_every_s=float(self.preview_every.value()),
            checkpoint_path=str(ckpt),
            device=self.device.currentText(),
            seed=int(self.seed.value()),
            num_threads=int(self.threads.value()) or None,
        )
        return cfg.validate()

    def start(self) -> Job | None:
        """Validate the inputs and start training in a worker; return the job (or None)."""
        if self.busy():
            self.warning("training is already running: press Stop first")
            return None
        image = self.state.image_layer
        labels = self.state.labels_layer
        if image is None:
            self.error("no image layer: open a stack (File > Open) and pick it in '1 Annotate'")
            return None
        if labels is None:
            self.error("no training labels layer: create one in '1 Annotate' and paint some slices")
            return None
        if tuple(labels.data.shape) != tuple(image.data.shape):
            self.error(
                f"labels layer shape {tuple(labels.data.shape)} does not match image "
                f"{tuple(image.data.shape)}: create labels for this image in '1 Annotate'"
            )
            return None
        if getattr(image, "rgb", False):
            self.error(f"image {image.name!r} is RGB: napari-unet needs a grayscale stack")
            return None
        if len(self.state.class_names) < 2:
            self.error("at least 2 classes are needed to train: add a class in '1 Annotate'")
            return None
        choice = self.model_choice()
        model = metadata = None
        ckpt_file = None
        if choice == "memory":
            if self.state.model is None:
                self.error(
                    "no model in memory: train a new model first or fine-tune a checkpoint file"
                )
                return None
            model, metadata = self.state.model, self.state.metadata
        elif choice == "checkpoint":
            ckpt_file = self.ckpt_edit.text().strip()
            if not ckpt_file:
                self.error("choose the checkpoint file to fine-tune (the '…' button)")
                return None
        try:
            config = self.build_config()
        except (ValueError, TypeError) as exc:
            self.error(f"training settings: {exc}")
            return None
        folder = Path(config.checkpoint_path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.error(friendly_error(exc, f"cannot create the checkpoint folder {folder}"))
            return None
        if not os.access(folder, os.W_OK):
            self.error(f"checkpoint folder {folder} is not writable: choose another folder")
            return None

        self.last_reason = None
        self._control = TrainControl(preview_z=current_z(self.viewer, image))
        self._reset_run_display(config)
        job = Job(
            _train_job,
            image.data,
            labels.data,  # live: painting continues during training
            config,
            choice,
            model,
            metadata,
            ckpt_file,
            list(self.state.class_names),
            list(self.state.class_colors),
            self._control,
            on_yield=self._on_event,
            on_error=self._on_error,
            on_finished=self._on_finished,
            cancel=self._control.stop,
            quit_on_cancel=False,
        )
        self._connect_labels(labels)
        self._set_running(True)
        if config.preview_every_s > 0:
            # napari's cost of adding a layer lands on the button press, not mid-run
            shape = tuple(image.data.shape[-2:])
            self._put_preview(np.zeros(shape, np.uint8), current_z(self.viewer, image))
        self.t_start = time.perf_counter()
        self.t_first_preview = None
        self.info("preparing training (scanning labels, normalisation)…", notify=False)
        return self.start_job("main", job)

    def stop(self) -> None:
        """Ask training to stop after the current iteration (a checkpoint is saved)."""
        job = self.job("main")
        if job is not None and job.running:
            job.cancel()
            self.stop_btn.setEnabled(False)
            self.info("stopping after this iteration…", notify=False)

    def _reset_run_display(self, config: Any) -> None:
        from napari.utils import progress

        self._latest = {}
        self.labels_changed_slices = []
        self.iterations_seen = 0
        self.plot.clear()
        self.plot.x_max = config.iterations
        total = config.iterations or 0
        self.progress.setRange(0, total if total else 0)
        self.progress.setValue(0)
        if self._pbar is not None:
            self._pbar.close()
        self._pbar = progress(total=total, desc="U-Net training")
        self._ui_timer.start()

    # ================================================================== events (GUI thread)
    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, TrainerReady):
            self.last_ready = ev
            src = {
                "memory": "fine-tuning the model in memory",
                "checkpoint": "fine-tuning the checkpoint",
            }
            what = src.get(ev.source, f"training a new {ev.source} U-Net")
            if ev.iterations_before:
                what += f" ({ev.iterations_before} iterations so far)"
            self.info(what, notify=False)
            return
        if isinstance(ev, TrainResult):
            self._on_result(ev)
            return
        kind = getattr(ev, "kind", "")
        if kind == "iteration":
            self.iterations_seen = ev.iteration
            self._latest = {
                **self._latest,
                "it": ev.iteration,
                "total": ev.total,
                "loss": ev.loss,
                "sps": ev.samples_per_s,
                "elapsed": ev.elapsed_s,
                "lr": ev.lr,
            }
            self.plot.add_loss(ev.iteration, ev.loss)
        elif kind == "started":
            self.run_label.setText(
                f"{ev.device_description} · {ev.n_parameters / 1e6:.2f} M parameters · "
                f"{len(ev.labelled_slices)} labelled slice(s), {ev.n_labelled_pixels:,} px · "
                f"patch {ev.patch_size} · batch {ev.batch_size} · {ev.precision}"
            )
            self.device_label.setText(ev.device_description)
        elif kind == "validation":
            m = ev.metrics
            value = m.get("mean_iou", float("nan"))
            self.plot.metric_name = "val mean IoU"
            self.plot.add_metric(ev.iteration, value)
            self._latest["val"] = (value, m.get("pixel_error", float("nan")))
        elif kind == "preview":
            self._show_preview(ev)
        elif kind == "checkpoint":
            self.last_checkpoint = ev.path
            if ev.path not in self.checkpoints:
                self.checkpoints.append(ev.path)
        elif kind == "labels_changed":
            self.labels_changed_slices.extend(ev.slices)
            self._latest["picked"] = sorted(set(ev.slices))
        elif kind == "warning":
            self.warning(f"training: {ev.message}")
        elif kind == "finished":
            self.last_reason = ev.reason
            if ev.checkpoint_path:
                self.last_checkpoint = ev.checkpoint_path

    def _refresh_ui(self) -> None:
        d = self._latest
        if not d:
            return
        it, total = d["it"], d["total"]
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(it, total))
        if self._pbar is not None:
            delta = it - self._pbar.n
            if delta > 0:
                self._pbar.update(delta)
        text = f"iteration {it}" + (f"/{total}" if total else "") + f" · loss {d['loss']:.4f}"
        text += f" · {d['sps']:.1f} samples/s · {d['elapsed']:.0f} s"
        if total and it and d["elapsed"] > 0:
            eta = d["elapsed"] / it * (total - it)
            text += f" · ETA {eta:.0f} s"
        if "val" in d:
            text += f" · val mean IoU {d['val'][0]:.3f}"
        if d.get("picked"):
            text += f" · picked up new labels on slice(s) {', '.join(map(str, d['picked']))}"
        self.status.setText(text)
        self.status.setStyleSheet("")

    def _put_preview(self, labels2d: np.ndarray, z: int) -> Labels | None:
        """Show ``labels2d`` as the preview layer at slice ``z`` (created once, then updated)."""
        image = self.state.image_layer
        if image is None:
            return None
        data = labels2d[None] if image.ndim >= 3 else labels2d
        scale = tuple(float(s) for s in image.scale)
        trans = np.asarray(image.translate, dtype=float).copy()
        if image.ndim >= 3:
            trans[-3] += z * scale[-3]
        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers and layer.data.shape == data.shape:
            layer.data = data
            layer.translate = tuple(trans)
            return layer
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_labels(
            data,
            name=f"{image.name}{PREVIEW_SUFFIX}",
            scale=scale,
            translate=tuple(trans),
            opacity=0.45,
            colormap=label_colormap(self.state.class_colors),
            metadata={
                "napari_unet": {
                    "generated": True,
                    "training_preview": True,
                    "class_names": list(self.state.class_names),
                }
            },
        )
        self.preview_layer = layer
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active  # keep painting the labels
        return layer

    def _show_preview(self, ev: Any) -> None:
        if self._put_preview(ev.labels, int(ev.slice_index)) is None:
            return
        self.preview_count += 1
        if self.t_first_preview is None and self.t_start is not None:
            self.t_first_preview = time.perf_counter() - self.t_start
        self.preview_updated.emit(int(ev.slice_index))

    def _on_result(self, res: TrainResult) -> None:
        self.state.set_model(res.model, res.metadata, res.checkpoint_path)
        self.last_reason = res.reason
        if res.checkpoint_path:
            self.last_checkpoint = res.checkpoint_path

    def _on_error(self, exc: BaseException) -> None:
        self.last_reason = "error"
        self.error(friendly_error(exc, "training failed"))

    def _on_finished(self) -> None:
        self._ui_timer.stop()
        self._refresh_ui()
        self._disconnect_labels()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._control = None
        self._set_running(False)
        reason = self.last_reason or "error"
        if reason != "error":
            where = f"; checkpoint: {self.last_checkpoint}" if self.last_checkpoint else ""
            verb = {"stopped": "stopped", "time_limit": "reached the time limit"}.get(
                reason, "finished"
            )
            self.info(f"training {verb} after {self.iterations_seen} iterations{where}")
            if self.state.model is not None:
                self.set_model_choice("memory")
        self.last_reason = reason
        self.training_finished.emit(reason)

    # ================================================================== live links
    def _on_dims(self, event: Any = None) -> None:
        if self._control is not None:
            self._dims_throttle.trigger()

    def _send_preview_slice(self) -> None:
        image = self.state.image_layer
        if self._control is not None and image is not None:
            self._control.set_preview_slice(current_z(self.viewer, image))

    def _connect_labels(self, labels: Labels) -> None:
        self._disconnect_labels()
        labels.events.paint.connect(self._on_paint)
        self._labels_connected = labels

    def _disconnect_labels(self) -> None:
        lab = self._labels_connected
        if lab is not None:
            try:
                lab.events.paint.disconnect(self._on_paint)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._labels_connected = None

    def _on_paint(self, event: Any) -> None:
        lab = self._labels_connected
        if self._control is None or lab is None:
            return
        zs: set[int] = set()
        for atom in event.value or ():
            zs |= atom_slices(atom, lab.ndim)
        self._control.notify_labels_changed(sorted(zs) or None)

    def before_shutdown(self) -> None:
        self._ui_timer.stop()
        self._disconnect_labels()
        if self._pbar is not None:
            try:
                self._pbar.close()
            except Exception:  # pragma: no cover - napari may be tearing down
                pass
            self._pbar = None
