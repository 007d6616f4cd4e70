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

from benchmarks import _loop_docs, bench_loop  # noqa: E402
from benchmarks.bench_loop import Budget, Limit, LoopData  # noqa: E402

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
        self.limits: list[Limit] = []

    def update(self, image: np.ndarray, labels: np.ndarray, limit: Limit) -> dict[str, Any]:
        self.trained_on.append(labelled_slices(labels))
        self.limits.append(limit)
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
    budget = Budget(1.0, None, 10, finetune_iterations=7)
    rows = bench_loop.run_arm("arm", learner, strategy, data, budget, first)
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
    assert learner.limits == [Limit(None, 7)] * 3  # the fine-tune limit, in iterations
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
    budget = Budget(1, 1, 3)
    sec = _loop_docs.section("loop", "tiny", rows, summary, data.describe(), budget, "quick", 1.0)
    doc = _loop_docs.write_markdown([sec], [], tmp_path / "LOOP.md").read_text()
    assert "| tiny | 6 x 64 x 64 | 0 | 1-3 | 4-5 |" in doc
    assert "unet-order -100, unet-suggest -100, rf-order -100, no-retraining -100" in doc
    assert "T = 1 min, T' = 1 min, R = 3" in doc
    pytest.importorskip("matplotlib")
    assert _loop_docs.write_plot(rows, tmp_path / "loop.png").stat().st_size > 1000


def test_kept_results_per_data_set(data: LoopData, tmp_path: Path) -> None:
    """A run on one data set keeps the other's result; the window loop gets its own section."""
    rows = bench_loop.run_arm(
        "unet-order", AllMembrane(), "order", data, Budget(1, 1, 2), {"train_s": 0.0}
    )
    budget = Budget(None, None, 2, iterations=5, finetune_iterations=2)
    for name, dataset in (("loop", "isbi"), ("loop", "synthetic"), ("loop_window", "isbi")):
        mine = [{**r, "dataset": dataset} for r in rows]
        sec = _loop_docs.section(name, dataset, mine, bench_loop.summarize(mine),
                                 data.describe(), budget, "full", 1.0)  # fmt: skip
        _loop_docs.save_section(sec, tmp_path)
    again = [{**r, "dataset": "synthetic", "pixel_error": 0.5} for r in rows]
    sec = _loop_docs.section("loop", "synthetic", again, bench_loop.summarize(again),
                             data.describe(), budget, "full", 1.0)  # fmt: skip
    _loop_docs.save_section(sec, tmp_path)  # replaces the synthetic result only
    plots = {"loop": tmp_path / "a.png", "loop_window": tmp_path / "b.png"}
    doc = _loop_docs.write_docs(tmp_path, tmp_path / "LOOP.md", plots).read_text()
    headless, window = doc.split("## Through the real docks")
    assert "### isbi" in headless and "### synthetic" in headless
    assert "### isbi" in window and "### synthetic" not in window
    assert "| synthetic | unet-order | 0 |" in headless and "0.5 |" in headless
    assert "T = 5 iterations, T' = 2 iterations, R = 2" in doc
    if plots["loop"].exists():  # matplotlib installed
        assert plots["loop_window"].stat().st_size > 1000


def test_the_real_loop_on_tiny_data(data: LoopData) -> None:
    """Trainer, predict_tiled, rank_slices and the forest, one round each (about 10 s)."""
    pytest.importorskip("sklearn")
    budget = Budget(minutes=0.02, finetune_minutes=None, rounds=1, finetune_iterations=1)
    rows = bench_loop.run_dataset(data, budget)
    assert [(r["arm"], r["round"]) for r in rows] == [
        (arm, r) for arm in bench_loop.ARMS for r in (0, 1)
    ]
    by_arm = {r["arm"]: r for r in rows if r["round"] == 1}
    assert by_arm["unet-order"]["slice"] == 1 and by_arm["unet-suggest"]["slice"] in (1, 2, 3)
    assert by_arm["no-retraining"]["iterations"] == 0
    assert by_arm["unet-order"]["iterations"] == by_arm["unet-suggest"]["iterations"] == 1
    assert all(0 <= r["pixel_error"] <= 1 for r in rows)  # also: not NaN
