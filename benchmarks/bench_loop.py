"""The annotation loop, measured: a simulated annotator corrects one slice per round, then retrains.

Start with one densely painted slice and train T minutes (or N iterations); then for R rounds pick a slice
(in order, or the one :func:`napari_unet.suggest.rank_slices` suggests), accept the
prediction, correct it to the truth and fine-tune T' minutes (or N' iterations) from the current
weights.
Effort per round: pixels changed and 4-connected error regions; quality on held-out slices.
Peers in the same loop: the ilastik-style random forest of ``bench_evaluation`` (b)
refitted each round, and "no retraining" (correct the first model's predictions).

    python -m benchmarks.bench_loop                 # ISBI (if in ../shared) and the synthetic one
    python -m benchmarks.bench_loop --quick         # tiny smoke run (synthetic, 2 rounds)
    python -m benchmarks.bench_loop --minutes 5 --finetune-minutes 1 --rounds 8 --dataset isbi
    python -m benchmarks.bench_loop --iterations 150 --finetune-iterations 50 --dataset synthetic

Writes ``benchmarks/results/loop.json``; a full run also ``benchmarks/results/loop_<data>.json``
(one per data set, kept across runs), from which ``docs/LOOP.md`` and ``docs/images/loop.png`` are
made, with the window loop of ``bench_loop_window`` (``loop_window_<data>.json``) beside them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/bench_loop.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks import _common, _loop_docs

NAME = "loop"
ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("isbi", "synthetic")
#: arm -> (learner, how the next slice is picked)
ARMS = {
    "unet-order": ("unet", "order"),
    "unet-suggest": ("unet", "suggest"),
    "rf-order": ("forest", "order"),
    "no-retraining": ("frozen", "order"),
}
#: the columns of a round's row
ROUND_KEYS = (
    "dataset", "arm", "round", "slice", "pixels_changed", "changed_pct", "error_regions",
    "pick_s", "iterations", "train_s", "wall_s", "pixel_error", "membrane_iou",
)  # fmt: skip
#: the random-forest peer of bench_evaluation (b): the same features and forest
RF_FEATURES = {"intensity": True, "edges": True, "texture": True, "sigma_min": 1, "sigma_max": 16}
RF_FOREST = {"n_estimators": 50, "n_jobs": -1, "max_depth": 10, "max_samples": 0.05}


@dataclass(frozen=True)
class Limit:
    """How long one training runs: minutes, iterations or both (whichever comes first)."""

    minutes: float | None
    iterations: int | None = None

    def __post_init__(self) -> None:
        if self.minutes is None and self.iterations is None:
            raise ValueError("a training needs a time or an iteration limit")

    def describe(self) -> str:
        parts = [f"{self.iterations} iterations" if self.iterations is not None else "",
                 f"{self.minutes:g} min" if self.minutes is not None else ""]  # fmt: skip
        return " or ".join(p for p in parts if p)


@dataclass(frozen=True)
class Budget:
    minutes: float | None  # first training
    finetune_minutes: float | None  # after each correction
    rounds: int
    iterations: int | None = None  # first training, in optimiser steps (CPU-contention proof)
    finetune_iterations: int | None = None

    @property
    def first(self) -> Limit:
        return Limit(self.minutes, self.iterations)

    @property
    def finetune(self) -> Limit:
        return Limit(self.finetune_minutes, self.finetune_iterations)

    def describe(self) -> str:
        return f"T = {self.first.describe()}, T' = {self.finetune.describe()}, R = {self.rounds}"


FULL = Budget(minutes=5.0, finetune_minutes=1.0, rounds=8)
QUICK = Budget(minutes=0.1, finetune_minutes=0.05, rounds=2)


@dataclass(frozen=True)
class LoopData:
    """A stack, its truth (1 membrane, 2 cell), the painted slice, the pool to pick from, the held-out slices."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    start: int
    pool: tuple[int, ...]
    held_out: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "shape": list(self.image.shape), "start": self.start,
            "pool": list(self.pool), "held_out": list(self.held_out),
        }  # fmt: skip

    def first_labels(self) -> np.ndarray:
        labels = np.zeros_like(self.truth)
        labels[self.start] = self.truth[self.start]
        return labels


def load_data(name: str, quick: bool = False) -> LoopData | None:
    """The ``"isbi"`` (None when it is not there) or ``"synthetic"`` data set of the loop."""
    if name == "isbi":
        if not _common.isbi_available():
            return None
        from benchmarks.bench_evaluation import EVAL_SLICES, load_isbi

        image, truth = load_isbi()
        return LoopData("isbi", image, truth, 0, tuple(range(1, EVAL_SLICES[0])), EVAL_SLICES)
    from napari_unet.sample_data import synthetic_em

    if quick:
        image, truth = synthetic_em((6, 128, 128), seed=0, cell_size=24)
        return LoopData("synthetic", image, truth, 0, (1, 2, 3), (4, 5))
    image, truth = synthetic_em((16, 512, 512), seed=0)  # the plugin's sample
    return LoopData("synthetic", image, truth, 0, tuple(range(1, 12)), tuple(range(12, 16)))


def correction_effort(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Pixels to repaint to turn ``pred`` into ``truth``, and their 4-connected regions (strokes)."""
    from scipy import ndimage

    wrong = np.asarray(pred) != np.asarray(truth)
    _, regions = ndimage.label(wrong)  # scipy's default structure: 4-connected in 2-D
    return {"pixels_changed": int(np.count_nonzero(wrong)), "error_regions": int(regions)}


def quality(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pixel error and membrane (class 1) IoU of predicted class maps."""
    from napari_unet.metrics import iou_per_class, pixel_error

    return {
        "pixel_error": pixel_error(pred, truth, ignore=0),
        "membrane_iou": float(iou_per_class(pred, truth, classes=[1], ignore=0)[1]),
    }


# --------------------------------------------------------------------------- learners


class UNetLearner:
    """The product's calls: ``Trainer(TrainConfig())`` with a time limit, ``predict_tiled``, ``rank_slices``."""

    def __init__(self, model: Any, metadata: dict[str, Any], frozen: bool = False) -> None:
        self.model, self.metadata, self.frozen = model, metadata, frozen

    def copy(self, frozen: bool = False) -> UNetLearner:
        return UNetLearner(copy.deepcopy(self.model), copy.deepcopy(self.metadata), frozen)

    def update(self, image: np.ndarray, labels: np.ndarray, limit: Limit) -> dict[str, Any]:
        """Train (or fine-tune from the current weights) within ``limit``, as the Train dock does."""
        if self.frozen:
            return {"iterations": 0, "train_s": 0.0}
        import torch

        from napari_unet.training import Finished, TrainConfig, Trainer

        torch.manual_seed(0)
        config = dataclasses.replace(
            TrainConfig(),
            max_minutes=limit.minutes,
            iterations=limit.iterations,
            preview_every_s=0.0,
        )
        t0 = time.perf_counter()
        trainer = Trainer(image, labels, config, model=self.model, metadata=self.metadata or None)
        iterations = 0
        for event in trainer.run():
            if isinstance(event, Finished):
                iterations = event.iterations
        self.model, self.metadata = trainer.model, trainer.metadata
        return {"iterations": iterations, "train_s": time.perf_counter() - t0}

    def predict(self, image: np.ndarray, slices: tuple[int, ...]) -> np.ndarray:
        from napari_unet.tiling import predict_tiled

        norm = self.metadata["normalization"]
        return np.asarray(predict_tiled(self.model, image[list(slices)], normalization=norm))

    def suggest(self, image: np.ndarray, labels: np.ndarray, candidates: list[int]) -> int:
        from napari_unet.suggest import rank_slices

        norm = self.metadata["normalization"]
        ranking = rank_slices(self.model, image, labels, slices=candidates, normalization=norm)
        return int(ranking.next())


class ForestLearner:
    """The ilastik-style peer: pixel features, a random forest refitted on every labelled slice."""

    frozen = False

    def __init__(self) -> None:
        self._features: dict[int, np.ndarray] = {}
        self._forest: Any = None

    def features(self, image: np.ndarray, z: int) -> np.ndarray:
        if z not in self._features:
            from skimage.feature import multiscale_basic_features

            self._features[z] = multiscale_basic_features(image[z], **RF_FEATURES).astype(
                np.float32
            )
        return self._features[z]

    def update(self, image: np.ndarray, labels: np.ndarray, limit: Limit) -> dict[str, Any]:
        """Refit on all labelled slices (not limited, like ilastik's live update)."""
        from skimage.future import fit_segmenter
        from sklearn.ensemble import RandomForestClassifier

        t0 = time.perf_counter()
        done = [z for z in range(len(labels)) if labels[z].any()]
        feats = np.stack([self.features(image, z) for z in done])
        forest = RandomForestClassifier(**RF_FOREST, random_state=0)
        self._forest = fit_segmenter(labels[done], feats, forest)
        return {"iterations": None, "train_s": time.perf_counter() - t0}

    def predict(self, image: np.ndarray, slices: tuple[int, ...]) -> np.ndarray:
        from skimage.future import predict_segmenter

        preds = [predict_segmenter(self.features(image, z), self._forest) for z in slices]
        return np.stack(preds).astype(np.uint8)


# --------------------------------------------------------------------------- the loop


def pick_slice(strategy: str, learner: Any, data: LoopData, labels: np.ndarray) -> int | None:
    """The next slice of the pool to correct: the first unlabelled one, or the suggestion."""
    remaining = [z for z in data.pool if not labels[z].any()]
    if not remaining:
        return None
    if strategy == "order":
        return remaining[0]
    return learner.suggest(data.image, labels, remaining)


def run_arm(
    arm: str, learner: Any, strategy: str, data: LoopData, budget: Budget, first: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows of one arm: round 0 (the first model; ``first``: its training), then one per correction."""
    labels = data.first_labels()
    held = data.truth[list(data.held_out)]
    score = quality(learner.predict(data.image, data.held_out), held)
    base = {"dataset": data.name, "arm": arm}
    rows = [{**base, "round": 0, "slice": data.start, **first, "wall_s": first["train_s"], **score}]
    area = int(np.prod(data.truth.shape[1:]))
    for r in range(1, budget.rounds + 1):
        t0 = time.perf_counter()
        z = pick_slice(strategy, learner, data, labels)
        if z is None:
            break
        pick_s = time.perf_counter() - t0
        effort = correction_effort(learner.predict(data.image, (z,))[0], data.truth[z])
        labels[z] = data.truth[z]  # accept the prediction, correct it to the truth
        fit = learner.update(data.image, labels, budget.finetune)
        wall_s = time.perf_counter() - t0
        if not learner.frozen:
            score = quality(learner.predict(data.image, data.held_out), held)
        rows.append(
            {
                **base, "round": r, "slice": z, **effort,
                "changed_pct": 100.0 * effort["pixels_changed"] / area,
                "pick_s": pick_s, **fit, "wall_s": wall_s, **score,
            }
        )  # fmt: skip
    return [{k: row.get(k) for k in ROUND_KEYS} for row in rows]


def run_dataset(data: LoopData, budget: Budget, arms: tuple[str, ...] = tuple(ARMS)) -> list[dict]:
    """Every arm on one data set; the U-Net arms share the first T-minute model."""
    labels = data.first_labels()
    unet = UNetLearner(None, {})
    unet_first = unet.update(data.image, labels, budget.first)
    rows: list[dict[str, Any]] = []
    for arm in arms:
        kind, strategy = ARMS[arm]
        print(f"  {data.name}: {arm}", flush=True)
        if kind == "forest":
            learner: Any = ForestLearner()
            first = learner.update(data.image, labels, budget.first)
        else:
            learner, first = unet.copy(frozen=kind == "frozen"), unet_first
        rows += run_arm(arm, learner, strategy, data, budget, first)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data set and arm: the effort per corrected slice, its trend, the final quality."""
    out = []
    for key in dict.fromkeys((r["dataset"], r["arm"]) for r in rows):
        arm_rows = [r for r in rows if (r["dataset"], r["arm"]) == key]
        rounds = [r for r in arm_rows if r["round"] > 0]
        pixels = [r["pixels_changed"] for r in rounds]
        regions = [r["error_regions"] for r in rounds]
        slope = float(np.polyfit(range(len(pixels)), pixels, 1)[0]) if len(pixels) > 1 else None
        out.append(
            {
                "dataset": key[0], "arm": key[1], "rounds": len(rounds),
                "first_pixels": pixels[0] if pixels else None,
                "last_pixels": pixels[-1] if pixels else None,
                "mean_pixels": float(np.mean(pixels)) if pixels else None,
                "pixels_per_round_trend": slope,
                "mean_regions": float(np.mean(regions)) if regions else None,
                "start_pixel_error": arm_rows[0]["pixel_error"],
                "final_pixel_error": arm_rows[-1]["pixel_error"],
                "final_membrane_iou": arm_rows[-1]["membrane_iou"],
                "wall_s": sum(r["wall_s"] for r in arm_rows),
            }
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------- run and report


def make_budget(
    quick: bool = False,
    *,
    minutes: float | None = None,
    finetune_minutes: float | None = None,
    rounds: int | None = None,
    iterations: int | None = None,
    finetune_iterations: int | None = None,
) -> Budget:
    """The default budget with what was given; an iteration limit alone drops the time limit."""
    base = QUICK if quick else FULL

    def pick(value: Any, steps: int | None, default: Any) -> Any:
        return value if value is not None else (None if steps is not None else default)

    return Budget(
        pick(minutes, iterations, base.minutes),
        pick(finetune_minutes, finetune_iterations, base.finetune_minutes),
        rounds if rounds is not None else base.rounds,
        iterations,
        finetune_iterations,
    )


def budget_note(budget: Budget) -> str:
    """Whether the figures depend on the machine's load."""
    if budget.iterations is not None and budget.finetune_iterations is not None:
        return "Iteration limits: the figures do not depend on the load of the (shared) CPUs."
    return "Time limits: the iterations each training got are in the table; CPUs shared with other work."


def run(
    quick: bool = False,
    *,
    minutes: float | None = None,
    finetune_minutes: float | None = None,
    rounds: int | None = None,
    iterations: int | None = None,
    finetune_iterations: int | None = None,
    dataset: str | None = None,
    write_docs: bool | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the loop on ``dataset`` (``"isbi"``, ``"synthetic"``, default both; quick: synthetic).

    ``write_docs`` (default: not quick): keep each data set's result in
    ``benchmarks/results/loop_<data>.json`` and remake ``docs/LOOP.md`` and its plots from them.
    """
    budget = make_budget(
        quick, minutes=minutes, finetune_minutes=finetune_minutes, rounds=rounds,
        iterations=iterations, finetune_iterations=finetune_iterations,
    )  # fmt: skip
    names = [dataset] if dataset not in (None, "all") else (["synthetic"] if quick else DATASETS)
    t0, rows, notes, sections = time.perf_counter(), [], [], []
    mode = "quick" if quick else "full"
    for name in names:
        data = load_data(name, quick)
        if data is None:
            notes.append(f"ISBI 2012 skipped: not found in {_common.ISBI_DIR}")
            continue
        t1 = time.perf_counter()
        mine = run_dataset(data, budget)
        rows += mine
        sections.append(
            _loop_docs.section(
                NAME, name, mine, summarize(mine), data.describe(), budget, mode,
                time.perf_counter() - t1, note=budget_note(budget), command=command,
            )
        )  # fmt: skip
    result: dict[str, Any] = {
        "name": NAME,
        "rows": rows,
        "summary": summarize(rows),
        "note": "; ".join([f"{mode}: {budget.describe()}", *notes]),
        "mode": mode,
        "datasets": {s["dataset"]: s["datasets"][s["dataset"]] for s in sections},
        "budget": dataclasses.asdict(budget),
        "total_s": round(time.perf_counter() - t0, 1),
        "machine": _common.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if not rows:
        result["skipped"] = True
    elif write_docs if write_docs is not None else not quick:
        for sec in sections:
            _loop_docs.save_section(sec)
        _loop_docs.write_docs()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (synthetic, 2 rounds)")
    parser.add_argument(
        "--minutes", type=float, help=f"first training T (default {FULL.minutes:g})"
    )
    parser.add_argument(
        "--finetune-minutes",
        type=float,
        help=f"fine-tune T' per round (default {FULL.finetune_minutes:g})",
    )
    parser.add_argument("--rounds", type=int, help=f"corrected slices R (default {FULL.rounds})")
    parser.add_argument(
        "--iterations", type=int, help="first training in iterations (alone: no time limit)"
    )
    parser.add_argument(
        "--finetune-iterations",
        type=int,
        help="fine-tune per round in iterations (alone: no time limit)",
    )
    parser.add_argument(
        "--dataset", choices=("all", *DATASETS), help="default all (quick: synthetic)"
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="do not keep the result for docs/LOOP.md"
    )
    args = parser.parse_args(argv)
    result = run(
        args.quick, minutes=args.minutes, finetune_minutes=args.finetune_minutes,
        rounds=args.rounds, iterations=args.iterations,
        finetune_iterations=args.finetune_iterations, dataset=args.dataset,
        write_docs=False if args.no_docs else None,
        command=" ".join(["python -m benchmarks.bench_loop", *(argv or sys.argv[1:])]),
    )  # fmt: skip
    if result.get("skipped"):
        print(f"## {NAME}\n{result['note']}")
        return 0
    _common.report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
