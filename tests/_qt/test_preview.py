"""Augmentation and weight-map previews: shapes, placement, shared settings, debouncing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from qt_helpers import dock, paint

from napari_unet.training import TrainConfig, Trainer


def test_augmentation_preview_placement_and_sharing(viewer_with_stack, qtbot):
    viewer, _image, truth = viewer_with_stack(scale=(4.0, 0.25, 0.25))
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    paint(labels, truth, 1)
    aug = dock(viewer, "2 Preview augmentation")
    tr = dock(viewer, "4 Train")
    aug.n_samples.setValue(2)
    aug.with_weights.setChecked(False)
    viewer.dims.set_point(0, 4.0)  # slice 1
    aug.preview_btn.click()
    qtbot.waitUntil(lambda: aug.compute_count >= 1, timeout=30_000)
    lay = aug.image_layer
    assert lay.data.shape == (2, 128, 128)
    np.testing.assert_allclose(lay.scale, (4.0, 0.25, 0.25))
    assert lay.translate[0] == 4.0  # sample 0 beside slice 1
    assert lay.translate[2] > 128 * 0.25  # to the right of the image
    assert aug.weights_layer is None
    assert labels is viewer.layers.selection.active  # painting continues on the labels
    # flips/rotations only (no elastic): the labels are an exact dihedral copy
    aug.elastic.setChecked(False)
    n = aug.compute_count
    qtbot.waitUntil(lambda: aug.compute_count > n, timeout=30_000)
    for sample in aug.labels_layer.data:
        assert (
            np.bincount(sample.ravel(), minlength=3).tolist()
            == np.bincount(truth[1].ravel(), minlength=3).tolist()
        )
    # the settings are the ones Train uses
    assert aug.state.augmentation.elastic is False
    assert "elastic" not in tr.aug_summary.text()


def test_weight_map_current_slice_matches_the_trainer_formula(viewer_with_stack, qtbot):
    viewer, _image, truth = viewer_with_stack(scale=(2.0, 1.0, 1.0))
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    paint(labels, truth, 3)
    wm = dock(viewer, "3 Preview weight map")
    viewer.dims.set_point(0, 6.0)  # slice 3
    wm.w0.setValue(8.0)
    wm.sigma.setValue(4.0)
    wm.balance.setCurrentText("none")
    wm.compute("current slice")
    qtbot.waitUntil(lambda: wm.compute_count >= 1, timeout=30_000)
    assert wm.layer.data.shape == (1, 128, 128)
    assert wm.layer.translate[0] == 6.0
    # exactly what the trainer feeds its loss for these labels and settings
    config = TrainConfig(w0=8.0, sigma=4.0, class_weights=None, device="cpu")
    expected = Trainer(_image.data, np.asarray(labels.data), config).weight_map(3)
    np.testing.assert_allclose(wm.layer.data[0], expected, rtol=1e-6)
    cfg = wm.state.config
    assert (cfg.w0, cfg.sigma, cfg.class_weights, cfg.object_class) == (8.0, 4.0, None, None)
    # a setting change recomputes (debounced) into the same layer
    layer = wm.layer
    wm.w0.setValue(2.0)
    qtbot.waitUntil(lambda: wm.layer.data.max() < expected.max() - 1, timeout=30_000)
    assert wm.layer is layer


def test_weight_map_preview_defaults_are_the_trainer_weights(viewer_with_stack, qtbot):
    """Untouched settings, balanced classes, two labelled slices: exactly Trainer.weight_map."""
    viewer, image, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    paint(labels, truth, 1)
    stroke = (np.full(40, 3), np.arange(40), np.arange(40))
    labels.data_setitem(stroke, 1)  # a scribble: the classes are far from balanced
    wm = dock(viewer, "3 Preview weight map")
    assert wm.state.config == TrainConfig()  # the window starts from the evaluated recipe
    wm.balance.setCurrentText("balanced")
    assert wm.state.config.class_weights == "balanced"
    qtbot.waitUntil(lambda: set(wm.state.labelled_slices) in ({1, 3}, set()), timeout=10_000)
    wm.compute("all labelled slices")
    qtbot.waitUntil(lambda: wm.compute_count >= 1, timeout=30_000)
    trainer = Trainer(image.data, np.asarray(labels.data), replace(wm.state.config, device="cpu"))
    assert trainer.labelled_slices == [1, 3]
    for z in (1, 3):
        np.testing.assert_allclose(wm.layer.data[z], trainer.weight_map(z), rtol=1e-6)
    assert not wm.layer.data[[0, 2]].any()
