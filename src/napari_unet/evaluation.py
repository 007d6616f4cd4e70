"""Evaluation of a predicted class map against the truth, both in file values, slice by slice.

Volumes of any size are read one slice at a time; the measures are :mod:`napari_unet.metrics`'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .completion import check_complete
from .labels import LabelValueError, map_to_classes
from .metrics import evaluate_segmentation, nanmean
from .slices import array_shape, read_slice, unique_values

__all__ = ["SEGMENT_KEYS", "default_membrane_value", "evaluate_arrays", "paired_slices"]

#: the segment metrics, computed per 2D slice and averaged over the slices
SEGMENT_KEYS = ("rand_error", "rand_precision", "rand_recall", "vi_split", "vi_merge", "vi_total")


def default_membrane_value(truth_values: np.ndarray) -> int:
    """0 for ISBI-like 0/255 truth (both present, nothing else), else 1."""
    vals = {int(v) for v in truth_values}
    return 0 if vals == {0, 255} else 1


def paired_slices(
    pshape: Sequence[int], tshape: Sequence[int], slices: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """The truth slices evaluated and the prediction slice compared with each.

    ``slices`` are taken from the truth, and from the prediction when it has as
    many slices as the truth; a prediction with exactly as many slices as
    selected (written by ``predict --slices``) is used as it is.
    """
    pshape, tshape = tuple(pshape), tuple(tshape)
    if len(tshape) == 2:
        if slices:
            raise ValueError("slices: the truth is a single 2D slice")
        if pshape != tshape:
            raise ValueError(f"prediction shape {pshape} does not match truth {tshape}")
        return [0], [0]
    n = tshape[0]
    if len(pshape) != 3 or pshape[1:] != tshape[1:]:
        raise ValueError(f"prediction shape {pshape} does not match truth {tshape}")
    tz = list(slices) if slices else list(range(n))
    if pshape[0] == n:
        return tz, tz
    if slices and pshape[0] == len(tz):
        return tz, list(range(len(tz)))
    hint = f" (or {len(tz)} = the number of slices selected)" if slices else ""
    raise ValueError(
        f"prediction has {pshape[0]} slices, the truth {n}{hint}: shapes {pshape} vs {tshape}"
    )


def _class_values(
    truth_values: np.ndarray, pred_values: np.ndarray, membrane_value: int
) -> tuple[np.ndarray, int]:
    """The file values that are classes (sorted) and the class of the membrane value."""
    values = np.union1d(truth_values, pred_values).astype(np.int64)
    if membrane_value != 0:
        values = values[values != 0]  # 0 = unlabelled
    if values.size and values.min() < 0:
        raise LabelValueError("labels must not be negative")
    hits = np.flatnonzero(values == membrane_value)
    if hits.size == 0:
        shown = ", ".join(map(str, truth_values[:8].tolist()))
        raise ValueError(
            f"the membrane value {membrane_value} occurs in neither file (values {shown}); "
            "give the membrane value explicitly"
        )
    return values, int(hits[0]) + 1


class _Overlap:
    """Pixel counts per class accumulated over slices: IoU, Dice and pixel error."""

    def __init__(self, k: int) -> None:
        self.n_pred = np.zeros(k + 1, np.int64)
        self.n_true = np.zeros(k + 1, np.int64)
        self.inter = np.zeros(k + 1, np.int64)
        self.errors = 0
        self.total = 0

    def add(self, p: np.ndarray, t: np.ndarray) -> None:
        labelled = t != 0
        tl, pl = t[labelled], p[labelled]
        k1 = len(self.n_true)
        self.n_true += np.bincount(tl, minlength=k1)
        self.n_pred += np.bincount(pl, minlength=k1)
        self.inter += np.bincount(tl[tl == pl], minlength=k1)
        self.errors += int(np.count_nonzero(tl != pl))
        self.total += int(tl.size)

    def scores(self, c: int) -> tuple[float, float]:
        """IoU and Dice of class ``c`` (NaN when it is in neither map)."""
        both = self.n_pred[c] + self.n_true[c]
        union = both - self.inter[c]
        iou = math.nan if union == 0 else float(self.inter[c] / union)
        dice = math.nan if both == 0 else float(2 * self.inter[c] / both)
        return iou, dice


def evaluate_arrays(
    prediction: Any,
    truth: Any,
    *,
    slices: list[int] | None = None,
    membrane_value: int | None = None,
) -> dict[str, Any]:
    """Metrics of ``prediction`` against ``truth``, computed slice by slice.

    Both are ``(Z, H, W)`` or ``(H, W)`` integer arrays (numpy, memmap, dask,
    zarr) of *file values*.  The membrane value defaults to
    :func:`default_membrane_value` of the truth; when it is ``0``, ``0`` is a
    class, otherwise truth pixels ``0`` are unlabelled and skipped.  Pixel
    metrics are accumulated over all evaluated pixels (as
    :func:`napari_unet.metrics.evaluate_segmentation` does on a whole volume),
    segment metrics averaged over the slices.  See :func:`paired_slices`.
    A zarr prediction whose completion record (:mod:`napari_unet.completion`)
    misses evaluated slices raises :class:`~napari_unet.completion.IncompleteResultError`.

    Returns
    -------
    dict
        ``pixel_error``, ``iou`` / ``dice`` (``{value: float}``), ``membrane_iou``,
        ``membrane_dice``, ``mean_iou``, ``mean_dice``, the :data:`SEGMENT_KEYS`,
        ``membrane_value``, ``zero_is_class``, ``slices``, ``n_slices``, ``n_pixels``,
        ``per_slice``.
    """
    tshape = array_shape(truth, "truth")
    tz, pz = paired_slices(array_shape(prediction, "prediction"), tshape, slices)
    check_complete(prediction, pz, "the prediction")
    truth_values = unique_values(truth, tz)
    if membrane_value is None:
        membrane_value = default_membrane_value(truth_values)
    membrane_value = int(membrane_value)
    values, membrane_cls = _class_values(
        truth_values, unique_values(prediction, pz), membrane_value
    )
    overlap = _Overlap(len(values))
    per_slice: list[dict[str, Any]] = []
    for zt, zp in zip(tz, pz):
        t = map_to_classes(read_slice(truth, zt), values)
        p = map_to_classes(read_slice(prediction, zp), values)
        overlap.add(p, t)
        seg = evaluate_segmentation(p, t, membrane_class=membrane_cls)
        per_slice.append(
            {"slice": int(zt), "pixel_error": seg["pixel_error"]}
            | {key: seg[key] for key in SEGMENT_KEYS}
        )
    scores = {int(v): overlap.scores(c) for c, v in enumerate(values, start=1)}
    iou = {v: s[0] for v, s in scores.items()}
    dice = {v: s[1] for v, s in scores.items()}
    result: dict[str, Any] = {
        "pixel_error": math.nan if overlap.total == 0 else overlap.errors / overlap.total,
        "iou": iou,
        "dice": dice,
        "membrane_iou": iou[membrane_value],
        "membrane_dice": dice[membrane_value],
        "mean_iou": nanmean(iou.values()),
        "mean_dice": nanmean(dice.values()),
    }
    result.update({key: nanmean(s[key] for s in per_slice) for key in SEGMENT_KEYS})
    result.update(
        membrane_value=membrane_value,
        zero_is_class=membrane_value == 0,
        slices=[int(z) for z in tz] if len(tshape) == 3 else None,
        n_slices=len(tz),
        n_pixels=overlap.total,
        per_slice=per_slice,
    )
    return result
