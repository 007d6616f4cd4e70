"""Training in a child process: the same Trainer and TrainConfig, driven by a front end.

:class:`TrainingProcess` spawns the child (warm before the run), relays its events and weights.
"""

from __future__ import annotations

from .messages import (
    ModelStart,
    RegionPreview,
    TrainerReady,
    TrainingProcessError,
    TrainResult,
    Weights,
)
from .process import CHILD_NICE, STOP_GRACE_S, TrainingProcess

__all__ = [
    "CHILD_NICE",
    "STOP_GRACE_S",
    "ModelStart",
    "RegionPreview",
    "TrainResult",
    "TrainerReady",
    "TrainingProcess",
    "TrainingProcessError",
    "Weights",
]
