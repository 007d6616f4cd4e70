"""``napari-unet evaluate``: compare a predicted class map with the ground truth.

Metrics (see :mod:`napari_unet.metrics`): pixel error, IoU and Dice of every
class, and -- on segments = 4-connected components of the non-membrane pixels,
per 2D slice as in the ISBI 2012 challenge -- the adapted Rand error and the
variation of information (split/merge).

Which value is the membrane
---------------------------
``--membrane-class VALUE`` names it explicitly.  Default: ``0`` when the truth
file holds only the values 0 and 255 (the ISBI 2012 convention, 0 = membrane,
255 = cell, every pixel labelled), otherwise ``1`` (napari-unet's class 1 =
membrane, with ``0`` = unlabelled, skipped).  The value used is printed and
stored in the JSON.

When the membrane value is ``0``, ``0`` is a class and every pixel counts;
otherwise truth pixels equal to ``0`` are unlabelled and skipped.  Values are
compared as they are in the files; a prediction written by ``napari-unet
predict`` from a ``--dense`` checkpoint already holds the truth's values.

Slices
------
``--slices`` evaluates some slices only: they are taken from the truth, and
from the prediction when it has as many slices as the truth; a prediction
with exactly as many slices as selected (written by ``predict --slices``) is
used as it is.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import (
    SLICES_HELP,
    check_output_path,
    fmt_num,
    format_slices,
    json_safe,
    open_labels,
    parse_slices,
    read_slice,
    unique_values,
)

EPILOG = """\
examples:
  napari-unet evaluate --prediction seg.tif --truth train-labels.tif --slices 20-29
  napari-unet evaluate --prediction seg.zarr --truth truth.tif --membrane-class 1 --json m.json
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare a prediction with the ground truth (pixel error, IoU, Rand, VI)",
        description=(
            "Compare a predicted class map with the ground truth: pixel error, per-class "
            "IoU and Dice, adapted Rand error and variation of information (split/merge)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--prediction", required=True, metavar="P", help="predicted class map (TIFF or zarr)"
    )
    p.add_argument("--truth", required=True, metavar="T", help="ground truth (TIFF or zarr)")
    p.add_argument("--slices", metavar="LIST", help=f"evaluate only these slices. {SLICES_HELP}")
    p.add_argument(
        "--membrane-class",
        type=int,
        metavar="VALUE",
        help="value of the membrane/boundary class in the files (default: 0 for 0/255 "
        "truth files such as ISBI 2012, else 1)",
    )
    p.add_argument("--json", metavar="OUT.json", help="also write the metrics as JSON")
    p.set_defaults(handler=run)


# --------------------------------------------------------------------------- computation


def default_membrane_value(truth_values: np.ndarray) -> int:
    """0 for ISBI-like 0/255 truth (both present, nothing else), else 1."""
    vals = {int(v) for v in truth_values}
    return 0 if vals == {0, 255} else 1


def evaluate_arrays(
    prediction: Any,
    truth: Any,
    *,
    slices: list[int] | None = None,
    membrane_value: int | None = None,
) -> dict[str, Any]:
    """Metrics of ``prediction`` against ``truth``, computed slice by slice.

    ``prediction`` and ``truth`` are ``(Z, H, W)`` or ``(H, W)`` integer arrays
    (numpy, memmap, dask, zarr) holding *file values*; see the module
    docstring for the membrane value and ``slices``.  Pixel metrics are
    accumulated over all evaluated pixels (as
    :func:`napari_unet.metrics.evaluate_segmentation` does on a whole
    volume), segment metrics averaged over the slices, so a volume of any
    size is read one slice at a time.

    Returns
    -------
    dict
        ``pixel_error``, ``iou`` / ``dice`` (``{value: float}``),
        ``membrane_iou``, ``membrane_dice``, ``mean_iou``, ``mean_dice``,
        ``rand_error``, ``rand_precision``, ``rand_recall``, ``vi_split``,
        ``vi_merge``, ``vi_total``, ``membrane_value``, ``zero_is_class``,
        ``slices``, ``n_pixels``, ``per_slice``.
    """
    from ..metrics import evaluate_segmentation

    pshape = tuple(int(s) for s in prediction.shape)
    tshape = tuple(int(s) for s in truth.shape)
    if len(tshape) == 2:
        if slices:
            raise CLIError("--slices: the truth is a single 2D slice")
        if pshape != tshape:
            raise CLIError(f"prediction shape {pshape} does not match truth {tshape}")
        pred3, truth3 = _Expand(prediction), _Expand(truth)
        tz, pz = [0], [0]
    else:
        n = tshape[0]
        if len(pshape) != 3 or pshape[1:] != tshape[1:]:
            raise CLIError(f"prediction shape {pshape} does not match truth {tshape}")
        pred3, truth3 = prediction, truth
        tz = list(slices) if slices else list(range(n))
        if pshape[0] == n:
            pz = tz
        elif slices and pshape[0] == len(tz):
            pz = list(range(len(tz)))  # written by `predict --slices`
        else:
            hint = f" (or {len(tz)} = the number of --slices)" if slices else ""
            raise CLIError(
                f"prediction has {pshape[0]} slices, the truth {n}{hint}: shapes {pshape} "
                f"vs {tshape}"
            )
    truth_values = unique_values(truth3, tz)
    if membrane_value is None:
        membrane_value = default_membrane_value(truth_values)
    zero_is_class = membrane_value == 0
    pred_values = unique_values(pred3, pz)
    values = np.union1d(truth_values, pred_values).astype(np.int64)
    if not zero_is_class:
        values = values[values != 0]
    if values.size and values.min() < 0:
        raise CLIError("labels must not be negative")
    # file values -> classes 1..K (0 stays 0 = unlabelled when it is not a class)
    classes = {int(v): i + 1 for i, v in enumerate(values)}
    membrane_cls = classes.get(int(membrane_value))
    if membrane_cls is None:
        raise CLIError(
            f"the membrane value {membrane_value} occurs in neither file (values "
            f"{', '.join(map(str, truth_values[:8].tolist()))}); set --membrane-class"
        )

    def to_classes(a: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(values, a)
        idx = np.minimum(idx, len(values) - 1)
        hit = values[idx] == a
        out = (idx + 1).astype(np.int32)
        out[~hit] = 0
        return out

    k = len(values)
    n_pred = np.zeros(k + 1, np.int64)
    n_true = np.zeros(k + 1, np.int64)
    inter = np.zeros(k + 1, np.int64)
    errors = 0
    total = 0
    per_slice: list[dict[str, Any]] = []
    for zt, zp in zip(tz, pz):
        t = to_classes(read_slice(truth3, zt))
        p = to_classes(read_slice(pred3, zp))
        labelled = t != 0
        tl, pl = t[labelled], p[labelled]
        n_true += np.bincount(tl, minlength=k + 1)
        n_pred += np.bincount(pl, minlength=k + 1)
        inter += np.bincount(tl[tl == pl], minlength=k + 1)
        errors += int(np.count_nonzero(tl != pl))
        total += int(tl.size)
        seg = evaluate_segmentation(p, t, membrane_class=membrane_cls)
        per_slice.append(
            {
                "slice": int(zt),
                "pixel_error": seg["pixel_error"],
                "rand_error": seg["rand_error"],
                "rand_precision": seg["rand_precision"],
                "rand_recall": seg["rand_recall"],
                "vi_split": seg["vi_split"],
                "vi_merge": seg["vi_merge"],
                "vi_total": seg["vi_total"],
            }
        )
    iou: dict[int, float] = {}
    dice: dict[int, float] = {}
    for v, c in classes.items():
        union = n_pred[c] + n_true[c] - inter[c]
        iou[v] = math.nan if union == 0 else float(inter[c] / union)
        both = n_pred[c] + n_true[c]
        dice[v] = math.nan if both == 0 else float(2 * inter[c] / both)

    def nanmean(xs: list[float]) -> float:
        xs = [x for x in xs if not math.isnan(x)]
        return float(np.mean(xs)) if xs else math.nan

    result: dict[str, Any] = {
        "pixel_error": math.nan if total == 0 else errors / total,
        "iou": iou,
        "dice": dice,
        "membrane_iou": iou[int(membrane_value)],
        "membrane_dice": dice[int(membrane_value)],
        "mean_iou": nanmean(list(iou.values())),
        "mean_dice": nanmean(list(dice.values())),
    }
    for key in ("rand_error", "rand_precision", "rand_recall", "vi_split", "vi_merge", "vi_total"):
        result[key] = nanmean([s[key] for s in per_slice])
    result.update(
        membrane_value=int(membrane_value),
        zero_is_class=zero_is_class,
        slices=[int(z) for z in tz] if len(tshape) == 3 else None,
        n_slices=len(tz),
        n_pixels=total,
        per_slice=per_slice,
    )
    return result


class _Expand:
    """A 2D array seen as a 1-slice stack."""

    def __init__(self, arr: Any) -> None:
        self._arr = arr
        self.shape = (1, *arr.shape)
        self.dtype = arr.dtype

    def __getitem__(self, z: int) -> Any:
        if z != 0:
            raise IndexError(z)
        return self._arr[...] if not hasattr(self._arr, "compute") else self._arr.compute()


def format_report(result: dict[str, Any], *, title: str | None = None) -> str:
    """The metrics as an aligned plain-text table."""
    mv = result["membrane_value"]
    lines = []
    if title:
        lines.append(title)
    sl = result.get("slices")
    scope = f"{result['n_slices']} slice(s)" + (f" ({format_slices(sl)})" if sl else "")
    unl = "every pixel is a class" if result["zero_is_class"] else "0 = unlabelled, skipped"
    lines.append(f"evaluated {scope}, {result['n_pixels']:,} pixels; membrane value {mv}; {unl}")
    rows = [
        ("pixel error", result["pixel_error"]),
        ("membrane IoU", result["membrane_iou"]),
        ("membrane Dice", result["membrane_dice"]),
        ("mean IoU", result["mean_iou"]),
        ("mean Dice", result["mean_dice"]),
        ("adapted Rand error", result["rand_error"]),
        ("  Rand precision (merges)", result["rand_precision"]),
        ("  Rand recall (splits)", result["rand_recall"]),
        ("VI total (bits)", result["vi_total"]),
        ("  VI split", result["vi_split"]),
        ("  VI merge", result["vi_merge"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines.extend(f"  {name:<{width}}  {fmt_num(value)}" for name, value in rows)
    lines.append(f"  {'value':<8}{'IoU':>10}{'Dice':>10}")
    for v in result["iou"]:
        tag = f"{v}{' (membrane)' if v == mv else ''}"
        lines.append(f"  {tag:<8}{fmt_num(result['iou'][v]):>10}{fmt_num(result['dice'][v]):>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    json_path = check_output_path(args.json, "--json") if args.json else None
    truth, _ = open_labels(args.truth, "--truth")
    pred, _ = open_labels(args.prediction, "--prediction")
    n = int(truth.shape[0]) if len(truth.shape) == 3 else 1
    slices = parse_slices(args.slices, n) if args.slices is not None else None
    if slices is not None and len(truth.shape) == 2:
        raise CLIError("--slices: the truth is a single 2D slice")
    result = evaluate_arrays(pred, truth, slices=slices, membrane_value=args.membrane_class)
    result["prediction"] = str(args.prediction)
    result["truth"] = str(args.truth)
    print(format_report(result), flush=True)
    if json_path is not None:
        from ..io import atomic_write

        text = json.dumps(json_safe(result), indent=2)
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(text), suffix=".json")
        print(f"wrote {json_path}", flush=True)
    return 0
