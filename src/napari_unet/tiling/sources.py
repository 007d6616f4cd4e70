"""Lazy image sources for dask workers: a picklable path that each process opens on first read.

Pickling a :class:`TiffSource` ships its path and shape, never pixels; a worker opens the TIFF
once (``tifffile.memmap`` when the pixels are contiguous and uncompressed, ImageJ files over
4 GB included, else tifffile's zarr store, which reads only the strips/tiles of a region).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TiffSource"]

_OPEN: dict[str, tuple[Any, Any, str]] = {}
_OPEN_LOCK = threading.Lock()


def _open_tiff(path: str) -> tuple[Any, Any, str]:
    """``(tiff file, array, axes)`` of the first series, opened once per process."""
    import tifffile

    with _OPEN_LOCK:
        found = _OPEN.get(path)
        if found is not None:
            return found
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        array: Any = None
        if series.dataoffset is not None:
            try:
                array = tifffile.memmap(path, series=0, mode="r")
            except (ValueError, OSError):
                array = None
        if array is None:
            import zarr

            array = zarr.open(series.aszarr(), mode="r")
            if not hasattr(array, "shape"):  # a multiscale group: level 0
                array = array[0]
        found = (tif, array, series.axes)
        _OPEN[path] = found
        return found


class TiffSource:
    """A grayscale TIFF's ``(Z, Y, X)`` or ``(Y, X)`` pixels, read region by region where it is used.

    Parameters
    ----------
    path : str or os.PathLike
    shape, dtype
        The image as :func:`napari_unet.io.read_tiff` sees it (singleton axes dropped).
    slices : sequence of int, optional
        Z-slices of a stack to expose, in this order (``shape[0]`` becomes their number).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: Sequence[int],
        dtype: Any,
        slices: Sequence[int] | None = None,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        full = tuple(int(s) for s in shape)
        if len(full) not in (2, 3):
            raise ValueError(f"{self.path}: expected a 2D or 3D image, got shape {full}")
        self.slices = None if slices is None or len(full) == 2 else [int(z) for z in slices]
        self.shape = full if self.slices is None else (len(self.slices), *full[1:])
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    @classmethod
    def open(cls, path: str | os.PathLike, slices: Sequence[int] | None = None) -> TiffSource:
        """Shape and dtype from the file's metadata (no pixels read)."""
        from ..io import read_tiff

        td = read_tiff(path, as_labels=False, memory_budget=0)
        return cls(path, td.shape, td.data.dtype, slices)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def _index(self, key: tuple[Any, ...], array: Any, axes: str) -> tuple[Any, ...]:
        """``key`` on the squeezed axes as an index of the file's array (singletons at 0)."""
        if self.ndim == 3:
            z, ys, xs = key
            if self.slices is not None:
                z = self.slices[int(z)]
        else:
            z, (ys, xs) = None, key
        index: list[Any] = []
        other_done = False
        for ax, n in zip(axes, array.shape):
            if ax == "Y":
                index.append(ys)
            elif ax == "X":
                index.append(xs)
            elif n != 1 and not other_done and z is not None:
                index.append(int(z))
                other_done = True
            else:
                index.append(0)
        return tuple(index)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if key == (Ellipsis,):
            key = (slice(None),) * self.ndim
        if len(key) == 1 and self.ndim == 3:
            key = (key[0], slice(None), slice(None))
        if len(key) != self.ndim or (self.ndim == 3 and not isinstance(key[0], (int, np.integer))):
            raise TypeError(f"TiffSource reads (z, rows, columns) or (rows, columns), got {key!r}")
        _, array, axes = _open_tiff(self.path)
        return np.asarray(array[self._index(key, array, axes)])

    def __repr__(self) -> str:
        return f"TiffSource({self.path!r}, shape={self.shape}, dtype={self.dtype})"
