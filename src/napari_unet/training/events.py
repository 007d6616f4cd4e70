"""The typed events :meth:`Trainer.run` yields, for a GUI worker or a command-line loop.

Dispatch on the class (``isinstance``); ``kind`` names each class for logs and messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

__all__ = [
    "CheckpointSaved",
    "Diverged",
    "Finished",
    "Iteration",
    "LabelsChanged",
    "Preview",
    "TrainingEvent",
    "TrainingStarted",
    "TrainingWarning",
    "Validation",
]


@dataclass(frozen=True)
class TrainingEvent:
    """Base class of the events yielded by :meth:`Trainer.run`."""

    kind: ClassVar[str] = "event"


@dataclass(frozen=True)
class TrainingStarted(TrainingEvent):
    """First event of a run: what is being trained, where, on what."""

    kind: ClassVar[str] = "started"
    device: str
    device_description: str
    n_parameters: int
    labelled_slices: list[int]
    n_labelled_pixels: int
    patch_size: int
    batch_size: int
    iterations: int | None
    #: "float32", or the autocast dtype of mixed precision ("bfloat16", "float16")
    precision: str = "float32"


@dataclass(frozen=True)
class Iteration(TrainingEvent):
    """One optimiser step.  ``iteration`` counts from 1 within this run."""

    kind: ClassVar[str] = "iteration"
    iteration: int
    total: int | None
    loss: float
    lr: float
    samples_per_s: float
    elapsed_s: float


@dataclass(frozen=True)
class Validation(TrainingEvent):
    """Metrics on the labelled pixels of the validation slices.

    ``metrics`` holds ``pixel_error``, ``iou_<class name>`` for every class,
    ``mean_iou`` and ``n_pixels`` (floats).
    """

    kind: ClassVar[str] = "validation"
    iteration: int
    metrics: dict[str, float]


@dataclass(frozen=True, eq=False)
class Preview(TrainingEvent):
    """Prediction of the preview slice with the current weights.

    ``labels`` is a ``uint8`` ``(H, W)`` class map (``1..K``); ``probabilities``
    a ``float16`` ``(K, H, W)`` array (or ``None``).
    """

    kind: ClassVar[str] = "preview"
    iteration: int
    slice_index: int
    labels: np.ndarray
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class CheckpointSaved(TrainingEvent):
    """A checkpoint was written (``iteration`` counts within this run)."""

    kind: ClassVar[str] = "checkpoint"
    path: str
    iteration: int


@dataclass(frozen=True)
class TrainingWarning(TrainingEvent):
    """Something the user should know that did not stop training (e.g. an OOM retry)."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class Diverged(TrainingEvent):
    """Training stopped: ``skipped`` steps in a row had a NaN/inf loss or gradient.

    Skipped steps change nothing, so the weights are the last finite ones;
    :class:`Finished` (reason ``"diverged"``) follows.
    """

    kind: ClassVar[str] = "diverged"
    iteration: int
    skipped: int
    message: str


@dataclass(frozen=True)
class LabelsChanged(TrainingEvent):
    """The live labels changed: these slices were (re)loaded or dropped."""

    kind: ClassVar[str] = "labels_changed"
    slices: list[int]


@dataclass(frozen=True)
class Finished(TrainingEvent):
    """Last event of a run.  ``reason``: "completed", "stopped", "time_limit" or "diverged"."""

    kind: ClassVar[str] = "finished"
    reason: str
    iterations: int
    checkpoint_path: str | None
    final_loss: float | None
