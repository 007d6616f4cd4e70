"""Which training recipe the window and the CLI default to: TrainConfig() against the alternatives.

Same data, budget and seed for each recipe: ISBI 2012, dense labels on slices 0-4
(as ``napari-unet train --dense --slices 0-4`` reads them), evaluated on slices 20-29.

    python -m benchmarks.bench_recipe [--quick] [--minutes M]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

try:
    from benchmarks import _common
    from benchmarks.bench_evaluation import _dense_training_labels, load_isbi, run_ours
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common  # type: ignore[no-redef]
    from bench_evaluation import _dense_training_labels, load_isbi, run_ours  # type: ignore

#: recipe name -> TrainConfig fields changed from the defaults
RECIPES: dict[str, dict[str, Any]] = {
    "TrainConfig() (default: w0 3, no class weights)": {},
    "paper weighting (w0 10, balanced classes; the window's old recipe)": {
        "w0": 10.0,
        "class_weights": "balanced",
    },
    "no border term (w0 0, no class weights)": {"w0": 0.0},
}


def run(
    quick: bool = False, minutes: float | None = None, iterations: int | None = None
) -> dict[str, Any]:
    """Each recipe for the same number of iterations (fair on a busy machine), else minutes."""
    if not _common.isbi_available():
        return {
            "name": "recipe",
            "rows": [],
            "note": f"skipped: no ISBI 2012 in {_common.ISBI_DIR}",
        }
    if iterations is None and minutes is None:
        iterations = 40 if quick else 1500
    budget = minutes if minutes is not None else 60.0
    limit = {"iterations": iterations, "max_minutes": None} if iterations else {}
    image, truth = load_isbi()
    d = _common.ISBI_DIR
    data = _dense_training_labels(d / "train-volume.tif", d / "train-labels.tif")
    rows = []
    t0 = time.perf_counter()
    for name, overrides in RECIPES.items():
        row = run_ours(
            image,
            data.labels,
            truth,
            minutes=budget,
            device="cpu",
            method=name,
            overrides={**overrides, **limit},
        )
        rows.append(
            {
                k: row[k]
                for k in (
                    "method",
                    "iterations",
                    "pixel_error",
                    "membrane_iou",
                    "rand_error",
                    "vi_total",
                )
            }
        )
    best = min(rows, key=lambda r: r["pixel_error"])
    return {
        "name": "recipe",
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
        "note": (
            "ISBI 2012, train slices 0-4 dense, evaluate 20-29, small preset, CPU, "
            + (f"{iterations} iterations" if iterations else f"{budget:g} min")
            + f" per recipe, seed 0. Lowest pixel error: {best['method']}."
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args(argv)
    _common.report(run(quick=args.quick, minutes=args.minutes, iterations=args.iterations))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
