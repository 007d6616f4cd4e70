"""Correct: accepting a predicted slice only fills unpainted pixels, and napari's undo restores."""

from __future__ import annotations

import numpy as np
from qt_helpers import dock, messages, paint


def _setup(viewer, truth):
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    prediction = viewer.add_labels(
        np.where(truth > 0, 3 - truth, 1).astype(np.uint8),  # swapped classes: differs everywhere
        name="em prediction",
        metadata={"napari_unet": {"generated": True, "prediction": True}},
    )
    co = dock(viewer, "6 Correct")
    co.state.set_prediction_layer(prediction)
    return ann, labels, prediction, co


def test_accept_fills_only_unpainted_pixels_and_undo_restores(viewer_with_stack, qtbot):
    viewer, _, truth = viewer_with_stack()
    ann, labels, prediction, co = _setup(viewer, truth)
    assert co.pred_combo.value is prediction
    stroke = (np.full(50, 1), np.arange(50), np.arange(50))
    labels.data_setitem(stroke, 2)
    before = labels.data.copy()
    viewer.dims.set_point(0, 1)
    n = co.accept_slice()  # the current slice (1)
    user = before[1] > 0
    assert n == int((~user).sum())
    np.testing.assert_array_equal(labels.data[1][user], before[1][user])
    np.testing.assert_array_equal(labels.data[1][~user], prediction.data[1][~user])
    np.testing.assert_array_equal(np.delete(labels.data, 1, 0), np.delete(before, 1, 0))
    # the accepted slice shows up in Annotate's table (paint event) and is autosaved
    qtbot.waitUntil(lambda: ann.slice_table.rowCount() == 1, timeout=10_000)
    co.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_accept_into_hidden_labels(viewer_with_stack):
    viewer, _, truth = viewer_with_stack()
    _, labels, prediction, co = _setup(viewer, truth)
    viewer.dims.set_point(0, 1)
    labels.visible = False
    viewer.dims.set_point(0, 2)
    assert co.accept_slice() == 128 * 128
    assert labels.visible
    np.testing.assert_array_equal(labels.data[2], prediction.data[2])
    labels.undo()
    assert not labels.data.any()


def test_replace_painted_pixels_is_explicit(viewer_with_stack):
    viewer, _, truth = viewer_with_stack()
    _, labels, prediction, co = _setup(viewer, truth)
    paint(labels, truth, 2)
    before = labels.data.copy()
    assert co.accept_slice(2) == 0  # everything painted: nothing to accept by default
    co.replace.setChecked(True)
    n = co.accept_slice(2)
    assert n == int((before[2] != prediction.data[2]).sum())
    np.testing.assert_array_equal(labels.data[2], prediction.data[2])
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_accept_needs_a_prediction(viewer_with_stack, notifications):
    viewer, _, _truth = viewer_with_stack()
    dock(viewer, "1 Annotate").create_labels()
    co = dock(viewer, "6 Correct")
    assert co.accept_slice(0) == 0
    assert any("no prediction" in m for m in messages(notifications, "error"))
    empty = viewer.add_labels(np.zeros((4, 128, 128), np.uint8), name="empty prediction")
    co.pred_combo.set_value(empty)
    assert co.accept_slice(0) == 0
    assert any("has not been predicted yet" in m for m in messages(notifications, "warning"))


def test_fine_tune_button_starts_train(viewer_with_stack, qtbot, tmp_path):
    viewer, _, truth = viewer_with_stack()
    _, labels, _, co = _setup(viewer, truth)
    paint(labels, truth, 0)
    tr = dock(viewer, "4 Train")
    tr.patch.setValue(64)
    tr.batch.setValue(1)
    tr.iterations.setValue(3)
    tr.preview_every.setValue(0)
    tr.folder_edit.setText(str(tmp_path))
    with qtbot.waitSignal(tr.training_finished, timeout=120_000) as blocker:
        co.train_btn.click()
    assert blocker.args == ["completed"]


def test_accept_and_undo_tell_the_state_which_slices_changed(viewer_with_stack, qtbot):
    viewer, _, truth = viewer_with_stack()
    _, labels, _, co = _setup(viewer, truth)
    edited = []
    co.state.labels_edited.connect(edited.append)
    assert co.accept_slice(2) == 128 * 128
    assert edited == [[2]]
    co.undo()
    assert edited == [[2], None]  # napari's undo does not say which slices it restored
    assert not labels.data.any()


def test_fine_tune_asks_the_state_not_a_dock(viewer_with_stack):
    viewer, _, truth = viewer_with_stack()
    _, _, _, co = _setup(viewer, truth)
    requests = []
    co.fine_tune()  # no Train dock listens yet
    assert "open '4 Train'" in co.status.text()
    co.state.training_requested.connect(lambda: requests.append(1))
    co.state.set_training_busy(True)
    co.fine_tune()
    assert "training is running" in co.status.text()
    assert requests == []
    co.state.set_training_busy(False)
    co.fine_tune()
    assert requests == [1]
