"""Qt-free work of Annotate's slice suggestions: rank the unlabelled slices in a worker thread.

Scores the same model gave before are reused, so after a correction only new candidates are predicted.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..normalization import compute_normalization
from ..slices import array_shape
from ..suggest import Ranking, SliceScore, labelled_slices, rank_slices

#: slices are predicted shrunk so that their longer side is at most this (the cost stays bounded)
MAX_SIDE = 1024


def default_downsample(shape: tuple[int, ...], max_side: int = MAX_SIDE) -> int:
    """The smallest block-mean factor that brings the slices of ``shape`` to ``max_side`` pixels."""
    return max(1, math.ceil(max(int(shape[-1]), int(shape[-2])) / max_side))


def model_normalization(metadata: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The ``{"mean", "std"}`` a model was trained with (from its metadata), if recorded."""
    norm = (metadata or {}).get("normalization")
    if isinstance(norm, Mapping) and "mean" in norm and "std" in norm:
        return {"mean": float(norm["mean"]), "std": float(norm["std"])}
    return None


@dataclass
class SuggestRequest:
    """What one ranking run needs; ``known`` holds this model's scores that may be reused."""

    model: Any
    image: Any
    labels: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    method: str = "entropy"
    downsample: int = 1
    known: dict[int, SliceScore] = field(default_factory=dict)
    #: ``(Z, H, W)`` float32 array the uncertainty maps of the predicted slices go to
    maps_out: Any = None
    device: str = "auto"


@dataclass
class SuggestProgress:
    """Yielded after each predicted slice."""

    done: int
    total: int
    slice: int


@dataclass
class SuggestResult:
    """Last value yielded: the ranking of ``candidates`` (partial when cancelled)."""

    ranking: Ranking
    #: the slices that were unlabelled when the run started
    candidates: list[int]
    #: the slices predicted in this run (their maps are in ``maps_out``)
    scored: list[int]
    #: the largest value of those maps (0 without maps)
    map_max: float = 0.0


def suggest_job(req: SuggestRequest, stop: threading.Event) -> Iterator[Any]:
    """Worker: score the unlabelled slices one at a time (stoppable), then yield the ranking."""
    shape = array_shape(req.image, "image")
    n = shape[0] if len(shape) == 3 else 1
    labelled = set(labelled_slices(req.labels)) if req.labels is not None else set()
    candidates = [z for z in range(n) if z not in labelled]
    todo = [z for z in candidates if z not in req.known]
    norm = model_normalization(req.metadata)
    if norm is None and todo:
        norm = compute_normalization(req.image)
    options = {"method": req.method, "downsample": req.downsample, "device": req.device}
    scores = [req.known[z] for z in candidates if z in req.known]
    scored: list[int] = []
    cancelled, top = False, 0.0
    for i, z in enumerate(todo):
        part = rank_slices(
            req.model, req.image, slices=[z], normalization=norm, maps_out=req.maps_out,
            stop=stop, **options,
        )  # fmt: skip
        scores.extend(part.scores)
        if part.scores:
            scored.append(z)
            if req.maps_out is not None:
                top = max(top, float(np.nanmax(req.maps_out[z if len(shape) == 3 else 0])))
        if part.cancelled or stop.is_set():
            cancelled = True
            break
        yield SuggestProgress(i + 1, len(todo), z)
    scores.sort(key=lambda s: (-s.score, s.slice))
    ranking = Ranking(scores=scores, method=req.method, cancelled=cancelled)
    yield SuggestResult(ranking, candidates, scored, top)
