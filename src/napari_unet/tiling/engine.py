"""The tiling engine: streams slices and their tiles through the network in batches.

Reads ahead and writes behind in threads, averages test-time augmentation, shrinks on CUDA OOM;
NaN/inf pixels are predicted as the mean intensity and counted.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import OOM_ERRORS
from ..dihedral import N_TRANSFORMS, dihedral, dihedral_inverse
from ..slices import array_shape, read_slice
from .geometry import TilePlan, pad_slice, plan_tiles, resolve_overlap, round_tile
from .inference import CHANNELS_LAST_DEVICES
from .memory import default_batch, default_tile_and_batch

__all__ = ["NonFiniteWarning", "PredictionCancelled", "TilingWarning", "labels_from_probs"]

ProgressCallback = Callable[[int, int], "bool | None"]


class PredictionCancelled(Exception):
    """Raised by ``predict_tiled`` when the ``progress`` callback returns ``False``.

    Attributes
    ----------
    done_slices : int
        Number of leading Z-slices that were completely predicted and written
        to ``out`` (slices ``0 .. done_slices - 1``).  The slice that was in
        progress and all later slices were not written: ``out`` still holds
        what it held before there.
    total_slices : int
        Number of slices of the image (1 for a 2-D image).
    """

    def __init__(self, done_slices: int, total_slices: int) -> None:
        self.done_slices = int(done_slices)
        self.total_slices = int(total_slices)
        super().__init__(
            f"prediction cancelled after {self.done_slices} of {self.total_slices} slice(s)"
        )


class TilingWarning(UserWarning):
    """Emitted when the tiling had to change on the fly (e.g. after a CUDA OOM)."""


class NonFiniteWarning(UserWarning):
    """The image had NaN/inf pixels: they were predicted as the mean intensity.

    ``count`` such pixels of ``total``, on the slices ``slices`` (``[0]`` for a 2-D image).
    """

    def __init__(self, count: int, total: int, slices: list[int]) -> None:
        self.count, self.total, self.slices = int(count), int(total), list(slices)
        where = "" if len(slices) <= 1 else f" on {len(slices)} slices"
        super().__init__(
            f"the image has {self.count:,} NaN/inf pixel(s) of {self.total:,}{where}: they "
            "were predicted as the mean intensity"
        )


class _ShrinkTiles(Exception):
    """Raised inside the engine when a batch of one tile ran out of CUDA memory."""


def _argmax_channels_torch(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
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


class _SliceState:
    """Accumulators of one Z-slice while its tiles are computed."""

    __slots__ = ("acc", "labels", "n_tiles", "remaining", "z")

    def __init__(self, z: int) -> None:
        self.z = z
        self.acc: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.remaining = 0
        self.n_tiles = 0


class _SubSlice:
    """One (slice, dihedral transform) pair being tiled."""

    __slots__ = ("buffer", "plan", "remaining", "slice", "tensor", "transform")

    def __init__(
        self, state: _SliceState, transform: int, plan: TilePlan, tensor: torch.Tensor
    ) -> None:
        self.slice = state
        self.transform = transform
        self.plan = plan
        self.tensor: torch.Tensor | None = tensor
        self.remaining = plan.n_tiles
        self.buffer: np.ndarray | None = None


_Item = tuple[_SubSlice, tuple[Any, ...]]


def _autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not (amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Engine:
    """Streams the tiles of consecutive slices through the network in batches."""

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

        self.nonfinite: dict[int, int] = {}  # slice -> NaN/inf pixels (set to the mean)
        self.done_slices = 0  # slices finished (handed to the writer)
        self.done_tiles = 0  # tiles computed, for progress
        self.finished_tiles = 0  # tiles of finished slices
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

    def tiles_per_slice(self) -> int:
        total = 0
        for k in self.transforms:
            hw = self.hw if k % 2 == 0 else (self.hw[1], self.hw[0])
            total += self.plan_for(hw).n_tiles
        return total

    # -- I/O (background threads) ------------------------------------------
    def _load(
        self, z: int, tile: tuple[int, int]
    ) -> tuple[np.ndarray | None, torch.Tensor, TilePlan]:
        """Read, normalise and mirror-pad slice ``z`` (runs in the reader thread).

        Returns the normalised slice (only kept for TTA), the padded slice as a
        CPU tensor (in pinned memory for an asynchronous copy to CUDA) and the
        tile plan it was padded for.
        """
        raw = read_slice(self.image, z)
        if raw.shape != self.hw:
            raise ValueError(f"slice {z} has shape {raw.shape}, expected {self.hw}")
        data = raw.astype(np.float32, copy=True)
        data -= np.float32(self.mean)
        data /= np.float32(self.std)
        if raw.dtype.kind == "f":
            bad = ~np.isfinite(data)
            if bad.any():
                data[bad] = 0.0  # the mean intensity
                self.nonfinite[z] = int(np.count_nonzero(bad))
        plan = self.plan_for(self.hw, tile)
        padded = self._host_tensor(pad_slice(data, plan))
        return (data if len(self.transforms) > 1 else None), padded, plan

    def _host_tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor

    def _finish_and_write(self, state: _SliceState) -> None:
        """Labels (and probabilities) of a finished slice into the outputs (writer thread)."""
        probs = None
        if self.need_probs:
            probs = state.acc
            if len(self.transforms) > 1:
                probs /= np.float32(len(self.transforms))
            labels = labels_from_probs(probs, self.label_dtype)
        else:
            labels = state.labels
        if self.is_2d:
            self.out[...] = labels
        else:
            self.out[state.z] = labels
        if self.probs_out is not None and probs is not None:
            values = probs.astype(self.probs_dtype, copy=False)
            if self.is_2d:
                self.probs_out[...] = values
            else:
                self.probs_out[:, state.z] = values

    def _submit_write(self, state: _SliceState) -> None:
        while len(self._writes) >= 2:  # bounded: at most two finished slices in flight
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

    def _new_state(self, z: int) -> _SliceState:
        state = _SliceState(z)
        if self.need_probs:
            state.acc = np.zeros((self.n_classes, *self.hw), np.float32)
        else:
            state.labels = np.zeros(self.hw, self.label_dtype)
        state.remaining = len(self.transforms)
        state.n_tiles = self.tiles_per_slice()
        return state

    def _buffer_for(self, state: _SliceState, plan: TilePlan) -> np.ndarray:
        """Where the kept tile outputs of one transform of ``state`` go."""
        if not self.need_probs:
            return state.labels  # type: ignore[return-value]
        if len(self.transforms) == 1:
            return state.acc  # type: ignore[return-value]
        return np.empty((self.n_classes, *plan.shape), np.float32)

    def _sub_slices(
        self, state: _SliceState, data: np.ndarray | None, padded0: torch.Tensor, plan0: TilePlan
    ) -> Iterator[_SubSlice]:
        """Yield the slice once per transform, padded for the current tile, on the device."""
        for k in self.transforms:
            if k == 0 and plan0.tile == self.plan_for(self.hw).tile:
                padded, plan = padded0, plan0
            else:
                if data is None:  # recover the unpadded slice from the mirrored one
                    (top, _), (left, _) = plan0.pad_width
                    data = padded0.numpy()[top : top + self.hw[0], left : left + self.hw[1]]
                view = dihedral(data, k)
                plan = self.plan_for((view.shape[0], view.shape[1]))
                padded = self._host_tensor(pad_slice(view, plan))
            sub = _SubSlice(state, k, plan, self._to_device(padded))
            sub.buffer = self._buffer_for(state, plan)
            del padded
            yield sub

    def _stream(self, z0: int) -> Iterator[_Item]:
        """Yield ``(sub_slice, tile)`` for every tile of slices ``z0, z0 + 1, ...``."""
        if z0 < self.n_slices:
            self._prefetch = self._reader.submit(self._load, z0, self.tile)
        for z in range(z0, self.n_slices):
            fut, self._prefetch = self._prefetch, None
            loaded = fut.result()  # type: ignore[union-attr]
            if z + 1 < self.n_slices:
                self._prefetch = self._reader.submit(self._load, z + 1, self.tile)
            for sub in self._sub_slices(self._new_state(z), *loaded):
                for tile in sub.plan.tiles():
                    yield sub, tile
            del loaded

    def _forward(self, items: list[_Item]) -> np.ndarray:
        ty, tx = items[0][0].plan.tile
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
            result = _argmax_channels_torch(logits, self.device_label_dtype)
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

    def _sub_done(self, sub: _SubSlice) -> None:
        state = sub.slice
        if self.need_probs and len(self.transforms) > 1:
            state.acc += dihedral_inverse(sub.buffer, sub.transform)  # type: ignore[operator]
        sub.buffer = None
        sub.tensor = None
        state.remaining -= 1
        if state.remaining == 0:
            self._submit_write(state)
            self.done_slices += 1
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

    def _run_from(self, z0: int) -> None:
        pending: list[_Item] = []
        stream = self._stream(z0)
        try:
            for item in stream:
                if pending and (
                    len(pending) >= self.batch
                    or item[0].slice is not pending[0][0].slice
                    or item[0].plan.tile != pending[0][0].plan.tile
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
        """After an OOM with one tile per batch: halve the tile, restart unfinished slices."""
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
        self.total_tiles = self.finished_tiles + (self.n_slices - self.done_slices) * (
            self.tiles_per_slice()
        )

    def nonfinite_warning(self) -> NonFiniteWarning | None:
        """What :meth:`run` met: a :class:`NonFiniteWarning`, or None when all pixels were finite."""
        if not self.nonfinite:
            return None
        total = self.n_slices * self.hw[0] * self.hw[1]
        return NonFiniteWarning(sum(self.nonfinite.values()), total, sorted(self.nonfinite))

    def run(self) -> None:
        """Predict every slice into the outputs (the caller's thread computes)."""
        cudnn_benchmark = torch.backends.cudnn.benchmark
        try:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            self.total_tiles = self.tiles_per_slice() * self.n_slices
            self._report()
            with torch.inference_mode():
                while True:
                    try:
                        self._run_from(self.done_slices)
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
