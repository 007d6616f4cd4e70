"""``napari-unet predict``: segment a stack with a trained checkpoint, headless.

It plans the outputs, runs :mod:`napari_unet.tiling` here or on a dask cluster and writes them.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import (
    THREADS_HELP,
    VOLUME_HELP,
    Progress,
    SliceSelection,
    add_device_argument,
    add_slices_argument,
    add_subcommand,
    check_device,
    positive_int,
    torch_threads,
    warn,
)
from ._outputs import locked_outputs, save_or_rescue
from ._predict_plan import Job, mapped, outputs, plan, result_info, zarr_outputs
from ._zarr_out import ZarrOutputs
from .objects import add_object_arguments

SUMMARY = "segment a stack with a trained checkpoint (headless)"

DESCRIPTION = """\
Predict the class map of an EM stack with a napari-unet checkpoint.

--out OUT.tif writes a labels TIFF (Fiji-compatible, with the image's pixel size)
through memory; --out OUT.zarr a zarr array slice by slice, for any size (the
default when the result exceeds --max-memory). The map holds the classes 1..K,
or, for a checkpoint trained with --dense, the values of its training labels
(ISBI: 0 = membrane, 255 = cell), so it compares with a truth file directly.
"""

EPILOG = """\
examples:
  napari-unet predict --model model.pt --image stack.tif --out seg.tif
  napari-unet predict --model model.pt --image big.tif --out seg.zarr --probabilities
  napari-unet predict --model isbi.pt --image train-volume.tif --slices 20-29 --tta
  napari-unet predict --model isbi.pt --image train-volume.tif --objects cell --out cells.tif
  napari-unet predict --model model.pt --image stack.tif --out seg.zarr \\
      --scheduler tcp://10.0.0.5:8786

--probabilities writes OUT_probabilities.tif, an ImageJ hyperstack of C channels x
Z slices (float32; tifffile.imread returns (Z, C, Y, X)), or OUT_probabilities.zarr
with the axes (C, Z, Y, X). With --scheduler every dask worker needs napari-unet
and must see the image and checkpoint (and a zarr output folder) at the same paths.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(sub, "predict", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("--model", required=True, metavar="MODEL.pt", help="a napari-unet checkpoint")
    p.add_argument("--image", required=True, metavar="STACK", help=f"the EM stack: {VOLUME_HELP}")
    p.add_argument(
        "--out",
        metavar="OUT.tif|OUT.zarr",
        help="output file: .tif/.tiff (in memory) or .zarr (slice by slice, any size; "
        ".ome.zarr: OME-NGFF labels with class names and colours, inside the image when it "
        "names an existing OME-Zarr image); "
        "default STACK_prediction.tif in the current folder (.zarr when the result is larger "
        "than --max-memory; STACK_prediction.ome.zarr for an OME-Zarr image)",
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write the probabilities as OUT_probabilities.tif (ImageJ hyperstack, "
        "read as (Z, C, Y, X)) or OUT_probabilities.zarr (C, Z, Y, X)",
    )
    p.add_argument(
        "--probabilities-dtype",
        choices=("float32", "float16"),
        default=None,
        help="dtype of the zarr probabilities (default float16); the TIFF holds float32",
    )
    add_slices_argument(p, "--slices", "predict only these slices; the output holds them in order")
    p.add_argument(
        "--tile", type=positive_int, metavar="PX", help="input tile size (default: from the device)"
    )
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="tiles per forward pass")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average over the 8 flips/rotations (8x slower)",
    )
    add_device_argument(p, note="; with --scheduler: on the workers")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a dask.distributed scheduler, e.g. tcp://host:8786",
    )
    p.add_argument(
        "--max-memory",
        type=float,
        default=1.0,
        metavar="GIB",
        help="largest result written as TIFF through memory, in GiB (default 1)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (else an error)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted zarr result: predict only the slices its completion record "
        "lacks (same options as the first run)",
    )
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group(
        "objects", "--objects CLASS writes the instances of CLASS to --out (uint32) and "
        "OUT.csv beside it, instead of the class map (see napari-unet objects)",
    )  # fmt: skip
    g.add_argument("--objects", metavar="CLASS", help="a class name or number 1..K")
    add_object_arguments(g)


# --------------------------------------------------------------------------- here


def _predict_local(job: Job, model: Any) -> tuple[Any, Any, ZarrOutputs | None]:
    """Predict here: in memory for TIFF; into zarr, recording each slice, resumable."""
    args = job.args
    zout = None
    if job.kind == "tif":
        ptarget = (
            np.zeros((job.n_classes, *job.out_shape), job.prob_dtype) if job.prob_out else None
        )
        target = np.zeros(job.out_shape, job.ldtype)
        out, pout, positions = target, ptarget, list(range(len(job.slices)))
    else:
        zout = zarr_outputs(job, job.out_shape)
        target, ptarget = zout.labels, zout.probs
        out, pout = zout.targets()
        positions = zout.positions
        if not positions:
            return target, ptarget, zout
    selected = [job.slices[i] for i in positions]
    image = job.td.data if job.is_2d else SliceSelection(job.td.data, selected)
    progress = Progress("predicting", quiet=args.quiet)

    def report(done: int, total: int) -> None:
        progress.update(done, total, "tiles", force=done == total)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predict_tiled_call(job, model, image, mapped(out, job.lut), pout, report)
    except (OSError, KeyboardInterrupt) as exc:
        progress.close()
        if zout is None:
            raise
        zout.flush()
        done = f"{zout.n_done} of {len(job.slices)} slice(s) are written and recorded"
        if isinstance(exc, KeyboardInterrupt):
            print(f"napari-unet: {done}; finish with --resume", file=sys.stderr, flush=True)
            raise
        from ..outputs import describe_os_error

        raise CLIError(
            f"{job.out}: could not write: {describe_os_error(exc)}; {done}: run the same "
            "command with --resume to finish"
        ) from None
    progress.close()
    from ..tiling.predict import NonFiniteWarning, TilingWarning

    for w in caught:
        if issubclass(w.category, (NonFiniteWarning, TilingWarning)):
            warn(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return target, ptarget, zout


def predict_tiled_call(
    job: Job, model: Any, image: Any, out: Any, probs_out: Any, report: Any
) -> None:
    """``predict_tiled`` with the job's options."""
    from ..tiling import predict_tiled

    predict_tiled(
        model,
        image,
        tile_size=job.args.tile,
        batch_size=job.args.batch_size,
        device=job.device,
        out=out,
        probabilities_out=probs_out,
        progress=report,
        normalization=job.normalization,
        tta=job.args.tta,
    )


# --------------------------------------------------------------------------- results


def _finish_zarr(job: Job, meta: dict, zout: ZarrOutputs | None) -> None:
    """Mark the zarr results complete (a distributed 2D result is squeezed first)."""
    info = result_info(job, meta)
    if job.args.scheduler is not None and job.is_2d:
        from ._predict_dask import finish_2d

        finish_2d(job, info)
    elif zout is not None:
        zout.finish(info)


def _write_tiffs(job: Job, labels: Any, probs: Any) -> int:
    """Write the TIFF results (to a rescue location when their folder fails); the status."""
    from ..io import write_labels_tiff
    from ..writers import write_probabilities_tiff

    td = job.td
    writes = [(job.out, lambda p: write_labels_tiff(p, labels, scale=td.scale, unit=td.unit))]
    if job.prob_out is not None and probs is not None:
        writes.append((job.prob_out, lambda p: write_probabilities_tiff(p, probs, scale=td.scale)))
    status = 0
    for path, write in writes:
        saved, error = save_or_rescue(path, write)
        if error is not None:
            print(f"napari-unet: error: {error}; wrote {saved} instead", file=sys.stderr)
            status = 1
    return status


# --------------------------------------------------------------------------- run


def _predict(job: Job, model: Any) -> tuple[Any, Any, ZarrOutputs | None]:
    if job.args.scheduler is not None:
        from ._predict_dask import predict_distributed

        return predict_distributed(job)
    with torch_threads(job.args.threads):
        return _predict_local(job, model)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "objects", None) is not None:
        return _run_objects(args)
    return _run(args)[0]


def _run_objects(args: argparse.Namespace) -> int:
    """Predict the probabilities into a hidden zarr beside ``--out``, then the objects step."""
    import copy
    import shutil

    from ..checkpoint import load_checkpoint
    from ._common import open_zarr
    from ._outputs import prepare_output
    from .objects import Source, choose, csv_path, write_objects

    if args.probabilities or args.resume:
        raise CLIError(
            "--objects writes the objects only: for probabilities or --resume, predict first, "
            "then run napari-unet objects on the result"
        )
    out = Path(args.out or f"{Path(args.image).stem}_objects.tif")
    if out.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        raise CLIError(f"--out {out}: the name must end with .tif, .tiff or .zarr")
    model, _ = load_checkpoint(args.model)
    probe = Source(np.zeros((int(model.n_classes), 1, 1), np.float32), "probabilities", (1, 1))
    choose(probe, args.objects, args.model, args)  # a bad class or option fails before work
    prepare_output(out, "--out", overwrite=args.overwrite, folder_ok=out.suffix == ".zarr")
    prepare_output(csv_path(out), "objects CSV", overwrite=args.overwrite)
    hidden = out.parent / f".{out.name}.predict"
    shutil.rmtree(hidden, ignore_errors=True)
    hidden.mkdir()
    inner = copy.copy(args)
    inner.objects, inner.probabilities, inner.overwrite = None, True, True
    inner.out = str(hidden / "prediction.zarr")
    try:
        status, job = _run(inner)
        if status != 0:
            return status
        probs = open_zarr(Path(job.prob_out), "probabilities")
        src = Source(probs, "probabilities", tuple(job.td.scale), job.td.unit)
        cls, params, name = choose(src, args.objects, args.model, args)
        return write_objects(
            src, cls, params, name, out, overwrite=args.overwrite, quiet=args.quiet
        )
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


def _run(args: argparse.Namespace) -> tuple[int, Job]:
    from ..checkpoint import load_checkpoint
    from ._common import open_image

    device = check_device(args.device, here=args.scheduler is None)
    if not args.max_memory > 0:
        raise CLIError(f"--max-memory must be > 0, got {args.max_memory}")
    model, meta = load_checkpoint(args.model)
    td = open_image(args.image, "image")  # TIFF, OME-Zarr, zarr, N5, HDF5
    job = plan(args, td, model, meta, device)
    if not args.quiet:
        print(
            f"predicting {len(job.slices)} slice(s) of {td.path.name} {tuple(td.shape)} with "
            f"{Path(args.model).name} ({job.n_classes} classes) on {args.scheduler or device}"
            f"{', TTA x8' if args.tta else ''}",
            flush=True,
        )
    t0 = time.perf_counter()
    with locked_outputs(outputs(job)):
        labels, probs, zout = _predict(job, model)
        if job.kind == "tif":
            status = _write_tiffs(job, labels, probs)
        else:
            _finish_zarr(job, meta, zout)
            status = 0
    if not args.quiet and status == 0 and args.resume and zout is not None:
        done = len(zout.positions)
        print(
            f"{job.out}: {f'predicted the {done} missing slice(s)' if done else 'already complete'}"
        )
    if not args.quiet and status == 0:
        mapping = ""
        if job.lut is not None:
            pairs = ", ".join(f"{k}->{int(job.lut[k])}" for k in range(1, job.n_classes + 1))
            mapping = f" (classes -> values {pairs})"
        print(f"wrote {job.out}{mapping} in {time.perf_counter() - t0:.1f} s", flush=True)
        if job.prob_out is not None:
            print(f"wrote {job.prob_out}", flush=True)
    return status, job
