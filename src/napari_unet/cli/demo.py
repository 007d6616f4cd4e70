"""``napari-unet demo``: the whole loop headless on the synthetic sample.

Writes a synthetic EM stack and its exact labels to ``--out`` (default
``./napari-unet-demo``), trains on three fully labelled slices for a couple of
minutes, predicts every slice and evaluates on the slices it did not train
on -- the smoke test to run on a new server.  It runs the very same code as
``napari-unet train/predict/evaluate`` and prints the equivalent commands.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from . import CLIError
from ._common import THREADS_HELP, check_device, format_slices, positive_float, positive_int

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
    p = sub.add_parser(
        "demo",
        help="train, predict and evaluate on the synthetic sample (smoke test)",
        description=(
            "Run the whole loop headless on the synthetic EM sample: train on 3 labelled "
            "slices, predict every slice, evaluate on the slices not trained on."
        ),
    )
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
    p.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda, mps"
    )
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
    p.set_defaults(handler=run)


def _call(argv: list[str]) -> None:
    from . import build_parser

    print("$ napari-unet " + " ".join(shlex.quote(a) for a in argv), flush=True)
    args = build_parser().parse_args(argv)
    code = int(args.handler(args) or 0)
    if code != 0:
        raise CLIError(f"'napari-unet {argv[0]}' stopped with exit status {code}")


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file, not a folder")
    if not out.parent.exists():
        raise CLIError(f"--out {out}: folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)

    import tifffile

    from ..io import write_labels_tiff
    from ..sample_data import synthetic_em

    t0 = time.perf_counter()
    z, y, x = args.shape
    image, labels = synthetic_em((z, y, x), seed=args.seed)
    image_path, labels_path = out / "image.tif", out / "labels.tif"
    try:
        tifffile.imwrite(image_path, image, imagej=True, metadata={"axes": "ZYX"})
    except OSError as exc:
        raise CLIError(f"{image_path}: could not write ({exc})") from None
    write_labels_tiff(labels_path, labels)
    n_train = min(3, z - 1)
    train = sorted({int(np.rint(v)) for v in np.linspace(0, z - 1, n_train + 2)[1:-1]})
    held_out = [s for s in range(z) if s not in train]
    print(
        f"synthetic EM stack {z} x {y} x {x} (1 = membrane, 2 = cell) in {out}/; training on "
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
            "--class-names", "membrane,cell",
            *limit,
            *common,
            "--seed", str(args.seed),
            "--out", str(model_path),
        ]
    )  # fmt: skip
    _call(
        [
            "predict",
            "--model", str(model_path),
            "--image", str(image_path),
            *common,
            "--out", str(pred_path),
        ]
    )  # fmt: skip
    _call(
        [
            "evaluate",
            "--prediction", str(pred_path),
            "--truth", str(labels_path),
            "--slices", format_slices(held_out),
            "--json", str(json_path),
        ]
    )  # fmt: skip
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; files in {out}/", flush=True)
    sys.stdout.flush()
    return 0
