"""Data augmentation for U-Net training: the paper's elastic deformation and the training policy.

``warp`` deforms and resamples; ``policy`` (:class:`Augmentation`) decides what each sample gets.
"""

from __future__ import annotations

from .intensity import INTENSITY_FIELDS
from .policy import Augmentation
from .warp import elastic_deform, random_displacement

__all__ = ["INTENSITY_FIELDS", "Augmentation", "elastic_deform", "random_displacement"]
