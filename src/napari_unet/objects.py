"""Instances (objects) from a class map or class probabilities: cells between membranes, organelles.

Two modes, chosen from the class (:func:`default_params`):

- ``"boundary"`` (membranes and the cells between them): a seeded watershed on the
  boundary probability; seeds are the h-maxima of the distance transform of the
  non-boundary pixels (a one-pixel gap in a membrane leaves two seeds) or the
  h-minima of the smoothed probability; segments smaller than ``min_size`` are
  flooded by their neighbours.
- ``"objects"`` (mitochondria, nuclei, vesicles): connected components of the
  class, holes filled, optionally split at the necks of the distance transform,
  objects below ``min_size`` removed.

2D mode works slice by slice; 3D mode on blocks of ``block_slices`` slices with the
anisotropic ``scale`` (objects connect across slices only where they overlap),
stitched across blocks by overlap.  The input is read and the output written one
slice or block at a time, so zarr in, zarr out handles stacks larger than RAM.
Every default lives in :class:`ObjectParams`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._object_blocks import (
    UnionFind,
    check_class_present,
    read_class_prob,
    spatial_shape,
    stitch,
)
from .checks import ArgumentError, check_float, check_int
from .slices import read_block

__all__ = [
    "BOUNDARY_NAMES",
    "MODES",
    "REGION_NAMES",
    "ObjectParams",
    "ObjectsResult",
    "check_objects_table",
    "default_params",
    "label_objects",
    "objects_metadata",
    "params_from_metadata",
    "params_to_dict",
    "resolve_class",
    "source_class",
    "split_by_seeds",
]

#: class names (lower case) that mark boundaries between instances
BOUNDARY_NAMES: frozenset[str] = frozenset(
    {"membrane", "membranes", "boundary", "boundaries", "border", "borders", "edge", "edges"}
)
#: class names of the regions that boundaries separate (instances by boundary watershed)
REGION_NAMES: frozenset[str] = frozenset(
    {"cell", "cells", "neurite", "neurites", "cytoplasm", "region", "regions", "interior"}
)
MODES: tuple[str, ...] = ("boundary", "objects")
SEEDS: tuple[str, ...] = ("distance", "hminima")

#: metadata key of a checkpoint holding ``{class name: {parameter: value}}``
METADATA_KEY = "objects"


class ObjectsWarning(UserWarning):
    """A stored object parameter was ignored (bad value or unknown name)."""


#: default seed depth h (pixels) of boundary watershed with distance seeds, chosen on ISBI
#: slices 5-9 (docs/OBJECTS.md); every other seed depth defaults to ``OTHER_H``
BOUNDARY_H = 6.0
OTHER_H = 2.0


@dataclass(frozen=True)
class ObjectParams:
    """How instances are made; every default of the objects step lives here.

    Sizes are physical (the unit of ``scale``: area in 2D, volume in 3D); ``h``
    and ``smooth`` are in pixels of the in-plane spacing.  ``h=None`` is the
    default of the mode (:meth:`seed_depth`).
    """

    mode: str = "objects"  #: "boundary" or "objects"
    dims: int = 2  #: 2 = slice by slice, 3 = across slices with the scale
    threshold: float = 0.5  #: boundary: prob >= t is boundary; objects: prob >= t is object
    smooth: float = 1.0  #: Gaussian sigma (pixels) on probabilities (class maps: none)
    seeds: str = "distance"  #: "distance" (h-maxima of the distance transform) or "hminima"
    h: float | None = None  #: seed depth: pixels of distance, or probability x 10 for "hminima"
    min_size: float | None = None  #: smallest object/segment; None = ``min_pixels`` pixels
    min_pixels: int = 16  #: the default smallest size, in pixels (voxels)
    split: bool = False  #: objects: split touching objects at the necks
    fill_holes: bool = True  #: objects: fill holes (per slice)
    block_slices: int = 32  #: 3D: slices held in memory at once

    def checked(self) -> ObjectParams:
        """These parameters, or an :class:`ArgumentError` naming the first bad one."""
        if self.mode not in MODES:
            raise ArgumentError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.seeds not in SEEDS:
            raise ArgumentError(f"seeds must be one of {', '.join(SEEDS)}, got {self.seeds!r}")
        check_int("dims", self.dims, 2, 3)
        check_float("threshold", self.threshold, 0.0, 1.0)
        check_float("smooth", self.smooth, 0.0, 50.0)
        if self.h is not None:
            check_float("h", self.h, 0.0, 1e6)
        for name in ("split", "fill_holes"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.min_size is not None:
            check_float("min_size", self.min_size, 0.0)
        check_int("min_pixels", self.min_pixels, 0)
        check_int("block_slices", self.block_slices, 1)
        return self

    def seed_depth(self) -> float:
        """``h``, or its default: ``BOUNDARY_H`` for boundary distance seeds, else ``OTHER_H``."""
        if self.h is not None:
            return float(self.h)
        return BOUNDARY_H if (self.mode, self.seeds) == ("boundary", "distance") else OTHER_H

    def min_pixels_for(self, voxel: float) -> float:
        """The smallest size in pixels for a pixel (voxel) of physical size ``voxel``."""
        if self.min_size is None:
            return float(self.min_pixels)
        return self.min_size / voxel

    def replace(self, **changes: Any) -> ObjectParams:
        return dataclasses.replace(self, **changes).checked()


@dataclass
class ObjectsResult:
    """The instance labels (uint32, written into ``out``) and what made them."""

    labels: Any
    n_objects: int
    cls: int
    params: ObjectParams
    scale: tuple[float, ...]


# --------------------------------------------------------------------------- classes


def resolve_class(target: Any, class_names: Sequence[str]) -> int:
    """Class ``1..K`` named by ``target``: a name (any case) or a number; else one line."""
    names = [str(n) for n in class_names]
    text = str(target).strip()
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower()) + 1
    if text.isdigit() and 1 <= int(text) <= len(names):
        return int(text)
    known = ", ".join(f"{i + 1}={n}" for i, n in enumerate(names))
    raise ArgumentError(f"no class {text!r}: the classes are {known}")


def boundary_class(class_names: Sequence[str]) -> int | None:
    """The first class named like a boundary (1-based), or None."""
    for i, name in enumerate(class_names):
        if str(name).strip().lower() in BOUNDARY_NAMES:
            return i + 1
    return None


def default_params(
    class_names: Sequence[str], cls: int, metadata: Mapping[str, Any] | None = None
) -> tuple[int, ObjectParams]:
    """The class the instances come from and the parameters, from the model's classes.

    A boundary class, or a region class ("cell") beside one, gives boundary
    watershed instances (of a region class: on the boundary class); any other
    class gives objects.  Parameters a checkpoint stores under
    ``metadata["objects"][name]`` override (bad ones are ignored with a warning).
    """
    names = [str(n) for n in class_names]
    params = _rule_params(names, cls)
    stored = params_from_metadata(metadata, names[cls - 1] if 1 <= cls <= len(names) else "")
    params = params.replace(**stored) if stored else params
    return source_class(names, cls, params.mode), params


def source_class(class_names: Sequence[str], cls: int, mode: str) -> int:
    """The class instances of ``cls`` come from in ``mode``: in boundary mode, a region
    class ("cell") beside a boundary class takes the boundary class; else ``cls``."""
    names = [str(n).strip().lower() for n in class_names]
    boundary = boundary_class(names)
    region = 1 <= cls <= len(names) and names[cls - 1] in REGION_NAMES
    return boundary if mode == "boundary" and region and boundary is not None else cls


def _rule_params(names: list[str], cls: int) -> ObjectParams:
    name = names[cls - 1].strip().lower() if 1 <= cls <= len(names) else ""
    region = name in REGION_NAMES and boundary_class(names) is not None
    return ObjectParams(mode="boundary") if name in BOUNDARY_NAMES or region else ObjectParams()


#: the parameters a checkpoint stores per class (``block_slices`` is a memory setting)
STORED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ObjectParams) if f.name != "block_slices"
)


def params_to_dict(params: ObjectParams) -> dict[str, Any]:
    """The stored fields of ``params`` as JSON values (``h`` resolved to a number)."""
    out = {k: getattr(params, k) for k in STORED_FIELDS}
    out["h"] = params.seed_depth()
    return out


def objects_metadata(
    class_names: Sequence[str], previous: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The checkpoint table ``{class name: parameters}`` (:func:`default_params` of each
    class; the valid entries of ``previous``, the table trained on, are kept)."""
    names, meta = [str(n) for n in class_names], {METADATA_KEY: previous or {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ObjectsWarning)
        return {
            n: params_to_dict(default_params(names, k, meta)[1]) for k, n in enumerate(names, 1)
        }


def params_from_metadata(metadata: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """The valid object parameters a checkpoint stores for class ``name`` (may be empty).

    Unknown names and bad values are left out with an :class:`ObjectsWarning`.
    """
    table = (metadata or {}).get(METADATA_KEY)
    if not isinstance(table, Mapping) or not isinstance(table.get(name), Mapping):
        return {}
    good, base = {}, ObjectParams()
    for key, value in table[name].items():
        try:
            if key not in STORED_FIELDS:
                raise ArgumentError("not an object parameter")
            base.replace(**{key: value})
        except (TypeError, ValueError) as exc:
            where = f"the model's object parameter {key!r} of class {name!r}"
            warnings.warn(f"{where} is ignored: {exc}", ObjectsWarning, stacklevel=2)
            continue
        good[key] = value
    return good


def check_objects_table(value: Any) -> str | None:
    """What is wrong with the shape of a checkpoint's objects table, or None (values are
    checked, and bad ones ignored with a warning, when used: :func:`params_from_metadata`)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) > 1024:
        return "must be a {class name: {parameter: value}} dict"
    scalars = (str, int, float, bool, type(None))
    for name, params in value.items():
        if not isinstance(name, str) or not isinstance(params, Mapping) or len(params) > 64:
            return f"the entry of {str(name)[:40]!r} must be a {{parameter: value}} dict"
        if not all(isinstance(k, str) and isinstance(v, scalars) for k, v in params.items()):
            return f"the parameters of {name[:40]!r} must be plain values"
    return None


# --------------------------------------------------------------------------- one block


def _smoothed(prob: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return prob
    return ndi.gaussian_filter(prob, sigma=(0,) * (prob.ndim - 2) + (sigma, sigma))


def _seeds_from_distance(mask: np.ndarray, sampling: Sequence[float], h: float) -> np.ndarray:
    from skimage.morphology import h_maxima

    dist = ndi.distance_transform_edt(mask, sampling=sampling).astype(np.float32)
    # quantise to 1/8 pixel so h_maxima's plateau tests are exact
    dist = np.round(dist * 8).astype(np.int32)
    peaks = h_maxima(dist, max(round(h * 8), 1)).astype(bool) & mask
    return ndi.label(peaks, structure=np.ones((3,) * mask.ndim, bool))[0]


def _boundary_block(
    prob: np.ndarray, sampling: Sequence[float], p: ObjectParams, min_px: float
) -> np.ndarray:
    """Seeded watershed of a boundary probability block; every pixel gets a segment.

    Segments under ``min_px`` pixels are flooded by their neighbours.
    """
    from skimage.morphology import h_minima
    from skimage.segmentation import watershed

    prob = _smoothed(prob, p.smooth)
    inside = prob < p.threshold
    if p.seeds == "distance":
        markers = _seeds_from_distance(inside, sampling, p.seed_depth())
    else:
        q = np.round(prob * 1000).astype(np.int32)
        minima = h_minima(q, max(round(p.seed_depth() * 100), 1)).astype(bool) & inside
        markers = ndi.label(minima, structure=np.ones((3,) * prob.ndim, bool))[0]
    # a closed region too small for a seed of depth h is a seed of its own
    regions, n_regions = ndi.label(inside)
    seeded = np.zeros(n_regions + 1, bool)
    seeded[regions[markers > 0]] = True
    unseeded = ~seeded[regions] & (regions > 0)
    markers = np.where(unseeded, regions + markers.max(), markers)
    if markers.max() == 0:
        return np.zeros(prob.shape, np.int64)
    labels = watershed(prob, markers)
    small = np.bincount(labels.ravel()) < min_px
    small[0] = False
    if small.any() and not small[1:].all():
        kept = np.where(small[labels], 0, labels)
        labels = watershed(prob, kept)
    return labels.astype(np.int64)


def _object_block(prob: np.ndarray, sampling: Sequence[float], p: ObjectParams) -> np.ndarray:
    """Connected components (optionally split) of an object class in a block."""
    from skimage.segmentation import watershed

    mask = _smoothed(prob, p.smooth) >= p.threshold
    if p.fill_holes:
        for z in range(mask.shape[0]) if mask.ndim == 3 else ():
            mask[z] = ndi.binary_fill_holes(mask[z])
        if mask.ndim == 2:
            mask = ndi.binary_fill_holes(mask)
    structure = _structure(mask.ndim)
    if p.split:
        markers = _seeds_from_distance(mask, sampling, p.seed_depth())
        dist = ndi.distance_transform_edt(mask, sampling=sampling)
        labels = watershed(-dist, markers, mask=mask, connectivity=structure)
        # a component without a seed (thin) keeps its own label
        rest = ndi.label(mask & (labels == 0), structure=structure)[0]
        labels = np.where(rest > 0, rest + labels.max(), labels)
    else:
        labels = ndi.label(mask, structure=structure)[0]
    return labels.astype(np.int64)


def _structure(ndim: int) -> np.ndarray:
    """8-connected in a slice; across slices only the pixel straight above/below (overlap)."""
    if ndim == 2:
        return np.ones((3, 3), bool)
    s = np.zeros((3, 3, 3), bool)
    s[1] = True
    s[0, 1, 1] = s[2, 1, 1] = True
    return s


def split_by_seeds(
    mask: np.ndarray, seeds: Sequence[Sequence[int]], sampling: Sequence[float] | None = None
) -> np.ndarray:
    """Split one object (``mask``) into one part per seed: a watershed of its distance transform.

    ``seeds`` are pixel indices inside ``mask``; returns labels ``1..len(seeds)``
    (0 outside the mask).  Seeds outside the mask are an :class:`ArgumentError`.
    """
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    markers = np.zeros(mask.shape, np.int32)
    for i, seed in enumerate(seeds):
        idx = tuple(round(float(v)) for v in seed)
        inside = len(idx) == mask.ndim and all(0 <= v < n for v, n in zip(idx, mask.shape))
        if not inside or not mask[idx]:
            raise ArgumentError(f"seed {i + 1} at {idx} is not inside the object")
        markers[idx] = i + 1
    dist = ndi.distance_transform_edt(mask, sampling=sampling)
    return watershed(-dist, markers, mask=mask).astype(np.int64)


# --------------------------------------------------------------------------- the whole


def label_objects(
    source: Any,
    cls: int,
    *,
    kind: str = "probabilities",
    params: ObjectParams | None = None,
    scale: Sequence[float] | None = None,
    out: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> ObjectsResult:
    """Instances of class ``cls`` (1-based) of ``source``, written into ``out`` (uint32).

    Parameters
    ----------
    source : array_like
        ``kind="probabilities"``: ``(C, Y, X)`` or ``(C, Z, Y, X)`` floats;
        ``kind="classes"``: a class map ``(Y, X)`` or ``(Z, Y, X)``.  numpy, zarr
        or dask; read a slice or block at a time.
    cls : int
        The class the instances come from: the boundary class in ``"boundary"``
        mode, the object class in ``"objects"`` mode (for a class map: its
        value there, which may be 0 for a ``--dense`` prediction).
    params : ObjectParams, optional
        Defaults: ``ObjectParams()``.
    scale : sequence of float, optional
        Pixel size (Z, Y, X) or (Y, X): sizes and 3D distances follow it.
    out : array_like, optional
        Where the labels go (numpy or zarr, the spatial shape); a new uint32
        numpy array by default.  It is written twice (provisional labels, then
        the final ``1..n``).
    progress : callable(done, total), optional
        Called after each block.
    """
    p = (params or ObjectParams()).checked()
    shape = spatial_shape(source, kind)
    check_int("class", cls, 1 if kind == "probabilities" else 0)
    check_class_present(source, kind, cls)
    is3d = len(shape) == 3
    sc = tuple(float(s) for s in (scale or (1.0,) * len(shape)))[-len(shape) :]
    if len(sc) < len(shape) or not all(math.isfinite(s) and s > 0 for s in sc):
        raise ArgumentError(f"scale must be {len(shape)} positive numbers, got {scale!r}")
    out = np.zeros(shape, np.uint32) if out is None else out
    if tuple(out.shape) != shape:
        raise ArgumentError(f"out has shape {tuple(out.shape)}, expected {shape}")
    n_z = shape[0] if is3d else 1
    step = p.block_slices if (is3d and p.dims == 3) else 1
    work = p if kind == "probabilities" else dataclasses.replace(p, smooth=0.0)
    blocks = [(z0, min(z0 + step, n_z)) for z0 in range(0, n_z, step)]
    uf, sizes, offset, last = UnionFind(), [np.zeros(1, np.int64)], 0, None
    for i, (z0, z1) in enumerate(blocks):
        prob = read_class_prob(source, kind, cls, z0, z1, is3d)
        labels = _segment(prob, sc, work)
        labels = np.where(labels > 0, labels + offset, 0)
        n = int(labels.max(initial=0))
        uf.grow(max(n, offset))
        counts = np.bincount(labels.ravel(), minlength=n + 1)[offset + 1 :]
        sizes.append(counts)
        if last is not None and p.dims == 3:
            stitch(uf, last, labels[0], any_overlap=p.mode == "objects")
        _write(out, z0, z1, labels, is3d)
        last = labels[-1]
        offset = max(offset, n)
        if progress is not None:
            progress(i + 1, len(blocks))
    lut = _final_lut(uf, np.concatenate(sizes), sc, p)
    for z0, z1 in blocks:
        block = read_block(out, slice(z0, z1)) if is3d else read_block(out, ...)[None]
        _write(out, z0, z1, lut[block], is3d)
    return ObjectsResult(out, int(lut.max(initial=0)), int(cls), p, sc)


def _segment(prob: np.ndarray, sc: tuple[float, ...], p: ObjectParams) -> np.ndarray:
    """Labels of one block ``(Z', Y, X)``: per slice in 2D mode, as a volume in 3D."""
    per_slice = p.dims == 2 or prob.shape[0] == 1
    if per_slice:
        sampling2 = (sc[-2] / sc[-1], 1.0)
        out, offset = np.zeros(prob.shape, np.int64), 0
        for z in range(prob.shape[0]):
            lab = _block(prob[z], sampling2, p, sc[-2] * sc[-1])
            out[z] = np.where(lab > 0, lab + offset, 0)
            offset = int(out[z].max(initial=offset))
        return out
    return _block(prob, tuple(s / sc[-1] for s in sc), p, float(np.prod(sc)))


def _block(
    prob: np.ndarray, sampling: tuple[float, ...], p: ObjectParams, voxel: float
) -> np.ndarray:
    if p.mode == "boundary":
        return _boundary_block(prob, sampling, p, p.min_pixels_for(voxel))
    return _object_block(prob, sampling, p)


def _write(out: Any, z0: int, z1: int, labels: np.ndarray, is3d: bool) -> None:
    if is3d:
        out[z0:z1] = labels.astype(np.uint32)
    else:
        out[...] = labels[0].astype(np.uint32)


def _final_lut(
    uf: UnionFind, sizes: np.ndarray, sc: tuple[float, ...], p: ObjectParams
) -> np.ndarray:
    """Provisional label -> final ``1..n`` (joined across blocks, small objects removed)."""
    roots = uf.roots()
    sizes = np.concatenate([sizes, np.zeros(max(len(roots) - len(sizes), 0), np.int64)])
    roots = np.concatenate([roots, np.arange(len(roots), len(sizes))])
    total = np.bincount(roots, weights=sizes, minlength=len(roots))
    voxel = float(np.prod(sc[-2:])) if p.dims == 2 or len(sc) < 3 else float(np.prod(sc))
    # boundary segments under the size were flooded by their neighbours already
    least = 1.0 if p.mode == "boundary" else max(p.min_pixels_for(voxel), 1.0)
    keep = total[roots] >= least
    keep[0] = False
    kept_roots = np.unique(roots[keep])
    new = np.zeros(len(roots), np.uint32)
    new[kept_roots] = np.arange(1, len(kept_roots) + 1, dtype=np.uint32)
    lut = np.where(keep, new[roots], 0).astype(np.uint32)
    return lut
