"""Tiled prediction of a dask array or a lazy file on any dask scheduler: :func:`predict_dask`.

One task per YX block of a slice (an explicit block plan on the output chunks); a task reads
its block's input with the halo its tiles need (a dask slice, or the file itself on the worker)
and writes its block into the zarr output; the network is shipped once and cached per worker.
Finished blocks are recorded (:class:`napari_unet.completion.BlockRecorder`), so a run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..completion import BlockRecorder, block_grid, missing_blocks, read_record
from ..devices import resolve_device
from ..labels import label_dtype
from .blocks import Block, frame_block, frame_map, union_bounds
from .geometry import check_model, plan_tiles
from .inference import prepare_for_inference
from .memory import default_block_size, default_tile_and_batch
from .predict import check_image, check_tiling, image_normalization, predict_blocks
from .scheduling import run_tasks
from .sources import TiffSource

__all__ = ["predict_dask"]


@dataclass(frozen=True)
class _ModelSpec:
    """What a dask worker needs to rebuild the network (picklable)."""

    token: str
    config: dict[str, Any] | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    path: str | None = None


_WORKER_MODELS: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
_WORKER_LOCK = threading.Lock()
_WORKER_CACHE_SIZE = 4


def _state_token(config: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _load_checkpoint(path: str) -> tuple[nn.Module, dict[str, Any]]:
    from ..checkpoint import load_checkpoint

    model, metadata = load_checkpoint(path, map_location="cpu")
    return model, dict(metadata or {})


def _spec_for(model_or_checkpoint: Any) -> tuple[_ModelSpec, nn.Module, dict[str, Any]]:
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(model_or_checkpoint))
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        model, metadata = _load_checkpoint(path)
        check_model(model)
        stat = os.stat(path)
        token = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        return _ModelSpec(token=token, path=path), model, metadata
    check_model(model_or_checkpoint)
    model = model_or_checkpoint
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError("model must be a napari_unet UNet with a 'config' property")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    token = _state_token(config, state)
    return _ModelSpec(token=token, config=dict(config), state_dict=state), model, {}


def _checkpoint_normalization(darr: Any, metadata: dict[str, Any]) -> dict[str, float]:
    """The checkpoint's statistics for this array, mapped onto the training stack's intensity
    range when the array's differs (:func:`napari_unet.normalization.stack_normalization`);
    the note, if any, is a warning."""
    from ..normalization import check_intensity, stack_normalization

    intensity = metadata.get("intensity")
    intensity = None if intensity is None else check_intensity(intensity)
    stats, note = stack_normalization(darr, metadata["normalization"], intensity)
    if note is not None:
        warnings.warn(note, UserWarning, stacklevel=3)
    return stats


def _worker_model(spec: _ModelSpec, device: str | torch.device | None) -> nn.Module:
    """Rebuild (once per process, device and model) the network in a dask worker."""
    dev = resolve_device(device)
    key = (spec.token, str(dev))
    with _WORKER_LOCK:
        model = _WORKER_MODELS.get(key)
        if model is not None:
            _WORKER_MODELS.move_to_end(key)
            return model
        if spec.path is not None:
            model, _ = _load_checkpoint(spec.path)
        else:
            from ..model import UNet

            model = UNet(**spec.config)  # type: ignore[arg-type]
            model.load_state_dict(spec.state_dict)  # type: ignore[arg-type]
        model = prepare_for_inference(model, dev)
        _WORKER_MODELS[key] = model
        while len(_WORKER_MODELS) > _WORKER_CACHE_SIZE:
            _WORKER_MODELS.popitem(last=False)
        return model


class _Window:
    """Slice ``z`` of an image as far as one block reads it: ``region`` starts at ``origin``."""

    def __init__(self, region: np.ndarray, z: int, origin: tuple[int, int], shape: tuple[int, ...]):
        self.region, self.z, self.origin = region, int(z), origin
        self.shape, self.dtype, self.ndim = shape, region.dtype, len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        *z, ys, xs = key
        if z and int(z[0]) != self.z:
            raise ValueError(f"this block's input holds slice {self.z}, not {z[0]}")
        (y0, x0), (h, w) = self.origin, self.region.shape
        if ys.start < y0 or xs.start < x0 or ys.stop > y0 + h or xs.stop > x0 + w:
            raise ValueError("the block reads outside the input it was given (tile changed?)")
        return self.region[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


class _BlockBuffer:
    """An output of the image's shape that keeps only one block (a lazy result's task)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, block: Block, channels: int = 0):
        y0, y1, x0, x1 = block
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.data = np.zeros(((channels,) if channels else ()) + (y1 - y0, x1 - x0), dtype)
        self._channels = bool(channels)

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.data[...] = value  # the engine writes this block, once


def _open_target(target: Any, lut: np.ndarray | None = None) -> Any:
    if isinstance(target, (str, os.PathLike)):
        import zarr

        target = zarr.open_array(os.fspath(target), mode="r+")
    if lut is not None:
        from ..labels import MappedOutput

        target = MappedOutput(target, lut)
    return target


def _block_task(
    spec: _ModelSpec,
    source: Any,
    z: int,
    block: Block,
    origin: tuple[int, int] | None,
    shape: tuple[int, ...],
    targets: tuple[Any, Any, Any] | None,
    kwargs: dict[str, Any],
) -> Any:
    """Predict one block (runs on a worker): write it into the targets, or return it."""
    model = _worker_model(spec, kwargs.get("device"))
    image = source if origin is None else _Window(source, z, origin, shape)
    n_classes = int(model.n_classes)
    kwargs = dict(kwargs)  # the graph's own dict is shared by re-computations
    probs = kwargs.pop("probabilities")
    if targets is None:
        out: Any = _BlockBuffer(shape, label_dtype(n_classes), block)
        pout: Any = (
            _BlockBuffer((n_classes, *shape), np.float32, block, n_classes) if probs else None
        )
    else:
        out, pout, lut = targets
        out, pout = _open_target(out, lut), None if pout is None else _open_target(pout)
    predict_blocks(model, image, [(z, block)], out=out, probabilities_out=pout, **kwargs)
    if targets is None:
        return out.data if pout is None else (out.data, pout.data)
    return z, block


def _input_bounds(model: nn.Module, hw: tuple[int, int], kwargs: dict[str, Any], block: Block):
    """The part of a slice one block reads (its halo included), for the tile the workers use."""
    frames = []
    for k in range(8) if kwargs["tta"] else (0,):
        plan = plan_tiles(
            model, frame_map(k).frame_shape(hw), kwargs["tile_size"], kwargs["overlap"]
        )
        frames.append(frame_block(k, plan, block, hw))
    return union_bounds(frames)


def _lazy_source(array: Any) -> tuple[Any, Any]:
    """``(dask array, None)``, or ``(None, source)`` for a lazy file source read on the workers."""
    import dask.array as da

    if isinstance(array, TiffSource):
        check_image(array)
        return None, array
    if isinstance(array, da.Array):
        return array, None
    check_image(array)
    return da.from_array(array, chunks=getattr(array, "chunks", "auto")), None


def _block_shape(
    yx_chunks: tuple[int, int], block_size: Any, n_classes: int, kw: dict
) -> tuple[int, int]:
    """Blocks of whole output chunks, about ``block_size`` (default from memory) per side."""
    if block_size is None:
        size = default_block_size(n_classes, kw["probabilities"], kw["tta"])
        block_size = (size, size)
    elif isinstance(block_size, int):
        block_size = (block_size, block_size)
    return tuple(max(1, int(b) // c) * c for b, c in zip(block_size, yx_chunks))  # type: ignore[return-value]


def _zarr_target(target: Any, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype):
    if isinstance(target, (str, os.PathLike)):
        import zarr

        return zarr.open_array(
            os.fspath(target), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
        )
    if tuple(int(s) for s in getattr(target, "shape", ())) != tuple(shape):
        raise ValueError(
            f"output array has shape {tuple(getattr(target, 'shape', ()))}, expected {shape}"
        )
    return target


def _graph(
    model: nn.Module, spec: _ModelSpec, darr: Any, source: Any, shape: tuple[int, ...],
    grid: list[Block], work: list[tuple[int, int]], targets: Any, kwargs: dict[str, Any],
) -> list[tuple[int, int, Any]]:  # fmt: skip
    """One delayed task per ``(z, block index)`` of ``work``."""
    import dask

    hw = (shape[-2], shape[-1])
    model_key = hashlib.sha1(spec.token.encode()).hexdigest()
    spec_delayed = dask.delayed(spec, pure=True, name=f"napari-unet-model-{model_key}")
    task = dask.delayed(_block_task, pure=True)
    tasks = []
    for z, b in work:
        block = grid[b]
        if source is not None:
            inp, origin = source, None
        else:
            y0, y1, x0, x1 = _input_bounds(model, hw, kwargs, block)
            inp = darr[y0:y1, x0:x1] if len(shape) == 2 else darr[z, y0:y1, x0:x1]
            origin = (y0, x0)
        delayed = task(spec_delayed, inp, z, block, origin, shape, targets, dict(kwargs))
        tasks.append((z, b, delayed))
    return tasks


def _lazy_result(
    tasks: list, grid: list[Block], shape: tuple[int, ...], n_classes: int, probs: bool
):
    """The blocks as a dask array (labels, and probabilities when asked for)."""
    import dask.array as da

    ldtype = label_dtype(n_classes)
    n_z = 1 if len(shape) == 2 else shape[0]
    rows = sorted({(b[0], b[1]) for b in grid})
    cols = sorted({(b[2], b[3]) for b in grid})
    by_key = {(z, b): t for z, b, t in tasks}
    labels, probabilities = [], []
    for z in range(n_z):
        lz, pz = [], []
        for r in rows:
            lr, pr = [], []
            for c in cols:
                bi = grid.index((*r, *c))
                t = by_key[(z, bi)]
                hw = (r[1] - r[0], c[1] - c[0])
                if probs:
                    lr.append(da.from_delayed(t[0], hw, dtype=ldtype))
                    pr.append(da.from_delayed(t[1], (n_classes, *hw), dtype=np.float32))
                else:
                    lr.append(da.from_delayed(t, hw, dtype=ldtype))
            lz.append(lr)
            pz.append(pr)
        labels.append(da.block(lz))
        if probs:
            probabilities.append(da.block([[p for p in pr] for pr in pz]))
    lab = labels[0] if len(shape) == 2 else da.stack(labels)
    if not probs:
        return lab, None
    pro = probabilities[0] if len(shape) == 2 else da.stack(probabilities, axis=1)
    return lab, pro


def predict_dask(
    model_or_checkpoint: Any,
    array: Any,
    *,
    out: Any = None,
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    normalization: dict[str, float] | None = None,
    return_probabilities: bool = False,
    probabilities_out: Any = None,
    amp: bool = True,
    tta: bool = False,
    overlap: int | None = None,
    block_size: int | Sequence[int] | None = None,
    resume: bool = False,
    labels_lut: np.ndarray | None = None,
    progress: Any = None,
) -> Any:
    """Predict a (possibly larger-than-memory) image block by block on any dask scheduler.

    One task per YX block of every slice (blocks of whole output chunks, about ``block_size``
    pixels per side, default from memory); a task reads only its block's input with the halo
    its tiles need and, with ``out``, writes its block into the zarr output itself, so neither
    the client nor a worker ever holds a whole slice.  The result equals
    :func:`~napari_unet.tiling.predict_tiled` on the whole image with the same tile and batch
    sizes, normalisation and device (pass ``tile_size`` for identical results on CUDA).

    Parameters
    ----------
    model_or_checkpoint : UNet or str or os.PathLike
        A UNet (its config and weights are shipped once and the network is
        cached per worker process) or a checkpoint path loaded by every
        worker (its ``normalization`` is used when ``normalization`` is None, mapped
        onto the array's range by :func:`~napari_unet.normalization.stack_normalization`).
    array : dask array, :class:`~napari_unet.tiling.sources.TiffSource` or array-like, (H, W) or (Z, H, W)
        A dask array is sliced per block (its chunks are read by the workers); a ``TiffSource``
        is opened by each worker (no pixels in the graph); other arrays are wrapped with
        ``dask.array.from_array`` (and so embedded in the graph).
    out : str, os.PathLike or zarr array, optional
        Where to write the labels (a path creates a zarr array with chunks 1
        in Z and the input's in Y and X); the computation then runs at once
        and the zarr array is returned.  Default: a lazy dask array.
    tile_size, batch_size, device, amp, tta, overlap
        As in ``predict_tiled``, applied in every worker.
    normalization : dict, optional
        ``{"mean", "std"}``; default the checkpoint's, else the statistics of
        the whole array, estimated once (so all blocks share them).
    return_probabilities : bool, default False
        Also return float32 probabilities ``(C, ...)``; the labels are their
        argmax + 1.
    probabilities_out : str, os.PathLike or zarr array, optional
        Where to write the probabilities; required with ``out`` and
        ``return_probabilities=True``.
    block_size : int or (int, int), optional
        Target block size; rounded down to whole chunks of the output (at least one).
    resume : bool, default False
        With zarr outputs carrying a completion record (:mod:`napari_unet.completion`):
        predict only the blocks it does not list as written.
    labels_lut : array, optional
        Write ``labels_lut[classes]`` (file values) instead of the classes.
    progress : callable, optional
        ``progress(done_blocks, total_blocks)`` on the client as blocks finish (with ``out``).

    Returns
    -------
    dask.array.Array or zarr.Array, or a pair of them
        Labels (and probabilities), lazily unless ``out`` was given.
    """
    spec, model, metadata = _spec_for(model_or_checkpoint)
    darr, source = _lazy_source(array)
    shape = check_image(darr if source is None else source)
    tile, batch = check_tiling(model, tile_size, batch_size, overlap)
    if normalization is None and metadata.get("normalization") is not None:
        normalization = _checkpoint_normalization(darr if source is None else source, metadata)
    norm = image_normalization(darr if source is None else source, normalization)
    if out is not None and return_probabilities and probabilities_out is None:
        raise ValueError("with out and return_probabilities=True, also pass probabilities_out")
    dev = str(device) if isinstance(device, torch.device) else device
    hw = (shape[-2], shape[-1])
    if tile is None:  # the client's choice, so that it knows what each block reads
        t, _ = default_tile_and_batch(model, resolve_device(dev), hw, bool(amp), overlap)
        tile = (t, t)
    probs = bool(return_probabilities or probabilities_out is not None)
    kwargs = {
        "tile_size": tile, "batch_size": batch, "device": dev, "amp": bool(amp), "tta": bool(tta),
        "overlap": overlap, "normalization": {"mean": norm[0], "std": norm[1]}, "probabilities": probs,
    }  # fmt: skip
    n_classes = int(model.n_classes)
    if out is None:
        chunks = tuple(int(c[0]) for c in darr.chunks[-2:]) if darr is not None else (1024, 1024)
        grid = block_grid(
            hw,
            _block_shape(
                (min(chunks[0], hw[0]), min(chunks[1], hw[1])), block_size, n_classes, kwargs
            ),
        )
        n_z = 1 if len(shape) == 2 else shape[0]
        work = [(z, b) for z in range(n_z) for b in range(len(grid))]
        tasks = _graph(model, spec, darr, source, shape, grid, work, None, kwargs)
        labels, probabilities = _lazy_result(tasks, grid, shape, n_classes, probs)
        return labels if probabilities is None else (labels, probabilities)
    return _predict_into(model, spec, darr, source, shape, out, probabilities_out, kwargs,
                         block_size, resume, labels_lut, progress)  # fmt: skip


def _predict_into(
    model: nn.Module, spec: _ModelSpec, darr: Any, source: Any, shape: tuple[int, ...], out: Any,
    probabilities_out: Any, kwargs: dict[str, Any], block_size: Any, resume: bool,
    labels_lut: np.ndarray | None, progress: Any,
) -> Any:  # fmt: skip
    """Write every (missing) block into zarr outputs, recording them; return the zarr arrays."""
    n_classes = int(model.n_classes)
    hw = (shape[-2], shape[-1])
    if darr is not None:
        yx = tuple(int(c[0]) for c in darr.chunks[-2:])
    else:
        yx = (min(hw[0], 1024), min(hw[1], 1024))
    ldtype = label_dtype(n_classes) if labels_lut is None else np.asarray(labels_lut).dtype
    zchunks = yx if len(shape) == 2 else (1, *yx)
    target = _zarr_target(out, shape, zchunks, ldtype)
    ptarget = None
    if probabilities_out is not None:
        ptarget = _zarr_target(probabilities_out, (n_classes, *shape), (1, *zchunks), np.float32)
    chunks = tuple(int(c) for c in getattr(target, "chunks", zchunks)[-2:])
    block = _block_shape(chunks, block_size, n_classes, kwargs)  # type: ignore[arg-type]
    grid = block_grid(hw, block)
    n_z = 1 if len(shape) == 2 else shape[0]
    arrays = [a for a in (target, ptarget) if a is not None]
    recorders = [BlockRecorder(a, read_record(a), block) for a in arrays if read_record(a)]
    if resume and recorders:
        todo = set()
        for a in arrays:
            todo |= set(missing_blocks(a, block) or [])
        work = sorted(todo)
    else:
        work = [(z, b) for z in range(n_z) for b in range(len(grid))]
    targets = (target, ptarget, labels_lut)
    tasks = _graph(model, spec, darr, source, shape, grid, work, targets, kwargs)
    run_tasks(tasks, recorders, progress)
    return (target, ptarget) if ptarget is not None else target
