"""Objects dock: instances of the prediction in a real viewer, their table and undoable edits."""

from __future__ import annotations

import numpy as np
import pytest
from qt_helpers import messages, wait_idle

from napari_unet._qt.objects import ObjectsWidget


def dock(viewer, name: str = "Objects") -> ObjectsWidget:
    """The Objects dock (docked directly: the manifest entry waits for the dock keys)."""
    widget = ObjectsWidget(viewer)
    viewer.window.add_dock_widget(widget, name=name)
    return widget


def _blobs() -> np.ndarray:
    """Class map (1 background, 2 object) of 4 slices: a 4-slice square and a 2-slice one."""
    cls = np.ones((4, 128, 128), np.uint8)
    cls[:, 10:30, 10:30] = 2
    cls[:2, 60:90, 60:80] = 2
    return cls


def _objects_dock(viewer, classes=("background", "mitochondria"), prediction=None):
    ob = dock(viewer, "Objects")
    ob.state.set_classes(list(classes), ["#000000", "#ff0000"])
    layer = viewer.add_labels(prediction if prediction is not None else _blobs(), name="pred")
    ob.state.set_prediction_layer(layer)
    return ob


def _run(ob, qtbot) -> None:
    assert ob.find_objects()
    wait_idle(qtbot, ob)
    qtbot.waitUntil(lambda: ob.layer is not None, timeout=10_000)


def test_objects_layer_is_aligned_and_measured(viewer_with_stack, qtbot):
    viewer, image, _ = viewer_with_stack(scale=(2.0, 0.5, 0.5))
    image.translate = (0.0, 10.0, 20.0)
    ob = _objects_dock(viewer)
    ob.dims_combo.setCurrentIndex(1)  # 3D
    _run(ob, qtbot)
    layer = ob.layer
    assert tuple(layer.scale) == (2.0, 0.5, 0.5) and tuple(layer.translate) == (0.0, 10.0, 20.0)
    feats = layer.features
    assert len(feats) == 2 and ob.table.rowCount() == 2
    assert list(feats["z_last"]) == [3, 1]
    assert feats["volume"].iloc[0] == pytest.approx(4 * 400 * 2.0 * 0.25)
    ob.table.selectRow(1)
    cy, cx = getattr(viewer, "scene", viewer).camera.center[-2:]
    assert cy == pytest.approx(10.0 + 0.5 * 74.5) and cx == pytest.approx(20.0 + 0.5 * 69.5)
    assert layer.selected_label == int(feats["label"].iloc[1])


def test_merge_delete_split_and_undo(viewer_with_stack, qtbot):
    viewer, _, _ = viewer_with_stack()
    ob = _objects_dock(viewer)
    _run(ob, qtbot)  # 2D: 4 + 2 objects
    layer = ob.layer
    assert len(layer.features) == 6
    before = layer.data.copy()
    ob.table.clearSelection()
    for r in (0, 1):
        ob.table.selectRow(r)
    from qtpy.QtCore import QItemSelectionModel

    sel = ob.table.selectionModel()
    sel.select(ob.table.model().index(0, 0), QItemSelectionModel.SelectionFlag.Select
               | QItemSelectionModel.SelectionFlag.Rows)  # fmt: skip
    assert len(ob.selected_labels()) == 2
    assert ob.merge_selected()
    assert len(layer.features) == 5 and len(np.unique(layer.data)) == 6
    ob.undo()
    np.testing.assert_array_equal(layer.data, before)
    assert len(layer.features) == 6
    ob.table.selectRow(0)
    first = ob.selected_labels()[0]
    assert ob.delete_selected()
    assert first not in set(np.unique(layer.data)) and len(layer.features) == 5
    ob.undo()
    np.testing.assert_array_equal(layer.data, before)
    # split the big square of slice 0 (rows 60-89, cols 60-79) with two seeds
    pts = ob.seeds_layer()
    pts.data = np.array([[0, 62, 70], [0, 87, 70]], float)
    target = int(layer.data[0, 70, 70])
    assert ob.split_at_seeds()
    assert layer.data[0, 62, 70] == target and layer.data[0, 87, 70] not in (0, target)
    assert len(layer.features) == 7 and len(pts.data) == 0
    ob.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_bad_input_gives_notifications(viewer_with_stack, qtbot, notifications):
    viewer, _, _ = viewer_with_stack()
    ob = dock(viewer, "Objects")
    assert not ob.find_objects()  # no prediction yet
    assert any("no prediction" in m for m in messages(notifications, "error"))
    ob = _objects_dock(viewer, prediction=np.ones((4, 128, 128), np.uint8))
    ob.class_combo.setCurrentIndex(1)
    assert ob.find_objects()
    wait_idle(qtbot, ob)
    qtbot.waitUntil(lambda: any("no pixel of class 2" in m for m in messages(notifications)))
    assert ob.layer is None
    assert ob.run_btn.isEnabled()


def test_settings_come_from_the_model_and_are_remembered_in_it(
    viewer_with_stack, qtbot, notifications, tmp_path
):
    from napari_unet.checkpoint import load_checkpoint, save_checkpoint
    from napari_unet.model import UNet
    from napari_unet.objects import default_params

    viewer, _, _ = viewer_with_stack()
    ob = _objects_dock(viewer)
    assert not ob.remember()  # no model in memory
    assert any("no model in memory" in m for m in messages(notifications, "error"))
    net = UNet(depth=1, base_channels=2)
    names = ["background", "mitochondria"]
    stored = {"mitochondria": {"mode": "objects", "min_size": 500.0, "h": 3.0}}
    ob.state.set_model(net, {"class_names": names, "objects": stored})
    assert ob.min_size.value() == 500.0 and ob.seed_depth.value() == 3.0
    _run(ob, qtbot)  # 2D: only the 600 px square of slices 0-1 is >= 500 px
    assert len(ob.layer.features) == 2
    ob.min_size.setValue(450.0)
    ob.split.setChecked(True)
    ob.seed_depth.setValue(4.5)
    assert ob.remember()
    table = ob.state.metadata["objects"]["mitochondria"]
    assert (table["min_size"], table["split"], table["h"]) == (450.0, True, 4.5)
    assert ob.state.metadata["class_names"] == names  # the rest of the metadata is kept
    # the next save carries them, and the CLI and core read them back
    _, meta = load_checkpoint(save_checkpoint(tmp_path / "m.pt", net, **ob.state.metadata))
    _, params = default_params(names, 2, meta)
    assert (params.min_size, params.split, params.h) == (450.0, True, 4.5)
    ob.min_size.setValue(0.0)
    ob.class_combo.setCurrentIndex(0)
    ob.class_combo.setCurrentIndex(1)  # back on the class: its remembered settings
    assert ob.min_size.value() == 450.0 and ob.split.isChecked()


def test_a_checkpoint_predicted_with_gives_its_stored_settings(viewer_with_stack, qtbot, tmp_path):
    """Predict with a checkpoint (no model in memory): Objects shows that checkpoint's table."""
    from qt_helpers import dock as plugin_dock

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.model import UNet

    viewer, _, _ = viewer_with_stack()
    names = ["membrane", "cell"]
    stored = {"cell": {"mode": "boundary", "threshold": 0.35, "h": 4.0}}
    meta = {"class_names": names, "normalization": {"mean": 127.0, "std": 70.0}, "objects": stored}
    ckpt = save_checkpoint(tmp_path / "m.pt", UNet(depth=1, base_channels=2), **meta)
    ob = dock(viewer, "Objects")
    ob.state.set_classes(names, ["#ff0000", "#0000ff"])
    ob.class_combo.setCurrentText("cell")
    assert ob.threshold.value() == 0.5  # the rules' default before any prediction
    pr = plugin_dock(viewer, "5 Predict")
    pr.source.setCurrentText("checkpoint file")
    pr.ckpt_edit.setText(str(ckpt))
    pr.range.setCurrentText("current slice")
    pr.device.setCurrentText("cpu")
    with qtbot.waitSignal(pr.prediction_finished, timeout=60_000):
        pr.predict()
    assert ob.state.model is None and ob.state.prediction_metadata["objects"] == stored
    assert ob.threshold.value() == pytest.approx(0.35) and ob.seed_depth.value() == 4.0
