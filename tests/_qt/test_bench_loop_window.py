"""The window loop benchmark's smoke run: real docks in a shown viewer, real tiny training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_loop_window  # noqa: E402
from benchmarks.bench_loop import load_data  # noqa: E402


def test_window_loop_smoke(make_napari_viewer, tmp_path, notifications) -> None:
    """Arm b, one round, in a shown viewer: effort and quality recorded, the labels end at the truth.

    (The CLI's ``--smoke`` runs both arms; one here keeps the test short.)
    """
    data = load_data("synthetic", quick=True)
    viewers = []

    def make_viewer():
        viewers.append(make_napari_viewer(show=True))
        return viewers[-1]

    rows = bench_loop_window.run_loop(
        data, bench_loop_window.SMOKE, tmp_path, arms=("unet-suggest",), make_viewer=make_viewer,
        train=bench_loop_window.SMOKE_TRAIN,
    )  # fmt: skip
    assert [(r["arm"], r["round"]) for r in rows] == [("unet-suggest", 0), ("unet-suggest", 1)]
    (viewer,) = viewers
    assert viewer.window._qt_window.isVisible()
    first, fix = rows
    assert first["iterations"] == bench_loop_window.SMOKE.iterations
    assert fix["iterations"] == bench_loop_window.SMOKE.finetune_iterations
    assert fix["slice"] in data.pool and fix["skipped"] >= 0  # held-out suggestions skipped
    area = data.truth[0].size
    assert 0 < fix["pixels_changed"] < area and 0 < fix["error_regions"] <= fix["pixels_changed"]
    assert fix["changed_pct"] == pytest.approx(100 * fix["pixels_changed"] / area)
    assert fix["wall_s"] >= fix["train_s"] > 0 and fix["outcome"] == "completed"
    assert all(0 <= r["pixel_error"] <= 1 and 0 <= r["membrane_iou"] <= 1 for r in rows)
    assert viewer.layers["synthetic"].data.shape == data.image.shape  # read by the plugin
    painted = viewer.layers["synthetic labels"].data  # Annotate's training labels
    for z in (data.start, fix["slice"]):
        np.testing.assert_array_equal(painted[z], data.truth[z])
    assert not painted[list(data.held_out)].any()  # never corrected, only scored
    errors = [str(n.message) for n in notifications if "error" in str(n.severity).lower()]
    assert not errors, errors
