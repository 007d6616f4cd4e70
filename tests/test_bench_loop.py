"""The loop benchmark's effort counting and bookkeeping, on tiny data (no ISBI needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_loop  # noqa: E402
from benchmarks.bench_loop import Budget, LoopData  # noqa: E402

from napari_unet.sample_data import synthetic_em  # noqa: E402
from napari_unet.suggest import labelled_slices  # noqa: E402


@pytest.fixture(scope="module")
def data() -> LoopData:
    image, truth = synthetic_em((6, 64, 64), seed=0, cell_size=16)
    return LoopData("tiny", image, truth, start=0, pool=(1, 2, 3), held_out=(4, 5))


class AllMembrane:
    """A stand-in learner that predicts membrane everywhere and records what it was given."""

    def __init__(self, frozen: bool = False) -> None:
        self.frozen = frozen
        self.trained_on: list[list[int]] = []
        self.predicted: list[tuple[int, ...]] = []

    def update(self, image: np.ndarray, labels: np.ndarray, minutes: float) -> dict[str, Any]:
        self.trained_on.append(labelled_slices(labels))
        return {"iterations": 1, "train_s": 0.0}

    def predict(self, image: np.ndarray, slices: tuple[int, ...]) -> np.ndarray:
        self.predicted.append(tuple(slices))
        return np.ones((len(slices), *image.shape[1:]), np.uint8)

    def suggest(self, image: np.ndarray, labels: np.ndarray, candidates: list[int]) -> int:
        return candidates[-1]


def test_effort_counts_pixels_and_4_connected_regions() -> None:
    truth = np.ones((6, 6), np.uint8)
    pred = truth.copy()
    pred[0, 0] = pred[1, 1] = 2  # touching diagonally: two 4-connected regions
    pred[4:6, 3:6] = 2  # one block of 6 pixels
    assert bench_loop.correction_effort(pred, truth) == {"pixels_changed": 8, "error_regions": 3}
    assert bench_loop.correction_effort(truth, truth) == {"pixels_changed": 0, "error_regions": 0}


@pytest.mark.parametrize(("strategy", "order"), [("order", [1, 2, 3]), ("suggest", [3, 2, 1])])
def test_loop_bookkeeping(data: LoopData, strategy: str, order: list[int]) -> None:
    learner = AllMembrane()
    first = {"iterations": 5, "train_s": 1.5}
    rows = bench_loop.run_arm("arm", learner, strategy, data, Budget(1.0, 0.5, 10), first)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]  # stops when the pool is used up
    assert [r["slice"] for r in rows] == [0, *order]
    assert all(tuple(r) == bench_loop.ROUND_KEYS for r in rows)
    assert rows[0]["wall_s"] == 1.5 and rows[0]["pixels_changed"] is None
    for r in rows[1:]:
        wrong = data.truth[r["slice"]] != 1
        assert r["pixels_changed"] == wrong.sum()
        assert r["changed_pct"] == pytest.approx(100 * wrong.mean())
        assert r["error_regions"] > 0 and r["iterations"] == 1
    # each retraining sees the painted slice and every corrected one, never a held-out slice
    assert learner.trained_on == [sorted([0, *order[: i + 1]]) for i in range(3)]
    held = data.truth[[4, 5]]
    assert all(r["pixel_error"] == pytest.approx((held != 1).mean()) for r in rows)
    assert learner.predicted.count((4, 5)) == 4  # quality after every round


def test_frozen_arm_is_scored_once(data: LoopData) -> None:
    learner = AllMembrane(frozen=True)
    rows = bench_loop.run_arm("x", learner, "order", data, Budget(1, 1, 2), {"train_s": 0.0})
    assert len(rows) == 3 and learner.predicted.count((4, 5)) == 1
    assert learner.trained_on == [[0, 1], [0, 1, 2]]  # update() is called; a frozen one ignores it


def test_summary_and_docs(data: LoopData, tmp_path: Path) -> None:
    rows = []
    for arm in bench_loop.ARMS:
        rows += bench_loop.run_arm(
            arm, AllMembrane(), "order", data, Budget(1, 1, 3), {"train_s": 0}
        )
    for r in rows:  # a falling effort: 300, 200, 100 for every arm
        if r["round"]:
            r["pixels_changed"] = 400 - 100 * r["round"]
    summary = bench_loop.summarize(rows)
    assert [s["arm"] for s in summary] == list(bench_loop.ARMS)
    s = summary[0]
    assert (s["rounds"], s["first_pixels"], s["last_pixels"], s["mean_pixels"]) == (
        3,
        300,
        100,
        200,
    )
    assert s["pixels_per_round_trend"] == pytest.approx(-100)
    result = {
        "rows": rows, "summary": summary, "note": "test", "mode": "quick",
        "datasets": {"tiny": data.describe()}, "budget": {"minutes": 1, "finetune_minutes": 1,
        "rounds": 3}, "total_s": 1.0, "date": "today", "machine": {"cpu_count": 2},
    }  # fmt: skip
    doc = bench_loop.write_markdown(result, tmp_path / "LOOP.md").read_text()
    assert "| tiny | 6 x 64 x 64 | 0 | 1-3 | 4-5 |" in doc
    assert "U-Net in order -100, suggested -100, random forest -100" in doc
    pytest.importorskip("matplotlib")
    assert bench_loop.write_plot(result, tmp_path / "loop.png").stat().st_size > 1000


def test_the_real_loop_on_tiny_data(data: LoopData) -> None:
    """Trainer, predict_tiled, rank_slices and the forest, one round each (about 10 s)."""
    pytest.importorskip("sklearn")
    rows = bench_loop.run_dataset(data, Budget(minutes=0.02, finetune_minutes=0.01, rounds=1))
    assert [(r["arm"], r["round"]) for r in rows] == [
        (arm, r) for arm in bench_loop.ARMS for r in (0, 1)
    ]
    by_arm = {r["arm"]: r for r in rows if r["round"] == 1}
    assert by_arm["unet-order"]["slice"] == 1 and by_arm["unet-suggest"]["slice"] in (1, 2, 3)
    assert by_arm["no-retraining"]["iterations"] == 0 and by_arm["unet-order"]["iterations"] >= 1
    assert all(0 <= r["pixel_error"] <= 1 for r in rows)  # also: not NaN
