"""Reading one slice or block of any array type, and naming slice selections.

numpy, memmap, dask and zarr arrays are read the same way; ``"0-2,5"`` strings
become sorted slice indices with one set of rules for the GUI and the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SLICES_HELP",
    "array_shape",
    "format_slices",
    "full_resolution",
    "parse_slices",
    "read_block",
    "read_slice",
    "unique_values",
]

SLICES_HELP = (
    "slice indices (0-based): a list '0,3,7', a range '0-4' (inclusive) or both mixed "
    "('0-2,5,9-10')"
)

_RANGE = re.compile(r"^(\d+)\s*[-:]\s*(\d+)$")


def array_shape(image: Any, what: str = "image") -> tuple[int, ...]:
    """The shape of a numpy/memmap/dask/zarr array, or a clear ``TypeError``."""
    try:
        return tuple(int(n) for n in image.shape)
    except (AttributeError, TypeError) as exc:
        raise TypeError(
            f"{what} must be an array (numpy, memmap, dask or zarr), got {type(image).__name__}"
        ) from exc


def full_resolution(array: Any) -> Any:
    """Level 0 of a multiscale pyramid (napari's multiscale layer data); other arrays unchanged.

    Indexing a pyramid picks a level, so every reader computes on its full resolution.
    """
    if hasattr(array, "shapes") and hasattr(array, "__len__") and not hasattr(array, "chunks"):
        return array[0]
    return array


def read_block(array: Any, index: Any) -> np.ndarray:
    """``np.asarray(array[index])`` for numpy, memmap, dask and zarr arrays (a pyramid's level 0)."""
    block = full_resolution(array)[index]
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    return np.asarray(block)


def read_slice(array: Any, z: int) -> np.ndarray:
    """Slice ``z`` of a ``(Z, H, W)`` array, or the whole of a 2D ``(H, W)`` one."""
    if len(array.shape) <= 2:
        return read_block(array, ...)
    return read_block(array, int(z))


def unique_values(array: Any, slices: Iterable[int]) -> np.ndarray:
    """Sorted unique values of the given slices of a 3D array, read one slice at a time."""
    found: np.ndarray | None = None
    for z in slices:
        u = np.unique(read_slice(array, int(z)))
        found = u if found is None else np.union1d(found, u)
    return np.zeros(0, dtype=np.int64) if found is None else found


def _out_of_range(what: str, index: int, n_slices: int) -> ValueError:
    return ValueError(
        f"{what}: slice {index} out of range: the stack has {n_slices} slice(s) (0-{n_slices - 1})"
    )


def parse_slices(spec: str | None, n_slices: int | None = None, what: str = "slices") -> list[int]:
    """Parse ``"0,3,7"``, ``"0-4"`` (or ``"0:4"``, inclusive) or a mix into sorted unique indices.

    ``None`` or a blank string is the empty selection.  Bounds are checked
    before a range is expanded, so a huge range costs nothing.

    Raises
    ------
    ValueError
        For bad syntax, an empty item, a reversed range or, when ``n_slices``
        is given, an index outside ``0..n_slices-1``.
    """
    text = "" if spec is None else str(spec).strip()
    if not text:
        return []
    out: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise ValueError(f"{what} {spec!r}: empty item (two commas in a row?)")
        if part.isdigit():
            lo = hi = int(part)
        else:
            m = _RANGE.match(part)
            if m is None:
                raise ValueError(
                    f"{what} {spec!r}: cannot read {part!r}; use indices >= 0 like '0,3,7', "
                    "a range like '0-4' or both ('0-2,5')"
                )
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(
                    f"{what} {spec!r}: range {part!r} goes backwards; write '{hi}-{lo}'"
                )
        if n_slices is not None and hi >= n_slices:
            raise _out_of_range(what, hi, n_slices)
        out.update(range(lo, hi + 1))
    return sorted(out)


def format_slices(slices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the inverse of :func:`parse_slices`)."""
    zs = sorted({int(z) for z in slices})
    parts: list[str] = []
    i = 0
    while i < len(zs):
        j = i
        while j + 1 < len(zs) and zs[j + 1] == zs[j] + 1:
            j += 1
        parts.append(str(zs[i]) if i == j else f"{zs[i]}-{zs[j]}")
        i = j + 1
    return ",".join(parts)
