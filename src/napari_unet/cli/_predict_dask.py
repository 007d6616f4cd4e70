"""``predict --scheduler``: one task per slice on a dask.distributed cluster.

Workers read the TIFF pages and write the zarr slices themselves; this process records them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import Progress, SliceSelection
from ._predict_plan import Job, mapped, outputs, source, zarr_outputs
from ._zarr_out import ZarrOutputs

__all__ = ["finish_2d", "predict_distributed", "read_tiff_page"]


def read_tiff_page(path: str, index: int) -> np.ndarray:
    """Page ``index`` of a multipage TIFF (run on dask workers)."""
    import tifffile

    return tifffile.imread(path, key=int(index))[None]


def _dask_image(td: Any, slices: list[int]) -> Any:
    """A dask array of the selected slices that workers read from the file themselves."""
    import dask
    import dask.array as da
    import tifffile

    data = td.data
    h, w = int(data.shape[-2]), int(data.shape[-1])
    with tifffile.TiffFile(str(td.path)) as tif:
        series = tif.series[0]
        pages_match = len(series.pages) == int(np.prod(series.shape[:-2], dtype=np.int64))
        n_pages = len(series.pages)
    dtype = np.dtype(data.dtype)
    if data.ndim == 3 and pages_match and n_pages == data.shape[0]:
        path = str(Path(td.path).resolve())
        read = dask.delayed(read_tiff_page, pure=True)
        blocks = [da.from_delayed(read(path, z), (1, h, w), dtype=dtype) for z in slices]
        return da.concatenate(blocks, axis=0)
    arr = data if data.ndim == 3 else data[None]
    sel = np.asarray(SliceSelection(arr, slices)[...])
    return da.from_array(sel, chunks=(1, h, w))


def _write_zarr_slice(
    labels: np.ndarray,
    probs: np.ndarray | None,
    out_path: str | None,
    prob_path: str | None,
    z: int,
    lut: np.ndarray | None,
) -> None:
    """Store one predicted slice into the zarr arrays (runs on a dask worker)."""
    import zarr

    if out_path is not None:
        zarr.open_array(out_path, mode="r+")[z] = labels[0] if lut is None else lut[labels[0]]
    if prob_path is not None and probs is not None:
        target = zarr.open_array(prob_path, mode="r+")
        target[:, z] = probs[:, 0].astype(target.dtype)


def _slice_tasks(job: Job, client: Any) -> list[Any]:
    """One dask task per slice: it writes the zarr outputs, or returns (labels, probabilities)."""
    import dask

    from ..tiling import predict_dask

    args = job.args
    result = predict_dask(
        str(Path(args.model).resolve()),
        _dask_image(job.td, job.slices),
        tile_size=args.tile,
        batch_size=args.batch_size,
        device=job.device,
        normalization=job.normalization,
        return_probabilities=job.prob_out is not None,
        tta=args.tta,
    )
    labels, probs = result if job.prob_out is not None else (result, None)
    label_blocks = labels.to_delayed().ravel()
    prob_blocks = probs.to_delayed().ravel() if probs is not None else [None] * len(label_blocks)
    if job.kind == "tif":
        tasks = [dask.delayed(tuple)([lb, pb]) for lb, pb in zip(label_blocks, prob_blocks)]
    else:
        prob_path = None if job.prob_out is None else os.fspath(job.prob_out)
        write = dask.delayed(_write_zarr_slice, pure=False)
        tasks = [
            write(lb, pb, os.fspath(job.out), prob_path, z, job.lut)
            for z, (lb, pb) in enumerate(zip(label_blocks, prob_blocks))
        ]
    return client.compute(tasks)


def predict_distributed(job: Job) -> tuple[Any, Any, ZarrOutputs | None]:
    from distributed import Client, as_completed

    try:
        client = Client(job.args.scheduler, timeout="15s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CLIError(f"--scheduler: could not connect to {job.args.scheduler} ({exc})") from None
    zout = None
    try:
        if job.kind == "tif":
            target = np.zeros(job.stack_shape, job.ldtype)
            ptarget = None
            if job.prob_out is not None:
                ptarget = np.zeros((job.n_classes, *job.stack_shape), job.prob_dtype)
        else:
            zout = zarr_outputs(job, job.stack_shape)
            target, ptarget = zout.labels, zout.probs
        futures = _slice_tasks(job, client)
        index = {f.key: z for z, f in enumerate(futures)}
        out = mapped(target, job.lut)
        progress = Progress("predicting", quiet=job.args.quiet)
        for done, fut in enumerate(as_completed(futures, loop=client.loop), start=1):
            result, z = fut.result(), index[fut.key]
            if zout is not None:  # the worker wrote the slice
                for recorder in zout.recorders:
                    recorder.mark(z)
            else:
                lb, pb = result
                out[z] = lb[0]
                if ptarget is not None and pb is not None:
                    ptarget[:, z] = pb[:, 0]
            progress.update(done, len(futures), "slices", force=done == len(futures))
        progress.close()
    finally:
        if zout is not None:
            zout.flush()
        client.close()
    if job.kind == "tif" and job.is_2d:
        return target[0], None if ptarget is None else ptarget[:, 0], None
    return target, ptarget, zout


def _squeeze_zarr(path: Path) -> None:
    """Rewrite a (1, H, W) / (C, 1, H, W) zarr array without the singleton Z axis."""
    import zarr

    data = np.asarray(zarr.open_array(str(path), mode="r")[...])
    data = data[0] if data.ndim == 3 else data[:, 0]
    chunks = tuple(min(s, 1024) for s in data.shape)
    new = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=chunks)
    new[...] = data


def finish_2d(job: Job, info: dict[str, Any]) -> None:
    """Squeeze the (1, H, W) zarr results of a 2D image and mark them complete."""
    import zarr

    from ..completion import SliceRecorder

    for path, _ in outputs(job):
        _squeeze_zarr(path)
        arr = zarr.open_array(str(path), mode="r+")
        SliceRecorder(arr, {**source(job), "complete": False}).finish(info)
