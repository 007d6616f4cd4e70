"""Label arrays: the smallest dtype that holds them, and file values <-> classes.

A training labels array holds ``0`` (unlabelled) and classes ``1..K``; a
prediction holds ``1..K``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LabelValueError", "label_dtype", "smallest_unsigned_dtype"]

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
