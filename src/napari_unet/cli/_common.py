"""Helpers shared by the headless subcommands (train, predict, evaluate, demo).

Nothing here imports torch, Qt or napari at module level, so ``napari-unet
--help`` stays fast.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import CLIError

# --------------------------------------------------------------------------- arguments

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")

SLICES_HELP = (
    "slice indices (0-based): a list '0,3,7', a range '0-4' (inclusive) or both mixed "
    "('0-2,5,9-10')"
)


def parse_slices(
    spec: str | None, n_slices: int | None = None, what: str = "--slices"
) -> list[int]:
    """Parse ``"0,3,7"``, ``"0-4"`` or a mix into sorted unique slice indices.

    Raises
    ------
    CLIError
        For bad syntax, an empty list, a reversed range or, when ``n_slices``
        is given, an index outside ``0..n_slices-1``.
    """
    if spec is None:
        return []
    text = str(spec).strip()
    if not text:
        raise CLIError(f"{what}: empty slice list; use e.g. '0,3,7' or '0-4'")
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise CLIError(f"{what} {spec!r}: empty item (two commas in a row?)")
        if part.isdigit():
            out.add(int(part))
            continue
        m = _RANGE.match(part)
        if m is None:
            raise CLIError(
                f"{what} {spec!r}: cannot read {part!r}; use indices >= 0 like '0,3,7', "
                "a range like '0-4' or both ('0-2,5')"
            )
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise CLIError(f"{what} {spec!r}: range {part!r} goes backwards; write '{hi}-{lo}'")
        out.update(range(lo, hi + 1))
    slices = sorted(out)
    if n_slices is not None:
        bad = [z for z in slices if z >= n_slices]
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            raise CLIError(
                f"{what}: slice(s) {shown} out of range: the stack has {n_slices} slice(s) "
                f"(0-{n_slices - 1})"
            )
    return slices


def format_slices(slices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the inverse of :func:`parse_slices`)."""
    parts: list[str] = []
    s = sorted(set(int(z) for z in slices))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        parts.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(parts)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


THREADS_HELP = "CPU threads for torch (default: torch's choice, usually the number of cores)"


class torch_threads:
    """Context manager: ``torch.set_num_threads(n)`` inside, restored after (None = no change)."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self._old: int | None = None

    def __enter__(self) -> torch_threads:
        if self.n is not None:
            import torch

            self._old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            import torch

            torch.set_num_threads(self._old)


def check_device(device: str) -> Any:
    """Resolve ``--device`` (auto|cpu|cuda|mps|cuda:N) or raise a one-line error."""
    from ..devices import resolve_device

    try:
        return resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(f"--device: {exc}") from None


# --------------------------------------------------------------------------- files


def check_output_path(
    path: str | os.PathLike, what: str = "--out", *, folder_ok: bool = False
) -> Path:
    """Fail early (before minutes of work) when ``path`` cannot be written.

    ``folder_ok``: the output is a folder (zarr); an existing *file* there is an error.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.exists():
        if p.is_dir() and not folder_ok:
            raise CLIError(f"{what} {p}: is a folder; give a file name")
        if not p.is_dir() and folder_ok:
            raise CLIError(f"{what} {p}: a file is in the way of the zarr folder; remove it")
    if not parent.exists():
        raise CLIError(f"{what} {p}: folder {parent} does not exist")
    if not parent.is_dir():
        raise CLIError(f"{what} {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{what} {p}: folder {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise CLIError(f"{what} {p}: the file exists and is not writable")
    return p


def is_zarr_path(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (
        p.suffix.lower() == ".zarr"
        or (p.is_dir() and (p / "zarr.json").exists())
        or (p.is_dir() and (p / ".zarray").exists())
    )


def open_labels(path: str | os.PathLike, what: str) -> tuple[Any, Any]:
    """Open a label/class map: a TIFF (via :func:`napari_unet.io.read_tiff`) or a zarr array.

    Returns ``(array, TiffData or None)``.
    """
    p = Path(path)
    if is_zarr_path(p):
        if not p.exists():
            raise CLIError(f"{what} {p}: no such zarr folder")
        import zarr

        try:
            arr = zarr.open_array(str(p), mode="r")
        except Exception as exc:  # zarr raises many kinds on bad stores
            raise CLIError(f"{what} {p}: not a readable zarr array ({exc})") from None
        if np.dtype(arr.dtype).kind not in "biu":
            raise CLIError(f"{what} {p}: holds {arr.dtype} values, not integer labels")
        if arr.ndim not in (2, 3):
            raise CLIError(f"{what} {p}: a label map must be 2D or 3D, got shape {arr.shape}")
        return arr, None
    from ..io import read_tiff

    td = read_tiff(p, as_labels=True)
    return td.data, td


def read_slice(array: Any, z: int) -> np.ndarray:
    """``np.asarray(array[z])`` for numpy, memmap, dask and zarr arrays."""
    block = array[z]
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    return np.asarray(block)


def unique_values(array: Any, slices: Iterable[int]) -> np.ndarray:
    """Sorted unique values of the given slices of a 3D array, read one slice at a time."""
    found: np.ndarray | None = None
    for z in slices:
        u = np.unique(read_slice(array, int(z)))
        found = u if found is None else np.union1d(found, u)
    return np.zeros(0, dtype=np.int64) if found is None else found


def nbytes_of(shape: Sequence[int], dtype: Any) -> int:
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) * np.dtype(dtype).itemsize


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------- label views


class SliceLabels:
    """Read-only, lazy view of a ``(Z, H, W)`` labels array for training.

    * slices not in ``keep`` read as zeros (unlabelled) without touching the
      file, so ``--slices`` restricts training without copying the volume;
    * with ``values`` (``--dense``) every file value ``values[i]`` becomes class
      ``i + 1``; values not in the mapping become ``0`` (unlabelled).

    It has ``shape``, ``dtype``, ``ndim`` and ``__getitem__(z)``, which is all
    :class:`napari_unet.training.Trainer` reads.
    """

    def __init__(
        self,
        labels: Any,
        keep: Iterable[int] | None = None,
        values: Sequence[int] | None = None,
    ) -> None:
        self._labels = labels
        self.shape = tuple(int(s) for s in labels.shape)
        if len(self.shape) != 3:
            raise ValueError(f"SliceLabels needs a (Z, H, W) array, got shape {self.shape}")
        self.ndim = 3
        self._keep = None if keep is None else frozenset(int(z) for z in keep)
        self._values = None if values is None else np.asarray(sorted(values))
        if self._values is not None:
            k = len(self._values)
            self.dtype = np.dtype(np.uint8 if k <= 255 else np.uint16 if k <= 65535 else np.int32)
        else:
            self.dtype = np.dtype(labels.dtype)
        self._zero = np.zeros((), dtype=self.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def map_values(self, raw: np.ndarray) -> np.ndarray:
        """File values -> classes ``1..K`` (``0`` for values outside the mapping)."""
        if self._values is None:
            return raw
        idx = np.searchsorted(self._values, raw)
        idx = np.minimum(idx, len(self._values) - 1)
        hit = self._values[idx] == raw
        out = (idx + 1).astype(self.dtype, copy=False)
        out[~hit] = 0
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            z = int(index)
            if z < 0:
                z += self.shape[0]
            if not 0 <= z < self.shape[0]:
                raise IndexError(f"slice {index} out of range for {self.shape[0]} slices")
            if self._keep is not None and z not in self._keep:
                return np.broadcast_to(self._zero, self.shape[1:])
            return self.map_values(read_slice(self._labels, z))
        if index is Ellipsis or (isinstance(index, slice) and index == slice(None)):
            return np.stack([self[z] for z in range(self.shape[0])])
        if isinstance(index, tuple) and index and isinstance(index[0], (int, np.integer)):
            return self[int(index[0])][index[1:]]
        raise TypeError(f"SliceLabels supports integer slice indexing, got {index!r}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[...]
        return arr if dtype is None else arr.astype(dtype)


class SliceSelection:
    """Read-only view of some Z-slices of a ``(Z, H, W)`` array, in the given order."""

    def __init__(self, array: Any, slices: Sequence[int]) -> None:
        self._array = array
        self._slices = [int(z) for z in slices]
        self.shape = (len(self._slices), *(int(s) for s in array.shape[1:]))
        self.dtype = np.dtype(array.dtype)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return read_slice(self._array, self._slices[int(index)])
        if index is Ellipsis:
            return np.stack([self[i] for i in range(len(self))])
        raise TypeError(f"SliceSelection supports integer slice indexing, got {index!r}")


class MappedOutput:
    """An output array that maps class values through a lookup table when written.

    ``predict_tiled(out=MappedOutput(target, lut))`` writes ``lut[classes]``
    into ``target`` slice by slice (checkpoints trained with ``--dense`` map
    classes ``1..K`` back to the file values, e.g. ISBI's 0/255).
    """

    def __init__(self, target: Any, lut: np.ndarray) -> None:
        self._target = target
        self._lut = np.asarray(lut)
        self.shape = tuple(int(s) for s in target.shape)
        self.dtype = np.dtype(target.dtype)
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target[key] = self._lut[np.asarray(value)]

    def __getitem__(self, key: Any) -> Any:
        return self._target[key]


def class_lut(label_mapping: Mapping[str, int] | None, n_classes: int) -> np.ndarray | None:
    """Lookup table class -> file value from a checkpoint's ``label_mapping`` (or None)."""
    if not label_mapping:
        return None
    lut = np.arange(n_classes + 1, dtype=np.int64)
    for value, cls in label_mapping.items():
        c = int(cls)
        if 1 <= c <= n_classes:
            lut[c] = int(value)
    if lut.min() < 0:
        raise CLIError("the checkpoint's label_mapping maps a class to a negative value")
    hi = int(lut.max())
    dtype = np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.uint32
    return lut.astype(dtype)


# --------------------------------------------------------------------------- output


def warn(message: str) -> None:
    print(f"napari-unet: warning: {message}", file=sys.stderr, flush=True)


def _fmt_time(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A progress bar on a terminal, plain lines every ``every_s`` seconds otherwise.

    ``update(done, total, text)`` with ``total`` None for a time-limited run
    (then ``fraction`` may be given, e.g. elapsed / time limit).
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        every_s: float = 10.0,
        tty: bool | None = None,
        quiet: bool = False,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self.every_s = float(every_s)
        self.quiet = quiet
        self._t0 = time.perf_counter()
        self._last = -math.inf
        self._drawn = False
        self._last_text = ""

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _line(self, done: int, total: int | None, text: str, fraction: float | None) -> str:
        if fraction is None and total:
            fraction = done / total
        count = f"{done}/{total}" if total else f"{done}"
        head = f"{self.label} {count}"
        if fraction is not None:
            fraction = min(1.0, max(0.0, fraction))
            if self.tty:
                width = 24
                fill = round(width * fraction)
                head = f"{self.label} [{'#' * fill}{'.' * (width - fill)}] {count}"
            eta = ""
            el = self.elapsed()
            if 0 < fraction < 1:
                eta = f", eta {_fmt_time(el * (1 - fraction) / fraction)}"
            return f"{head} ({100 * fraction:3.0f}%, {_fmt_time(el)}{eta}) {text}".rstrip()
        return f"{head} ({_fmt_time(self.elapsed())}) {text}".rstrip()

    def update(
        self,
        done: int,
        total: int | None = None,
        text: str = "",
        *,
        fraction: float | None = None,
        force: bool = False,
    ) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        interval = 0.1 if self.tty else self.every_s
        if not force and now - self._last < interval:
            return
        self._last = now
        line = self._line(done, total, text, fraction)
        if self.tty:
            pad = max(0, len(self._last_text) - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self._last_text = line
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if self.quiet:
            return
        if self.tty and self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, dict keys -> str (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def fmt_num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)
