"""The live-label cache: labelled slices read as the user paints, with their loss weights.

Labelled slices are re-checked (pixel count and checksum) and the others scanned round-robin;
NaN/inf image pixels are left out of the loss (treated as unlabelled).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import label_dtype
from ..losses import uses_pixel_weights
from ..slices import read_slice
from ..weightmap import border_term, class_weight_lut
from .config import TrainConfig

__all__ = [
    "MAX_NONFINITE_FRACTION",
    "LabelledSlice",
    "LiveLabels",
    "find_labelled_slices",
    "signature",
]

#: training refuses images whose training slices have more NaN/inf pixels than this fraction
MAX_NONFINITE_FRACTION = 0.10
#: pixels of not-yet-labelled slices checked per live re-scan
_SCAN_PIXEL_BUDGET = 64 * 2**20
#: store the flat indices of labelled pixels when fewer than this fraction is labelled
_SPARSE_FRACTION = 0.25


@dataclass
class LabelledSlice:
    """Cached training data of one labelled slice."""

    z: int
    image: np.ndarray  # raw dtype (H, W)
    labels: np.ndarray  # label_dtype(K) (H, W), 0 = unlabelled
    signature: tuple[int, int]
    n_labelled: int
    class_counts: np.ndarray  # (K + 1,)
    coords: np.ndarray | None  # flat indices of labelled pixels (sparse slices)
    border: np.ndarray | None = None  # float32 border term of the weight map
    raw_signature: tuple[int, int] | None = None  # of the live array as last read
    nonfinite: np.ndarray | None = None  # bool (H, W): NaN/inf image pixels (then filled)

    @property
    def n_nonfinite(self) -> int:
        return 0 if self.nonfinite is None else int(np.count_nonzero(self.nonfinite))


def signature(labels: np.ndarray) -> tuple[int, int]:
    """``(labelled pixel count, adler32 checksum)`` of a labels slice."""
    arr = np.ascontiguousarray(labels)
    return int(np.count_nonzero(arr)), zlib.adler32(memoryview(arr).cast("B"))


def mask_nonfinite(
    image: np.ndarray, labels: np.ndarray, fill: float, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``image`` with its NaN/inf pixels (or ``mask``) set to ``fill``, ``labels`` 0 there,
    and the mask (None when every pixel is finite)."""
    if mask is None and image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        mask = bad if bad.any() else None
    if mask is None:
        return image, labels, None
    image = np.where(mask, np.asarray(fill, image.dtype), image)
    labels = np.where(mask, 0, labels).astype(labels.dtype, copy=False)
    return image, labels, mask


def find_labelled_slices(labels: Any, n_slices: int) -> list[int]:
    """The slices of ``labels`` with at least one labelled (non-zero) pixel."""
    return [z for z in range(n_slices) if np.count_nonzero(read_slice(labels, z))]


class LiveLabels:
    """The training slices of a labels array that may be painted while training runs.

    Parameters
    ----------
    image, labels : array_like
        The stack and its live labels (``(Z, H, W)`` or ``(H, W)``).
    n_classes, object_class : int
        Classes ``1..n_classes``; the class whose objects make the border term.
    config : TrainConfig
        Its ``loss``, ``w0``, ``sigma`` and ``class_weights`` make the loss weights (the
        border term only for a loss that uses a weight map).
    excluded : iterable of int
        Slices never used for training (the validation slices).
    """

    def __init__(
        self,
        image: Any,
        labels: Any,
        *,
        n_classes: int,
        object_class: int,
        config: TrainConfig,
        excluded: Iterable[int] = (),
        fill: float = 0.0,
    ) -> None:
        self.image = image
        self.fill = float(fill)  # the raw value NaN/inf pixels become (normalises to 0)
        self.labels = labels
        self.n_slices = int(labels.shape[0]) if len(labels.shape) == 3 else 1
        self.slice_shape: tuple[int, int] = (int(labels.shape[-2]), int(labels.shape[-1]))
        self.n_classes = int(n_classes)
        self.object_class = int(object_class)
        self._config = config
        self._excluded = {int(z) for z in excluded}
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._force_full = False
        self._cursor = 0
        self._warned_bad_labels = False
        self._warned_empty = False
        self.slices: dict[int, LabelledSlice] = {}
        #: NaN/inf pixels of the slices loaded by :meth:`load`, and their pixel count
        self.nonfinite_at_start: dict[int, int] = {}
        self.pixels_at_start = 0
        self.class_lut = np.ones(self.n_classes + 1, dtype=np.float32)

    # ------------------------------------------------------------------ reading
    def labels_slice(self, z: int) -> np.ndarray:
        return read_slice(self.labels, z)

    def image_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` of the image (from the cache when it is a training slice)."""
        cached = self.slices.get(z)
        return cached.image if cached is not None else read_slice(self.image, z)

    def load(self, raw: Mapping[int, np.ndarray]) -> None:
        """Fill the cache with the given raw labels slices (at the start of training)."""
        for z, arr in raw.items():
            labels, _ = self.clean(z, arr)
            entry = self._cache_entry(z, labels, cached=None)
            entry.raw_signature = signature(np.asarray(arr))
            self.pixels_at_start += entry.labels.size
            if entry.n_nonfinite:
                self.nonfinite_at_start[z] = entry.n_nonfinite
            if entry.n_labelled:  # all its labels may lie on NaN pixels
                self.slices[z] = entry
        self._update_class_lut()

    def clean(self, z: int, raw: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Copy a labels slice into the cache dtype; classes outside 1..K become 0."""
        arr = np.array(raw, copy=True)
        warning = None
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > self.n_classes:
                arr[(arr < 0) | (arr > self.n_classes)] = 0
                warning = (
                    f"slice {z}: labels outside 1..{self.n_classes} are ignored "
                    f"(found values {lo}..{hi}); the model predicts {self.n_classes} classes"
                )
        return arr.astype(label_dtype(self.n_classes), copy=False), warning

    def _cache_entry(
        self, z: int, labels: np.ndarray, cached: LabelledSlice | None
    ) -> LabelledSlice:
        if cached is None:
            image, mask = read_slice(self.image, z), None
        else:  # already filled: mask the new labels where the image was not finite
            image, mask = cached.image, cached.nonfinite
        image, labels, mask = mask_nonfinite(image, labels, self.fill, mask)
        sig = signature(labels)
        n = sig[0]
        counts = np.bincount(labels.ravel(), minlength=self.n_classes + 1)[: self.n_classes + 1]
        coords = None
        if n and n < _SPARSE_FRACTION * labels.size:
            coords = np.flatnonzero(labels).astype(np.int32 if labels.size < 2**31 else np.int64)
        border = None  # the border term alone; class weights are applied per patch
        cfg = self._config
        if n and uses_pixel_weights(cfg.loss):  # dice / jaccard alone: no weight map
            border = border_term(labels, self.object_class, cfg.w0, cfg.sigma)
        entry = LabelledSlice(z, image, labels, sig, n, counts.astype(np.int64), coords, border)
        entry.nonfinite = mask
        return entry

    def _update_class_lut(self) -> None:
        counts = sum((s.class_counts for s in self.slices.values()), np.zeros(1, np.int64))
        self.class_lut = class_weight_lut(counts, self.n_classes, self._config.class_weights)

    # ------------------------------------------------------------------ facts
    @property
    def labelled_slices(self) -> list[int]:
        return sorted(self.slices)

    @property
    def n_labelled_pixels(self) -> int:
        return int(sum(s.n_labelled for s in self.slices.values()))

    def weight_map(self, z: int) -> np.ndarray:
        """Class weights plus the border term of training slice ``z``, 0 where unlabelled.

        For a loss without a cross-entropy term (``"dice"``, ``"jaccard"``: no weight
        map, :func:`napari_unet.losses.uses_pixel_weights`) the border term is never
        computed, and this is the class weights alone.
        """
        if z not in self.slices:
            raise ValueError(
                f"slice {z} is not a training slice (labelled slices: {self.labelled_slices})"
            )
        s = self.slices[z]
        weights = self.class_lut[s.labels]
        if s.border is not None:
            weights = weights + s.border
            weights[s.labels == 0] = 0.0  # the loss ignores them anyway
        return weights.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ live updates
    def notify(self, slices: Iterable[int] | None) -> None:
        """Mark slices as painted (thread-safe); ``None`` = rescan all at the next check."""
        with self._lock:
            if slices is None:
                self._force_full = True
            else:
                self._pending.update(int(z) for z in slices if 0 <= int(z) < self.n_slices)

    @property
    def notified(self) -> bool:
        """Whether :meth:`notify` was called since the last :meth:`rescan`."""
        return bool(self._pending) or self._force_full

    def rescan(self, full: bool = False) -> tuple[list[int], list[str]]:
        """Re-check the live labels; return (changed slices, warnings)."""
        changed: list[int] = []
        warnings: list[str] = []
        new_slices = dict(self.slices)
        for z in sorted(self._slices_to_check(full)):
            if self._reload(z, new_slices, warnings):
                changed.append(z)
        if not changed:
            return changed, warnings
        if not new_slices:
            if not self._warned_empty:
                warnings.append(
                    "all training labels were erased: training continues on the last "
                    "labels; paint at least one slice"
                )
                self._warned_empty = True
            return [], warnings
        self._warned_empty = False
        self.slices = new_slices
        self._update_class_lut()
        return changed, warnings

    def _slices_to_check(self, full: bool) -> set[int]:
        """The cached and notified slices, plus all (``full``) or a budget of the others."""
        with self._lock:
            pending, self._pending = self._pending, set()
            full = full or self._force_full
            self._force_full = False
        to_check = set(self.slices) | pending
        h, w = self.slice_shape
        budget = max(1, _SCAN_PIXEL_BUDGET // max(1, h * w))
        if full or budget >= self.n_slices:
            to_check |= set(range(self.n_slices))
        else:
            for _ in range(budget):
                to_check.add(self._cursor)
                self._cursor = (self._cursor + 1) % self.n_slices
        return to_check - self._excluded

    def _reload(self, z: int, new_slices: dict[int, LabelledSlice], warnings: list[str]) -> bool:
        """Re-read slice ``z`` into ``new_slices``; return whether its labels changed."""
        arr = np.asarray(self.labels_slice(z))
        cached = new_slices.get(z)
        if cached is None and not np.any(arr):
            return False
        raw_sig = signature(arr)
        if cached is not None and raw_sig in (cached.signature, cached.raw_signature):
            return False
        labels, warn = self.clean(z, arr)
        if warn and not self._warned_bad_labels:
            warnings.append(warn)
            self._warned_bad_labels = True
        if cached is not None and signature(labels) == cached.signature:
            cached.raw_signature = raw_sig
            return False
        if not np.any(labels):
            new_slices.pop(z, None)
            return True
        entry = self._cache_entry(z, labels, cached)
        if not entry.n_labelled:  # every label lies on a NaN/inf pixel
            return new_slices.pop(z, None) is not None
        entry.raw_signature = raw_sig
        new_slices[z] = entry
        return True
