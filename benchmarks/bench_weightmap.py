"""Border weight maps: the windowed fast version against the direct definition.

Both are computed side by side in one process on 512 x 512 ISBI 2012 label
slices (cells = 4-connected components of ``label == 255``), or on a
synthetic stand-in (random Voronoi cells with 2 px membranes) when the ISBI
data are not there.  Reported: cells per slice, median times (and spread),
the speed-up and the largest absolute difference.

    python benchmarks/bench_weightmap.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage as ndi

try:
    from benchmarks._common import ISBI_DIR, isbi_available, report, timeit
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import ISBI_DIR, isbi_available, report, timeit  # type: ignore[no-redef]

from napari_unet.weightmap import (
    border_weight_map,
    border_weight_map_reference,
    instances_from_mask,
)


def synthetic_labels(n: int, shape: tuple[int, int] = (512, 512), n_cells: int = 200) -> np.ndarray:
    """``n`` slices of random Voronoi cells (255) separated by 2 px membranes (0)."""
    rng = np.random.default_rng(0)
    out = np.empty((n, *shape), dtype=np.uint8)
    for z in range(n):
        markers = np.ones(shape, dtype=bool)
        ys = rng.integers(0, shape[0], n_cells)
        xs = rng.integers(0, shape[1], n_cells)
        markers[ys, xs] = False
        seed_id = np.zeros(shape, dtype=np.int32)
        seed_id[ys, xs] = np.arange(1, n_cells + 1)
        _, (iy, ix) = ndi.distance_transform_edt(markers, return_indices=True)
        nearest = seed_id[iy, ix]
        edges = np.zeros(shape, dtype=bool)
        edges[:-1] |= nearest[:-1] != nearest[1:]
        edges[:, :-1] |= nearest[:, :-1] != nearest[:, 1:]
        out[z] = np.where(ndi.binary_dilation(edges), 0, 255)
    return out


def load_labels(n: int) -> tuple[np.ndarray, list[int], str]:
    """(label slices, their indices, source description)."""
    if isbi_available():
        import tifffile

        labels = tifffile.imread(ISBI_DIR / "train-labels.tif")
        idx = np.linspace(0, labels.shape[0] - 1, n).round().astype(int).tolist()
        return labels[idx], idx, f"ISBI 2012 train-labels.tif slices {idx}"
    return synthetic_labels(n), list(range(n)), "synthetic Voronoi cells (ISBI data not found)"


def run(quick: bool = False) -> dict[str, Any]:
    n_slices = 2 if quick else 6
    labels, idx, source = load_labels(n_slices)
    settings = [(10.0, 5.0)] if quick else [(10.0, 5.0), (10.0, 10.0)]
    rep_fast, rep_ref = (3, 1) if quick else (9, 3)
    rows: list[dict[str, Any]] = []
    for w0, sigma in settings:
        speedups = []
        for z, lab in zip(idx, labels):
            inst = instances_from_mask(lab, object_value=255, connectivity=1)
            fast = border_weight_map(inst, w0=w0, sigma=sigma)
            ref = border_weight_map_reference(inst, w0=w0, sigma=sigma)
            t_fast = timeit(partial(border_weight_map, inst, w0, sigma), repeat=rep_fast)
            t_ref = timeit(
                partial(border_weight_map_reference, inst, w0, sigma), repeat=rep_ref, warmup=0
            )
            speedup = t_ref["median_s"] / t_fast["median_s"]
            speedups.append(speedup)
            rows.append(
                {
                    "slice": z,
                    "w0": w0,
                    "sigma": sigma,
                    "cells": int(inst.max()),
                    "fast_ms": 1e3 * t_fast["median_s"],
                    "fast_iqr_ms": 1e3 * t_fast["iqr_s"],
                    "fast_min_ms": 1e3 * t_fast["min_s"],
                    "ref_ms": 1e3 * t_ref["median_s"],
                    "ref_iqr_ms": 1e3 * t_ref["iqr_s"],
                    "ref_min_ms": 1e3 * t_ref["min_s"],
                    "speedup": speedup,
                    "max_abs_diff": float(np.abs(fast - ref).max()),
                }
            )
        rows.append(
            {
                "slice": "median",
                "w0": w0,
                "sigma": sigma,
                "cells": statistics.median(r["cells"] for r in rows[-len(idx) :]),
                "speedup": statistics.median(speedups),
                "max_abs_diff": max(r["max_abs_diff"] for r in rows[-len(idx) :]),
            }
        )
    note = (
        f"border_weight_map (windowed EDT, tol=1e-6) vs border_weight_map_reference "
        f"(one full-image EDT per cell) on {source}; 512 x 512, cells = 4-connected "
        f"components of label == 255; medians of {rep_fast} / {rep_ref} runs"
        + (" (quick mode)" if quick else "")
    )
    return {"name": "weightmap", "rows": rows, "note": note, "quick": quick}


if __name__ == "__main__":
    report(run(quick="--quick" in sys.argv))
