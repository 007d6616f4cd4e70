"""``napari-unet train``: train a U-Net on the labelled slices of a stack, headless.

Labels are *sparse* by default: ``0`` = unlabelled, ``1..K`` = classes (what the
napari Labels layer holds).  ``--dense`` reads a mask whose every value is a
class (e.g. ISBI 2012's 0 = membrane / 255 = cell): the values found become
classes ``1..K`` in sorted order and the mapping is stored in the checkpoint
(``label_mapping``), so ``napari-unet predict`` writes the file values back.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import (
    SLICES_HELP,
    THREADS_HELP,
    Progress,
    SliceLabels,
    check_device,
    check_output_path,
    format_slices,
    parse_slices,
    positive_float,
    positive_int,
    unique_values,
    warn,
)

#: sparse labels with a largest value above this are probably a dense mask
_MAX_SPARSE_CLASS = 64

EPILOG = """\
examples:
  napari-unet train --image stack.tif --labels painted.tif --minutes 10
  napari-unet train --image train-volume.tif --labels train-labels.tif \\
      --dense --slices 0-4 --val-slices 29 --minutes 10 --out isbi.pt
  napari-unet train --image stack.tif --labels more.tif --model isbi.pt --iterations 200

Labels: 0 = unlabelled, 1..K = classes (sparse, the default), or --dense: every
value is a class (e.g. 0/255 masks: 0 -> class 1, 255 -> class 2, stored in the
checkpoint as label_mapping so predictions are written back as 0/255).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..losses import LOSS_MODES

    p = sub.add_parser(
        "train",
        help="train a U-Net on labelled slices (headless)",
        description="Train a U-Net on the labelled slices of an EM stack and save a checkpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", required=True, metavar="STACK.tif", help="the EM stack (TIFF)")
    p.add_argument(
        "--labels",
        required=True,
        metavar="LABELS.tif",
        help="labels of the same shape (TIFF): 0 = unlabelled, 1..K = classes (see --dense)",
    )
    p.add_argument(
        "--slices",
        metavar="LIST",
        help=f"train only on these slices; labels elsewhere are ignored. {SLICES_HELP}",
    )
    p.add_argument(
        "--dense",
        action="store_true",
        help="every value of the labels file is a class (e.g. 0/255 masks); values map to "
        "classes 1..K in sorted order and the mapping is saved in the checkpoint",
    )
    p.add_argument(
        "--class-names",
        metavar="NAMES",
        help="comma-separated class names, one per class (default: membrane,cell for two "
        "sparse classes; 'value V' for --dense)",
    )
    p.add_argument(
        "--model",
        default="small",
        metavar="PRESET|CHECKPOINT.pt",
        help="'small' (default, fast on a CPU), 'paper' (Ronneberger et al., 31M parameters) "
        "or a checkpoint to fine-tune",
    )
    p.add_argument("--loss", choices=LOSS_MODES, default=None, help="loss (default: wce+dice)")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument(
        "--minutes", type=positive_float, metavar="M", help="train for M minutes (wall clock)"
    )
    limit.add_argument(
        "--iterations",
        type=positive_int,
        metavar="N",
        help="train for N iterations (default 500); the learning-rate warm-up "
        "is at most a tenth of N",
    )
    p.add_argument(
        "--batch-size", type=positive_int, metavar="N", help="patches per step (default 4)"
    )
    p.add_argument(
        "--patch-size",
        type=positive_int,
        metavar="PX",
        help="input patch side in pixels (default 256 for 'small', 572 for 'paper')",
    )
    p.add_argument("--lr", type=positive_float, metavar="RATE", help="learning rate (default 1e-3)")
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto (default: CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps",
    )
    p.add_argument(
        "--out",
        default="model.pt",
        metavar="MODEL.pt",
        help="checkpoint to write (default model.pt; also saved every minute while training)",
    )
    p.add_argument(
        "--val-slices",
        metavar="LIST",
        help=f"labelled slices held out and evaluated during training. {SLICES_HELP}",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=run)


# --------------------------------------------------------------------------- preparation


@dataclasses.dataclass
class TrainingData:
    """What :func:`prepare` found: arrays ready for the Trainer and what they mean."""

    image: Any
    labels: SliceLabels
    train_slices: list[int]
    val_slices: list[int]
    n_classes: int
    label_mapping: dict[str, int] | None
    class_names: list[str] | None
    n_slices: int
    was_2d: bool


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise CLIError(f"--class-names {text!r}: empty name")
    return names


def prepare(
    image_path: str,
    labels_path: str,
    *,
    slices: str | None = None,
    val_slices: str | None = None,
    dense: bool = False,
    class_names: str | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    checkpoint_classes: int | None = None,
) -> TrainingData:
    """Read and check the image and labels files; build the labels view for training."""
    from ..io import check_same_shape, read_tiff

    img = read_tiff(image_path, as_labels=False)
    lab = read_tiff(labels_path, as_labels=True)
    check_same_shape(lab.shape, img.shape)
    image, labels = img.data, lab.data
    was_2d = len(img.shape) == 2
    if was_2d:
        image, labels = image[None], labels[None]
    n = int(image.shape[0])
    chosen = parse_slices(slices, n, "--slices") if slices is not None else None
    val = parse_slices(val_slices, n, "--val-slices") if val_slices is not None else []
    if chosen is not None and set(chosen) & set(val):
        both = sorted(set(chosen) & set(val))
        raise CLIError(
            f"slice(s) {format_slices(both)} are in both --slices and --val-slices: "
            "validation slices must not be trained on"
        )
    scan = sorted(set(chosen if chosen is not None else range(n)) - set(val))

    names = _split_names(class_names)
    mapping: dict[str, int] | None = None
    ckpt_mapping = (checkpoint_meta or {}).get("label_mapping")
    values = unique_values(labels, scan)
    if dense:
        if ckpt_mapping:
            known = {int(v) for v in ckpt_mapping}
            extra = sorted(set(int(v) for v in values) - known)
            if extra:
                raise CLIError(
                    f"labels hold value(s) {extra[:5]} that the checkpoint's label_mapping "
                    f"({', '.join(sorted(ckpt_mapping, key=int))}) does not know"
                )
            mapping = {str(int(v)): int(c) for v, c in ckpt_mapping.items()}
            file_values = sorted(int(v) for v in mapping)
            if [mapping[str(v)] for v in file_values] != list(range(1, len(file_values) + 1)):
                raise CLIError("the checkpoint's label_mapping is not a sorted 1..K mapping")
        else:
            file_values = [int(v) for v in values]
            if len(file_values) < 2:
                where = f"slices {format_slices(scan)}" if chosen is not None else "the file"
                raise CLIError(
                    f"--dense: the labels on {where} hold only the value(s) {file_values}; "
                    "a dense mask needs at least two values (classes)"
                )
            if len(file_values) > 255:
                raise CLIError(
                    f"--dense: the labels hold {len(file_values)} different values; a class "
                    "mask has a few (is this an instance segmentation?)"
                )
            mapping = {str(v): i + 1 for i, v in enumerate(file_values)}
        n_classes = len(file_values)
        if names is None:
            names = [f"value {v}" for v in file_values]
        view = SliceLabels(
            labels, keep=None if chosen is None else set(chosen) | set(val), values=file_values
        )
    else:
        nonzero = [int(v) for v in values if v != 0]
        if not nonzero:
            where = f"slices {format_slices(scan)}" if chosen is not None else "any slice"
            raise CLIError(
                f"{labels_path}: no labelled pixels on {where} (0 = unlabelled); "
                "for a mask whose every value is a class (e.g. 0/255) use --dense"
            )
        if min(int(v) for v in values) < 0:
            raise CLIError(f"{labels_path}: labels must not be negative (0 = unlabelled)")
        hi = max(nonzero)
        if hi > _MAX_SPARSE_CLASS or (hi > 8 and len(nonzero) < hi / 2):
            raise CLIError(
                f"{labels_path}: labels hold the values {sorted(set(int(v) for v in values))[:6]}"
                f"{'...' if len(values) > 6 else ''}, not classes 1..K (0 = unlabelled); "
                "for a mask whose every value is a class (e.g. 0/255) use --dense"
            )
        n_classes = max(2, hi)
        if checkpoint_classes is not None:
            if hi > checkpoint_classes:
                raise CLIError(
                    f"labels hold class {hi} but the checkpoint predicts {checkpoint_classes} classes"
                )
            n_classes = checkpoint_classes
        view = SliceLabels(labels, keep=None if chosen is None else set(chosen) | set(val))
    if names is not None and len(names) != n_classes:
        raise CLIError(
            f"--class-names gives {len(names)} name(s) but there are {n_classes} classes"
        )
    labelled = [z for z in scan if np.any(view[z])]
    if not labelled:
        raise CLIError(f"no labelled pixels on slices {format_slices(scan)}")
    return TrainingData(
        image=image,
        labels=view,
        train_slices=labelled,
        val_slices=val,
        n_classes=n_classes,
        label_mapping=mapping,
        class_names=names,
        n_slices=n,
        was_2d=was_2d,
    )


def _load_model(spec: str) -> tuple[str | None, Any, dict[str, Any] | None]:
    """``--model``: (preset name, None, None) or (None, UNet, metadata) for a checkpoint."""
    from ..model import PRESETS

    if spec.lower() in PRESETS:
        return spec.lower(), None, None
    path = Path(spec)
    if not path.exists():
        raise CLIError(
            f"--model {spec!r}: not a preset ({', '.join(PRESETS)}) and no such checkpoint file"
        )
    from ..checkpoint import load_checkpoint

    model, meta = load_checkpoint(path)
    return None, model, dict(meta)


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    out = check_output_path(args.out, "--out")
    preset, model, meta = _load_model(args.model)
    data = prepare(
        args.image,
        args.labels,
        slices=args.slices,
        val_slices=args.val_slices,
        dense=args.dense,
        class_names=args.class_names,
        checkpoint_meta=meta,
        checkpoint_classes=None if model is None else int(model.n_classes),
    )
    if model is not None and data.n_classes != model.n_classes:
        raise CLIError(
            f"the labels have {data.n_classes} classes but the checkpoint {args.model} "
            f"predicts {model.n_classes}"
        )

    from ..training import TrainConfig, Trainer

    overrides: dict[str, Any] = {
        "device": str(device),
        "seed": int(args.seed),
        "n_classes": data.n_classes,
        "class_names": data.class_names,
        "val_slices": data.val_slices or None,
        "checkpoint_path": str(out),
        "preview_every_s": 0.0,
    }
    if preset is not None:
        overrides["model"] = preset
    if args.loss is not None:
        overrides["loss"] = args.loss
    if args.minutes is not None:
        overrides.update(max_minutes=float(args.minutes), iterations=None)
    if args.iterations is not None:
        overrides.update(iterations=int(args.iterations), max_minutes=None)
        # the default 20-iteration warm-up would eat a short run: at most a tenth of it
        default_warmup = TrainConfig().warmup_iterations
        overrides["warmup_iterations"] = min(default_warmup, int(args.iterations) // 10)
    if args.batch_size is not None:
        overrides["batch_size"] = int(args.batch_size)
    if args.patch_size is not None:
        overrides["patch_size"] = int(args.patch_size)
    if args.lr is not None:
        overrides["learning_rate"] = float(args.lr)
    if args.threads is not None:
        overrides["num_threads"] = int(args.threads)
    config = dataclasses.replace(TrainConfig(), **overrides)
    if data.val_slices:
        config.val_every = max(1, min(config.val_every, (config.iterations or 10**9) // 5 or 1))

    metadata = dict(meta or {})
    if data.label_mapping is not None:
        metadata["label_mapping"] = data.label_mapping
    trainer = Trainer(data.image, data.labels, config, model=model, metadata=metadata or None)
    code = train_loop(trainer, out, quiet=args.quiet)
    return code


def train_loop(trainer: Any, out: Path, *, quiet: bool = False) -> int:
    """Run ``trainer``, printing progress; save to ``out``.  Returns the exit status."""
    from ..training import (
        CheckpointSaved,
        Finished,
        Iteration,
        TrainingStarted,
        TrainingWarning,
        Validation,
    )

    cfg = trainer.config
    progress = Progress("training", quiet=quiet)
    saved_at: int | None = None
    finished: Any = None
    it = 0
    max_s = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
    try:
        for event in trainer.run():
            if isinstance(event, Iteration):
                it = event.iteration
                fractions = []
                if event.total:
                    fractions.append(event.iteration / event.total)
                if max_s:
                    fractions.append(event.elapsed_s / max_s)
                progress.update(
                    event.iteration,
                    event.total,
                    f"loss {event.loss:.4f}  {event.samples_per_s:.1f} patches/s",
                    fraction=max(fractions) if fractions else None,
                )
            elif isinstance(event, TrainingStarted):
                limit = []
                if cfg.iterations is not None:
                    limit.append(f"{cfg.iterations} iterations")
                if cfg.max_minutes is not None:
                    limit.append(f"{cfg.max_minutes:g} min")
                progress.message(
                    f"training on {event.device_description}: {event.n_parameters:,} parameters, "
                    f"slices {format_slices(event.labelled_slices)} "
                    f"({event.n_labelled_pixels:,} labelled pixels), patch {event.patch_size}, "
                    f"batch {event.batch_size}, {event.precision}, {' or '.join(limit)}"
                )
            elif isinstance(event, Validation):
                m = event.metrics
                ious = ", ".join(f"{k[4:]} {v:.3f}" for k, v in m.items() if k.startswith("iou_"))
                progress.message(
                    f"validation @ {event.iteration}: pixel error {m.get('pixel_error', math.nan):.4f}, "
                    f"IoU {ious}"
                )
            elif isinstance(event, TrainingWarning):
                progress.close()
                warn(event.message)
            elif isinstance(event, CheckpointSaved):
                saved_at = event.iteration
            elif isinstance(event, Finished):
                finished = event
    except KeyboardInterrupt:
        progress.close()
        trainer.stop()
        path = trainer.save(out)
        print(f"interrupted after {it} iterations: saved {path}", flush=True)
        return 130
    progress.close()
    if finished is None:  # pragma: no cover - run() always ends with Finished
        raise RuntimeError("training ended without a Finished event")
    if saved_at != finished.iterations:
        # the Trainer turns a failed save into a warning; here it must be an error
        trainer.save(out)
    if not quiet:
        loss = "n/a" if finished.final_loss is None else f"{finished.final_loss:.4f}"
        why = {"time_limit": "time limit reached", "completed": "done", "stopped": "stopped"}
        print(
            f"{why.get(finished.reason, finished.reason)}: {finished.iterations} iterations in "
            f"{progress.elapsed():.0f} s, final loss {loss}; saved {out}",
            flush=True,
        )
    return 0
