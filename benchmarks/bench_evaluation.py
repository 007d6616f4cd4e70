"""Segmentation quality on ISBI 2012 under the protocol that represents our users.

Few labelled slices, limited time: train on slices 0-4 of ``train-volume.tif``
(labels ``train-labels.tif``: 0 = membrane, 255 = cell, read as ``napari-unet
train --dense --slices 0-4`` reads them), evaluate on slices 20-29 with
:func:`napari_unet.metrics.evaluate_segmentation` (membrane = class 1; segments
= 4-connected components of the non-membrane pixels, per slice).

Methods, all in the same run:

(a) napari-unet's defaults: ``TrainConfig(max_minutes=M, iterations=None)``,
    i.e. ``napari-unet train --minutes M`` (10 minutes on the CPU; 3 minutes on
    a GPU too when ``torch.cuda.is_available()``), predicted with
    ``predict_tiled`` and our default ``tta=False``;
(b) the ilastik-style classical peer: ``skimage.feature.multiscale_basic_features``
    + a random forest (``skimage.future.fit_segmenter``), trained on the same
    slices (not time-limited: it finishes in about a minute);
(c) a plain PyTorch U-Net trained "the seeds' way" (self-contained below:
    same-padded, 16 filters, 4 levels, BatchNorm, BCE on the membrane mask,
    CPU ``elasticdeform`` sigma 10 / 3 points, Adam 1e-3, batch 4 x 256 px)
    within the same time budget as (a) on the CPU;
(d) the scribble case: the same 5 slices with only ~5 % of their pixels
    labelled (thin strokes along membranes and short strokes inside cells,
    derived from the ground truth deterministically), our defaults, same budget;
(e) a control for the targets: our defaults with four times the labels (dense
    slices 0-19, still never the evaluated 20-29), same budget.  It shows
    what the same method reaches when labels are not the limit.

Run::

    python -m benchmarks.bench_evaluation            # full: 10 min per trained method
    python -m benchmarks.bench_evaluation --quick    # 1 min each (smoke run)
    python -m benchmarks.bench_evaluation --minutes 2 --only a,b

It writes ``benchmarks/results/evaluation.json`` and ``docs/EVALUATION.md``.
Set ``NAPARI_UNET_ISBI_DIR`` to use a copy of the data elsewhere.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/bench_evaluation.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks import _common

NAME = "evaluation"
TRAIN_SLICES = (0, 1, 2, 3, 4)
EVAL_SLICES = tuple(range(20, 30))
CPU_MINUTES = 10.0
GPU_MINUTES = 3.0
QUICK_MINUTES = 1.0
SCRIBBLE_FRACTION = 0.05
METHODS = ("a", "b", "c", "d", "e")
#: the labelled slices of the control (e)
CONTROL_SLICES = tuple(range(20))
#: our targets for (a) on the CPU
TARGET_PIXEL_ERROR = 0.075
TARGET_MEMBRANE_IOU = 0.65
#: reference figures measured earlier for the peers (10 min CPU budget)
REFERENCE = {"b": (0.106, 0.55), "c": (0.099, 0.56)}
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "EVALUATION.md"


# --------------------------------------------------------------------------- data


def load_isbi() -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (30, 512, 512), truth classes uint8: 1 membrane, 2 cell)``."""
    import tifffile

    d = _common.ISBI_DIR
    image = tifffile.imread(d / "train-volume.tif")
    raw = tifffile.imread(d / "train-labels.tif")
    truth = np.where(raw == 0, 1, 2).astype(np.uint8)
    return image, truth


def scribble_labels(
    truth: np.ndarray, fraction: float = SCRIBBLE_FRACTION, seed: int = 0
) -> np.ndarray:
    """Sparse strokes derived deterministically from a (H, W) class map (1 membrane, 2 cell).

    Half of the pixel budget goes to membrane strokes: pieces of the membrane
    skeleton between junctions, drawn with a 3-pixel brush that stays on the
    membrane; the other half to short straight strokes (15-40 px, 3-pixel
    brush) through the interior of randomly chosen cells, at least 3 px from
    their border.  Returns ``0`` = unlabelled, ``1`` = membrane, ``2`` = cell.
    """
    from scipy import ndimage
    from skimage.draw import line
    from skimage.measure import label
    from skimage.morphology import skeletonize

    rng = np.random.default_rng(seed)
    h, w = truth.shape
    budget = fraction * h * w / 2.0
    out = np.zeros(truth.shape, np.uint8)
    brush = np.ones((3, 3), bool)

    membrane = truth == 1
    skel = skeletonize(membrane)
    neighbours = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant")
    junctions = skel & (neighbours > 3)  # the pixel itself + more than 2 neighbours
    pieces = label(skel & ~ndimage.binary_dilation(junctions, brush), connectivity=2)
    ids = rng.permutation(np.arange(1, pieces.max() + 1))
    drawn = 0
    for i in ids:
        seg = pieces == i
        if seg.sum() < 8:
            continue
        stroke = ndimage.binary_dilation(seg, brush) & membrane
        new = stroke & (out == 0)
        out[new] = 1
        drawn += int(new.sum())
        if drawn >= budget:
            break

    cells = label(truth == 2, connectivity=1)
    interior = ndimage.distance_transform_edt(truth == 2) >= 3
    drawn = 0
    for c in rng.permutation(np.arange(1, cells.max() + 1)):
        inside = (cells == c) & interior
        ys, xs = np.nonzero(inside)
        if ys.size < 20:
            continue
        k = int(rng.integers(ys.size))
        cy, cx = int(ys[k]), int(xs[k])
        angle = rng.uniform(0, math.pi)
        half = rng.uniform(7.5, 20.0)
        dy, dx = half * math.sin(angle), half * math.cos(angle)
        rr, cc = line(
            int(np.clip(round(cy - dy), 0, h - 1)),
            int(np.clip(round(cx - dx), 0, w - 1)),
            int(np.clip(round(cy + dy), 0, h - 1)),
            int(np.clip(round(cx + dx), 0, w - 1)),
        )
        seg = np.zeros_like(inside)
        seg[rr, cc] = True
        stroke = ndimage.binary_dilation(seg & inside, brush) & inside
        new = stroke & (out == 0)
        out[new] = 2
        drawn += int(new.sum())
        if drawn >= budget:
            break
    return out


# --------------------------------------------------------------------------- helpers


def _metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from napari_unet.metrics import evaluate_segmentation

    m = evaluate_segmentation(pred, truth, membrane_class=1)
    return {
        "pixel_error": float(m["pixel_error"]),
        "membrane_iou": float(m["iou"][1]),
        "cell_iou": float(m["iou"][2]),
        "rand_error": float(m["rand_error"]),
        "vi_split": float(m["vi_split"]),
        "vi_merge": float(m["vi_merge"]),
        "vi_total": float(m["vi_total"]),
    }


def _device_name(device: str) -> str:
    import torch

    from napari_unet.devices import describe_device

    return describe_device(torch.device(device))


# --------------------------------------------------------------------------- (a), (d) ours


def run_ours(
    image: np.ndarray,
    labels: np.ndarray,
    truth: np.ndarray,
    *,
    minutes: float,
    device: str,
    method: str,
    train_slices: tuple[int, ...] = TRAIN_SLICES,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train with napari-unet's defaults for ``minutes`` and evaluate on EVAL_SLICES.

    ``train_slices`` are the slices ``labels`` labels (for the labelled share);
    ``overrides`` changes TrainConfig fields (a recipe to compare with the defaults).
    """
    import torch

    from napari_unet.tiling import predict_tiled
    from napari_unet.training import Finished, Iteration, TrainConfig, Trainer, TrainingStarted

    torch.manual_seed(0)
    fields = {"max_minutes": minutes, "iterations": None, "device": device, "preview_every_s": 0.0}
    config = TrainConfig(**{**fields, **(overrides or {})})
    t0 = time.perf_counter()
    trainer = Trainer(image, labels, config)
    last: Iteration | None = None
    finished: Finished | None = None
    started: TrainingStarted | None = None
    for event in trainer.run():
        if isinstance(event, TrainingStarted):
            started = event
        elif isinstance(event, Iteration):
            last = event
        elif isinstance(event, Finished):
            finished = event
    train_s = time.perf_counter() - t0
    # our default (TTA off), then the same model with test-time augmentation
    # (8 flips/rotations, `--tta`) for reference; only the first is timed
    scores, predict_s = [], 0.0
    for tta in (False, True):
        t1 = time.perf_counter()
        pred = predict_tiled(
            trainer.model,
            image[list(EVAL_SLICES)],
            device=device,
            normalization=trainer.normalization,
            tta=tta,
        )
        if not tta:
            predict_s = time.perf_counter() - t1
        scores.append(_metrics(np.asarray(pred), truth[list(EVAL_SLICES)]))
    plain, with_tta = scores
    n_lab = sum(int(np.count_nonzero(labels[z])) for z in train_slices)
    n_all = len(train_slices) * int(np.prod(labels.shape[1:]))
    return {
        "method": method,
        "device": _device_name(device),
        "budget_min": minutes,
        "iterations": finished.iterations if finished else 0,
        "patches_per_s": round(last.samples_per_s, 2) if last else 0.0,
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 1),
        "labelled_pct": round(100.0 * n_lab / n_all, 2),
        "precision": started.precision if started else None,
        **plain,
        "tta_pixel_error": with_tta["pixel_error"],
        "tta_membrane_iou": with_tta["membrane_iou"],
    }


def _dense_training_labels(path_image: Path, path_labels: Path) -> Any:
    """The labels exactly as ``napari-unet train --dense --slices 0-4`` sees them."""
    from napari_unet.cli.train import prepare

    data = prepare(
        str(path_image),
        str(path_labels),
        slices=",".join(map(str, TRAIN_SLICES)),
        dense=True,
    )
    assert data.label_mapping == {"0": 1, "255": 2}, data.label_mapping
    return data


# --------------------------------------------------------------------------- (b) random forest


def run_random_forest(image: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    from functools import partial

    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    features = partial(
        multiscale_basic_features,
        intensity=True,
        edges=True,
        texture=True,
        sigma_min=1,
        sigma_max=16,
    )
    t0 = time.perf_counter()
    train_f = np.stack([features(image[z]).astype(np.float32) for z in TRAIN_SLICES])
    clf = RandomForestClassifier(
        n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=0
    )
    clf = fit_segmenter(truth[list(TRAIN_SLICES)], train_f, clf)
    del train_f
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = np.stack(
        [predict_segmenter(features(image[z]).astype(np.float32), clf) for z in EVAL_SLICES]
    ).astype(np.uint8)
    predict_s = time.perf_counter() - t1
    return {
        "method": "b: random forest (ilastik-style)",
        "device": f"cpu ({os.cpu_count()} cores, n_jobs=-1)",
        "budget_min": None,
        "iterations": None,
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 1),
        "labelled_pct": 100.0,
        **_metrics(pred, truth[list(EVAL_SLICES)]),
    }


# --------------------------------------------------------------------------- (c) seeds' U-Net


def _seed_unet(base: int = 16, levels: int = 4):
    """The seeds' plain U-Net: same padding, BatchNorm, one output logit (membrane)."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class SeedUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [base * 2**i for i in range(levels)]
            self.down = nn.ModuleList()
            cin = 1
            for c in chans:
                self.down.append(block(cin, c))
                cin = c
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            for c in reversed(chans[:-1]):
                self.up.append(nn.ConvTranspose2d(c * 2, c, 2, stride=2))
                self.dec.append(block(c * 2, c))
            self.head = nn.Conv2d(chans[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, blk in enumerate(self.down):
                x = blk(x)
                if i < len(self.down) - 1:
                    skips.append(x)
                    x = self.pool(x)
            for up, dec in zip(self.up, self.dec):
                x = up(x)
                x = dec(torch.cat([skips.pop(), x], dim=1))
            return self.head(x)

    return SeedUNet()


def run_seed_unet(
    image: np.ndarray, truth: np.ndarray, *, minutes: float, seed: int = 0
) -> dict[str, Any]:
    import elasticdeform
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = _seed_unet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    imgs = image[list(TRAIN_SLICES)].astype(np.float32) / 255.0
    masks = (truth[list(TRAIN_SLICES)] == 1).astype(np.float32)
    patch, batch = 256, 4
    h, w = imgs.shape[1:]
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * minutes
    it = 0
    model.train()
    while time.perf_counter() < deadline:
        xs, ys = [], []
        for _ in range(batch):
            z = int(rng.integers(len(imgs)))
            y0, x0 = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
            img = imgs[z, y0 : y0 + patch, x0 : x0 + patch]
            msk = masks[z, y0 : y0 + patch, x0 : x0 + patch]
            k = int(rng.integers(4))
            img, msk = np.rot90(img, k), np.rot90(msk, k)
            if rng.random() < 0.5:
                img, msk = img[:, ::-1], msk[:, ::-1]
            img, msk = elasticdeform.deform_random_grid(
                [np.ascontiguousarray(img), np.ascontiguousarray(msk)],
                sigma=10,
                points=3,
                order=[3, 0],
                mode="mirror",
            )
            xs.append(img)
            ys.append(msk)
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys)[:, None])
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
    train_s = time.perf_counter() - t0
    model.eval()
    t1 = time.perf_counter()
    preds = []
    with torch.inference_mode():
        for z in EVAL_SLICES:
            x = torch.from_numpy(image[z].astype(np.float32)[None, None] / 255.0)
            membrane = model(x)[0, 0].numpy() > 0
            preds.append(np.where(membrane, 1, 2).astype(np.uint8))
    predict_s = time.perf_counter() - t1
    return {
        "method": "c: plain U-Net, seeds' recipe",
        "device": _device_name("cpu"),
        "budget_min": minutes,
        "iterations": it,
        "patches_per_s": round(it * batch / max(train_s, 1e-9), 2),
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 1),
        "labelled_pct": 100.0,
        **_metrics(np.stack(preds), truth[list(EVAL_SLICES)]),
    }


# --------------------------------------------------------------------------- run


def _skip(note: str) -> dict[str, Any]:
    return {"name": NAME, "rows": [], "note": note, "skipped": True}


def run(
    quick: bool = False,
    *,
    minutes: float | None = None,
    only: str | list[str] | None = None,
    devices: str = "all",
    write_docs: bool = True,
) -> dict[str, Any]:
    """Run the evaluation; returns ``{"name", "rows", "note", ...}``.

    Parameters
    ----------
    quick : bool
        1-minute budgets (a smoke run; the figures are not representative).
    minutes : float, optional
        Override every training budget (CPU and GPU).
    only : "a,b" or list, optional
        Run only these methods (a, b, c, d, e).
    devices : {"all", "cpu", "cuda"}
        ``"cuda"``: only the GPU row of (a) (for a run on a GPU machine);
        ``"cpu"``: no GPU row; ``"all"``: the GPU row too when CUDA is available.
    write_docs : bool
        Write ``docs/EVALUATION.md``.
    """
    if not _common.isbi_available():
        return _skip(
            f"skipped: ISBI 2012 data not found in {_common.ISBI_DIR} (train-volume.tif, "
            "train-labels.tif); set NAPARI_UNET_ISBI_DIR or see docs"
        )
    import torch

    wanted = list(METHODS) if only is None else (only.split(",") if isinstance(only, str) else only)
    wanted = [m.strip().lower() for m in wanted if m.strip()]
    bad = [m for m in wanted if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}: choose from {', '.join(METHODS)}")
    cpu_min = minutes if minutes is not None else (QUICK_MINUTES if quick else CPU_MINUTES)
    gpu_min = minutes if minutes is not None else (QUICK_MINUTES if quick else GPU_MINUTES)
    if devices not in ("all", "cpu", "cuda"):
        raise ValueError(f"devices must be 'all', 'cpu' or 'cuda', got {devices!r}")
    has_gpu = torch.cuda.is_available() and devices != "cpu"
    if devices == "cuda":
        if not has_gpu:
            raise ValueError("devices='cuda' but no CUDA GPU is available")
        wanted = [m for m in wanted if m == "a"]
    run_cpu = devices != "cuda"

    image, truth = load_isbi()
    d = _common.ISBI_DIR
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    if "a" in wanted:
        data = _dense_training_labels(d / "train-volume.tif", d / "train-labels.tif")
        runs = [("cpu", cpu_min, "CPU")] if run_cpu else []
        runs += [("cuda", gpu_min, "GPU")] if has_gpu else []
        for device, budget, label in runs:
            rows.append(
                run_ours(
                    data.image, data.labels, truth, minutes=budget, device=device,
                    method=f"a: napari-unet defaults ({label})",
                )
            )  # fmt: skip
    if "b" in wanted:
        rows.append(run_random_forest(image, truth))
    if "c" in wanted:
        rows.append(run_seed_unet(image, truth, minutes=cpu_min))
    if "d" in wanted:
        scribbles = np.zeros_like(truth)
        for z in TRAIN_SLICES:
            scribbles[z] = scribble_labels(truth[z], SCRIBBLE_FRACTION, seed=z)
        rows.append(
            run_ours(
                image, scribbles, truth, minutes=cpu_min, device="cpu",
                method="d: napari-unet defaults, ~5% scribbles (CPU)",
            )
        )  # fmt: skip
    if "e" in wanted:
        control = np.zeros_like(truth)
        control[list(CONTROL_SLICES)] = truth[list(CONTROL_SLICES)]
        rows.append(
            run_ours(
                image, control, truth, minutes=cpu_min, device="cpu",
                method="e: control, defaults with 4x the labels (dense 0-19, CPU)",
                train_slices=CONTROL_SLICES,
            )
        )  # fmt: skip

    for row in rows:
        if row["method"].startswith("a:") and "CPU" in row["method"]:
            row["meets_target"] = bool(
                row["pixel_error"] <= TARGET_PIXEL_ERROR
                and row["membrane_iou"] >= TARGET_MEMBRANE_IOU
            )
    mode = (
        f"budget override {minutes:g} min"
        if minutes is not None
        else (
            "quick mode: 1 min per trained method (smoke run, not representative)"
            if quick
            else "full"
        )
    )
    result: dict[str, Any] = {
        "name": NAME,
        "rows": rows,
        "note": (
            f"ISBI 2012: train on slices 0-4 (dense labels), evaluate on 20-29; {mode}; "
            "TTA off (napari-unet's default); CPU budget "
            f"{cpu_min:g} min{f', GPU budget {gpu_min:g} min' if has_gpu else ', no GPU'}"
        ),
        "mode": "quick" if quick else "full",
        "budget_min": {"cpu": cpu_min, "gpu": gpu_min if has_gpu else None},
        "targets": {"pixel_error": TARGET_PIXEL_ERROR, "membrane_iou": TARGET_MEMBRANE_IOU},
        "reference": {k: {"pixel_error": v[0], "membrane_iou": v[1]} for k, v in REFERENCE.items()},
        "total_s": round(time.perf_counter() - t_all, 1),
        "machine": _common.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if write_docs:
        write_markdown(result)
    return result


_COLUMNS = (
    ("method", "method"),
    ("device", "device"),
    ("budget_min", "budget (min)"),
    ("iterations", "iterations"),
    ("train_s", "train (s)"),
    ("predict_s", "predict (s)"),
    ("labelled_pct", "labelled (%)"),
    ("pixel_error", "pixel error"),
    ("membrane_iou", "membrane IoU"),
    ("rand_error", "adapted Rand error"),
    ("vi_split", "VI split"),
    ("vi_merge", "VI merge"),
    ("vi_total", "VI total"),
    ("tta_pixel_error", "pixel error, TTA"),
    ("tta_membrane_iou", "membrane IoU, TTA"),
)


_FORMATS = {
    "budget_min": "{:g}",
    "train_s": "{:.1f}",
    "predict_s": "{:.1f}",
    "labelled_pct": "{:.1f}",
}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def fmt(key: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return _FORMATS.get(key, "{:.4f}").format(v)
        return str(v)

    lines = [
        "| " + " | ".join(h for _, h in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(k, row.get(k)) for k, _ in _COLUMNS) + " |")
    return "\n".join(lines)


def _machine_text(m: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {m[k]}" for k in ("processor", "cpu_count", "gpu", "torch", "torch_threads") if k in m
    )


def _other_runs_text(result: dict[str, Any]) -> str:
    """Rows of earlier runs on other machines (``--add-rows``), one table per run."""
    parts = []
    for other in result.get("other_runs", []):
        parts.append(
            f"\n### Measured on another machine: {_machine_text(other.get('machine', {}))}\n\n"
            f"{other.get('date', '')}, `{other.get('command', '')}`; {other.get('note', '')}.\n\n"
            f"{markdown_table(other['rows'])}\n"
        )
    return "".join(parts)


def load_result(path: str | Path) -> dict[str, Any]:
    """A result of :func:`run` saved as JSON (``benchmarks/results/evaluation.json``)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a result of bench_evaluation ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: not a result of bench_evaluation (no 'rows')")
    return data


def load_other_run(path: str | Path, command: str = "") -> dict[str, Any]:
    """A saved result JSON of :func:`run` (e.g. the GPU row from a GPU machine)."""
    data = load_result(path)
    keep = ("rows", "machine", "date", "note")
    return {
        **{k: data[k] for k in keep if k in data},
        "command": command or data.get("command", ""),
    }


def write_markdown(result: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``docs/EVALUATION.md`` (or ``path``) from a result of :func:`run`."""
    path = DOC_PATH if path is None else path
    machine = _machine_text(result.get("machine", {}))
    target_rows = [r for r in result["rows"] if "meets_target" in r]
    verdict = ""
    if target_rows:
        r = target_rows[0]
        verdict = (
            f"\n**Target for (a) on the CPU** (pixel error <= {TARGET_PIXEL_ERROR}, membrane IoU "
            f">= {TARGET_MEMBRANE_IOU}): {'met' if r['meets_target'] else 'NOT met'} "
            f"(pixel error {r['pixel_error']:.4f}, membrane IoU {r['membrane_iou']:.4f}).\n"
        )
        control = next((c for c in result["rows"] if c["method"].startswith("e:")), None)
        if control is not None:
            verdict += (
                "\nThe control (e), the same method and budget with four times the labels, "
                f"reaches pixel error {control['pixel_error']:.4f} and membrane IoU "
                f"{control['membrane_iou']:.4f} (a: {r['pixel_error']:.4f} / "
                f"{r['membrane_iou']:.4f}): the pixel-error target is "
                f"{'within' if control['pixel_error'] <= TARGET_PIXEL_ERROR else 'beyond'} what "
                "this method reaches even when labels are not the limit.\n"
            )
    text = f"""# Evaluation: ISBI 2012 with few labels and limited time

<!-- generated by `python -m benchmarks.bench_evaluation`; do not edit by hand -->

Generated {result.get("date", "")} ({result.get("mode", "")} mode) on: {machine}.

{result["note"]}.

## Protocol

What our users do: label a few slices, train for minutes, segment the rest.

* Data: ISBI 2012 `train-volume.tif` / `train-labels.tif` (30 x 512 x 512 ssTEM;
  labels 0 = membrane, 255 = cell).
* Training: slices 0-4 only, dense labels (read exactly as
  `napari-unet train --dense --slices 0-4` reads them: 0 -> class 1 "membrane",
  255 -> class 2 "cell"); (d) uses ~{SCRIBBLE_FRACTION:.0%} of the pixels of the
  same slices.
* Evaluation: slices 20-29 (never seen), `napari_unet.metrics.evaluate_segmentation`:
  pixel error, membrane IoU, adapted Rand error and variation of information on
  segments = 4-connected components of the non-membrane pixels, per 2D slice
  (ISBI 2012 style), averaged over the slices.

| method | what |
|---|---|
| (a) | napari-unet defaults (`TrainConfig(max_minutes=M, iterations=None)` = `napari-unet train --minutes M`: "small" preset, wce+dice loss with border weights, augmentation on the training device), predicted with `predict_tiled`, **TTA off** (our default); CPU {CPU_MINUTES:g} min, and GPU {GPU_MINUTES:g} min when CUDA is available |
| (b) | ilastik-style peer: `skimage.feature.multiscale_basic_features` (sigma 1-16) + `RandomForestClassifier(n_estimators=50, max_depth=10, max_samples=0.05)` via `skimage.future.fit_segmenter` (not time-limited) |
| (c) | plain PyTorch U-Net "the seeds' way": same padding, 16 filters, 4 levels, BatchNorm, BCE on the membrane mask, CPU `elasticdeform` (sigma 10, 3 points), Adam 1e-3, batch 4 x 256 px, same budget as (a) on the CPU |
| (d) | as (a) on the CPU, but only scribbles: thin strokes along membranes + short strokes inside cells (~{SCRIBBLE_FRACTION:.0%} of the pixels, from the ground truth, deterministic) |
| (e) | control for the targets: as (a) on the CPU, but with four times the labels (dense slices {CONTROL_SLICES[0]}-{CONTROL_SLICES[-1]}, still disjoint from the evaluated slices): what the method reaches when the labels are not the limit |

## Results

{markdown_table(result["rows"])}
{verdict}{_other_runs_text(result)}
Reference figures of the peers with a 10-minute CPU budget (measured earlier):
(b) pixel error ~{REFERENCE["b"][0]}, membrane IoU ~{REFERENCE["b"][1]};
(c) pixel error ~{REFERENCE["c"][0]}, membrane IoU ~{REFERENCE["c"][1]}.

Lower is better for pixel error, Rand error and VI; higher for IoU. Wall times
depend on the machine and on what else runs on it.
Reproduce: `python -m benchmarks.bench_evaluation` (full, about
{4 * CPU_MINUTES + 3:.0f} minutes on a CPU-only machine, plus {GPU_MINUTES:g} on a
GPU one), `--quick` for a 1-minute smoke run, `--only a,b`, `--minutes M`.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + kept_sections(path))
    return path


def kept_sections(path: Path) -> str:
    """The sections other benchmarks generate into the page (``<!-- section:NAME -->`` ...
    ``<!-- /section:NAME -->``, e.g. bench_losses'), read from ``path``, so a re-render keeps them."""
    import re

    try:
        old = path.read_text()
    except OSError:
        return ""
    found = re.finditer(r"<!-- section:([\w-]+) -->.*?<!-- /section:\1 -->", old, re.DOTALL)
    return "".join(f"\n{m.group(0)}\n" for m in found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1-minute budgets (smoke run)")
    parser.add_argument("--minutes", type=float, help="override every training budget")
    parser.add_argument("--only", help="comma-separated methods among a,b,c,d,e")
    parser.add_argument(
        "--devices",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="cuda: only the GPU row of (a); cpu: no GPU row (default all)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/EVALUATION.md")
    parser.add_argument(
        "--add-rows",
        action="append",
        default=[],
        metavar="RESULT.json",
        help="also list the rows of a saved result measured elsewhere (e.g. on a GPU machine)",
    )
    parser.add_argument(
        "--render",
        metavar="RESULT.json",
        help="only write docs/EVALUATION.md from a saved result (e.g. the "
        "benchmarks/results/evaluation.json of `python -m benchmarks.run_all`), with --add-rows",
    )
    args = parser.parse_args(argv)
    try:
        others = [load_other_run(p) for p in args.add_rows]
        rendered = load_result(args.render) if args.render else None
    except ValueError as exc:
        parser.error(str(exc))
    if rendered is not None:
        if others:
            rendered["other_runs"] = others
        print(f"(wrote {write_markdown(rendered)})")
        return 0
    result = run(
        args.quick,
        minutes=args.minutes,
        only=args.only,
        devices=args.devices,
        write_docs=False,
    )
    if others:
        result["other_runs"] = others
    if not result.get("skipped") and not args.no_docs:
        write_markdown(result)
    if result.get("skipped"):  # keep the last real results on disk
        print(f"## {NAME}\n{result['note']}")
        return 0
    _common.report(result)
    if not result.get("skipped") and not args.no_docs:
        print(f"(wrote {DOC_PATH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
