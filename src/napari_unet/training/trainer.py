"""The Trainer: trains (or fine-tunes) a U-Net on the labelled slices of a stack.

:meth:`Trainer.run` is a generator of :mod:`~napari_unet.training.events` a GUI worker can forward.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError
from ..checks import is_int
from ..devices import describe_device
from ..losses import uses_pixel_weights
from ..model import UNet
from . import events as ev
from .config import TrainConfig, unknown_fields
from .inputs import (
    build_model,
    check_arrays,
    check_classes,
    class_names_and_colors,
    held_out_slices,
    nonfinite_check,
    normalization_stats,
    single_class_warning,
    training_labels,
)
from .live_labels import LiveLabels
from .sampler import BatchSpec, resolve_patch_size, sample_batch, shrink_after_oom
from .schedule import RunClock, learning_rate, validation_interval
from .step import DeviceStep
from .validation import Previews, predict_slice, validation_event

__all__ = ["Trainer", "train"]


class Trainer:
    """Train (or fine-tune) a U-Net on the labelled slices of a stack.

    Only the labelled slices of the image are read (plus a strided subsample for
    the normalisation statistics); the labels are read live (see
    :class:`~napari_unet.training.live_labels.LiveLabels`), so they may be painted
    while :meth:`run` iterates.  Patches are sampled on the CPU, augmented on
    the training device and trained with :func:`napari_unet.losses.combined_loss`
    and the border weight map of the U-Net paper.

    Parameters
    ----------
    image : array_like
        ``(Z, H, W)`` or ``(H, W)`` numpy array, memmap, dask or zarr array.
    labels : array_like
        Integer array of the image's shape; ``0`` = unlabelled, ``1..K`` classes.
    config : TrainConfig, optional
    model : UNet, optional
        A network to fine-tune from its current weights; default: a new
        ``UNet.preset(config.model)``.
    metadata : dict, optional
        Metadata of the checkpoint ``model`` comes from
        (:func:`napari_unet.checkpoint.load_checkpoint`): its normalisation,
        class names/colours, label mapping and history are continued.

    Raises
    ------
    ValueError
        Bad shapes, no labelled pixels, labels outside the model's classes or a
        bad config value.
    TypeError
        Non-integer labels or a wrong argument type.

    Examples
    --------
    >>> trainer = Trainer(image, labels, TrainConfig(iterations=200))  # doctest: +SKIP
    >>> for event in trainer.run():  # doctest: +SKIP
    ...     if isinstance(event, Iteration):
    ...         print(event.iteration, event.loss)
    >>> trainer.save("model.pt")  # doctest: +SKIP
    """

    def __init__(
        self,
        image: Any,
        labels: Any,
        config: TrainConfig | None = None,
        model: UNet | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = cfg = _checked_config(config)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self._meta_in: dict[str, Any] = dict(metadata or {})
        shape = check_arrays(image, labels)
        self.image, self.labels = image, labels
        self.n_slices = shape[0] if len(shape) == 3 else 1
        self.slice_shape: tuple[int, int] = (shape[-2], shape[-1])
        self._val_slices = held_out_slices(cfg.val_slices, self.n_slices)
        raw = training_labels(labels, self.n_slices, self._val_slices)
        self.model: UNet = build_model(cfg, model, max(int(r.max()) for r in raw.values()))
        self.n_classes = self.model.n_classes
        self.object_class = check_classes(cfg, self.n_classes)
        self.class_names, self.class_colors = class_names_and_colors(
            cfg, self.n_classes, self._meta_in
        )
        self._device_step = DeviceStep(self.model, cfg)
        self.device = self._device_step.device
        #: recorded (the model's frame) and intensity range; applied to this image
        self.normalization, self.intensity, self._input_norm, note = normalization_stats(
            image, self._meta_in
        )
        self._augmentation = cfg.augmentation
        self.patch_size = resolve_patch_size(
            self.model,
            cfg.patch_size,
            self.slice_shape,
            cuda=self._device_step.on_cuda,
            crop=self._augmentation.crop_size,
        )
        self.batch_size = cfg.batch_size
        self._stop_event = threading.Event()
        self._live = LiveLabels(
            image,
            labels,
            n_classes=self.n_classes,
            object_class=self.object_class,
            config=cfg,
            excluded=self._val_slices,
            fill=self._input_norm["mean"],
        )
        self._live.load(raw)
        self._start_warnings = [
            w
            for w in (
                note,
                nonfinite_check(self._live),
                single_class_warning(raw, self.class_names),
            )
            if w
        ]
        self._previews = Previews(self.slice_shape, min(raw))
        self._val_every = validation_interval(cfg.val_every, cfg.iterations)
        self.history: list[dict[str, Any]] = list(self._meta_in.get("history") or [])
        self.validation_history: list[dict[str, Any]] = list(
            self._meta_in.get("validation_history") or []
        )
        self._iterations_before = int(self._meta_in.get("iterations") or 0)
        self.iterations_done = 0
        self._running = False
        self._last_checkpoint: str | None = None

    # ------------------------------------------------------------------ public API
    @property
    def input_size(self) -> int:
        """Side of the network's input (the augmentation's crop, else the patch)."""
        crop = self._augmentation.crop_size
        return int(crop) if crop is not None else self.patch_size

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current iteration (thread-safe)."""
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop_event.is_set()

    def weight_map(self, z: int) -> np.ndarray:
        """The per-pixel weight the weighted cross-entropy gives training slice ``z``.

        Class weights (over the labelled pixels of all training slices) plus
        the border term of the paper, 0 where the slice is unlabelled; what the
        weight-map preview shows (:func:`napari_unet.weightmap.loss_weight_map`).
        """
        return self._live.weight_map(z)

    @property
    def _class_lut(self) -> np.ndarray:
        """Class weights ``lut[k]`` of labels ``0..K`` over the current training slices."""
        return self._live.class_lut

    def set_preview_slice(self, z: int) -> None:
        """Choose the slice of the :class:`Preview` events (thread-safe)."""
        if not is_int(z) or not 0 <= int(z) < self.n_slices:
            raise ValueError(f"preview slice must be in 0..{self.n_slices - 1}, got {z!r}")
        self._previews.set_slice(int(z))

    def set_preview_region(self, region: Sequence[int] | None) -> None:
        """Preview only ``region`` ``(y0, y1, x0, x1)`` of the slice (thread-safe; None: all): the
        labels keep the slice's shape, 0 outside, without probabilities (see last_preview_region)."""
        self._previews.set_region(region)

    @property
    def last_preview_region(self) -> tuple[int, int, int, int] | None:
        return self._previews.last_region

    def notify_labels_changed(self, slices: Sequence[int] | None = None) -> None:
        """Tell the trainer which slices were painted (thread-safe); ``None`` = rescan all.

        The trainer also notices changes by itself (every
        :attr:`TrainConfig.labels_rescan_s` seconds); this makes it immediate
        and avoids scanning a large volume.
        """
        self._live.notify(slices)

    @property
    def labelled_slices(self) -> list[int]:
        """The training slices currently known to have labels."""
        return self._live.labelled_slices

    @property
    def n_labelled_pixels(self) -> int:
        return self._live.n_labelled_pixels

    @property
    def metadata(self) -> dict[str, Any]:
        """Checkpoint metadata for :func:`napari_unet.checkpoint.save_checkpoint`."""
        meta: dict[str, Any] = {
            "class_names": list(self.class_names),
            "class_colors": list(self.class_colors),
            "normalization": dict(self.normalization),
            "history": list(self.history),
            "iterations": self._iterations_before + self.iterations_done,
            "augmentation": self.config.augmentation.to_dict(),
            "train_config": self.config.to_dict(),
            "patch_size": self.patch_size,
        }
        if self.validation_history:
            meta["validation_history"] = list(self.validation_history)
        if self.intensity is not None:
            meta["intensity"] = dict(self.intensity)
        if "label_mapping" in self._meta_in:
            meta["label_mapping"] = self._meta_in["label_mapping"]
        from ..objects import objects_metadata

        meta["objects"] = objects_metadata(self.class_names, self._meta_in.get("objects"))
        return meta

    def save(self, path: str | Path) -> Path:
        """Save the model and :attr:`metadata` with :func:`napari_unet.checkpoint.save_checkpoint`."""
        from ..checkpoint import save_checkpoint

        return Path(save_checkpoint(path, self.model, **self.metadata))

    # ------------------------------------------------------------------ prediction
    def _predict_slice(
        self, z: int, probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predict one slice: (class map 1..K, float16 probabilities (K, H, W) or None)."""
        image = self._live.image_slice(z)
        return predict_slice(self.model, image, probabilities=probabilities, **self._predicting)

    @property
    def _predicting(self) -> dict[str, Any]:
        return {"device": self.device, "amp": self.config.amp, "normalization": self._input_norm}

    # ------------------------------------------------------------------ training step
    def _step(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> tuple[float, bool]:
        """One optimiser step on a freshly sampled, augmented batch: the loss, whether applied."""
        live = self._live
        spec = BatchSpec(
            batch=self.batch_size,
            patch=self.patch_size,
            out_size=int(self.model.output_size(self.input_size)),
            normalization=self._input_norm,
            class_lut=live.class_lut if uses_pixel_weights(self.config.loss) else None,
            oversampling=self.config.label_oversampling,
        )
        batch = sample_batch([live.slices[z] for z in sorted(live.slices)], rng, spec)
        return self._device_step(optimizer, scaler, batch, self._augmentation, generator)

    def _shrink_after_oom(self) -> str:
        """Halve the batch, then the patch; return the warning text or raise."""
        shrinks_patch = self.batch_size == 1
        self.batch_size, self.patch_size, message = shrink_after_oom(
            self.model, self.batch_size, self.patch_size, self.input_size
        )
        if shrinks_patch and self._augmentation.crop_size is not None:
            self._augmentation = dataclasses.replace(self._augmentation, crop_size=None)
        return message

    # ------------------------------------------------------------------ run
    def run(self) -> Iterator[ev.TrainingEvent]:
        """Train; yield :class:`TrainingEvent` objects until finished or stopped.

        Yields
        ------
        TrainingEvent
            :class:`TrainingStarted` first, :class:`Finished` last; in between
            :class:`Iteration` after every step and occasionally
            :class:`Validation`, :class:`Preview`, :class:`CheckpointSaved`,
            :class:`LabelsChanged`, :class:`TrainingWarning` and, after
            too many NaN/inf steps in a row (each skipped), :class:`Diverged`.

        Raises
        ------
        RuntimeError
            If ``run`` is already iterating, or CUDA runs out of memory even
            with batch 1 and the smallest patch.
        """
        if self._running:
            raise RuntimeError("this Trainer is already running: stop() it first")
        self._running = True
        old_threads = torch.get_num_threads()
        old_benchmark = torch.backends.cudnn.benchmark
        if self._device_step.on_cuda:
            torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick kernels
        try:
            yield from self._run()
        finally:
            self._running = False
            self._stop_event.clear()  # a later run() starts afresh
            self.model.eval()
            torch.backends.cudnn.benchmark = old_benchmark
            if self.config.num_threads is not None:
                torch.set_num_threads(old_threads)

    def _run(self) -> Iterator[ev.TrainingEvent]:
        cfg = self.config
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        rng = np.random.default_rng(cfg.seed)
        # augmentation parameters are drawn on the CPU: the same seed gives the same
        # augmentations on every device
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed + 1)  # dropout
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scaler = self._device_step.grad_scaler()
        yield self._started_event()
        for message in self._start_warnings:
            yield ev.TrainingWarning(message)
        run = RunClock.start(cfg)
        while True:
            now = time.perf_counter()
            reason = run.stop_reason(cfg, self._stop_event.is_set(), now)
            if reason is not None:
                break
            if now >= run.next_rescan or self._live.notified:
                yield from self._rescan_events(run)
            lr = learning_rate(cfg, run.iteration, now - run.t_start)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            oom, result = self._device_step.out_of_memory(
                self._step, optimizer, scaler, rng, generator, optimizer=optimizer
            )
            if oom:
                yield ev.TrainingWarning(self._shrink_after_oom())
                continue
            loss, applied = result
            yield from self._step_events(run, loss, lr, time.perf_counter() - t0)
            warning, failure = run.count_skipped(applied, lr)
            if warning is not None:
                yield ev.TrainingWarning(warning)
            if failure is not None:
                yield ev.Diverged(iteration=run.iteration, skipped=run.bad_steps, message=failure)
                reason = "diverged"
                break
            yield from self._periodic_events(run)
        if cfg.checkpoint_path is not None:
            yield from self._checkpoint_events(run.iteration)
        self.model.eval()
        yield ev.Finished(
            reason=reason,
            iterations=run.iteration,
            checkpoint_path=self._last_checkpoint,
            final_loss=run.last_loss,
        )

    def _started_event(self) -> ev.TrainingStarted:
        return ev.TrainingStarted(
            device=str(self.device),
            device_description=describe_device(self.device),
            n_parameters=int(sum(p.numel() for p in self.model.parameters())),
            labelled_slices=self.labelled_slices,
            n_labelled_pixels=self.n_labelled_pixels,
            patch_size=self.input_size,
            batch_size=self.batch_size,
            iterations=self.config.iterations,
            precision=str(self._device_step.amp or torch.float32).removeprefix("torch."),
        )

    def _rescan_events(self, run: RunClock) -> Iterator[ev.TrainingEvent]:
        changed, warnings = self._live.rescan()
        for message in warnings:
            yield ev.TrainingWarning(message)
        if changed:
            self._previews.labels_changed(changed)
            yield ev.LabelsChanged(changed)
        run.next_rescan = time.perf_counter() + self.config.labels_rescan_s

    def _step_events(
        self, run: RunClock, loss: float, lr: float, step_s: float
    ) -> Iterator[ev.TrainingEvent]:
        """Count a finished step, record its loss and report it."""
        run.count_step(step_s, self.batch_size)
        self.iterations_done += 1
        if math.isfinite(loss):
            run.last_loss = loss
        self.history.append(
            {"iteration": self._iterations_before + self.iterations_done, "loss": loss}
        )
        yield ev.Iteration(
            iteration=run.iteration,
            total=self.config.iterations,
            loss=loss,
            lr=lr,
            samples_per_s=run.samples_per_s,
            elapsed_s=time.perf_counter() - run.t_start,
        )

    def _periodic_events(self, run: RunClock) -> Iterator[ev.TrainingEvent]:
        """Validation, preview and checkpoint, each when it is due."""
        cfg = self.config
        it = run.iteration
        if self._val_slices and it % self._val_every == 0:
            yield from self._validation_events(it)
        now = time.perf_counter()
        if run.preview_due(now, self._previews.changed) and not self._stop_event.is_set():
            shown = yield from self._preview_events(it)
            end = time.perf_counter()
            run.preview_done(end, end - now if shown else None)
        if cfg.checkpoint_path is not None and time.perf_counter() >= run.next_checkpoint:
            yield from self._checkpoint_events(it)
            run.next_checkpoint = time.perf_counter() + cfg.checkpoint_every_s

    def _validation_events(self, it: int) -> Iterator[ev.TrainingEvent]:
        predict, guard = self._predict_slice, self._device_step.out_of_memory
        event = validation_event(
            it, guard, predict, self.labels, self._val_slices, self.class_names
        )
        if isinstance(event, ev.Validation):
            done = self._iterations_before + self.iterations_done
            self.validation_history.append({"iteration": done, **event.metrics})
        yield event

    def _preview_events(self, it: int) -> Iterator[ev.TrainingEvent]:
        image, guard = self._live.image_slice, self._device_step.out_of_memory
        return (yield from self._previews.events(it, self.model, image, guard, **self._predicting))

    def _checkpoint_events(self, it: int) -> Iterator[ev.TrainingEvent]:
        path = self.config.checkpoint_path
        if path is None:  # pragma: no cover - guarded by the caller
            return
        try:
            saved = self.save(path)
        except (OSError, RuntimeError, CheckpointError) as exc:
            yield ev.TrainingWarning(f"checkpoint not saved: {exc}")
            return
        self._last_checkpoint = str(saved)
        yield ev.CheckpointSaved(path=str(saved), iteration=it)


def _checked_config(config: TrainConfig | None) -> TrainConfig:
    if config is None:
        config = TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return config.validate()


def train(
    image: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    model: UNet | None = None,
    metadata: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[ev.TrainingEvent]:
    """Generator wrapper around :class:`Trainer`: ``for event in train(img, lab): ...``.

    Parameters
    ----------
    image, labels, model, metadata
        See :class:`Trainer`.
    config : TrainConfig, optional
    **overrides
        :class:`TrainConfig` fields replacing those of ``config``
        (e.g. ``iterations=100``).

    Yields
    ------
    TrainingEvent
    """
    config = config if config is not None else TrainConfig()
    if overrides:
        unknown = unknown_fields(overrides)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        config = dataclasses.replace(config, **overrides)
    trainer = Trainer(image, labels, config, model=model, metadata=metadata)
    yield from trainer.run()
