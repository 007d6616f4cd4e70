"""``napari-unet predict``: segment a stack with a trained checkpoint, headless.

It plans the outputs, runs :mod:`napari_unet.tiling` here or on a dask cluster and writes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import (
    THREADS_HELP,
    Progress,
    SliceSelection,
    add_device_argument,
    add_slices_argument,
    add_subcommand,
    check_device,
    check_output_path,
    human_bytes,
    nbytes_of,
    parse_slices,
    positive_int,
    torch_threads,
    warn,
)

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
    p.add_argument("--image", required=True, metavar="STACK.tif", help="the EM stack (TIFF)")
    p.add_argument(
        "--out",
        metavar="OUT.tif|OUT.zarr",
        help="output file: .tif/.tiff (in memory) or .zarr (slice by slice, any size); "
        "default STACK_prediction.tif in the current folder (.zarr when the result is larger "
        "than --max-memory)",
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
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


# --------------------------------------------------------------------------- plan


@dataclasses.dataclass
class _Job:
    """One prediction: what is read, what is written where, and how."""

    args: argparse.Namespace
    td: Any  # napari_unet.io.TiffData of the image
    slices: list[int]
    n_classes: int
    lut: np.ndarray | None  # class -> file value (a --dense checkpoint), or None
    ldtype: np.dtype
    out: Path
    kind: str  # "tif" or "zarr"
    prob_out: Path | None
    prob_dtype: np.dtype
    normalization: dict[str, float] | None
    device: Any

    @property
    def is_2d(self) -> bool:
        return len(self.td.shape) == 2

    @property
    def stack_shape(self) -> tuple[int, int, int]:
        """The output as a stack: ``(n_slices, H, W)``, ``(1, H, W)`` for a 2D image."""
        return (len(self.slices), int(self.td.shape[-2]), int(self.td.shape[-1]))

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.stack_shape[1:] if self.is_2d else self.stack_shape


def _output_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix in (".tif", ".tiff"):
        return "tif"
    raise CLIError(f"--out {path}: the name must end with .tif, .tiff or .zarr")


def _choose_output(args: argparse.Namespace, result_bytes: int) -> tuple[Path, str]:
    """``--out`` (or the default name) and its kind; a TIFF must fit in ``--max-memory``."""
    budget = int(args.max_memory * 2**30)
    if args.out is None:
        kind = "tif" if result_bytes <= budget else "zarr"
        return Path.cwd() / f"{Path(args.image).stem}_prediction.{kind}", kind
    out = Path(args.out)
    kind = _output_kind(out)
    if kind == "tif" and result_bytes > budget:
        raise CLIError(
            f"the result ({human_bytes(result_bytes)}) is larger than --max-memory "
            f"({args.max_memory:g} GiB): write zarr instead (--out {out.with_suffix('.zarr')})"
        )
    return out, kind


def _plan(args: argparse.Namespace, td: Any, model: Any, meta: dict, device: Any) -> _Job:
    """Check the options against the image and checkpoint; decide the outputs."""
    from ..labels import class_lut, label_dtype

    n = 1 if len(td.shape) == 2 else int(td.shape[0])
    if args.slices is not None and len(td.shape) == 2:
        raise CLIError("--slices: the image is a single 2D slice")
    slices = parse_slices(args.slices, n) if args.slices is not None else list(range(n))
    n_classes = int(model.n_classes)
    lut = class_lut(meta.get("label_mapping"), n_classes)
    ldtype = np.dtype(lut.dtype) if lut is not None else label_dtype(n_classes)
    shape = (len(slices), int(td.shape[-2]), int(td.shape[-1]))
    result_bytes = nbytes_of(shape, ldtype)
    if args.probabilities:
        result_bytes += nbytes_of((n_classes, *shape), args.probabilities_dtype or "float32")
    out, kind = _choose_output(args, result_bytes)
    check_output_path(out, "--out", folder_ok=kind == "zarr")
    prob_out = (
        out.with_name(f"{out.stem}_probabilities{out.suffix}") if args.probabilities else None
    )
    if prob_out is not None:
        check_output_path(prob_out, "probabilities output", folder_ok=kind == "zarr")
    if kind == "tif" and args.probabilities_dtype == "float16":
        raise CLIError(
            "--probabilities-dtype float16: the probabilities TIFF (an ImageJ hyperstack) "
            f"holds float32; write zarr for float16 (--out {out.with_suffix('.zarr')})"
        )
    prob_dtype = np.dtype(args.probabilities_dtype or ("float32" if kind == "tif" else "float16"))
    normalization = meta.get("normalization") or None
    if normalization is None:
        warn("the checkpoint stores no normalization: estimating it from the image")
    return _Job(
        args, td, slices, n_classes, lut, ldtype, out, kind, prob_out, prob_dtype,
        normalization, device,
    )  # fmt: skip


# --------------------------------------------------------------------------- outputs


def _open_zarr(path: Path, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> Any:
    import zarr

    try:
        return zarr.open_array(
            str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
        )
    except OSError as exc:
        raise CLIError(f"{path}: could not create the zarr array ({exc})") from None


def _targets(job: _Job, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The arrays the labels and probabilities go into: in memory for TIFF, zarr on disk."""
    pshape = (job.n_classes, *shape)
    if job.kind == "tif":
        probs = np.zeros(pshape, job.prob_dtype) if job.prob_out is not None else None
        return np.zeros(shape, job.ldtype), probs
    chunks = (*[1] * (len(shape) - 2), min(shape[-2], 1024), min(shape[-1], 1024))
    target = _open_zarr(job.out, shape, job.ldtype, chunks)
    probs = None
    if job.prob_out is not None:
        probs = _open_zarr(job.prob_out, pshape, job.prob_dtype, (1, *chunks))
    return target, probs


def _mapped(target: Any, lut: np.ndarray | None) -> Any:
    """``target``, writing file values instead of classes for a ``--dense`` checkpoint."""
    from ..labels import MappedOutput

    return target if lut is None else MappedOutput(target, lut)


def _zarr_attrs(job: _Job, meta: dict) -> None:
    import zarr

    lut = job.lut
    try:
        arr = zarr.open_array(str(job.out), mode="r+")
        arr.attrs.update(
            {
                "napari_unet": {
                    "slices": job.slices,
                    "scale": list(job.td.scale),
                    "unit": job.td.unit,
                    "class_names": meta.get("class_names"),
                    "label_mapping": meta.get("label_mapping"),
                    "values": None if lut is None else [int(v) for v in lut[1 : job.n_classes + 1]],
                }
            }
        )
    except Exception as exc:  # attributes are a nicety
        warn(f"could not write the zarr attributes: {exc}")


def _squeeze_zarr(path: Path) -> None:
    """Rewrite a (1, H, W) / (C, 1, H, W) zarr array without the singleton Z axis."""
    import zarr

    data = np.asarray(zarr.open_array(str(path), mode="r")[...])
    data = data[0] if data.ndim == 3 else data[:, 0]
    chunks = tuple(min(s, 1024) for s in data.shape)
    new = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=chunks)
    new[...] = data


# --------------------------------------------------------------------------- here


def _predict_local(job: _Job, model: Any) -> tuple[Any, Any]:
    from ..tiling import predict_tiled

    args = job.args
    image = job.td.data if job.is_2d else SliceSelection(job.td.data, job.slices)
    target, ptarget = _targets(job, job.out_shape)
    progress = Progress("predicting", quiet=args.quiet)

    def report(done: int, total: int) -> None:
        progress.update(done, total, "tiles", force=done == total)

    try:
        predict_tiled(
            model,
            image,
            tile_size=args.tile,
            batch_size=args.batch_size,
            device=job.device,
            out=_mapped(target, job.lut),
            probabilities_out=ptarget,
            progress=report,
            normalization=job.normalization,
            tta=args.tta,
        )
    finally:
        progress.close()
    return target, ptarget


# --------------------------------------------------------------------------- on a dask cluster


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


def _slice_tasks(job: _Job, client: Any) -> list[Any]:
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


def _predict_distributed(job: _Job) -> tuple[Any, Any]:
    from distributed import Client, as_completed

    try:
        client = Client(job.args.scheduler, timeout="15s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CLIError(f"--scheduler: could not connect to {job.args.scheduler} ({exc})") from None
    try:
        target, ptarget = _targets(job, job.stack_shape)
        futures = _slice_tasks(job, client)
        index = {f.key: z for z, f in enumerate(futures)}
        out = _mapped(target, job.lut)
        progress = Progress("predicting", quiet=job.args.quiet)
        for done, fut in enumerate(as_completed(futures, loop=client.loop), start=1):
            result = fut.result()
            if job.kind == "tif":
                lb, pb = result
                out[index[fut.key]] = lb[0]
                if ptarget is not None and pb is not None:
                    ptarget[:, index[fut.key]] = pb[:, 0]
            progress.update(done, len(futures), "slices", force=done == len(futures))
        progress.close()
    finally:
        client.close()
    if job.kind == "zarr":
        for path in (job.out, job.prob_out) if job.is_2d else ():
            if path is not None:
                _squeeze_zarr(path)
        return None, None
    if job.is_2d:
        return target[0], None if ptarget is None else ptarget[:, 0]
    return target, ptarget


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..io import DEFAULT_MEMORY_BUDGET, read_tiff, write_labels_tiff
    from ..writers import write_probabilities_tiff

    device = check_device(args.device, here=args.scheduler is None)
    if not args.max_memory > 0:
        raise CLIError(f"--max-memory must be > 0, got {args.max_memory}")
    model, meta = load_checkpoint(args.model)
    td = read_tiff(args.image, as_labels=False, memory_budget=DEFAULT_MEMORY_BUDGET)
    job = _plan(args, td, model, meta, device)
    if not args.quiet:
        print(
            f"predicting {len(job.slices)} slice(s) of {td.path.name} {tuple(td.shape)} with "
            f"{Path(args.model).name} ({job.n_classes} classes) on {args.scheduler or device}"
            f"{', TTA x8' if args.tta else ''}",
            flush=True,
        )
    t0 = time.perf_counter()
    if args.scheduler is not None:
        labels, probs = _predict_distributed(job)
    else:
        with torch_threads(args.threads):
            labels, probs = _predict_local(job, model)
    if job.kind == "tif":
        write_labels_tiff(job.out, labels, scale=td.scale, unit=td.unit)
        if job.prob_out is not None and probs is not None:
            write_probabilities_tiff(job.prob_out, probs, scale=td.scale)
    else:
        _zarr_attrs(job, meta)
    if not args.quiet:
        mapping = ""
        if job.lut is not None:
            pairs = ", ".join(f"{k}->{int(job.lut[k])}" for k in range(1, job.n_classes + 1))
            mapping = f" (classes -> values {pairs})"
        print(f"wrote {job.out}{mapping} in {time.perf_counter() - t0:.1f} s", flush=True)
        if job.prob_out is not None:
            print(f"wrote {job.prob_out}", flush=True)
    return 0
