"""The report of the loop benchmarks: one kept result per data set and loop, ``docs/LOOP.md``, plots.

``bench_loop`` (the core calls, headless) keeps ``benchmarks/results/loop_<data>.json``;
``bench_loop_window`` (the real docks in a shown window) keeps ``loop_window_<data>.json``.
:func:`write_docs` makes ``docs/LOOP.md``, ``docs/images/loop.png`` (headless) and
``docs/images/loop_window.png`` from every kept result, so a run on one data set leaves the others.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

from benchmarks import _common

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "LOOP.md"
IMAGES = ROOT / "docs" / "images"
PLOTS = {"loop": IMAGES / "loop.png", "loop_window": IMAGES / "loop_window.png"}
DATASETS = ("isbi", "synthetic")

ARM_TEXT = {
    "unet-order": "napari-unet, slices corrected in order (1, 2, 3, ...)",
    "unet-suggest": "napari-unet, the slice `napari_unet.suggest.rank_slices` ranks first "
    "(mean entropy); in the window: Annotate's 'Go to the next suggested slice'",
    "rf-order": "ilastik-style random forest (`bench_evaluation` (b)), refitted on all labelled "
    "slices each round",
    "no-retraining": "the first U-Net's predictions corrected, never retrained",
}


def section(
    name: str,
    dataset: str,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    described: dict[str, Any],
    budget: Any,
    mode: str,
    total_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """The kept result of one loop (``name``: "loop" or "loop_window") on one data set."""
    return {
        "name": name, "dataset": dataset, "rows": rows, "summary": summary,
        "datasets": {dataset: described}, "budget": dataclasses.asdict(budget),
        "budget_text": budget.describe(), "mode": mode, "total_s": round(total_s, 1),
        "machine": _common.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), **extra,
    }  # fmt: skip


def section_path(name: str, dataset: str, results: Path | None = None) -> Path:
    return (results or _common.RESULTS_DIR) / f"{name}_{dataset}.json"


def save_section(sec: dict[str, Any], results: Path | None = None) -> Path:
    """Write ``sec`` atomically to ``<results>/<name>_<dataset>.json``."""
    path = section_path(sec["name"], sec["dataset"], results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sec, indent=2, default=float))
    tmp.replace(path)
    return path


def load_sections(name: str, results: Path | None = None) -> list[dict[str, Any]]:
    out = []
    for dataset in DATASETS:
        path = section_path(name, dataset, results)
        if path.is_file():
            out.append(json.loads(path.read_text()))
    return out


# --------------------------------------------------------------------------- plot


def write_plot(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Effort (pixels changed) and held-out pixel error per round, one column per data set."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("(matplotlib not installed: no plot; pip install -e .[bench])")
        return None
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        for arm in arms:
            mine = [r for r in rows if r["dataset"] == name and r["arm"] == arm]
            fixes = [r for r in mine if r["round"] > 0]
            axes[0, col].plot(
                [r["round"] for r in fixes], [r["changed_pct"] for r in fixes], "o-", label=arm
            )
            axes[1, col].plot(
                [r["round"] for r in mine], [r["pixel_error"] for r in mine], "o-", label=arm
            )
        axes[0, col].set(
            title=f"{name}{title}: effort per corrected slice", ylabel="pixels changed (%)"
        )
        axes[1, col].set(
            title=f"{name}{title}: held-out quality", xlabel="round", ylabel="pixel error"
        )
        axes[0, col].legend(fontsize=8)
        for ax in axes[:, col]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown


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


def comparison_text(summary: list[dict[str, Any]]) -> str:
    """Per data set: the effort trends and final quality of the arms present."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in summary):
        arms = [
            r for r in summary if r["dataset"] == name and r["pixels_per_round_trend"] is not None
        ]
        if not arms:
            continue
        trends = ", ".join(f"{r['arm']} {r['pixels_per_round_trend']:+.0f}" for r in arms)
        means = " / ".join(f"{r['mean_pixels']:.0f}" for r in arms)
        finals = " / ".join(f"{r['final_pixel_error']:.4f}" for r in arms)
        names = " / ".join(r["arm"] for r in arms)
        out.append(
            f"* {name}: effort trend (pixels per round, linear fit) {trends}; mean effort per "
            f"corrected slice {means} px and final held-out pixel error {finals} ({names})."
        )
    return "\n".join(out)


def _machine_text(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} {m[k]}" for k in ("processor", "cpu_count", "gpu", "torch") if k in m)


def _section_text(sec: dict[str, Any]) -> str:
    how = f"\nCommand: `{sec['command']}`\n" if sec.get("command") else ""
    return f"""### {sec["dataset"]}

Generated {sec["date"]} ({sec["mode"]} mode, {sec["total_s"]:.0f} s) on: {_machine_text(sec.get("machine", {}))}.
Budget: {sec["budget_text"]}. {sec.get("note", "")}
{how}
{_datasets_text(sec["datasets"])}

{_common.format_table(sec["summary"])}

{comparison_text(sec["summary"])}

<details><summary>per round</summary>

{_common.format_table(sec["rows"])}

</details>
"""


def write_markdown(
    headless: list[dict[str, Any]], window: list[dict[str, Any]], path: Path = DOC_PATH
) -> Path:
    arms = dict.fromkeys(r["arm"] for sec in [*headless, *window] for r in sec["rows"])
    arm_rows = "\n".join(f"| {a} | {ARM_TEXT.get(a, '')} |" for a in arms)
    parts = [
        f"""# The annotation loop, measured

<!-- generated by `python -m benchmarks.bench_loop` and `python -m benchmarks.bench_loop_window`
from benchmarks/results/loop_*.json; do not edit by hand -->

A simulated annotator: one densely painted slice, train T (minutes or iterations; `TrainConfig()`
otherwise), then R rounds: pick a slice, accept the prediction, correct it to the truth, fine-tune
T' from the current weights. **Effort** per round: pixels changed and 4-connected error regions (a
stand-in for brush strokes). **Quality**: pixel error and membrane IoU on held-out slices, never
picked. The U-Net arms of one data set start from the same first model; round 0 is that model
(`wall_s` = its training). `iterations`: the optimiser steps each training got (with a time limit
they depend on the load of the machine: the CPUs were shared with other work in every run here).

| arm | what |
|---|---|
{arm_rows}

## Headless: the core calls the docks make (`benchmarks/bench_loop.py`)
"""
    ]
    parts += [_section_text(sec) for sec in headless] or ["(not run yet)\n"]
    if headless:
        parts.append("![effort and quality per round, headless](images/loop.png)\n")
    parts.append(
        "## Through the real docks in a shown napari window (`benchmarks/bench_loop_window.py`)\n"
    )
    parts += [_section_text(sec) for sec in window] or ["(not run yet)\n"]
    if window:
        parts.append("![effort and quality per round, in the window](images/loop_window.png)\n")
    parts.append(
        """## Reproduce

    python -m benchmarks.bench_loop [--quick] [--dataset isbi|synthetic] [--minutes T]
        [--finetune-minutes T'] [--iterations N] [--finetune-iterations N'] [--rounds R]
    xvfb-run -a python -m benchmarks.bench_loop_window [--smoke] [--dataset isbi|synthetic]
        [--iterations N] [--finetune-iterations N'] [--minutes T] [--finetune-minutes T']
        [--rounds R] [--arms unet-order,unet-suggest] [--work DIR]

Heavy runs under the shared lock: `flock /tmp/napari_unet_bench.lock <command>`.
"""
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


def write_docs(
    results: Path | None = None, doc: Path = DOC_PATH, plots: dict[str, Path] | None = None
) -> Path:
    """``docs/LOOP.md`` and the plots from every kept result."""
    plots = plots or PLOTS
    headless, window = load_sections("loop", results), load_sections("loop_window", results)
    for name, secs in (("loop", headless), ("loop_window", window)):
        rows = [r for sec in secs for r in sec["rows"]]
        if rows:
            write_plot(rows, plots[name], " (window)" if name == "loop_window" else "")
    return write_markdown(headless, window, doc)
