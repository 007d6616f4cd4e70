"""What a Trainer is given, checked: image and labels, validation slices, model, classes.

Each check raises a one-line ``ValueError``/``TypeError`` a user can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..classes import reconcile_classes
from ..model import UNet
from ..normalization import check_intensity, stack_normalization, training_statistics
from ..slices import array_shape, format_slices, read_slice
from .config import TrainConfig
from .live_labels import MAX_NONFINITE_FRACTION, LiveLabels, find_labelled_slices

__all__ = [
    "build_model",
    "check_arrays",
    "check_classes",
    "class_names_and_colors",
    "held_out_slices",
    "nonfinite_check",
    "normalization_stats",
    "single_class_warning",
    "training_labels",
]


def check_arrays(image: Any, labels: Any) -> tuple[int, ...]:
    """The shape of ``image`` after checking it and ``labels`` against each other."""
    shape = array_shape(image)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"image must be a 2D (H, W) or 3D (Z, H, W) grayscale array, got shape {shape}"
        )
    if min(shape) < 1:
        raise ValueError(f"image is empty (shape {shape})")
    lshape = array_shape(labels, "labels")
    if lshape != shape:
        raise ValueError(f"labels shape {lshape} does not match image {shape}")
    ldtype = getattr(labels, "dtype", None)  # never np.asarray: a lazy volume would load whole
    ldtype = np.dtype(ldtype if ldtype is not None else np.asarray(labels).dtype)
    if ldtype.kind not in "iu":
        raise TypeError(
            f"labels must be an integer array (0 = unlabelled, 1..K = classes), got dtype {ldtype}"
        )
    idtype = np.dtype(getattr(image, "dtype", np.float32))
    if idtype.kind not in "biuf":
        raise TypeError(f"image must be a numeric array, got dtype {idtype}")
    return shape


def held_out_slices(val_slices: Any, n_slices: int) -> list[int]:
    """The sorted validation slices, checked against the stack."""
    val = sorted({int(z) for z in (val_slices or [])})
    bad = [z for z in val if z >= n_slices]
    if bad:
        raise ValueError(
            f"val_slices {bad} are out of range: the image has {n_slices} slice(s) "
            f"(0..{n_slices - 1})"
        )
    return val


def training_labels(labels: Any, n_slices: int, val: list[int]) -> dict[int, np.ndarray]:
    """The raw labels of the labelled slices that are not validation slices."""
    labelled = find_labelled_slices(labels, n_slices)
    if not labelled:
        raise ValueError("no labelled pixels on any slice: paint at least one slice")
    train_slices = [z for z in labelled if z not in val]
    if not train_slices:
        raise ValueError(
            f"all labelled slices {labelled} are validation slices "
            f"(val_slices={val}): label at least one other slice for training"
        )
    raw = {z: np.asarray(read_slice(labels, z)) for z in train_slices}
    lo = min(int(r.min()) for r in raw.values())
    if lo < 0:
        raise ValueError(
            f"labels contain the negative value {lo}: use 0 for unlabelled and 1..K for classes"
        )
    return raw


def build_model(config: TrainConfig, model: UNet | None, hi: int) -> UNet:
    """``model`` checked against the largest label ``hi``, or a new preset for the labels."""
    if model is not None:
        if not isinstance(model, UNet):
            raise TypeError(f"model must be a napari_unet UNet, got {type(model).__name__}")
        if config.n_classes is not None and config.n_classes != model.n_classes:
            raise ValueError(
                f"config.n_classes={config.n_classes} but the model predicts "
                f"{model.n_classes} classes"
            )
        if hi > model.n_classes:
            raise ValueError(
                f"labels contain class {hi} but the model predicts {model.n_classes} classes: "
                f"fine-tune with labels 1..{model.n_classes} or train a new model"
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
    return model


def check_classes(config: TrainConfig, n_classes: int) -> int:
    """The object class of the border weight map, after checking the class settings."""
    object_class = config.object_class if config.object_class is not None else n_classes
    if object_class > n_classes:
        raise ValueError(f"object_class {object_class} is not one of the {n_classes} classes")
    if isinstance(config.class_weights, Mapping):
        bad = [k for k in config.class_weights if k > n_classes]
        if bad:
            raise ValueError(
                f"class_weights names class(es) {bad} but there are only {n_classes} classes"
            )
    return object_class


def class_names_and_colors(
    config: TrainConfig, n_classes: int, metadata: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """The config's class names and colours, else the checkpoint's, completed to ``n_classes``."""
    names = config.class_names if config.class_names is not None else metadata.get("class_names")
    colors = config.class_colors
    if colors is None:
        colors = metadata.get("class_colors")
    return reconcile_classes(n_classes, names, colors)


def normalization_stats(
    image: Any, metadata: Mapping[str, Any]
) -> tuple[dict[str, float], dict[str, Any] | None, dict[str, float], str | None]:
    """How training normalises ``image``: ``(recorded, intensity, applied, note)``.

    A new model records the image's statistics and intensity range
    (:func:`napari_unet.normalization.training_statistics`) and applies them.
    Fine-tuning keeps the checkpoint's (the model's frame) and applies them
    through :func:`napari_unet.normalization.stack_normalization`, so another
    dtype or range is mapped onto the one the model was trained on; ``note``
    says so (or None).
    """
    norm = metadata.get("normalization")
    if isinstance(norm, Mapping) and "mean" in norm and "std" in norm:
        stats = {"mean": float(norm["mean"]), "std": float(norm["std"])}
        intensity = metadata.get("intensity")
        if intensity is not None:
            intensity = check_intensity(intensity)
        applied, note = stack_normalization(image, stats, intensity)
    else:
        stats, intensity = training_statistics(image)
        applied, note = stats, None
    if not stats["std"] > 0:
        raise ValueError(f"normalization std must be > 0, got {stats['std']}")
    return stats, intensity, applied, note


def nonfinite_check(live: LiveLabels) -> str | None:
    """Refuse too many NaN/inf pixels on the training slices; a warning for a few (or None)."""
    bad = live.nonfinite_at_start
    n_bad, total = sum(bad.values()), max(1, live.pixels_at_start)
    where = format_slices(sorted(bad))
    if n_bad > MAX_NONFINITE_FRACTION * total:
        raise ValueError(
            f"{n_bad:,} of the {total:,} pixels ({100 * n_bad / total:.1f} %) of the training "
            f"slices are NaN or infinite (slices {where}); training masks at most "
            f"{100 * MAX_NONFINITE_FRACTION:g} % of them out of the loss: fix the image first"
        )
    if not live.slices:
        raise ValueError(
            f"every labelled pixel lies on a NaN or infinite image pixel (slices {where}): "
            "nothing is left to train on"
        )
    if not n_bad:
        return None
    return (
        f"{n_bad:,} NaN/inf pixels on training slice(s) {where} are left out of the loss "
        "(treated as unlabelled) and of the normalisation"
    )


def single_class_warning(raw: Mapping[int, np.ndarray], class_names: list[str]) -> str | None:
    """A warning when the training labels hold a single class (or None).

    With one class painted the loss is lowest when that class is predicted
    everywhere: training runs, but the model is useless until another class
    is painted.
    """
    present: set[int] = set()
    for r in raw.values():
        present.update(int(v) for v in np.unique(r) if v)
        if len(present) > 1:
            return None
    if len(present) != 1:
        return None
    (value,) = present
    name = class_names[value - 1] if 0 < value <= len(class_names) else str(value)
    return (
        f"the training labels hold only one class ({name!r}, label {value}) on slice(s) "
        f"{format_slices(sorted(raw))}: the model will learn to predict it everywhere; "
        "paint some pixels of another class too"
    )
