"""The whole interactive loop in a real viewer, with real (tiny) training.

annotate -> preview augmentation / weight map -> train -> predict -> accept a
slice (undoable) -> fine-tune -> export -> read the files back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from qt_helpers import messages, paint, wait_idle
from qtpy.QtCore import QTimer

from napari_unet._qt import open_all_widgets
from napari_unet.checkpoint import load_checkpoint
from napari_unet.io import read_tiff

SCALE = (2.0, 0.5, 0.5)


def _small_training(tr, folder: Path, iterations: int) -> None:
    tr.patch.setValue(64)
    tr.batch.setValue(2)
    tr.iterations.setValue(iterations)
    tr.preview_every.setValue(0.3)
    tr.folder_edit.setText(str(folder))
    tr.device.setCurrentText("cpu")


def test_whole_loop(viewer_with_stack, qtbot, tmp_path, notifications) -> None:
    viewer, image, truth = viewer_with_stack(scale=SCALE)
    image.translate = (0.0, 3.0, 5.0)
    widgets = open_all_widgets(viewer)
    ann, aug, wm = widgets["annotate"], widgets["augmentation"], widgets["weightmap"]
    tr, pr, co, ex = widgets["train"], widgets["predict"], widgets["correct"], widgets["export"]
    state = ann.state
    assert state.image_layer is image

    # -- 1 annotate -----------------------------------------------------------------------
    ann.set_autosave(interval=0.5, folder=tmp_path / "project")
    labels = ann.create_labels()
    assert labels is state.labels_layer
    assert labels.data.shape == image.data.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert labels.metadata["napari_unet"]["class_names"] == ["membrane", "cell"]
    paint(labels, truth, 0)
    paint(labels, truth, 2)
    qtbot.waitUntil(lambda: ann.slice_table.rowCount() == 2, timeout=10_000)
    assert [ann.slice_table.item(r, 0).text() for r in range(2)] == ["0", "2"]
    painted = labels.data.copy()
    # autosave: on disk within a few intervals, equal to what was painted
    autosave = ann.autosave_path()
    qtbot.waitUntil(lambda: ann.save_count >= 1, timeout=10_000)
    wait_idle(qtbot, ann, "autosave")
    np.testing.assert_array_equal(tifffile.imread(autosave), painted)

    # -- 2 augmentation preview -------------------------------------------------------------
    aug.n_samples.setValue(3)
    aug.compute(0)
    qtbot.waitUntil(lambda: aug.compute_count >= 1, timeout=30_000)
    assert aug.image_layer.data.shape == (3, 128, 128)
    assert aug.labels_layer.data.shape == (3, 128, 128)
    assert aug.weights_layer.data.shape == (3, 128, 128)
    np.testing.assert_allclose(aug.image_layer.scale[-2:], SCALE[-2:])
    np.testing.assert_allclose(aug.labels_layer.scale[-2:], SCALE[-2:])
    assert set(np.unique(aug.labels_layer.data)) <= {0, 1, 2}
    n_layers = len(viewer.layers)
    count = aug.compute_count
    aug.sigma.setValue(15.0)  # a setting change: shared with Train, preview debounced
    assert state.augmentation.elastic_sigma == 15.0
    qtbot.waitUntil(lambda: aug.compute_count > count, timeout=30_000)
    assert len(viewer.layers) == n_layers  # replaced, not multiplied

    # -- 3 weight map ------------------------------------------------------------------------
    wm.compute("all labelled slices")
    qtbot.waitUntil(lambda: wm.compute_count >= 1, timeout=30_000)
    wlayer = wm.layer
    assert wlayer.data.shape == image.data.shape
    assert wlayer.data.dtype == np.float32
    np.testing.assert_allclose(wlayer.scale, image.scale)
    np.testing.assert_allclose(wlayer.translate, image.translate)
    assert wlayer.data[0].max() > 1.0 and wlayer.data[2].max() > 1.0
    assert not wlayer.data[1].any() and not wlayer.data[3].any()  # unlabelled slices

    # -- 4 train (heartbeat: the event loop keeps running) -----------------------------------
    _small_training(tr, tmp_path / "models", 30)
    ticks = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(1))
    heartbeat.start()
    with qtbot.waitSignal(tr.training_finished, timeout=180_000) as blocker:
        assert tr.start() is not None
        assert not tr.start_btn.isEnabled() and tr.stop_btn.isEnabled()
    heartbeat.stop()
    assert blocker.args == ["completed"], messages(notifications)
    assert len(ticks) >= 10  # the GUI thread kept processing events during training
    assert tr.start_btn.isEnabled() and not tr.stop_btn.isEnabled()
    assert state.model is not None
    assert state.metadata["iterations"] == 30
    assert Path(tr.last_checkpoint).is_file()
    assert tr.preview_count >= 1 and tr.preview_layer in viewer.layers
    assert tr.preview_layer.data.shape == (1, 128, 128)
    assert tr.plot.loss and len(tr.plot.loss) == 30
    np.testing.assert_array_equal(labels.data, painted)  # training never touches the labels
    assert tr.model_choice() == "memory"  # next Train fine-tunes

    # -- 5 predict all slices ----------------------------------------------------------------
    pr.range.setCurrentText("all slices")
    pr.probs.setChecked(True)
    with qtbot.waitSignal(pr.prediction_finished, timeout=120_000) as blocker:
        pr.predict()
    assert blocker.args == ["completed"]
    pred = pr.layer
    assert pred is state.prediction_layer
    assert pred.name == "em prediction"
    assert pred.data.shape == image.data.shape
    np.testing.assert_allclose(pred.scale, image.scale)
    np.testing.assert_allclose(pred.translate, image.translate)
    values = set(np.unique(np.asarray(pred.data)).tolist())
    assert values <= {1, 2} and values  # classes 1..K, every slice predicted
    assert state.probabilities.shape == (2, 4, 128, 128)
    np.testing.assert_allclose(state.probabilities.sum(axis=0), 1.0, atol=1e-3)
    # predicting again updates the same layer
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(pr.prediction_finished, timeout=120_000):
        pr.predict()
    assert len(viewer.layers) == n_layers

    # -- 6 accept one slice: only unpainted pixels change; undo restores ---------------------
    stroke = (np.full(200, 3), np.repeat(np.arange(10, 30), 10), np.tile(np.arange(40, 50), 20))
    labels.data_setitem(stroke, 1)  # a user stroke on slice 3 (class 1)
    before = labels.data.copy()
    changed = co.accept_slice(3)
    after = labels.data.copy()
    user = before[3] > 0
    assert changed == int((~user).sum())
    np.testing.assert_array_equal(after[3][user], before[3][user])  # painted pixels intact
    np.testing.assert_array_equal(after[3][~user], np.asarray(pred.data[3])[~user])
    np.testing.assert_array_equal(np.delete(after, 3, axis=0), np.delete(before, 3, axis=0))
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)

    # -- 4 again: fine-tunes the model in memory ---------------------------------------------
    _small_training(tr, tmp_path / "models", 20)
    with qtbot.waitSignal(tr.training_finished, timeout=180_000) as blocker:
        tr.start()
    assert blocker.args == ["completed"], messages(notifications)
    assert tr.last_ready.source == "memory"
    assert tr.last_ready.iterations_before == 30
    assert state.metadata["iterations"] == 50

    # -- 7 export and read back --------------------------------------------------------------
    out = tmp_path / "export"
    ex.folder.setText(str(out))
    ex.what.setCurrentText("both")
    ex.png.setChecked(True)
    ex.probs.setChecked(True)
    ex.model.setChecked(True)
    with qtbot.waitSignal(ex.export_finished, timeout=60_000) as blocker:
        ex.export()
    assert blocker.args == [True], messages(notifications)
    td = read_tiff(out / "em_labels.tif", as_labels=True)
    np.testing.assert_array_equal(td.data, labels.data)
    np.testing.assert_allclose(td.scale, SCALE)
    np.testing.assert_array_equal(tifffile.imread(out / "em_prediction.tif"), np.asarray(pred.data))
    pngs = sorted((out / "em_labels_png").glob("*.png"))
    assert len(pngs) == 4
    import imageio.v3 as iio

    np.testing.assert_array_equal(iio.imread(pngs[3]), labels.data[3])
    probs = tifffile.imread(out / "em_probabilities.tif")
    assert probs.shape == (4, 2, 128, 128)  # ImageJ Z C Y X
    _model, meta = load_checkpoint(out / "em_unet.pt")
    assert meta["iterations"] == 50 and meta["class_names"] == ["membrane", "cell"]

    assert not messages(notifications, "error"), messages(notifications, "error")
