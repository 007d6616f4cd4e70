"""Pieces of the evaluation benchmark and the benchmark runner that need no ISBI data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_evaluation, run_all  # noqa: E402

from napari_unet.sample_data import synthetic_em  # noqa: E402


def test_scribbles_are_sparse_correct_and_deterministic() -> None:
    _, truth = synthetic_em((256, 256), seed=3)
    s = bench_evaluation.scribble_labels(truth, 0.05, seed=1)
    labelled = s > 0
    assert 0.035 <= labelled.mean() <= 0.06
    np.testing.assert_array_equal(s[labelled], truth[labelled])  # strokes never lie
    assert (s == 1).any() and (s == 2).any()
    np.testing.assert_array_equal(s, bench_evaluation.scribble_labels(truth, 0.05, seed=1))


def test_seed_unet_shapes() -> None:
    import torch

    net = bench_evaluation._seed_unet()
    with torch.inference_mode():
        assert net.eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_evaluation_markdown_table() -> None:
    rows = [{"method": "a", "budget_min": 10.0, "pixel_error": 0.07, "membrane_iou": None}]
    table = bench_evaluation.markdown_table(rows)
    assert "| a | - | 10 |" in table and "0.0700" in table


def test_evaluation_rows_from_another_machine(tmp_path) -> None:
    import json

    import pytest

    saved = {
        "rows": [{"method": "a: GPU", "device": "cuda:0 (H200)", "pixel_error": 0.09}],
        "machine": {"gpu": "H200", "torch": "2.11"},
        "date": "2026-11-30",
        "note": "GPU budget 3 min",
    }
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(saved))
    other = bench_evaluation.load_other_run(path, command="bench --devices cuda")
    result = {"rows": [], "note": "local", "other_runs": [other]}
    doc = bench_evaluation.write_markdown(result, tmp_path / "EVAL.md").read_text()
    assert "Measured on another machine: gpu H200, torch 2.11" in doc
    assert "`bench --devices cuda`" in doc and "| a: GPU | cuda:0 (H200) |" in doc
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a result of bench_evaluation"):
        bench_evaluation.load_other_run(tmp_path / "bad.json")


def test_evaluation_docs_rendered_from_a_saved_result(tmp_path, monkeypatch, capsys) -> None:
    import json

    import pytest

    local = {
        "rows": [
            {
                "method": "a: CPU",
                "pixel_error": 0.0837,
                "membrane_iou": 0.65,
                "meets_target": False,
            },
            {"method": "e: control", "pixel_error": 0.0786, "membrane_iou": 0.69},
        ],
        "note": "full run",
    }
    gpu = {"rows": [{"method": "a: GPU", "pixel_error": 0.0909}], "machine": {"gpu": "H200"}}
    (tmp_path / "local.json").write_text(json.dumps(local))
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    doc = tmp_path / "EVAL.md"
    monkeypatch.setattr(bench_evaluation, "DOC_PATH", doc)
    argv = ["--render", str(tmp_path / "local.json"), "--add-rows", str(tmp_path / "gpu.json")]
    assert bench_evaluation.main(argv) == 0
    text = doc.read_text()
    assert "| a: CPU |" in text and "0.0837" in text and "full run" in text
    assert "Measured on another machine: gpu H200" in text and "0.0909" in text
    assert "reaches pixel error 0.0786" in text and "target is beyond what" in text
    with pytest.raises(SystemExit) as exc:
        bench_evaluation.main(["--render", str(tmp_path / "missing.json")])
    assert exc.value.code == 2
    assert "cannot read a result of bench_evaluation" in capsys.readouterr().err


def test_run_all_discovers_and_summarises() -> None:
    assert "evaluation" in run_all.discover()
    rows = [
        {"case": "x", "median_s": 0.2, "iqr_s": 0.02, "fast_ms": 10.0, "fast_iqr_ms": 1.0},
        {"case": "y", "median_s": 0.4, "iqr_s": 0.02},
    ]
    out = run_all._with_ratios(rows)
    assert out[0]["spread_%"] == 10.0 and out[0]["fast_spread_%"] == 10.0
    assert out[1]["x_fastest"] == 2.0
    records = [
        {"name": "tiling", "status": "ok", "wall_s": 1.0, "peak_rss_mib": 99.0,
         "result": {"name": "tiling", "rows": rows, "note": "n"}},
        {"name": "gui", "status": "missing", "note": "benchmarks/bench_gui.py not found"},
    ]  # fmt: skip
    text = run_all.summary_markdown(records, True, {"cpu_count": 2})
    assert "| tiling | ok | 1.0 | 99.0 | n |" in text and "| gui | missing |" in text
    assert "## tiling" in text and "x_fastest" in text
