"""``napari-unet train``: train a U-Net on the labelled slices of a stack, headless.

It reads the files, builds the labels view of :mod:`napari_unet.labels` and runs the Trainer.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..slices import format_slices
from . import CLIError
from ._common import (
    THREADS_HELP,
    VOLUME_HELP,
    Progress,
    add_device_argument,
    add_slices_argument,
    add_subcommand,
    check_device,
    parse_slices,
    positive_float,
    positive_int,
    warn,
)
from ._outputs import locked_outputs, prepare_output, save_or_rescue

SUMMARY = "train a U-Net on labelled slices (headless)"
DESCRIPTION = "Train a U-Net on the labelled slices of an EM stack and save a checkpoint."

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


def _patch_default(patch_size: int | None) -> str:
    """The help text of ``TrainConfig().patch_size`` (None: the Trainer's choice)."""
    from ..training import DEFAULT_SAME_PATCH_CPU, DEFAULT_SAME_PATCH_CUDA, DEFAULT_VALID_OUTPUT

    if patch_size is not None:
        return str(patch_size)
    return (
        f"auto: {DEFAULT_SAME_PATCH_CPU} on a CPU and {DEFAULT_SAME_PATCH_CUDA} on CUDA for "
        f"'small', the input of a {DEFAULT_VALID_OUTPUT}-pixel output for 'paper'"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..classes import DEFAULT_CLASS_NAMES
    from ..losses import LOSS_MODES
    from ..model import PRESETS
    from ..training import TrainConfig
    from ..training.schedule import LR_SCHEDULES

    cfg = TrainConfig()
    p = add_subcommand(sub, "train", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("--image", required=True, metavar="STACK", help=f"the EM stack: {VOLUME_HELP}")
    p.add_argument(
        "--labels",
        required=True,
        metavar="LABELS.tif",
        help="labels of the same shape (any --image format): 0 = unlabelled, 1..K = classes (see --dense)",
    )
    add_slices_argument(p, "--slices", "train only on these slices; labels elsewhere are ignored")
    p.add_argument(
        "--dense",
        action="store_true",
        help="every value of the labels file is a class (e.g. 0/255 masks); values map to "
        "classes 1..K in sorted order and the mapping is saved in the checkpoint",
    )
    p.add_argument(
        "--class-names",
        metavar="NAMES",
        help="comma-separated class names, one per class (default: "
        f"{','.join(DEFAULT_CLASS_NAMES)} for two sparse classes; 'value V' for --dense)",
    )
    p.add_argument(
        "--model",
        default=cfg.model,
        metavar="PRESET|CHECKPOINT.pt",
        help=f"a preset ({', '.join(PRESETS)}; default {cfg.model}) or a checkpoint to fine-tune",
    )
    p.add_argument("--loss", choices=LOSS_MODES, help=f"loss (default {cfg.loss})")
    limit = p.add_mutually_exclusive_group()
    numbers = (
        (limit, "--minutes", positive_float, "M", "train for M minutes (wall clock)"),
        (limit, "--iterations", positive_int, "N",
         f"train for N iterations (default {cfg.iterations}; the warm-up is at most a tenth)"),
        (p, "--batch-size", positive_int, "N", f"patches per step (default {cfg.batch_size})"),
        (p, "--patch-size", positive_int, "PX",
         f"input patch side in pixels (default {_patch_default(cfg.patch_size)})"),
        (p, "--lr", positive_float, "RATE", f"peak learning rate (default {cfg.learning_rate:g})"),
        (p, "--min-lr", positive_float, "RATE",
         "lowest learning rate of the cosine and cyclic schedules (default 5%% of --lr)"),
        (p, "--lr-period", positive_int, "N",
         f"iterations of one cycle of the cyclic schedule (default {cfg.lr_period})"),
    )  # fmt: skip
    for group, flag, kind, metavar, text in numbers:
        group.add_argument(flag, type=kind, metavar=metavar, help=text)
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help=f"learning-rate schedule after the warm-up (default {cfg.lr_schedule}; cyclic: "
        "triangular between --min-lr and --lr)",
    )
    add_device_argument(p, cfg.device)
    p.add_argument(
        "--out",
        default="model.pt",
        metavar="MODEL.pt",
        help="checkpoint to write (default model.pt; also saved every minute while training); "
        "an existing file is replaced only with --overwrite",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (e.g. fine-tuning a checkpoint in place)",
    )
    add_slices_argument(p, "--val-slices", "labelled slices held out and evaluated during training")
    p.add_argument("--seed", type=int, default=cfg.seed, help=f"random seed (default {cfg.seed})")
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


# --------------------------------------------------------------------------- preparation


@dataclasses.dataclass
class TrainingData:
    """What :func:`prepare` found: arrays ready for the Trainer and what they mean."""

    image: Any
    labels: Any  # a napari_unet.labels.SliceLabels
    train_slices: list[int]
    val_slices: list[int]
    n_classes: int
    label_mapping: dict[str, int] | None
    class_names: list[str] | None
    n_slices: int
    was_2d: bool


_DENSE_HINT = "for a mask whose every value is a class (e.g. 0/255) use --dense"


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise CLIError(f"--class-names {text!r}: empty name")
    return names


def _read_pair(image_path: str, labels_path: str) -> tuple[Any, Any, bool]:
    """The image and labels as ``(Z, H, W)`` arrays of the same shape, and whether they were 2D."""
    from ..io import check_same_shape
    from ._common import open_image

    img = open_image(image_path, "--image")  # TIFF, OME-Zarr, zarr, N5, HDF5
    lab = open_image(labels_path, "--labels", as_labels=True)
    check_same_shape(lab.shape, img.shape)
    if len(img.shape) == 2:
        return img.data[None], lab.data[None], True
    return img.data, lab.data, False


def _choose_slices(
    n: int, slices: str | None, val_slices: str | None
) -> tuple[list[int] | None, list[int]]:
    """``--slices`` (None = all) and ``--val-slices``, which must not overlap."""
    chosen = parse_slices(slices, n, "--slices") if slices is not None else None
    val = parse_slices(val_slices, n, "--val-slices") if val_slices is not None else []
    both = sorted(set(chosen or ()) & set(val))
    if both:
        raise CLIError(
            f"slice(s) {format_slices(both)} are in both --slices and --val-slices: "
            "validation slices must not be trained on"
        )
    return chosen, val


def _class_labels(
    labels: Any,
    labels_path: str,
    scan: list[int],
    keep: set[int] | None,
    dense: bool,
    meta: dict[str, Any],
    checkpoint_classes: int | None,
) -> tuple[Any, int, dict[str, int] | None]:
    """The labels view of the classes, their number and the dense mapping (or None)."""
    from ..labels import (
        LabelValueError,
        SliceLabels,
        SparseLabelsError,
        dense_mapping,
        sparse_class_count,
    )
    from ..slices import unique_values

    values = unique_values(labels, scan)
    if dense:
        where = f"slices {format_slices(scan)}" if keep is not None else "the file"
        try:
            mapping = dense_mapping(values, meta.get("label_mapping"), where)
        except LabelValueError as exc:
            raise CLIError(f"--dense: {exc}") from None
        file_values = sorted(int(v) for v in mapping)
        return SliceLabels(labels, keep=keep, values=file_values), len(mapping), mapping
    where = f"slices {format_slices(scan)}" if keep is not None else "any slice"
    try:
        hi = sparse_class_count(values, where)
    except SparseLabelsError as exc:
        raise CLIError(f"{labels_path}: {exc}; {_DENSE_HINT}") from None
    except LabelValueError as exc:
        raise CLIError(f"{labels_path}: {exc}") from None
    if checkpoint_classes is not None and hi > checkpoint_classes:
        raise CLIError(
            f"labels hold class {hi} but the checkpoint predicts {checkpoint_classes} classes"
        )
    n_classes = checkpoint_classes if checkpoint_classes is not None else max(2, hi)
    return SliceLabels(labels, keep=keep), n_classes, None


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
    from ..labels import dense_class_names

    image, labels, was_2d = _read_pair(image_path, labels_path)
    n = int(image.shape[0])
    chosen, val = _choose_slices(n, slices, val_slices)
    scan = sorted(set(chosen if chosen is not None else range(n)) - set(val))
    keep = None if chosen is None else set(chosen) | set(val)
    view, n_classes, mapping = _class_labels(
        labels, labels_path, scan, keep, dense, checkpoint_meta or {}, checkpoint_classes
    )
    names = _split_names(class_names)
    if names is None and mapping is not None:
        names = dense_class_names(mapping)
    if names is not None and len(names) != n_classes:
        raise CLIError(
            f"--class-names gives {len(names)} name(s) but there are {n_classes} classes"
        )
    labelled = [z for z in scan if np.any(view[z])]
    if not labelled:
        raise CLIError(f"no labelled pixels on slices {format_slices(scan)}")
    return TrainingData(image, view, labelled, val, n_classes, mapping, names, n, was_2d)


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


def _config(
    args: argparse.Namespace, data: TrainingData, preset: str | None, out: Path, device: Any
) -> Any:
    """The user's settings on top of ``TrainConfig()``; the Trainer applies its own policy."""
    from ..training import TrainConfig

    overrides: dict[str, Any] = {
        "device": str(device),
        "seed": int(args.seed),
        "n_classes": data.n_classes,
        "class_names": data.class_names,
        "val_slices": data.val_slices or None,
        "checkpoint_path": str(out),
        "preview_every_s": 0.0,  # nobody looks at previews here
    }
    if preset is not None:
        overrides["model"] = preset
    if args.minutes is not None:
        overrides.update(max_minutes=float(args.minutes), iterations=None)
    if args.iterations is not None:
        overrides.update(iterations=int(args.iterations), max_minutes=None)
    options = {
        "loss": args.loss,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "learning_rate": args.lr,
        "lr_schedule": args.lr_schedule,
        "min_learning_rate": args.min_lr,
        "lr_period": args.lr_period,
        "num_threads": args.threads,
    }
    overrides.update({k: v for k, v in options.items() if v is not None})
    return dataclasses.replace(TrainConfig(), **overrides)


def _checkpoint_bytes(trainer: Any) -> int:
    """About the size of the checkpoint ``trainer`` saves (weights, then history and metadata)."""
    weights = sum(t.numel() * t.element_size() for t in trainer.model.state_dict().values())
    iterations = trainer.config.iterations or 100_000
    return int(weights + 64 * (iterations + len(trainer.history)) + 2**20)


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
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

    from ..training import Trainer

    out = Path(args.out)
    config = _config(args, data, preset, out, device)
    metadata = dict(meta or {})
    if data.label_mapping is not None:
        metadata["label_mapping"] = data.label_mapping
    trainer = Trainer(data.image, data.labels, config, model=model, metadata=metadata or None)
    out = prepare_output(
        out, "--out", overwrite=args.overwrite, need_bytes=_checkpoint_bytes(trainer),
        exact_size=True,
    )  # fmt: skip
    with locked_outputs([(out, "--out")]):
        return train_loop(trainer, out, quiet=args.quiet)


def _event_message(event: Any, cfg: Any) -> str | None:
    """The line printed for a start or validation event (None for the others)."""
    from ..training import TrainingStarted, Validation

    if isinstance(event, TrainingStarted):
        limit = []
        if cfg.iterations is not None:
            limit.append(f"{cfg.iterations} iterations")
        if cfg.max_minutes is not None:
            limit.append(f"{cfg.max_minutes:g} min")
        return (
            f"training on {event.device_description}: {event.n_parameters:,} parameters, "
            f"slices {format_slices(event.labelled_slices)} "
            f"({event.n_labelled_pixels:,} labelled pixels), patch {event.patch_size}, "
            f"batch {event.batch_size}, {event.precision}, {' or '.join(limit)}"
        )
    if isinstance(event, Validation):
        m = event.metrics
        ious = ", ".join(f"{k[4:]} {v:.3f}" for k, v in m.items() if k.startswith("iou_"))
        error = m.get("pixel_error", math.nan)
        return f"validation @ {event.iteration}: pixel error {error:.4f}, IoU {ious}"
    return None


def _show_iteration(progress: Progress, event: Any, max_s: float | None) -> None:
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


def _final_save(trainer: Any, out: Path, done: str) -> int:
    """Save ``trainer`` to ``out`` (else to a rescue location); print what happened; the status."""
    path, error = save_or_rescue(out, trainer.save)
    if error is not None:
        print(
            f"napari-unet: error: {error}; {done}: saved the model to {path} instead",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def train_loop(trainer: Any, out: Path, *, quiet: bool = False) -> int:
    """Run ``trainer``, printing progress; save to ``out``.  Returns the exit status.

    0: trained and saved to ``out``; 1: saved elsewhere (``out`` failed) or the
    training diverged (the last finite weights are saved); 130: interrupted.
    """
    from ..training import CheckpointSaved, Diverged, Finished, Iteration, TrainingWarning

    cfg = trainer.config
    progress = Progress("training", quiet=quiet)
    saved_at: int | None = None
    finished: Any = None
    diverged: str | None = None
    it = 0
    max_s = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
    try:
        for event in trainer.run():
            if isinstance(event, Iteration):
                it = event.iteration
                _show_iteration(progress, event, max_s)
            elif isinstance(event, TrainingWarning):
                progress.close()
                warn(event.message)
            elif isinstance(event, Diverged):
                diverged = event.message
            elif isinstance(event, CheckpointSaved):
                saved_at = event.iteration
            elif isinstance(event, Finished):
                finished = event
            elif (line := _event_message(event, cfg)) is not None:
                progress.message(line)
    except KeyboardInterrupt:
        progress.close()
        trainer.stop()
        status = _final_save(trainer, out, f"interrupted after {it} iterations")
        if status == 0:
            print(f"interrupted after {it} iterations: saved {out}", flush=True)
        return 130
    progress.close()
    if finished is None:  # pragma: no cover - run() always ends with Finished
        raise RuntimeError("training ended without a Finished event")
    status = 0
    if saved_at != finished.iterations:
        # the Trainer turns a failed save into a warning; here it must be saved somewhere
        status = _final_save(trainer, out, f"trained {finished.iterations} iterations")
    if diverged is not None:
        where = f"; saved them to {out}" if status == 0 else ""
        print(f"napari-unet: error: {diverged}{where}", file=sys.stderr, flush=True)
        return 1
    if not quiet and status == 0:
        loss = "n/a" if finished.final_loss is None else f"{finished.final_loss:.4f}"
        why = {"time_limit": "time limit reached", "completed": "done", "stopped": "stopped"}
        print(
            f"{why.get(finished.reason, finished.reason)}: {finished.iterations} iterations in "
            f"{progress.elapsed():.0f} s, final loss {loss}; saved {out}",
            flush=True,
        )
    return status
