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
H_CHOICES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0, 20.0)
#: the voxel of ISBI 2012 (z, y, x) relative to its 4 nm pixels: 50 nm sections
ISBI_SCALE = (12.5, 1.0, 1.0)


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
    from napari_unet.metrics import adapted_rand_error
    from napari_unet.objects import ObjectParams, label_objects

    sweep = []
    for h in H_CHOICES:
        seg = label_objects(val_probs, 1, params=ObjectParams(mode="boundary", h=h)).labels
        per_slice = {
            f"z{z}": round(adapted_rand_error(s, _truth_segments(t))["error"], 3)
            for z, s, t in zip(VAL_SLICES, seg, val_truth)
        }
        sweep.append({"h": h, **_segment_scores(seg, val_truth), **per_slice})
    best = min(sweep, key=lambda r: r["rand_error"])
    return float(best["h"]), sweep


def isbi_rows(probs: np.ndarray, truth: np.ndarray, h: float | None = None) -> list[dict[str, Any]]:
    """Connected components against instances, from the same probabilities."""
    from napari_unet.metrics import segments_from_classes
    from napari_unet.objects import OTHER_H, ObjectParams, label_objects

    classes = (np.argmax(probs, axis=0) + 1).astype(np.uint8)
    boundary = ObjectParams(mode="boundary")
    b3 = boundary.replace(dims=3)
    iso = (1.0, 1.0, 1.0)
    methods = [
        ("a: connected components (metrics.segments_from_classes)", None, ISBI_SCALE),
        (f"b: instances, boundary watershed 2D (defaults: h = {boundary.seed_depth():g})", ("probabilities", boundary), ISBI_SCALE),
        ("c: instances from the class map only (argmax)", ("classes", boundary), ISBI_SCALE),
        ("d: instances, boundary watershed 3D (scale 50/4 nm: 12.5, 1, 1)", ("probabilities", b3), ISBI_SCALE),
        ("d2: instances, boundary watershed 3D, isotropic scale (1, 1, 1)", ("probabilities", b3), iso),
    ]  # fmt: skip
    if h is not None:
        methods.append((f"e: instances 2D, h = {h:g} chosen on slices 5-9", ("probabilities", boundary.replace(h=h)), ISBI_SCALE))  # fmt: skip
    if boundary.seed_depth() != OTHER_H:
        methods.append((f"f: instances 2D, h = {OTHER_H:g} (the default before)", ("probabilities", boundary.replace(h=OTHER_H)), ISBI_SCALE))  # fmt: skip
    rows = []
    for name, how, scale in methods:
        t0 = time.perf_counter()
        if how is None:
            seg = segments_from_classes(classes, 1)
        else:
            kind, params = how
            source = probs if kind == "probabilities" else classes
            seg = label_objects(source, 1, kind=kind, params=params, scale=scale).labels
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
            sv, mv = _measure(label_objects, vol, cls, params=params, scale=ISBI_SCALE)
            rows.append({
                "mode": mode, "dims": dims,
                "slice_s": round(s1, 3) if dims == 2 else None,
                "slice_peak_mib": round(m1, 1) if dims == 2 else None,
                "volume_30_s": round(sv, 2), "volume_peak_mib": round(mv, 1),
                "volume_per_slice_s": round(sv / 30, 3),
            })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- run, docs


def h_check(iterations: int) -> dict[str, Any]:
    """The seed-depth sweep on slices 5-9 after another training budget (is the choice stable?)."""
    _, val, _ = isbi_probabilities(iterations)
    _, truth = load_isbi()
    h, sweep = choose_h(val, truth[list(VAL_SLICES)])
    return {"iterations": iterations, "best_h": h, "sweep": sweep}


def run(
    quick: bool = False, iterations: int | None = None, also: tuple[int, ...] = ()
) -> dict[str, Any]:
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
        result["h_checks"] = [h_check(n) for n in also]
    else:
        result["note"] = f"ISBI part skipped: no ISBI 2012 in {_common.ISBI_DIR}"
    result["machine"] = _common.machine()
    return result


def _h_checks_text(result: dict[str, Any]) -> str:
    checks = result.get("h_checks") or []
    if not checks:
        return ""
    rows = [
        {"iterations": c["iterations"], "best_h": c["best_h"],
         **{f"h={r['h']:g}": r["rand_error"] for r in c["sweep"]}}
        for c in checks
    ]  # fmt: skip
    return (
        "\nThe same sweep (adapted Rand error on slices 5-9) after other training budgets "
        f"(`--also-iterations`):\n\n{_common.format_table(rows)}\n"
    )


def _method_text() -> str:
    from napari_unet.objects import ObjectParams

    b = ObjectParams(mode="boundary")
    return (
        f"with `ObjectParams()` defaults (boundary mode: seeds = h-maxima (h = {b.seed_depth():g} px) "
        f"of the distance\ntransform of the pixels with membrane probability < {b.threshold:g} "
        f"after a sigma-{b.smooth:g} Gaussian, watershed\non the membrane probability, segments "
        f"under {b.min_pixels} px flooded by their neighbours)."
    )


def _stored_text() -> str:
    from napari_unet.objects import BOUNDARY_H, OTHER_H

    return f"""## Parameters stored in the model

- Training writes `metadata["objects"]` into the checkpoint: one entry per class name,
  `{{mode, dims, threshold, smooth, seeds, h, min_size, min_pixels, split, fill_holes}}`, the
  defaults the class names imply (`objects.objects_metadata`): a boundary class (`membrane`),
  or a region class (`cell`) beside one, gives boundary watershed on the membrane
  probability; any other class (`mitochondria`) gives objects. Fine-tuning keeps the entries
  of the checkpoint it starts from.
- Objects dock: its settings start from the model's entry for the class chosen (else the
  rules); **Remember for this model** writes the current settings into the metadata of the
  model in memory, so the next save of that model (Export > model, or the checkpoint of a
  training continued from it) carries them.
- CLI: `napari-unet objects --model M.pt ...` and `napari-unet predict --model M.pt
  --objects CLASS ...` use the stored entry of CLASS; `--mode`, `--dims`, `--min-size`,
  `--split`, `--threshold`, `--seeds` and `--seed-depth` override it.
- A table that is not `{{class name: {{parameter: plain value}}}}` makes `load_checkpoint`
  refuse the file with one line (`invalid metadata 'objects'`); an unknown parameter or a
  bad value is ignored with a warning (CLI: one `napari-unet: warning:` line; dock: a
  notification) and the default is used instead.

## Seed depth h

`h` is the depth of a seed in the distance transform of the non-membrane pixels, in pixels
(in-plane). Default: {BOUNDARY_H:g} px for boundary watershed with distance seeds, {OTHER_H:g}
for the rest (h-minima seeds: probability x 10; the split of touching objects). It stays in
pixels rather than physical units: what it filters is the pixel-scale ripple of the
predicted membranes (a gap or a blur a few pixels wide) that the U-Net produces at its input
resolution, and most EM TIFFs carry no pixel size, so a physical default would be wrong by
the unknown scale. A relative h (a fraction of each cell's inscribed radius) would follow
cell size but not membrane noise; it was not measured.

The default was chosen on slices 5-9 only (the sweep below, two training budgets). Every h
from 5 up beats the former 2 after both budgets. The lowest mean error (h = 16) comes from
slices 7 and 8 alone (run of 2 Dec 2026), where one large cell stays split unless h is
12-16 (their error drops from ~0.10 to ~0.02 at once), while slices 5, 6 and 9 are flat over
h = 6-12 and worse at 16-20. A wrong split is undone by one merge in the Objects dock, a wrong merge needs
seeds, and a large h turns into connected components (one seed per closed region) on
stacks of small cells; so the default is the smallest h of the consistent gain,
{BOUNDARY_H:g}. For stacks of large cells, raise the seed depth in the dock and press
**Remember for this model** (or pass `--seed-depth`).
"""


def write_docs(result: dict[str, Any], evaluation: bool = True) -> Path:
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
{_method_text()}

{_stored_text()}
## ISBI 2012: slices 20-29, default recipe for {result.get("iterations")} iterations on slices 0-4

Both from the same probabilities; per-slice adapted Rand error and VI (bits), averaged, the
truth segments made as `metrics.evaluate_segmentation` makes them. {verdict}

{_common.format_table(rows)}

3D (d) gets the ISBI voxel (50 nm sections, 4 nm pixels: scale 12.5, 1, 1); without it (d2)
it is worse still. At 50 nm a neurite's section moves by more than its width from slice to
slice, so flooding across slices joins different cells of one slice (run of 2 Dec 2026: 76
segments for the 10 slices, a segment in 2.65 pieces per slice on average). 3D boundary
mode is for near-isotropic stacks (FIB-SEM); for serial sections use 2D.

The seed depth h of (e) is the best of {", ".join(f"{h:g}" for h in H_CHOICES)} on slices 5-9
(neither trained on nor evaluated); z5-z9: the adapted Rand error of each slice:

{_common.format_table(result.get("h_sweep", []))}
{_h_checks_text(result)}
## Mitochondria: synthetic sample (`classes="mitochondria"`), slices 4-7

Trained on slices 0-3 ({result.get("mito_iterations")} iterations, default recipe); objects
matched one-to-one at IoU >= 0.5. Truth: 2D rows use the connected components of each truth
slice's mitochondria; the 3D row uses the sample's 3D mitochondrion ids.

{_common.format_table(result.get("mito_rows", []))}

## Time and peak memory (traced numpy allocations) of the objects step

512 x 512 slices; a 30-slice volume (ISBI probabilities repeated; mitochondria tiled).

{_common.format_table(result.get("cost_rows", []))}

Reproduce: {result.get("command") or "`python -m benchmarks.bench_objects [--iterations N]`"}
(probabilities cached in {OUT_DIR}).
"""
    DOC_PATH.write_text(text)
    if not evaluation:
        return DOC_PATH
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
    parser.add_argument(
        "--also-iterations", type=int, nargs="*", default=[], metavar="N",
        help="also sweep the seed depth on slices 5-9 after these training budgets",
    )  # fmt: skip
    parser.add_argument(
        "--no-evaluation-section", action="store_true",
        help="write docs/OBJECTS.md only, not the objects section of docs/EVALUATION.md",
    )  # fmt: skip
    args = parser.parse_args(argv)
    iterations = args.iterations or (QUICK_ITERATIONS if args.quick else ITERATIONS)
    if args.train_only:
        probs, _, info = isbi_probabilities(iterations)
        print(probs.shape, info)
        return 0
    result = run(quick=args.quick, iterations=iterations, also=tuple(args.also_iterations))
    result["command"] = (
        f"`{' '.join(['python -m benchmarks.bench_objects', *(argv or sys.argv[1:])])}`"
    )
    _common.report(result)
    for key in ("mito_rows", "cost_rows"):
        print(_common.format_table(result.get(key, [])))
    if not args.no_docs and not args.quick:
        print(f"(wrote {write_docs(result, evaluation=not args.no_evaluation_section)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
