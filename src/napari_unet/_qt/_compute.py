"""Qt-free work run inside the docks' worker threads: training, device probes, label counts, weights.

:func:`train_job` yields the trainer's events; :class:`TrainControl` is the GUI's handle on it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..slices import read_slice
from ..weightmap import class_weight_lut


def slice_counts(
    labels: Any, n_classes: int, zs: Iterator[int] | None = None
) -> dict[int, np.ndarray]:
    """``{z: bincount}`` of labelled slices of a (Z, H, W) or (H, W) labels array."""
    n = int(labels.shape[0]) if labels.ndim >= 3 else 1
    out: dict[int, np.ndarray] = {}
    for z in zs if zs is not None else range(n):
        sl = read_slice(labels, z)
        if not sl.any():
            continue
        c = np.bincount(sl.ravel().astype(np.int64, copy=False), minlength=n_classes + 1)
        out[z] = c[: n_classes + 1] if len(c) > n_classes + 1 else c
    return out


def weight_inputs(config: Any, n_classes: int) -> dict[str, Any]:
    """The weight-map arguments the trainer derives from ``config`` for ``n_classes`` classes."""
    k = max(int(n_classes), 2)
    obj = config.object_class if config.object_class is not None else k
    return {"w0": config.w0, "sigma": config.sigma, "object_class": min(obj, k), "n_classes": k}


def class_lut(
    counts: Iterable[np.ndarray], class_weights: Any, inputs: dict[str, Any]
) -> np.ndarray:
    """The trainer's class-weight look-up table from per-slice class counts (summed)."""
    k = inputs["n_classes"]
    total = np.zeros(k + 1, np.int64)
    for c in counts:
        m = min(len(c), k + 1)
        total[:m] += np.asarray(c[:m], dtype=np.int64)
    return class_weight_lut(total, k, class_weights)


_WARM_LOCK = threading.Lock()
_WARM = False


def warm_torch() -> Iterator[str]:
    """Worker: a tiny forward + backward pass, so torch's one-off init is off the GUI thread."""
    global _WARM
    with _WARM_LOCK:
        if _WARM:
            yield "warm"
            return
        import torch

        from ..model import UNet

        net = UNet.preset("small", n_classes=2)
        x = torch.zeros((1, 1, 32, 32))
        net(x).sum().backward()
        with torch.inference_mode():
            net.eval()(x)
        _WARM = True
    yield "warm"


def is_warm() -> bool:
    return _WARM


def describe_device_job(choice: str) -> Iterator[tuple[str, str]]:
    """Worker: ``(choice, description)`` of the device ``choice`` resolves to."""
    from ..devices import describe_device, resolve_device

    try:
        dev = resolve_device(choice)
    except ValueError as exc:
        yield (choice, f"not available: {exc}")
        return
    yield (choice, describe_device(dev))


# ----------------------------------------------------------------------------- training


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
                _set_preview_slice(trainer, self._preview_z)
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
                _set_preview_slice(self._trainer, int(z))

    def notify_labels_changed(self, slices: list[int] | None) -> None:
        with self._lock:
            if self._trainer is not None:
                self._trainer.notify_labels_changed(slices)
            elif slices:
                self._pending_slices.update(slices)


def _set_preview_slice(trainer: Any, z: int) -> None:
    try:
        trainer.set_preview_slice(z)
    except ValueError:  # not a slice of the stack (yet): the trainer keeps its own choice
        pass


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


@dataclass
class ModelStart:
    """What training starts from: ``source`` is a preset name, "memory" or "checkpoint"."""

    source: str
    model: Any = None
    metadata: dict[str, Any] | None = None
    checkpoint_file: str | None = None


def _start_model(start: ModelStart) -> tuple[Any, dict[str, Any] | None]:
    if start.source == "checkpoint":
        from ..checkpoint import load_checkpoint

        return load_checkpoint(start.checkpoint_file)
    if start.source == "memory":  # Predict may be using the model in memory: train a copy
        return copy.deepcopy(start.model), copy.deepcopy(start.metadata or {})
    return None, None


def train_job(
    image: Any,
    labels: Any,
    config: Any,
    start: ModelStart,
    classes: tuple[list[str], list[str]],
    control: TrainControl,
) -> Iterator[Any]:
    """Worker: build the trainer (labels scan, normalisation) and yield its events, then the model."""
    from ..training import Finished, Trainer

    model, metadata = _start_model(start)
    names, colors = classes
    if model is not None and len(names) == int(model.n_classes):
        config = replace(config, class_names=list(names), class_colors=list(colors))
    if control.stop_requested:
        return
    trainer = Trainer(image, labels, config, model=model, metadata=metadata)
    control.attach(trainer)
    yield TrainerReady(
        source=start.source,
        iterations_before=int((metadata or {}).get("iterations") or 0),
        n_classes=trainer.n_classes,
        class_names=list(trainer.class_names),
        checkpoint_path=config.checkpoint_path,
    )
    reason, checkpoint = "completed", None
    for event in trainer.run():
        if isinstance(event, Finished):
            reason, checkpoint = event.reason, event.checkpoint_path
        yield event
    trainer.model.eval()
    yield TrainResult(trainer.model, trainer.metadata, checkpoint, reason)
