"""Argument parsing, output-path checks and progress printing shared by the subcommands.

Nothing here imports torch, Qt or napari at module level.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..slices import SLICES_HELP, read_block, read_slice
from ..slices import parse_slices as _parse_slices
from . import CLIError

# --------------------------------------------------------------------------- arguments


def parse_slices(
    spec: str | None, n_slices: int | None = None, what: str = "--slices"
) -> list[int]:
    """:func:`napari_unet.slices.parse_slices` for an option: an empty list is an error too."""
    if spec is not None and not str(spec).strip():
        raise CLIError(f"{what}: empty slice list; use e.g. '0,3,7' or '0-4'")
    try:
        return _parse_slices(spec, n_slices, what)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def add_subcommand(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    summary: str,
    description: str,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand's parser (``summary`` in the command list); ``epilog`` is printed as written."""
    formatter = argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter
    p = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=formatter
    )
    p.set_defaults(handler=handler)
    return p


def add_slices_argument(p: argparse.ArgumentParser, flag: str, text: str) -> None:
    """A slice-list option (``--slices``), explained by ``text`` and :data:`SLICES_HELP`."""
    p.add_argument(flag, metavar="LIST", help=f"{text}. {SLICES_HELP}")


def add_device_argument(p: argparse.ArgumentParser, default: str = "auto", note: str = "") -> None:
    """``--device``, with the choices of :data:`napari_unet.devices.DEVICE_CHOICES`."""
    from ..devices import DEVICE_CHOICES

    p.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N; auto picks CUDA, then Apple MPS, then "
        f"the CPU (default {default}){note}",
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
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


def check_device(device: str, *, here: bool = True) -> Any:
    """Resolve ``--device`` or raise a one-line error; ``here=False`` (remote workers) checks the name."""
    from ..devices import DEVICE_CHOICES, resolve_device

    if not here:
        if str(device).split(":")[0].strip().lower() not in DEVICE_CHOICES:
            raise CLIError(
                f"--device: unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}"
            )
        return device
    try:
        return resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(f"--device: {exc}") from None


# --------------------------------------------------------------------------- files

#: the inputs every subcommand opens (through :func:`open_image`)
VOLUME_HELP = "TIFF, OME-Zarr/zarr (store.zarr/path), N5 (volume.n5/path) or HDF5 (file.h5:/path)"


def is_zarr_path(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (
        p.suffix.lower() == ".zarr"
        or (p.is_dir() and (p / "zarr.json").exists())
        or (p.is_dir() and (p / ".zarray").exists())
    )


def _zarr_array_path(path: Path) -> Path | None:
    """``path`` if it is a zarr array, the full-resolution array of an OME-Zarr image, else None."""
    from ..ngff import level0_path

    level0 = level0_path(path)
    if level0 is not None:
        return level0
    if (path / ".zarray").is_file():
        return path
    meta = path / "zarr.json"
    if meta.is_file():
        import json

        try:
            return path if json.loads(meta.read_text()).get("node_type") == "array" else None
        except (OSError, ValueError, AttributeError):
            return None
    return None


def open_zarr(path: Path, what: str, mode: str = "r") -> Any:
    """The zarr array at ``path`` (an OME-Zarr image: its level 0), or a one-line :class:`CLIError`."""
    if not path.exists():
        raise CLIError(f"{what} {path}: no such zarr folder")
    import zarr

    try:
        return zarr.open_array(str(_zarr_array_path(path) or path), mode=mode)
    except Exception as exc:  # zarr raises many kinds on bad stores
        raise CLIError(f"{what} {path}: not a readable zarr array ({exc})") from None


def open_image(
    path: str | os.PathLike, what: str = "image", *, as_labels: bool | None = False
) -> Any:
    """The one opener of the subcommands' inputs: a :class:`napari_unet.volumes.Volume`.

    TIFF (lazy when large), OME-Zarr (level 0), zarr, N5 and HDF5 (``file.h5:/path``); a bad
    input raises :class:`napari_unet.io.InvalidImageError`, a one-line error.
    """
    from ..io import DEFAULT_MEMORY_BUDGET
    from ..volumes import open_volume

    return open_volume(path, as_labels=as_labels, memory_budget=DEFAULT_MEMORY_BUDGET)


def open_labels(path: str | os.PathLike, what: str) -> tuple[Any, Any]:
    """Open a label/class map: a zarr array (with its completion record) or any :func:`open_image` input.

    Returns ``(array, Volume or None)``.
    """
    p = Path(path)
    if is_zarr_path(p) and (not p.exists() or _zarr_array_path(p) is not None):
        arr = open_zarr(p, what, mode="r")
        if np.dtype(arr.dtype).kind not in "biu":
            raise CLIError(f"{what} {p}: holds {arr.dtype} values, not integer labels")
        if arr.ndim not in (2, 3):
            raise CLIError(f"{what} {p}: a label map must be 2D or 3D, got shape {arr.shape}")
        return arr, None
    vol = open_image(p, what, as_labels=True)
    return (vol.stored if vol.stored is not None else vol.data), vol


def nbytes_of(shape: Sequence[int], dtype: Any) -> int:
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) * np.dtype(dtype).itemsize


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------- views


class SliceSelection:
    """Read-only view of some Z-slices of a ``(Z, H, W)`` array, in the given order.

    ``view[i]`` reads slice ``slices[i]`` whole; ``view[i, rows, columns]`` (how block-wise
    prediction and the normalisation sample read) asks the array for that block only, so a
    block of a huge slice costs the block's pixels, not the slice's.
    """

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
        if isinstance(index, tuple) and index and isinstance(index[0], (int, np.integer)):
            z, rest = self._slices[int(index[0])], index[1:]
            if len(self._array.shape) < 3 or not rest or any(r is Ellipsis for r in rest):
                return read_slice(self._array, z)[rest]  # a whole slice anyway, then a view
            return read_block(self._array, (z, *rest))  # (z, rows, columns): the block only
        if index is Ellipsis:
            return np.stack([self[i] for i in range(len(self))])
        raise TypeError(f"SliceSelection supports integer slice indexing, got {index!r}")


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
