"""Writing output files safely: errors in words, atomic replacement, lock files, rescue locations.

A file is written to a hidden temporary file next to it (with the user's umask) and renamed over it
when complete; temporary files left by a crashed process are removed at the next write there.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "OutputError",
    "OutputLock",
    "OutputLockedError",
    "check_target",
    "clean_stale_temps",
    "describe_os_error",
    "free_bytes",
    "probe_writable",
    "replace_atomically",
    "rescue_paths",
]

#: what an errno means to a user, and what to do about it
_WORDS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free some space or choose another folder"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose another folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("permission denied", "choose a folder you can write to"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.ENOENT: ("the folder does not exist", "create it or choose another folder"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EISDIR: ("it is a folder", "give a file name"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter name"),
    errno.EFBIG: ("the file is too large for this file system", "choose another disk"),
    errno.EIO: ("input/output error (a failing disk or a lost network drive?)", "check the disk"),
}
#: temporary files of legacy names (no process id) older than this are stale
_LEGACY_STALE_S = 3600.0


class OutputError(ValueError, OSError):
    """An output could not be written; the message names the user's path and the reason."""


class OutputLockedError(OutputError):
    """Another process is writing the same output (its lock file is held)."""


def describe_os_error(exc: BaseException) -> str:
    """``exc`` in words, e.g. "the disk is full (No space left on device); free some space ...".

    The file name of ``exc`` (often a temporary file) is never included.
    """
    code = getattr(exc, "errno", None)
    strerror = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    if code in _WORDS:
        words, advice = _WORDS[code]
        return f"{words} ({strerror}); {advice}"
    return str(strerror)


def _error(error: type[Exception], message: str, cause: BaseException | None) -> Exception:
    exc = error(message)
    if isinstance(exc, OSError) and cause is not None:
        exc.errno = getattr(cause, "errno", None)
    return exc


# --------------------------------------------------------------------------- temporary files

_TEMP_PID = re.compile(r"\.p(\d+)-[0-9a-f]{8}[.]")
#: tempfile.mkstemp's eight random characters, as older versions named their files
_LEGACY = re.compile(r"\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?\.(tmp|part)$")


def _temp_path(path: Path, suffix: str) -> Path:
    token = os.urandom(4).hex()
    return path.with_name(f".{path.name}.p{os.getpid()}-{token}{suffix}.part")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell
    return True


def _temps_of(path: Path) -> Iterator[tuple[Path, int | None]]:
    """Temporary files of ``path`` and the process that writes them (None: an older
    version's ``.NAME.XXXXXXXX[.ext].tmp|.part``, ``.NAME.part`` or ``.NAME.XXXXXXXX.tmp``)."""
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith((".part", ".tmp")):
            continue
        rest = name[len(prefix) - 1 :]
        match = _TEMP_PID.match(rest)
        if match:
            yield Path(entry.path), int(match.group(1))
        elif rest == ".part" or _LEGACY.match(rest):
            yield Path(entry.path), None


def clean_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of ``path`` left by crashed processes; return them.

    A temporary file names the process that writes it; it is stale once that
    process is gone (files of older versions, without a process id, after an hour).
    """
    removed = []
    now = time.time()
    path = Path(path)
    _scanned[str(path.parent.absolute())] = time.monotonic()
    for tmp, pid in _temps_of(path):
        try:
            if pid is not None:
                stale = not _pid_alive(pid)
            else:
                stale = now - tmp.lstat().st_mtime > _LEGACY_STALE_S
            if stale:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


#: folder -> when this process last looked for stale temporary files there
_scanned: dict[str, float] = {}
#: a folder is searched for stale temporary files at most this often by one process
_RESCAN_S = 30.0


def _clean_now_and_then(path: Path) -> None:
    """:func:`clean_stale_temps`, unless this process searched the folder moments ago
    (writing thousands of slices to one folder must not scan it thousands of times)."""
    last = _scanned.get(str(path.parent.absolute()))
    if last is None or time.monotonic() - last > _RESCAN_S:
        clean_stale_temps(path)


def check_target(
    path: str | os.PathLike[str],
    what: str | None = None,
    *,
    folder_ok: bool = False,
    error: type[Exception] = OutputError,
) -> Path:
    """Raise ``error`` unless ``path`` can be created or replaced; return its folder.

    ``folder_ok``: the output is a folder (zarr), and an existing file there is
    in the way.  Messages start with ``what`` (e.g. "--out") and the path.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    head = f"{what} {p}" if what else str(p)
    if p.is_dir() and not folder_ok:
        raise error(f"{head}: is a folder; give a file name")
    if p.exists() and not p.is_dir() and folder_ok:
        raise error(f"{head}: a file is in the way of the zarr folder; remove it")
    if not parent.exists():
        raise error(f"{head}: folder {parent} does not exist")
    if not parent.is_dir():
        raise error(f"{head}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{head}: folder {parent} is not writable")
    if p.exists() and not p.is_dir() and not os.access(p, os.W_OK):
        raise error(f"{head}: the file exists and is not writable")
    return parent


def replace_atomically(
    path: str | os.PathLike[str],
    write: Callable[[Path], Any],
    *,
    suffix: str = "",
    error: type[Exception] = OutputError,
    verify: Callable[[Path], Any] | None = None,
) -> Path:
    """Call ``write(tmp)``, then ``verify(tmp)`` (optional), then rename ``tmp`` over ``path``.

    The temporary file is created next to ``path`` with the user's umask
    (never 0600).  Any failure removes it and leaves an existing ``path``
    untouched; an ``OSError`` becomes ``error`` with a message naming ``path``
    and the reason in words (:func:`describe_os_error`).
    """
    path = Path(path)
    check_target(path, error=error)
    _clean_now_and_then(path)
    tmp = _temp_path(path, suffix)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        message = f"{path}: could not write the file: {describe_os_error(exc)}"
        raise _error(error, message, exc) from exc
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass


# --------------------------------------------------------------------------- before a long run


def probe_writable(path: str | os.PathLike[str], what: str = "output") -> None:
    """Create (and remove) a small file next to ``path``; raise :class:`OutputError` if that fails.

    Catches what ``os.access`` does not: read-only mounts, ``/proc``, full disks, quotas.
    """
    path = Path(path)
    probe = _temp_path(path, ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, b"\0" * 512)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _remove(probe)
        where = path.parent if str(path.parent) else Path(".")
        reason = describe_os_error(exc)
        if getattr(exc, "errno", None) == errno.ENOENT and where.is_dir():
            reason = "this folder accepts no new files (like /proc or /sys); choose another one"
        raise _error(
            OutputError, f"{what} {path}: cannot create a file in {where}: {reason}", exc
        ) from exc
    _remove(probe)


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system of ``folder`` (None when unknown)."""
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def rescue_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Where to save ``path`` when its folder fails: the current folder, home, the temp folder."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{path.stem}.rescued-{stamp}{path.suffix}"
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        home = None
    out: list[Path] = []
    for folder in (Path.cwd(), home, Path(tempfile.gettempdir())):
        if folder is None:
            continue
        same = folder.resolve() == path.parent.resolve() if path.parent.exists() else False
        if not same and all(folder.resolve() != p.parent.resolve() for p in out):
            out.append(folder / name)
    return out


# --------------------------------------------------------------------------- lock files


class OutputLock:
    """An exclusive lock on an output path, held by one process (``with OutputLock(path): ...``).

    The lock is the hidden file ``.NAME.lock`` next to ``path``, locked with
    ``flock`` (released by the kernel when the process dies, even by kill -9);
    it names the holder (process id, host, start time) for the refusal message.
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "output") -> None:
        self.path = Path(path)
        self.what = what
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        for _ in range(5):  # the holder may remove the file between our open and our lock
            fd = self._open()
            state = _try_lock(fd, self.lock_path)
            if state == "locked":
                break
            if state == "busy":
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.what} {self.path} is being written by another napari-unet run "
                    f"({holder}): wait for it to finish or choose another name"
                )
            os.close(fd)
        else:  # pragma: no cover - a lock file removed five times in a row
            raise OutputLockedError(f"{self.what} {self.path}: could not take its lock file")
        os.ftruncate(fd, 0)
        info = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}"
        os.write(fd, info.encode())
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _error(
                OutputError,
                f"{self.what} {self.path}: cannot create its lock file: {describe_os_error(exc)}",
                exc,
            ) from exc

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _remove(self.lock_path)
        os.close(fd)  # closing releases the flock

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int, lock_path: Path) -> str:
    """ "locked", "busy" (another process holds it) or "retry" (the file was replaced)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): no locking
        return "locked"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return "busy"
    try:
        same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
    except OSError:
        same = False
    return "locked" if same else "retry"


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"
