"""Autosave of the training labels: where the files go, how they are written and read back.

A labels TIFF ``<stem>.napari-unet-labels.tif`` and a JSON sidecar with the class names and
colours; :class:`LabelsAutosave` re-encodes only the slices that changed since the last save.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import InvalidImageError, atomic_write, check_same_shape, read_tiff
from .labels import label_dtype
from .slices import read_slice
from .writers import write_label_stack

__all__ = [
    "AUTOSAVE_ENV",
    "AUTOSAVE_SUFFIX",
    "CLASSES_SUFFIX",
    "MAX_CLASSES",
    "MAX_DEPTH",
    "MAX_NAME_LENGTH",
    "MAX_SIDECAR_BYTES",
    "AutosaveError",
    "LabelsAutosave",
    "PendingChanges",
    "SaveResult",
    "autosave_path_for",
    "check_classes",
    "classes_path",
    "default_autosave_dir",
    "read_autosaved_classes",
    "read_autosaved_labels",
    "restore_autosave",
    "write_classes",
]

AUTOSAVE_SUFFIX = ".napari-unet-labels.tif"
CLASSES_SUFFIX = ".napari-unet-labels.json"
#: environment variable overriding the default autosave folder (images without a file)
AUTOSAVE_ENV = "NAPARI_UNET_AUTOSAVE_DIR"
#: the most classes an annotation (uint8 labels) holds
MAX_CLASSES = 255
#: the longest class name (characters) a classes sidecar may hold
MAX_NAME_LENGTH = 64
#: the deepest nesting of lists/objects a classes sidecar may hold (it needs 2)
MAX_DEPTH = 4
#: the largest classes sidecar read (255 names and colours take about 20 KB)
MAX_SIDECAR_BYTES = 1 << 20
_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_LEVEL = 6  # zlib level of the pages


class AutosaveError(InvalidImageError):
    """An autosave (labels TIFF or classes sidecar) that cannot be restored."""


def default_autosave_dir() -> Path:
    """``$NAPARI_UNET_AUTOSAVE_DIR``, else ``~/.napari-unet/autosave``."""
    env = os.environ.get(AUTOSAVE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".napari-unet" / "autosave"


def _writable(folder: Path) -> bool:
    """Writable for us, and not a folder whose owner made it read-only (root ignores modes)."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def autosave_path_for(
    source: str | os.PathLike | None, stem: str, folder: str | os.PathLike | None = None
) -> Path:
    """``<stem>.napari-unet-labels.tif`` in the chosen ``folder``, else next to the image file.

    ``stem`` (a file-name-safe image name) names the file of an image without
    a file; with no ``folder``, an image in a folder that is not writable (or
    marked read-only) falls back to :func:`default_autosave_dir`.
    """
    src = Path(source) if source else None
    name = (src.stem if src is not None else stem) + AUTOSAVE_SUFFIX
    if folder:
        return Path(folder) / name
    if src is not None and _writable(src.parent):
        return src.with_name(name)
    return default_autosave_dir() / name


def classes_path(path: str | os.PathLike) -> Path:
    """The classes sidecar of the autosave ``path`` (a labels TIFF or a labels store)."""
    path = Path(path)
    mark = CLASSES_SUFFIX[: -len(".json")]  # also the stem of a labels store ``.zarr``
    name = path.name
    name = name[: name.rindex(mark)] if mark + "." in name else path.stem
    return path.with_name(name + CLASSES_SUFFIX)


# --------------------------------------------------------------------------- reading back


def read_autosaved_labels(path: str | os.PathLike, shape: Sequence[int]) -> np.ndarray:
    """The labels saved in ``path`` as an unsigned array of ``shape``.

    Raises
    ------
    AutosaveError
        For a missing, corrupt or non-integer file, or one of another shape.
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    try:
        arr = np.asarray(read_tiff(path, as_labels=True, memory_budget=None).data)
        if arr.shape != shape and arr.size == int(np.prod(shape)) and arr.squeeze().ndim == 2:
            arr = arr.reshape(shape)  # a one-slice stack reads back as one image
        check_same_shape(arr.shape, shape, what=f"autosaved labels {path.name}")
    except InvalidImageError as exc:
        raise AutosaveError(str(exc)) from exc
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind == "i":
        if arr.size and int(arr.min()) < 0:
            raise AutosaveError(f"autosaved labels {path.name}: labels must not be negative")
        return arr.astype(label_dtype(int(arr.max()) if arr.size else 0))
    return arr


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests lists and objects (counted up to ``limit + 1``, no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= limit:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"{type(name).__name__} {reprlib.repr(name)} is not text"
    name = name.strip()
    if not name:
        return "a name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"{reprlib.repr(name)} is longer than {MAX_NAME_LENGTH} characters"
    if not name.isprintable():
        return f"{reprlib.repr(name)} holds control characters"
    return None


def check_classes(data: Any, where: str = "classes") -> tuple[list[str], list[str]]:
    """``(names, colours)`` of a classes sidecar's content, or an :class:`AutosaveError`.

    The schema: an object whose ``class_names`` is a list of 1..:data:`MAX_CLASSES`
    printable names of at most :data:`MAX_NAME_LENGTH` characters and whose
    ``class_colors`` holds one ``#rgb``/``#rrggbb``/``#rrggbbaa`` colour per name;
    nothing nested deeper than :data:`MAX_DEPTH` levels.  Other keys are ignored.
    """
    if not isinstance(data, dict):
        raise AutosaveError(f"{where}: expected an object with class_names and class_colors")
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise AutosaveError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    names, colors = data.get("class_names"), data.get("class_colors")
    if not isinstance(names, list) or not names:
        raise AutosaveError(f"{where}: class_names must be a non-empty list of names")
    if len(names) > MAX_CLASSES:
        raise AutosaveError(f"{where}: {len(names)} classes; at most {MAX_CLASSES} are supported")
    problem = next((p for p in map(_name_problem, names) if p is not None), None)
    if problem is not None:
        raise AutosaveError(f"{where}: class_names must be a non-empty list of names ({problem})")
    if (
        not isinstance(colors, list)
        or len(colors) != len(names)
        or not all(isinstance(c, str) and _COLOR.fullmatch(c) for c in colors)
    ):
        raise AutosaveError(
            f"{where}: class_colors must be one colour like '#ff3b30' per class "
            f"({len(names)} names)"
        )
    return [n.strip() for n in names], list(colors)


def read_autosaved_classes(path: str | os.PathLike) -> tuple[list[str], list[str]] | None:
    """Class names and colours saved next to the autosave ``path`` (None without a sidecar).

    Raises
    ------
    AutosaveError
        For a sidecar that is not UTF-8 JSON, is larger than :data:`MAX_SIDECAR_BYTES`
        or does not follow the schema of :func:`check_classes`.
    """
    side = classes_path(path)
    if not side.is_file():
        return None
    try:
        size = side.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise AutosaveError(
                f"{side.name}: {size:,} bytes is too large for a classes file "
                f"(at most {MAX_SIDECAR_BYTES:,})"
            )
        text = side.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutosaveError(f"{side.name}: cannot read the classes file ({exc})") from exc
    try:
        data = json.loads(text)
    except RecursionError:
        raise AutosaveError(f"{side.name}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise AutosaveError(f"{side.name}: not a JSON classes file ({exc})") from exc
    return check_classes(data, side.name)


def restore_autosave(
    path: str | os.PathLike, shape: Sequence[int]
) -> tuple[np.ndarray | None, tuple[list[str], list[str]] | None, str | None]:
    """``(labels, classes, problem)`` saved in ``path``: None for what cannot be restored.

    ``problem`` says in one line what was not restored and why.
    """
    try:
        labels = read_autosaved_labels(path, shape)
    except AutosaveError as exc:
        return None, None, f"{exc}; the autosave was not restored (it is kept on disk)"
    try:
        return labels, read_autosaved_classes(path), None
    except AutosaveError as exc:
        return labels, None, f"{exc}; the class names were not restored"


def write_classes(path: str | os.PathLike, names: Sequence[str], colors: Sequence[str]) -> Path:
    """Write the classes sidecar of the autosave ``path`` atomically; return the sidecar."""
    text = json.dumps({"class_names": list(names), "class_colors": list(colors)}, indent=1)
    return atomic_write(
        classes_path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), ".json"
    )


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SaveResult:
    """What one :meth:`LabelsAutosave.save` did."""

    saved: bool  #: whether the files were (re)written
    path: Path
    encoded: tuple[int, ...]  #: the slices hashed as changed and compressed again


def _digest(arr: np.ndarray) -> bytes:
    h = hashlib.blake2b(arr.data, digest_size=16)
    h.update(arr.dtype.str.encode())
    return h.digest()


class LabelsAutosave:
    """The autosave of one labels volume, kept as one compressed page per slice.

    The GUI thread hands over copies of the slices painted since the last
    save; the thread that owns this object (a worker) hashes them, compresses
    only those that changed and rewrites the TIFF from the cached pages.
    One thread at a time.
    """

    def __init__(self, shape: Sequence[int], scale: Sequence[float] | None = None) -> None:
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (2, 3):
            raise ValueError(f"labels must be (Z, H, W) or (H, W), got shape {self.shape}")
        self.scale = tuple(float(s) for s in scale) if scale is not None else None
        n = self.shape[0] if len(self.shape) == 3 else 1
        self._pages: list[tuple[np.dtype, bytes] | None] = [None] * n  # None: all zeros
        self._digests: list[bytes | None] = [None] * n
        self._maxima = np.zeros(n, dtype=np.int64)
        self._encoded: set[int] = set()
        self._written: tuple[Path, str] | None = None  # (file, classes) on disk
        self._changed = False

    @property
    def n_slices(self) -> int:
        return len(self._pages)

    def update(self, slices: Mapping[int, np.ndarray] | Iterable[tuple[int, Any]]) -> list[int]:
        """Take new content of some slices (``{z: array}``); return those that changed."""
        items = slices.items() if isinstance(slices, Mapping) else slices
        changed = []
        for z, data in items:
            z = int(z)
            arr = np.ascontiguousarray(data)
            if arr.shape != self.shape[-2:]:
                raise ValueError(f"slice {z} has shape {arr.shape}, expected {self.shape[-2:]}")
            digest = _digest(arr)
            if digest == self._digests[z]:
                continue
            if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
                raise AutosaveError(f"labels must not be negative (slice {z})")
            hi = int(arr.max()) if arr.size else 0
            self._digests[z] = digest
            if not hi and self._pages[z] is None:
                continue  # zeros where there were zeros
            dtype = label_dtype(hi)
            self._maxima[z] = hi
            self._pages[z] = (
                (dtype, zlib.compress(arr.astype(dtype).tobytes(), _LEVEL)) if hi else None
            )
            changed.append(z)
            self._encoded.add(z)
            self._changed = True  # per slice: a later bad slice must not hide this one
        return changed

    def read_all(self, source: Any) -> list[int]:
        """Take every slice of ``source`` (the layer's array), reading one slice at a time."""
        return self.update((z, read_slice(source, z)) for z in range(self.n_slices))

    def _file_pages(self, dtype: np.dtype) -> Iterator[bytes]:
        zero: bytes | None = None
        for z, page in enumerate(self._pages):
            if page is None:
                if zero is None:
                    zero = zlib.compress(bytes(int(np.prod(self.shape[-2:])) * dtype.itemsize))
                yield zero
                continue
            if page[0] != dtype:  # a class above 255 appeared elsewhere: widen this page
                arr = np.frombuffer(zlib.decompress(page[1]), dtype=page[0]).astype(dtype)
                page = (dtype, zlib.compress(arr.tobytes(), _LEVEL))
                self._pages[z] = page
            yield page[1]

    def save(
        self, path: str | os.PathLike, names: Sequence[str], colors: Sequence[str]
    ) -> SaveResult:
        """Write the labels TIFF and the classes sidecar unless they are on disk already.

        A volume that was never written and holds only zeros is never written
        (so it cannot replace an older autosave with nothing).
        """
        path = Path(path)
        key = _classes_key(names, colors)
        encoded = tuple(sorted(self._encoded))
        self._encoded.clear()
        never_painted = self._written is None and not self._maxima.any()
        if never_painted or (self._written == (path, key) and not self._changed):
            return SaveResult(False, path, encoded)
        path.parent.mkdir(parents=True, exist_ok=True)
        dtype = label_dtype(int(self._maxima.max()))
        write_label_stack(path, self._file_pages(dtype), self.shape, dtype, self.scale)
        write_classes(path, names, colors)
        self._written = (path, key)
        self._changed = False
        return SaveResult(True, path, encoded)

    def save_changes(
        self,
        path: str | os.PathLike,
        names: Sequence[str],
        colors: Sequence[str],
        slices: Mapping[int, np.ndarray] | None = None,
        source: Any = None,
    ) -> SaveResult:
        """:meth:`read_all` ``source`` and :meth:`update` ``slices`` (each when given), then
        :meth:`save`: one autosave tick, run in a worker."""
        if source is not None:
            self.read_all(source)
        self.update(slices or {})
        return self.save(path, names, colors)


def _classes_key(names: Sequence[str], colors: Sequence[str]) -> str:
    return json.dumps([list(names), list(colors)])


class PendingChanges:
    """What changed since the last autosave, collected on the GUI thread.

    Painted slices are copied when taken, and only those; an unknown change
    (``mark(None)``) or labels not written yet (``reread``) hand the whole array
    to the worker, which reads it one slice at a time.
    """

    def __init__(self, n_slices: int, reread: bool = False) -> None:
        self.n_slices = int(n_slices)
        self.slices: set[int] = set()
        self.dirty = False  # classes or unknown slices changed
        self.reread = bool(reread)  # the next save reads every slice (not by itself a change)

    @property
    def pending(self) -> bool:
        return self.dirty or bool(self.slices)

    def mark(self, slices: Iterable[int] | None = None) -> None:
        """Slices (None: unknown ones) whose labels changed."""
        if slices is None:
            self.dirty = self.reread = True
        else:
            self.slices.update(z for z in (int(z) for z in slices) if 0 <= z < self.n_slices)

    def retry(self) -> None:
        """A save failed: the next one reads everything again."""
        self.dirty = self.reread = True

    def take(
        self, data: Any, path: str | os.PathLike, names: Sequence[str], colors: Sequence[str]
    ) -> dict[str, Any]:
        """The arguments of :meth:`LabelsAutosave.save_changes`, copying the painted slices."""
        slices = {} if self.reread else {z: read_slice(data, z).copy() for z in self.slices}
        changes = {
            "path": Path(path),
            "names": list(names),
            "colors": list(colors),
            "slices": slices,
            "source": data if self.reread else None,
        }
        self.clear()
        return changes

    def clear(self) -> None:
        self.slices.clear()
        self.dirty = self.reread = False
