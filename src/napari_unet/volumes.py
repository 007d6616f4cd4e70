"""Opening EM volumes of any format lazily: TIFF, OME-Zarr, plain zarr arrays, N5 and HDF5.

A location is a file or store, optionally with the path of an array or group inside it:
``stack.tif``, ``image.ome.zarr``, ``store.zarr/raw/s0``, ``volume.n5/raw``, ``file.h5:/volumes/raw``.
Everything but a small TIFF opens as a dask array over the stored chunks (nothing is read up
front); an OME-Zarr image is computed on at full resolution (level 0) and keeps its pyramid
for display.  The pixel size comes from the metadata: OME-NGFF coordinateTransformations,
or ``resolution``/``pixelResolution``/``element_size_um`` attributes (HDF5 and zarr list them
Z, Y, X; N5 lists X, Y, Z, reversed here).  Bad input raises :class:`napari_unet.io.InvalidImageError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import (
    DEFAULT_MEMORY_BUDGET,
    UNIT_TO_UM,
    ImageNotFoundError,
    InvalidImageError,
    TiffData,
    decide_is_labels,
    read_tiff,
)
from .ngff import Multiscale, read_multiscale

__all__ = [
    "CONTAINER_SUFFIXES",
    "Volume",
    "as_volume",
    "is_volume_path",
    "open_volume",
    "split_location",
]

TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: stores that hold arrays under inner paths
CONTAINER_SUFFIXES = (".zarr", ".n5", *HDF5_SUFFIXES)
_HDF5_SPLIT = re.compile(r"^(.*?\.(?:h5|hdf5|hdf|he5)):(.*)$", re.IGNORECASE)


@dataclasses.dataclass
class Volume(TiffData):
    """An opened volume: a :class:`napari_unet.io.TiffData`, plus its pyramid.

    ``data`` is the full-resolution ``(Z, Y, X)`` or ``(Y, X)`` array (dask unless a small
    TIFF); ``levels`` the pyramid of an OME-Zarr image (level 0 first; empty for one level);
    ``stored`` the zarr array behind ``data`` when it has the same axes (its attributes hold a
    result's completion record); ``inner`` the path inside the container.
    """

    levels: tuple[Any, ...] = ()
    stored: Any = None
    inner: str = ""
    format: str = "tiff"

    @property
    def name(self) -> str:
        """A layer name: the inner array's last component, else the file's stem."""
        last = self.inner.strip("/").rsplit("/", 1)[-1]
        if last and not last.isdigit():
            return last
        name = self.path.name
        return name[: -len(".ome.zarr")] if name.lower().endswith(".ome.zarr") else self.path.stem

    @property
    def location(self) -> str:
        if not self.inner:
            return str(self.path)
        sep = ":/" if self.format == "hdf5" else "/"
        return f"{self.path}{sep}{self.inner.strip('/')}"


def as_volume(data: Any) -> Volume:
    """A :class:`Volume` from a :class:`napari_unet.io.TiffData` (a Volume unchanged)."""
    if isinstance(data, Volume):
        return data
    return Volume(**{f.name: getattr(data, f.name) for f in dataclasses.fields(data)})


def _kind(path: Path) -> str | None:
    """The format of an existing or named file/store, from its name or contents."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix == ".n5":
        return "n5"
    if suffix == ".zarr":
        return "zarr"
    if path.is_dir():
        if any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup", ".zattrs")):
            return "zarr"
        if (path / "attributes.json").exists():
            return "n5"
    return None


def split_location(location: str | os.PathLike) -> tuple[Path, str, str | None]:
    """``(file or store, inner path, format)`` of a location; format None when not recognised."""
    text = os.fspath(location)
    m = _HDF5_SPLIT.match(text)
    if m:
        return Path(m.group(1)), m.group(2).strip("/"), "hdf5"
    path = Path(text)
    if path.exists() and not path.is_dir():
        return path, "", _kind(path)
    parts = path.parts
    for i in range(1, len(parts) + 1):  # the outermost store along the path
        head = Path(*parts[:i])
        kind = _kind(head) if head.suffix.lower() in CONTAINER_SUFFIXES or head.is_dir() else None
        if kind is not None and kind != "tiff" and (i == len(parts) or kind != "hdf5"):
            return head, "/".join(parts[i:]), kind
        if kind == "hdf5" and head.is_file():
            return head, "/".join(parts[i:]), kind
    return path, "", _kind(path)


def is_volume_path(location: str | os.PathLike) -> bool:
    """Whether :func:`open_volume` would try ``location`` (by name or store layout; no data read)."""
    return split_location(location)[2] is not None


# --------------------------------------------------------------------------- metadata


def _um(unit: Any) -> float | None:
    if not isinstance(unit, str):
        return None
    return UNIT_TO_UM.get(unit.strip().lower().replace("\u00b5", "µ"))


def _in_um(values: Sequence[float], units: Sequence[Any]) -> tuple[list[float], str]:
    """``values`` in µm when every unit is known, else unchanged ("pixel" without units)."""
    factors = [_um(u) for u in units]
    if units and all(f is not None for f in factors):
        return [v * f for v, f in zip(values, factors)], "um"
    named = {u for u in units if isinstance(u, str) and u}
    return list(values), (named.pop() if len(named) == 1 else "pixel")


def _numbers(value: Any, n: int) -> list[float] | None:
    if isinstance(value, Mapping):
        value = value.get("dimensions", value.get("resolution"))
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if all(np.isfinite(out)) and all(v > 0 for v in out) else None


def _attribute_scale(attrs: Mapping[str, Any], ndim: int, n5: bool) -> tuple[list[float], str]:
    """Pixel size from ``resolution``-style attributes (N5 lists X first)."""
    for key in ("pixelResolution", "resolution", "element_size_um", "scale"):
        values = _numbers(attrs.get(key), ndim)
        if values is None:
            continue
        if n5:
            values = values[::-1]
        if key == "element_size_um":
            return values, "um"
        raw = attrs.get(key)
        unit = (
            raw.get("unit") if isinstance(raw, Mapping) else attrs.get("unit", attrs.get("units"))
        )
        if isinstance(unit, (list, tuple)) and unit:
            unit = unit[0] if len(set(map(str, unit))) == 1 else None
        return _in_um(values, [unit] * ndim) if isinstance(unit, str) else (values, "pixel")
    return [1.0] * ndim, "pixel"


def _attrs(node: Any) -> dict[str, Any]:
    try:
        return dict(node.attrs)
    except Exception:  # unreadable attributes count as none
        return {}


# --------------------------------------------------------------------------- arrays


def _dask(array: Any, lock: bool = False) -> Any:
    """A dask array over ``array``'s stored chunks (whole slices for unchunked HDF5)."""
    import dask.array as da

    shape = tuple(int(s) for s in array.shape)
    chunks = getattr(array, "chunks", None)
    if not chunks or len(chunks) != len(shape):
        chunks = (*[1] * (len(shape) - 2), *shape[-2:])
    itemsize = np.dtype(array.dtype).itemsize
    if int(np.prod(chunks)) * itemsize < (1 << 20):  # many tiny chunks: let dask merge them
        return da.from_array(array, chunks="auto", lock=lock, asarray=True)
    return da.from_array(array, chunks=tuple(int(c) for c in chunks), lock=lock, asarray=True)


def _grayscale(data: Any, axes: list[str], where: str) -> tuple[Any, list[int]]:
    """``data`` without singleton and t/c axes of size 1; the kept axis positions."""
    shape = tuple(int(s) for s in data.shape)
    keep = [i for i, n in enumerate(shape) if n != 1 or i >= len(shape) - 2]
    extra = [i for i in keep if axes and axes[i].lower() in ("c", "t")]
    if extra:
        what = ", ".join(f"{axes[i]}={shape[i]}" for i in extra)
        raise InvalidImageError(
            f"{where}: {what}: napari-unet needs one grayscale channel at one time point; "
            "name a single-channel array inside the store"
        )
    if len(keep) > 3:
        raise InvalidImageError(
            f"{where}: a {len(keep)}D array (shape {shape}) is not supported; napari-unet "
            "needs a single image (YX) or a stack (ZYX)"
        )
    if len(shape) < 2:
        raise InvalidImageError(f"{where}: not an image (shape {shape})")
    if np.dtype(data.dtype).kind not in "uifb":
        raise InvalidImageError(f"{where}: unsupported pixel type {data.dtype}")
    index = tuple(slice(None) if i in keep else 0 for i in range(len(shape)))
    return (data if len(keep) == len(shape) else data[index]), keep


def _finish(
    data: Any, levels: list[Any], stored: Any, scale: Sequence[float], where: str,
    axes: list[str], as_labels: bool | None, label_meta: Any = None,
) -> tuple[Any, tuple[Any, ...], tuple[float, ...], Any, bool]:  # fmt: skip
    """(data, levels, scale, stored-if-same-axes, is_labels) of a dask array and its pyramid."""
    ndim = len(data.shape)
    data, keep = _grayscale(data, axes, where)
    pyramid = tuple(_grayscale(a, axes, where)[0] for a in levels)
    scale = tuple(float(scale[i]) for i in keep)
    same = stored is not None and len(keep) == ndim
    if label_meta is not None and as_labels is None:
        as_labels = True
    is_labels = decide_is_labels(data, np.dtype(data.dtype), as_labels, Path(where))
    return data, (pyramid if len(pyramid) > 1 else ()), scale, (stored if same else None), is_labels


def _zarr_members(group: Any, depth: int = 3) -> list[str]:
    """Paths (relative to ``group``) of its image arrays and OME-Zarr images, depth first."""
    out: list[str] = []
    try:
        children = sorted(group.members(), key=lambda kv: str(kv[0]))
    except Exception:  # unreadable members count as none
        return out
    for name, node in children:
        name = str(name)
        if name.endswith(".json"):
            continue
        if hasattr(node, "shape"):
            if len(node.shape) >= 2:
                out.append(name)
        elif read_multiscale(_attrs(node)) is not None or _scale_pyramid(node):
            out.append(name)
        elif depth > 1 and name != "labels":  # an OME-Zarr labels group is opened with its image
            out.extend(f"{name}/{sub}" for sub in _zarr_members(node, depth - 1))
    return out


def _scale_pyramid(group: Any) -> list[str]:
    """The ``s0, s1, ...`` arrays of an N5/zarr scale pyramid (BigDataViewer, n5-viewer style),
    full resolution first; empty when ``group`` is not one."""
    try:
        children = [(str(k), v) for k, v in group.members() if not str(k).endswith(".json")]
    except Exception:  # unreadable members count as none
        return []
    names = [k for k, v in children if hasattr(v, "shape") and re.fullmatch(r"s\d+", k)]
    if len(names) < 2 or len(names) != len(children):
        return []
    return sorted(names, key=lambda n: int(n[1:]))


def _one_member(members: list[str], where: str, sep: str) -> str:
    """The only image in a group, or an error naming what it holds."""
    if len(members) == 1:
        return members[0]
    listed = ", ".join(members[:12]) or "no images"
    raise InvalidImageError(
        f"{where}: name the image inside it (it holds {listed}), "
        f"e.g. {where.rstrip('/')}{sep}{members[0] if members else 'raw'}"
    )


def _open_zarr_node(root: Any, inner: str, where: str) -> Any:
    if not inner:
        return root
    try:
        return root[inner]
    except KeyError:
        raise InvalidImageError(f"{where}: no array or group {inner!r} in the store") from None


def _open_zarr_like(path: Path, inner: str, kind: str, as_labels: bool | None) -> Volume:
    """An OME-Zarr image, zarr array or group, or N5 dataset as a :class:`Volume`."""
    import zarr

    where = f"{path}/{inner}" if inner else str(path)
    try:
        if kind == "n5":
            store = _n5_store(path)
            root = zarr.open(store, mode="r")
        else:
            root = zarr.open(str(path), mode="r")
        node = _open_zarr_node(root, inner, where)
    except InvalidImageError:
        raise
    except Exception as exc:  # zarr raises many kinds on damaged stores
        raise InvalidImageError(f"{where}: not a readable {kind} store ({exc})") from None
    attrs = _attrs(node)
    ms = None if hasattr(node, "shape") else read_multiscale(attrs)
    if ms is not None:
        return _from_multiscale(node, ms, path, inner, kind, as_labels, where)
    pyramid = [] if hasattr(node, "shape") else _scale_pyramid(node)
    if not hasattr(node, "shape") and not pyramid:
        member = _one_member(_zarr_members(node), where, "/")
        return _open_zarr_like(path, f"{inner}/{member}".strip("/"), kind, as_labels)
    arrays = [node[n] for n in pyramid] if pyramid else [node]
    n5 = kind == "n5"
    scale, unit = _attribute_scale(_attrs(arrays[0]) or attrs, len(arrays[0].shape), n5=n5)
    dasks = [_dask(a).transpose() if n5 else _dask(a) for a in arrays]  # N5 stores X, Y, Z
    stored = None if n5 else arrays[0]
    data, levels, scale, stored, is_labels = _finish(
        dasks[0], dasks if pyramid else [], stored, scale, where, [], as_labels
    )
    meta = {"storage": "dask", "format": kind, "dtype": str(data.dtype)}
    return Volume(
        data, scale, unit, "ZYX"[-data.ndim :], is_labels, True, path, meta, levels, stored,
        inner if kind == "n5" else str(node.path), kind,
    )  # fmt: skip


def _n5_store(path: Path) -> Any:
    try:
        from zarr.storage import LocalStore
        from zarr_n5 import ImplicitGroupWrapperStore, N5WrapperStore
    except ImportError:
        raise InvalidImageError(
            f"{path}: reading N5 needs the zarr-n5 package (pip install zarr-n5)"
        ) from None
    return ImplicitGroupWrapperStore(N5WrapperStore(LocalStore(str(path), read_only=True)))


def _from_multiscale(
    group: Any, ms: Multiscale, path: Path, inner: str, kind: str, as_labels: bool | None,
    where: str,
) -> Volume:  # fmt: skip
    try:
        arrays = [group[p] for p in ms.paths]
    except KeyError as exc:
        raise InvalidImageError(
            f"{where}: the OME-Zarr image lists a missing level {exc}"
        ) from None
    if any(not hasattr(a, "shape") for a in arrays):
        raise InvalidImageError(f"{where}: an OME-Zarr level is not an array")
    ndim = len(arrays[0].shape)
    if len(ms.axes) != ndim:
        raise InvalidImageError(f"{where}: {len(ms.axes)} axes listed for a {ndim}D array")
    names = [str(a["name"]) for a in ms.axes]
    scale, unit = _in_um(ms.scales[0], [a.get("unit") for a in ms.axes])
    spatial = [i for i, a in enumerate(ms.axes) if a.get("type") == "space"]
    units = [ms.axes[i].get("unit") for i in spatial]
    if spatial and not any(units):
        unit = "pixel"
    data, levels, scale, stored, is_labels = _finish(
        _dask(arrays[0]), [_dask(a) for a in arrays], arrays[0], scale, where, names, as_labels,
        ms.image_label,
    )  # fmt: skip
    meta: dict[str, Any] = {"storage": "dask", "format": "ome-zarr", "ngff_version": ms.version}
    if ms.image_label is not None:
        meta["image_label"] = ms.image_label
    if ms.translation is not None:
        meta["translation"] = ms.translation
    meta["level0"] = ms.paths[0]
    return Volume(
        data, scale, unit, "ZYX"[-data.ndim :], is_labels, True, path, meta, levels, stored,
        inner.strip("/"), "ome-zarr" if kind == "zarr" else kind,
    )  # fmt: skip


def _hdf5_members(group: Any) -> list[str]:
    """Paths (relative to ``group``) of the 2D-or-more datasets of an HDF5 group."""
    import h5py

    found: list[str] = []
    group.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return [n for n in found if len(group[n].shape) >= 2]


def member_locations(location: str | os.PathLike, limit: int = 16) -> list[str]:
    """What a viewer opens for ``location``: an OME-Zarr image and its labels, or the images
    of a plain zarr/N5 group or an HDF5 file (at most ``limit``), else ``location`` itself."""
    import zarr

    path, inner, kind = split_location(location)
    if kind in (None, "tiff") or not path.exists():
        return [os.fspath(location)]
    try:
        if kind == "hdf5":
            import h5py

            with h5py.File(str(path), "r") as f:
                node = f[inner] if inner else f
                if isinstance(node, h5py.Dataset):
                    return [os.fspath(location)]
                prefix = f"{node.name.strip('/')}/".lstrip("/")
                names = [f"{path}:/{prefix}{m}" for m in _hdf5_members(node)]
        else:
            root = zarr.open(_n5_store(path) if kind == "n5" else str(path), mode="r")
            node = root[inner] if inner else root
            base = f"{path}/{inner}".rstrip("/")
            if hasattr(node, "shape"):
                return [os.fspath(location)]
            if read_multiscale(_attrs(node)) is not None:
                names = [base, *(f"{base}/labels/{n}" for n in _label_names(node))]
            else:
                names = [f"{base}/{m}" for m in _zarr_members(node)]
    except Exception:  # let open_volume report what is wrong
        return [os.fspath(location)]
    return names[:limit] or [os.fspath(location)]


def _label_names(image: Any) -> list[str]:
    """The label images an OME-Zarr image lists in its ``labels`` group."""
    from .ngff import ome_attrs

    try:
        labels = image["labels"]
    except KeyError:
        return []
    names = ome_attrs(_attrs(labels))[0].get("labels") or []
    return [n for n in names if isinstance(n, str) and n and "/" not in n]


def _open_hdf5(path: Path, inner: str, as_labels: bool | None) -> Volume:
    import h5py

    where = f"{path}:/{inner}" if inner else str(path)
    try:
        f = h5py.File(str(path), "r")
    except OSError as exc:
        raise InvalidImageError(f"{path}: not a readable HDF5 file ({exc})") from None
    node = f[inner] if inner and inner in f else None
    if inner and node is None:
        f.close()
        raise InvalidImageError(f"{where}: no dataset {inner!r} in the file")
    if node is None or isinstance(node, h5py.Group):
        group = node if node is not None else f
        members = _hdf5_members(group)
        f.close()
        member = _one_member(members, where, ":/" if not inner else "/")
        return _open_hdf5(path, f"{inner}/{member}".strip("/"), as_labels)
    scale, unit = _attribute_scale(_attrs(node), len(node.shape), n5=False)
    data, _, scale, _, is_labels = _finish(
        _dask(node, lock=True), [], None, scale, where, [], as_labels
    )
    meta = {"storage": "dask", "format": "hdf5", "dtype": str(data.dtype)}
    vol = Volume(data, scale, unit, "ZYX"[-data.ndim :], is_labels, True, path, meta)
    vol.inner, vol.format = node.name.strip("/"), "hdf5"
    return vol


def open_volume(
    location: str | os.PathLike,
    *,
    as_labels: bool | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> Volume:
    """Open the image or label volume at ``location`` (see the module doc for the forms).

    ``as_labels``: True/False to read it as labels/an image, None to guess (an NGFF label
    image, or integers with few values).  ``memory_budget`` applies to TIFF (see
    :func:`napari_unet.io.read_tiff`); every other format opens lazily.
    """
    path, inner, kind = split_location(location)
    if kind is None:
        if not path.exists():
            raise ImageNotFoundError(f"{location}: no such file or folder")
        raise InvalidImageError(
            f"{location}: not a supported volume: napari-unet reads TIFF (.tif), OME-Zarr/zarr "
            "(.zarr), N5 (.n5) and HDF5 (.h5, with file.h5:/path/to/dataset)"
        )
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file or folder")
    if kind == "tiff":
        return as_volume(read_tiff(path, as_labels=as_labels, memory_budget=memory_budget))
    if kind == "hdf5":
        return _open_hdf5(path, inner, as_labels)
    return _open_zarr_like(path, inner, kind, as_labels)
