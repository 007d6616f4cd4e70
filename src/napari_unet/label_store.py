"""The on-disk training labels of a big stack: a chunked zarr store that napari paints into.

Above :data:`LABEL_STORE_MIN_VOXELS` voxels the training labels are not a numpy
array but a zarr array ``<stem>.napari-unet-labels.zarr`` (next to the autosave
TIFF a small stack would get: the same location rules, :func:`label_store_path_for`),
so creating them costs no RAM.  Painting writes compressed chunks into an
in-memory write-back overlay (:class:`WriteBackStore`), the GUI thread never
touches the disk for a stroke; :meth:`LabelStore.flush` (run in a worker, or at
close) writes only the chunks that changed since the last flush, each one
atomically, and counts them.  Restoring opens the store lazily.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, WrapperStore

from .autosave import (
    AUTOSAVE_SUFFIX,
    AutosaveError,
    SaveResult,
    autosave_path_for,
    read_autosaved_classes,
    write_classes,
)

__all__ = [
    "LABEL_STORE_CHUNK",
    "LABEL_STORE_MIN_VOXELS",
    "LABEL_STORE_SUFFIX",
    "FlushResult",
    "LabelStore",
    "WriteBackStore",
    "label_store_path_for",
    "open_label_store",
    "uses_label_store",
]

#: the policy: labels of a stack with at least this many voxels live in an on-disk zarr store
#: (256 Mi voxels: 256 MiB of uint8 labels; below it a numpy array and the TIFF autosave)
LABEL_STORE_MIN_VOXELS = 1 << 28
#: the YX chunk edge of the store (chunks are one slice deep: a stroke touches few chunks)
LABEL_STORE_CHUNK = 512
LABEL_STORE_SUFFIX = ".napari-unet-labels.zarr"
#: the largest chunk (voxels) an existing store may declare before it is refused
_MAX_CHUNK_VOXELS = 1 << 24
_CHUNK_PREFIX = "c/"


def uses_label_store(shape: Sequence[int], min_voxels: int | None = None) -> bool:
    """Whether labels of ``shape`` go to an on-disk store (:data:`LABEL_STORE_MIN_VOXELS`)."""
    limit = LABEL_STORE_MIN_VOXELS if min_voxels is None else int(min_voxels)
    return int(np.prod([int(n) for n in shape], dtype=np.int64)) >= limit


def label_store_path_for(
    source: str | os.PathLike | None, stem: str, folder: str | os.PathLike | None = None
) -> Path:
    """``<stem>.napari-unet-labels.zarr`` where :func:`~napari_unet.autosave.autosave_path_for`
    would put the autosave TIFF (a chosen folder, else next to the stack if writable, else
    the default autosave folder)."""
    tif = autosave_path_for(source, stem, folder)
    return tif.with_name(tif.name[: -len(AUTOSAVE_SUFFIX)] + LABEL_STORE_SUFFIX)


class WriteBackStore(WrapperStore[LocalStore]):
    """A :class:`zarr.storage.LocalStore` whose chunk writes stay in memory until flushed.

    Chunk keys (``c/...``) that zarr sets or deletes are kept (compressed, as zarr
    encoded them; ``None`` for a deleted, all-zero chunk) and read back from
    memory; :meth:`flush_dirty` writes them to the folder.  Metadata goes to disk
    at once.  Thread-safe: zarr's IO thread and one flushing worker.
    """

    def __init__(self, store: LocalStore, state: dict[str, Any] | None = None) -> None:
        super().__init__(store)
        if state is None:
            state = {"dirty": {}, "touched": set(), "lock": threading.Lock()}
        self._state = state

    def _with_store(self, store: LocalStore) -> WriteBackStore:
        return type(self)(store, self._state)  # views share the pending chunks

    @property
    def _dirty(self) -> dict[str, Buffer | None]:
        return self._state["dirty"]

    @property
    def _lock(self) -> threading.Lock:
        return self._state["lock"]

    def dirty_keys(self) -> list[str]:
        with self._lock:
            return list(self._dirty)

    def take_touched(self) -> set[str]:
        """The chunk keys set or deleted since the last call (painted, undone, written)."""
        with self._lock:
            touched = set(self._state["touched"])
            self._state["touched"].clear()
        return touched

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        with self._lock:
            held, value = key in self._dirty, self._dirty.get(key)
        if not held:
            return await self._store.get(key, prototype, byte_range)
        if value is None or byte_range is None:
            return value
        if isinstance(byte_range, RangeByteRequest):
            return value[byte_range.start : byte_range.end]
        raise NotImplementedError("partial reads of unflushed chunks")  # no sharding here

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, rng) for key, rng in key_ranges]

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, rng in requests:
            yield key, await self.get(key, prototype, rng)

    async def exists(self, key: str) -> bool:
        with self._lock:
            if key in self._dirty:
                return self._dirty[key] is not None
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        if not key.startswith(_CHUNK_PREFIX):
            await self._store.set(key, value)
            return
        self._check_writable()
        with self._lock:
            self._dirty[key] = value
            self._state["touched"].add(key)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        if not key.startswith(_CHUNK_PREFIX):
            await self._store.delete(key)
            return
        with self._lock:
            self._dirty[key] = None
            self._state["touched"].add(key)

    def flush_dirty(self) -> list[str]:
        """Write the pending chunks to the folder (each atomically); return their keys.

        A chunk painted again while it is written stays pending for the next flush.
        """
        with self._lock:
            pending = dict(self._dirty)
        root = Path(self._store.root)
        for key, value in pending.items():
            _write_chunk(root / key, value)
            with self._lock:
                if self._dirty.get(key, 0) is value:  # unchanged since taken
                    del self._dirty[key]
        return list(pending)


def _write_chunk(path: Path, value: Buffer | None) -> None:
    if value is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(value.as_buffer_like())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


@dataclass(frozen=True)
class FlushResult:
    """What one :meth:`LabelStore.flush` wrote."""

    chunks: tuple[str, ...]  #: the chunk keys written (or removed: all zeros again)
    slices: tuple[int, ...]  #: the z indices those chunks belong to
    classes: bool  #: whether the classes sidecar was written


def _chunk_z(key: str, ndim: int) -> int:
    """The slice index of chunk ``c/z/y/x`` (0 for a 2D store); chunks are one slice deep."""
    if ndim < 3:
        return 0
    return int(key[len(_CHUNK_PREFIX) :].split("/")[0])


class LabelStore:
    """The zarr labels of one big stack on disk, painted through a write-back overlay."""

    def __init__(self, path: Path, array: zarr.Array, store: WriteBackStore) -> None:
        self.path = Path(path)
        self.array = array  #: what the napari Labels layer paints into
        self._store = store
        self._classes: str | None = None  # the classes key on disk
        self._painted = False  # whether the folder holds painted chunks (the classes go with them)
        self.chunks_written = 0  #: chunks written by all flushes (a counter for tests)

    @classmethod
    def create(cls, path: str | os.PathLike, shape: Sequence[int], dtype: Any) -> LabelStore:
        """A new, all-zero store at ``path`` (an existing one is kept under a ``.bak`` name)."""
        path = Path(path)
        shape = tuple(int(n) for n in shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"labels must be (Z, H, W) or (H, W), got shape {shape}")
        if path.exists():  # restoring was declined: never delete painted labels
            path.rename(path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak"))
        path.parent.mkdir(parents=True, exist_ok=True)
        store = WriteBackStore(LocalStore(path))
        edge = LABEL_STORE_CHUNK
        chunks = (1, edge, edge) if len(shape) == 3 else (edge, edge)
        chunks = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
        try:
            array = zarr.create_array(
                store=store, shape=shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0
            )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return cls(path, array, store)

    @classmethod
    def open(cls, path: str | os.PathLike, shape: Sequence[int]) -> LabelStore:
        """The store at ``path``, opened lazily (nothing read but its metadata).

        Raises
        ------
        AutosaveError
            For a folder that is not a zarr array of ``shape`` with unsigned labels.
        """
        path = Path(path)
        shape = tuple(int(n) for n in shape)
        store = WriteBackStore(LocalStore(path))
        try:
            array = zarr.open_array(store=store, mode="r+")
        except Exception as exc:  # zarr raises many kinds for a bad folder
            raise AutosaveError(f"{path.name}: not a readable zarr labels store ({exc})") from exc
        if tuple(array.shape) != shape:
            raise AutosaveError(
                f"{path.name}: labels of shape {tuple(array.shape)}, the image is {shape}"
            )
        if array.dtype.kind != "u" or array.dtype.itemsize > 4:
            raise AutosaveError(f"{path.name}: labels must be unsigned integers, not {array.dtype}")
        if int(np.prod(array.chunks)) > _MAX_CHUNK_VOXELS:
            raise AutosaveError(f"{path.name}: chunks {array.chunks} are too large")
        result = cls(path, array, store)
        result._painted = True
        return result

    @property
    def dirty(self) -> bool:
        """Whether chunks were painted since the last flush."""
        return bool(self._store.dirty_keys())

    def dirty_slices(self) -> set[int]:
        ndim = self.array.ndim
        return {_chunk_z(k, ndim) for k in self._store.dirty_keys()}

    def take_touched_slices(self) -> set[int]:
        """The slices written since the last call, whatever wrote them (a stroke, undo, a script)."""
        return {_chunk_z(k, self.array.ndim) for k in self._store.take_touched()}

    def stored_slices(self) -> set[int]:
        """The slices with at least one chunk on disk or pending (the painted ones, lazily)."""
        ndim, found = self.array.ndim, self.dirty_slices()
        root = self.path / "c"
        if ndim < 3:
            return found | ({0} if _holds_files(root) else set())
        if root.is_dir():
            found |= {int(p.name) for p in root.iterdir() if p.name.isdigit() and _holds_files(p)}
        return found

    def flush(
        self, names: Sequence[str] | None = None, colors: Sequence[str] | None = None
    ) -> FlushResult:
        """Write the chunks painted since the last flush and (if they changed) the classes."""
        keys = self._store.flush_dirty()
        self.chunks_written += len(keys)
        self._painted = self._painted or bool(keys)
        wrote_classes = False
        if names is not None and colors is not None and self._painted:
            key = repr((list(names), list(colors)))
            if key != self._classes:
                write_classes(self.path, names, colors)
                self._classes, wrote_classes = key, True
        slices = tuple(sorted({_chunk_z(k, self.array.ndim) for k in keys}))
        return FlushResult(tuple(sorted(keys)), slices, wrote_classes)

    def save_changes(
        self, path: Any, names: Sequence[str], colors: Sequence[str], **_: Any
    ) -> SaveResult:
        """One autosave tick (in a worker), like
        :meth:`napari_unet.autosave.LabelsAutosave.save_changes`: the store stays at
        :attr:`path` whatever ``path`` is; ``encoded`` are the slices whose chunks were written."""
        result = self.flush(names, colors)
        return SaveResult(bool(result.chunks or result.classes), self.path, result.slices)


def open_label_store(
    path: str | os.PathLike, shape: Sequence[int], dtype: Any, restore: bool = True
) -> tuple[LabelStore, bool, tuple[list[str], list[str]] | None, str | None]:
    """``(store, restored, classes, problem)``: the store at ``path`` opened lazily when
    ``restore`` and usable, else a new one (an old one is kept under a ``.bak`` name);
    ``problem`` says in one line what was not restored and why."""
    path, problem = Path(path), None
    if restore and path.exists():
        try:
            store = LabelStore.open(path, shape)
        except AutosaveError as exc:
            problem = f"{exc}; the labels store was not restored (it is kept on disk as .bak)"
        else:
            try:
                return store, True, read_autosaved_classes(path), None
            except AutosaveError as exc:
                return store, True, None, f"{exc}; the class names were not restored"
    return LabelStore.create(path, shape, dtype), False, None, problem
