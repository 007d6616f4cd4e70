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
import os
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
from benchmarks.bench_evaluation import (
    DOC_PATH as EVALUATION_DOC,
)
from benchmarks.bench_evaluation import (
    EVAL_SLICES,
    _dense_training_labels,
    _metrics,
    load_isbi,
)
from benchmarks.bench_objects import _instance_scores

NAME = "losses"
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "LOSSES.md"
#: the full runs' rows (run_all also saves its own ``results/losses.json``, quick runs too)
RESULT_PATH = _common.RESULTS_DIR / f"{NAME}_full.json"
#: the budgets (TrainConfig().iterations is 500; these keep each seed's runs of a task
#: within ~10 minutes on a shared 2-core machine)
ISBI_ITERATIONS = 300
MITO_ITERATIONS = 150
QUICK_ITERATIONS = 10
SEEDS = (0, 1)
TASKS = ("isbi", "mito")

#: loss name -> TrainConfig fields changed from TrainConfig() (wce+dice, w0 3, no class weights)
ISBI_LOSSES: dict[str, dict[str, Any]] = {
    "dice": {"loss": "dice"},
    "wce (paper: balanced classes, w0 10)": {
        "loss": "wce",
        "class_weights": "balanced",
        "w0": 10.0,
    },
    "ce (unweighted: w0 0, no class weights)": {"loss": "wce", "w0": 0.0},
    "jaccard": {"loss": "jaccard"},
    "wce+dice (TrainConfig() default: w0 3)": {},
    "wce+jaccard (w0 3)": {"loss": "wce+jaccard"},
}
MITO_LOSSES: dict[str, dict[str, Any]] = {
    "wce+dice (default: no class weights)": {},
    "wce+dice, balanced classes": {"class_weights": "balanced"},
    "wce (no class weights)": {"loss": "wce"},
    "wce, balanced classes": {"loss": "wce", "class_weights": "balanced"},
    "dice": {"loss": "dice"},
    "jaccard": {"loss": "jaccard"},
}
#: the synthetic mitochondria task: train stack (seed 0) and evaluation stack (seed 1)
MITO_SHAPE = (6, 256, 256)
MITO_TRAIN_SEED, MITO_EVAL_SEED = 0, 1
MITO_CLASS = 2
SECTION_BEGIN = "<!-- section:losses -->"
SECTION_END = "<!-- /section:losses -->"


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


def summarise(
    rows: list[dict[str, Any]], task: str, metrics: tuple[str, ...], budget: int | None = None
) -> list[dict]:
    """Per loss and budget of ``task`` (in table order; only ``budget`` if given): mean and
    half-range over the seeds of each metric."""
    order = list(_TASKS[task][1])
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["task"] == task and budget in (None, r["budget"]):
            groups.setdefault((r["loss"], int(r["budget"])), []).append(r)
    out = []
    for loss, b in sorted(groups, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), k[1])):  # fmt: skip
        group = sorted(groups[(loss, b)], key=lambda r: r["seed"])
        entry: dict[str, Any] = {
            "loss": loss,
            "iterations": str(b),
            "seeds": ",".join(str(r["seed"]) for r in group),
        }
        for m in metrics:
            values = [float(r[m]) for r in group if r.get(m) is not None]
            if values:
                entry[m] = (float(np.mean(values)), (max(values) - min(values)) / 2.0)
        out.append(entry)
    return out


def budgets(rows: list[dict[str, Any]], task: str) -> list[int]:
    """The budgets of ``task``'s rows: the main one first (the default budget when run, else
    the most frequent), then the others in increasing order."""
    counts: dict[int, int] = {}
    for r in rows:
        if r["task"] == task:
            counts[int(r["budget"])] = counts.get(int(r["budget"]), 0) + 1
    if not counts:
        return []
    default = ISBI_ITERATIONS if task == "isbi" else MITO_ITERATIONS
    main = default if default in counts else max(counts, key=lambda b: (counts[b], -b))
    return [main, *sorted(b for b in counts if b != main)]


def main_summary(rows: list[dict[str, Any]], task: str, metrics: tuple[str, ...]) -> list[dict]:
    found = budgets(rows, task)
    return summarise(rows, task, metrics, found[0]) if found else []


_HEADERS = {
    "pixel_error": "pixel error",
    "membrane_iou": "membrane IoU",
    "rand_error": "adapted Rand error",
    "vi_total": "VI total",
    "mito_iou": "mitochondria IoU",
    "mito_dice": "mitochondria Dice",
    "pred_mito_pct": "predicted mito (%)",
    "object_f1": "object F1 (IoU >= 0.5)",
}


def markdown(summary: list[dict[str, Any]], metrics: tuple[str, ...]) -> str:
    heads = ["loss", "iterations", "seeds", *(_HEADERS[m] for m in metrics)]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for e in summary:
        cells = [e["loss"], e["iterations"], e["seeds"]]
        for m in metrics:
            mean, half = e.get(m, (None, None))
            digits = 2 if m == "pred_mito_pct" else 4
            cells.append("-" if mean is None else f"{mean:.{digits}f} ± {half:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ISBI_METRICS = ("pixel_error", "membrane_iou", "rand_error", "vi_total")
MITO_METRICS = ("pixel_error", "mito_iou", "mito_dice", "object_f1", "pred_mito_pct")


def _lead(summary: list[dict[str, Any]], metric: str, higher: bool) -> str:
    """Which loss is best on ``metric`` and whether its lead exceeds the seeds' spread."""
    ranked = sorted((e for e in summary if metric in e), key=lambda e: e[metric][0], reverse=higher)
    if len(ranked) < 2:
        return ""
    best, second = ranked[0], ranked[1]
    gap = abs(best[metric][0] - second[metric][0])
    noise = best[metric][1] + second[metric][1]
    verdict = "larger than" if gap > noise else "within"
    return (
        f"best {_HEADERS[metric]}: {best['loss']} ({best[metric][0]:.4f}), ahead of "
        f"{second['loss']} ({second[metric][0]:.4f}) by {gap:.4f}, {verdict} the seeds' "
        f"spread ({noise:.4f})"
    )


def _pair(summary: list[dict[str, Any]], a: str, b: str, metric: str) -> str:
    ea = next((e for e in summary if e["loss"] == a and metric in e), None)
    eb = next((e for e in summary if e["loss"] == b and metric in e), None)
    if ea is None or eb is None:
        return ""
    gap = eb[metric][0] - ea[metric][0]
    noise = ea[metric][1] + eb[metric][1]
    return (
        f"{b} vs {a}: {_HEADERS[metric]} {eb[metric][0]:.4f} vs {ea[metric][0]:.4f} "
        f"({gap:+.4f}; seed spread {noise:.4f}: "
        f"{'a real difference' if abs(gap) > noise else 'within noise'})"
    )


def findings(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Sentences read off the figures: ISBI leaders, and the mitochondria class-imbalance pairs."""
    isbi = main_summary(rows, "isbi", ISBI_METRICS)
    mito = main_summary(rows, "mito", MITO_METRICS)
    out_isbi = [_lead(isbi, m, m == "membrane_iou") for m in ISBI_METRICS[:3]]
    n = list(MITO_LOSSES)
    pairs = [(n[0], n[1]), (n[2], n[3]), (n[2], n[0]), (n[0], n[4]), (n[0], n[5])]
    out_mito = [_lead(mito, "mito_iou", True), _lead(mito, "object_f1", True)]
    out_mito += [_pair(mito, a, b, m) for a, b in pairs for m in ("mito_iou", "object_f1")]
    return [s for s in out_isbi if s], [s for s in out_mito if s]


def budget_ranking(rows: list[dict[str, Any]], metric: str, higher: bool) -> str:
    """The ISBI losses run at every budget, ranked on ``metric`` at each: does the order hold?"""
    found = sorted(budgets(rows, "isbi"))
    if len(found) < 2:
        return ""
    per = {
        b: {e["loss"]: e[metric] for e in summarise(rows, "isbi", (metric,), b) if metric in e}
        for b in found
    }
    common = [n for n in per[found[0]] if all(n in per[b] for b in found)]
    if len(common) < 2:
        return ""
    orders, parts = [], []
    for b in found:
        ranked = sorted(common, key=lambda n: per[b][n][0], reverse=higher)
        orders.append(ranked)
        cells = (f"{n.split(' (')[0]} {per[b][n][0]:.4f} ± {per[b][n][1]:.4f}" for n in ranked)
        parts.append(f"{b} it.: " + ", ".join(cells))
    verdict = "the order holds" if all(o == orders[0] for o in orders) else "the order changes"
    return f"{_HEADERS[metric]}, best first: " + "; ".join(parts) + f" -- {verdict}"


# --------------------------------------------------------------------------- docs


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _bullets(sentences: list[str]) -> str:
    return "\n".join(f"* {s}." for s in sentences if s) or "* (no rows)"


def longer_tables(rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> str:
    """The ISBI table of the budgets other than the main one ("" when there are none)."""
    found = budgets(rows, "isbi")
    extra = [e for b in found[1:] for e in summarise(rows, "isbi", metrics, b)]
    return markdown(extra, metrics) if extra else ""


def generated_blocks(result: dict[str, Any]) -> dict[str, str]:
    """The generated parts of docs/LOSSES.md, by the name of their marker."""
    rows = result["rows"]
    isbi_f, mito_f = findings(rows)
    machine = ", ".join(f"{k} {v}" for k, v in result.get("machine", {}).items() if k in
                        ("processor", "cpu_count", "torch", "torch_threads"))  # fmt: skip
    ranking = [budget_ranking(rows, m, m == "membrane_iou") for m in ISBI_METRICS[:3]]
    runs = [
        f"`{r['command']}` (started {r['started']}, {r['wall_s'] / 60:.0f} min wall)"
        for r in result.get("runs", [])
    ]
    return {
        "machine": f"Generated {result.get('date', '')} on: {machine}; seeds {_seeds(rows)}.",
        "isbi": markdown(main_summary(rows, "isbi", ISBI_METRICS), ISBI_METRICS),
        "isbi-findings": _bullets(isbi_f),
        "longer": longer_tables(rows, ISBI_METRICS) or "(no longer-budget rows)",
        "longer-findings": _bullets(ranking),
        "mito": markdown(main_summary(rows, "mito", MITO_METRICS), MITO_METRICS),
        "mito-findings": _bullets(mito_f),
        "runs": _bullets([r.rstrip(".") for r in runs]),
    }


def fill_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the body of each ``<!-- gen:NAME -->`` ... ``<!-- /gen:NAME -->`` replaced
    by ``blocks[NAME]`` (the hand-written text around them is kept)."""
    for name, body in blocks.items():
        begin, end = f"<!-- gen:{name} -->", f"<!-- /gen:{name} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{DOC_PATH.name} has no {begin} ... {end} block")
        filled = f"{begin}\n{body}\n{end}"
        text = pattern.sub(lambda _, f=filled: f, text, count=1)
    return text


def _seeds(rows: list[dict[str, Any]]) -> str:
    return ",".join(str(s) for s in sorted({r["seed"] for r in rows})) or "-"


def evaluation_section(result: dict[str, Any]) -> str:
    """The marked section of docs/EVALUATION.md: the summary tables and a link."""
    rows = result["rows"]
    longer = longer_tables(rows, ISBI_METRICS[:3])
    ranking = [budget_ranking(rows, m, m == "membrane_iou") for m in ISBI_METRICS[:3]]
    holds = "; ".join(f"{c.split(',')[0]}: {c.split(' -- ')[1]}" for c in ranking if c)
    longer = f"\nLonger budget, some losses ({holds}):\n\n{longer}\n" if longer else ""
    commands = ", ".join(f"`{r['command']}`" for r in result.get("runs", []))
    return f"""{SECTION_BEGIN}
## Loss comparison (summary; details in [LOSSES.md](LOSSES.md))

<!-- generated by `python -m benchmarks.bench_losses --render`; kept by bench_evaluation -->

ISBI 2012, slices 0-4 -> 20-29, every loss for the same iterations, mean ± half-range
over the seeds:

{markdown(main_summary(rows, "isbi", ISBI_METRICS), ISBI_METRICS[:3])}
{longer}
Mitochondria row (synthetic sample, mitochondria as their own class, evaluated on
another stack; object F1: instances from the probabilities matched at IoU >= 0.5):

{markdown(main_summary(rows, "mito", MITO_METRICS), MITO_METRICS[1:4])}

Seeds {_seeds(rows)}; run as {commands or "(not logged)"}, each under
`flock /tmp/napari_unet_bench.lock`, on a CPU shared with other sessions' work (figures per
iteration budget, so that changes the wall time only).
{SECTION_END}"""


def replace_section(text: str, section: str) -> str:
    """``text`` with its marked losses section replaced by ``section`` (appended if absent)."""
    pattern = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + "\n\n" + section + "\n"


def write_docs(result: dict[str, Any]) -> list[Path]:
    """The generated blocks of docs/LOSSES.md, and the losses section of docs/EVALUATION.md."""
    _write_atomic(DOC_PATH, fill_blocks(DOC_PATH.read_text(), generated_blocks(result)))
    written = [DOC_PATH]
    if EVALUATION_DOC.exists():
        old = EVALUATION_DOC.read_text()
        _write_atomic(EVALUATION_DOC, replace_section(old, evaluation_section(result)))
        written.append(EVALUATION_DOC)
    return written


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
