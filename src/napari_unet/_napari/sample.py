"""npe2 sample data: the synthetic EM stack and ISBI 2012.

Each comes with its ground truth as a hidden labels layer that names the classes.
"""

from __future__ import annotations

from typing import Any

from ..classes import DEFAULT_CLASS_NAMES
from ..sample_data import load_isbi2012, synthetic_em
from . import notify_error

LayerData = tuple[Any, ...]


def _layers(image: Any, labels: Any, name: str, truth_name: str) -> list[LayerData]:
    return [
        (image, {"name": name, "colormap": "gray", "contrast_limits": (0, 255)}, "image"),
        (
            labels,
            {
                "name": truth_name,
                "visible": False,
                "opacity": 0.5,
                "metadata": {"napari_unet": {"class_names": list(DEFAULT_CLASS_NAMES)}},
            },
            "labels",
        ),
    ]


def make_synthetic_em() -> list[LayerData]:
    """16 x 512 x 512 synthetic EM-like stack with its exact ground truth."""
    image, labels = synthetic_em((16, 512, 512), seed=0)
    return _layers(image, labels, "synthetic EM", "synthetic EM ground truth")


def make_isbi2012() -> list[LayerData]:
    """The ISBI 2012 training stack, downloaded on first use."""
    try:
        image, labels = load_isbi2012(progressbar=True)
    except RuntimeError as exc:
        notify_error(str(exc))
        return [(None,)]
    return _layers(image, labels, "ISBI 2012", "ISBI 2012 membranes")
