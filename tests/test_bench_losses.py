"""The loss benchmark's tables and its section of docs/EVALUATION.md (no training, no ISBI data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_evaluation, bench_losses  # noqa: E402


def _rows() -> list[dict]:
    rows = []
    for seed, (pe_dice, pe_ce) in enumerate([(0.10, 0.08), (0.12, 0.09)]):
        for loss, pe in (("dice", pe_dice), ("ce (unweighted: w0 0, no class weights)", pe_ce)):
            rows.append({"task": "isbi", "loss": loss, "seed": seed, "budget": 500,
                         "pixel_error": pe, "membrane_iou": 1 - 3 * pe,
                         "rand_error": 0.3, "vi_total": 1.0})  # fmt: skip
        rows.append({"task": "mito", "loss": "dice", "seed": seed, "budget": 200,
                     "pixel_error": 0.01, "mito_iou": 0.7 + 0.1 * seed, "mito_dice": 0.8,
                     "pred_mito_pct": 4.0, "object_f1": None})  # fmt: skip
    return rows


def test_summary_mean_and_half_range_in_table_order() -> None:
    summary = bench_losses.summarise(_rows(), "isbi", bench_losses.ISBI_METRICS)
    assert [e["loss"] for e in summary] == ["dice", "ce (unweighted: w0 0, no class weights)"]
    assert summary[0]["pixel_error"] == pytest.approx((0.11, 0.01))
    assert summary[0]["seeds"] == "0,1" and summary[0]["iterations"] == "500"
    lead = bench_losses._lead(summary, "pixel_error", higher=False)
    assert lead.startswith("best pixel error: ce (unweighted")
    assert "larger than the seeds' spread" in lead  # gap 0.025 > 0.01 + 0.005
    table = bench_losses.markdown(summary, bench_losses.ISBI_METRICS)
    assert "| dice | 500 | 0,1 | 0.1100 ± 0.0100 |" in table


def test_evaluation_section_survives_a_re_render(tmp_path: Path) -> None:
    page = tmp_path / "EVALUATION.md"
    page.write_text("# Evaluation\n\nold body\n")
    result = {"rows": _rows()}
    section = bench_losses.evaluation_section(result)
    page.write_text(bench_losses.replace_section(page.read_text(), section))
    text = page.read_text()
    assert text.startswith("# Evaluation") and text.count(bench_losses.SECTION_BEGIN) == 1
    assert "[LOSSES.md](LOSSES.md)" in text and "0.7500 ± 0.0500" in text
    # replacing again does not duplicate it
    again = bench_losses.replace_section(text, section.replace("0.7500", "0.7600"))
    assert again.count(bench_losses.SECTION_BEGIN) == 1 and "0.7600 ± 0.0500" in again
    # bench_evaluation's renderer rewrites the page and keeps the marked section
    saved = {"rows": [], "note": "n", "machine": {}, "date": "today", "mode": "full"}
    bench_evaluation.write_markdown(saved, page)
    text = page.read_text()
    assert "old body" not in text and "# Evaluation: ISBI 2012" in text
    assert section in text and text.count(bench_losses.SECTION_BEGIN) == 1
