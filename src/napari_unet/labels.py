"""Label arrays: the smallest dtype that holds them, and file values <-> classes.

Training labels hold 0 (unlabelled) and classes 1..K; a dense mask's file values map to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .slices import read_slice

__all__ = [
    "MAX_DENSE_VALUES",
    "MAX_SPARSE_CLASS",
    "LabelValueError",
    "MappedOutput",
    "SliceLabels",
    "SparseLabelsError",
    "class_lut",
    "dense_class_names",
    "dense_mapping",
    "label_dtype",
    "map_to_classes",
    "smallest_unsigned_dtype",
    "sparse_class_count",
]

_UNSIGNED = (np.uint8, np.uint16, np.uint32)


class LabelValueError(ValueError):
    """Label values that no unsigned 32-bit label image can hold."""


def label_dtype(max_value: int) -> np.dtype:
    """The smallest of uint8/uint16/uint32 that holds ``0..max_value`` (e.g. ``n_classes``)."""
    hi = int(max_value)
    if hi < 0:
        raise LabelValueError(f"labels must not be negative (got {hi})")
    for dt in _UNSIGNED:
        if hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise LabelValueError(f"label value {hi} does not fit in 32 bits")


def smallest_unsigned_dtype(data: np.ndarray) -> np.dtype:
    """The smallest of uint8/uint16/uint32 that holds every value of ``data``.

    Raises
    ------
    LabelValueError
        For negative or non-integer values, or values beyond uint32.
    """
    data = np.asarray(data)
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        if data.size and not np.all(np.mod(data, 1) == 0):
            raise LabelValueError("labels must be whole numbers")
    lo = data.min() if data.size else 0
    if lo < 0:
        raise LabelValueError(f"labels must not be negative (minimum is {lo})")
    return label_dtype(int(data.max()) if data.size else 0)


# --------------------------------------------------------------------------- file values <-> classes

#: sparse labels (0 = unlabelled, 1..K = classes) never hold a class above this
MAX_SPARSE_CLASS = 64

#: a dense class mask holds at most this many different values
MAX_DENSE_VALUES = 255


class SparseLabelsError(LabelValueError):
    """Labels that are not sparse classes ``1..K`` (0 = unlabelled): perhaps a dense mask."""


def map_to_classes(raw: np.ndarray, values: np.ndarray, dtype: Any = np.int32) -> np.ndarray:
    """File values -> classes: ``values[i]`` becomes ``i + 1``, any other value ``0``.

    ``values`` must be sorted and non-empty.
    """
    raw = np.asarray(raw)
    idx = np.minimum(np.searchsorted(values, raw), len(values) - 1)
    out = (idx + 1).astype(dtype, copy=False)
    out[values[idx] != raw] = 0
    return out


def dense_mapping(
    values: Iterable[int], known: Mapping[str, int] | None = None, where: str = "the file"
) -> dict[str, int]:
    """The mapping file value -> class ``1..K`` of a mask whose every value is a class.

    ``values`` are the values found on ``where``; a ``known`` mapping (from a
    checkpoint) is kept as it is and must cover them.

    Raises
    ------
    LabelValueError
        For fewer than two values, too many values, or values ``known`` lacks.
    """
    found = sorted({int(v) for v in values})
    if known:
        extra = sorted(set(found) - {int(v) for v in known})
        if extra:
            raise LabelValueError(
                f"labels hold value(s) {extra[:5]} that the checkpoint's label_mapping "
                f"({', '.join(sorted(known, key=int))}) does not know"
            )
        mapping = {str(int(v)): int(c) for v, c in known.items()}
        ordered = sorted(mapping, key=int)
        if [mapping[v] for v in ordered] != list(range(1, len(ordered) + 1)):
            raise LabelValueError("the checkpoint's label_mapping is not a sorted 1..K mapping")
        return mapping
    if len(found) < 2:
        raise LabelValueError(
            f"the labels on {where} hold only the value(s) {found}; "
            "a dense mask needs at least two values (classes)"
        )
    if len(found) > MAX_DENSE_VALUES:
        raise LabelValueError(
            f"the labels hold {len(found)} different values; a class mask has a few "
            "(is this an instance segmentation?)"
        )
    return {str(v): i + 1 for i, v in enumerate(found)}


def dense_class_names(mapping: Mapping[str, int]) -> list[str]:
    """Default names of the classes of a dense mapping: ``"value V"`` in class order."""
    return [f"value {v}" for v in sorted(mapping, key=lambda v: mapping[v])]


def sparse_class_count(values: Iterable[int], where: str = "any slice") -> int:
    """The largest class of sparse labels (``0`` = unlabelled, ``1..K`` = classes).

    Raises
    ------
    SparseLabelsError
        When nothing is labelled or the values do not look like classes ``1..K``.
    LabelValueError
        For negative values.
    """
    found = sorted({int(v) for v in values})
    nonzero = [v for v in found if v != 0]
    if not nonzero:
        raise SparseLabelsError(f"no labelled pixels on {where} (0 = unlabelled)")
    if found[0] < 0:
        raise LabelValueError("labels must not be negative (0 = unlabelled)")
    hi = nonzero[-1]
    if hi > MAX_SPARSE_CLASS or (hi > 8 and len(nonzero) < hi / 2):
        raise SparseLabelsError(
            f"labels hold the values {found[:6]}{'...' if len(found) > 6 else ''}, "
            "not classes 1..K (0 = unlabelled)"
        )
    return hi


def class_lut(label_mapping: Mapping[str, int] | None, n_classes: int) -> np.ndarray | None:
    """Lookup table class -> file value from a checkpoint's ``label_mapping`` (or None)."""
    if not label_mapping:
        return None
    lut = np.arange(n_classes + 1, dtype=np.int64)
    for value, cls in label_mapping.items():
        if 1 <= int(cls) <= n_classes:
            lut[int(cls)] = int(value)
    if lut.min() < 0:
        raise LabelValueError("the checkpoint's label_mapping maps a class to a negative value")
    return lut.astype(label_dtype(int(lut.max())))


class SliceLabels:
    """Read-only, lazy view of a ``(Z, H, W)`` labels array for training.

    Slices not in ``keep`` read as zeros (unlabelled) without touching the file;
    with ``values`` (a dense mask) file value ``values[i]`` reads as class
    ``i + 1`` and values outside the mapping as ``0``.  It has ``shape``,
    ``dtype``, ``ndim`` and ``__getitem__(z)``, all the Trainer reads.
    """

    def __init__(
        self, labels: Any, keep: Iterable[int] | None = None, values: Sequence[int] | None = None
    ) -> None:
        self._labels = labels
        self.shape = tuple(int(s) for s in labels.shape)
        if len(self.shape) != 3:
            raise ValueError(f"SliceLabels needs a (Z, H, W) array, got shape {self.shape}")
        self.ndim = 3
        self._keep = None if keep is None else frozenset(int(z) for z in keep)
        self._values = None if values is None else np.asarray(sorted(values))
        if self._values is None:
            self.dtype = np.dtype(labels.dtype)
        else:  # classes 1..K
            self.dtype = label_dtype(len(self._values))
        self._zero = np.zeros((), dtype=self.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def map_values(self, raw: np.ndarray) -> np.ndarray:
        """File values -> classes ``1..K`` (``0`` for values outside the mapping)."""
        if self._values is None:
            return raw
        return map_to_classes(raw, self._values, self.dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            z = int(index)
            if z < 0:
                z += self.shape[0]
            if not 0 <= z < self.shape[0]:
                raise IndexError(f"slice {index} out of range for {self.shape[0]} slices")
            if self._keep is not None and z not in self._keep:
                return np.broadcast_to(self._zero, self.shape[1:])
            return self.map_values(read_slice(self._labels, z))
        if index is Ellipsis or (isinstance(index, slice) and index == slice(None)):
            return np.stack([self[z] for z in range(self.shape[0])])
        if isinstance(index, tuple) and index and isinstance(index[0], (int, np.integer)):
            return self[int(index[0])][index[1:]]
        raise TypeError(f"SliceLabels supports integer slice indexing, got {index!r}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[...]
        return arr if dtype is None else arr.astype(dtype)


class MappedOutput:
    """An output array that maps class values through a lookup table when written.

    ``predict_tiled(out=MappedOutput(target, lut))`` writes ``lut[classes]`` into
    ``target`` (a ``class_lut`` maps classes ``1..K`` back to file values, e.g. 0/255).
    """

    def __init__(self, target: Any, lut: np.ndarray) -> None:
        self._target = target
        self._lut = np.asarray(lut)
        self.shape = tuple(int(s) for s in target.shape)
        self.dtype = np.dtype(target.dtype)
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target[key] = self._lut[np.asarray(value)]

    def __getitem__(self, key: Any) -> Any:
        return self._target[key]
