"""Training a U-Net on sparsely painted EM slices, as a generator of typed events.

The typical use is interactive: the user paints a few slices of a (possibly
huge) stack in napari and trains while still painting.  :class:`Trainer` reads
only what it needs:

* the **labels** array (``0`` = unlabelled, classes ``1..K``) is read *live*:
  every :attr:`TrainConfig.labels_rescan_s` seconds the labelled slices are
  re-checked (pixel count and a checksum) and a bounded number of the other
  slices are scanned round-robin, so newly painted slices and edits are picked
  up without ever re-reading a big volume in one go
  (:meth:`Trainer.notify_labels_changed` makes it immediate);
* the **image** is read one labelled slice at a time (``image[z]``, cached), so a
  20 GB memmap / dask / zarr volume with five labelled slices costs five slices
  of memory.

Patches are sampled on the CPU (a labelled slice chosen with probability
proportional to its number of labelled pixels; with probability
``label_oversampling`` the patch is placed around a random labelled pixel, so
thin scribbles train), moved to the training device and augmented there
(:class:`napari_unet.augment.Augmentation`).  The loss is
:func:`napari_unet.losses.combined_loss` with the border weight map of the
U-Net paper (:mod:`napari_unet.weightmap`).

:meth:`Trainer.run` is a generator of events (:class:`TrainingStarted`,
:class:`Iteration`, :class:`Validation`, :class:`Preview`,
:class:`CheckpointSaved`, :class:`TrainingWarning`, :class:`LabelsChanged`,
:class:`Finished`) that a GUI worker thread can forward to the main thread;
:meth:`Trainer.stop` and :meth:`Trainer.set_preview_slice` are thread-safe.

This module never imports Qt or napari.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .augment import Augmentation
from .devices import describe_device, resolve_device, training_amp_dtype
from .losses import LOSS_MODES, combined_loss
from .model import UNet
from .weightmap import border_term, class_weight_lut

__all__ = [
    "CheckpointSaved",
    "Finished",
    "Iteration",
    "LabelsChanged",
    "Preview",
    "TrainConfig",
    "Trainer",
    "TrainingEvent",
    "TrainingStarted",
    "TrainingWarning",
    "Validation",
    "compute_normalization",
    "train",
]

PRESETS: tuple[str, ...] = ("small", "paper")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")
#: default input patch size of a same-padded net ("small" preset) on a CPU (or MPS) ...
DEFAULT_SAME_PATCH_CPU = 128
#: ... and on a CUDA GPU
DEFAULT_SAME_PATCH_CUDA = 256
#: default *output* tile of a valid-padded net (the paper's 388 -> 572 input)
DEFAULT_VALID_OUTPUT = 388
#: the cosine schedule decays to this fraction of the learning rate
FINAL_LR_FRACTION = 0.05
#: pixels of not-yet-labelled slices checked per live re-scan
_SCAN_PIXEL_BUDGET = 64 * 2**20
#: the exception CUDA raises when it runs out of memory (torch >= 2.5 has the top-level name)
_OOM_ERRORS: tuple[type[BaseException], ...] = (
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
)
#: store the flat indices of labelled pixels when fewer than this fraction is labelled
_SPARSE_FRACTION = 0.25
DEFAULT_CLASS_COLORS: tuple[str, ...] = (
    "#ff3cc8",
    "#3cb4ff",
    "#ffd23c",
    "#3cff78",
    "#ff7a3c",
    "#a03cff",
    "#3cffe6",
    "#ff3c3c",
)


# --------------------------------------------------------------------------- normalisation


def _ndim_shape(image: Any) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in image.shape)
    except (AttributeError, TypeError) as exc:
        raise TypeError(
            f"image must be an array (numpy, memmap, dask or zarr), got {type(image).__name__}"
        ) from exc


def _read(array: Any, index: Any) -> np.ndarray:
    """``np.asarray(array[index])`` for numpy, memmap, dask and zarr arrays."""
    block = array[index]
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    return np.asarray(block)


def compute_normalization(
    image: Any, max_samples: int = 4_000_000, max_slices: int = 32
) -> dict[str, float]:
    """Mean and standard deviation of an image, from a strided subsample.

    At most ``max_slices`` evenly spaced slices are read, each with a pixel
    stride chosen so that about ``max_samples`` pixels are read in total; a
    memmap, dask or zarr volume of any size is never loaded whole.

    Parameters
    ----------
    image : array_like
        ``(Z, H, W)`` or ``(H, W)``: numpy, memmap, dask or zarr array.
    max_samples : int, default 4_000_000
        Approximate number of pixels used.
    max_slices : int, default 32
        Maximum number of slices read.

    Returns
    -------
    dict
        ``{"mean": float, "std": float}``; ``std`` is 1.0 for a constant image,
        so that ``(x - mean) / std`` is always defined.

    Raises
    ------
    ValueError
        If the image is not 2D/3D, is empty or has no finite pixel.
    """
    shape = _ndim_shape(image)
    if len(shape) not in (2, 3):
        raise ValueError(f"image must be (Z, H, W) or (H, W), got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"image is empty (shape {shape})")
    if int(max_samples) < 1 or int(max_slices) < 1:
        raise ValueError("max_samples and max_slices must be >= 1")
    nz = shape[0] if len(shape) == 3 else 1
    h, w = shape[-2:]
    zs = np.unique(np.linspace(0, nz - 1, min(nz, int(max_slices))).round().astype(int))
    per_slice = max(1, int(max_samples) // len(zs))
    step = max(1, math.ceil(math.sqrt(h * w / per_slice)))
    total = 0.0
    total_sq = 0.0
    count = 0
    for z in zs:
        prefix: tuple[Any, ...] = (int(z),) if len(shape) == 3 else ()
        try:
            block = _read(image, (*prefix, slice(None, None, step), slice(None, None, step)))
        except (IndexError, TypeError, ValueError, NotImplementedError):
            # some array types only support unit-stride slicing: read the slice
            block = _read(image, prefix)[::step, ::step] if prefix else _read(image, ...)
            block = block if prefix else block[::step, ::step]
        values = block.astype(np.float64, copy=False).ravel()
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
        if values.size == 0:
            continue
        # shift by the first slice's mean for a numerically stable variance
        total += float(values.sum())
        total_sq += float(np.square(values).sum())
        count += values.size
    if count == 0:
        raise ValueError("the image has no finite pixel values: cannot normalise it")
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    std = math.sqrt(var)
    if not math.isfinite(std) or std < 1e-8 * max(1.0, abs(mean)):
        std = 1.0
    return {"mean": float(mean), "std": float(std)}


# --------------------------------------------------------------------------- config


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class TrainConfig:
    """Everything that controls a training run (JSON friendly via :meth:`to_dict`).

    The defaults were chosen for the "small" preset on a CPU, with the ISBI 2012
    task as the yardstick (5 training slices, pixel error and membrane IoU on
    slices 20-29): patches of 128 px in batches of 8 beat 256 px in batches
    of 4 for the same compute (more, more varied steps), AdamW at 2e-3 with a
    cosine decay beat 1e-3 and 4e-3, and unweighted classes with a mild border
    term (``w0 = 3``) gave a clearly lower pixel error than the paper's
    class-balanced weights with ``w0 = 10``, which thicken the predicted
    membranes (the paper optimised for separating touching cells).  Use
    :meth:`paper` for the paper's settings.

    Attributes
    ----------
    model : {"small", "paper"}, default "small"
        Architecture preset (:meth:`napari_unet.model.UNet.preset`), used when no
        model is given to :class:`Trainer`.
    loss : {"wce", "dice", "wce+dice"}, default "wce+dice"
        See :func:`napari_unet.losses.combined_loss`.
    patch_size : int or None, default None
        Side of the square *input* patch.  ``None``: for a same-padded net (the
        "small" preset) 128 on a CPU and 256 on a CUDA GPU; for a valid-padded
        net the input giving a 388-pixel output (572 for the "paper" preset).  Rounded up to the next size the
        network accepts (:meth:`UNet.valid_input_size`), and capped to what the
        labelled slices need.
    batch_size : int, default 8
        Halved automatically (then the patch) when CUDA runs out of memory.
    iterations : int or None, default 500
        Optimiser steps; ``None`` = no limit (then ``max_minutes`` is required).
    max_minutes : float or None, default None
        Wall-clock limit; training stops at whichever limit comes first.
    learning_rate : float, default 2e-3
        Peak learning rate of AdamW.
    weight_decay : float, default 1e-4
        AdamW's decoupled weight decay.
    lr_schedule : {"cosine", "constant"}, default "cosine"
        ``"cosine"`` decays from ``learning_rate`` to 5 % of it over the run (the
        progress is the larger of the iteration and the elapsed-time fractions).
    warmup_iterations : int, default 20
        Linear learning-rate warm-up at the start of the run (at most 10 % of
        ``iterations``); the schedule starts after it.
    grad_clip : float or None, default 5.0
        Clip the global gradient norm to this value (``None`` disables).
    augmentation : Augmentation
        Applied on the training device to every batch.
    w0, sigma : float, default 3.0, 5.0
        Border term of the weight map of the U-Net paper (eq. 2), added to the
        pixels between the objects (``w0 = 0`` disables it; the paper used 10).
    class_weights : "balanced", None or dict, default None
        Class-balancing term of the weight map.  ``"balanced"`` computes the
        class frequencies over the *labelled pixels only* (of all training
        slices together), ``w_k = N / (K_present * N_k)``, so sparse scribbles
        are balanced by what was painted rather than by the unlabelled
        background; ``{class: weight}`` gives them explicitly (missing classes
        get 1); ``None`` = 1 for all (the default: best pixel error when the
        painted classes are roughly in proportion; prefer ``"balanced"`` when
        one class was painted far more than the others).
    object_class : int or None, default None
        The class whose 4-connected components are the objects of the border
        weight map; ``None`` = the last class ("cell").
    n_classes : int or None, default None
        ``None``: the model's, or the largest label found (at least 2).
    class_names, class_colors : list of str or None
        Stored with the checkpoint; defaults "membrane"/"cell" for 2 classes.
    val_slices : list of int or None
        Slices held out from training and evaluated every ``val_every``
        iterations (on their labelled pixels).
    val_every : int, default 100
    preview_every_s : float, default 5.0
        Seconds between :class:`Preview` events (``0`` disables).  The interval
        is stretched to at least 4x the time a preview takes, so previews never
        use more than ~20 % of the training time.
    checkpoint_path : str or None
        Where to save checkpoints (``None`` = no autosave).
    checkpoint_every_s : float, default 60.0
    device : str, default "auto"
    amp : bool, default True
        Mixed precision.  CUDA: bfloat16 where supported, else float16 with a
        gradient scaler.  CPU: bfloat16 autocast when the CPU computes bfloat16
        natively (AVX512-BF16 or AMX, :func:`napari_unet.devices.cpu_has_native_bf16`),
        else float32.  On a 2-core AVX512-BF16 EPYC this and ``channels_last``
        made a "small"-preset step (batch 8, 128 px) 2.7x faster (184 -> 68 ms).
    channels_last : bool, default True
        channels-last memory format on CUDA and the CPU (ignored on MPS).
    seed : int, default 0
    label_oversampling : float, default 0.9
        Probability that a patch is placed around a random labelled pixel.
    num_threads : int or None
        ``torch.set_num_threads`` for the run (CPU training).
    labels_rescan_s : float, default 2.0
        Seconds between checks of the live labels (``0`` = every iteration).
    """

    model: str = "small"
    loss: str = "wce+dice"
    patch_size: int | None = None
    batch_size: int = 8
    iterations: int | None = 500
    max_minutes: float | None = None
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    warmup_iterations: int = 20
    grad_clip: float | None = 5.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    w0: float = 3.0
    sigma: float = 5.0
    class_weights: str | dict[int, float] | None = None
    object_class: int | None = None
    n_classes: int | None = None
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    val_slices: list[int] | None = None
    val_every: int = 100
    preview_every_s: float = 5.0
    checkpoint_path: str | None = None
    checkpoint_every_s: float = 60.0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    label_oversampling: float = 0.9
    num_threads: int | None = None
    labels_rescan_s: float = 2.0

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """Settings close to Ronneberger et al. (2015) (a GPU is advisable).

        The paper's network (valid padding, 31M parameters), one 572 x 572 tile
        per step, the weighted cross-entropy alone with class-balancing weights
        and the border term ``w0 = 10``, ``sigma = 5``, elastic deformations.
        (The paper used SGD with momentum 0.99; this trainer uses AdamW.)
        """
        settings: dict[str, Any] = {
            "model": "paper",
            "loss": "wce",
            "batch_size": 1,
            "learning_rate": 1e-4,
            "class_weights": "balanced",
            "w0": 10.0,
            "sigma": 5.0,
        }
        settings.update(overrides)
        return cls(**settings)

    # ------------------------------------------------------------------ checks
    def validate(self) -> TrainConfig:
        """Check every field; raise ``ValueError``/``TypeError`` naming the bad one.

        Returns
        -------
        TrainConfig
            ``self``, for chaining.
        """

        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ValueError(message)

        need(
            isinstance(self.model, str) and self.model in PRESETS,
            f"model must be one of {', '.join(PRESETS)}, got {self.model!r}",
        )
        need(
            self.loss in LOSS_MODES,
            f"loss must be one of {', '.join(LOSS_MODES)}, got {self.loss!r}",
        )
        need(
            self.patch_size is None or (_is_int(self.patch_size) and self.patch_size >= 8),
            f"patch_size must be an integer >= 8 or None, got {self.patch_size!r}",
        )
        need(
            _is_int(self.batch_size) and self.batch_size >= 1,
            f"batch_size must be an integer >= 1, got {self.batch_size!r}",
        )
        need(
            self.iterations is None or (_is_int(self.iterations) and self.iterations >= 1),
            f"iterations must be an integer >= 1 or None, got {self.iterations!r}",
        )
        need(
            self.max_minutes is None
            or (_is_number(self.max_minutes) and 0 < self.max_minutes < math.inf),
            f"max_minutes must be a positive number or None, got {self.max_minutes!r}",
        )
        need(
            self.iterations is not None or self.max_minutes is not None,
            "set iterations or max_minutes (or both): training needs a limit",
        )
        need(
            _is_number(self.learning_rate) and 0 < self.learning_rate < math.inf,
            f"learning_rate must be a positive number, got {self.learning_rate!r}",
        )
        need(
            _is_number(self.weight_decay) and 0 <= self.weight_decay < math.inf,
            f"weight_decay must be a number >= 0, got {self.weight_decay!r}",
        )
        need(
            self.lr_schedule in LR_SCHEDULES,
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        need(
            _is_int(self.warmup_iterations) and self.warmup_iterations >= 0,
            f"warmup_iterations must be an integer >= 0, got {self.warmup_iterations!r}",
        )
        need(
            self.grad_clip is None or (_is_number(self.grad_clip) and self.grad_clip > 0),
            f"grad_clip must be a positive number or None, got {self.grad_clip!r}",
        )
        if not isinstance(self.augmentation, Augmentation):
            raise TypeError(
                "augmentation must be a napari_unet.augment.Augmentation, "
                f"got {type(self.augmentation).__name__}"
            )
        need(
            _is_number(self.w0) and 0 <= self.w0 < math.inf,
            f"w0 must be a number >= 0, got {self.w0!r}",
        )
        need(
            _is_number(self.sigma) and 0 < self.sigma < math.inf,
            f"sigma must be a positive number, got {self.sigma!r}",
        )
        cw = self.class_weights
        if isinstance(cw, Mapping):
            for key, value in cw.items():
                need(
                    _is_int(key) and key >= 1,
                    f"class_weights keys must be class numbers >= 1, got {key!r}",
                )
                need(
                    _is_number(value) and 0 <= value < math.inf,
                    f"class_weights[{key}] must be a number >= 0, got {value!r}",
                )
        else:
            need(
                cw is None or cw == "balanced",
                f"class_weights must be 'balanced', None or a {{class: weight}} dict, got {cw!r}",
            )
        need(
            self.n_classes is None or (_is_int(self.n_classes) and self.n_classes >= 2),
            f"n_classes must be an integer >= 2 or None, got {self.n_classes!r}",
        )
        need(
            self.object_class is None or (_is_int(self.object_class) and self.object_class >= 1),
            f"object_class must be a class number >= 1 or None, got {self.object_class!r}",
        )
        if self.n_classes is not None and self.object_class is not None:
            need(
                self.object_class <= self.n_classes,
                f"object_class {self.object_class} is not one of the {self.n_classes} classes",
            )
        for name in ("class_names", "class_colors"):
            value = getattr(self, name)
            need(
                value is None
                or (
                    isinstance(value, Sequence)
                    and not isinstance(value, str)
                    and all(isinstance(v, str) for v in value)
                ),
                f"{name} must be a list of strings or None, got {value!r}",
            )
            if value is not None and self.n_classes is not None:
                need(
                    len(value) == self.n_classes,
                    f"{name} has {len(value)} entries but n_classes is {self.n_classes}",
                )
        need(
            self.val_slices is None
            or (
                isinstance(self.val_slices, Sequence)
                and all(_is_int(z) and z >= 0 for z in self.val_slices)
            ),
            f"val_slices must be a list of slice indices >= 0 or None, got {self.val_slices!r}",
        )
        need(
            _is_int(self.val_every) and self.val_every >= 1,
            f"val_every must be an integer >= 1, got {self.val_every!r}",
        )
        for name in ("preview_every_s", "labels_rescan_s"):
            value = getattr(self, name)
            need(
                _is_number(value) and 0 <= value < math.inf,
                f"{name} must be a number >= 0, got {value!r}",
            )
        need(
            _is_number(self.checkpoint_every_s) and self.checkpoint_every_s > 0,
            f"checkpoint_every_s must be a positive number, got {self.checkpoint_every_s!r}",
        )
        need(
            self.checkpoint_path is None or isinstance(self.checkpoint_path, (str, Path)),
            f"checkpoint_path must be a path or None, got {self.checkpoint_path!r}",
        )
        need(
            isinstance(self.device, (str, torch.device)),
            f"device must be a string such as 'auto', 'cpu' or 'cuda', got {self.device!r}",
        )
        need(isinstance(self.amp, bool), f"amp must be True or False, got {self.amp!r}")
        need(
            isinstance(self.channels_last, bool),
            f"channels_last must be True or False, got {self.channels_last!r}",
        )
        need(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        need(
            _is_number(self.label_oversampling) and 0 <= self.label_oversampling <= 1,
            f"label_oversampling must be a probability in [0, 1], got {self.label_oversampling!r}",
        )
        need(
            self.num_threads is None or (_is_int(self.num_threads) and self.num_threads >= 1),
            f"num_threads must be an integer >= 1 or None, got {self.num_threads!r}",
        )
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the augmentation nested as its own dict)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "augmentation":
                value = value.to_dict()
            elif f.name == "class_weights" and isinstance(value, Mapping):
                value = {str(k): float(v) for k, v in value.items()}
            elif f.name == "checkpoint_path" and value is not None:
                value = str(value)
            elif f.name == "device":
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict`'s output (unknown keys are an error)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"from_dict needs a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {', '.join(map(repr, unknown))}; "
                f"known fields: {', '.join(sorted(names))}"
            )
        kwargs = dict(data)
        aug = kwargs.get("augmentation")
        if isinstance(aug, Mapping):
            kwargs["augmentation"] = Augmentation.from_dict(dict(aug))
        elif aug is None:
            kwargs.pop("augmentation", None)
        cw = kwargs.get("class_weights")
        if isinstance(cw, Mapping):
            try:
                kwargs["class_weights"] = {int(k): float(v) for k, v in cw.items()}
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"class_weights keys must be class numbers, got {list(cw)!r}"
                ) from exc
        for name in ("val_slices", "class_names", "class_colors"):
            if isinstance(kwargs.get(name), tuple):
                kwargs[name] = list(kwargs[name])
        return cls(**kwargs)


# --------------------------------------------------------------------------- events


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


#: The event is also reachable as ``training.Warning`` (the name used in the
#: design documents); ``TrainingWarning`` avoids shadowing the built-in.
Warning = TrainingWarning


@dataclass(frozen=True)
class LabelsChanged(TrainingEvent):
    """The live labels changed: these slices were (re)loaded or dropped."""

    kind: ClassVar[str] = "labels_changed"
    slices: list[int]


@dataclass(frozen=True)
class Finished(TrainingEvent):
    """Last event of a run.  ``reason``: "completed", "stopped" or "time_limit"."""

    kind: ClassVar[str] = "finished"
    reason: str
    iterations: int
    checkpoint_path: str | None
    final_loss: float | None


# --------------------------------------------------------------------------- helpers


def _reflect_indices(start: int, size: int, n: int) -> np.ndarray:
    """Indices ``start .. start+size-1`` mirrored into ``0..n-1`` (reflect, no edge repeat)."""
    idx = np.arange(start, start + size)
    if n == 1:
        return np.zeros(size, dtype=np.intp)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx).astype(np.intp)


def _extract(arr: np.ndarray, y0: int, x0: int, size: int, mirror: bool) -> np.ndarray:
    """A ``size x size`` window at ``(y0, x0)``; outside the array: mirrored or zero."""
    h, w = arr.shape
    if y0 >= 0 and x0 >= 0 and y0 + size <= h and x0 + size <= w:
        return arr[y0 : y0 + size, x0 : x0 + size]
    if mirror:
        return arr[np.ix_(_reflect_indices(y0, size, h), _reflect_indices(x0, size, w))]
    out = np.zeros((size, size), dtype=arr.dtype)
    ys, ye = max(y0, 0), min(y0 + size, h)
    xs, xe = max(x0, 0), min(x0 + size, w)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
    return out


def _labels_dtype(n_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if n_classes <= 255 else np.dtype(np.int32)


@dataclass
class _Slice:
    """Cached training data of one labelled slice."""

    z: int
    image: np.ndarray  # raw dtype (H, W)
    labels: np.ndarray  # uint8/int32 (H, W), 0 = unlabelled
    signature: tuple[int, int]
    n_labelled: int
    class_counts: np.ndarray  # (K + 1,)
    coords: np.ndarray | None  # flat indices of labelled pixels (sparse slices)
    border: np.ndarray | None = None  # float32 border term of the weight map
    raw_signature: tuple[int, int] | None = None  # of the live array as last read


def _signature(labels: np.ndarray) -> tuple[int, int]:
    arr = np.ascontiguousarray(labels)
    return int(np.count_nonzero(arr)), zlib.adler32(memoryview(arr).cast("B"))


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train (or fine-tune) a U-Net on the labelled slices of a stack.

    Parameters
    ----------
    image : array_like
        ``(Z, H, W)`` or ``(H, W)`` numpy array, memmap, dask or zarr array.
        Only the labelled slices are ever read (plus a strided subsample for the
        normalisation statistics).
    labels : array_like
        Integer array of the image's shape; ``0`` = unlabelled, ``1..K`` classes.
        Read live: it may be painted while :meth:`run` is iterating.
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
    ...     if event.kind == "iteration":
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
        if config is None:
            config = TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self._meta_in: dict[str, Any] = dict(metadata or {})

        # ---------------------------------------------------------- arrays
        shape = _ndim_shape(image)
        if len(shape) not in (2, 3):
            raise ValueError(
                f"image must be a 2D (H, W) or 3D (Z, H, W) grayscale array, got shape {shape}"
            )
        if min(shape) < 1:
            raise ValueError(f"image is empty (shape {shape})")
        lshape = _ndim_shape(labels)
        if lshape != shape:
            raise ValueError(f"labels shape {lshape} does not match image {shape}")
        ldtype = np.dtype(getattr(labels, "dtype", np.asarray(labels).dtype))
        if ldtype.kind not in "iu":
            raise TypeError(
                f"labels must be an integer array (0 = unlabelled, 1..K = classes), got dtype {ldtype}"
            )
        idtype = np.dtype(getattr(image, "dtype", np.float32))
        if idtype.kind not in "biuf":
            raise TypeError(f"image must be a numeric array, got dtype {idtype}")
        self.image = image
        self.labels = labels
        self._is_3d = len(shape) == 3
        self.n_slices = shape[0] if self._is_3d else 1
        self.slice_shape: tuple[int, int] = (shape[-2], shape[-1])
        val = sorted(set(int(z) for z in (config.val_slices or [])))
        bad = [z for z in val if z >= self.n_slices]
        if bad:
            raise ValueError(
                f"val_slices {bad} are out of range: the image has {self.n_slices} slice(s) (0..{self.n_slices - 1})"
            )
        self._val_slices = val

        # ---------------------------------------------------------- labels scan
        counts = np.array([np.count_nonzero(self._labels_slice(z)) for z in range(self.n_slices)])
        labelled = [int(z) for z in np.flatnonzero(counts)]
        if not labelled:
            raise ValueError("no labelled pixels on any slice: paint at least one slice")
        train_slices = [z for z in labelled if z not in val]
        if not train_slices:
            raise ValueError(
                f"all labelled slices {labelled} are validation slices (val_slices={val}): "
                "label at least one other slice for training"
            )
        raw = {z: np.asarray(self._labels_slice(z)) for z in train_slices}
        lo = min(int(r.min()) for r in raw.values())
        hi = max(int(r.max()) for r in raw.values())
        if lo < 0:
            raise ValueError(
                f"labels contain the negative value {lo}: use 0 for unlabelled and 1..K for classes"
            )

        # ---------------------------------------------------------- model
        if model is not None:
            if not isinstance(model, UNet):
                raise TypeError(f"model must be a napari_unet UNet, got {type(model).__name__}")
            if config.n_classes is not None and config.n_classes != model.n_classes:
                raise ValueError(
                    f"config.n_classes={config.n_classes} but the model predicts {model.n_classes} classes"
                )
            n_classes = model.n_classes
            if hi > n_classes:
                raise ValueError(
                    f"labels contain class {hi} but the model predicts {n_classes} classes: "
                    f"fine-tune with labels 1..{n_classes} or train a new model"
                )
        else:
            n_classes = config.n_classes if config.n_classes is not None else max(2, hi)
            if hi > n_classes:
                raise ValueError(
                    f"labels contain class {hi} but n_classes is {n_classes}: "
                    f"set n_classes >= {hi} or fix the labels"
                )
            torch.manual_seed(config.seed)
            model = UNet.preset(config.model, n_classes=n_classes)
        if model.in_channels != 1:
            raise ValueError(
                f"the model expects {model.in_channels} input channels; training supports "
                "grayscale (1-channel) images only"
            )
        self.n_classes = n_classes
        self.object_class = config.object_class if config.object_class is not None else n_classes
        if self.object_class > n_classes:
            raise ValueError(
                f"object_class {self.object_class} is not one of the {n_classes} classes"
            )
        if isinstance(config.class_weights, Mapping):
            bad_cls = [k for k in config.class_weights if k > n_classes]
            if bad_cls:
                raise ValueError(
                    f"class_weights names class(es) {bad_cls} but there are only {n_classes} classes"
                )
        self.class_names = self._names(
            config.class_names, "class_names", self._meta_in.get("class_names")
        ) or (
            ["membrane", "cell"]
            if n_classes == 2
            else [f"class {k}" for k in range(1, n_classes + 1)]
        )
        self.class_colors = self._names(
            config.class_colors, "class_colors", self._meta_in.get("class_colors")
        ) or [DEFAULT_CLASS_COLORS[k % len(DEFAULT_CLASS_COLORS)] for k in range(n_classes)]

        self.device = resolve_device(config.device)
        self.model: UNet = model
        self._on_cuda = self.device.type == "cuda"
        self._channels_last = bool(config.channels_last and self.device.type in ("cuda", "cpu"))
        #: autocast dtype (None = float32), resolved once: the CPU probe is not free
        self._amp = training_amp_dtype(self.device, config.amp)
        self.model.to(self.device)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)

        # ---------------------------------------------------------- normalisation
        norm = self._meta_in.get("normalization")
        if isinstance(norm, Mapping) and "mean" in norm and "std" in norm:
            self.normalization = {"mean": float(norm["mean"]), "std": float(norm["std"])}
        else:
            self.normalization = compute_normalization(image)
        if not self.normalization["std"] > 0:
            raise ValueError(f"normalization std must be > 0, got {self.normalization['std']}")

        # ---------------------------------------------------------- patch size
        self._augmentation = config.augmentation
        self.patch_size = self._resolve_patch_size(config.patch_size)
        crop = self._augmentation.crop_size
        if crop is not None:
            # the augmentation's random crop is the network input; patches are sampled larger
            try:
                self.model.output_size(int(crop))
            except ValueError as exc:
                raise ValueError(
                    f"augmentation.crop_size={crop} is the network input size and must be "
                    f"accepted by the model: {exc}"
                ) from None
            self.patch_size = max(self.patch_size, int(crop))
        self.batch_size = config.batch_size

        # ---------------------------------------------------------- slice cache
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._pending_scan: set[int] = set()
        self._force_full_scan = False
        self._scan_cursor = 0
        self._slices: dict[int, _Slice] = {}
        self._class_lut = np.ones(n_classes + 1, dtype=np.float32)
        self._warned_bad_labels = False
        self._warned_empty = False
        for z in train_slices:
            self._slices[z] = self._make_slice(z, raw[z])
        self._update_class_lut()
        self._preview_slice: int = train_slices[0]

        # ---------------------------------------------------------- history
        self.history: list[dict[str, Any]] = list(self._meta_in.get("history") or [])
        self.validation_history: list[dict[str, Any]] = list(
            self._meta_in.get("validation_history") or []
        )
        self._iterations_before = int(self._meta_in.get("iterations") or 0)
        self.iterations_done = 0
        self._running = False
        self._last_checkpoint: str | None = None

    # ------------------------------------------------------------------ helpers
    def _names(self, value: Sequence[str] | None, what: str, fallback: Any) -> list[str] | None:
        for candidate in (value, fallback):
            if candidate is None:
                continue
            names = [str(v) for v in candidate]
            if len(names) != self.n_classes:
                if candidate is value:
                    raise ValueError(
                        f"{what} has {len(names)} entries but there are {self.n_classes} classes"
                    )
                continue
            return names
        return None

    def _labels_slice(self, z: int) -> np.ndarray:
        return _read(self.labels, z if self._is_3d else ...)

    def _image_slice(self, z: int) -> np.ndarray:
        return _read(self.image, z if self._is_3d else ...)

    def _resolve_patch_size(self, requested: int | None) -> int:
        m = self.model
        h, w = self.slice_shape
        if m.padding == "same":
            if requested is None:
                cuda = self.device.type == "cuda"
                size = DEFAULT_SAME_PATCH_CUDA if cuda else DEFAULT_SAME_PATCH_CPU
            else:
                size = requested
            size = int(m.valid_input_size(int(size)))
            # no point in patches much larger than the slices
            size = min(size, int(m.valid_input_size(max(h, w))))
        else:
            if requested is None:
                size = int(m.valid_input_size(m.context + DEFAULT_VALID_OUTPUT))
            else:
                size = int(m.valid_input_size(int(requested)))
            size = min(size, int(m.valid_input_size(max(h, w) + m.context)))
        return size

    @property
    def input_size(self) -> int:
        """Side of the network's input (the augmentation's crop, else the patch)."""
        crop = self._augmentation.crop_size
        return int(crop) if crop is not None else self.patch_size

    def _min_patch_size(self) -> int:
        m = self.model
        if m.padding == "same":
            return int(m.valid_input_size(max(32, m.size_multiple)))
        return int(m.valid_input_size(m.context + 16))

    def _clean_labels(self, z: int, raw: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Copy a labels slice into the cache dtype; classes outside 1..K become 0."""
        arr = np.array(raw, copy=True)
        warning = None
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > self.n_classes:
                bad = (arr < 0) | (arr > self.n_classes)
                arr[bad] = 0
                warning = (
                    f"slice {z}: labels outside 1..{self.n_classes} are ignored "
                    f"(found values {lo}..{hi}); the model predicts {self.n_classes} classes"
                )
        return arr.astype(_labels_dtype(self.n_classes), copy=False), warning

    def _make_slice(self, z: int, raw: np.ndarray) -> _Slice:
        labels, _ = self._clean_labels(z, raw)
        return self._slice_from_labels(z, labels, image=None)

    def _slice_from_labels(self, z: int, labels: np.ndarray, image: np.ndarray | None) -> _Slice:
        cfg = self.config
        if image is None:
            image = self._image_slice(z)
            if image.shape != self.slice_shape:  # pragma: no cover - shapes checked
                raise ValueError(f"image slice {z} has shape {image.shape}")
        sig = _signature(labels)
        n = sig[0]
        counts = np.bincount(labels.ravel(), minlength=self.n_classes + 1)[: self.n_classes + 1]
        coords = None
        if n and n < _SPARSE_FRACTION * labels.size:
            coords = np.flatnonzero(labels).astype(np.int32 if labels.size < 2**31 else np.int64)
        border = None  # the border term alone; class weights are applied per patch
        if cfg.loss != "dice" and n:
            border = border_term(labels, self.object_class, cfg.w0, cfg.sigma)
        return _Slice(z, image, labels, sig, n, counts.astype(np.int64), coords, border)

    def _update_class_lut(self) -> None:
        counts = sum((s.class_counts for s in self._slices.values()), np.zeros(1, np.int64))
        self._class_lut = class_weight_lut(counts, self.n_classes, self.config.class_weights)

    # ------------------------------------------------------------------ public API
    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current iteration (thread-safe)."""
        self._stop_event.set()

    def weight_map(self, z: int) -> np.ndarray:
        """The per-pixel weight the weighted cross-entropy gives training slice ``z``.

        Class weights (over the labelled pixels of all training slices) plus
        the border term of the paper, 0 where the slice is unlabelled; what the
        weight-map preview shows (:func:`napari_unet.weightmap.loss_weight_map`).
        """
        if z not in self._slices:
            raise ValueError(
                f"slice {z} is not a training slice (labelled slices: {sorted(self._slices)})"
            )
        s = self._slices[z]
        weights = self._class_lut[s.labels]
        if s.border is not None:
            weights = weights + s.border
            weights[s.labels == 0] = 0.0  # the loss ignores them anyway
        return weights.astype(np.float32, copy=False)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop_event.is_set()

    def set_preview_slice(self, z: int) -> None:
        """Choose the slice of the :class:`Preview` events (thread-safe)."""
        if not _is_int(z) or not 0 <= int(z) < self.n_slices:
            raise ValueError(f"preview slice must be in 0..{self.n_slices - 1}, got {z!r}")
        with self._lock:
            self._preview_slice = int(z)

    def notify_labels_changed(self, slices: Sequence[int] | None = None) -> None:
        """Tell the trainer which slices were painted (thread-safe); ``None`` = rescan all.

        The trainer also notices changes by itself (every
        :attr:`TrainConfig.labels_rescan_s` seconds); this makes it immediate
        and avoids scanning a large volume.
        """
        with self._lock:
            if slices is None:
                self._force_full_scan = True
            else:
                self._pending_scan.update(int(z) for z in slices if 0 <= int(z) < self.n_slices)

    @property
    def labelled_slices(self) -> list[int]:
        """The training slices currently known to have labels."""
        return sorted(self._slices)

    @property
    def n_labelled_pixels(self) -> int:
        return int(sum(s.n_labelled for s in self._slices.values()))

    @property
    def metadata(self) -> dict[str, Any]:
        """Checkpoint metadata (see ``docs/CONTRACTS.md``) for :func:`save_checkpoint`."""
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
        if "label_mapping" in self._meta_in:
            meta["label_mapping"] = self._meta_in["label_mapping"]
        return meta

    def save(self, path: str | Path) -> Path:
        """Save the model and :attr:`metadata` with :func:`napari_unet.checkpoint.save_checkpoint`."""
        from .checkpoint import save_checkpoint

        return Path(save_checkpoint(path, self.model, **self.metadata))

    # ------------------------------------------------------------------ labels (live)
    def _rescan(self, full: bool = False) -> tuple[list[int], list[str]]:
        """Re-check the live labels; return (changed slices, warnings)."""
        with self._lock:
            pending = self._pending_scan
            self._pending_scan = set()
            full = full or self._force_full_scan
            self._force_full_scan = False
        to_check = set(self._slices) | pending
        if full:
            to_check |= set(range(self.n_slices))
        else:
            h, w = self.slice_shape
            budget = max(1, _SCAN_PIXEL_BUDGET // max(1, h * w))
            if budget >= self.n_slices:
                to_check |= set(range(self.n_slices))
            else:
                for _ in range(budget):
                    to_check.add(self._scan_cursor)
                    self._scan_cursor = (self._scan_cursor + 1) % self.n_slices
        to_check -= set(self._val_slices)
        changed: list[int] = []
        warnings: list[str] = []
        new_slices = dict(self._slices)
        for z in sorted(to_check):
            raw = self._labels_slice(z)
            cached = new_slices.get(z)
            if cached is None:
                if not np.any(raw):
                    continue
            arr = np.asarray(raw)
            raw_sig = _signature(arr)
            if cached is not None and raw_sig in (cached.signature, cached.raw_signature):
                continue
            labels, warn = self._clean_labels(z, arr)
            if warn and not self._warned_bad_labels:
                warnings.append(warn)
                self._warned_bad_labels = True
            if cached is not None and _signature(labels) == cached.signature:
                cached.raw_signature = raw_sig
                continue
            changed.append(z)
            if not np.any(labels):
                new_slices.pop(z, None)
                continue
            image = cached.image if cached is not None else None
            new_slices[z] = self._slice_from_labels(z, labels, image)
            new_slices[z].raw_signature = raw_sig
        if changed:
            if not new_slices:
                if not self._warned_empty:
                    warnings.append(
                        "all training labels were erased: training continues on the last "
                        "labels; paint at least one slice"
                    )
                    self._warned_empty = True
                return [], warnings
            self._warned_empty = False
            self._slices = new_slices
            self._update_class_lut()
        return changed, warnings

    # ------------------------------------------------------------------ sampling
    def _sample_batch(
        self, rng: np.random.Generator, batch: int, patch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``batch`` patches: image float32 (B,1,P,P), labels (B,P,P), weights or None."""
        cfg = self.config
        model = self.model
        out_size = int(model.output_size(self.input_size))
        margin = (patch - out_size) // 2
        slices = [self._slices[z] for z in sorted(self._slices)]
        p = np.array([s.n_labelled for s in slices], dtype=np.float64)
        p /= p.sum()
        use_weights = cfg.loss != "dice"
        mean, std = self.normalization["mean"], self.normalization["std"]
        images = np.empty((batch, 1, patch, patch), dtype=np.float32)
        labels = np.empty((batch, patch, patch), dtype=np.int64)
        weights = np.empty((batch, patch, patch), dtype=np.float32) if use_weights else None
        any_labelled = False
        for b in range(batch):
            for attempt in range(10):
                s = slices[int(rng.choice(len(slices), p=p))]
                h, w = s.labels.shape
                if rng.random() < cfg.label_oversampling:
                    if s.coords is not None:
                        flat = int(s.coords[rng.integers(len(s.coords))])
                    else:
                        while True:  # dense labels: rejection sampling is fast
                            flat = int(rng.integers(h * w))
                            if s.labels.flat[flat]:
                                break
                    cy, cx = divmod(flat, w)
                    jitter = max(0, out_size // 4)
                    cy += int(rng.integers(-jitter, jitter + 1))
                    cx += int(rng.integers(-jitter, jitter + 1))
                    y0, x0 = cy - patch // 2, cx - patch // 2
                else:
                    y0 = int(rng.integers(0, max(h - out_size, 0) + 1)) - margin
                    x0 = int(rng.integers(0, max(w - out_size, 0) + 1)) - margin
                lab = _extract(s.labels, y0, x0, patch, mirror=False)
                has = bool(np.any(lab[margin : margin + out_size, margin : margin + out_size]))
                if has or any_labelled or attempt == 9:
                    break
            any_labelled |= has
            img = _extract(s.image, y0, x0, patch, mirror=True)
            np.subtract(img, mean, out=images[b, 0], casting="unsafe")
            images[b, 0] /= std
            labels[b] = lab
            if weights is not None:
                wmap = self._class_lut[lab]
                if s.border is not None:
                    wmap = wmap + _extract(s.border, y0, x0, patch, mirror=False)
                weights[b] = wmap
        return images, labels, weights

    # ------------------------------------------------------------------ prediction
    def _predict_slice(
        self, z: int, probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predict one slice: (class map 1..K, float16 probabilities (K, H, W) or None)."""
        cached = self._slices.get(z)
        image = cached.image if cached is not None else self._image_slice(z)
        was_training = self.model.training
        self.model.eval()
        try:
            try:
                from .tiling import predict_tiled
            except ImportError:  # pragma: no cover - tiling is part of the package
                return self._predict_whole(image, probabilities)
            kwargs: dict[str, Any] = {}
            if self.model.padding == "same":
                kwargs["overlap"] = self.model.context  # fast; seams are negligible
            result = predict_tiled(
                self.model,
                image,
                device=self.device,
                amp=self.config.amp,
                return_probabilities=probabilities,
                normalization=self.normalization,
                probabilities_dtype=np.float16,
                **kwargs,
            )
            if probabilities:
                classes, probs = result
                return np.asarray(classes), np.asarray(probs, dtype=np.float16)
            return np.asarray(result), None
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def _predict_whole(
        self, image: np.ndarray, probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Whole-slice prediction (fallback without :mod:`napari_unet.tiling`)."""
        m = self.model
        h, w = image.shape
        half = m.context // 2
        need_h, need_w = m.valid_input_size((h + 2 * half, w + 2 * half))
        out_h, out_w = m.output_size((need_h, need_w))
        # output pixel i sits at input pixel i + (need - out) / 2; shift so it maps to i
        oy, ox = (need_h - out_h) // 2, (need_w - out_w) // 2
        top, left = oy, ox
        if m.padding == "same":
            top, left = half, half
        ys = _reflect_indices(-top, need_h, h)
        xs = _reflect_indices(-left, need_w, w)
        x = image[np.ix_(ys, xs)].astype(np.float32)
        x = (x - self.normalization["mean"]) / self.normalization["std"]
        xt = torch.from_numpy(x)[None, None].to(self.device)
        if self._channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = m(xt)
        probs = torch.softmax(logits.float(), dim=1)[0]
        sy, sx = top - oy, left - ox
        probs = probs[:, sy : sy + h, sx : sx + w]
        classes = (probs.argmax(0) + 1).to(torch.int32).cpu().numpy()
        classes = classes.astype(_labels_dtype(self.n_classes))
        return classes, probs.to(torch.float16).cpu().numpy() if probabilities else None

    def _validate(self) -> dict[str, float] | None:
        from . import metrics

        preds: list[np.ndarray] = []
        truths: list[np.ndarray] = []
        for z in self._val_slices:
            truth = np.asarray(self._labels_slice(z))
            mask = truth > 0
            if not mask.any():
                continue
            classes, _ = self._predict_slice(z, probabilities=False)
            preds.append(np.asarray(classes)[mask].astype(np.int32))
            truths.append(truth[mask].astype(np.int32))
        if not truths:
            return None
        pred = np.concatenate(preds)[None]
        truth = np.concatenate(truths)[None]
        out: dict[str, float] = {
            "pixel_error": float(metrics.pixel_error(pred, truth)),
            "n_pixels": float(truth.size),
        }
        ious = metrics.iou_per_class(pred, truth, classes=range(1, self.n_classes + 1))
        values = []
        for k, name in enumerate(self.class_names, start=1):
            out[f"iou_{name}"] = float(ious[k])
            if not math.isnan(ious[k]):
                values.append(ious[k])
        out["mean_iou"] = float(np.mean(values)) if values else math.nan
        return out

    # ------------------------------------------------------------------ device helpers
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp)

    def _warmup(self) -> int:
        cfg = self.config
        warmup = cfg.warmup_iterations
        if cfg.iterations is not None:
            warmup = min(warmup, cfg.iterations // 10)
        return warmup

    def _lr_at(self, iteration: int, elapsed_s: float) -> float:
        """Learning rate of step ``iteration`` (0-based): linear warm-up, then the schedule."""
        cfg = self.config
        base = float(cfg.learning_rate)
        warmup = self._warmup()
        if iteration < warmup:
            return base * (iteration + 1) / (warmup + 1)
        if cfg.lr_schedule == "constant":
            return base
        fractions = []
        if cfg.iterations is not None:
            fractions.append((iteration - warmup) / max(1, cfg.iterations - warmup))
        if cfg.max_minutes is not None:
            fractions.append(elapsed_s / (60.0 * cfg.max_minutes))
        progress = min(1.0, max(fractions))
        lo = FINAL_LR_FRACTION * base
        return lo + 0.5 * (base - lo) * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ training step
    def _step(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> float:
        cfg = self.config
        images, labels, weights = self._sample_batch(rng, self.batch_size, self.patch_size)
        dev = self.device
        x = torch.from_numpy(images).to(dev)
        y = torch.from_numpy(labels).to(dev)[:, None]
        targets: list[torch.Tensor] = [y]
        wt = None
        if weights is not None:
            wt = torch.from_numpy(weights).to(dev)[:, None]
            targets.append(wt)
        augmented = self._augmentation(x, *targets, generator=generator)
        x, y = augmented[0], augmented[1][:, 0]
        wt = augmented[2][:, 0] if wt is not None else None
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.model(x)
        loss = combined_loss(logits.float(), y, wt, mode=cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            optimizer.step()
        return float(loss.detach())

    def _shrink_after_oom(self) -> str:
        """Halve the batch, then the patch; return the warning text or raise."""
        if self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            return f"CUDA out of memory: retrying with batch {self.batch_size}"
        smallest = self._min_patch_size()
        m = self.model
        if m.padding == "same":
            new = int(m.valid_input_size(max(smallest, self.input_size // 2)))
        else:
            out = int(m.output_size(self.input_size))
            new = int(m.valid_input_size(max(smallest, m.context + out // 2)))
        if new >= self.input_size:
            raise RuntimeError(
                f"CUDA out of memory even with batch 1 and the smallest patch ({self.patch_size} px): "
                "free GPU memory (close other programs), use a smaller model or train on the CPU "
                "(device='cpu')"
            )
        self.patch_size = new
        if self._augmentation.crop_size is not None:
            self._augmentation = dataclasses.replace(self._augmentation, crop_size=None)
        return f"CUDA out of memory: retrying with batch 1 and patch {new}"

    # ------------------------------------------------------------------ run
    def run(self) -> Iterator[TrainingEvent]:
        """Train; yield :class:`TrainingEvent` objects until finished or stopped.

        Yields
        ------
        TrainingEvent
            :class:`TrainingStarted` first, :class:`Finished` last; in between
            :class:`Iteration` after every step and occasionally
            :class:`Validation`, :class:`Preview`, :class:`CheckpointSaved`,
            :class:`LabelsChanged` and :class:`TrainingWarning`.

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
        if self._on_cuda:
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

    def _run(self) -> Iterator[TrainingEvent]:
        cfg = self.config
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        rng = np.random.default_rng(cfg.seed)
        # augmentation parameters are drawn on the CPU: the same seed gives the same
        # augmentations on every device
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed + 1)  # dropout
        model = self.model
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scaler = None
        if self._amp == torch.float16:
            amp_mod = getattr(torch, "amp", None)
            if amp_mod is not None and hasattr(amp_mod, "GradScaler"):
                scaler = amp_mod.GradScaler("cuda")
            else:  # pragma: no cover - torch < 2.3
                scaler = torch.cuda.amp.GradScaler()

        yield TrainingStarted(
            device=str(self.device),
            device_description=describe_device(self.device),
            n_parameters=int(sum(p.numel() for p in model.parameters())),
            labelled_slices=self.labelled_slices,
            n_labelled_pixels=self.n_labelled_pixels,
            patch_size=self.input_size,
            batch_size=self.batch_size,
            iterations=cfg.iterations,
            precision=str(self._amp or torch.float32).removeprefix("torch."),
        )

        t_start = time.perf_counter()
        max_s = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        next_rescan = t_start + cfg.labels_rescan_s
        next_preview = t_start + cfg.preview_every_s if cfg.preview_every_s > 0 else math.inf
        next_ckpt = t_start + cfg.checkpoint_every_s
        window: deque[tuple[float, int]] = deque(maxlen=20)
        last_loss: float | None = None
        nonfinite_warned = False
        it = 0
        reason = "completed"
        while True:
            now = time.perf_counter()
            if self._stop_event.is_set():
                reason = "stopped"
                break
            if cfg.iterations is not None and it >= cfg.iterations:
                reason = "completed"
                break
            if max_s is not None and now - t_start >= max_s:
                reason = "time_limit"
                break
            if now >= next_rescan or self._pending_scan or self._force_full_scan:
                changed, warnings = self._rescan()
                for message in warnings:
                    yield TrainingWarning(message)
                if changed:
                    yield LabelsChanged(changed)
                next_rescan = time.perf_counter() + cfg.labels_rescan_s

            lr = self._lr_at(it, now - t_start)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            oom = False
            try:
                loss = self._step(optimizer, scaler, rng, generator)
            except _OOM_ERRORS:
                oom = True
            if oom:
                # outside the except block: the traceback no longer pins the tensors
                optimizer.zero_grad(set_to_none=True)
                if self._on_cuda:
                    torch.cuda.empty_cache()
                yield TrainingWarning(self._shrink_after_oom())
                continue
            step_s = time.perf_counter() - t0
            it += 1
            self.iterations_done += 1
            window.append((step_s, self.batch_size))
            if not math.isfinite(loss):
                if not nonfinite_warned:
                    yield TrainingWarning(
                        f"non-finite loss at iteration {it}: lower the learning rate "
                        f"(now {cfg.learning_rate:g})"
                    )
                    nonfinite_warned = True
            else:
                last_loss = loss
            self.history.append(
                {"iteration": self._iterations_before + self.iterations_done, "loss": loss}
            )
            total_s = sum(t for t, _ in window)
            yield Iteration(
                iteration=it,
                total=cfg.iterations,
                loss=loss,
                lr=lr,
                samples_per_s=sum(n for _, n in window) / total_s if total_s > 0 else 0.0,
                elapsed_s=time.perf_counter() - t_start,
            )

            if self._val_slices and it % cfg.val_every == 0:
                yield from self._validation_events(it)
            if time.perf_counter() >= next_preview and not self._stop_event.is_set():
                t0 = time.perf_counter()
                yield from self._preview_events(it)
                duration = time.perf_counter() - t0
                next_preview = time.perf_counter() + max(cfg.preview_every_s, 4.0 * duration)
            if cfg.checkpoint_path is not None and time.perf_counter() >= next_ckpt:
                yield from self._checkpoint_events(it)
                next_ckpt = time.perf_counter() + cfg.checkpoint_every_s

        if cfg.checkpoint_path is not None:
            yield from self._checkpoint_events(it)
        model.eval()
        yield Finished(
            reason=reason,
            iterations=it,
            checkpoint_path=self._last_checkpoint,
            final_loss=last_loss,
        )

    def _validation_events(self, it: int) -> Iterator[TrainingEvent]:
        try:
            metrics = self._validate()
        except _OOM_ERRORS:
            metrics = None
            oom = True
        else:
            oom = False
        if oom:
            if self._on_cuda:
                torch.cuda.empty_cache()
            yield TrainingWarning("CUDA out of memory during validation: skipped")
            return
        if metrics is None:
            yield TrainingWarning(
                f"validation slices {self._val_slices} have no labelled pixels: validation skipped"
            )
            return
        self.validation_history.append(
            {"iteration": self._iterations_before + self.iterations_done, **metrics}
        )
        yield Validation(iteration=it, metrics=metrics)

    def _preview_events(self, it: int) -> Iterator[TrainingEvent]:
        with self._lock:
            z = self._preview_slice
        oom = False
        try:
            classes, probs = self._predict_slice(z)
        except _OOM_ERRORS:
            oom = True
        if oom:
            if self._on_cuda:
                torch.cuda.empty_cache()
            yield TrainingWarning("CUDA out of memory while computing the preview: skipped")
            return
        yield Preview(
            iteration=it,
            slice_index=z,
            labels=np.asarray(classes).astype(np.uint8, copy=False),
            probabilities=np.asarray(probs).astype(np.float16, copy=False),
        )

    def _checkpoint_events(self, it: int) -> Iterator[TrainingEvent]:
        path = self.config.checkpoint_path
        if path is None:  # pragma: no cover - guarded by the caller
            return
        try:
            saved = self.save(path)
        except (OSError, RuntimeError) as exc:
            yield TrainingWarning(f"could not save the checkpoint to {path}: {exc}")
            return
        self._last_checkpoint = str(saved)
        yield CheckpointSaved(path=str(saved), iteration=it)


def train(
    image: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    model: UNet | None = None,
    metadata: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[TrainingEvent]:
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
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        config = dataclasses.replace(config, **overrides)
    trainer = Trainer(image, labels, config, model=model, metadata=metadata)
    yield from trainer.run()
