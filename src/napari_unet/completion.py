"""The completion record of a zarr result written slice by slice or block by block.

The record is the array's ``napari_unet`` attribute: ``done`` (the slices written, as ranges) and
``complete``, set to true last; an interrupted result can then be told apart and finished. A
result written in YX blocks also has ``blocks``: the block size and, per unfinished slice, the
blocks written (row-major indices, as ranges); a slice whose blocks are all written joins ``done``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .slices import format_slices, parse_slices

__all__ = [
    "KEY",
    "BlockRecorder",
    "IncompleteResultError",
    "RecordedTarget",
    "SliceRecorder",
    "block_grid",
    "check_complete",
    "missing_blocks",
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
        self._coverage = _Coverage(shape[-2], shape[-1])

    def __setitem__(self, key: Any, value: Any) -> None:
        """Slice ``key`` (``...`` for a 2-D result), or a block ``(i, rows, columns)`` (with ``:`` first
        for probabilities); a slice is recorded once all its pixels are written."""
        parts = key if isinstance(key, tuple) else (key,)
        if self._channels and parts[0] == slice(None) and len(parts) > 1:
            parts = parts[1:]
        if self._is_2d:
            yx, z = (parts if parts != (Ellipsis,) else ()), 0
        else:
            yx, z = parts[1:], self._positions[int(parts[0])]
        target = (slice(None),) if self._channels else ()
        if self._is_2d:
            self._array[(*target, *yx) if yx else ...] = value
        else:
            self._array[(*target, z, *yx)] = value
        if not yx or self._coverage.add(z, yx):
            self._recorder.mark(z)

    def __getitem__(self, key: Any) -> Any:  # pragma: no cover - outputs are written only
        return self._array[key]


class _Coverage:
    """Which parts of each slice were written, as rectangles: is a slice whole yet?"""

    def __init__(self, height: int, width: int) -> None:
        self.hw = (int(height), int(width))
        self.rects: dict[int, list[tuple[int, int, int, int]]] = {}

    def add(self, z: int, yx: tuple[Any, ...]) -> bool:
        """Record block ``yx`` (two slices) of slice ``z``; True once the slice is covered."""
        (y0, y1, _), (x0, x1, _) = (s.indices(n) for s, n in zip(yx, self.hw))
        rects = self.rects.setdefault(z, [])
        rects.append((y0, y1, x0, x1))
        if sum((r[1] - r[0]) * (r[3] - r[2]) for r in rects) < self.hw[0] * self.hw[1]:
            return False
        ys = sorted({0, self.hw[0], *(r[0] for r in rects), *(r[1] for r in rects)})
        xs = sorted({0, self.hw[1], *(r[2] for r in rects), *(r[3] for r in rects)})
        cover = np.zeros((len(ys) - 1, len(xs) - 1), bool)
        for r in rects:  # union of possibly overlapping rectangles (after a retried slice)
            cover[ys.index(r[0]) : ys.index(r[1]), xs.index(r[2]) : xs.index(r[3])] = True
        if not cover.all():
            return False
        del self.rects[z]
        return True


def block_grid(hw: Sequence[int], block: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """The uniform grid of ``block``-sized rectangles ``(y0, y1, x0, x1)`` over ``hw``, row-major."""
    (h, w), (bh, bw) = (int(n) for n in hw), (int(n) for n in block)
    return [
        (y, min(y + bh, h), x, min(x + bw, w)) for y in range(0, h, bh) for x in range(0, w, bw)
    ]


def _blocks_done(record: Mapping[str, Any], block: Sequence[int], n_blocks: int) -> dict[int, set]:
    """Per slice, the blocks a record says were written (empty when its block size differs)."""
    blocks = record.get("blocks")
    if not isinstance(blocks, Mapping) or list(blocks.get("size") or []) != list(block):
        return {}
    done: dict[int, set] = {}
    for z, text in (blocks.get("done") or {}).items():
        try:
            done[int(z)] = set(parse_slices(text or None, n_blocks, "blocks"))
        except (ValueError, TypeError):  # a damaged entry: none of its blocks count
            continue
    return done


def missing_blocks(array: Any, block: Sequence[int]) -> list[tuple[int, int]] | None:
    """``(slice position, block index)`` of ``array`` not written yet, on the ``block`` grid.

    ``[]`` when complete; None without a record.  Slices recorded done have all their blocks.
    """
    slices = missing_slices(array)
    if slices is None:
        return None
    hw = tuple(int(s) for s in array.shape[-2:])
    n_blocks = len(block_grid(hw, block))
    done = _blocks_done(read_record(array) or {}, block, n_blocks)
    return [(z, b) for z in slices for b in range(n_blocks) if b not in done.get(z, ())]


class BlockRecorder(SliceRecorder):
    """Records the YX blocks of ``array`` as they are written (and, through them, the slices)."""

    def __init__(self, array: Any, record: Mapping[str, Any], block: Sequence[int]) -> None:
        super().__init__(array, record)
        self.block = [int(n) for n in block]
        self.n_blocks = len(block_grid(tuple(int(s) for s in array.shape[-2:]), self.block))
        self.blocks = _blocks_done(read_record(array) or {}, self.block, self.n_blocks)

    def mark_block(self, z: int, index: int) -> None:
        z = int(z)
        done = self.blocks.setdefault(z, set())
        done.add(int(index))
        if len(done) >= self.n_blocks:
            del self.blocks[z]
            self.mark(z)  # flushes now and then
        elif time.monotonic() - self._last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        blocks = {str(z): format_slices(sorted(b)) for z, b in sorted(self.blocks.items()) if b}
        self.record["blocks"] = {"size": self.block, "done": blocks}
        super().flush()

    def finish(self, info: Mapping[str, Any] | None = None) -> None:
        self.blocks = {}
        super().finish(info)
