"""Which training loss: Dice, cross-entropy (weighted and not), Jaccard and the sums, same budget.

Two tasks, every loss trained for the same number of ITERATIONS (not minutes,
so a busy machine does not change the figures), at least two seeds each (the
seed sets the model's initial weights, the patch sampling and the augmentation):

* ``isbi``: ISBI 2012, dense labels on slices 0-4 (read as ``napari-unet train
  --dense --slices 0-4`` reads them), evaluated on slices 20-29 with pixel
  error, membrane IoU and adapted Rand error
  (:func:`napari_unet.metrics.evaluate_segmentation`, as bench_evaluation).
* ``mito``: the synthetic sample with mitochondria as a class of their own
  (``synthetic_em(classes="mitochondria")``: 1 = background, 2 = mitochondria,
  a ~4 % minority), trained on one stack and evaluated on another (another
  seed): IoU and Dice of the mitochondria class, per-object F1 (instances of
  :func:`napari_unet.objects.label_objects` from the predicted probabilities,
  matched at IoU >= 0.5 by bench_objects' matching) and the class-imbalance
  question (class weights none vs balanced, cross-entropy vs overlap losses).

Everything else is ``TrainConfig()`` ("small" preset, AdamW 2e-3, cosine, batch
8 x 128 px, augmentation), on the CPU.

    python -m benchmarks.bench_losses                   # both tasks, seeds 0,1
    python -m benchmarks.bench_losses --only isbi --seeds 0 --resume   # a chunk
    python -m benchmarks.bench_losses --only isbi --iterations 1000 --resume \
        --losses dice,wce,wce+dice                      # a longer budget, some losses
    python -m benchmarks.bench_losses --render          # docs from the saved JSON

Writes ``benchmarks/results/losses_full.json``, ``docs/LOSSES.md`` and the marked
``losses`` section of ``docs/EVALUATION.md`` (kept by bench_evaluation's renderer).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/bench_losses.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks import _common
from benchmarks._losses_docs import (  # noqa: F401 - the report, re-exported for tests
    DOC_PATH,
    ISBI_ITERATIONS,
    ISBI_LOSSES,
    ISBI_METRICS,
    MITO_ITERATIONS,
    MITO_LOSSES,
    MITO_METRICS,
    SECTION_BEGIN,
    SECTION_END,
    _lead,
    _write_atomic,
    budget_ranking,
    budgets,
    evaluation_section,
    fill_blocks,
    generated_blocks,
    main_summary,
    markdown,
    replace_section,
    summarise,
    write_docs,
)
from benchmarks.bench_evaluation import (
    EVAL_SLICES,
    _dense_training_labels,
    _metrics,
    load_isbi,
)
from benchmarks.bench_objects import _instance_scores

NAME = "losses"
#: the full runs' rows (run_all also saves its own ``results/losses.json``, quick runs too)
RESULT_PATH = _common.RESULTS_DIR / f"{NAME}_full.json"
#: the budgets (TrainConfig().iterations is 500; these keep each seed's runs of a task
#: within ~10 minutes on a shared 2-core machine)
QUICK_ITERATIONS = 10
SEEDS = (0, 1)
TASKS = ("isbi", "mito")

#: the synthetic mitochondria task: train stack (seed 0) and evaluation stack (seed 1)
MITO_SHAPE = (6, 256, 256)
MITO_TRAIN_SEED, MITO_EVAL_SEED = 0, 1
MITO_CLASS = 2


# --------------------------------------------------------------------------- one run


def train_and_predict(
    image: Any, labels: Any, eval_image: np.ndarray, overrides: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train ``TrainConfig(**overrides)`` with ``seed`` on the CPU; predict ``eval_image``:
    its class map, its probabilities ``(K, Z, H, W)`` and the run's facts."""
    import torch

    from napari_unet.tiling import predict_tiled
    from napari_unet.training import Finished, TrainConfig, Trainer

    torch.manual_seed(seed)  # the model's initial weights
    fields = {"max_minutes": None, "device": "cpu", "preview_every_s": 0.0, "seed": seed}
    config = TrainConfig(**{**fields, **overrides})
    t0 = time.perf_counter()
    trainer = Trainer(image, labels, config)
    finished = None
    for event in trainer.run():
        if isinstance(event, Finished):
            finished = event
    train_s = time.perf_counter() - t0
    pred, probs = predict_tiled(
        trainer.model,
        eval_image,
        device="cpu",
        normalization=trainer.normalization,
        return_probabilities=True,
    )
    info = {"iterations": finished.iterations if finished else 0, "train_s": round(train_s, 1)}
    return np.asarray(pred), np.asarray(probs, np.float32), info


def object_scores(probs: np.ndarray, truth_ids: np.ndarray) -> dict[str, float]:
    """Per-object F1, precision and recall of the mitochondria.

    The instances are :func:`napari_unet.objects.label_objects` of the predicted
    probabilities (``ObjectParams()`` defaults: 2D, holes filled, >= 16 px), matched
    one-to-one at IoU >= 0.5 against the connected components of each truth slice's
    mitochondria -- bench_objects' matching and its "objects 2D (defaults)" row.
    """
    from napari_unet.objects import label_objects

    objects = label_objects(probs, MITO_CLASS).labels
    s = _instance_scores(objects, truth_ids, per_slice=True)
    return {"object_f1": s["f1"], "object_precision": s["precision"], "object_recall": s["recall"]}


# --------------------------------------------------------------------------- tasks


_Score = Callable[[np.ndarray, np.ndarray], dict[str, Any]]  # (classes, probabilities)


def _isbi_runner() -> tuple[Any, Any, np.ndarray, _Score]:
    image, truth = load_isbi()
    d = _common.ISBI_DIR
    data = _dense_training_labels(d / "train-volume.tif", d / "train-labels.tif")
    eval_truth = truth[list(EVAL_SLICES)]

    def score(pred: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        m = _metrics(pred, eval_truth)
        return {k: m[k] for k in ("pixel_error", "membrane_iou", "rand_error", "vi_total")}

    return data.image, data.labels, image[list(EVAL_SLICES)], score


def _mito_runner() -> tuple[Any, Any, np.ndarray, _Score]:
    from napari_unet.metrics import dice_per_class, iou_per_class, pixel_error
    from napari_unet.sample_data import synthetic_em

    image, labels = synthetic_em(MITO_SHAPE, seed=MITO_TRAIN_SEED, classes="mitochondria")
    eval_image, truth, ids = synthetic_em(
        MITO_SHAPE, seed=MITO_EVAL_SEED, classes="mitochondria", return_mitochondria=True
    )

    def score(pred: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        return {
            "pixel_error": pixel_error(pred, truth),
            "mito_iou": iou_per_class(pred, truth, classes=[MITO_CLASS])[MITO_CLASS],
            "mito_dice": dice_per_class(pred, truth, classes=[MITO_CLASS])[MITO_CLASS],
            "pred_mito_pct": round(100.0 * float(np.mean(pred == MITO_CLASS)), 2),
            **object_scores(probs, ids),
        }

    return image, labels, eval_image, score


_TASKS = {
    "isbi": (_isbi_runner, ISBI_LOSSES),
    "mito": (_mito_runner, MITO_LOSSES),
}


# --------------------------------------------------------------------------- run


def _load_saved() -> dict[str, Any]:
    try:
        data = json.loads(RESULT_PATH.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else {}


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["task"], row["loss"], row["seed"], row["budget"])


def run(
    quick: bool = False,
    *,
    tasks: tuple[str, ...] = TASKS,
    seeds: tuple[int, ...] = SEEDS,
    iterations: int | None = None,
    resume: bool = False,
    save: bool | None = None,
    losses: tuple[str, ...] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train every loss of ``tasks`` for every seed; rows per (task, loss, seed).

    ``resume``: keep the rows (and the log of commands) of the saved result
    (:data:`RESULT_PATH`) and skip those with the same task, loss, seed and budget
    (chunks of a long run); ``save`` (default: not ``quick``): write
    :data:`RESULT_PATH` after every row.  ``losses``: only the losses
    :func:`select_losses` picks.  ``command`` is logged with its wall time.
    The docs are written by :func:`write_docs` (``main``, ``--render``).
    """
    save = not quick if save is None else save
    saved = _load_saved() if resume else {}
    rows: list[dict[str, Any]] = list(saved.get("rows", []))
    done = {_key(r) for r in rows}
    t_all = time.perf_counter()
    log = {"command": command or "run()", "started": _now(), "wall_s": 0.0}
    result: dict[str, Any] = {"name": NAME, "rows": rows, "runs": [*saved.get("runs", []), log]}
    for task in tasks:
        if task == "isbi" and not _common.isbi_available():
            result.setdefault("skipped_tasks", []).append(f"isbi: no data in {_common.ISBI_DIR}")
            continue
        make, task_losses = _TASKS[task]
        task_losses = select_losses(task_losses, losses)
        budget = iterations or (
            QUICK_ITERATIONS if quick else ISBI_ITERATIONS if task == "isbi" else MITO_ITERATIONS
        )
        todo = [(n, s) for n in task_losses for s in seeds if (task, n, s, budget) not in done]
        if not todo:
            continue
        image, labels, eval_image, score = make()
        for loss, seed in todo:
            overrides = {**task_losses[loss], "iterations": budget}
            pred, probs, info = train_and_predict(image, labels, eval_image, overrides, seed)
            row = {"task": task, "loss": loss, "seed": seed, "budget": budget, **info}
            row.update(score(pred, probs))
            rows.append(row)
            print(json.dumps(row, default=float), flush=True)
            if save:
                _finish(result, quick, t_all)
                _write_atomic(RESULT_PATH, json.dumps(result, indent=2, default=float))
    return _finish(result, quick, t_all)


def select_losses(losses: dict[str, Any], tokens: tuple[str, ...] | None) -> dict[str, Any]:
    """The losses whose name's first word (``"wce"``, ``"wce+dice"``, ``"ce"``) or whole
    name is one of ``tokens`` (all when None), in table order."""
    if tokens is None:
        return dict(losses)
    return {n: v for n, v in losses.items() if n in tokens or re.split(r"[ ,]", n)[0] in tokens}


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _finish(result: dict[str, Any], quick: bool, t_all: float) -> dict[str, Any]:
    result["runs"][-1]["wall_s"] = round(time.perf_counter() - t_all, 1)
    result.update(
        mode="quick" if quick else "full",
        wall_s=round(time.perf_counter() - t_all, 1),
        machine=_common.machine(),
        date=_now(),
        note=(
            "every loss for the same iteration budget, seeds "
            + ",".join(str(s) for s in sorted({r["seed"] for r in result["rows"]}))
            + "; CPU; see docs/LOSSES.md"
        ),
    )
    return result


# --------------------------------------------------------------------------- tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ITERATIONS} iterations")
    parser.add_argument("--only", default=",".join(TASKS), help="tasks among isbi,mito")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="e.g. 0,1")
    parser.add_argument("--iterations", type=int, help="the budget of every run")
    parser.add_argument("--resume", action="store_true", help="skip the rows already saved")
    parser.add_argument("--losses", help="only these losses (first words: dice,wce,wce+dice)")
    parser.add_argument("--render", action="store_true", help="only write the docs")
    args = parser.parse_args(argv)
    if args.render:
        saved = _load_saved()
        if not saved:
            parser.error(f"no saved result in {RESULT_PATH}")
        for path in write_docs(saved):
            print(f"(wrote {path})")
        return 0
    tasks = tuple(t.strip() for t in args.only.split(",") if t.strip())
    if any(t not in TASKS for t in tasks):
        parser.error(f"--only: choose among {', '.join(TASKS)}")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds: a list of integers, got {args.seeds!r}")
    picked = tuple(t.strip() for t in args.losses.split(",")) if args.losses else None
    words = {re.split(r"[ ,]", n)[0] for t in tasks for n in _TASKS[t][1]}
    if picked and not set(picked) & words:
        parser.error(f"--losses: none of {args.losses!r} among {', '.join(sorted(words))}")
    result = run(
        args.quick,
        tasks=tasks,
        seeds=seeds,
        iterations=args.iterations,
        resume=args.resume,
        save=not args.quick,
        losses=picked,
        command=" ".join(["python -m benchmarks.bench_losses", *(argv or sys.argv[1:])]),
    )
    print(f"## {NAME}\n{result['note']}")
    for task, metrics in (("isbi", ISBI_METRICS), ("mito", MITO_METRICS)):
        print(markdown(summarise(result["rows"], task, metrics), metrics))
    if not args.quick:
        for path in write_docs(result):
            print(f"(wrote {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
