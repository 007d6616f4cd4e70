"""Instances from the U-Net's probabilities (napari_unet.objects) against connected components.

1. ISBI 2012: napari-unet's default recipe (``TrainConfig``) trained on slices 0-4 for a fixed
   iteration budget, probabilities predicted for slices 20-29; adapted Rand error and VI per
   slice (as ``metrics.evaluate_segmentation``) of (a) the connected components of the
   non-membrane pixels (``metrics.segments_from_classes``, what EVALUATION.md reports) and
   (b) the boundary watershed instances, 2D, both from the same probabilities.
2. Mitochondria: the synthetic sample with its mitochondria as their own class; instance
   precision / recall / F1 at IoU >= 0.5 and the count error of the objects step.
3. Time and peak memory of the objects step per 512 x 512 slice and per 30-slice volume,
   2D against 3D.

Run (outputs under /tmp/helperD unless NAPARI_UNET_BENCH_OUT is set)::

    python -m benchmarks.bench_objects [--quick] [--iterations N]

It writes ``benchmarks/results/objects.json`` and ``docs/OBJECTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/bench_objects.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks import _common
from benchmarks.bench_evaluation import EVAL_SLICES, _dense_training_labels, load_isbi

NAME = "objects"
ITERATIONS = 2000
QUICK_ITERATIONS = 30
OUT_DIR = Path(os.environ.get("NAPARI_UNET_BENCH_OUT", "/tmp/helperD"))
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "OBJECTS.md"
TARGET_RAND = 0.10
#: slices neither trained on nor evaluated: the seed depth h is chosen on them
VAL_SLICES = (5, 6, 7, 8, 9)
H_CHOICES = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


# --------------------------------------------------------------------------- training


def _train(image: np.ndarray, labels: Any, iterations: int, mito: bool = False) -> Any:
    """The default recipe for ``iterations`` iterations (seeded); the Trainer when done."""
    import torch

    from napari_unet.training import TrainConfig, Trainer

    torch.manual_seed(0)
    config = TrainConfig(iterations=iterations, max_minutes=None, device="cpu", preview_every_s=0.0)
    trainer = Trainer(image, labels, config)
    for _ in trainer.run():
        pass
    return trainer


def isbi_probabilities(iterations: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Probabilities ``(2, 10, 512, 512)`` of slices 20-29 and ``(2, 5, ...)`` of the unused
    slices 5-9 (for choosing a parameter), cached per iteration budget."""
    from napari_unet.tiling import predict_tiled

    cache = OUT_DIR / f"isbi_probs_{iterations}.npy"
    val_cache = OUT_DIR / f"isbi_probs_val_{iterations}.npy"
    if cache.exists() and val_cache.exists():
        return np.load(cache), np.load(val_cache), {"train_s": None, "cached": str(cache)}
    image, _ = load_isbi()
    d = _common.ISBI_DIR
    data = _dense_training_labels(d / "train-volume.tif", d / "train-labels.tif")
    t0 = time.perf_counter()
    trainer = _train(image, data.labels, iterations)
    train_s = time.perf_counter() - t0
    _, probs = predict_tiled(
        trainer.model,
        image[[*VAL_SLICES, *EVAL_SLICES]],
        device="cpu",
        normalization=trainer.normalization,
        return_probabilities=True,
    )
    probs = np.asarray(probs, np.float32)
    val, probs = probs[:, : len(VAL_SLICES)], probs[:, len(VAL_SLICES) :]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.save(cache, probs)
    np.save(val_cache, val)
    return probs, val, {"train_s": round(train_s, 1), "cached": str(cache)}


# --------------------------------------------------------------------------- ISBI


def _truth_segments(truth_slice: np.ndarray) -> np.ndarray:
    """The truth segments exactly as ``metrics.evaluate_segmentation`` makes them."""
    from napari_unet.metrics import segments_from_classes

    return segments_from_classes(np.where(truth_slice == 0, 1, truth_slice), 1)


def _segment_scores(segments: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Adapted Rand error and VI per slice, averaged (as EVALUATION.md)."""
    from napari_unet.metrics import adapted_rand_error, nanmean, variation_of_information

    rand, vi = [], []
    for seg, ts in zip(segments, truth):
        true_seg = _truth_segments(ts)
        rand.append(adapted_rand_error(seg, true_seg)["error"])
        vi.append(variation_of_information(seg, true_seg))
    return {
        "rand_error": round(nanmean(rand), 4),
        "vi_split": round(nanmean(v["split"] for v in vi), 4),
        "vi_merge": round(nanmean(v["merge"] for v in vi), 4),
        "vi_total": round(nanmean(v["total"] for v in vi), 4),
    }


def choose_h(val_probs: np.ndarray, val_truth: np.ndarray) -> tuple[float, list[dict]]:
    """The seed depth with the lowest adapted Rand error on the validation slices."""
    from napari_unet.objects import ObjectParams, label_objects

    sweep = []
    for h in H_CHOICES:
        seg = label_objects(val_probs, 1, params=ObjectParams(mode="boundary", h=h)).labels
        sweep.append({"h": h, **_segment_scores(seg, val_truth)})
    best = min(sweep, key=lambda r: r["rand_error"])
    return float(best["h"]), sweep


def isbi_rows(probs: np.ndarray, truth: np.ndarray, h: float | None = None) -> list[dict[str, Any]]:
    """Connected components against instances, from the same probabilities."""
    from napari_unet.metrics import segments_from_classes
    from napari_unet.objects import ObjectParams, label_objects

    classes = (np.argmax(probs, axis=0) + 1).astype(np.uint8)
    boundary = ObjectParams(mode="boundary")
    methods = [
        ("a: connected components (metrics.segments_from_classes)", None),
        ("b: instances, boundary watershed 2D (defaults)", ("probabilities", boundary)),
        ("c: instances from the class map only (argmax)", ("classes", boundary)),
        ("d: instances, boundary watershed 3D (scale 50/4 nm)", ("probabilities", boundary.replace(dims=3))),
    ]  # fmt: skip
    if h is not None:
        methods.append((f"e: instances 2D, h = {h:g} chosen on slices 5-9", ("probabilities", boundary.replace(h=h))))  # fmt: skip
    rows = []
    for name, how in methods:
        t0 = time.perf_counter()
        if how is None:
            seg = segments_from_classes(classes, 1)
        else:
            kind, params = how
            source = probs if kind == "probabilities" else classes
            seg = label_objects(source, 1, kind=kind, params=params, scale=(12.5, 1.0, 1.0)).labels
        row = {"method": name, "seconds": round(time.perf_counter() - t0, 2)}
        row["segments_per_slice"] = round(float(np.mean([len(np.unique(s)) - 1 for s in seg])), 1)
        rows.append({**row, **_segment_scores(seg, truth)})
    return rows


# --------------------------------------------------------------------------- mitochondria


def _match(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
    """(matched, predicted, true) objects; a match has IoU >= threshold (then it is unique)."""
    p_ids, p_sizes = np.unique(pred[pred > 0], return_counts=True)
    t_ids, t_sizes = np.unique(truth[truth > 0], return_counts=True)
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    ps = dict(zip(p_ids.tolist(), p_sizes.tolist()))
    ts = dict(zip(t_ids.tolist(), t_sizes.tolist()))
    matched = sum(
        1
        for (a, b), n in zip(pairs.T.tolist(), inter.tolist())
        if n / (ps[a] + ts[b] - n) >= threshold
    )
    return matched, len(p_ids), len(t_ids)


def _instance_scores(pred: np.ndarray, truth: np.ndarray, per_slice: bool) -> dict[str, Any]:
    from skimage.measure import label

    tp = n_pred = n_true = 0
    pairs = zip(pred, truth) if per_slice else [(pred, truth)]
    for p, t in pairs:
        t = label(t > 0, connectivity=2) if per_slice else t
        m, a, b = _match(p, t)
        tp, n_pred, n_true = tp + m, n_pred + a, n_true + b
    precision = tp / n_pred if n_pred else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else float("nan")
    return {
        "objects_true": n_true,
        "objects_found": n_pred,
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "count_error": round((n_pred - n_true) / n_true, 3) if n_true else float("nan"),
    }


def mito_rows(iterations: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Train on slices 0-3 of the synthetic mitochondria sample, score slices 4-7."""
    from skimage.measure import label

    from napari_unet.objects import ObjectParams, label_objects
    from napari_unet.sample_data import MITOCHONDRION_CLASS, synthetic_em
    from napari_unet.tiling import predict_tiled

    image, lab, ids = synthetic_em(
        (8, 256, 256), seed=0, classes="mitochondria", return_mitochondria=True
    )
    cls = int(MITOCHONDRION_CLASS["mitochondria"])
    labels = lab.copy()
    labels[4:] = 0
    trainer = _train(image, labels, iterations)
    _, probs = predict_tiled(
        trainer.model, image[4:], device="cpu", normalization=trainer.normalization,
        return_probabilities=True,
    )  # fmt: skip
    probs = np.asarray(probs, np.float32)
    truth_ids = ids[4:]
    classes = (np.argmax(probs, axis=0) + 1).astype(np.uint8)
    p2, p3 = ObjectParams(), ObjectParams(dims=3)
    rows = []
    for name, make, per_slice in (
        ("connected components of the argmax class, 2D", lambda: np.stack([label(c == cls, connectivity=2) for c in classes]), True),
        ("objects 2D (defaults: holes filled, >= 16 px)", lambda: label_objects(probs, cls, params=p2).labels, True),
        ("objects 2D, split touching", lambda: label_objects(probs, cls, params=p2.replace(split=True)).labels, True),
        ("objects 3D (truth: the sample's 3D ids)", lambda: label_objects(probs, cls, params=p3).labels, False),
        ("objects 2D from the TRUE class map (upper bound)", lambda: label_objects(lab[4:], cls, kind="classes", params=p2).labels, True),
    ):  # fmt: skip
        rows.append({"method": name, **_instance_scores(make(), truth_ids, per_slice)})
    return rows, probs


# --------------------------------------------------------------------------- time, memory


def _measure(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, float]:
    """(seconds, peak traced MiB) of one call ``fn(*args, **kwargs)``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def cost_rows(isbi_probs: np.ndarray, mito_probs: np.ndarray) -> list[dict[str, Any]]:
    """Time and peak memory per 512 x 512 slice and per 30-slice volume, 2D against 3D."""
    from napari_unet.objects import ObjectParams, label_objects

    vol_b = np.concatenate([isbi_probs] * 3, axis=1)[:, :30]  # (2, 30, 512, 512)
    tiles = np.tile(mito_probs, (1, 1, 2, 2))  # (2, 4, 512, 512)
    vol_o = np.concatenate([tiles] * 8, axis=1)[:, :30]
    cases = [("boundary", vol_b, 1), ("objects", vol_o, 2)]
    rows = []
    for mode, vol, cls in cases:
        for dims in (2, 3):
            params = ObjectParams(mode=mode, dims=dims)
            one = vol[:, :1]
            s1, m1 = _measure(label_objects, one[:, 0], cls, params=params)
            sv, mv = _measure(label_objects, vol, cls, params=params, scale=(12.5, 1, 1))
            rows.append({
                "mode": mode, "dims": dims,
                "slice_s": round(s1, 3) if dims == 2 else None,
                "slice_peak_mib": round(m1, 1) if dims == 2 else None,
                "volume_30_s": round(sv, 2), "volume_peak_mib": round(mv, 1),
                "volume_per_slice_s": round(sv / 30, 3),
            })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- run, docs


def run(quick: bool = False, iterations: int | None = None) -> dict[str, Any]:
    iterations = iterations or (QUICK_ITERATIONS if quick else ITERATIONS)
    result: dict[str, Any] = {"name": NAME, "iterations": iterations, "rows": []}
    mito_iterations = max(iterations // 3, 10)
    mito, mito_probs = mito_rows(mito_iterations)
    result["mito_rows"], result["mito_iterations"] = mito, mito_iterations
    if _common.isbi_available():
        probs, val, info = isbi_probabilities(iterations)
        _, truth = load_isbi()
        h, result["h_sweep"] = choose_h(val, truth[list(VAL_SLICES)])
        result["rows"] = isbi_rows(probs, truth[list(EVAL_SLICES)], h)
        result["isbi"] = info
        result["cost_rows"] = cost_rows(probs, mito_probs)
    else:
        result["note"] = f"ISBI part skipped: no ISBI 2012 in {_common.ISBI_DIR}"
    result["machine"] = _common.machine()
    return result


def write_docs(result: dict[str, Any]) -> Path:
    """docs/OBJECTS.md (all tables) and the objects section of docs/EVALUATION.md."""
    rows = result.get("rows", [])
    best = next((r for r in rows if r["method"].startswith("b:")), None)
    cc = next((r for r in rows if r["method"].startswith("a:")), None)
    verdict = ""
    if best and cc:
        met = "met" if best["rand_error"] <= TARGET_RAND else "NOT met"
        verdict = (
            f"Adapted Rand error {cc['rand_error']:.3f} (connected components) -> "
            f"{best['rand_error']:.3f} (instances, 2D defaults); target <= {TARGET_RAND}: {met}."
        )
        tuned = next((r for r in rows if r["method"].startswith("e:")), None)
        if tuned is not None:
            verdict += f" With h chosen on slices 5-9: {tuned['rand_error']:.3f}."
    machine = result.get("machine", {})
    text = f"""# Objects: instances from the U-Net's probabilities

<!-- generated by `python -m benchmarks.bench_objects`; do not edit by hand -->

Machine: {machine.get("processor", "")} ({machine.get("cpu_count", "?")} CPUs, torch
{machine.get("torch", "?")}), shared with other work while measured: the times are indicative. Method: `napari_unet.objects.label_objects`
with `ObjectParams()` defaults (boundary mode: seeds = h-maxima (h = 2 px) of the distance
transform of the pixels with membrane probability < 0.5 after a sigma-1 Gaussian, watershed
on the membrane probability, segments under 16 px flooded by their neighbours).

## ISBI 2012: slices 20-29, default recipe for {result.get("iterations")} iterations on slices 0-4

Both from the same probabilities; per-slice adapted Rand error and VI (bits), averaged, the
truth segments made as `metrics.evaluate_segmentation` makes them. {verdict}

{_common.format_table(rows)}

The seed depth h of (e) is the best of {", ".join(f"{h:g}" for h in H_CHOICES)} on slices 5-9
(neither trained on nor evaluated):

{_common.format_table(result.get("h_sweep", []))}

## Mitochondria: synthetic sample (`classes="mitochondria"`), slices 4-7

Trained on slices 0-3 ({result.get("mito_iterations")} iterations, default recipe); objects
matched one-to-one at IoU >= 0.5. Truth: 2D rows use the connected components of each truth
slice's mitochondria; the 3D row uses the sample's 3D mitochondrion ids.

{_common.format_table(result.get("mito_rows", []))}

## Time and peak memory (traced numpy allocations) of the objects step

512 x 512 slices; a 30-slice volume (ISBI probabilities repeated; mitochondria tiled).

{_common.format_table(result.get("cost_rows", []))}

Reproduce: `python -m benchmarks.bench_objects [--iterations N]` (outputs in /tmp/helperD).
"""
    DOC_PATH.write_text(text)
    section = (
        "<!-- section:objects -->\n## Instances (objects step)\n\n"
        f"{verdict or 'See OBJECTS.md.'} Same probabilities, {result.get('iterations')} "
        "training iterations; details, the mitochondria case and the costs in "
        "[OBJECTS.md](OBJECTS.md).\n<!-- /section:objects -->"
    )
    _write_section(DOC_PATH.parent / "EVALUATION.md", section)
    return DOC_PATH


def _write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's marked section of ``path``; kept by re-renders."""
    import re

    if not path.exists():
        return
    old = path.read_text()
    pattern = re.compile(r"<!-- section:objects -->.*?<!-- /section:objects -->", re.DOTALL)
    new = (
        pattern.sub(lambda _: section, old)
        if pattern.search(old)
        else f"{old.rstrip()}\n\n{section}\n"
    )
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--train-only", action="store_true", help="only train and cache")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    iterations = args.iterations or (QUICK_ITERATIONS if args.quick else ITERATIONS)
    if args.train_only:
        probs, _, info = isbi_probabilities(iterations)
        print(probs.shape, info)
        return 0
    result = run(quick=args.quick, iterations=iterations)
    _common.report(result)
    for key in ("mito_rows", "cost_rows"):
        print(_common.format_table(result.get(key, [])))
    if not args.no_docs and not args.quick:
        print(f"(wrote {write_docs(result)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
