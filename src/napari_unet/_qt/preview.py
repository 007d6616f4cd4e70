"""2 Preview augmentation and 3 Preview weight map, the two docks napari.yaml names here.

Each lives in its own module; this one keeps the manifest's import path.
"""

from __future__ import annotations

from .preview_augmentation import AugmentationPreviewWidget
from .preview_weights import WeightMapPreviewWidget

__all__ = ["AugmentationPreviewWidget", "WeightMapPreviewWidget"]
