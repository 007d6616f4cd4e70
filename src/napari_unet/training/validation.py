"""Predicting with the weights being trained: the previews (a slice or a region) and validation.

Both predict with :func:`napari_unet.tiling.predict_tiled`; :class:`PreviewTarget` says what to show.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..model import UNet
from ..slices import read_slice
from . import events as ev

__all__ = [
    "MIN_WEIGHT_CHANGE",
    "Previews",
    "clip_region",
    "predict_region",
    "predict_slice",
    "validate",
    "validation_event",
    "validation_metrics",
]

#: a preview of the same view is skipped while the weights moved less than this (relative)
MIN_WEIGHT_CHANGE = 1e-3
#: a region covering more than this fraction of the slice is previewed whole
_WHOLE_SLICE = 0.7
#: weights compared to decide whether a preview is worth computing (a strided sample)
_WEIGHT_SAMPLE = 65536

Region = tuple[int, int, int, int]


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


def validation_event(
    it: int,
    guard: Callable[..., tuple[bool, Any]],
    predict: Callable[..., tuple[np.ndarray, Any]],
    labels: Any,
    val_slices: Sequence[int],
    class_names: Sequence[str],
) -> ev.TrainingEvent:
    """:class:`Validation` at iteration ``it``, or the warning saying why there is none."""
    oom, metrics = guard(validate, predict, labels, val_slices, class_names)
    if oom:
        return ev.TrainingWarning("CUDA out of memory during validation: skipped")
    if metrics is None:
        return ev.TrainingWarning(
            f"validation slices {list(val_slices)} have no labelled pixels: validation skipped"
        )
    return ev.Validation(iteration=it, metrics=metrics)


def clip_region(region: Any, shape: tuple[int, int]) -> Region | None:
    """``region`` ``(y0, y1, x0, x1)`` clipped to a slice of ``shape``; None: the whole slice.

    A region covering most of the slice is the whole slice (one preview, no seams).
    """
    if region is None:
        return None
    try:
        y0, y1, x0, x1 = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(
            f"preview region must be (y0, y1, x0, x1) or None, got {region!r}"
        ) from None
    h, w = shape
    y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"preview region {tuple(region)} lies outside the {h} x {w} slice")
    if (y1 - y0) * (x1 - x0) > _WHOLE_SLICE * h * w:
        return None
    return (y0, y1, x0, x1)


def predict_region(
    model: UNet, image: np.ndarray, region: Region | None, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 class map of the slice, probabilities or None): only ``region`` predicted (0
    elsewhere, no probabilities), with the network's context around it; None: the whole slice."""
    if region is None:
        classes, probs = predict_slice(model, image, **kwargs)
        return classes.astype(np.uint8, copy=False), probs
    y0, y1, x0, x1 = region
    h, w = image.shape[-2:]
    m = int(model.context)
    oy, ox = max(0, y0 - m), max(0, x0 - m)
    crop = image[oy : min(h, y1 + m), ox : min(w, x1 + m)]
    classes, _ = predict_slice(model, crop, **{**kwargs, "probabilities": False})
    out = np.zeros((h, w), np.uint8)
    out[y0:y1, x0:x1] = classes[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return out, None


def _weight_sample(model: torch.nn.Module) -> torch.Tensor:
    flat = [p.detach().reshape(-1) for p in model.parameters()]
    stride = max(1, sum(f.numel() for f in flat) // _WEIGHT_SAMPLE)
    return torch.cat([f[::stride] for f in flat]).float().cpu()


class Previews:
    """The slice and region the previews show, whether a new one is worth computing, and it.

    Thread-safe setters (a GUI moves the view while training runs).  ``changed``: the view
    moved or its slice got new labels since the last preview (show it soon).
    """

    def __init__(self, shape: tuple[int, int], z: int) -> None:
        self.shape = shape
        self._lock = threading.Lock()
        self._z, self._region = int(z), None
        self._shown: tuple[int, Region | None] | None = None
        self._weights: torch.Tensor | None = None
        self.changed = False
        #: region of the last preview (None: the whole slice)
        self.last_region: Region | None = None

    def set_slice(self, z: int) -> None:
        with self._lock:
            self.changed = self.changed or int(z) != self._z
            self._z = int(z)

    def set_region(self, region: Any) -> None:
        clipped = clip_region(region, self.shape)
        with self._lock:
            self.changed = self.changed or clipped != self._region
            self._region = clipped

    def labels_changed(self, slices: Sequence[int]) -> None:
        if self._z in slices:
            self.changed = True

    def current(self) -> tuple[int, Region | None]:
        with self._lock:
            return self._z, self._region

    def worth_computing(self, model: torch.nn.Module, view: tuple[int, Region | None]) -> bool:
        """False when ``view`` was the last one shown and the weights barely moved since."""
        if self.changed or view != self._shown or self._weights is None:
            return True
        now = _weight_sample(model)
        moved = float(torch.linalg.vector_norm(now - self._weights))
        return moved >= MIN_WEIGHT_CHANGE * float(torch.linalg.vector_norm(self._weights))

    def shown(self, model: torch.nn.Module, view: tuple[int, Region | None]) -> None:
        """``view`` was previewed with the current weights."""
        self._shown, self._weights = view, _weight_sample(model)
        with self._lock:  # the view may have moved meanwhile
            self.changed = (self._z, self._region) != view

    def events(
        self,
        it: int,
        model: UNet,
        image_slice: Callable[[int], np.ndarray],
        guard: Callable[..., tuple[bool, Any]],
        **predict: Any,
    ) -> Iterator[ev.TrainingEvent]:
        """A :class:`Preview` at iteration ``it`` unless nothing changed; whether one was made.

        ``guard(fn, *args)`` runs the prediction, ``(True, None)`` when out of memory.
        """
        view = self.current()
        if not self.worth_computing(model, view):
            return False
        oom, result = guard(lambda: predict_region(model, image_slice(view[0]), view[1], **predict))
        if oom:
            yield ev.TrainingWarning("CUDA out of memory while computing the preview: skipped")
            return False
        self.shown(model, view)
        self.last_region = view[1]
        yield ev.Preview(
            iteration=it, slice_index=view[0], labels=result[0], probabilities=result[1]
        )
        return True
