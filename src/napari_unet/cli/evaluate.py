"""``napari-unet evaluate``: compare a predicted class map with the ground truth.

It reads both files and prints :func:`napari_unet.evaluation.evaluate_arrays` as a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..slices import format_slices
from . import CLIError
from ._common import (
    VOLUME_HELP,
    add_slices_argument,
    add_subcommand,
    fmt_num,
    json_safe,
    open_labels,
    parse_slices,
)
from ._outputs import prepare_output

SUMMARY = "compare a prediction with the ground truth (pixel error, IoU, Rand, VI)"

DESCRIPTION = """\
Compare a predicted class map with the ground truth: pixel error, per-class IoU and
Dice, and -- on the 4-connected segments of the non-membrane pixels of each 2D slice,
as in the ISBI 2012 challenge -- the adapted Rand error and the variation of
information (split/merge). Values are compared as they are in the files; a prediction
of a --dense checkpoint already holds the truth's values.
"""

EPILOG = """\
examples:
  napari-unet evaluate --prediction seg.tif --truth train-labels.tif --slices 20-29
  napari-unet evaluate --prediction seg.zarr --truth truth.tif --membrane-class 1 --json m.json
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(sub, "evaluate", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument(
        "--prediction", required=True, metavar="P", help=f"predicted class map: {VOLUME_HELP}"
    )
    p.add_argument("--truth", required=True, metavar="T", help=f"ground truth: {VOLUME_HELP}")
    add_slices_argument(
        p,
        "--slices",
        "evaluate only these slices of the truth; the prediction holds all slices or exactly "
        "these (predict --slices)",
    )
    p.add_argument(
        "--membrane-class",
        type=int,
        metavar="VALUE",
        help="value of the membrane/boundary class in the files (default: 0 for 0/255 "
        "truth files such as ISBI 2012, where every pixel is a class; else 1, with 0 = "
        "unlabelled, skipped)",
    )
    p.add_argument("--json", metavar="OUT.json", help="also write the metrics as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


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
    from ..completion import IncompleteResultError
    from ..evaluation import evaluate_arrays

    json_path = None
    if args.json:
        json_path = prepare_output(args.json, "--json", overwrite=args.overwrite)
    truth, _ = open_labels(args.truth, "--truth")
    pred, _ = open_labels(args.prediction, "--prediction")
    n = int(truth.shape[0]) if len(truth.shape) == 3 else 1
    slices = parse_slices(args.slices, n) if args.slices is not None else None
    if slices is not None and len(truth.shape) == 2:
        raise CLIError("--slices: the truth is a single 2D slice")
    try:
        result = evaluate_arrays(pred, truth, slices=slices, membrane_value=args.membrane_class)
    except IncompleteResultError as exc:
        raise CLIError(f"--prediction {args.prediction}: {exc}") from None
    result["prediction"] = str(args.prediction)
    result["truth"] = str(args.truth)
    print(format_report(result), flush=True)
    if json_path is not None:
        from ..io import atomic_write

        text = json.dumps(json_safe(result), indent=2)
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(text), suffix=".json")
        print(f"wrote {json_path}", flush=True)
    return 0
