"""Segmentation metrics on class and segment maps: pixel error, IoU, Dice, Rand error, VI.

Plain numpy; the ISBI 2012 measures work on the segments of each 2D slice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from skimage import measure
from skimage import metrics as skmetrics

__all__ = [
    "adapted_rand_error",
    "dice_per_class",
    "evaluate_segmentation",
    "iou_per_class",
    "nanmean",
    "pixel_error",
    "segments_from_classes",
    "variation_of_information",
]


def _as_arrays(pred: Any, truth: Any, names: tuple[str, str] = ("pred", "truth")):
    a, b = np.asarray(pred), np.asarray(truth)
    for arr, name in zip((a, b), names):
        if arr.dtype.kind not in "biu":
            raise TypeError(f"{name} must be an integer (label) array, got dtype {arr.dtype}")
        if arr.ndim not in (2, 3):
            raise ValueError(f"{name} must be a 2D image or a 3D stack, got shape {arr.shape}")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} shapes differ: {a.shape} vs {b.shape}")
    return a, b


def pixel_error(pred: Any, truth: Any, ignore: int | None = None) -> float:
    """Fraction of pixels whose predicted class differs from the true class.

    Parameters
    ----------
    pred, truth : array_like of int
        Class maps of equal shape (2D or 3D).
    ignore : int, optional
        A value in ``truth`` whose pixels are skipped (e.g. ``0`` = unlabelled).

    Returns
    -------
    float
        In ``[0, 1]``; NaN if every pixel is ignored.
    """
    p, t = _as_arrays(pred, truth)
    if ignore is not None:
        keep = t != ignore
        p, t = p[keep], t[keep]
    if t.size == 0:
        return math.nan
    return float(np.count_nonzero(p != t) / t.size)


def _overlap_per_class(
    pred: Any, truth: Any, classes: Iterable[int] | None, ignore: int | None, dice: bool
) -> dict[int, float]:
    p, t = _as_arrays(pred, truth)
    if ignore is not None:
        keep = t != ignore
        p, t = p[keep], t[keep]
    if classes is None:
        found = np.union1d(np.unique(p), np.unique(t))
        classes = [int(c) for c in found if ignore is None or c != ignore]
    result: dict[int, float] = {}
    for c in classes:
        c = int(c)
        in_p, in_t = p == c, t == c
        inter = np.count_nonzero(in_p & in_t)
        n_p, n_t = np.count_nonzero(in_p), np.count_nonzero(in_t)
        if n_p + n_t == 0:
            result[c] = math.nan
        elif dice:
            result[c] = 2.0 * inter / (n_p + n_t)
        else:
            result[c] = inter / (n_p + n_t - inter)
    return result


def iou_per_class(
    pred: Any, truth: Any, classes: Iterable[int] | None = None, ignore: int | None = None
) -> dict[int, float]:
    """Intersection over union (Jaccard index) of every class.

    Parameters
    ----------
    pred, truth : array_like of int
        Class maps of equal shape.
    classes : iterable of int, optional
        Classes to report; default: every value found in ``pred`` or ``truth``
        (except ``ignore``).
    ignore : int, optional
        A value in ``truth`` whose pixels are skipped (e.g. ``0`` = unlabelled).

    Returns
    -------
    dict[int, float]
        ``{class: |P & T| / |P | T|}``; NaN for a class absent from both maps.
    """
    return _overlap_per_class(pred, truth, classes, ignore, dice=False)


def dice_per_class(
    pred: Any, truth: Any, classes: Iterable[int] | None = None, ignore: int | None = None
) -> dict[int, float]:
    """Dice coefficient (F1 score) of every class: ``2 |P & T| / (|P| + |T|)``.

    Parameters and return value as in :func:`iou_per_class` (NaN for a class
    absent from both maps).
    """
    return _overlap_per_class(pred, truth, classes, ignore, dice=True)


def segments_from_classes(
    class_map: Any, membrane_class: int = 1, connectivity: int = 1
) -> np.ndarray:
    """Segments (instances) = connected components of the non-membrane pixels.

    Parameters
    ----------
    class_map : array_like of int
        2D class map, or a 3D stack of them.
    membrane_class : int, default 1
        Class value of the boundaries; these pixels get segment 0.
    connectivity : {1, 2}, default 1
        1 = 4-connected, 2 = 8-connected (within a slice).

    Returns
    -------
    numpy.ndarray of int32
        Segment labels ``1..n``, ``0`` on the membrane.  A 3D stack is labelled
        slice by slice (EM sections are evaluated in 2D), with labels unique
        across the whole stack.
    """
    a = np.asarray(class_map)
    if a.dtype.kind not in "biu":
        raise TypeError(f"class_map must be an integer array, got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise ValueError(f"class_map must be 2D or a 3D stack, got shape {a.shape}")
    if connectivity not in (1, 2):
        raise ValueError(
            f"connectivity must be 1 (4-connected) or 2 (8-connected), got {connectivity!r}"
        )
    if a.ndim == 2:
        return measure.label(a != membrane_class, connectivity=connectivity).astype(np.int32)
    out = np.zeros(a.shape, dtype=np.int32)
    offset = 0
    for i, plane in enumerate(a):
        lab, n = measure.label(plane != membrane_class, connectivity=connectivity, return_num=True)
        out[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    return out


def adapted_rand_error(pred_segments: Any, true_segments: Any) -> dict[str, float]:
    """Adapted Rand error (SNEMI3D / ISBI 2012), via ``skimage.metrics.adapted_rand_error``.

    Pixels with segment ``0`` in ``true_segments`` (boundaries) are ignored
    ("foreground-restricted"); predicted ``0`` pixels count as one more segment.

    Parameters
    ----------
    pred_segments, true_segments : array_like of int
        Segment maps of equal shape (any labels; only the partition matters).

    Returns
    -------
    dict
        ``error`` = 1 - F-score of the pair precision/recall; ``precision`` =
        fraction of pixel pairs joined in the prediction that are joined in the
        truth (low for false merges); ``recall`` = fraction of pairs joined in the
        truth that are joined in the prediction (low for false splits).  NaN when
        fewer than two truth pixels are foreground.
    """
    p, t = _as_arrays(pred_segments, true_segments, ("pred_segments", "true_segments"))
    if np.count_nonzero(t) < 2:
        return {"error": math.nan, "precision": math.nan, "recall": math.nan}
    with np.errstate(divide="ignore", invalid="ignore"):
        error, sk_prec, sk_rec = skmetrics.adapted_rand_error(t, p, ignore_labels=(0,))
    # skimage (0.2x) divides its "precision" by the *true* pair count and its
    # "recall" by the *test* pair count, the reverse of its docstring and of
    # Arganda-Carreras et al. 2015; the symmetric error is unaffected.  We report
    # the conventional definitions.
    return {"error": float(error), "precision": float(sk_rec), "recall": float(sk_prec)}


def variation_of_information(pred_segments: Any, true_segments: Any) -> dict[str, float]:
    """Variation of information (in bits), via ``skimage.metrics.variation_of_information``.

    With ``X`` = truth, ``Y`` = prediction: ``split = H(Y|X)`` (over-segmentation,
    how much a true segment is cut up) and ``merge = H(X|Y)`` (under-segmentation).
    ``skimage.metrics.variation_of_information(X, Y)`` returns
    ``[H(Y|X), H(X|Y)]`` = ``[split, merge]`` in this order.  Pixels with
    segment ``0`` in the truth are ignored, as in :func:`adapted_rand_error`.

    Returns
    -------
    dict
        ``split``, ``merge`` and ``total = split + merge``; 0 for identical
        partitions.
    """
    p, t = _as_arrays(pred_segments, true_segments, ("pred_segments", "true_segments"))
    if np.count_nonzero(t) == 0:
        return {"split": math.nan, "merge": math.nan, "total": math.nan}
    split, merge = skmetrics.variation_of_information(t, p, ignore_labels=(0,))
    split, merge = max(float(split), 0.0), max(float(merge), 0.0)  # clip -0.0 / rounding
    return {"split": split, "merge": merge, "total": split + merge}


def evaluate_segmentation(
    pred_classes: Any, true_classes: Any, membrane_class: int = 1
) -> dict[str, Any]:
    """All metrics for a predicted class map against the ground truth.

    Pixel metrics (pixel error, per-class IoU and Dice) are computed on the whole
    image/volume, skipping unlabelled truth pixels (value ``0``).  Segment
    metrics (Rand, VI) are computed per 2D slice -- as the ISBI 2012 challenge
    does -- on the 4-connected components of the non-membrane pixels (truth
    membrane and unlabelled pixels are ignored), then averaged over the slices
    (NaN slices, e.g. with no truth foreground, are skipped).

    Parameters
    ----------
    pred_classes, true_classes : array_like of int
        Class maps ``(H, W)`` or ``(Z, H, W)`` of equal shape.
    membrane_class : int, default 1
        The boundary class.

    Returns
    -------
    dict
        ``pixel_error``, ``iou`` (dict), ``dice`` (dict), ``mean_iou``,
        ``mean_dice`` (means over classes, NaN-skipping), ``rand_error``,
        ``rand_precision``, ``rand_recall``, ``vi_split``, ``vi_merge``,
        ``vi_total``, ``n_slices``.
    """
    p, t = _as_arrays(pred_classes, true_classes, ("pred_classes", "true_classes"))
    iou = iou_per_class(p, t, ignore=0)
    dice = dice_per_class(p, t, ignore=0)
    result: dict[str, Any] = {
        "pixel_error": pixel_error(p, t, ignore=0),
        "iou": iou,
        "dice": dice,
        "mean_iou": nanmean(iou.values()),
        "mean_dice": nanmean(dice.values()),
    }
    p3 = p if p.ndim == 3 else p[None]
    t3 = t if t.ndim == 3 else t[None]
    rand: list[dict[str, float]] = []
    vi: list[dict[str, float]] = []
    for ps, ts in zip(p3, t3):
        pred_seg = segments_from_classes(ps, membrane_class)
        # unlabelled truth pixels become boundary (0) so they are ignored
        true_seg = segments_from_classes(np.where(ts == 0, membrane_class, ts), membrane_class)
        rand.append(adapted_rand_error(pred_seg, true_seg))
        vi.append(variation_of_information(pred_seg, true_seg))
    for key in ("error", "precision", "recall"):
        result[f"rand_{key}"] = nanmean(r[key] for r in rand)
    for key in ("split", "merge", "total"):
        result[f"vi_{key}"] = nanmean(v[key] for v in vi)
    result["n_slices"] = len(p3)
    return result


def nanmean(values: Iterable[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.mean(vals))
