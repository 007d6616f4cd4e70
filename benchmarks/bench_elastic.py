"""Elastic deformation: napari_unet.augment.elastic_deform against elasticdeform.

Side by side in one process: a 512 x 512 image + labels pair deformed as in
the U-Net paper (3 x 3 control grid, sigma = 10 px, bicubic image, nearest
labels, mirrored borders), on the CPU with torch's default thread count and
with one thread (elasticdeform is single-threaded C), a batch of 8 pairs on
the CPU, and a batch of 8 on CUDA when a GPU is present.

    python benchmarks/bench_elastic.py [--quick]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

try:
    from benchmarks._common import ISBI_DIR, isbi_available, machine, report, timeit
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import ISBI_DIR, isbi_available, machine, report, timeit  # type: ignore[no-redef]

from napari_unet.augment import elastic_deform


def load_pair(n: int = 8) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` (image float32 normalised, labels uint8 {0, 255}) slices of 512 x 512."""
    if isbi_available():
        import tifffile

        img = tifffile.imread(ISBI_DIR / "train-volume.tif")[:n].astype(np.float32)
        lab = tifffile.imread(ISBI_DIR / "train-labels.tif")[:n]
        source = "ISBI 2012 train slices"
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:512, :512]
        lab = np.stack(
            [
                np.where((np.sin(yy / 9.0 + k) * np.sin(xx / 11.0 - k)) > -0.8, 255, 0)
                for k in range(n)
            ]
        ).astype(np.uint8)
        img = lab.astype(np.float32) + rng.normal(0, 40, lab.shape).astype(np.float32)
        source = "synthetic 512 x 512 stand-in (ISBI data not found)"
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), lab, source


def _row(case: str, device: str, threads: int | str, ours: dict, theirs: dict | None) -> dict:
    row: dict[str, Any] = {
        "case": case,
        "device": device,
        "threads": threads,
        "ours_ms": 1e3 * ours["median_s"],
        "ours_iqr_ms": 1e3 * ours["iqr_s"],
        "ours_min_ms": 1e3 * ours["min_s"],
    }
    if theirs is not None:
        row["elasticdeform_ms"] = 1e3 * theirs["median_s"]
        row["elasticdeform_iqr_ms"] = 1e3 * theirs["iqr_s"]
        row["elasticdeform_min_ms"] = 1e3 * theirs["min_s"]
        row["speedup"] = theirs["median_s"] / ours["median_s"]
    return row


def run(quick: bool = False) -> dict[str, Any]:
    try:
        import elasticdeform
    except ImportError:  # pragma: no cover - optional bench dependency
        elasticdeform = None

    img, lab, source = load_pair(8)
    rep_ours, rep_theirs = (5, 3) if quick else (25, 11)
    rows: list[dict[str, Any]] = []
    default_threads = torch.get_num_threads()

    def ours_pair() -> Any:
        return elastic_deform(img[0], lab[0], grid=3, sigma=10.0, order=3)

    def theirs_pair() -> Any:
        return elasticdeform.deform_random_grid(
            [img[0], lab[0]], sigma=10, points=3, order=[3, 0], mode="reflect"
        )

    img_b = torch.from_numpy(img)[:, None]  # (8, 1, 512, 512)
    lab_b = torch.from_numpy(lab)  # (8, 512, 512) uint8

    def ours_batch() -> Any:
        return elastic_deform(img_b, lab_b, grid=3, sigma=10.0, order=3)

    def theirs_batch() -> Any:
        return [
            elasticdeform.deform_random_grid(
                [img[i], lab[i]], sigma=10, points=3, order=[3, 0], mode="reflect"
            )
            for i in range(8)
        ]

    try:
        for threads in dict.fromkeys((default_threads, 1)):
            torch.set_num_threads(threads)
            label = f"{threads} (default)" if threads == default_threads else threads
            t_ours = timeit(ours_pair, repeat=rep_ours, warmup=2)
            t_theirs = timeit(theirs_pair, repeat=rep_theirs) if elasticdeform else None
            rows.append(_row("pair 512x512", "cpu", label, t_ours, t_theirs))
            t_ours = timeit(ours_batch, repeat=max(rep_ours // 3, 3), warmup=1)
            t_theirs = (
                timeit(theirs_batch, repeat=max(rep_theirs // 3, 2)) if elasticdeform else None
            )
            rows.append(_row("batch 8x512x512", "cpu", label, t_ours, t_theirs))
    finally:
        torch.set_num_threads(default_threads)

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        img_c, lab_c = img_b.to(dev), lab_b.to(dev)
        lab_c64 = lab_c.long()

        def ours_cuda(labels: torch.Tensor = lab_c) -> Any:
            out = elastic_deform(img_c, labels, grid=3, sigma=10.0, order=3)
            torch.cuda.synchronize()
            return out

        rows.append(
            _row("batch 8x512x512", "cuda", "-", timeit(ours_cuda, repeat=rep_ours, warmup=3), None)
        )
        rows.append(
            _row(
                "batch 8x512x512 int64 labels",
                "cuda",
                "-",
                timeit(lambda: ours_cuda(lab_c64), repeat=rep_ours, warmup=3),
                None,
            )
        )

    note = (
        f"elastic_deform(image, labels, grid=3, sigma=10, order=3) vs "
        f"elasticdeform.deform_random_grid([img, lbl], sigma=10, points=3, order=[3, 0], "
        f"mode='reflect') on {source} (float32 image, uint8 labels); medians of "
        f"{rep_ours} / {rep_theirs} runs (batch rows: fewer); speedup = elasticdeform / ours"
        + (" (quick mode)" if quick else "")
        + ("" if elasticdeform else "; elasticdeform not installed")
    )
    return {"name": "elastic", "rows": rows, "note": note, "quick": quick, "machine": machine()}


if __name__ == "__main__":
    report(run(quick="--quick" in sys.argv))
