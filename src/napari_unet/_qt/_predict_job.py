"""Qt-free work of the Predict dock: one prediction run, slice by slice, in a worker thread.

It normalises the stack as the training stack was, counts NaN/inf pixels and streams zarr results.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import label_dtype
from ..slices import read_slice
from ..writers import create_zarr

#: predictions larger than this (bytes of labels) stream to disk in "auto" mode
DISK_THRESHOLD = 1 << 30
#: yielded when the run stops early (finished slices stay)
CANCELLED = "cancelled"
#: said when a checkpoint records no normalization (as the CLI says it)
NO_RECORD = "the checkpoint stores no normalization: estimating it from the image"


@dataclass
class Normalised:
    """The statistics a stack is normalised with (``stack_normalization``) and its note.

    Yielded when the worker computed them; the dock hands it to the next run, which
    reuses it while the image array and the model's records are the same.
    """

    image: Any  # weakref.ref of the image array (None: never reused)
    key: str  # the model's normalization and intensity records
    stats: dict[str, float]
    note: str | None

    def fits(self, image: Any, key: str) -> bool:
        return self.image is not None and self.image() is image and self.key == key


@dataclass
class PredictRequest:
    """Everything one prediction run needs (built on the GUI thread, read by the worker)."""

    image: Any
    slices: list[int]
    model: Any = None
    metadata: dict[str, Any] | None = None
    checkpoint: str | None = None
    tile: int | None = None
    batch: int | None = None
    device: str = "auto"
    tta: bool = False
    probabilities: bool = False
    storage: str = "auto"  # "auto", "memory" or "disk (zarr)"
    lazy: bool = False  # the image is not an in-memory numpy array
    folder: str | None = None  # where new zarr arrays go
    reuse: tuple[Any, Any] = (None, None)  # zarr arrays of the last run (labels, probabilities)
    normalised: Normalised | None = None  # of the last run


@dataclass
class Outputs:
    """Yielded before the first slice: the zarr arrays the worker writes (None: the GUI's)."""

    n_classes: int
    labels: Any
    probabilities: Any
    metadata: dict[str, Any] | None = None  # of a model loaded from a checkpoint


@dataclass
class SliceDone:
    z: int
    labels: np.ndarray | None  # None when the worker wrote it to ``Outputs.labels``
    probabilities: np.ndarray | None
    done: int  # slices finished so far


def _on_disk(storage: str, lazy: bool, nbytes: int) -> bool:
    if storage == "memory":
        return False
    return storage == "disk (zarr)" or lazy or nbytes > DISK_THRESHOLD


def _zarr_array(reuse: Any, folder: str, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """``reuse`` if it is a zarr array of ``shape`` that holds ``dtype``, else a new one."""
    import zarr

    if isinstance(reuse, zarr.Array) and reuse.shape == shape and np.can_cast(dtype, reuse.dtype):
        return reuse
    return create_zarr(
        tempfile.mkdtemp(prefix=f"{name}-", suffix=".zarr", dir=folder), shape, dtype
    )


def _wanted(req: PredictRequest, n_classes: int) -> list[tuple[str, tuple[int, ...], Any, bool]]:
    """(name, shape, dtype, on disk) of each result of the run: the storage rule applied."""
    shape = tuple(int(n) for n in req.image.shape)
    wanted = [("prediction", shape, label_dtype(n_classes))]
    if req.probabilities:
        wanted.append(("probabilities", (n_classes, *shape), np.dtype(np.float32)))
    out = []
    for name, ashape, dtype in wanted:
        nbytes = int(np.prod(ashape)) * dtype.itemsize
        out.append(
            (name, ashape, dtype, bool(req.folder) and _on_disk(req.storage, req.lazy, nbytes))
        )
    return out


def in_memory(req: PredictRequest, n_classes: int) -> bool:
    """Whether every result of ``req`` stays in memory (the GUI makes its arrays at once)."""
    return not any(disk for *_, disk in _wanted(req, n_classes))


def _outputs(req: PredictRequest, n_classes: int) -> Outputs:
    """Worker: the zarr arrays to stream into (the storage rule applied to each result)."""
    arrays: list[Any] = [None, None]
    for i, (name, ashape, dtype, disk) in enumerate(_wanted(req, n_classes)):
        if disk:
            arrays[i] = _zarr_array(req.reuse[i], req.folder, name, ashape, dtype)
    return Outputs(n_classes, *arrays)


def _model_on_device(req: PredictRequest) -> tuple[Any, dict[str, Any], Any]:
    """Worker: the model (loaded from the checkpoint if any), its metadata and the device."""
    from ..devices import resolve_device

    model, metadata = req.model, req.metadata
    if req.checkpoint is not None:
        from ..checkpoint import load_checkpoint

        model, metadata = load_checkpoint(req.checkpoint)
    dev = resolve_device(req.device)
    params = list(model.parameters())
    if params and params[0].device != dev and not (dev.type == params[0].device.type == "cuda"):
        model = copy.deepcopy(model).to(dev)  # once, not per slice
    return model, metadata or {}, dev


def _records(metadata: Mapping[str, Any]) -> tuple[dict | None, dict | None]:
    """The model's usable ``normalization`` and ``intensity`` records (None: absent or bad)."""
    from ..normalization import check_intensity

    norm = metadata.get("normalization")
    if not (isinstance(norm, Mapping) and "mean" in norm and "std" in norm):
        norm = None
    intensity = metadata.get("intensity")
    try:
        intensity = None if intensity is None else check_intensity(intensity)
    except ValueError:
        intensity = None
    return (None if norm is None else dict(norm)), intensity


def stack_statistics(req: PredictRequest, metadata: Mapping[str, Any]) -> Normalised:
    """Worker: how to normalise ``req.image`` for this model, computed once per stack
    (:func:`napari_unet.normalization.stack_normalization`); ``req.normalised`` if it fits."""
    from ..normalization import stack_normalization

    norm, intensity = _records(metadata)
    key = json.dumps([norm, intensity], sort_keys=True, default=str)
    if req.normalised is not None and req.normalised.fits(req.image, key):
        return req.normalised
    stats, note = stack_normalization(req.image, norm, intensity)
    if norm is None and req.checkpoint is not None:
        note = NO_RECORD
    try:
        ref = weakref.ref(req.image)
    except TypeError:  # an array type without weak references: computed each run
        ref = None
    return Normalised(ref, key, stats, note)


def nonfinite_pixels(data: np.ndarray) -> int:
    """How many pixels of ``data`` are NaN or infinite (0 for integer images)."""
    if data.dtype.kind not in "fc":
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def quiet_core_warning() -> None:
    """The worker reports NaN/inf pixels once per run: ``predict_tiled``'s own warning for each
    slice (attributed to this module, its caller) is not shown again."""
    from ..tiling.predict import NonFiniteWarning

    pattern = re.escape(__name__) + r"\Z"
    for action, _msg, category, module, _line in warnings.filters:
        if (action, category) == ("ignore", NonFiniteWarning) and module is not None:
            if module.pattern == pattern:
                return
    warnings.filterwarnings("ignore", category=NonFiniteWarning, module=pattern)


def _nonfinite_report(counts: dict[int, int], n_slices: int, hw: tuple[int, ...]) -> Any:
    from ..tiling.predict import NonFiniteWarning

    if not counts:
        return None
    return NonFiniteWarning(sum(counts.values()), n_slices * int(np.prod(hw)), sorted(counts))


def _predict_slice(
    model: Any, data: np.ndarray, req: PredictRequest, dev: Any, stats: dict, cancel: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    from ..tiling import predict_tiled

    result = predict_tiled(
        model,
        data,
        tile_size=req.tile,
        batch_size=req.batch,
        device=dev,
        return_probabilities=req.probabilities,
        normalization=stats,
        tta=req.tta,
        progress=lambda done, n: not cancel.is_set(),
    )
    labels, probs = result if req.probabilities else (result, None)
    return np.asarray(labels), None if probs is None else np.asarray(probs)


def _stopped(bad: dict[int, int], n_done: int, hw: tuple[int, ...]) -> Iterator[Any]:
    if (report := _nonfinite_report(bad, n_done, hw)) is not None:
        yield report
    yield CANCELLED


def predict_job(req: PredictRequest, cancel: threading.Event) -> Iterator[Any]:
    """Worker: predict ``req.slices`` one by one; zarr results are written here, not in the GUI.

    Yields :class:`Outputs`, a :class:`Normalised` when the statistics were computed, one
    :class:`SliceDone` per slice, a ``NonFiniteWarning`` for the run's NaN/inf pixels, and
    :data:`CANCELLED` if stopped early.
    """
    from ..tiling import PredictionCancelled

    quiet_core_warning()
    model, metadata, dev = _model_on_device(req)
    normalised = stack_statistics(req, metadata)
    out = _outputs(req, int(model.n_classes))
    if req.checkpoint is not None:
        out.metadata = metadata
    yield out
    if normalised is not req.normalised:
        yield normalised
    bad: dict[int, int] = {}
    hw = tuple(req.image.shape[-2:])
    for i, z in enumerate(req.slices):
        if cancel.is_set():
            yield from _stopped(bad, i, hw)
            return
        data = read_slice(req.image, z)
        try:
            labels, probs = _predict_slice(model, data, req, dev, normalised.stats, cancel)
        except PredictionCancelled:
            yield from _stopped(bad, i, hw)
            return
        if n_bad := nonfinite_pixels(data):
            bad[int(z)] = n_bad
        index = int(z) if len(req.image.shape) >= 3 else ...
        if out.labels is not None:
            out.labels[index] = labels
            labels = None
        if probs is not None:
            probs = probs.astype(np.float32, copy=False)  # here, not on the GUI thread
        if out.probabilities is not None:
            out.probabilities[(slice(None), index)] = probs
            probs = None
        yield SliceDone(int(z), labels, probs, i + 1)
    if (report := _nonfinite_report(bad, len(req.slices), hw)) is not None:
        yield report
