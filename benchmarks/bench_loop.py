"""The annotation loop, measured: a simulated annotator corrects one slice per round, then retrains.

Start with one densely painted slice and train T minutes; then for R rounds pick a slice
(in order, or the one :func:`napari_unet.suggest.rank_slices` suggests), accept the
prediction, correct it to the truth and fine-tune T' minutes from the current weights.
Effort per round: pixels changed and 4-connected error regions; quality on held-out slices.
Peers in the same loop: the ilastik-style random forest of ``bench_evaluation`` (b)
refitted each round, and "no retraining" (correct the first model's predictions).

    python -m benchmarks.bench_loop                 # ISBI (if in ../shared) and the synthetic one
    python -m benchmarks.bench_loop --quick         # tiny smoke run (synthetic, 2 rounds)
    python -m benchmarks.bench_loop --minutes 5 --finetune-minutes 1 --rounds 8 --dataset isbi

Writes ``benchmarks/results/loop.json``, ``docs/LOOP.md`` and ``docs/images/loop.png``.
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

from benchmarks import _common

NAME = "loop"
ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "LOOP.md"
PLOT_PATH = ROOT / "docs" / "images" / "loop.png"
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
class Budget:
    minutes: float  # first training
    finetune_minutes: float  # after each correction
    rounds: int


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

    def update(self, image: np.ndarray, labels: np.ndarray, minutes: float) -> dict[str, Any]:
        """Train (or fine-tune from the current weights) for ``minutes``, as the Train dock does."""
        if self.frozen:
            return {"iterations": 0, "train_s": 0.0}
        import torch

        from napari_unet.training import Finished, TrainConfig, Trainer

        torch.manual_seed(0)
        config = dataclasses.replace(
            TrainConfig(), max_minutes=minutes, iterations=None, preview_every_s=0.0
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

    def update(self, image: np.ndarray, labels: np.ndarray, minutes: float) -> dict[str, Any]:
        """Refit on all labelled slices (not time-limited, like ilastik's live update)."""
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
        fit = learner.update(data.image, labels, budget.finetune_minutes)
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
    unet_first = unet.update(data.image, labels, budget.minutes)
    rows: list[dict[str, Any]] = []
    for arm in arms:
        kind, strategy = ARMS[arm]
        print(f"  {data.name}: {arm}", flush=True)
        if kind == "forest":
            learner: Any = ForestLearner()
            first = learner.update(data.image, labels, budget.minutes)
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


def run(
    quick: bool = False,
    *,
    minutes: float | None = None,
    finetune_minutes: float | None = None,
    rounds: int | None = None,
    dataset: str | None = None,
    write_docs: bool = True,
) -> dict[str, Any]:
    """Run the loop on ``dataset`` (``"isbi"``, ``"synthetic"``, default both; quick: synthetic)."""
    budget = QUICK if quick else FULL
    budget = Budget(
        minutes if minutes is not None else budget.minutes,
        finetune_minutes if finetune_minutes is not None else budget.finetune_minutes,
        rounds if rounds is not None else budget.rounds,
    )
    names = [dataset] if dataset not in (None, "all") else (["synthetic"] if quick else DATASETS)
    t0, rows, notes, datasets = time.perf_counter(), [], [], {}
    for name in names:
        data = load_data(name, quick)
        if data is None:
            notes.append(f"ISBI 2012 skipped: not found in {_common.ISBI_DIR}")
            continue
        datasets[name] = data.describe()
        rows += run_dataset(data, budget)
    mode = "quick" if quick else "full"
    result: dict[str, Any] = {
        "name": NAME,
        "rows": rows,
        "summary": summarize(rows),
        "note": "; ".join([f"{mode}: T={budget.minutes:g} min, T'={budget.finetune_minutes:g} min, "
                           f"R={budget.rounds}", *notes]),
        "mode": mode,
        "datasets": datasets,
        "budget": dataclasses.asdict(budget),
        "total_s": round(time.perf_counter() - t0, 1),
        "machine": _common.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }  # fmt: skip
    if not rows:
        result["skipped"] = True
    elif write_docs:
        write_plot(result)
        write_markdown(result)
    return result


def write_plot(result: dict[str, Any], path: Path = PLOT_PATH) -> Path | None:
    """Effort (pixels changed) and held-out pixel error per round, one column per data set."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("(matplotlib not installed: no plot; pip install -e .[bench])")
        return None
    rows = result["rows"]
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        for arm in ARMS:
            mine = [r for r in rows if r["dataset"] == name and r["arm"] == arm]
            fixes = [r for r in mine if r["round"] > 0]
            axes[0, col].plot(
                [r["round"] for r in fixes], [r["changed_pct"] for r in fixes], "o-", label=arm
            )
            axes[1, col].plot(
                [r["round"] for r in mine], [r["pixel_error"] for r in mine], "o-", label=arm
            )
        axes[0, col].set(title=f"{name}: effort per corrected slice", ylabel="pixels changed (%)")
        axes[1, col].set(title=f"{name}: held-out quality", xlabel="round", ylabel="pixel error")
        axes[0, col].legend(fontsize=8)
        for ax in axes[:, col]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _datasets_text(datasets: dict[str, dict[str, Any]]) -> str:
    def span(zs: list[int]) -> str:
        return f"{zs[0]}-{zs[-1]}" if zs == list(range(zs[0], zs[-1] + 1)) else str(zs)

    lines = ["| data | shape | painted first | picked from | held out |", "|---|---|---|---|---|"]
    for name, d in datasets.items():
        shape = " x ".join(map(str, d["shape"]))
        lines.append(
            f"| {name} | {shape} | {d['start']} | {span(d['pool'])} | {span(d['held_out'])} |"
        )
    return "\n".join(lines)


def _comparison_text(summary: list[dict[str, Any]]) -> str:
    """Per data set: the effort trends of the U-Net and the forest, and (b) suggest against (a) order."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in summary):
        arm = {r["arm"]: r for r in summary if r["dataset"] == name}
        a, b, rf = arm.get("unet-order"), arm.get("unet-suggest"), arm.get("rf-order")
        if not (a and b and rf) or a["pixels_per_round_trend"] is None:
            continue
        out.append(
            f"* {name}: effort trend (pixels per round, linear fit) U-Net in order "
            f"{a['pixels_per_round_trend']:+.0f}, suggested {b['pixels_per_round_trend']:+.0f}, "
            f"random forest {rf['pixels_per_round_trend']:+.0f}; mean effort per slice "
            f"{a['mean_pixels']:.0f} (order) / {b['mean_pixels']:.0f} (suggested) / "
            f"{rf['mean_pixels']:.0f} (forest) px; final held-out pixel error "
            f"{a['final_pixel_error']:.4f} / {b['final_pixel_error']:.4f} / {rf['final_pixel_error']:.4f}."
        )
    return "\n".join(out)


def write_markdown(result: dict[str, Any], path: Path = DOC_PATH) -> Path:
    b = result["budget"]
    m = result.get("machine", {})
    machine = ", ".join(f"{k} {m[k]}" for k in ("processor", "cpu_count", "gpu", "torch") if k in m)
    text = f"""# The annotation loop, measured

<!-- generated by `python -m benchmarks.bench_loop`; do not edit by hand -->

Generated {result["date"]} ({result["mode"]} mode, {result["total_s"]:.0f} s) on: {machine}.
{result["note"]}.

A simulated annotator: one densely painted slice, train T = {b["minutes"]:g} min (`Trainer` with
`TrainConfig()` and a time limit, no previews), then {b["rounds"]} rounds: pick a slice, accept the
prediction, correct it to the truth, fine-tune T' = {b["finetune_minutes"]:g} min from the current
weights. **Effort** per round: pixels changed and 4-connected error regions (a stand-in for brush
strokes). **Quality**: pixel error and membrane IoU on held-out slices, never picked.

{_datasets_text(result.get("datasets", {}))}

| arm | what |
|---|---|
| unet-order | napari-unet, slices corrected in order (1, 2, 3, ...) |
| unet-suggest | napari-unet, the slice `napari_unet.suggest.rank_slices` ranks first (mean entropy) |
| rf-order | ilastik-style random forest (`bench_evaluation` (b)), refitted on all labelled slices each round |
| no-retraining | the first U-Net's predictions corrected, never retrained |

The U-Net arms start from the same first model. Round 0 is that model (`wall_s` = its training).

## Summary

{_common.format_table(result["summary"])}

{_comparison_text(result["summary"])}

![effort and quality per round](images/loop.png)

## Per round

{_common.format_table(result["rows"])}

Reproduce: `python -m benchmarks.bench_loop` (`--quick` smoke run; `--minutes T
--finetune-minutes T' --rounds R --dataset isbi|synthetic`).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


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
        "--dataset", choices=("all", *DATASETS), help="default all (quick: synthetic)"
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="do not write docs/LOOP.md and the plot"
    )
    args = parser.parse_args(argv)
    result = run(
        args.quick, minutes=args.minutes, finetune_minutes=args.finetune_minutes,
        rounds=args.rounds, dataset=args.dataset, write_docs=not args.no_docs,
    )  # fmt: skip
    if result.get("skipped"):
        print(f"## {NAME}\n{result['note']}")
        return 0
    _common.report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
