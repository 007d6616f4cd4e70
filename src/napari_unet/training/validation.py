"""Predicting one slice with the weights being trained, and the validation metrics.

Previews and validation both predict with :func:`napari_unet.tiling.predict_tiled`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..model import UNet
from ..slices import read_slice

__all__ = ["predict_slice", "validate", "validation_metrics"]


def predict_slice(
    model: UNet,
    image: np.ndarray,
    *,
    device: torch.device,
    amp: bool,
    normalization: Mapping[str, float],
    probabilities: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(class map 1..K, float16 probabilities (K, H, W) or None) of one slice.

    The model is put in eval mode for the prediction and left as it was.
    """
    from ..tiling import predict_tiled
    from ..tiling.predict import NonFiniteWarning

    kwargs: dict[str, Any] = {}
    if model.padding == "same":
        kwargs["overlap"] = model.context  # fast; seams are negligible
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteWarning)  # training reports them itself
            result = predict_tiled(
                model,
                image,
                device=device,
                amp=amp,
                return_probabilities=probabilities,
                normalization=dict(normalization),
                probabilities_dtype=np.float16,
                **kwargs,
            )
    finally:
        model.train(was_training)
    if probabilities:
        classes, probs = result
        return np.asarray(classes), np.asarray(probs, dtype=np.float16)
    return np.asarray(result), None


def validation_metrics(
    predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], class_names: Sequence[str]
) -> dict[str, float]:
    """``pixel_error``, ``iou_<name>`` per class, ``mean_iou`` and ``n_pixels`` of the
    labelled pixels (``truths`` > 0) of some slices."""
    from .. import metrics

    preds, labelled = [], []
    for pred, truth in zip(predictions, truths):
        mask = truth > 0
        preds.append(np.asarray(pred)[mask].astype(np.int32))
        labelled.append(truth[mask].astype(np.int32))
    pred = np.concatenate(preds)[None]
    truth = np.concatenate(labelled)[None]
    out: dict[str, float] = {
        "pixel_error": float(metrics.pixel_error(pred, truth)),
        "n_pixels": float(truth.size),
    }
    ious = metrics.iou_per_class(pred, truth, classes=range(1, len(class_names) + 1))
    values = []
    for k, name in enumerate(class_names, start=1):
        out[f"iou_{name}"] = float(ious[k])
        if not math.isnan(ious[k]):
            values.append(ious[k])
    out["mean_iou"] = float(np.mean(values)) if values else math.nan
    return out


def validate(
    predict: Callable[..., tuple[np.ndarray, Any]],
    labels: Any,
    val_slices: Sequence[int],
    class_names: Sequence[str],
) -> dict[str, float] | None:
    """:func:`validation_metrics` of the labelled validation slices of ``labels``, predicted
    with ``predict(z, probabilities=False)``; None when none of them is labelled."""
    preds: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    for z in val_slices:
        truth = np.asarray(read_slice(labels, z))
        if np.any(truth > 0):
            preds.append(predict(z, probabilities=False)[0])
            truths.append(truth)
    return validation_metrics(preds, truths, class_names) if truths else None
