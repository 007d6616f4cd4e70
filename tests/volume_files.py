"""Small real volume files of each kind for the volume tests: OME-Zarr (by ome-zarr), plain zarr, N5, HDF5.

The N5 writer follows the N5 specification directly (attributes.json, big-endian blocks with a
header, dimensions listed X first), so the reader is checked against the format, not against itself.
"""

from __future__ import annotations

import gzip
import itertools
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_ome_zarr(
    path: Path,
    data: np.ndarray,
    scale: Sequence[float] = (40.0, 4.0, 4.0),
    unit: str = "nanometer",
    version: str = "0.4",
    levels: int = 2,
) -> Path:
    """An OME-Zarr multiscale image written by ome-zarr (``levels`` levels, 2x in Y and X)."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    names = "zyx"[-data.ndim :]
    write_image(
        data,
        root,
        scale_factors=[2] * (levels - 1),
        fmt=fmt,
        axes=list(names),
        scale=dict(zip(names, scale)),
        axes_units=dict.fromkeys(names, unit),
    )
    return path


def write_zarr(
    path: Path, data: np.ndarray, attrs: Mapping[str, Any] | None = None, name: str = ""
) -> Path:
    """A plain zarr array (optionally ``name`` inside a group) with ``attrs``."""
    import zarr

    if name:
        group = zarr.open_group(str(path), mode="a")
        arr = group.create_array(
            name, shape=data.shape, chunks=(1, *data.shape[1:]), dtype=data.dtype
        )
    else:
        arr = zarr.create_array(
            str(path), shape=data.shape, chunks=(1, *data.shape[1:]), dtype=data.dtype
        )
    arr[...] = data
    arr.attrs.update(dict(attrs or {}))
    return path


def write_n5(
    root: Path,
    name: str,
    data: np.ndarray,
    block: Sequence[int],
    attrs: Mapping[str, Any] | None = None,
    compression: str = "gzip",
) -> Path:
    """An N5 container with dataset ``name`` (DEFAULT-mode blocks, ``raw`` or ``gzip``)."""
    ds = root / name
    ds.mkdir(parents=True, exist_ok=True)
    (root / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    meta = {
        "dimensions": list(data.shape[::-1]),
        "blockSize": list(block[::-1]),
        "dataType": data.dtype.name,
        "compression": {"type": compression},
        **dict(attrs or {}),
    }
    (ds / "attributes.json").write_text(json.dumps(meta))
    for starts in itertools.product(*(range(0, s, b) for s, b in zip(data.shape, block))):
        blk = data[tuple(slice(s, s + b) for s, b in zip(starts, block))]
        header = struct.pack(">HH", 0, blk.ndim) + struct.pack(f">{blk.ndim}I", *blk.shape[::-1])
        body = blk.astype(blk.dtype.newbyteorder(">")).tobytes()
        if compression == "gzip":
            body = gzip.compress(body)
        index = [str(s // b) for s, b in zip(starts, block)][::-1]
        f = ds.joinpath(*index)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(header + body)
    return root


def write_h5(
    path: Path, dataset: str, data: np.ndarray, attrs: Mapping[str, Any] | None = None
) -> Path:
    """An HDF5 file with ``dataset`` (chunked by slice, gzip) and its attributes."""
    import h5py

    with h5py.File(path, "a") as f:
        ds = f.create_dataset(dataset, data=data, chunks=(1, *data.shape[1:]), compression="gzip")
        for key, value in (attrs or {}).items():
            ds.attrs[key] = value
    return path
