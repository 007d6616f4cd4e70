"""Writing OME-NGFF label images: predictions and masks with class names, colours and scale.

Written as NGFF 0.4, the version napari-ome-zarr, Fiji/MoBIE and webKnossos read (0.5 inside a
0.5 image): ``image.ome.zarr/labels/<name>`` next to the image, or a standalone label image at a
new path.  :func:`write_ngff_labels` writes to a hidden folder and renames it into place;
:func:`create_ngff_labels` makes an empty one in place for a prediction written slice by slice
(with the completion record of :mod:`napari_unet.completion`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import InvalidImageError, WriteError
from .ngff import (
    NGFF_VERSION,
    image_multiscale,
    image_scale,
    label_group_metadata,
    ome_attrs,
    read_attrs,
    read_multiscale,
)
from .outputs import describe_os_error

__all__ = ["create_ngff_labels", "labels_target", "update_ngff_labels", "write_ngff_labels"]

#: a pyramid level is added while the last one is wider or taller than this
PYRAMID_MIN_SIZE = 1024


def _n_levels(shape: Sequence[int]) -> int:
    n, h, w = 1, int(shape[-2]), int(shape[-1])
    while max(h, w) > PYRAMID_MIN_SIZE and min(h, w) >= 2:
        n, h, w = n + 1, (h + 1) // 2, (w + 1) // 2
    return n


def labels_target(path: str | os.PathLike, name: str = "prediction") -> Path | None:
    """``image/labels/<name>`` when ``path`` is an OME-Zarr image (its ``labels`` group created
    when missing, so the target's folder exists), else None."""
    path = Path(path)
    ms = image_multiscale(path)
    if ms is None:
        return None
    if not (path / "labels").is_dir():
        _open_group(path / "labels", ms.version, mode="a")
        _register(path, name, ms.version, add=False)
    return path / "labels" / name


def _where(path: Path, name: str) -> tuple[Path, str | None, str]:
    """(label group path, the image's version or None for a standalone label image, version)."""
    ms = image_multiscale(path)
    if ms is None:
        return path, None, NGFF_VERSION
    if not name or "/" in name or name.startswith("."):
        raise InvalidImageError(f"label name {name!r}: use a plain name such as 'prediction'")
    return path / "labels" / name, ms.version, ms.version


def _open_group(path: Path, version: str, mode: str = "w") -> Any:
    import zarr

    return zarr.open_group(str(path), mode=mode, zarr_format=3 if version == "0.5" else 2)


def _set_ome(group: Any, meta: Mapping[str, Any], version: str) -> None:
    if version == "0.5":
        ome = dict(group.attrs.get("ome") or {})
        ome.update({"version": "0.5", **meta})
        group.attrs["ome"] = ome
    else:
        group.attrs.update(dict(meta))


def _new_label_group(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype,
    meta: Mapping[str, Any],
    version: str,
    chunks: tuple[int, ...],
    n_levels: int,
) -> list[Any]:
    """A label image at ``path`` with empty arrays ``0..n_levels-1``; returns the arrays."""
    group = _open_group(path, version)
    _set_ome(group, meta, version)
    arrays = []
    for level in range(n_levels):
        level_shape = (*shape[:-2], -(-shape[-2] // 2**level), -(-shape[-1] // 2**level))
        level_chunks = tuple(min(c, s) for c, s in zip(chunks, level_shape))
        extra: dict[str, Any] = {"dimension_names": list("zyx"[-len(shape) :])}
        if version != "0.5":
            extra = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        arrays.append(
            group.create_array(
                str(level),
                shape=level_shape,
                chunks=level_chunks,
                dtype=dtype,
                fill_value=0,
                **extra,
            )
        )
    return arrays


def _register(image: Path, name: str, version: str, add: bool = True) -> None:
    """Add ``name`` to the image's ``labels`` group (created when missing)."""
    labels = _open_group(image / "labels", version, mode="a")
    ome, _ = ome_attrs(dict(labels.attrs))
    names = [n for n in ome.get("labels", []) if isinstance(n, str) and n != name]
    _set_ome(labels, {"labels": [*names, name] if add else names}, version)


def create_ngff_labels(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    *,
    name: str = "prediction",
    scale: Sequence[float] | None = None,
    unit: str = "um",
    class_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    values: Sequence[int] | None = None,
    chunks: Sequence[int] | None = None,
) -> Any:
    """An empty NGFF label image (one level) to fill slice by slice; returns its level-0 array.

    Written in place (a resumed prediction finds it there): inside the OME-Zarr image at
    ``path`` as ``labels/<name>``, else as a standalone label image at ``path``.  The caller
    records completion on the returned array (:mod:`napari_unet.completion`).
    """
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    target, image_version, version = _where(path, name)
    if scale is None and image_version is not None:
        scale, unit = image_scale(path, len(shape))
    classes = {"class_names": class_names, "colors": colors, "values": values}
    meta = label_group_metadata(
        name, shape, scale, unit, classes, version, image_version is not None, 1
    )
    chunks = tuple(chunks or (*[1] * (len(shape) - 2), min(shape[-2], 1024), min(shape[-1], 1024)))
    try:
        (array,) = _new_label_group(target, shape, np.dtype(dtype), meta, version, chunks, 1)
        if image_version is not None:
            _register(path, name, version)
    except OSError as exc:
        raise WriteError(f"{path}: could not create the labels ({describe_os_error(exc)})") from exc
    return array


def update_ngff_labels(
    path: str | os.PathLike,
    *,
    scale: Sequence[float] | None = None,
    unit: str = "um",
    class_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    values: Sequence[int] | None = None,
) -> None:
    """Rewrite the pixel size and classes of the label image at ``path`` (once they are known)."""
    path = Path(path)
    attrs = read_attrs(path)
    ms = read_multiscale(attrs) if attrs is not None else None
    if ms is None or ms.image_label is None:
        raise InvalidImageError(f"{path}: not an OME-NGFF label image")
    group = _open_group(path, ms.version, mode="r+")
    shape = tuple(int(s) for s in group[ms.paths[0]].shape)
    inside = isinstance(ms.image_label.get("source"), Mapping)
    if scale is None and inside:
        scale, unit = image_scale(path.parent.parent, len(shape))
    classes = {"class_names": class_names, "colors": colors, "values": values}
    name = ms.name or path.name
    _set_ome(
        group,
        label_group_metadata(name, shape, scale, unit, classes, ms.version, inside, len(ms.paths)),
        ms.version,
    )


def _fill(arrays: list[Any], data: Any, dtype: np.dtype) -> None:
    """Write ``data`` slice by slice into level 0, and every 2nd pixel of it into each level."""
    from .slices import read_block, read_slice

    if len(data.shape) == 2:
        plane = read_block(data, ...).astype(dtype, copy=False)
        for level, arr in enumerate(arrays):
            arr[...] = plane[:: 2**level, :: 2**level]
        return
    for z in range(int(data.shape[0])):
        plane = read_slice(data, z).astype(dtype, copy=False)
        for level, arr in enumerate(arrays):
            arr[z] = plane[:: 2**level, :: 2**level]


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is removed only once ``tmp`` is in place."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_ngff_labels(
    path: str | os.PathLike,
    labels: Any,
    *,
    name: str = "prediction",
    scale: Sequence[float] | None = None,
    unit: str = "um",
    class_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    values: Sequence[int] | None = None,
    n_levels: int | None = None,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Write a label mask as OME-NGFF labels; return the label image's path.

    Parameters
    ----------
    path
        An OME-Zarr image: the labels go into ``path/labels/<name>`` (listed in
        ``path/labels``, ``source`` pointing at the image, the image's NGFF version).  Any
        other path (e.g. ``mask.ome.zarr``) becomes a standalone NGFF 0.4 label image.
    labels
        ``(Z, Y, X)`` or ``(Y, X)`` integer labels: numpy, dask or zarr (read slice by slice).
    scale, unit
        Pixel size per axis (e.g. the image layer's ``scale``) and its unit (``"um"``,
        ``"nm"``; ``"pixel"`` writes no unit).
    class_names, colors, values
        Class k (1..K) has file value ``values[k-1]`` (default k), name and colour (``"#rrggbb"``;
        default :func:`napari_unet.classes.default_colors`); they become ``image-label``.
    n_levels
        Pyramid levels (every 2nd pixel in Y and X per level); default: until 1024 pixels wide.
    record
        Extra fields for the completion record (:mod:`napari_unet.completion`) marked complete.

    The label image is written to a hidden folder beside its target and renamed into place, so
    a failed write leaves any earlier labels of that name untouched.
    """
    from .completion import KEY
    from .writers import _slice_dtype

    path = Path(path)
    shape = tuple(int(s) for s in labels.shape)
    if len(shape) not in (2, 3):
        raise InvalidImageError(f"labels must be 2D (YX) or 3D (ZYX), got shape {shape}")
    if np.dtype(labels.dtype).kind not in "biu":
        raise InvalidImageError(f"labels must hold integers, not {labels.dtype}")
    target, image_version, version = _where(path, name)
    if scale is None and image_version is not None:  # the image's own pixel size
        scale, unit = image_scale(path, len(shape))
    levels = int(n_levels) if n_levels is not None else _n_levels(shape)
    classes = {"class_names": class_names, "colors": colors, "values": values}
    meta = label_group_metadata(
        name, shape, scale, unit, classes, version, image_version is not None, levels
    )
    chunks = (*[1] * (len(shape) - 2), 1024, 1024)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # unsigned labels keep their dtype (no extra pass over a lazy volume); others are checked
        kind = np.dtype(labels.dtype).kind
        dtype = np.dtype(labels.dtype) if kind == "u" else _slice_dtype(labels)
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays = _new_label_group(tmp, shape, dtype, meta, version, chunks, levels)
        _fill(arrays, labels, dtype)
        arrays[0].attrs[KEY] = {**(record or {}), "complete": True, "done": ""}
        _replace_dir(tmp, target)
        if image_version is not None:
            _register(path, name, version)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(
            f"{target}: could not write the labels ({describe_os_error(exc)})"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
