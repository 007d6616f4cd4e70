"""Per-object measurements of instance labels in physical units, and their CSV file.

The labels are read one slice at a time (any size, numpy/zarr/dask); each slice's
objects are measured (pixel counts, coordinate sums, bounding boxes) and merged
over the slices, so a 3D object's volume, centroid and box cover all its slices.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checks import ArgumentError
from .outputs import OutputError, replace_atomically
from .slices import read_block

__all__ = ["columns_for", "measure_objects", "write_csv"]


def columns_for(ndim: int, dims: int) -> list[str]:
    """The measurement column names for labels of ``ndim`` axes, objects in ``dims`` D."""
    axes = "zyx" if ndim == 3 else "yx"
    size = "volume" if dims == 3 and ndim == 3 else "area"
    cols = ["label", "class"]
    if ndim == 3:
        cols += ["z_first", "z_last"]
    cols += ["pixels", size, "equivalent_diameter"]
    cols += [f"centroid_{a}" for a in axes]
    cols += [f"bbox_min_{a}" for a in axes] + [f"bbox_max_{a}" for a in axes]
    return cols


def _slice_stats(plane: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Per label of one slice: ids, counts, sums of y and x, min/max of y and x."""
    ys, xs = np.nonzero(plane)
    if ys.size == 0:
        return None
    ids = plane[ys, xs].astype(np.int64)
    order = np.argsort(ids, kind="stable")
    ids, ys, xs = ids[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    counts = np.diff(np.r_[starts, ids.size])
    return (
        ids[starts],
        counts,
        np.add.reduceat(ys, starts).astype(np.float64),
        np.add.reduceat(xs, starts).astype(np.float64),
        np.minimum.reduceat(ys, starts),
        np.maximum.reduceat(ys, starts),
        np.minimum.reduceat(xs, starts),
        np.maximum.reduceat(xs, starts),
    )


class _Accumulator:
    """Running sums and extremes per label, grown as labels appear."""

    def __init__(self) -> None:
        self.n = 0
        self.count = np.zeros(0, np.int64)
        self.sums = np.zeros((0, 3), np.float64)
        self.low = np.zeros((0, 3), np.int64)
        self.high = np.zeros((0, 3), np.int64)

    def _grow(self, top: int) -> None:
        if top + 1 <= len(self.count):
            return
        extra = max(top + 1, 2 * len(self.count)) - len(self.count)
        big = np.iinfo(np.int64).max
        self.count = np.r_[self.count, np.zeros(extra, np.int64)]
        self.sums = np.r_[self.sums, np.zeros((extra, 3))]
        self.low = np.r_[self.low, np.full((extra, 3), big, np.int64)]
        self.high = np.r_[self.high, np.full((extra, 3), -1, np.int64)]

    def add(self, z: int, plane: np.ndarray) -> None:
        stats = _slice_stats(plane)
        if stats is None:
            return
        ids, counts, sy, sx, y0, y1, x0, x1 = stats
        self._grow(int(ids.max()))
        self.count[ids] += counts
        self.sums[ids] += np.stack([counts * float(z), sy, sx], axis=1)
        for axis, lo, hi in ((0, z, z), (1, y0, y1), (2, x0, x1)):
            self.low[ids, axis] = np.minimum(self.low[ids, axis], lo)
            self.high[ids, axis] = np.maximum(self.high[ids, axis], hi)


def measure_objects(
    labels: Any,
    *,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    dims: int = 2,
    class_name: str = "",
) -> dict[str, np.ndarray]:
    """Measurements of every object of ``labels`` (``(Y, X)`` or ``(Z, Y, X)``), one row each.

    Sizes, centroids and boxes are in the units of ``scale`` (per axis) shifted by
    ``translate`` (a napari layer's); the box is the extent ``[min, max)`` of the
    pixels' edges.  ``dims=3`` reports a volume (``pixels x voxel``) and a
    sphere's equivalent diameter; ``dims=2`` an area and a circle's.

    Returns
    -------
    dict of column name -> numpy array (the napari ``features`` of the layer)
    """
    shape = tuple(int(n) for n in labels.shape)
    if len(shape) not in (2, 3):
        raise ArgumentError(f"labels must be (Y, X) or (Z, Y, X), got shape {shape}")
    ndim = len(shape)
    sc = np.array(list(scale or [1.0] * ndim)[-ndim:], np.float64)
    tr = np.array(list(translate or [0.0] * ndim)[-ndim:], np.float64)
    if sc.size != ndim or tr.size != ndim:
        raise ArgumentError(f"scale and translate need {ndim} values")
    acc = _Accumulator()
    for z in range(shape[0] if ndim == 3 else 1):
        acc.add(z, read_block(labels, z if ndim == 3 else ...))
    ids = np.flatnonzero(acc.count)
    ids = ids[ids > 0]
    cols = columns_for(ndim, dims)
    keep = slice(3 - ndim, 3)  # the axes present: (z,) y, x
    count = acc.count[ids]
    centroid = acc.sums[ids][:, keep] / count[:, None]
    low, high = acc.low[ids][:, keep], acc.high[ids][:, keep] + 1
    size_axes = sc if (dims == 3 and ndim == 3) else sc[-2:]
    size = count * float(np.prod(size_axes))
    if dims == 3 and ndim == 3:
        diameter = np.cbrt(6.0 * size / math.pi)
    else:
        diameter = np.sqrt(4.0 * size / math.pi)
    out: dict[str, np.ndarray] = {
        "label": ids.astype(np.int64),
        "class": np.array([class_name] * len(ids), dtype=object),
    }
    if ndim == 3:
        out["z_first"], out["z_last"] = acc.low[ids, 0], acc.high[ids, 0]
    out["pixels"] = count
    out["volume" if "volume" in cols else "area"] = size
    out["equivalent_diameter"] = diameter
    axes = "zyx"[3 - ndim :]
    for i, a in enumerate(axes):
        out[f"centroid_{a}"] = tr[i] + sc[i] * centroid[:, i]
    for i, a in enumerate(axes):
        out[f"bbox_min_{a}"] = tr[i] + sc[i] * low[:, i]
    for i, a in enumerate(axes):
        out[f"bbox_max_{a}"] = tr[i] + sc[i] * high[:, i]
    return {c: out[c] for c in cols}


def _csv_text(table: Mapping[str, Any]) -> str:
    names = list(table)
    rows = zip(*(np.asarray(table[n]).tolist() for n in names))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return buf.getvalue()


def write_csv(path: str | os.PathLike[str], table: Mapping[str, Any]) -> Path:
    """Write the measurements as a CSV file (header row, one row per object), atomically."""
    text = _csv_text(table)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return replace_atomically(path, write, suffix=".csv", error=OutputError)
