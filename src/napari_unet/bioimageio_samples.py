"""The test tensors and the cover image of a bioimage.io package, cut from the user's stack.

The test input is a centre crop of one slice (the smallest valid input for an output of
about :data:`TEST_OUTPUT_SIDE` pixels), the test output is what our own net computes for it
after the package's preprocessing, and the cover shows both side by side (2:1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .model import UNet
from .normalization import normalize
from .slices import array_shape, read_block

__all__ = [
    "TEST_OUTPUT_SIDE",
    "ZMUV_EPS",
    "cover_image",
    "net_input",
    "probabilities",
    "test_input",
]

#: side of the test output (pixels) aimed at; the test input is the smallest valid input for it
TEST_OUTPUT_SIDE = 128
#: ``eps`` of bioimage.io's per-sample ``zero_mean_unit_variance``: ``(x - mean) / (std + eps)``
ZMUV_EPS = 1e-6


def _window(n: int, side: int) -> tuple[slice, tuple[int, int]]:
    """The centred ``side``-long window of an axis of length ``n``, and the padding it needs."""
    if n >= side:
        start = (n - side) // 2
        return slice(start, start + side), (0, 0)
    return slice(0, n), ((side - n) // 2, side - n - (side - n) // 2)


def test_input(model: UNet, image: Any, z: int | None) -> tuple[np.ndarray, str]:
    """A centre crop of slice ``z`` (default the middle one) of ``image`` (``(Z, H, W)`` or
    ``(H, W)``; only the crop is read), the smallest valid input for a ~TEST_OUTPUT_SIDE
    output, reflect-padded when the slice is smaller, as ``(1, 1, s, s)``; and its origin."""
    if image is None:
        from .sample_data import synthetic_em

        image = synthetic_em((256, 256), seed=0)[0]
        origin = "a synthetic EM slice (no image was given)"
    else:
        origin = "the user's stack"
    shape = array_shape(image)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"the test image must be (Z, H, W) or (H, W), got shape {shape}")
    prefix: tuple[int, ...] = ()
    if len(shape) == 3:
        z = shape[0] // 2 if z is None else int(z)
        if not 0 <= z < shape[0]:
            raise ValueError(f"test slice {z} is outside the stack (0..{shape[0] - 1})")
        prefix, origin = (z,), f"slice {z} of {origin}"
    extra = model.context if model.padding == "valid" else 0
    side = model.valid_input_size(min(TEST_OUTPUT_SIDE, *shape[-2:]) + extra)
    (rows, pad_y), (cols, pad_x) = (_window(n, side) for n in shape[-2:])
    crop = np.asarray(read_block(image, (*prefix, rows, cols)))
    if crop.dtype.kind not in "biuf":
        raise ValueError(f"the test image has dtype {crop.dtype}: expected numbers")
    origin += f", rows {rows.start}-{rows.stop - 1}, columns {cols.start}-{cols.stop - 1}"
    if sum(pad_y) or sum(pad_x):
        crop = np.pad(crop, (pad_y, pad_x), mode="reflect" if min(crop.shape) > 1 else "edge")
        origin += ", reflect-padded to the network's smallest valid input"
    return np.ascontiguousarray(crop)[None, None], origin


def net_input(crop: np.ndarray, stats: Mapping[str, float] | None) -> np.ndarray:
    """``crop`` normalised as the package's preprocessing does."""
    if stats is not None:
        return normalize(crop, dict(stats))
    data = crop.astype(np.float32)
    return (data - data.mean()) / (data.std() + np.float32(ZMUV_EPS))


@torch.no_grad()
def probabilities(model: UNet, net_input: np.ndarray) -> np.ndarray:
    logits = model(torch.from_numpy(net_input))
    return torch.softmax(logits.float(), dim=1).numpy()


def _hex_rgb(color: str) -> tuple[int, int, int]:
    text = color.lstrip("#")
    try:
        return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        return (255, 255, 255)


def cover_image(crop: np.ndarray, probs: np.ndarray, colors: Sequence[str]) -> np.ndarray:
    """A 2:1 RGB image: the test input (its part under the output) | the predicted classes."""
    h, w = probs.shape[-2:]
    top, left = (crop.shape[-2] - h) // 2, (crop.shape[-1] - w) // 2
    raw = crop[0, 0, top : top + h, left : left + w].astype(np.float64)
    lo, hi = np.percentile(raw, (1, 99)) if raw.size else (0.0, 1.0)
    gray = np.clip((raw - lo) / max(hi - lo, 1e-12), 0, 1)
    left_img = np.repeat((gray * 255).astype(np.uint8)[..., None], 3, axis=2)
    lut = np.array([_hex_rgb(c) for c in colors], dtype=np.float64)
    classes = lut[np.argmax(probs[0], axis=0)]
    right_img = (0.45 * gray[..., None] * 255 + 0.55 * classes).astype(np.uint8)
    side = min(h, w)
    image = np.concatenate([left_img[:side, :side], right_img[:side, :side]], axis=1)
    repeat = max(1, 256 // max(side, 1))  # covers of at least 256 px height read well
    return np.repeat(np.repeat(image, repeat, axis=0), repeat, axis=1)
