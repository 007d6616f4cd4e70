"""Output files of the subcommands: checked before a long run, locked while written, rescued on failure.

An existing output is replaced only with ``--overwrite``; errors name the user's path in words.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..outputs import (
    OutputError,
    OutputLock,
    check_target,
    clean_stale_temps,
    free_bytes,
    probe_writable,
    rescue_paths,
)
from . import CLIError

__all__ = [
    "check_output_path",
    "locked_outputs",
    "prepare_output",
    "save_or_rescue",
]


def check_output_path(
    path: str | os.PathLike, what: str = "--out", *, folder_ok: bool = False
) -> Path:
    """Fail early (before minutes of work) when ``path`` cannot be written.

    A file is created (and removed) in its folder, which catches read-only
    mounts, ``/proc``, quotas and full disks.  ``folder_ok``: the output is a
    folder (zarr); an existing *file* there is an error.
    """
    p = Path(path)
    check_target(p, what, folder_ok=folder_ok, error=CLIError)
    try:
        probe_writable(p, what)
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    clean_stale_temps(p)
    return p


def prepare_output(
    path: str | os.PathLike,
    what: str,
    *,
    overwrite: bool,
    folder_ok: bool = False,
    need_bytes: int | None = None,
    exact_size: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """:func:`check_output_path`, plus: an existing ``path`` needs ``overwrite``; free space.

    ``need_bytes``: the output's size, exactly (``exact_size``: too little
    space is an error) or at most (compressed: too little space is a warning).
    """
    p = check_output_path(path, what, folder_ok=folder_ok)
    if p.exists() and not overwrite:
        raise CLIError(
            f"{what} {p} already exists: pass --overwrite to replace it, or choose another name"
        )
    free = free_bytes(p.parent if str(p.parent) else ".")
    if need_bytes is not None and free is not None and free < need_bytes:
        text = (
            f"{what} {p}: only {_mib(free)} free in {p.parent}, the result needs "
            f"{'' if exact_size else 'up to '}{_mib(need_bytes)}"
        )
        if exact_size:
            raise CLIError(f"{text}: free some space or choose another folder")
        if warn is not None:
            warn(f"{text} (less when compressed)")
    return p


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@contextlib.contextmanager
def locked_outputs(paths: Sequence[tuple[Path, str]]) -> Iterator[None]:
    """Hold the lock file of every ``(path, what)`` while the block runs (see :class:`OutputLock`)."""
    with contextlib.ExitStack() as stack:
        for path, what in paths:
            try:
                stack.enter_context(OutputLock(path, what))
            except OutputError as exc:
                raise CLIError(str(exc)) from None
        yield


def save_or_rescue(path: Path, save: Callable[[Path], Any]) -> tuple[Path, str | None]:
    """``save(path)``; when writing fails, ``save`` to a rescue location instead.

    Returns the path written and, after a rescue, the error of ``path``
    (the rescue locations are :func:`napari_unet.outputs.rescue_paths`).
    Raises :class:`CLIError` when no location can take it.
    """
    try:
        save(path)
        return path, None
    except OSError as exc:
        first = str(exc)
    for other in rescue_paths(path):
        try:
            save(other)
        except OSError:
            continue
        return other, first
    raise CLIError(
        f"{first}; the current, home and temporary folders could not take it either"
    ) from None
