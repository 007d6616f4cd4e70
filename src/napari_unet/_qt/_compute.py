"""Qt-free computations run inside the widgets' worker threads.

Thin glue around the core modules: per-slice label counts (for the class
balance of the weight-map preview, which itself calls
:func:`napari_unet.weightmap.loss_weight_map`, the trainer's formula) and a
tiny warm-up forward pass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np


def slice_counts(
    labels: Any, n_classes: int, zs: Iterator[int] | None = None
) -> dict[int, np.ndarray]:
    """``{z: bincount}`` of labelled slices of a (Z, H, W) or (H, W) labels array."""
    arr = labels if labels.ndim >= 3 else labels[None]
    out: dict[int, np.ndarray] = {}
    for z in zs if zs is not None else range(arr.shape[0]):
        sl = np.asarray(arr[z])
        if not sl.any():
            continue
        c = np.bincount(sl.ravel().astype(np.int64, copy=False), minlength=n_classes + 1)
        out[z] = c[: n_classes + 1] if len(c) > n_classes + 1 else c
    return out


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
