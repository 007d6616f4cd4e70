"""``napari-unet predict``: segment a stack with a trained checkpoint, headless.

Output
------
* ``--out OUT.tif``: a labels TIFF (Fiji-compatible, with the image's pixel
  size), for results that fit in memory;
* ``--out OUT.zarr``: a zarr array written slice by slice, for any size (the
  default when the result would exceed the in-memory limit).

The class map holds the classes ``1..K``, except for checkpoints trained with
``--dense``: their ``label_mapping`` maps the classes back to the values of the
training file (ISBI: ``0`` = membrane, ``255`` = cell), so a prediction can be
compared with a truth file directly (``napari-unet evaluate``).

``--probabilities`` also writes the softmax probabilities ``(C, Z, Y, X)`` next
to it: ``OUT_probabilities.tif`` (float32) or ``OUT_probabilities.zarr``.

``--scheduler tcp://host:port`` runs the prediction on a dask.distributed
cluster (:func:`napari_unet.tiling.predict_dask`): every worker needs
napari-unet installed and must see the image and checkpoint files at the same
paths (and, for zarr output, the output folder).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import (
    SLICES_HELP,
    THREADS_HELP,
    MappedOutput,
    Progress,
    SliceSelection,
    check_device,
    check_output_path,
    class_lut,
    human_bytes,
    nbytes_of,
    parse_slices,
    positive_int,
    torch_threads,
    warn,
)

EPILOG = """\
examples:
  napari-unet predict --model model.pt --image stack.tif --out seg.tif
  napari-unet predict --model model.pt --image big.tif --out seg.zarr --probabilities
  napari-unet predict --model isbi.pt --image train-volume.tif --slices 20-29 --tta
  napari-unet predict --model model.pt --image stack.tif --out seg.zarr \\
      --scheduler tcp://10.0.0.5:8786

Checkpoints trained with --dense write the values of their training labels
(e.g. 0/255 for ISBI) instead of the classes 1..K.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment a stack with a trained checkpoint (headless)",
        description="Predict the class map of an EM stack with a napari-unet checkpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        help="also write the probabilities (C, Z, Y, X) as OUT_probabilities.tif|.zarr",
    )
    p.add_argument(
        "--probabilities-dtype",
        choices=("float32", "float16"),
        default=None,
        help="dtype of the probabilities (default float32 for TIFF, float16 for zarr)",
    )
    p.add_argument(
        "--slices",
        metavar="LIST",
        help=f"predict only these slices; the output holds them in order. {SLICES_HELP}",
    )
    p.add_argument(
        "--tile", type=positive_int, metavar="PX", help="input tile size (default: from the device)"
    )
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="tiles per forward pass")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average over the 8 flips/rotations (8x slower)",
    )
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto (default), cpu, cuda, cuda:N or mps (with --scheduler: on the workers)",
    )
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
    p.set_defaults(handler=run)


# --------------------------------------------------------------------------- helpers


def _probabilities_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_probabilities{out.suffix}")


def _output_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix in (".tif", ".tiff"):
        return "tif"
    raise CLIError(f"--out {path}: the name must end with .tif, .tiff or .zarr")


def _open_zarr(path: Path, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> Any:
    import zarr

    try:
        return zarr.open_array(
            str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
        )
    except OSError as exc:
        raise CLIError(f"{path}: could not create the zarr array ({exc})") from None


def _yx_chunks(h: int, w: int) -> tuple[int, int]:
    return min(h, 1024), min(w, 1024)


def _write_probabilities_tiff(path: Path, probs: np.ndarray, scale: tuple[float, ...]) -> None:
    """Write ``(C, Z, Y, X)`` (or ``(C, Y, X)``) probabilities as a shaped TIFF.

    ImageJ hyperstacks need the Z axis before C, so this is a plain tifffile
    "shaped" TIFF: ``tifffile.imread`` returns ``(C, Z, Y, X)``; Fiji opens it as
    a stack of C x Z pages (channel-major).
    """
    import tifffile

    from ..io import atomic_write

    axes = "CZYX" if probs.ndim == 4 else "CYX"
    sy, sx = scale[-2], scale[-1]

    def _write(tmp: Path) -> None:
        tifffile.imwrite(
            str(tmp),
            probs,
            metadata={"axes": axes},
            resolution=(1.0 / sx, 1.0 / sy),
            photometric="minisblack",
        )

    atomic_write(path, _write)


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
        blocks = [
            da.from_delayed(
                dask.delayed(read_tiff_page, pure=True)(path, z), (1, h, w), dtype=dtype
            )
            for z in slices
        ]
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
) -> int:
    """Store one predicted slice into the zarr arrays (runs on a dask worker)."""
    import zarr

    if lut is not None:
        labels = lut[labels]
    if out_path is not None:
        zarr.open_array(out_path, mode="r+")[z] = labels[0]
    if prob_path is not None and probs is not None:
        target = zarr.open_array(prob_path, mode="r+")
        target[:, z] = probs[:, 0].astype(target.dtype)
    return z


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..io import DEFAULT_MEMORY_BUDGET, read_tiff, write_labels_tiff
    from ..tiling import label_dtype

    if args.scheduler is None:
        device = check_device(args.device)
    else:
        from ..devices import DEVICE_CHOICES

        base = str(args.device).split(":")[0].strip().lower()
        if base not in DEVICE_CHOICES:
            raise CLIError(
                f"--device: unknown device {args.device!r}: choose one of {', '.join(DEVICE_CHOICES)}"
            )
        device = args.device
    if not args.max_memory > 0:
        raise CLIError(f"--max-memory must be > 0, got {args.max_memory}")
    model, meta = load_checkpoint(args.model)
    td = read_tiff(args.image, as_labels=False, memory_budget=DEFAULT_MEMORY_BUDGET)
    is_2d = len(td.shape) == 2
    n = 1 if is_2d else int(td.shape[0])
    if args.slices is not None and is_2d:
        raise CLIError("--slices: the image is a single 2D slice")
    slices = parse_slices(args.slices, n) if args.slices is not None else list(range(n))
    h, w = int(td.shape[-2]), int(td.shape[-1])
    out_shape: tuple[int, ...] = (h, w) if is_2d else (len(slices), h, w)

    n_classes = int(model.n_classes)
    lut = class_lut(meta.get("label_mapping"), n_classes)
    ldtype = np.dtype(lut.dtype) if lut is not None else label_dtype(n_classes)
    prob_tif_dtype = np.dtype(args.probabilities_dtype or "float32")
    result_bytes = nbytes_of(out_shape, ldtype)
    if args.probabilities:
        result_bytes += nbytes_of((n_classes, *out_shape), prob_tif_dtype)
    budget = int(args.max_memory * 2**30)

    if args.out is None:
        kind = "tif" if result_bytes <= budget else "zarr"
        out = Path.cwd() / f"{Path(args.image).stem}_prediction.{kind}"
    else:
        out = Path(args.out)
        kind = _output_kind(out)
        if kind == "tif" and result_bytes > budget:
            raise CLIError(
                f"the result ({human_bytes(result_bytes)}) is larger than --max-memory "
                f"({args.max_memory:g} GiB): write zarr instead (--out {out.with_suffix('.zarr')})"
            )
    check_output_path(out, "--out", folder_ok=kind == "zarr")
    prob_out = _probabilities_path(out) if args.probabilities else None
    if prob_out is not None:
        check_output_path(prob_out, "probabilities output", folder_ok=kind == "zarr")
    prob_dtype = np.dtype(args.probabilities_dtype or ("float32" if kind == "tif" else "float16"))

    normalization = meta.get("normalization")
    if not normalization:
        warn("the checkpoint stores no normalization: estimating it from the image")
        normalization = None

    quiet = args.quiet
    if not quiet:
        where = args.scheduler or str(device)
        print(
            f"predicting {len(slices)} slice(s) of {td.path.name} {tuple(td.shape)} with "
            f"{Path(args.model).name} ({n_classes} classes) on {where}"
            f"{', TTA x8' if args.tta else ''}",
            flush=True,
        )
    t0 = time.perf_counter()
    if args.scheduler is not None:
        labels, probs = _predict_distributed(
            args,
            td,
            slices,
            out_shape,
            kind,
            out,
            prob_out,
            prob_dtype,
            lut,
            ldtype,
            normalization,
            device,
            is_2d,
        )
    else:
        with torch_threads(args.threads):
            labels, probs = _predict_local(
                args,
                model,
                td,
                slices,
                out_shape,
                kind,
                out,
                prob_out,
                prob_dtype,
                lut,
                ldtype,
                normalization,
                device,
                is_2d,
            )
    if kind == "tif":
        write_labels_tiff(out, labels, scale=td.scale, unit=td.unit)
        if prob_out is not None and probs is not None:
            _write_probabilities_tiff(prob_out, probs, td.scale)
    else:
        _zarr_attrs(out, meta, slices, td, lut, n_classes)
    elapsed = time.perf_counter() - t0
    if not quiet:
        mapping = ""
        if lut is not None:
            mapping = (
                " (classes -> values "
                + ", ".join(f"{k}->{int(lut[k])}" for k in range(1, n_classes + 1))
                + ")"
            )
        print(f"wrote {out}{mapping} in {elapsed:.1f} s", flush=True)
        if prob_out is not None:
            print(f"wrote {prob_out}", flush=True)
    return 0


def _zarr_attrs(
    out: Path, meta: dict, slices: list[int], td: Any, lut: Any, n_classes: int
) -> None:
    import zarr

    try:
        arr = zarr.open_array(str(out), mode="r+")
        arr.attrs.update(
            {
                "napari_unet": {
                    "slices": slices,
                    "scale": list(td.scale),
                    "unit": td.unit,
                    "class_names": meta.get("class_names"),
                    "label_mapping": meta.get("label_mapping"),
                    "values": None if lut is None else [int(v) for v in lut[1 : n_classes + 1]],
                }
            }
        )
    except Exception as exc:  # attributes are a nicety
        warn(f"could not write the zarr attributes: {exc}")


def _predict_local(
    args,
    model,
    td,
    slices,
    out_shape,
    kind,
    out,
    prob_out,
    prob_dtype,
    lut,
    ldtype,
    normalization,
    device,
    is_2d,
) -> tuple[Any, Any]:
    from ..tiling import predict_tiled

    n_classes = int(model.n_classes)
    image = td.data if is_2d else SliceSelection(td.data, slices)
    if kind == "tif":
        target = np.zeros(out_shape, ldtype)
        ptarget = np.zeros((n_classes, *out_shape), prob_dtype) if prob_out is not None else None
    else:
        chunks = (*([] if is_2d else [1]), *_yx_chunks(*out_shape[-2:]))
        target = _open_zarr(out, out_shape, ldtype, tuple(chunks))
        ptarget = None
        if prob_out is not None:
            ptarget = _open_zarr(prob_out, (n_classes, *out_shape), prob_dtype, (1, *chunks))
    out_arr = MappedOutput(target, lut) if lut is not None else target
    progress = Progress("predicting", quiet=args.quiet)

    def report(done: int, total: int) -> None:
        progress.update(done, total, "tiles", force=done == total)

    try:
        predict_tiled(
            model,
            image,
            tile_size=args.tile,
            batch_size=args.batch_size,
            device=device,
            out=out_arr,
            probabilities_out=ptarget,
            progress=report,
            normalization=normalization,
            tta=args.tta,
        )
    finally:
        progress.close()
    return target, ptarget


def _predict_distributed(
    args,
    td,
    slices,
    out_shape,
    kind,
    out,
    prob_out,
    prob_dtype,
    lut,
    ldtype,
    normalization,
    device,
    is_2d,
) -> tuple[Any, Any]:
    import dask
    from distributed import Client, as_completed

    from ..tiling import predict_dask

    try:
        client = Client(args.scheduler, timeout="15s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CLIError(f"--scheduler: could not connect to {args.scheduler} ({exc})") from None
    try:
        image = _dask_image(td, slices)
        checkpoint = str(Path(args.model).resolve())
        result = predict_dask(
            checkpoint,
            image,
            tile_size=args.tile,
            batch_size=args.batch_size,
            device=device,
            normalization=normalization,
            return_probabilities=prob_out is not None,
            tta=args.tta,
        )
        labels, probs = result if prob_out is not None else (result, None)
        label_blocks = labels.to_delayed().ravel()
        prob_blocks = (
            probs.to_delayed().ravel() if probs is not None else [None] * len(label_blocks)
        )
        progress = Progress("predicting", quiet=args.quiet)
        total = len(label_blocks)
        if kind == "zarr":
            chunks = (1, *_yx_chunks(*out_shape[-2:]))
            _open_zarr(out, out_shape if not is_2d else (1, *out_shape), ldtype, chunks)
            if prob_out is not None:
                _open_zarr(
                    prob_out,
                    (int(probs.shape[0]), *(out_shape if not is_2d else (1, *out_shape))),
                    prob_dtype,
                    (1, *chunks),
                )
            tasks = [
                dask.delayed(_write_zarr_slice, pure=False)(
                    lb,
                    pb,
                    os.fspath(out),
                    None if prob_out is None else os.fspath(prob_out),
                    z,
                    lut,
                )
                for z, (lb, pb) in enumerate(zip(label_blocks, prob_blocks))
            ]
            futures = client.compute(tasks)
            done = 0
            for fut in as_completed(futures, loop=client.loop):
                fut.result()
                done += 1
                progress.update(done, total, "slices", force=done == total)
            progress.close()
            if is_2d:
                _squeeze_zarr(out)
                if prob_out is not None:
                    _squeeze_zarr(prob_out)
            return None, None
        full = (1, *out_shape) if is_2d else out_shape
        target = np.zeros(full, ldtype)
        ptarget = None
        if probs is not None:
            ptarget = np.zeros((int(probs.shape[0]), *full), prob_dtype)
        futures = client.compute(
            [dask.delayed(tuple)([lb, pb]) for lb, pb in zip(label_blocks, prob_blocks)]
        )
        index = {f.key: z for z, f in enumerate(futures)}
        done = 0
        for fut in as_completed(futures, loop=client.loop):
            lb, pb = fut.result()
            z = index[fut.key]
            target[z] = lut[lb[0]] if lut is not None else lb[0]
            if ptarget is not None and pb is not None:
                ptarget[:, z] = pb[:, 0]
            done += 1
            progress.update(done, total, "slices", force=done == total)
        progress.close()
        if is_2d:
            target = target[0]
            ptarget = None if ptarget is None else ptarget[:, 0]
        return target, ptarget
    finally:
        client.close()


def _squeeze_zarr(path: Path) -> None:
    """Rewrite a (1, H, W) / (C, 1, H, W) zarr array without the singleton Z axis."""
    import zarr

    arr = zarr.open_array(str(path), mode="r")
    data = np.asarray(arr[...])
    data = data[0] if data.ndim == 3 else data[:, 0]
    new = zarr.open_array(
        str(path),
        mode="w",
        shape=data.shape,
        dtype=data.dtype,
        chunks=tuple(min(s, 1024) for s in data.shape),
    )
    new[...] = data
