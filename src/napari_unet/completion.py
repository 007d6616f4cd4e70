"""The completion record of a zarr result written slice by slice: which slices are done, and when all are.

The record is the array's ``napari_unet`` attribute: ``done`` (the slices written, as ranges) and
``complete``, set to true last; an interrupted result can then be told apart and finished.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .slices import format_slices, parse_slices

__all__ = [
    "KEY",
    "IncompleteResultError",
    "RecordedTarget",
    "SliceRecorder",
    "check_complete",
    "missing_slices",
    "read_record",
    "start_record",
]

#: the attribute holding the record
KEY = "napari_unet"
#: the record of done slices is rewritten at most this often (and when the result is complete)
FLUSH_EVERY_S = 1.0


class IncompleteResultError(ValueError):
    """A result's completion record says some of its slices were never written."""


def _n_slices(array: Any) -> int:
    shape = tuple(int(s) for s in array.shape)
    return shape[-3] if len(shape) >= 3 else 1


def read_record(array: Any) -> dict[str, Any] | None:
    """The record of ``array`` (a copy), or None when it has none (not written slice by slice)."""
    attrs = getattr(array, "attrs", None)
    if attrs is None:
        return None
    try:
        record = attrs.get(KEY)
    except Exception:  # unreadable attributes: treated as no record
        return None
    if not isinstance(record, Mapping) or "complete" not in record:
        return None
    return dict(record)


def start_record(array: Any, info: Mapping[str, Any]) -> dict[str, Any]:
    """Write a record "nothing done yet" (with ``info``) into a new result; return it."""
    record = {**info, "complete": False, "done": ""}
    array.attrs[KEY] = record
    return record


def missing_slices(array: Any) -> list[int] | None:
    """Slice positions of ``array`` not written yet (``[]`` when complete; None without a record).

    The slice axis is the third from the end (``(Z, Y, X)`` or ``(C, Z, Y, X)``).
    """
    record = read_record(array)
    if record is None:
        return None
    n = _n_slices(array)
    if record.get("complete") is True:
        return []
    try:
        done = set(parse_slices(record.get("done") or None, n, "done"))
    except (ValueError, TypeError):  # a damaged record: nothing counts as done
        done = set()
    return [z for z in range(n) if z not in done]


def describe_missing(array: Any, missing: Sequence[int]) -> str:
    """ "slice(s) 3-5 (of 8) were never written", in the image's slice numbers when recorded."""
    record = read_record(array) or {}
    names = record.get("slices")
    shown = list(missing)
    if isinstance(names, list) and len(names) == _n_slices(array):
        shown = [int(names[z]) for z in missing]
    return f"slice(s) {format_slices(sorted(shown))} of {_n_slices(array)} were never written"


def check_complete(
    array: Any, positions: Sequence[int] | None = None, what: str = "result"
) -> None:
    """Raise :class:`IncompleteResultError` when slices of ``array`` (among ``positions``) are missing."""
    missing = missing_slices(array)
    if missing and positions is not None:
        wanted = {int(z) for z in positions}
        missing = [z for z in missing if z in wanted]
    if missing:
        raise IncompleteResultError(
            f"{what} is incomplete: {describe_missing(array, missing)} (the prediction was "
            "interrupted); finish it with 'napari-unet predict ... --resume'"
        )


class SliceRecorder:
    """Records the slices of ``array`` as they are written; :meth:`finish` marks it complete."""

    def __init__(self, array: Any, record: Mapping[str, Any]) -> None:
        self.array = array
        self.record = dict(record)
        n = _n_slices(array)
        missing = set(missing_slices(array) or [])
        self.done = set(range(n)) - missing if KEY in array.attrs else set()
        self._last = time.monotonic()

    def mark(self, z: int) -> None:
        self.done.add(int(z))
        if time.monotonic() - self._last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Write the done slices into the record (atomically: zarr rewrites the metadata file)."""
        self.record["done"] = format_slices(sorted(self.done)) if self.done else ""
        self.array.attrs[KEY] = self.record
        self._last = time.monotonic()

    def finish(self, info: Mapping[str, Any] | None = None) -> None:
        """Mark the result complete (the last write of a result)."""
        self.done = set(range(_n_slices(self.array)))
        self.record.update(info or {})
        self.record["complete"] = True
        self.flush()


class RecordedTarget:
    """A ``predict_tiled`` output writing slice ``i`` into ``array`` at ``positions[i]``, recorded.

    ``channels``: the array is ``(C, Z, Y, X)`` probabilities (written as ``out[:, i]``).
    """

    def __init__(
        self, array: Any, positions: Sequence[int], recorder: SliceRecorder, channels: bool
    ) -> None:
        self._array = array
        self._positions = [int(z) for z in positions]
        self._recorder = recorder
        self._channels = channels
        shape = tuple(int(s) for s in array.shape)
        self._is_2d = len(shape) == (3 if channels else 2)
        if self._is_2d:
            self.shape = shape
        else:
            z_axis = 1 if channels else 0
            self.shape = (*shape[:z_axis], len(self._positions), *shape[z_axis + 1 :])
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._is_2d:
            self._array[...] = value
            self._recorder.mark(0)
            return
        i = key[1] if self._channels else key
        z = self._positions[int(i)]
        if self._channels:
            self._array[:, z] = value
        else:
            self._array[z] = value
        self._recorder.mark(z)

    def __getitem__(self, key: Any) -> Any:  # pragma: no cover - outputs are written only
        return self._array[key]
