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


def test_object_scores_match_instances_from_probabilities() -> None:
    """Instances from clean probabilities against known truth: 2 of 3 found, 1 false."""
    import numpy as np

    truth_ids = np.zeros((2, 64, 64), np.int32)
    truth_ids[0, 5:15, 5:15] = 1  # found
    truth_ids[0, 30:40, 30:40] = 2  # found
    truth_ids[1, 40:50, 10:20] = 3  # missed
    mito = np.zeros((2, 64, 64), np.float32)
    mito[0, 5:15, 5:15] = 1.0
    mito[0, 30:40, 30:40] = 1.0
    mito[1, 5:15, 45:55] = 1.0  # a false object
    probs = np.stack([1.0 - mito, mito])
    scores = bench_losses.object_scores(probs, truth_ids)
    assert scores["object_f1"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["object_precision"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["object_recall"] == pytest.approx(2 / 3, abs=1e-3)
    truth_probs = np.stack([truth_ids == 0, truth_ids > 0]).astype(np.float32)
    assert bench_losses.object_scores(truth_probs, truth_ids)["object_f1"] == 1.0


def test_longer_budget_rows_are_tabled_apart_with_a_ranking(tmp_path: Path) -> None:
    rows = _rows()
    for r in list(rows):
        if r["task"] == "isbi":  # a longer budget where the order of the two flips
            flipped = 0.05 if r["loss"] == "dice" else 0.2
            rows.append({**r, "budget": 2000, "pixel_error": flipped})
    assert bench_losses.budgets(rows, "isbi") == [500, 2000]
    main = bench_losses.main_summary(rows, "isbi", bench_losses.ISBI_METRICS)
    assert {e["iterations"] for e in main} == {"500"}  # budgets are never averaged together
    assert main[0]["pixel_error"] == pytest.approx((0.11, 0.01))
    ranking = bench_losses.budget_ranking(rows, "pixel_error", higher=False)
    assert ranking.startswith("pixel error, best first: 500 it.: ce 0.0850")
    assert ranking.endswith("the order changes")
    blocks = bench_losses.generated_blocks({"rows": rows, "runs": []})
    assert "| dice | 2000 | 0,1 | 0.0500 ± 0.0000 |" in blocks["longer"]
    assert "| dice | 2000 |" not in blocks["isbi"] and "2000" in bench_losses.evaluation_section(
        {"rows": rows}
    )
    page = "intro\n<!-- gen:isbi -->\nold\n<!-- /gen:isbi -->\nkept\n"
    filled = bench_losses.fill_blocks(page, {"isbi": blocks["isbi"]})
    assert "old" not in filled and filled.startswith("intro\n") and filled.endswith("kept\n")
    assert bench_losses.fill_blocks(filled, {"isbi": blocks["isbi"]}) == filled
    with pytest.raises(ValueError, match="gen:mito"):
        bench_losses.fill_blocks(page, {"mito": ""})
    picked = bench_losses.select_losses(bench_losses.ISBI_LOSSES, ("dice", "wce", "wce+dice"))
    assert [n.split(" ")[0] for n in picked] == ["dice", "wce", "wce+dice"]
