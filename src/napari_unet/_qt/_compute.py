"""Qt-free work run inside the docks' worker threads: training, device probes, label counts, weights.

Training itself runs in a :class:`~napari_unet.training.remote.TrainingProcess`; here it is only awaited.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..slices import read_slice
from ..weightmap import class_weight_lut

if TYPE_CHECKING:  # importing the training package imports torch: not when a dock opens
    from ..training.remote import TrainingProcess

__all__ = [
    "class_lut",
    "describe_device_job",
    "slice_counts",
    "warm_process_job",
    "warm_torch",
    "weight_inputs",
]


def slice_counts(
    labels: Any, n_classes: int, zs: Iterator[int] | None = None
) -> dict[int, np.ndarray]:
    """``{z: bincount}`` of labelled slices of a (Z, H, W) or (H, W) labels array."""
    n = int(labels.shape[0]) if labels.ndim >= 3 else 1
    out: dict[int, np.ndarray] = {}
    for z in zs if zs is not None else range(n):
        sl = read_slice(labels, z)
        if not sl.any():
            continue
        c = np.bincount(sl.ravel().astype(np.int64, copy=False), minlength=n_classes + 1)
        out[z] = c[: n_classes + 1] if len(c) > n_classes + 1 else c
    return out


def weight_inputs(config: Any, n_classes: int) -> dict[str, Any]:
    """The weight-map arguments the trainer derives from ``config`` for ``n_classes`` classes."""
    k = max(int(n_classes), 2)
    obj = config.object_class if config.object_class is not None else k
    return {"w0": config.w0, "sigma": config.sigma, "object_class": min(obj, k), "n_classes": k}


def class_lut(
    counts: Iterable[np.ndarray], class_weights: Any, inputs: dict[str, Any]
) -> np.ndarray:
    """The trainer's class-weight look-up table from per-slice class counts (summed)."""
    k = inputs["n_classes"]
    total = np.zeros(k + 1, np.int64)
    for c in counts:
        m = min(len(c), k + 1)
        total[:m] += np.asarray(c[:m], dtype=np.int64)
    return class_weight_lut(total, k, class_weights)


_WARM_LOCK = threading.Lock()
_WARM = False


def warm_torch() -> Iterator[str]:
    """Worker: a tiny forward + backward pass, so torch's one-off init is off the GUI thread."""
    global _WARM
    with _WARM_LOCK:
        if _WARM:
            yield "warm"
            return
        import torch

        from ..model import UNet

        net = UNet.preset("small", n_classes=2)
        x = torch.zeros((1, 1, 32, 32))
        net(x).sum().backward()
        with torch.inference_mode():
            net.eval()(x)
        _WARM = True
    yield "warm"


def is_warm() -> bool:
    return _WARM


def describe_device_job(choice: str) -> Iterator[tuple[str, str]]:
    """Worker: ``(choice, description)`` of the device ``choice`` resolves to."""
    from ..devices import describe_device, resolve_device

    try:
        dev = resolve_device(choice)
    except ValueError as exc:
        yield (choice, f"not available: {exc}")
        return
    yield (choice, describe_device(dev))


# ----------------------------------------------------------------------------- training


def warm_process_job(process: TrainingProcess) -> Iterator[bool]:
    """Worker: wait until the training process has imported torch and warmed up."""
    yield process.wait_warm()
