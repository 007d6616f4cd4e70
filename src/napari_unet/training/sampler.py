"""Training patches: their size for a given network, and sampling them from the labelled slices.

A slice is chosen in proportion to its labelled pixels; most patches are centred near a labelled pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..model import UNet
from .live_labels import LabelledSlice

__all__ = [
    "DEFAULT_SAME_PATCH_CPU",
    "DEFAULT_SAME_PATCH_CUDA",
    "DEFAULT_VALID_OUTPUT",
    "BatchSpec",
    "min_patch_size",
    "resolve_patch_size",
    "sample_batch",
    "shrink_after_oom",
    "smaller_patch_size",
]

#: default input patch size of a same-padded net ("small" preset) on a CPU (or MPS) ...
DEFAULT_SAME_PATCH_CPU = 128
#: ... and on a CUDA GPU
DEFAULT_SAME_PATCH_CUDA = 256
#: default *output* tile of a valid-padded net (the paper's 388 -> 572 input)
DEFAULT_VALID_OUTPUT = 388
#: tries to find a patch with labelled output pixels (when no patch of the batch has any yet)
_ATTEMPTS = 10


# --------------------------------------------------------------------------- patch size


def resolve_patch_size(
    model: UNet,
    requested: int | None,
    slice_shape: tuple[int, int],
    *,
    cuda: bool,
    crop: int | None = None,
) -> int:
    """The sampled patch side for ``model``: ``requested`` (or the default), rounded up
    to a size the network accepts and capped to what the slices need; at least the
    augmentation's random ``crop`` (which is then the network input)."""
    if crop is not None:
        try:
            model.output_size(int(crop))
        except ValueError as exc:
            raise ValueError(
                f"augmentation.crop_size={crop} is the network input size and must be "
                f"accepted by the model: {exc}"
            ) from None
    size = _patch_side(model, requested, slice_shape, cuda)
    return size if crop is None else max(size, int(crop))


def _patch_side(
    model: UNet, requested: int | None, slice_shape: tuple[int, int], cuda: bool
) -> int:
    h, w = slice_shape
    if model.padding == "same":
        if requested is None:
            requested = DEFAULT_SAME_PATCH_CUDA if cuda else DEFAULT_SAME_PATCH_CPU
        size = int(model.valid_input_size(int(requested)))
        # no point in patches much larger than the slices
        return min(size, int(model.valid_input_size(max(h, w))))
    if requested is None:
        size = int(model.valid_input_size(model.context + DEFAULT_VALID_OUTPUT))
    else:
        size = int(model.valid_input_size(int(requested)))
    return min(size, int(model.valid_input_size(max(h, w) + model.context)))


def min_patch_size(model: UNet) -> int:
    """The smallest patch worth training on (after running out of memory)."""
    if model.padding == "same":
        return int(model.valid_input_size(max(32, model.size_multiple)))
    return int(model.valid_input_size(model.context + 16))


def smaller_patch_size(model: UNet, input_size: int) -> int | None:
    """About half of ``input_size`` (of the output, for valid padding), or ``None``
    when the patch is already the smallest."""
    smallest = min_patch_size(model)
    if model.padding == "same":
        new = int(model.valid_input_size(max(smallest, input_size // 2)))
    else:
        out = int(model.output_size(input_size))
        new = int(model.valid_input_size(max(smallest, model.context + out // 2)))
    return new if new < input_size else None


def shrink_after_oom(
    model: UNet, batch_size: int, patch_size: int, input_size: int
) -> tuple[int, int, str]:
    """After running out of memory: half the batch, else about half the patch (and a message).

    Raises ``RuntimeError`` when the batch is 1 and the patch already the smallest.
    """
    if batch_size > 1:
        batch_size = max(1, batch_size // 2)
        return batch_size, patch_size, f"CUDA out of memory: retrying with batch {batch_size}"
    new = smaller_patch_size(model, input_size)
    if new is None:
        raise RuntimeError(
            f"CUDA out of memory even with batch 1 and the smallest patch ({patch_size} px): "
            "free GPU memory (close other programs), use a smaller model or train on the CPU "
            "(device='cpu')"
        )
    return 1, new, f"CUDA out of memory: retrying with batch 1 and patch {new}"


# --------------------------------------------------------------------------- extraction


def reflect_indices(start: int, size: int, n: int) -> np.ndarray:
    """Indices ``start .. start+size-1`` mirrored into ``0..n-1`` (reflect, no edge repeat)."""
    idx = np.arange(start, start + size)
    if n == 1:
        return np.zeros(size, dtype=np.intp)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx).astype(np.intp)


def extract(arr: np.ndarray, y0: int, x0: int, size: int, mirror: bool) -> np.ndarray:
    """A ``size x size`` window at ``(y0, x0)``; outside the array: mirrored or zero."""
    h, w = arr.shape
    if y0 >= 0 and x0 >= 0 and y0 + size <= h and x0 + size <= w:
        return arr[y0 : y0 + size, x0 : x0 + size]
    if mirror:
        return arr[np.ix_(reflect_indices(y0, size, h), reflect_indices(x0, size, w))]
    out = np.zeros((size, size), dtype=arr.dtype)
    ys, ye = max(y0, 0), min(y0 + size, h)
    xs, xe = max(x0, 0), min(x0 + size, w)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
    return out


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class BatchSpec:
    """What a batch is made of: sizes, normalisation and loss weights."""

    batch: int
    patch: int  # input side of a sampled patch
    out_size: int  # output side of the network for the input it gets
    normalization: Mapping[str, float]
    class_lut: np.ndarray | None  # None: no weight maps (the Dice loss)
    oversampling: float  # probability of centring a patch near a labelled pixel

    @property
    def margin(self) -> int:
        return (self.patch - self.out_size) // 2


def sample_batch(
    slices: Sequence[LabelledSlice], rng: np.random.Generator, spec: BatchSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``spec.batch`` patches: image float32 (B,1,P,P), labels (B,P,P), weights or None."""
    b, p = spec.batch, spec.patch
    weights_of = np.array([s.n_labelled for s in slices], dtype=np.float64)
    weights_of /= weights_of.sum()
    mean, std = spec.normalization["mean"], spec.normalization["std"]
    images = np.empty((b, 1, p, p), dtype=np.float32)
    labels = np.empty((b, p, p), dtype=np.int64)
    weights = np.empty((b, p, p), dtype=np.float32) if spec.class_lut is not None else None
    any_labelled = False
    for i in range(b):
        s, y0, x0, lab, has = _choose_patch(slices, weights_of, rng, spec, any_labelled)
        any_labelled |= has
        img = extract(s.image, y0, x0, p, mirror=True)
        np.subtract(img, mean, out=images[i, 0], casting="unsafe")
        images[i, 0] /= std
        labels[i] = lab
        if weights is not None and spec.class_lut is not None:
            wmap = spec.class_lut[lab]
            if s.border is not None:
                wmap = wmap + extract(s.border, y0, x0, p, mirror=False)
            weights[i] = wmap
    return images, labels, weights


def _choose_patch(
    slices: Sequence[LabelledSlice],
    probabilities: np.ndarray,
    rng: np.random.Generator,
    spec: BatchSpec,
    any_labelled: bool,
) -> tuple[LabelledSlice, int, int, np.ndarray, bool]:
    """A patch ``(slice, y0, x0, labels, has labelled output)``; until one patch of the
    batch has labelled output pixels, up to ``_ATTEMPTS`` tries to find one."""
    m, out = spec.margin, spec.out_size
    for attempt in range(_ATTEMPTS):
        s = slices[int(rng.choice(len(slices), p=probabilities))]
        y0, x0 = _patch_origin(s, rng, spec)
        lab = extract(s.labels, y0, x0, spec.patch, mirror=False)
        has = bool(np.any(lab[m : m + out, m : m + out]))
        if has or any_labelled or attempt == _ATTEMPTS - 1:
            break
    return s, y0, x0, lab, has


def _patch_origin(s: LabelledSlice, rng: np.random.Generator, spec: BatchSpec) -> tuple[int, int]:
    """Top-left corner of a patch: near a random labelled pixel, or anywhere."""
    h, w = s.labels.shape
    patch, out = spec.patch, spec.out_size
    if rng.random() >= spec.oversampling:
        y0 = int(rng.integers(0, max(h - out, 0) + 1)) - spec.margin
        x0 = int(rng.integers(0, max(w - out, 0) + 1)) - spec.margin
        return y0, x0
    if s.coords is not None:
        flat = int(s.coords[rng.integers(len(s.coords))])
    else:
        while True:  # dense labels: rejection sampling is fast
            flat = int(rng.integers(h * w))
            if s.labels.flat[flat]:
                break
    cy, cx = divmod(flat, w)
    jitter = max(0, out // 4)
    cy += int(rng.integers(-jitter, jitter + 1))
    cx += int(rng.integers(-jitter, jitter + 1))
    return cy - patch // 2, cx - patch // 2
