"""napari-unet: U-Net segmentation of electron-microscopy stacks.

The public API is importable from the top level; the heavy modules (torch)
are imported lazily on first attribute access so that napari's plugin
discovery and the TIFF reader stay fast.  Nothing here imports Qt or napari.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # model
    "UNet": "napari_unet.model",
    # weight maps
    "border_weight_map": "napari_unet.weightmap",
    "instances_from_mask": "napari_unet.weightmap",
    # augmentation
    "elastic_deform": "napari_unet.augment",
    "Augmentation": "napari_unet.augment",
    # losses
    "weighted_cross_entropy": "napari_unet.losses",
    "soft_dice_loss": "napari_unet.losses",
    "combined_loss": "napari_unet.losses",
    # metrics
    "pixel_error": "napari_unet.metrics",
    "iou_per_class": "napari_unet.metrics",
    "dice_per_class": "napari_unet.metrics",
    "adapted_rand_error": "napari_unet.metrics",
    "variation_of_information": "napari_unet.metrics",
    "evaluate_segmentation": "napari_unet.metrics",
    "segments_from_classes": "napari_unet.metrics",
    # checkpoints
    "save_checkpoint": "napari_unet.checkpoint",
    "load_checkpoint": "napari_unet.checkpoint",
    "CheckpointError": "napari_unet.checkpoint",
    # training
    "TrainConfig": "napari_unet.training",
    "Trainer": "napari_unet.training",
    "train": "napari_unet.training",
    # tiled prediction
    "predict_tiled": "napari_unet.tiling",
    "predict_dask": "napari_unet.tiling",
    # I/O
    "read_tiff": "napari_unet.io",
    "write_labels_tiff": "napari_unet.io",
    "InvalidImageError": "napari_unet.io",
    "open_volume": "napari_unet.volumes",
    "write_ngff_labels": "napari_unet.ngff_labels",
    # sample data
    "synthetic_em": "napari_unet.sample_data",
    "load_isbi2012": "napari_unet.sample_data",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .augment import Augmentation, elastic_deform
    from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from .io import InvalidImageError, read_tiff, write_labels_tiff
    from .losses import combined_loss, soft_dice_loss, weighted_cross_entropy
    from .metrics import (
        adapted_rand_error,
        dice_per_class,
        evaluate_segmentation,
        iou_per_class,
        pixel_error,
        segments_from_classes,
        variation_of_information,
    )
    from .model import UNet
    from .ngff_labels import write_ngff_labels
    from .sample_data import load_isbi2012, synthetic_em
    from .tiling import predict_dask, predict_tiled
    from .training import TrainConfig, Trainer, train
    from .volumes import open_volume
    from .weightmap import border_weight_map, instances_from_mask
