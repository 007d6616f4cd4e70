"""Every bad input reaches the user as a napari notification, and the buttons come back."""

from __future__ import annotations

import os

import numpy as np
import pytest
from qt_helpers import dock, messages, paint

from napari_unet.model import UNet


def _errors(notes) -> list[str]:
    return messages(notes, "error")


def test_no_labelled_pixels(viewer_with_stack, qtbot, tmp_path, notifications):
    viewer, _, _ = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    ann.create_labels()
    tr = dock(viewer, "4 Train")
    tr.folder_edit.setText(str(tmp_path))
    with qtbot.waitSignal(tr.training_finished, timeout=60_000) as blocker:
        tr.start()
    assert blocker.args == ["error"]
    assert any(
        "no labelled pixels on any slice: paint at least one slice" in m
        for m in _errors(notifications)
    )
    assert tr.start_btn.isEnabled() and not tr.stop_btn.isEnabled()  # never a dead Train button
    assert "no labelled pixels" in tr.status.text()


def test_train_without_image_or_labels(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    tr = dock(viewer, "4 Train")
    assert tr.start() is None
    assert any("no image layer" in m for m in _errors(notifications))
    viewer.add_image(np.zeros((2, 32, 32), np.uint8), name="img")
    assert tr.start() is None
    assert any("no training labels layer" in m for m in _errors(notifications))
    assert tr.start_btn.isEnabled()


def test_adopting_labels_of_another_shape(viewer_with_stack, notifications):
    viewer, _, _ = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    other = viewer.add_labels(np.zeros((10, 256, 256), np.uint8), name="other")
    assert ann.adopt_labels(other) is False
    assert any(
        "labels layer shape (10, 256, 256) does not match image (4, 128, 128)" in m
        for m in _errors(notifications)
    )
    assert ann.state.labels_layer is None
    # picking it in the combo box is refused the same way
    ann.labels_combo.set_value(other)
    assert ann.state.labels_layer is None


def test_bad_settings(viewer_with_stack, tmp_path, notifications):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    paint(ann.create_labels(), truth, 0)
    tr = dock(viewer, "4 Train")
    tr.folder_edit.setText(str(tmp_path))
    tr.val_edit.setText("3-1")
    assert tr.start() is None
    assert any("reversed" in m for m in _errors(notifications))
    tr.val_edit.setText("9")
    assert tr.start() is None
    assert any("out of range" in m for m in _errors(notifications))
    tr.val_edit.setText("")
    tr.lr.setText("fast")
    assert tr.start() is None
    assert any("learning rate" in m for m in _errors(notifications))
    tr.lr.setText("1e-3")
    tr.set_model_choice("memory")
    assert tr.start() is None
    assert any("no model in memory" in m for m in _errors(notifications))


def test_bad_checkpoint_file(viewer_with_stack, qtbot, tmp_path, notifications):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    paint(ann.create_labels(), truth, 0)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    pr = dock(viewer, "5 Predict")
    pr.source.setCurrentText("checkpoint file")
    pr.ckpt_edit.setText(str(bad))
    with qtbot.waitSignal(pr.prediction_finished, timeout=60_000) as blocker:
        pr.predict()
    assert blocker.args == ["error"]
    assert any(
        "cannot use the checkpoint" in m and "not a napari-unet checkpoint" in m
        for m in _errors(notifications)
    )
    assert pr.predict_btn.isEnabled()
    # fine-tuning it fails the same way, and Train comes back
    tr = dock(viewer, "4 Train")
    tr.folder_edit.setText(str(tmp_path / "models"))
    tr.set_model_choice("checkpoint")
    tr.ckpt_edit.setText(str(tmp_path / "missing.pt"))
    with qtbot.waitSignal(tr.training_finished, timeout=60_000) as blocker:
        tr.start()
    assert blocker.args == ["error"]
    assert any("checkpoint file not found" in m for m in _errors(notifications))
    assert tr.start_btn.isEnabled()


def test_predict_without_model(viewer_with_stack, notifications):
    viewer, _, _ = viewer_with_stack()
    pr = dock(viewer, "5 Predict")
    assert pr.predict() is None
    assert any("no model in memory" in m for m in _errors(notifications))
    pr.state.set_model(UNet.preset("small"), {})
    pr.range.setCurrentText("range")
    pr.range_edit.setText("a-b")
    assert pr.predict() is None
    assert any("cannot read slice range" in m for m in _errors(notifications))


def test_unwritable_export_folder(viewer_with_stack, qtbot, tmp_path, notifications):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    paint(ann.create_labels(), truth, 0)
    ex = dock(viewer, "7 Export")
    ex.what.setCurrentText("training labels")
    # a "folder" below a file cannot be created (holds for root too)
    blocker_file = tmp_path / "file.txt"
    blocker_file.write_text("x")
    ex.folder.setText(str(blocker_file / "sub"))
    assert ex.export() is None
    assert any("cannot create the folder" in m for m in _errors(notifications))
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        ex.folder.setText(str(ro))
        assert ex.export() is None
        assert any("is not writable" in m for m in _errors(notifications))
        ro.chmod(0o700)
    # the write itself fails (the target name is taken by a folder): notified, nothing half-written
    out = tmp_path / "out"
    (out / "em_labels.tif").mkdir(parents=True)
    ex.folder.setText(str(out))
    with qtbot.waitSignal(ex.export_finished, timeout=30_000) as blocker:
        ex.export()
    assert blocker.args == [False]
    assert any(
        "export failed" in m and "choose another folder" in m for m in _errors(notifications)
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert ex.export_btn.isEnabled()


def test_nothing_to_export(make_napari_viewer, tmp_path, notifications):
    viewer = make_napari_viewer()
    ex = dock(viewer, "7 Export")
    ex.folder.setText(str(tmp_path))
    ex.what.setCurrentText("prediction")
    assert ex.export() is None
    assert any("no prediction to export" in m for m in _errors(notifications))


@pytest.mark.parametrize("name", ["2 Preview augmentation", "3 Preview weight map"])
def test_previews_without_image(make_napari_viewer, notifications, name):
    viewer = make_napari_viewer()
    w = dock(viewer, name)
    assert w.compute() is None
    assert any("no image layer" in m for m in _errors(notifications))


def test_export_target_held_by_another_run(viewer_with_stack, qtbot, tmp_path, notifications):
    from napari_unet.outputs import OutputLock

    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    paint(ann.create_labels(), truth, 0)
    ex = dock(viewer, "7 Export")
    ex.what.setCurrentText("training labels")
    ex.folder.setText(str(tmp_path))
    target = tmp_path / "em_labels.tif"
    with OutputLock(target, "--out"):  # e.g. a 'napari-unet predict --out em_labels.tif' running
        with qtbot.waitSignal(ex.export_finished, timeout=30_000) as blocker:
            ex.export()
    assert blocker.args == [False]
    assert any(
        "export failed" in m
        and str(target) in m
        and "being written by another napari-unet run" in m
        for m in _errors(notifications)
    )
    assert not target.exists()
    with qtbot.waitSignal(ex.export_finished, timeout=30_000) as blocker:
        ex.export()  # the lock is gone: the same export now succeeds, leaving no lock file
    assert blocker.args == [True] and target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_folder_that_accepts_no_files(viewer_with_stack, tmp_path, notifications):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this system")
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    paint(ann.create_labels(), truth, 0)
    ex = dock(viewer, "7 Export")
    ex.what.setCurrentText("training labels")
    ex.folder.setText("/proc")
    assert ex.export() is None  # refused before any worker starts
    assert any("/proc" in m and ("not writable" in m or "cannot create a file" in m)
               for m in _errors(notifications))  # fmt: skip


def test_export_of_an_incomplete_zarr_result_is_refused(
    viewer_with_stack, qtbot, tmp_path, notifications
):
    from napari_unet.completion import SliceRecorder, start_record
    from napari_unet.writers import create_zarr

    viewer, _, truth = viewer_with_stack()
    result = create_zarr(tmp_path / "pred.zarr", truth.shape, np.uint8)
    recorder = SliceRecorder(result, start_record(result, {"slices": [0, 1, 2, 3]}))
    result[0] = truth[0]
    recorder.mark(0)
    recorder.flush()  # killed after slice 0: slices 1-3 read 0
    layer = viewer.add_labels(result, name="pred")
    ex = dock(viewer, "7 Export")
    ex.state.set_prediction_layer(layer)
    ex.what.setCurrentText("prediction")
    ex.folder.setText(str(tmp_path / "out"))
    assert ex.export() is None
    assert any(
        "not exported: layer 'pred' is incomplete: slice(s) 1-3 of 4 were never written" in m
        for m in _errors(notifications)
    )
    assert not (tmp_path / "out" / "em_prediction.tif").exists()
    recorder.finish()  # once complete, it exports
    with qtbot.waitSignal(ex.export_finished, timeout=30_000) as blocker:
        ex.export()
    assert blocker.args == [True] and (tmp_path / "out" / "em_prediction.tif").exists()
