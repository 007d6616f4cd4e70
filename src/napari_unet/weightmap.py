"""Border weight maps of Ronneberger et al. (2015), eq. (2), and the per-pixel weights of the loss.

``w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2))`` on background, ``d1``/``d2`` the distances to
the two nearest objects (4-connected components of the object class, :func:`instances_from_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "border_cutoff_radius",
    "border_term",
    "border_weight_map",
    "border_weight_map_reference",
    "border_weight_map_stack",
    "class_weight_lut",
    "class_weight_map",
    "instances_from_mask",
    "loss_weight_map",
]

ClassWeights = str | Mapping[Any, float] | None


# ----------------------------------------------------------------------------- instances


def instances_from_mask(
    mask: np.ndarray, object_value: int | float | None = None, connectivity: int = 1
) -> np.ndarray:
    """Label the connected components (objects) of one class of a mask.

    Parameters
    ----------
    mask : np.ndarray
        A boolean or integer array (any number of dimensions, usually 2D), e.g.
        a training labels array (``0`` unlabelled, classes ``1..K``) or a binary
        ISBI label image (``0`` membrane, ``255`` cell).
    object_value : int or float, optional
        The value of the object class; the objects are the connected components
        of ``mask == object_value``.  When ``None``:

        * a boolean mask: the ``True`` pixels are the object class;
        * otherwise: the **largest value present** is the object class (the
          last class, e.g. ``2 = cell`` in a ``{0, 1, 2}`` labels array, or
          ``255`` in a ``{0, 255}`` ISBI label image), unless that value is
          ``0`` (an all-zero mask), which gives no objects.
    connectivity : int, default 1
        Neighbourhood of a component, as in :func:`scipy.ndimage.generate_binary_structure`:
        ``1`` = 4-connected in 2D (faces only, the contract's default),
        up to ``mask.ndim`` = 8-connected in 2D.

    Returns
    -------
    np.ndarray
        ``int32`` array of the mask's shape: ``0`` for everything not in the
        object class, ``1..n`` for the ``n`` objects.

    Raises
    ------
    TypeError
        If ``mask`` is not a boolean or numeric array.
    ValueError
        If ``mask`` is 0-dimensional or ``connectivity`` is out of range.
    """
    arr = np.asarray(mask)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"mask must be a boolean or numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("mask must have at least one dimension")
    if isinstance(connectivity, bool) or not isinstance(connectivity, int | np.integer):
        raise TypeError(f"connectivity must be an int, got {type(connectivity).__name__}")
    if not 1 <= connectivity <= arr.ndim:
        raise ValueError(
            f"connectivity must be in 1..{arr.ndim} for a {arr.ndim}D mask, got {connectivity}"
        )

    if object_value is None:
        if arr.dtype == bool:
            binary = arr
        else:
            if arr.size == 0:
                return np.zeros(arr.shape, dtype=np.int32)
            top = arr.max()
            binary = arr == top if top != 0 else np.zeros(arr.shape, dtype=bool)
    else:
        binary = arr == object_value

    out = np.zeros(arr.shape, dtype=np.int32)
    if binary.any():
        structure = ndi.generate_binary_structure(arr.ndim, connectivity)
        ndi.label(binary, structure=structure, output=out)
    return out


# ----------------------------------------------------------------------------- checks


def _check_instances(instances: np.ndarray) -> np.ndarray:
    if not isinstance(instances, np.ndarray):
        instances = np.asarray(instances)
    if instances.dtype == bool or not np.issubdtype(instances.dtype, np.integer):
        raise TypeError(
            "instances must be an integer array (0 = background, positive ids = objects), "
            f"got dtype {instances.dtype}; use instances_from_mask() to label a mask"
        )
    if instances.ndim != 2:
        raise ValueError(
            f"instances must be 2D (H, W), got shape {instances.shape}; "
            "use border_weight_map_stack() for a (Z, H, W) stack"
        )
    if instances.size and instances.min() < 0:
        raise ValueError("instances must be non-negative (0 = background, positive ids = objects)")
    return instances


def _check_params(w0: float, sigma: float) -> tuple[float, float]:
    try:
        w0 = float(w0)
        sigma = float(sigma)
    except (TypeError, ValueError) as exc:
        raise TypeError("w0 and sigma must be real numbers") from exc
    if not math.isfinite(w0) or w0 < 0:
        raise ValueError(f"w0 must be a finite number >= 0, got {w0}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    return w0, sigma


def _class_weight_values(objects: np.ndarray, class_weights: ClassWeights) -> tuple[float, float]:
    """(background weight, object weight) for ``class_weights``."""
    if class_weights is None:
        return 1.0, 1.0
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be None, 'balanced' or a dict, got {class_weights!r}"
            )
        n = objects.size
        n_obj = int(np.count_nonzero(objects))
        n_bg = n - n_obj
        k = int(n_obj > 0) + int(n_bg > 0)
        wb = n / (k * n_bg) if n_bg else 1.0
        wo = n / (k * n_obj) if n_obj else 1.0
        return wb, wo
    if isinstance(class_weights, Mapping):
        aliases = {0: 0, "background": 0, 1: 1, "object": 1}
        values: dict[int, float] = {}
        for key, value in class_weights.items():
            if isinstance(key, bool) or key not in aliases:
                raise ValueError(
                    f"class_weights keys must be 0/'background' and 1/'object', got {key!r}"
                )
            idx = aliases[key]
            if idx in values:
                raise ValueError(f"class_weights gives the weight of class {idx} twice")
            try:
                fvalue = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"class weight {key!r} must be a number, got {value!r}") from exc
            if not math.isfinite(fvalue) or fvalue < 0:
                raise ValueError(f"class weight {key!r} must be finite and >= 0, got {value!r}")
            values[idx] = fvalue
        if set(values) != {0, 1}:
            raise ValueError(
                "class_weights dict must give both the background (0) and the object (1) weight"
            )
        return values[0], values[1]
    raise TypeError(
        f"class_weights must be None, 'balanced' or a dict, got {type(class_weights).__name__}"
    )


def class_weight_map(instances: np.ndarray, class_weights: ClassWeights = None) -> np.ndarray:
    """The class-balancing term ``w_c`` of the weight map.

    Parameters
    ----------
    instances : np.ndarray
        Integer array; ``0`` is background, any positive value is object.
    class_weights : None, "balanced" or dict
        ``None``: ``w_c = 1`` everywhere.  ``"balanced"``:
        ``w_c(x) = N / (K * N_c(x))`` with ``N`` the number of pixels, ``N_c``
        the number of pixels of the class of ``x`` (background or object) and
        ``K`` the number of those two classes present (1 or 2).  A dict
        ``{0: w_background, 1: w_object}`` (or with the keys ``"background"``
        and ``"object"``) gives the weights explicitly.

    Returns
    -------
    np.ndarray
        ``float32`` array of ``instances``' shape.
    """
    objects = np.asarray(instances) > 0
    wb, wo = _class_weight_values(objects, class_weights)
    return np.where(objects, np.float32(wo), np.float32(wb)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- weight maps


def border_cutoff_radius(w0: float, sigma: float, tol: float) -> float:
    """Distance sum beyond which the border term drops below ``tol``.

    ``w0 * exp(-R**2 / (2 sigma**2)) = tol``, i.e. ``R = sigma * sqrt(2 ln(w0 / tol))``
    (``0`` when ``w0 <= tol``).
    """
    if tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if w0 <= tol:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tol))


def _object_boxes(instances: np.ndarray) -> tuple[np.ndarray, list[tuple[int, tuple[slice, ...]]]]:
    """(labels, [(id, bounding box), ...]) of the objects of a non-negative integer array.

    Ids are kept as they are when they are not much larger than the image (the
    usual case: no relabelling pass); sparse huge ids are made sequential first.
    """
    top = int(instances.max())
    if top > 2 * instances.size + 1024:
        ids, inverse = np.unique(instances, return_inverse=True)
        labels = inverse.reshape(instances.shape).astype(np.intp, copy=False)
        if ids[0] != 0:
            labels = labels + 1
    elif instances.dtype in (np.uint64, np.uint32) or instances.dtype.itemsize < 4:
        labels = instances.astype(np.intp)
    else:
        labels = instances
    boxes = ndi.find_objects(labels)
    return labels, [(i, box) for i, box in enumerate(boxes, start=1) if box is not None]


def _keep_two_smallest(d1: np.ndarray, d2: np.ndarray, dist: np.ndarray) -> None:
    """Update the running smallest ``d1`` and second-smallest ``d2`` distances in place."""
    np.minimum(d2, np.maximum(d1, dist), out=d2)
    np.minimum(d1, dist, out=d1)


def _finish(
    instances: np.ndarray, d1: np.ndarray, d2: np.ndarray, w0: float, sigma: float, wc: np.ndarray
) -> np.ndarray:
    background = instances == 0
    s = d1[background] + d2[background]  # inf where fewer than two objects are in range
    term = w0 * np.exp(-(s * s) / (2.0 * sigma * sigma))
    out = wc
    out[background] += term.astype(np.float32)
    return out


def border_weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = None,
    *,
    tol: float = 1e-6,
) -> np.ndarray:
    """Weight map of the U-Net paper (eq. 2) for one 2D image of objects.

    Parameters
    ----------
    instances : np.ndarray
        2D integer array ``(H, W)``: ``0`` is background, every positive id is
        one object (ids need not be contiguous nor start at 1).  Make it from a
        labels array with :func:`instances_from_mask`.
    w0 : float, default 10.0
        Amplitude of the border term (``>= 0``; ``0`` gives ``w_c`` alone).
    sigma : float, default 5.0
        Width of the border term in pixels (``> 0``).
    class_weights : None, "balanced" or dict, default None
        The class-balancing term ``w_c``; see :func:`class_weight_map`.
    tol : float, default 1e-6
        Absolute accuracy of the border term: the result differs from
        :func:`border_weight_map_reference` by at most ``tol`` (plus float32
        rounding) at every pixel.

    Returns
    -------
    np.ndarray
        ``float32`` array ``(H, W)``: ``w_c(x) + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))``
        at background pixels, ``w_c(x)`` at object pixels, with ``d1``/``d2``
        the Euclidean distances (in pixels, to pixel centres) to the nearest and
        second-nearest object.  With fewer than two objects the border term is 0.

    Raises
    ------
    TypeError
        If ``instances`` is not an integer array.
    ValueError
        If ``instances`` is not 2D or has negative values, or a parameter is out
        of range.

    Notes
    -----
    The border term is below ``tol`` once ``d1 + d2 > R`` with
    ``R = sigma * sqrt(2 ln(w0 / tol))``.  A background pixel is at least 1 px
    from every object, so where ``d1 + d2 <= R`` both ``d1`` and ``d2`` are at
    most ``R - 1``.  Each object's distance transform is therefore computed
    only in its bounding box grown by ``r = ceil(R - 1)`` pixels (clipped to
    the image): the distances inside that window are exact because the whole
    object lies in it, and every pixel outside it is farther than ``r`` from
    the object.  A running smallest / second-smallest distance is kept per
    pixel.  Where the true ``d1 + d2 <= R`` both nearest objects' windows
    contain the pixel, so ``d1`` and ``d2`` are exact.  Elsewhere the computed
    distances (minima over fewer objects) can only be larger, so both the true
    and the computed border terms lie in ``[0, tol)``.  The cost is the sum of
    the window areas instead of ``n_objects * H * W``.
    """
    instances = _check_instances(instances)
    w0, sigma = _check_params(w0, sigma)
    tol = float(tol)
    if not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    wc = class_weight_map(instances, class_weights)
    if w0 <= tol or instances.size == 0:
        return wc
    labels, objects = _object_boxes(instances)
    if len(objects) < 2:
        return wc

    # a background pixel is >= 1 px from every object, so an object that is its
    # nearest or second-nearest with d1 + d2 <= R is at most R - 1 away
    r = max(math.ceil(border_cutoff_radius(w0, sigma, tol) - 1.0), 0)
    d1, d2 = _two_nearest_in_windows(labels, objects, r)
    return _finish(labels, d1, d2, w0, sigma, wc)


def _two_nearest_in_windows(
    labels: np.ndarray, objects: list[tuple[int, tuple[slice, ...]]], r: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest object, each in its box grown by ``r``."""
    h, w = labels.shape
    d1, d2 = np.full((2, h, w), np.inf)
    for index, box in objects:
        y0, y1 = max(box[0].start - r, 0), min(box[0].stop + r, h)
        x0, x1 = max(box[1].start - r, 0), min(box[1].stop + r, w)
        dist = ndi.distance_transform_edt(labels[y0:y1, x0:x1] != index)
        _keep_two_smallest(d1[y0:y1, x0:x1], d2[y0:y1, x0:x1], dist)
    return d1, d2


def border_weight_map_reference(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = None,
) -> np.ndarray:
    """Direct (slow) evaluation of the U-Net weight map, for tests and benchmarks.

    One full-image :func:`scipy.ndimage.distance_transform_edt` per object;
    ``d1``/``d2`` are the two smallest of those distances at every pixel.
    Same parameters, result and errors as :func:`border_weight_map` (without
    ``tol``: this is the exact definition).
    """
    instances = _check_instances(instances)
    w0, sigma = _check_params(w0, sigma)
    wc = class_weight_map(instances, class_weights)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if ids.size < 2 or w0 == 0:
        return wc
    d1, d2 = np.full((2, *instances.shape), np.inf)
    for obj in ids:
        _keep_two_smallest(d1, d2, ndi.distance_transform_edt(instances != obj))
    return _finish(instances, d1, d2, w0, sigma, wc)


def border_weight_map_stack(instances: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    """:func:`border_weight_map` of every slice of a ``(Z, H, W)`` stack (same parameters).

    Each slice is independent (objects, distances and ``"balanced"`` class
    frequencies are per slice), matching 2D training on EM sections.  A 2D
    input is passed straight to :func:`border_weight_map`.

    Returns
    -------
    np.ndarray
        ``float32`` array of the input's shape.
    """
    arr = np.asarray(instances)
    if arr.ndim == 2:
        return border_weight_map(arr, *args, **kwargs)
    if arr.ndim != 3:
        raise ValueError(f"instances must be (H, W) or (Z, H, W), got shape {arr.shape}")
    out = np.empty(arr.shape, dtype=np.float32)
    for z in range(arr.shape[0]):
        out[z] = border_weight_map(arr[z], *args, **kwargs)
    return out


# ----------------------------------------------------------------------------- training weights


def class_weight_lut(counts: Any, n_classes: int, class_weights: ClassWeights = None) -> np.ndarray:
    """Class weights of the training loss as a look-up table ``lut[k]`` for labels ``0..K``.

    ``counts[k]`` is the number of *labelled* pixels of value ``k`` over all
    training slices (``counts[0]``, the unlabelled pixels, is not used).
    ``class_weights=None``: 1 for every class; ``"balanced"``:
    ``w_k = N / (K_present * N_k)`` over the classes present in the labels, so
    sparse scribbles are balanced by what was painted; a mapping
    ``{class: weight}`` sets them explicitly (missing classes get 1).
    ``lut[0]`` is 0: unlabelled pixels carry no weight.
    """
    k = int(n_classes)
    if k < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    lut = np.ones(k + 1, dtype=np.float32)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be None, 'balanced' or a mapping, got {class_weights!r}"
            )
        c = np.zeros(k + 1, dtype=np.float64)
        given = np.asarray(counts, dtype=np.float64).ravel()
        m = min(len(c), len(given))
        c[:m] = given[:m]
        c = c[1:]
        present = c > 0
        if present.any():
            total = c[present].sum()
            lut[1:][present] = (total / (present.sum() * c[present])).astype(np.float32)
    elif isinstance(class_weights, Mapping):
        for key, value in class_weights.items():
            cls = int(key)
            if not 1 <= cls <= k:
                raise ValueError(f"class_weights names class {cls}: classes are 1..{k}")
            lut[cls] = float(value)
    elif class_weights is not None:
        raise ValueError(
            f"class_weights must be None, 'balanced' or a mapping, got {class_weights!r}"
        )
    lut[0] = 0.0
    return lut


def border_term(
    labels: np.ndarray, object_class: int, w0: float = 10.0, sigma: float = 5.0
) -> np.ndarray | None:
    """The border term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` alone, for a class-labelled slice.

    The objects are the 4-connected components of ``labels == object_class``
    (:func:`instances_from_mask`); the term is 0 on the objects.  Returns
    ``None`` when it is zero everywhere (``w0 == 0``, fewer than two objects),
    so callers can skip adding it.
    """
    lab = np.asarray(labels)
    if w0 <= 0 or not np.any(lab):
        return None
    instances = instances_from_mask(lab == object_class)
    term = border_weight_map(instances, w0, sigma, class_weights=None)
    term -= 1.0
    return term if np.any(term > 0) else None


def loss_weight_map(
    labels: np.ndarray,
    lut: np.ndarray,
    *,
    w0: float,
    sigma: float,
    object_class: int,
) -> np.ndarray:
    """The per-pixel weight of the weighted cross-entropy for one class-labelled slice.

    ``lut[labels] + border_term(labels, object_class, w0, sigma)``, 0 where the
    slice is unlabelled (label 0): exactly what
    :class:`napari_unet.training.Trainer` feeds the loss (see
    :meth:`~napari_unet.training.Trainer.weight_map`) and what the weight-map
    preview shows.
    """
    lab = np.asarray(labels)
    lut = np.asarray(lut, dtype=np.float32)
    k = len(lut) - 1
    clipped = np.where((lab >= 0) & (lab <= k), lab, 0)
    weights = lut[clipped]
    border = border_term(lab, object_class, w0, sigma)
    if border is not None:
        weights = weights + border
    weights[lab == 0] = 0.0
    return weights.astype(np.float32, copy=False)
