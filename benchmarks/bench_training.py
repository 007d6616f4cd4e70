"""Training throughput: napari-unet's Trainer vs a plain PyTorch loop with CPU augmentation.

Both loops train the same network (the "small" preset) with the same batch
and patch size and the same loss (weighted cross-entropy + Dice with the
U-Net border weight map), on ISBI 2012 slices 0-4 when
``../shared/data/isbi2012`` exists, else on a synthetic stack:

* **Trainer**: :class:`napari_unet.training.Trainer` -- patches sampled from
  the cached slices, moved to the device, augmented there by
  :class:`napari_unet.augment.Augmentation` (torch elastic field + flips +
  90-degree rotations in one resampling);
* **plain**: the usual hand-written loop -- random crops, then per sample
  ``elasticdeform.deform_random_grid`` on the CPU (sigma 10, 3 x 3 points,
  order 3 for the image, 0 for the labels, 1 for the weight map) and random
  flips / rotations in numpy, then the batch is moved to the device.

The two loops are run *interleaved* in windows of a few iterations in the
same process (Trainer window, plain window, Trainer window, ...), so that a
change of machine load hits both equally; the reported figure is the median
of the per-window samples/s.

Run: ``python benchmarks/bench_training.py [--quick] [--threads N]`` (on a
shared, oversubscribed CPU ``--threads 1`` avoids OpenMP spin-waiting).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

try:
    from benchmarks._common import ISBI_DIR, isbi_available, report
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import ISBI_DIR, isbi_available, report  # type: ignore[no-redef]

from napari_unet.augment import Augmentation
from napari_unet.devices import describe_device, resolve_device
from napari_unet.losses import combined_loss
from napari_unet.model import UNet
from napari_unet.training import TrainConfig, Trainer
from napari_unet.weightmap import border_weight_map, instances_from_mask


def _data() -> tuple[np.ndarray, np.ndarray, str]:
    """(image (5, H, W) uint8, labels (5, H, W) uint8 1 membrane / 2 cell, description)."""
    if isbi_available():
        import tifffile

        image = tifffile.imread(ISBI_DIR / "train-volume.tif")[:5]
        raw = tifffile.imread(ISBI_DIR / "train-labels.tif")[:5]
        labels = np.where(raw > 0, 2, 1).astype(np.uint8)
        return image, labels, "ISBI 2012 slices 0-4"
    from napari_unet.sample_data import synthetic_em

    image, labels = synthetic_em((5, 512, 512), seed=0)
    return image, labels, "synthetic_em 5 x 512 x 512"


class PlainLoop:
    """A hand-written training loop with CPU-side elasticdeform augmentation."""

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        normalization: dict[str, float],
        patch: int,
        batch: int,
        device: torch.device,
        class_lut: np.ndarray,
        w0: float,
        sigma: float,
        seed: int = 0,
    ) -> None:
        import elasticdeform

        self._deform = elasticdeform.deform_random_grid
        self.patch, self.batch, self.device = patch, batch, device
        self.image = (image.astype(np.float32) - normalization["mean"]) / normalization["std"]
        self.labels = labels.astype(np.int64)
        # the same weight map as the Trainer: class weights + border term of the cells
        self.weights = np.stack(
            [
                class_lut[lab] + border_weight_map(instances_from_mask(lab == 2), w0, sigma) - 1.0
                for lab in self.labels
            ]
        ).astype(np.float32)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.model = UNet.preset("small").to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)

    def _sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = int(self.rng.integers(len(self.image)))
        h, w = self.image.shape[1:]
        y = int(self.rng.integers(h - self.patch + 1))
        x = int(self.rng.integers(w - self.patch + 1))
        win = (z, slice(y, y + self.patch), slice(x, x + self.patch))
        img, lab, wt = self._deform(
            [self.image[win], self.labels[win], self.weights[win]],
            sigma=10,
            points=3,
            order=[3, 0, 1],
            mode="mirror",
        )
        k = int(self.rng.integers(4))
        flip = bool(self.rng.integers(2))
        out = []
        for a in (img, lab, wt):
            a = np.rot90(a, k)
            out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
        return out[0], out[1], out[2]

    def step(self) -> float:
        samples = [self._sample() for _ in range(self.batch)]
        x = torch.from_numpy(np.stack([s[0] for s in samples])[:, None]).to(self.device)
        y = torch.from_numpy(np.stack([s[1] for s in samples])).to(self.device)
        w = torch.from_numpy(np.stack([s[2] for s in samples])).to(self.device)
        loss = combined_loss(self.model(x), y, w, mode="wce+dice")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def run(quick: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Measure both loops; ``threads``: ``torch.set_num_threads`` (default: torch's)."""
    if threads is not None:
        torch.set_num_threads(threads)
    image, labels, source = _data()
    device = resolve_device("auto")
    patch = 128 if quick else 256
    batch = 4
    window = 3 if quick else 8
    n_windows = 4 if quick else 8  # per loop, the first one (warm-up) is dropped
    total = window * n_windows

    cfg = TrainConfig(
        patch_size=patch,
        batch_size=batch,
        iterations=total + 1,
        preview_every_s=0.0,
        augmentation=Augmentation(),
        learning_rate=1e-3,
        seed=0,
    )
    trainer = Trainer(image, labels, cfg)
    plain = PlainLoop(
        image,
        labels,
        trainer.normalization,
        trainer.input_size,
        batch,
        device,
        class_lut=trainer._class_lut,
        w0=cfg.w0,
        sigma=cfg.sigma,
    )
    events = trainer.run()
    next(events)  # TrainingStarted

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rates: dict[str, list[float]] = {"trainer": [], "plain": []}
    for _ in range(n_windows):
        sync()
        t0 = time.perf_counter()
        done = 0
        while done < window:
            event = next(events)
            if event.kind == "iteration":
                done += 1
        sync()
        rates["trainer"].append(window * batch / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(window):
            plain.step()
        sync()
        rates["plain"].append(window * batch / (time.perf_counter() - t0))
    trainer.stop()
    for _ in events:  # finish the generator cleanly
        pass

    med = {k: statistics.median(v[1:]) for k, v in rates.items()}
    rows = [
        {
            "loop": "napari-unet Trainer (torch augmentation on device)",
            "samples_per_s": med["trainer"],
            "windows": [round(r, 3) for r in rates["trainer"][1:]],
        },
        {
            "loop": "plain PyTorch + elasticdeform (CPU, per sample)",
            "samples_per_s": med["plain"],
            "windows": [round(r, 3) for r in rates["plain"][1:]],
        },
    ]
    ratio = med["trainer"] / med["plain"]
    note = (
        f"data: {source}; device: {describe_device(device)} (torch threads: "
        f"{torch.get_num_threads()}); network: small preset "
        f"({trainer.model.n_parameters():,} parameters); patch {trainer.input_size}, batch {batch}, "
        f"loss wce+dice with border weights; {window} iterations per window, interleaved, "
        f"{n_windows - 1} windows each after a warm-up window.  Speed-up of the Trainer: "
        f"{ratio:.2f}x"
    )
    return {
        "name": "training",
        "rows": rows,
        "note": note,
        "ratio": ratio,
        "quick": quick,
        "patch": trainer.input_size,
        "batch": batch,
        "device": str(device),
    }


def _threads_arg(argv: list[str]) -> int | None:
    if "--threads" in argv:
        return int(argv[argv.index("--threads") + 1])
    return None


if __name__ == "__main__":
    report(run(quick="--quick" in sys.argv, threads=_threads_arg(sys.argv)))
