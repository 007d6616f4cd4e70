"""``predict --scheduler``: one task per YX block of a slice on a dask.distributed cluster.

Workers open the TIFF themselves (a :class:`~napari_unet.tiling.sources.TiffSource`: the
client reads no pixels) and write their blocks into the zarr outputs; this process records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import Progress
from ._predict_plan import Job, mapped, outputs, source, zarr_outputs
from ._zarr_out import ZarrOutputs

__all__ = ["finish_2d", "predict_distributed"]

#: the one-line hint when a worker ran out of memory
MEMORY_HINT = (
    "a dask worker ran out of memory: give the workers more memory, or use fewer threads "
    "per worker or a smaller --tile (each task holds one YX block; see docs/SCALE.md)"
)


def _tiff_source(job: Job) -> Any:
    from ..tiling.sources import TiffSource

    slices = None if job.is_2d else job.slices
    if getattr(job.td, "format", "tiff") != "tiff":  # zarr/N5: workers read the dask chunks
        data = job.td.data if slices is None else job.td.data[slices]
        # an open HDF5 file cannot travel to the workers: its selected slices are read here
        return np.asarray(data) if job.td.format == "hdf5" else data
    return TiffSource(job.td.path, job.td.shape, job.td.data.dtype, slices)


def _run_blocks(job: Job, client: Any, zout: ZarrOutputs | None) -> tuple[Any, Any]:
    """Labels and probabilities: written into ``zout`` by the workers, or brought back (TIFF)."""
    from ..tiling import predict_dask

    args = job.args
    progress = Progress("predicting", quiet=args.quiet)

    def report(done: int, total: int) -> None:
        progress.update(done, total, "blocks", force=done == total)

    kwargs = {
        "tile_size": args.tile, "batch_size": args.batch_size, "device": job.device,
        "normalization": job.normalization, "tta": args.tta,
    }  # fmt: skip
    model = str(Path(args.model).resolve())
    with client.as_current():
        if zout is not None:
            predict_dask(
                model, _tiff_source(job), out=zout.labels, probabilities_out=zout.probs,
                labels_lut=job.lut, resume=bool(args.resume), progress=report, **kwargs,
            )  # fmt: skip
            progress.close()
            return zout.labels, zout.probs
        result = predict_dask(
            model, _tiff_source(job), return_probabilities=job.prob_out is not None, **kwargs
        )
        labels, probs = result if job.prob_out is not None else (result, None)
        target = np.zeros(job.out_shape, job.ldtype)
        mapped(target, job.lut)[...] = np.asarray(client.compute(labels).result())
        ptarget = None
        if probs is not None:
            ptarget = np.asarray(client.compute(probs).result()).astype(job.prob_dtype)
    progress.close()
    return target, ptarget


def predict_distributed(job: Job) -> tuple[Any, Any, ZarrOutputs | None]:
    from distributed import Client
    from distributed.scheduler import KilledWorker

    try:
        client = Client(job.args.scheduler, timeout="15s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CLIError(f"--scheduler: could not connect to {job.args.scheduler} ({exc})") from None
    zout = None
    try:
        if job.kind == "zarr":
            zout = zarr_outputs(job, job.out_shape)
        target, ptarget = _run_blocks(job, client, zout)
    except (KilledWorker, MemoryError) as exc:
        done = "" if zout is None else "; the finished blocks are recorded: finish with --resume"
        raise CLIError(f"{MEMORY_HINT} ({type(exc).__name__}){done}") from None
    finally:
        client.close()
    return target, ptarget, zout


def finish_2d(job: Job, info: dict[str, Any]) -> None:
    """Mark the zarr results of a 2D image complete (the workers wrote them 2D)."""
    import zarr

    from ..completion import SliceRecorder

    for path, _ in outputs(job):
        arr = zarr.open_array(str(path), mode="r+")
        SliceRecorder(arr, {**source(job), "complete": False}).finish(info)
