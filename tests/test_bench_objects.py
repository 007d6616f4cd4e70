"""The instance-matching score of benchmarks/bench_objects.py on labels with a known answer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

bench = pytest.importorskip("benchmarks.bench_objects")


def test_instances_match_one_to_one_at_iou_half():
    truth = np.zeros((1, 20, 40), np.int32)
    truth[0, 2:10, 2:10] = 1  # found exactly
    truth[0, 12:18, 20:30] = 2  # found as a half: IoU 0.5 -> matched
    truth[0, 2:6, 30:34] = 3  # missed
    pred = np.zeros_like(truth)
    pred[0, 2:10, 2:10] = 5
    pred[0, 12:18, 20:25] = 6
    pred[0, 15:19, 2:6] = 7  # a false object
    scores = bench._instance_scores(pred, truth, per_slice=False)
    assert scores["objects_true"] == 3 and scores["objects_found"] == 3
    assert scores["precision"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["count_error"] == 0.0
