"""Training a U-Net on sparsely painted slices, as a generator of typed events.

Configuration, events, live labels, patch sampling, schedule and the trainer live in their own modules.
"""

from __future__ import annotations

from ..model import PRESETS
from ..normalization import compute_normalization
from . import events
from .config import TrainConfig
from .events import *  # noqa: F403 - the event classes, listed in events.__all__
from .sampler import DEFAULT_SAME_PATCH_CPU, DEFAULT_SAME_PATCH_CUDA, DEFAULT_VALID_OUTPUT
from .schedule import (
    FINAL_LR_FRACTION,
    LR_SCHEDULES,
    MAX_SKIPPED_STEPS,
    validation_interval,
    warmup_iterations,
)
from .trainer import Trainer, train

__all__ = [
    "DEFAULT_SAME_PATCH_CPU",
    "DEFAULT_SAME_PATCH_CUDA",
    "DEFAULT_VALID_OUTPUT",
    "FINAL_LR_FRACTION",
    "LR_SCHEDULES",
    "MAX_SKIPPED_STEPS",
    "PRESETS",
    "TrainConfig",
    "Trainer",
    "compute_normalization",
    "train",
    "validation_interval",
    "warmup_iterations",
    *events.__all__,
]
