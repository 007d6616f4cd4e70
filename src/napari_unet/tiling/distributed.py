"""Tiled prediction of a dask array on any dask scheduler: :func:`predict_dask`.

One whole Z-slice per block, the network shipped once and cached per worker; zarr outputs.
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

from ..devices import resolve_device
from ..labels import label_dtype
from .engine import labels_from_probs
from .geometry import check_model
from .inference import prepare_for_inference
from .predict import check_image, check_tiling, image_normalization, predict_tiled

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


def _dask_block(
    block: np.ndarray,
    spec: _ModelSpec,
    *,
    probabilities: bool,
    kwargs: dict[str, Any],
) -> np.ndarray:
    model = _worker_model(spec, kwargs.get("device"))
    if probabilities:
        _, probs = predict_tiled(
            model, block, return_probabilities=True, probabilities_dtype=np.float32, **kwargs
        )
        return probs
    return predict_tiled(model, block, **kwargs)


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


def _as_dask(array: Any) -> Any:
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    check_image(array)
    return da.from_array(array, chunks=getattr(array, "chunks", "auto"))


def _block_graph(
    vol: Any, spec: _ModelSpec, n_classes: int, kwargs: dict[str, Any], probabilities: bool
) -> tuple[Any, Any]:
    """Lazy labels (and probabilities) of a ``(Z, H, W)`` dask array of one slice per block."""
    import dask
    import dask.array as da

    ldtype = label_dtype(n_classes)
    model_key = hashlib.sha1(spec.token.encode()).hexdigest()
    spec_delayed = dask.delayed(spec, pure=True, name=f"napari-unet-model-{model_key}")
    if not probabilities:
        labels = da.map_blocks(
            _dask_block,
            vol,
            spec_delayed,
            probabilities=False,
            kwargs=kwargs,
            dtype=ldtype,
            meta=np.empty((0, 0, 0), ldtype),
            token="napari-unet-labels",
        )
        return labels, None
    probs = da.map_blocks(
        _dask_block,
        vol,
        spec_delayed,
        probabilities=True,
        kwargs=kwargs,
        new_axis=0,
        chunks=((n_classes,), *vol.chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0, 0), np.float32),
        token="napari-unet-probabilities",
    )
    labels = da.map_blocks(
        labels_from_probs,
        probs,
        ldtype,
        drop_axis=0,
        dtype=ldtype,
        meta=np.empty((0, 0, 0), ldtype),
    )
    return labels, probs


def _write_zarr(labels: Any, probs: Any, out: Any, probs_out: Any, yx_chunks: tuple[int, ...]):
    """Compute ``labels`` (and ``probs``) into zarr arrays (new ones for paths); return them."""
    import dask
    import dask.array as da

    shape = tuple(int(s) for s in labels.shape)
    zchunks = yx_chunks if len(shape) == 2 else (1, *yx_chunks)
    target = _zarr_target(out, shape, zchunks, labels.dtype)
    stores = [da.to_zarr(labels, target, compute=False)]
    ptarget = None
    if probs is not None:
        n_classes = int(probs.shape[0])
        ptarget = _zarr_target(probs_out, (n_classes, *shape), (1, *zchunks), np.float32)
        stores.append(da.to_zarr(probs, ptarget, compute=False))
    dask.compute(*stores)
    return (target, ptarget) if ptarget is not None else target


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
) -> Any:
    """Predict a (possibly larger-than-memory) dask array slice by slice on any scheduler.

    The array is rechunked to one full Z-slice per block and
    :func:`~napari_unet.tiling.predict_tiled` runs on every block, so the
    result equals ``predict_tiled`` on the whole array with the same tile and
    batch sizes, normalisation and device (pass ``tile_size`` for identical
    results on CUDA, whose default tile depends on the free memory).

    Parameters
    ----------
    model_or_checkpoint : UNet or str or os.PathLike
        A UNet (its config and weights are shipped once and the network is
        cached per worker process) or a checkpoint path loaded by every
        worker (its ``normalization`` is used when ``normalization`` is None, mapped
        onto the array's range by :func:`~napari_unet.normalization.stack_normalization`).
    array : dask array or array-like, (H, W) or (Z, H, W)
        Other arrays (numpy, zarr) are wrapped with ``dask.array.from_array``.
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

    Returns
    -------
    dask.array.Array or zarr.Array, or a pair of them
        Labels (and probabilities), lazily unless ``out`` was given.
    """
    spec, model, metadata = _spec_for(model_or_checkpoint)
    darr = _as_dask(array)
    shape = check_image(darr)
    tile, batch = check_tiling(model, tile_size, batch_size, overlap)
    if normalization is None and metadata.get("normalization") is not None:
        normalization = _checkpoint_normalization(darr, metadata)
    norm = image_normalization(darr, normalization)
    if out is not None and return_probabilities and probabilities_out is None:
        raise ValueError("with out and return_probabilities=True, also pass probabilities_out")
    kwargs = {
        "tile_size": tile,
        "batch_size": batch,
        "device": str(device) if isinstance(device, torch.device) else device,
        "amp": bool(amp),
        "tta": bool(tta),
        "overlap": overlap,
        "normalization": {"mean": norm[0], "std": norm[1]},
    }
    vol = (darr[None] if len(shape) == 2 else darr).rechunk((1, shape[-2], shape[-1]))
    labels, probs = _block_graph(vol, spec, int(model.n_classes), kwargs, return_probabilities)
    if len(shape) == 2:
        labels = labels[0]
        probs = None if probs is None else probs[:, 0]
    if out is None:
        return (labels, probs) if probs is not None else labels
    yx_chunks = tuple(int(c[0]) for c in darr.chunks[-2:])
    return _write_zarr(labels, probs, out, probabilities_out, yx_chunks)
