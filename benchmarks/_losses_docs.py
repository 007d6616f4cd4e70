"""The loss benchmark's report: summaries over seeds, tables, findings, ``docs/LOSSES.md`` and
the ``losses`` section of ``docs/EVALUATION.md``, from the rows :mod:`benchmarks.bench_losses` saves."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_evaluation import DOC_PATH as EVALUATION_DOC

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "LOSSES.md"
SECTION_BEGIN = "<!-- section:losses -->"
SECTION_END = "<!-- /section:losses -->"
#: the default budgets (iterations) of the two tasks
ISBI_ITERATIONS = 300
MITO_ITERATIONS = 150

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
LOSSES = {"isbi": ISBI_LOSSES, "mito": MITO_LOSSES}  # in table order


def summarise(
    rows: list[dict[str, Any]], task: str, metrics: tuple[str, ...], budget: int | None = None
) -> list[dict]:
    """Per loss and budget of ``task`` (in table order; only ``budget`` if given): mean and
    half-range over the seeds of each metric."""
    order = list(LOSSES[task])
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
