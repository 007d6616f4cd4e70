"""Which slice to label next: rank the unlabelled slices of a stack by the model's uncertainty.

Slices are predicted one at a time with :func:`~napari_unet.tiling.predict_tiled`; cancellable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .checks import check_int
from .dihedral import N_TRANSFORMS, dihedral, dihedral_inverse
from .normalization import compute_normalization
from .slices import array_shape, read_slice
from .tiling import PredictionCancelled, predict_tiled

__all__ = [
    "METHODS",
    "Ranking",
    "SliceScore",
    "labelled_slices",
    "rank_slices",
    "uncertainty_map",
]

#: ``"entropy"``: mean normalised entropy of the softmax; ``"disagreement"``: mean
#: mutual information between the softmax of flipped/rotated copies of the slice
METHODS = ("entropy", "disagreement")
#: dihedral transforms used for the disagreement, in this order: identity, flip,
#: then quarter turns (so 2 and 4 transforms are the most different ones)
TRANSFORM_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)

#: a callable returning True to stop, or a ``threading.Event``
Stop = Callable[[], bool] | Any


@dataclass(frozen=True)
class SliceScore:
    """The uncertainty of one slice; ``score`` is what the ranking sorts by (in [0, 1])."""

    slice: int
    score: float
    entropy: float
    disagreement: float | None = None


@dataclass
class Ranking:
    """Scored slices, most uncertain first (ties: lower slice first)."""

    scores: list[SliceScore]
    method: str = "entropy"
    cancelled: bool = False
    #: ``{slice: (H, W) float32 uncertainty map}`` when asked for
    maps: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def ranking(self) -> list[tuple[int, float]]:
        """``[(slice, score), ...]``, most uncertain first."""
        return [(s.slice, s.score) for s in self.scores]

    @property
    def slices(self) -> list[int]:
        return [s.slice for s in self.scores]

    def next(self, exclude: Iterable[int] = ()) -> int | None:
        """The most uncertain slice not in ``exclude`` (None if there is none)."""
        skip = {int(z) for z in exclude}
        return next((s.slice for s in self.scores if s.slice not in skip), None)

    def __len__(self) -> int:
        return len(self.scores)


def labelled_slices(labels: Any) -> list[int]:
    """The slices of a ``(Z, H, W)`` (or ``(H, W)``) label array with a labelled pixel."""
    shape = array_shape(labels, "labels")
    n = shape[0] if len(shape) == 3 else 1
    return [z for z in range(n) if np.any(read_slice(labels, z))]


def _stop_check(stop: Stop | None) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):
        return stop.is_set
    if callable(stop):
        return lambda: bool(stop())
    raise TypeError(f"stop must be callable, a threading.Event or None, got {type(stop).__name__}")


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Per-pixel entropy of ``(K, H, W)`` probabilities, divided by ``log K`` (in [0, 1])."""
    p = np.clip(probs.astype(np.float32, copy=False), 1e-7, 1.0)
    return -(p * np.log(p)).sum(axis=0) / math.log(probs.shape[0])


def _shrink(x: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of ``factor x factor`` pixels (the edge rows/columns that do not fill a block are dropped)."""
    if factor == 1:
        return x
    h, w = (x.shape[0] // factor) * factor, (x.shape[1] // factor) * factor
    return x[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _grow(m: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Undo :func:`_shrink` for a map: repeat each value, pad the dropped edge by replication."""
    if factor == 1:
        return m
    big = np.repeat(np.repeat(m, factor, axis=0), factor, axis=1)
    pad = ((0, shape[0] - big.shape[0]), (0, shape[1] - big.shape[1]))
    return np.pad(big, pad, mode="edge")


def uncertainty_map(
    model: nn.Module,
    image_slice: np.ndarray,
    *,
    method: str = "entropy",
    n_transforms: int = 4,
    normalization: dict[str, float] | None = None,
    cancel: Callable[[], bool] | None = None,
    **predict_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-pixel ``(entropy, disagreement or None)`` maps of one ``(H, W)`` slice, in [0, 1].

    ``"disagreement"`` predicts ``n_transforms`` flipped/rotated copies; the entropy is
    then that of their mean softmax, the disagreement its mutual information (the
    entropy of the mean minus the mean of the entropies, 0 when all copies agree).
    ``cancel()`` returning True raises :class:`~napari_unet.tiling.PredictionCancelled`.
    """
    ks = TRANSFORM_ORDER[:n_transforms] if method == "disagreement" else (0,)
    progress = None if cancel is None else (lambda done, total: not cancel())
    mean_p: np.ndarray | None = None
    mean_h: np.ndarray | None = None
    for k in ks:
        _, probs = predict_tiled(
            model,
            np.ascontiguousarray(dihedral(image_slice, k)),
            return_probabilities=True,
            normalization=normalization,
            progress=progress,
            **predict_kwargs,
        )
        probs = np.ascontiguousarray(dihedral_inverse(probs, k))
        h = _entropy(probs) if len(ks) > 1 else None
        mean_p = probs / len(ks) if mean_p is None else mean_p + probs / len(ks)
        if h is not None:
            mean_h = h / len(ks) if mean_h is None else mean_h + h / len(ks)
    assert mean_p is not None
    entropy = _entropy(mean_p)
    if mean_h is None:
        return entropy, None
    return entropy, np.maximum(entropy - mean_h, 0.0)


def _mean(m: np.ndarray) -> float:
    """Mean of a map; pixels with no finite value (e.g. NaN input) count as fully uncertain."""
    return float(np.nan_to_num(m, nan=1.0).mean())


def _candidates(shape: tuple[int, ...], slices: Sequence[int] | None, labels: Any) -> list[int]:
    """The slices to score: ``slices`` (default all) less the labelled ones."""
    n_slices = shape[0] if len(shape) == 3 else 1
    if slices is None:
        wanted = list(range(n_slices))
    else:
        wanted = sorted({check_int("slice", z, 0, n_slices - 1) for z in slices})
    if labels is None:
        return wanted
    if array_shape(labels, "labels") != shape:
        raise ValueError(f"labels have shape {array_shape(labels, 'labels')}, the image {shape}")
    return [z for z in wanted if not np.any(read_slice(labels, z))]


def _check_options(method: str, n_transforms: Any, downsample: Any) -> tuple[int, int]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n = check_int("n_transforms", n_transforms, 2, N_TRANSFORMS)
    return n, check_int("downsample", downsample, 1)


def rank_slices(
    model: nn.Module,
    image: Any,
    labels: Any = None,
    *,
    slices: Sequence[int] | None = None,
    method: str = "entropy",
    n_transforms: int = 4,
    downsample: int = 1,
    normalization: dict[str, float] | None = None,
    return_maps: bool = False,
    maps_out: Any = None,
    stop: Stop | None = None,
    progress: Callable[[int, int], Any] | None = None,
    **predict_kwargs: Any,
) -> Ranking:
    """Score every unlabelled slice of ``image`` by the model's uncertainty and rank them.

    Parameters
    ----------
    model : UNet
    image : array-like, (Z, H, W) or (H, W)
        Read one slice at a time (numpy, memmap, dask, zarr).
    labels : array-like, optional
        Slices with a labelled (non-zero) pixel are not scored.
    slices : sequence of int, optional
        Score only these slices (default all).
    method : {"entropy", "disagreement"}
        See :data:`METHODS`; ``"disagreement"`` costs ``n_transforms`` predictions per slice.
    downsample : int, default 1
        Predict each slice shrunk by a ``downsample x downsample`` block mean:
        about ``downsample**2`` times faster, approximate (the model sees a smaller scale).
    normalization : dict, optional
        The model's ``{"mean", "std"}`` (e.g. ``trainer.normalization``); default the stack's.
    return_maps : bool
        Keep each slice's ``(H, W)`` uncertainty map in :attr:`Ranking.maps`.
    maps_out : array, optional
        A writable ``(Z, H, W)`` float array (e.g. a layer's data): each scored slice's map is written to it.
    stop : callable or threading.Event, optional
        Checked between slices and between tiles; when set the slices scored so far
        are returned with ``cancelled=True``.
    progress : callable, optional
        ``progress(done, total)`` after each slice.
    **predict_kwargs
        ``device``, ``tile_size``, ``batch_size``, ``amp`` for :func:`predict_tiled`.
    """
    n_transforms, factor = _check_options(method, n_transforms, downsample)
    todo = _candidates(array_shape(image), slices, labels)
    stopped = _stop_check(stop)
    norm = dict(normalization) if normalization is not None else compute_normalization(image)
    options = {"method": method, "n_transforms": n_transforms, "normalization": norm}
    ranking = Ranking(scores=[], method=method)
    for i, z in enumerate(todo):
        if stopped():
            ranking.cancelled = True
            break
        x = read_slice(image, z).astype(np.float32, copy=False)
        scored = _score_slice(model, z, _shrink(x, factor), stopped, options, predict_kwargs)
        if scored is None:
            ranking.cancelled = True
            break
        score, chosen = scored
        ranking.scores.append(score)
        if return_maps or maps_out is not None:
            full = _grow(chosen.astype(np.float32), factor, x.shape)
            if maps_out is not None:
                maps_out[z] = full
            if return_maps:
                ranking.maps[z] = full
        if progress is not None:
            progress(i + 1, len(todo))
    ranking.scores.sort(key=lambda s: (-s.score, s.slice))
    return ranking


def _score_slice(
    model: nn.Module,
    z: int,
    x: np.ndarray,
    stopped: Callable[[], bool],
    options: dict[str, Any],
    predict_kwargs: dict[str, Any],
) -> tuple[SliceScore, np.ndarray] | None:
    """The score of slice ``z`` (pixels ``x``, already shrunk) and its map; None when stopped."""
    try:
        entropy, disagreement = uncertainty_map(
            model, x, cancel=stopped, **options, **predict_kwargs
        )
    except PredictionCancelled:
        return None
    chosen = entropy if disagreement is None else disagreement
    score = SliceScore(
        slice=int(z),
        score=_mean(chosen),
        entropy=_mean(entropy),
        disagreement=None if disagreement is None else _mean(disagreement),
    )
    return score, chosen
