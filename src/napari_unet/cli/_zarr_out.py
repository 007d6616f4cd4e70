"""Zarr results of ``predict``: created with a completion record, resumed where they stopped, finished.

Labels ``(Z, Y, X)`` and probabilities ``(C, Z, Y, X)`` each carry a record (:mod:`napari_unet.completion`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..completion import RecordedTarget, SliceRecorder, missing_slices, read_record, start_record
from . import CLIError
from ._common import open_zarr

__all__ = ["ZarrOutputs", "open_outputs"]


@dataclasses.dataclass
class ZarrOutputs:
    """The zarr arrays of one prediction, their records, and the slice positions still to predict."""

    labels: Any
    probs: Any | None
    recorders: list[SliceRecorder]
    positions: list[int]
    ngff: Path | None = None  # the OME-NGFF label image the labels belong to

    def targets(self) -> tuple[RecordedTarget, RecordedTarget | None]:
        """``predict_tiled`` outputs writing the :attr:`positions` and recording them."""
        labels = RecordedTarget(self.labels, self.positions, self.recorders[0], channels=False)
        probs = None
        if self.probs is not None:
            probs = RecordedTarget(self.probs, self.positions, self.recorders[1], channels=True)
        return labels, probs

    @property
    def n_done(self) -> int:
        return min(len(r.done) for r in self.recorders)

    def flush(self) -> None:
        """Record the slices written so far (after a failure)."""
        for recorder in self.recorders:
            try:
                recorder.flush()
            except Exception:  # the disk may be full: the last record stays
                pass

    def finish(self, info: Mapping[str, Any]) -> None:
        """Mark every array complete, with ``info`` (the last write)."""
        if self.ngff is not None:  # pixel size and classes, known now, into the NGFF metadata
            from ..ngff_labels import update_ngff_labels

            update_ngff_labels(
                self.ngff, scale=info.get("scale"), unit=str(info.get("unit") or "pixel"),
                class_names=info.get("class_names"), values=info.get("values"),
            )  # fmt: skip
        for recorder in self.recorders:
            recorder.finish(info)


def _create(path: Path, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> Any:
    import zarr

    from ..ngff import image_multiscale
    from ..ngff_labels import create_ngff_labels

    try:
        if path.parent.name == "labels" and image_multiscale(path.parent.parent) is not None:
            return create_ngff_labels(
                path.parent.parent, shape, dtype, name=path.name, chunks=chunks
            )
        if path.name.lower().endswith(".ome.zarr"):  # a standalone OME-NGFF label image
            return create_ngff_labels(path, shape, dtype, chunks=chunks)
        return zarr.open_array(
            str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
        )
    except OSError as exc:
        raise CLIError(f"{path}: could not create the zarr array ({exc.strerror or exc})") from None


def _reopen(
    path: Path, shape: tuple[int, ...], dtype: Any, info: Mapping[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The existing array at ``path`` and its record, if they match this prediction."""
    arr = open_zarr(path, "--resume", mode="r+")
    record = read_record(arr)
    if record is None:
        raise CLIError(
            f"--resume: {path} has no napari-unet completion record: predict again with --overwrite"
        )
    differ = [k for k, v in info.items() if record.get(k) != v]
    if tuple(arr.shape) != tuple(shape) or np.dtype(arr.dtype) != np.dtype(dtype):
        differ.append(f"shape/dtype {tuple(arr.shape)} {arr.dtype}")
    if differ:
        raise CLIError(
            f"--resume: {path} was written with another {', '.join(differ)}: resume with the "
            "same options, or predict again with --overwrite"
        )
    return arr, record


def open_outputs(
    out: Path,
    prob_out: Path | None,
    shape: tuple[int, ...],
    dtypes: tuple[Any, Any],
    n_classes: int,
    info: Mapping[str, Any],
    resume: bool,
) -> ZarrOutputs:
    """New zarr arrays for the labels (and probabilities), or, with ``resume``, the existing ones."""
    chunks = (*[1] * (len(shape) - 2), min(shape[-2], 1024), min(shape[-1], 1024))
    paths = [(out, shape, dtypes[0], chunks)]
    if prob_out is not None:
        paths.append((prob_out, (n_classes, *shape), dtypes[1], (1, *chunks)))
    arrays, recorders = [], []
    for path, arr_shape, dtype, arr_chunks in paths:
        if resume:
            arr, record = _reopen(path, arr_shape, dtype, info)
        else:
            arr = _create(path, arr_shape, dtype, arr_chunks)
            record = start_record(arr, info)
        arrays.append(arr)
        recorders.append(SliceRecorder(arr, record))
    n = shape[0] if len(shape) == 3 else 1
    missing = set(range(n)) if not resume else set()
    for arr in arrays if resume else ():
        missing |= set(missing_slices(arr) or [])
    probs = arrays[1] if prob_out is not None else None
    from ..ngff import level0_path

    ngff = out if level0_path(out) is not None else None
    return ZarrOutputs(arrays[0], probs, recorders, sorted(missing), ngff)
