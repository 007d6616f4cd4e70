"""Per-pixel steps of prediction: normalisation of the input, labels from logits or probabilities."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["argmax_channels_torch", "labels_from_probs", "normalise"]


def argmax_channels_torch(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``argmax + 1`` over dim 1 of ``(N, C, H, W)`` as ``dtype`` (first maximum on ties).

    An elementwise running maximum over the channels: much faster on the CPU
    than ``torch.argmax(dim=1)`` (a strided reduction over few channels) and
    it writes the small label dtype directly.
    """
    best = x[:, 0]
    labels = torch.ones(best.shape, dtype=dtype, device=x.device)
    for c in range(1, x.shape[1]):
        value = x[:, c]
        better = value > best
        best = torch.where(better, value, best)
        labels.masked_fill_(better, c + 1)
    return labels


def labels_from_probs(probs: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``argmax(probs, axis=0) + 1`` as ``dtype`` (first maximum on ties), channel by channel."""
    best = probs[0].copy()
    labels = np.ones(best.shape, dtype)
    for c in range(1, probs.shape[0]):
        better = probs[c] > best
        np.copyto(best, probs[c], where=better)
        labels[better] = c + 1
    return labels


def normalise(raw: np.ndarray, mean: float, std: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``(raw - mean) / std`` in float32, NaN/inf set to 0 (the mean); and where they were."""
    data = raw.astype(np.float32, copy=True)
    data -= np.float32(mean)
    data /= np.float32(std)
    bad = None
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            data[bad] = 0.0
        else:
            bad = None
    return data, bad
