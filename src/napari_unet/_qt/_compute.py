"""Qt-free computations run inside the widgets' worker threads.

Thin glue around the core modules: the weight map exactly as
:class:`napari_unet.training.Trainer` builds it (class-balancing look-up table
over the labelled pixels + the border term of the U-Net paper on the objects of
the object class), and a tiny warm-up forward pass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..weightmap import border_weight_map, instances_from_mask


def class_weight_lut(
    counts: np.ndarray, n_classes: int, class_weights: str | Mapping[int, float] | None
) -> np.ndarray:
    """``lut[k]`` = class weight of class ``k`` (``lut[0] = 0``), as the trainer computes it.

    ``counts`` are the numbers of labelled pixels per value ``0..K`` over all
    training slices.  ``"balanced"``: ``w_k = N / (K_present * N_k)``.
    """
    lut = np.ones(n_classes + 1, dtype=np.float32)
    if class_weights == "balanced":
        c = np.zeros(n_classes + 1, dtype=np.float64)
        m = min(len(c), len(counts))
        c[:m] = counts[:m]
        c = c[1:]
        present = c > 0
        if present.any():
            total = c[present].sum()
            lut[1:][present] = (total / (present.sum() * c[present])).astype(np.float32)
    elif isinstance(class_weights, Mapping):
        for k, v in class_weights.items():
            if 0 < int(k) <= n_classes:
                lut[int(k)] = float(v)
    lut[0] = 0.0
    return lut


def training_weight_map(
    labels2d: np.ndarray,
    *,
    w0: float,
    sigma: float,
    lut: np.ndarray,
    object_class: int,
) -> np.ndarray:
    """The per-pixel loss weight the trainer uses for one labelled slice.

    ``lut[labels] + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on the background of
    the object class; unlabelled pixels (ignored by the loss) are 0.
    """
    lab = np.asarray(labels2d)
    k = len(lut) - 1
    clipped = np.where((lab >= 0) & (lab <= k), lab, 0)
    w = lut[clipped].astype(np.float32)
    if w0 > 0 and np.any(lab):
        instances = instances_from_mask(lab == object_class)
        border = border_weight_map(instances, w0, sigma, class_weights=None) - 1.0
        if np.any(border > 0):
            w += border.astype(np.float32)
    w[lab == 0] = 0.0
    return w


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
