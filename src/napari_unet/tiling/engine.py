"""The tiling engine: streams the YX blocks of slices and their tiles through the network in batches.

Reads a block (with its halo) ahead and writes finished blocks behind in threads, averages
test-time augmentation, shrinks on CUDA OOM; NaN/inf pixels are predicted as the mean intensity.
Memory is a few blocks (:mod:`.blocks`), whatever the size of a slice.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import OOM_ERRORS
from ..dihedral import N_TRANSFORMS, dihedral_inverse
from ..slices import array_shape, read_block
from .blocks import Block, FrameBlock, block_grid, frame_block, frame_map, union_bounds
from .geometry import TilePlan, plan_tiles, resolve_overlap, round_tile
from .inference import CHANNELS_LAST_DEVICES
from .memory import default_batch, default_tile_and_batch
from .outcomes import NonFiniteWarning, PredictionCancelled, ProgressCallback, TilingWarning
from .pixels import argmax_channels_torch, labels_from_probs, normalise

__all__ = [
    "NonFiniteWarning",
    "PredictionCancelled",
    "ProgressCallback",
    "TilingWarning",
    "labels_from_probs",
]


class _ShrinkTiles(Exception):
    """Raised inside the engine when a batch of one tile ran out of CUDA memory."""


class _BlockState:
    """Accumulators of one block of one Z-slice while its tiles are computed."""

    __slots__ = ("acc", "block", "labels", "last", "n_tiles", "remaining", "z")

    def __init__(self, z: int, block: Block, last: bool) -> None:
        self.z = z
        self.block = block
        self.last = last  # the last block of its slice
        self.acc: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.remaining = 0
        self.n_tiles = 0


class _SubBlock:
    """One (block, dihedral transform) pair being tiled."""

    __slots__ = ("buffer", "frame", "remaining", "slice", "tensor")

    def __init__(self, state: _BlockState, frame: FrameBlock, tensor: torch.Tensor) -> None:
        self.slice = state
        self.frame = frame
        self.tensor: torch.Tensor | None = tensor
        self.remaining = frame.n_tiles
        self.buffer: np.ndarray | None = None


_Item = tuple[_SubBlock, tuple[Any, ...]]
#: ``(z, block, last block of its slice)``
_Work = tuple[int, Block, bool]


def _autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not (amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Engine:
    """Streams the tiles of consecutive blocks of consecutive slices through the network.

    ``blocks``: the ``(z, (y0, y1, x0, x1))`` to predict, in order (default: every block of
    every slice, blocks of ``block_size`` pixels per side aligned with the tiles).
    """

    def __init__(
        self,
        model: nn.Module,
        image: Any,
        device: torch.device,
        *,
        amp: bool,
        tile_size: tuple[int, int] | None,
        batch_size: int | None,
        overlap: int | None,
        norm: tuple[float, float],
        tta: bool,
        out: Any,
        probs_out: Any,
        progress: ProgressCallback | None,
        block_size: tuple[int, int],
        blocks: list[tuple[int, Block]] | None = None,
    ) -> None:
        self.model = model
        self.image = image
        shape = array_shape(image)
        self.is_2d = len(shape) == 2
        self.n_slices = 1 if self.is_2d else shape[0]
        self.hw = (shape[-2], shape[-1])
        self.device = device
        self.overlap = overlap
        self.mean, self.std = norm
        self.transforms = tuple(range(N_TRANSFORMS)) if tta else (0,)
        self.out = out
        self.probs_out = probs_out
        self.probs_dtype = None if probs_out is None else np.dtype(probs_out.dtype)
        self.need_probs = probs_out is not None or tta
        self.progress = progress
        self.n_classes = int(model.n_classes)
        self.label_dtype = np.dtype(out.dtype)
        self.device_label_dtype = torch.uint8 if self.n_classes <= 255 else torch.int32
        self.autocast_dtype = _autocast_dtype(device, amp)

        self._plans: dict[tuple[tuple[int, int], tuple[int, int]], TilePlan] = {}
        if tile_size is None:
            tile, batch = default_tile_and_batch(model, device, self.hw, amp, overlap)
            self.tile = (tile, tile)
        else:
            self.tile = tile_size
            batch = default_batch(model, device, self.plan_for(self.hw).tile, amp)
        self.batch = batch if batch_size is None else batch_size
        self.grid = block_grid(self.plan_for(self.hw), block_size)
        self.work = None if blocks is None else self._explicit_work(blocks)
        self.n_work = self.n_slices * len(self.grid) if self.work is None else len(self.work)

        self.nonfinite: dict[int, int] = {}  # slice -> NaN/inf pixels (set to the mean)
        self.done_slices = 0  # slices finished (handed to the writer)
        self.done_work = 0  # blocks finished (handed to the writer)
        self.done_tiles = 0  # tiles computed, for progress
        self.finished_tiles = 0  # tiles of finished blocks
        self.total_tiles = 0
        self._prefetch: Future | None = None
        self._writes: list[Future] = []
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-read")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-write")

    # -- geometry --------------------------------------------------------
    def plan_for(self, hw: tuple[int, int], tile: tuple[int, int] | None = None) -> TilePlan:
        tile = self.tile if tile is None else tile
        key = (hw, tile)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_tiles(self.model, hw, tile, overlap=self.overlap)
            self._plans[key] = plan
        return plan

    def _explicit_work(self, blocks: list[tuple[int, Block]]) -> list[_Work]:
        items = [(int(z), tuple(int(v) for v in b)) for z, b in blocks]
        for z, (y0, y1, x0, x1) in items:
            if not (
                0 <= z < self.n_slices and 0 <= y0 < y1 <= self.hw[0] and 0 <= x0 < x1 <= self.hw[1]
            ):
                raise ValueError(f"block {(y0, y1, x0, x1)} of slice {z} is outside the image")
        nxt = [items[i + 1][0] for i in range(len(items) - 1)] + [None]
        return [(z, b, z != n) for (z, b), n in zip(items, nxt)]  # type: ignore[misc]

    def work_item(self, i: int) -> _Work:
        if self.work is not None:
            return self.work[i]
        z, b = divmod(i, len(self.grid))
        return z, self.grid[b], b == len(self.grid) - 1

    def frames_for(self, block: Block, tile: tuple[int, int] | None = None) -> list[FrameBlock]:
        """``block`` in the frame of every transform, tiled with ``tile``."""
        frames = []
        for k in self.transforms:
            plan = self.plan_for(frame_map(k).frame_shape(self.hw), tile)
            frames.append(frame_block(k, plan, block, self.hw))
        return frames

    def _tiles_from(self, i0: int) -> int:
        """Tiles of the work items ``i0 ..`` with the current tile."""
        counts: dict[Block, int] = {}

        def count(block: Block) -> int:
            if block not in counts:
                counts[block] = sum(f.n_tiles for f in self.frames_for(block))
            return counts[block]

        if self.work is not None:
            return sum(count(self.work[i][1]) for i in range(i0, self.n_work))
        nb = len(self.grid)
        per_slice = sum(count(b) for b in self.grid)
        z0, b0 = divmod(i0, nb)
        return (self.n_slices - z0) * per_slice - sum(count(b) for b in self.grid[:b0])

    # -- I/O (background threads) ------------------------------------------
    def _load(self, i: int, tile: tuple[int, int]) -> tuple[Any, ...]:
        """Read and normalise work item ``i``'s input with its halo (runs in the reader thread).

        Returns the item, its frames, the normalised input (kept only for TTA) and its
        origin, and the first frame's input as a CPU tensor (pinned for CUDA).
        """
        z, block, last = self.work_item(i)
        frames = self.frames_for(block, tile)
        y0, y1, x0, x1 = union_bounds(frames)
        window = (slice(y0, y1), slice(x0, x1))
        raw = read_block(self.image, window if self.is_2d else (z, *window))
        if raw.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"slice {z} is not of shape {self.hw}: read {raw.shape} at {window}")
        data, bad = normalise(raw, self.mean, self.std)
        if bad is not None:  # counted in the block itself, not in its halo
            by0, by1, bx0, bx1 = block
            n_bad = int(np.count_nonzero(bad[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]))
            if n_bad:
                self.nonfinite[z] = self.nonfinite.get(z, 0) + n_bad
        first = self._host_tensor(frames[0].gather(data, (y0, x0)))
        keep = data if len(frames) > 1 else None
        return (z, block, last), frames, keep, (y0, x0), first

    def _host_tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor

    def _keys(self, state: _BlockState) -> tuple[Any, Any]:
        """Where a block goes in ``out`` and in ``probs_out`` (a whole slice as before)."""
        y0, y1, x0, x1 = state.block
        if state.block == (0, self.hw[0], 0, self.hw[1]):
            return (Ellipsis, Ellipsis) if self.is_2d else (state.z, (slice(None), state.z))
        yx = (slice(y0, y1), slice(x0, x1))
        if self.is_2d:
            return yx, (slice(None), *yx)
        return (state.z, *yx), (slice(None), state.z, *yx)

    def _finish_and_write(self, state: _BlockState) -> None:
        """Labels (and probabilities) of a finished block into the outputs (writer thread)."""
        probs = None
        if self.need_probs:
            probs = state.acc
            if len(self.transforms) > 1:
                probs /= np.float32(len(self.transforms))
            labels = labels_from_probs(probs, self.label_dtype)
        else:
            labels = state.labels
        key, probs_key = self._keys(state)
        self.out[key] = labels
        if self.probs_out is not None and probs is not None:
            self.probs_out[probs_key] = probs.astype(self.probs_dtype, copy=False)

    def _submit_write(self, state: _BlockState) -> None:
        while len(self._writes) >= 2:  # bounded: at most two finished blocks in flight
            self._writes.pop(0).result()
        self._writes.append(self._writer.submit(self._finish_and_write, state))

    def _drain_writes(self, raise_errors: bool = True) -> None:
        while self._writes:
            fut = self._writes.pop(0)
            try:
                fut.result()
            except BaseException:
                if raise_errors:
                    raise

    def _wait_prefetch(self) -> None:
        fut, self._prefetch = self._prefetch, None
        if fut is not None:
            with contextlib.suppress(BaseException):
                fut.result()

    # -- tiles -------------------------------------------------------------
    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return host
        # from pinned memory (CUDA) the copy is asynchronous; the caching host
        # allocator keeps the pinned block alive until the copy is done
        return host.to(self.device, non_blocking=host.is_pinned())

    def _new_state(self, work: _Work, frames: list[FrameBlock]) -> _BlockState:
        state = _BlockState(*work)
        y0, y1, x0, x1 = state.block
        if self.need_probs:
            state.acc = np.zeros((self.n_classes, y1 - y0, x1 - x0), np.float32)
        else:
            state.labels = np.zeros((y1 - y0, x1 - x0), self.label_dtype)
        state.remaining = len(frames)
        state.n_tiles = sum(f.n_tiles for f in frames)
        return state

    def _buffer_for(self, state: _BlockState, frame: FrameBlock) -> np.ndarray:
        """Where the kept tile outputs of one transform of ``state`` go."""
        if not self.need_probs:
            return state.labels  # type: ignore[return-value]
        if len(self.transforms) == 1:
            return state.acc  # type: ignore[return-value]
        return np.empty((self.n_classes, *frame.shape), np.float32)

    def _sub_blocks(
        self,
        work: _Work,
        frames: list[FrameBlock],
        data: np.ndarray | None,
        origin: tuple[int, int],
        first: torch.Tensor,
    ) -> Iterator[_SubBlock]:
        """Yield the block once per transform, gathered for its frame, on the device."""
        state = self._new_state(work, frames)
        for i, frame in enumerate(frames):
            host = first if i == 0 else self._host_tensor(frame.gather(data, origin))  # type: ignore[arg-type]
            sub = _SubBlock(state, frame, self._to_device(host))
            sub.buffer = self._buffer_for(state, frame)
            del host
            yield sub

    def _stream(self, i0: int) -> Iterator[_Item]:
        """Yield ``(sub_block, tile)`` for every tile of the work items ``i0, i0 + 1, ...``."""
        if i0 < self.n_work:
            self._prefetch = self._reader.submit(self._load, i0, self.tile)
        for i in range(i0, self.n_work):
            fut, self._prefetch = self._prefetch, None
            loaded = fut.result()  # type: ignore[union-attr]
            if i + 1 < self.n_work:
                self._prefetch = self._reader.submit(self._load, i + 1, self.tile)
            for sub in self._sub_blocks(*loaded):
                for tile in sub.frame.tiles:
                    yield sub, tile
            del loaded

    def _forward(self, items: list[_Item]) -> np.ndarray:
        ty, tx = items[0][0].frame.tile
        crops = [sub.tensor[y0 : y0 + ty, x0 : x0 + tx] for sub, (y0, x0, _, _) in items]  # type: ignore[index]
        batch = torch.stack(crops).unsqueeze(1)
        if self.device.type in CHANNELS_LAST_DEVICES:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type="cuda", dtype=self.autocast_dtype):
                logits = self.model(batch)
        else:
            logits = self.model(batch)
        if self.need_probs:
            result = torch.softmax(logits.float(), dim=1)
        else:
            result = argmax_channels_torch(logits, self.device_label_dtype)
        return result.cpu().numpy()

    def _scatter(self, items: list[_Item], result: np.ndarray) -> None:
        for (sub, (_, _, ky, kx)), tile_out in zip(items, result):
            sy0, sy1, dy0, dy1 = ky
            sx0, sx1, dx0, dx1 = kx
            if self.need_probs:
                sub.buffer[:, dy0:dy1, dx0:dx1] = tile_out[:, sy0:sy1, sx0:sx1]  # type: ignore[index]
            else:
                sub.buffer[dy0:dy1, dx0:dx1] = tile_out[sy0:sy1, sx0:sx1]  # type: ignore[index]
            sub.remaining -= 1
            if sub.remaining == 0:
                self._sub_done(sub)

    def _sub_done(self, sub: _SubBlock) -> None:
        state = sub.slice
        if self.need_probs and len(self.transforms) > 1:
            state.acc += dihedral_inverse(sub.buffer, sub.frame.k)  # type: ignore[operator]
        sub.buffer = None
        sub.tensor = None
        state.remaining -= 1
        if state.remaining == 0:
            self._submit_write(state)
            self.done_work += 1
            self.done_slices += int(state.last)
            self.finished_tiles += state.n_tiles

    # -- the loop ----------------------------------------------------------
    def _run_batch(self, items: list[_Item]) -> None:
        i = 0
        while i < len(items):
            chunk = items[i : i + self.batch]
            try:
                result = self._forward(chunk)
            except OOM_ERRORS as exc:
                torch.cuda.empty_cache()
                if self.batch > 1:
                    self.batch = max(1, min(self.batch, len(chunk)) // 2)
                    warnings.warn(
                        f"CUDA out of memory: batch size reduced to {self.batch}",
                        TilingWarning,
                        stacklevel=2,
                    )
                    continue
                raise _ShrinkTiles(exc) from None
            self._scatter(chunk, result)
            i += len(chunk)
            self.done_tiles += len(chunk)

    def _report(self) -> None:
        if self.progress is None:
            return
        if self.progress(self.done_tiles, self.total_tiles) is False:
            self._drain_writes()
            raise PredictionCancelled(self.done_slices, self.n_slices)

    def _run_from(self, i0: int) -> None:
        """Blocks of one slice may share a batch; slices never do (each slice is independent)."""
        pending: list[_Item] = []
        stream = self._stream(i0)
        try:
            for item in stream:
                if pending and (
                    len(pending) >= self.batch
                    or item[0].slice.z != pending[0][0].slice.z
                    or item[0].frame.tile != pending[0][0].frame.tile
                ):
                    self._run_batch(pending)
                    pending = []
                    self._report()
                pending.append(item)
            if pending:
                self._run_batch(pending)
                self._report()
        finally:
            stream.close()

    def _shrink(self, exc: BaseException) -> None:
        """After an OOM with one tile per batch: halve the tile, restart unfinished blocks."""
        self._wait_prefetch()
        self._drain_writes()
        smallest = round_tile(self.model, 1, resolve_overlap(self.model, self.overlap))
        current = self.plan_for(self.hw).tile
        if max(current) <= smallest:
            raise exc
        self.tile = (max(smallest, current[0] // 2), max(smallest, current[1] // 2))
        warnings.warn(
            f"CUDA out of memory with batch size 1: tile reduced to {self.tile}",
            TilingWarning,
            stacklevel=3,
        )
        self.done_tiles = self.finished_tiles
        self.total_tiles = self.finished_tiles + self._tiles_from(self.done_work)

    def nonfinite_warning(self) -> NonFiniteWarning | None:
        """What :meth:`run` met: a :class:`NonFiniteWarning`, or None when all pixels were finite."""
        if not self.nonfinite:
            return None
        total = self.n_slices * self.hw[0] * self.hw[1]
        return NonFiniteWarning(sum(self.nonfinite.values()), total, sorted(self.nonfinite))

    def run(self) -> None:
        """Predict every block into the outputs (the caller's thread computes)."""
        cudnn_benchmark = torch.backends.cudnn.benchmark
        try:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            self.total_tiles = self._tiles_from(0)
            self._report()
            with torch.inference_mode():
                while True:
                    try:
                        self._run_from(self.done_work)
                        break
                    except _ShrinkTiles as shrink:
                        self._shrink(shrink.args[0])
            self._drain_writes()
        finally:
            torch.backends.cudnn.benchmark = cudnn_benchmark
            self._drain_writes(raise_errors=False)
            self._wait_prefetch()
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._writer.shutdown(wait=True)
