"""TrainConfig: every setting of a training run, its accepted values stated once.

Simple fields are declared with :func:`napari_unet.fields.bounded`; a few cross-field rules follow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..augment import Augmentation
from ..checks import ArgumentError, is_int, is_number
from ..fields import bounded, validate_fields
from ..losses import LOSS_MODES
from ..model import PRESETS
from .schedule import LR_SCHEDULES

__all__ = ["TrainConfig", "unknown_fields"]


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
    loss : {"wce", "dice", "wce+dice", "jaccard", "wce+jaccard"}, default "wce+dice"
        See :func:`napari_unet.losses.combined_loss`.
    patch_size : int or None, default None
        Side of the square *input* patch.  ``None``: for a same-padded net (the
        "small" preset) 128 on a CPU and 256 on a CUDA GPU; for a valid-padded
        net the input giving a 388-pixel output (572 for the "paper" preset).
        Rounded up to the next size the network accepts
        (:meth:`UNet.valid_input_size`), and capped to what the labelled slices need.
    batch_size : int, default 8
        Halved automatically (then the patch) when CUDA runs out of memory.
    iterations : int or None, default 500
        Optimiser steps; ``None`` = no limit (then ``max_minutes`` is required).
    max_minutes : float or None, default None
        Wall-clock limit; training stops at whichever limit comes first.
    learning_rate : float, default 2e-3
        Peak learning rate of AdamW (the top of the cyclic schedule).
    weight_decay : float, default 1e-4
        AdamW's decoupled weight decay.
    lr_schedule : {"cosine", "constant", "cyclic"}, default "cosine"
        ``"cosine"`` decays from ``learning_rate`` to ``min_learning_rate`` over
        the run (the progress is the larger of the iteration and the elapsed-time
        fractions); ``"cyclic"`` is triangular between ``min_learning_rate`` and
        ``learning_rate`` with a period of ``lr_period`` iterations
        (:func:`napari_unet.training.schedule.learning_rate`).
    min_learning_rate : float or None, default None
        The lowest rate of the cosine and cyclic schedules (at most
        ``learning_rate``); ``None`` = 5 % of ``learning_rate``.
    lr_period : int, default 200
        Iterations of one cycle of the cyclic schedule (minimum -> maximum -> minimum).
    warmup_iterations : int, default 20
        Linear learning-rate warm-up at the start of the run (the trainer uses
        at most 10 % of ``iterations``); the schedule starts after it.
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
        Stored with the checkpoint; missing entries get the defaults of
        :mod:`napari_unet.classes` ("membrane"/"cell" for 2 classes).
    val_slices : list of int or None
        Slices held out from training and evaluated on their labelled pixels.
    val_every : int, default 100
        Iterations between validations; a run that would validate less than
        twice validates about five times instead
        (:func:`napari_unet.training.schedule.validation_interval`).
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
        else float32.
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

    model: str = bounded("small", kind="choice", choices=PRESETS)
    loss: str = bounded("wce+dice", kind="choice", choices=LOSS_MODES)
    patch_size: int | None = bounded(None, kind="int", low=8, optional=True)
    batch_size: int = bounded(8, kind="int", low=1)
    iterations: int | None = bounded(500, kind="int", low=1, optional=True)
    max_minutes: float | None = bounded(None, kind="float", low=0, low_open=True, optional=True)
    learning_rate: float = bounded(2e-3, kind="float", low=0, low_open=True)
    weight_decay: float = bounded(1e-4, kind="float", low=0)
    lr_schedule: str = bounded("cosine", kind="choice", choices=LR_SCHEDULES)
    min_learning_rate: float | None = bounded(
        None, kind="float", low=0, low_open=True, optional=True
    )
    lr_period: int = bounded(200, kind="int", low=2)
    warmup_iterations: int = bounded(20, kind="int", low=0)
    grad_clip: float | None = bounded(5.0, kind="float", low=0, low_open=True, optional=True)
    augmentation: Augmentation = field(default_factory=Augmentation)
    w0: float = bounded(3.0, kind="float", low=0)
    sigma: float = bounded(5.0, kind="float", low=0, low_open=True)
    class_weights: str | dict[int, float] | None = None
    object_class: int | None = bounded(None, kind="int", low=1, optional=True)
    n_classes: int | None = bounded(None, kind="int", low=2, optional=True)
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    val_slices: list[int] | None = None
    val_every: int = bounded(100, kind="int", low=1)
    preview_every_s: float = bounded(5.0, kind="float", low=0)
    checkpoint_path: str | None = None
    checkpoint_every_s: float = bounded(60.0, kind="float", low=0, low_open=True)
    device: str = "auto"
    amp: bool = bounded(True, kind="bool")
    channels_last: bool = bounded(True, kind="bool")
    seed: int = bounded(0, kind="int")
    label_oversampling: float = bounded(0.9, kind="float", low=0, high=1)
    num_threads: int | None = bounded(None, kind="int", low=1, optional=True)
    labels_rescan_s: float = bounded(2.0, kind="float", low=0)

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

    def validate(self) -> TrainConfig:
        """Check every field; raise ``ValueError``/``TypeError`` naming the bad one.

        Returns ``self``, for chaining.
        """
        validate_fields(self)
        for rule in _RULES:
            rule(self)
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
            elif f.name in ("checkpoint_path", "device") and value is not None:
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
        unknown = unknown_fields(data)
        if unknown:
            known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
            raise ValueError(
                f"unknown TrainConfig field(s) {', '.join(map(repr, unknown))}; "
                f"known fields: {known}"
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


def unknown_fields(names: Iterable[str]) -> list[str]:
    """The sorted names that are not :class:`TrainConfig` fields."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return sorted(set(names) - known)


# --------------------------------------------------------------------------- cross-field rules


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ArgumentError(message)


def _check_limit(cfg: TrainConfig) -> None:
    _need(
        cfg.iterations is not None or cfg.max_minutes is not None,
        "set iterations or max_minutes (or both): training needs a limit",
    )


def _check_learning_rates(cfg: TrainConfig) -> None:
    low = cfg.min_learning_rate
    if low is not None:
        _need(
            low <= cfg.learning_rate,
            f"min_learning_rate {low:g} is above learning_rate {cfg.learning_rate:g}",
        )


def _check_augmentation(cfg: TrainConfig) -> None:
    _need(
        isinstance(cfg.augmentation, Augmentation),
        "augmentation must be a napari_unet.augment.Augmentation, "
        f"got {type(cfg.augmentation).__name__}",
    )


def _check_class_weights(cfg: TrainConfig) -> None:
    cw = cfg.class_weights
    if not isinstance(cw, Mapping):
        _need(
            cw is None or cw == "balanced",
            f"class_weights must be 'balanced', None or a {{class: weight}} dict, got {cw!r}",
        )
        return
    for key, value in cw.items():
        _need(
            is_int(key) and key >= 1, f"class_weights keys must be class numbers >= 1, got {key!r}"
        )
        _need(
            is_number(value) and math.isfinite(value) and value >= 0,
            f"class_weights[{key}] must be a number >= 0, got {value!r}",
        )


def _check_classes(cfg: TrainConfig) -> None:
    """``object_class``, ``class_names`` and ``class_colors`` against ``n_classes``."""
    n = cfg.n_classes
    if n is not None and cfg.object_class is not None:
        _need(
            cfg.object_class <= n, f"object_class {cfg.object_class} is not one of the {n} classes"
        )
    for name in ("class_names", "class_colors"):
        value = getattr(cfg, name)
        if value is None:
            continue
        _need(
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and all(isinstance(v, str) for v in value),
            f"{name} must be a list of strings or None, got {value!r}",
        )
        _need(n is None or len(value) == n, f"{name} has {len(value)} entries but n_classes is {n}")


def _check_val_slices(cfg: TrainConfig) -> None:
    val = cfg.val_slices
    _need(
        val is None
        or (
            isinstance(val, Sequence)
            and not isinstance(val, str)
            and all(is_int(z) and z >= 0 for z in val)
        ),
        f"val_slices must be a list of slice indices >= 0 or None, got {val!r}",
    )


def _check_path_and_device(cfg: TrainConfig) -> None:
    _need(
        cfg.checkpoint_path is None or isinstance(cfg.checkpoint_path, (str, Path)),
        f"checkpoint_path must be a path or None, got {cfg.checkpoint_path!r}",
    )
    _need(
        isinstance(cfg.device, (str, torch.device)),
        f"device must be a string such as 'auto', 'cpu' or 'cuda', got {cfg.device!r}",
    )


_RULES = (
    _check_limit,
    _check_learning_rates,
    _check_augmentation,
    _check_class_weights,
    _check_classes,
    _check_val_slices,
    _check_path_and_device,
)
