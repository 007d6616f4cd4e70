"""What ``predict`` will do: the checked options, outputs and normalisation of one prediction.

:func:`plan` reads nothing but the sampled pixels of the image; outputs are checked before work.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._common import SliceSelection, human_bytes, nbytes_of, parse_slices, warn
from ._outputs import prepare_output
from ._zarr_out import ZarrOutputs, open_outputs

__all__ = ["Job", "mapped", "outputs", "plan", "result_info", "source", "zarr_outputs"]


@dataclasses.dataclass
class Job:
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
    normalization: dict[str, float]
    device: Any
    result_bytes: int = 0

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


def _ngff_labels_target(out: Path) -> Path | None:
    """``out/labels/prediction`` when ``out`` is an existing OME-Zarr image, else None."""
    from ..ngff_labels import labels_target

    try:
        return labels_target(out)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--out {out}: cannot add labels to this OME-Zarr image ({exc})") from None


def _choose_output(args: argparse.Namespace, result_bytes: int) -> tuple[Path, str]:
    """``--out`` (or the default name) and its kind; a TIFF must fit in ``--max-memory``."""
    budget = int(args.max_memory * 2**30)
    if args.out is None:
        kind = "tif" if result_bytes <= budget else "zarr"
        name = Path(args.image).name
        if name.lower().endswith(".ome.zarr"):  # OME-Zarr in, OME-NGFF labels out
            return Path.cwd() / f"{name[: -len('.ome.zarr')]}_prediction.ome.zarr", "zarr"
        return Path.cwd() / f"{Path(args.image).stem}_prediction.{kind}", kind
    out = Path(args.out)
    kind = _output_kind(out)
    inside = _ngff_labels_target(out) if kind == "zarr" else None
    if inside is not None:  # OME-NGFF labels inside an existing OME-Zarr image
        return inside, kind
    if kind == "tif" and result_bytes > budget:
        raise CLIError(
            f"the result ({human_bytes(result_bytes)}) is larger than --max-memory "
            f"({args.max_memory:g} GiB): write zarr instead (--out {out.with_suffix('.zarr')})"
        )
    return out, kind


def plan(args: argparse.Namespace, td: Any, model: Any, meta: dict, device: Any) -> Job:
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
    if kind == "tif" and args.probabilities_dtype == "float16":
        raise CLIError(
            "--probabilities-dtype float16: the probabilities TIFF (an ImageJ hyperstack) "
            f"holds float32; write zarr for float16 (--out {out.with_suffix('.zarr')})"
        )
    if args.resume and kind != "zarr":
        raise CLIError("--resume finishes a zarr result: use --out OUT.zarr")
    base = out.parent.parent if out.parent.name == "labels" and kind == "zarr" else out
    stem = base.name[: -len(".ome.zarr")] if base.name.lower().endswith(".ome.zarr") else base.stem
    prob_out = base.with_name(f"{stem}_probabilities{base.suffix}") if args.probabilities else None
    prob_dtype = np.dtype(args.probabilities_dtype or ("float32" if kind == "tif" else "float16"))
    normalization = normalization_for(td, slices, meta)
    job = Job(
        args, td, slices, n_classes, lut, ldtype, out, kind, prob_out, prob_dtype,
        normalization, device, result_bytes,
    )  # fmt: skip
    check_outputs(job)
    return job


def check_outputs(job: Job) -> None:
    """Each output: writable (a file is created there), not replaced without --overwrite."""
    args, folder = job.args, job.kind == "zarr"
    for path, what in outputs(job):
        if args.resume:
            if not path.exists():
                raise CLIError(f"--resume: {path} does not exist: there is nothing to finish")
        prepare_output(
            path, what, overwrite=args.overwrite or args.resume, folder_ok=folder,
            need_bytes=job.result_bytes, warn=warn,
        )  # fmt: skip


def outputs(job: Job) -> list[tuple[Path, str]]:
    paths = [(job.out, "--out")]
    if job.prob_out is not None:
        paths.append((job.prob_out, "probabilities output"))
    return paths


def normalization_for(td: Any, slices: list[int], meta: dict) -> dict[str, float]:
    """The statistics that normalise these slices as the training stack was (see
    :func:`napari_unet.normalization.stack_normalization`); a note when they are mapped."""
    from ..normalization import stack_normalization

    recorded = meta.get("normalization") or None
    if recorded is None:
        warn("the checkpoint stores no normalization: estimating it from the image")
    image = td.data if len(td.shape) == 2 else SliceSelection(td.data, slices)
    try:
        stats, note = stack_normalization(image, recorded, meta.get("intensity"))
    except ValueError as exc:
        raise CLIError(f"{td.path}: {exc} (every pixel read is NaN or infinite)") from None
    if note is not None:
        warn(note)
    return stats


# --------------------------------------------------------------------------- outputs


def source(job: Job) -> dict[str, Any]:
    """What a zarr result is made from: a resumed run must match it."""
    return {
        "slices": job.slices,
        "image": str(Path(getattr(job.td, "location", job.td.path)).resolve()),
        "model": str(Path(job.args.model).resolve()),
        "tta": bool(job.args.tta),
    }


def zarr_outputs(job: Job, shape: tuple[int, ...]) -> ZarrOutputs:
    return open_outputs(
        job.out, job.prob_out, shape, (job.ldtype, job.prob_dtype), job.n_classes,
        source(job), resume=bool(job.args.resume),
    )  # fmt: skip


def mapped(target: Any, lut: np.ndarray | None) -> Any:
    """``target``, writing file values instead of classes for a ``--dense`` checkpoint."""
    from ..labels import MappedOutput

    return target if lut is None else MappedOutput(target, lut)


def result_info(job: Job, meta: dict) -> dict[str, Any]:
    """The attributes of a finished zarr result (with its completion record)."""
    lut = job.lut
    return {
        "scale": list(job.td.scale),
        "unit": job.td.unit,
        "class_names": meta.get("class_names"),
        "label_mapping": meta.get("label_mapping"),
        "values": None if lut is None else [int(v) for v in lut[1 : job.n_classes + 1]],
    }
