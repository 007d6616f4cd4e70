"""Tiled (overlap-tile) prediction of 2-D slices and Z-stacks of any size, in memory or with dask.

Stitching is exact: the result equals the network on the whole (mirrored) slice; see docs/TILING.md.
"""

from ..labels import label_dtype
from ..normalization import estimate_normalization
from .distributed import predict_dask
from .engine import PredictionCancelled, ProgressCallback, TilingWarning
from .geometry import AxisPlan, TilePlan, exact_overlap, plan_tiles
from .memory import default_tile_and_batch, estimate_tile_bytes
from .predict import predict_tiled

__all__ = [
    "AxisPlan",
    "PredictionCancelled",
    "ProgressCallback",
    "TilePlan",
    "TilingWarning",
    "default_tile_and_batch",
    "estimate_normalization",
    "estimate_tile_bytes",
    "exact_overlap",
    "label_dtype",
    "plan_tiles",
    "predict_dask",
    "predict_tiled",
]
