"""``napari-unet objects``: instances of one class from a saved prediction or probability file.

Also the objects step of ``napari-unet predict --objects``: :func:`write_objects` writes the
uint32 labels (TIFF or zarr, with the scale) and the measurements CSV beside them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import add_subcommand, is_zarr_path, open_zarr, positive_float
from ._outputs import prepare_output

SUMMARY = "instances (objects) of one class from a prediction or probability file"

DESCRIPTION = """\
Turn a class map (napari-unet predict --out) or class probabilities (predict
--probabilities) into instances: cells between membranes by a seeded watershed,
organelles (mitochondria, nuclei) as connected components. --out OBJECTS.tif
(uint32, with the pixel size) or OBJECTS.zarr (written slice by slice, any size);
OBJECTS.csv beside it holds one row per object (slice range, area or volume,
equivalent diameter, centroid and bounding box in the units of the scale).
"""

EPILOG = """\
examples:
  napari-unet objects --input seg_probabilities.tif --objects cell --out cells.tif
  napari-unet objects --input seg.tif --objects 2 --mode objects --dims 3 --out mito.zarr
  napari-unet objects --input seg.zarr --objects mitochondria --model model.pt --out mito.tif

CLASS is a class name (from --model, else the default names) or a number: a class
1..C of probabilities, a value of a class map. A boundary class (membrane), or a
cell class beside one, gives watershed instances; other classes give objects.
With --model, the parameters stored in the checkpoint for CLASS (written at
training, or tuned in the Objects dock) are the defaults; options override them.
"""


def add_object_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the objects step (shared with ``predict --objects``); defaults: the core's."""
    from ..objects import BOUNDARY_H, OTHER_H, ObjectParams

    d = ObjectParams()
    p.add_argument("--mode", choices=("boundary", "objects"), help="default: from the class")
    p.add_argument(
        "--dims",
        type=int,
        choices=(2, 3),
        default=None,
        help=f"2: per slice, 3: across slices with the scale (default {d.dims})",
    )
    p.add_argument(
        "--min-size", type=positive_float, metavar="SIZE",
        help="smallest object, in the units of the scale (area in 2D, volume in 3D); "
        f"default {d.min_pixels} pixels",
    )  # fmt: skip
    p.add_argument("--split", action="store_true", help="split touching objects at their necks")
    p.add_argument(
        "--threshold", type=float, metavar="P", help=f"probability threshold ({d.threshold:g})"
    )
    p.add_argument(
        "--seeds", choices=("distance", "hminima"), help=f"watershed seeds (default {d.seeds})"
    )
    p.add_argument(
        "--seed-depth", type=float, metavar="H",
        help=f"seed depth h in pixels (default: the model's, else {BOUNDARY_H:g} for boundary "
        f"watershed with distance seeds, {OTHER_H:g} otherwise)",
    )  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(sub, "objects", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument(
        "--input", required=True, metavar="PRED_OR_PROB",
        help="a class map or probabilities: .tif/.tiff or .zarr",
    )  # fmt: skip
    p.add_argument("--objects", required=True, metavar="CLASS", help="class name or number")
    p.add_argument("--out", required=True, metavar="OBJECTS.tif|OBJECTS.zarr")
    p.add_argument("--model", metavar="MODEL.pt", help="checkpoint: class names and mapping")
    p.add_argument("--scale", metavar="Z,Y,X", help="pixel size (default: from the file, else 1)")
    add_object_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


# --------------------------------------------------------------------------- reading


@dataclass
class Source:
    """What the objects step reads: probabilities (C, [Z,] Y, X) or a class map ([Z,] Y, X)."""

    data: Any
    kind: str  # "probabilities" or "classes"
    scale: tuple[float, ...]
    unit: str = "pixel"


def _tiff_scale(tif: Any, ndim: int) -> tuple[float, ...]:
    page = tif.pages[0]
    sc = [1.0] * ndim
    for axis, tag in ((-1, "XResolution"), (-2, "YResolution")):
        t = page.tags.get(tag)
        if t is not None and t.value[0]:
            sc[axis] = float(t.value[1]) / float(t.value[0])
    meta = tif.imagej_metadata or {}
    if ndim == 3 and meta.get("spacing"):
        sc[0] = float(meta["spacing"])
    return tuple(sc)


def open_source(path: str, scale: str | None = None) -> Source:
    """The prediction or probability file at ``path`` (a float file holds probabilities)."""
    p = Path(path)
    if is_zarr_path(p):
        arr = open_zarr(p, "--input")
        kind = "probabilities" if np.dtype(arr.dtype).kind == "f" else "classes"
        sc = tuple(arr.attrs.get("scale") or ())
        src = Source(arr, kind, sc, str(arr.attrs.get("unit") or "pixel"))
    else:
        src = _open_tiff(p)
    ndim = len(src.data.shape) - (1 if src.kind == "probabilities" else 0)
    if scale is not None:
        try:
            src.scale = tuple(float(v) for v in scale.split(","))
        except ValueError:
            raise CLIError(f"--scale {scale!r}: give numbers separated by commas") from None
    src.scale = tuple(src.scale[-ndim:]) if len(src.scale) >= ndim else (1.0,) * ndim
    if not all(s > 0 for s in src.scale):
        raise CLIError(f"--scale {src.scale}: pixel sizes must be > 0")
    return src


def _open_tiff(p: Path) -> Source:
    import tifffile

    from ..io import InvalidImageError, read_tiff

    if not p.exists():
        raise CLIError(f"--input {p}: no such file")
    try:
        with tifffile.TiffFile(str(p)) as tif:
            dtype = np.dtype(tif.series[0].dtype)
            if dtype.kind == "f":
                arr = tif.asarray()
                if arr.ndim == 4:  # ImageJ hyperstack (Z, C, Y, X) -> (C, Z, Y, X)
                    arr = np.moveaxis(arr, 1, 0)
                return Source(arr, "probabilities", _tiff_scale(tif, arr.ndim - 1))
    except (tifffile.TiffFileError, IndexError, ValueError) as exc:
        raise CLIError(f"--input {p}: not a readable TIFF ({exc})") from None
    try:
        td = read_tiff(p, as_labels=True)
    except InvalidImageError as exc:
        raise CLIError(f"--input {exc}") from None
    return Source(td.data, "classes", tuple(td.scale), td.unit)


def class_info(model: str | None, n_classes: int | None) -> tuple[list[str], Any, dict]:
    """Class names, the class -> file value table (or None) and the checkpoint metadata."""
    from ..classes import default_class_names

    if model is None:
        return default_class_names(n_classes or 2), None, {}
    from ..checkpoint import load_checkpoint
    from ..labels import class_lut

    net, meta = load_checkpoint(model)
    k = int(net.n_classes)
    names = list(meta.get("class_names") or default_class_names(k))
    return names, class_lut(meta.get("label_mapping"), k), meta


def _defaults(names: list[str], k: int, meta: dict) -> tuple[int, Any]:
    """``objects.default_params``; a stored parameter it ignores is one line on stderr."""
    from ..objects import ObjectsWarning, default_params

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ObjectsWarning)
        found = default_params(names, k, meta)
    for w in caught:
        if issubclass(w.category, ObjectsWarning):
            print(f"napari-unet: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return found


def choose(src: Source, target: str, model: str | None, args: argparse.Namespace) -> tuple:
    """(source class or value, ObjectParams, class name) for ``--objects target``.

    The parameters: the model's stored ones for the class (else the class rules),
    then the options; the source class follows the final mode (a cell class in
    boundary mode: the membrane class beside it).
    """
    from ..objects import ObjectParams, resolve_class, source_class

    n = int(src.data.shape[0]) if src.kind == "probabilities" else None
    names, lut, meta = class_info(model, n)
    text = str(target).strip()
    if src.kind == "classes" and text.isdigit() and text.lower() not in [s.lower() for s in names]:
        value = int(text)  # a value of the class map
        k = next((i for i in range(1, len(names) + 1) if _value(lut, i) == value), None)
        if k is None:  # a value no class maps to: its own objects
            return value, _with_options(ObjectParams(), args), f"value {value}"
    else:
        try:
            k = resolve_class(text, names)
        except ValueError as exc:
            raise CLIError(f"--objects: {exc}") from None
    params = _with_options(_defaults(names, k, meta)[1], args)
    source_k = source_class(names, k, params.mode)
    cls = source_k if src.kind == "probabilities" else _value(lut, source_k)
    return cls, params, names[k - 1]


def _value(lut: Any, k: int) -> int:
    return int(lut[k]) if lut is not None else int(k)


def _with_options(params: Any, args: argparse.Namespace) -> Any:
    changes = {
        "mode": args.mode,
        "dims": args.dims,
        "min_size": args.min_size,
        "threshold": args.threshold,
        "seeds": args.seeds,
        "h": args.seed_depth,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.split:
        changes["split"] = True
    try:
        return params.replace(**changes)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


# --------------------------------------------------------------------------- writing


def csv_path(out: Path) -> Path:
    return out.with_suffix(".csv")


def write_objects(
    src: Source, cls: int, params: Any, name: str, out: Path, *, overwrite: bool, quiet: bool
) -> int:
    """Make the instances, write them to ``out`` (TIFF or zarr) and the CSV beside it."""
    from ..measure import measure_objects, write_csv
    from ..objects import label_objects

    is_zarr = out.suffix.lower() == ".zarr"
    if not is_zarr and out.suffix.lower() not in (".tif", ".tiff"):
        raise CLIError(f"--out {out}: the name must end with .tif, .tiff or .zarr")
    prepare_output(out, "--out", overwrite=overwrite, folder_ok=is_zarr)
    prepare_output(csv_path(out), "objects CSV", overwrite=overwrite)
    t0 = time.perf_counter()
    shape = tuple(src.data.shape[1:] if src.kind == "probabilities" else src.data.shape)
    tmp = out.with_name(f".{out.name}.part")
    target = _zarr_target(tmp, shape, src) if is_zarr else None
    try:
        result = label_objects(
            src.data, cls, kind=src.kind, params=params, scale=src.scale, out=target
        )
    except ValueError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CLIError(f"--objects {name}: {exc}") from None
    table = measure_objects(result.labels, scale=src.scale, dims=params.dims, class_name=name)
    if is_zarr:
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    else:
        from ..writers import write_label_stack

        labels = result.labels
        pages = (labels[z] for z in range(labels.shape[0])) if labels.ndim == 3 else [labels]
        write_label_stack(out, pages, labels.shape, np.uint32, src.scale)
    write_csv(csv_path(out), table)
    if not quiet:
        print(
            f"wrote {out} ({result.n_objects} {params.mode} of {name}, {params.dims}D) and "
            f"{csv_path(out).name} in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return 0


def _zarr_target(tmp: Path, shape: tuple[int, ...], src: Source) -> Any:
    from ..writers import create_zarr

    shutil.rmtree(tmp, ignore_errors=True)
    arr = create_zarr(tmp, shape, np.uint32)
    arr.attrs.update({"scale": list(src.scale), "unit": src.unit})
    return arr


def run(args: argparse.Namespace) -> int:
    src = open_source(args.input, args.scale)
    cls, params, name = choose(src, args.objects, args.model, args)
    return write_objects(
        src, cls, params, name, Path(args.out), overwrite=args.overwrite, quiet=args.quiet
    )
