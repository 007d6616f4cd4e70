"""Class names, colours and presets: one home for the GUI, the trainer and checkpoints."""

from __future__ import annotations

from napari_unet.classes import (
    CLASS_PRESETS,
    DEFAULT_CLASS_NAMES,
    PALETTE,
    default_class_names,
    default_colors,
    reconcile_classes,
)
from napari_unet.sample_data import CLASS_NAMES


def test_the_em_default_is_the_sample_datas_classes() -> None:
    assert tuple(CLASS_NAMES) == DEFAULT_CLASS_NAMES == ("membrane", "cell")
    assert DEFAULT_CLASS_NAMES in CLASS_PRESETS.values()
    assert default_class_names(2) == ["membrane", "cell"]
    assert default_class_names(3) == ["class 1", "class 2", "class 3"]


def test_default_colors_cycle_through_the_palette() -> None:
    colors = default_colors(len(PALETTE) + 2)
    assert colors[: len(PALETTE)] == list(PALETTE)
    assert colors[len(PALETTE) :] == list(PALETTE[:2])


def test_reconcile_keeps_given_names_and_fills_the_rest() -> None:
    names, colors = reconcile_classes(3, ["axon"], ["#000000", "#111111", "#222222", "#333333"])
    assert names == ["axon", "class 2", "class 3"]
    assert colors == ["#000000", "#111111", "#222222"]
    names, colors = reconcile_classes(2, ["a", "b", "c"], None)
    assert names == ["a", "b"]
    assert colors == default_colors(2)
    assert len(set(reconcile_classes(2, ["cell"])[0])) == 2
