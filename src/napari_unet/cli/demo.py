"""``napari-unet demo``: train, predict and evaluate on the synthetic sample, headless.

The smoke test for a new server; it runs ``napari-unet train/predict/evaluate`` and prints them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..slices import format_slices
from . import CLIError
from ._common import (
    THREADS_HELP,
    add_device_argument,
    add_subcommand,
    check_device,
    positive_float,
    positive_int,
)

SUMMARY = "train, predict and evaluate on the synthetic sample (smoke test)"
DESCRIPTION = (
    "Run the whole loop headless on a synthetic EM stack written to --out: train on 3 fully "
    "labelled slices, predict every slice, evaluate on the slices not trained on. It runs "
    "napari-unet train, predict and evaluate and prints those commands."
)

DEFAULT_SHAPE = (16, 256, 256)
DEFAULT_MINUTES = 2.0


def _shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X like 16,256,256, got {text!r}") from None
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes Z,Y,X, got {text!r}")
    if parts[0] < 2:
        raise argparse.ArgumentTypeError("the demo needs at least 2 slices (train + evaluate)")
    if min(parts[1:]) < 32:
        raise argparse.ArgumentTypeError("slices must be at least 32 x 32 pixels")
    return parts  # type: ignore[return-value]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(sub, "demo", run, SUMMARY, DESCRIPTION)
    limit = p.add_mutually_exclusive_group()
    limit.add_argument(
        "--minutes",
        type=positive_float,
        metavar="M",
        help=f"training time in minutes (default {DEFAULT_MINUTES:g})",
    )
    limit.add_argument(
        "--iterations", type=positive_int, metavar="N", help="train for N iterations instead"
    )
    add_device_argument(p)
    p.add_argument(
        "--out",
        default="napari-unet-demo",
        metavar="DIR",
        help="folder for the files (default ./napari-unet-demo)",
    )
    p.add_argument(
        "--shape",
        type=_shape,
        default=DEFAULT_SHAPE,
        metavar="Z,Y,X",
        help="size of the synthetic stack (default 16,256,256)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic stack and training")
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)


def _call(argv: list[str]) -> None:
    from . import build_parser

    print("$ napari-unet " + " ".join(shlex.quote(a) for a in argv), flush=True)
    args = build_parser().parse_args(argv)
    code = int(args.handler(args) or 0)
    if code != 0:
        raise CLIError(f"'napari-unet {argv[0]}' stopped with exit status {code}")


def _write_sample(out: Path, shape: tuple[int, int, int], seed: int) -> tuple[Path, Path]:
    """The synthetic stack and its exact labels as ``out/image.tif`` and ``out/labels.tif``."""
    import tifffile

    from ..io import write_labels_tiff
    from ..sample_data import synthetic_em

    image, labels = synthetic_em(shape, seed=seed)
    image_path, labels_path = out / "image.tif", out / "labels.tif"
    try:
        tifffile.imwrite(image_path, image, imagej=True, metadata={"axes": "ZYX"})
    except OSError as exc:
        raise CLIError(f"{image_path}: could not write ({exc})") from None
    write_labels_tiff(labels_path, labels)
    return image_path, labels_path


def run(args: argparse.Namespace) -> int:
    from ..classes import DEFAULT_CLASS_NAMES

    check_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file, not a folder")
    if not out.parent.exists():
        raise CLIError(f"--out {out}: folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    z, y, x = args.shape
    image_path, labels_path = _write_sample(out, (z, y, x), args.seed)
    n_train = min(3, z - 1)
    train = sorted({int(np.rint(v)) for v in np.linspace(0, z - 1, n_train + 2)[1:-1]})
    held_out = [s for s in range(z) if s not in train]
    print(
        f"synthetic EM stack {z} x {y} x {x} (1 = {DEFAULT_CLASS_NAMES[0]}, 2 = "
        f"{DEFAULT_CLASS_NAMES[1]}) in {out}/; training on "
        f"slices {format_slices(train)}, evaluating on {format_slices(held_out)}",
        flush=True,
    )
    limit = (
        ["--iterations", str(args.iterations)]
        if args.iterations is not None
        else ["--minutes", f"{args.minutes if args.minutes is not None else DEFAULT_MINUTES:g}"]
    )
    model_path, pred_path, json_path = (
        out / "model.pt",
        out / "prediction.tif",
        out / "metrics.json",
    )
    common = ["--device", args.device]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    _call(
        [
            "train",
            "--image", str(image_path),
            "--labels", str(labels_path),
            "--slices", format_slices(train),
            "--class-names", ",".join(DEFAULT_CLASS_NAMES),
            *limit,
            *common,
            "--seed", str(args.seed),
            "--out", str(model_path),
            "--overwrite",
        ]
    )  # fmt: skip
    _call(
        [
            "predict",
            "--model", str(model_path),
            "--image", str(image_path),
            *common,
            "--out", str(pred_path),
            "--overwrite",
        ]
    )  # fmt: skip
    _call(
        [
            "evaluate",
            "--prediction", str(pred_path),
            "--truth", str(labels_path),
            "--slices", format_slices(held_out),
            "--json", str(json_path),
            "--overwrite",
        ]
    )  # fmt: skip
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; files in {out}/", flush=True)
    sys.stdout.flush()
    return 0
