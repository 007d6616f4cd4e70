"""Stop, painting during training, and closing the viewer while a worker runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qt_helpers import dock, messages, paint, setup_training

from napari_unet._qt import open_all_widgets
from napari_unet.checkpoint import load_checkpoint
from napari_unet.model import UNet


def test_stop_ends_training_and_leaves_a_checkpoint(
    viewer_with_stack, qtbot, tmp_path, notifications
):
    viewer, _, truth = viewer_with_stack()
    _, labels, tr = setup_training(viewer, truth, tmp_path)
    tr.start()
    qtbot.waitUntil(lambda: tr.iterations_seen >= 3, timeout=60_000)
    # painting continues during training; the trainer picks the new slice up
    paint(labels, truth, 3)
    qtbot.waitUntil(lambda: 3 in tr.labels_changed_slices, timeout=30_000)
    with qtbot.waitSignal(tr.training_finished, timeout=30_000) as blocker:
        tr.stop()
    assert blocker.args == ["stopped"]
    ckpt = Path(tr.last_checkpoint)
    assert ckpt.is_file()
    _, meta = load_checkpoint(ckpt)
    # "within one iteration": the checkpoint holds every iteration that ran
    assert meta["iterations"] == tr.iterations_seen
    assert tr.start_btn.isEnabled()
    assert tr.state.model is not None
    assert not messages(notifications, "error")


def test_closing_the_viewer_stops_training_cleanly(viewer_with_stack, qtbot, tmp_path):
    viewer, _, truth = viewer_with_stack()
    _, _, tr = setup_training(viewer, truth, tmp_path)
    job = tr.start()
    qtbot.waitUntil(lambda: tr.iterations_seen >= 2, timeout=60_000)
    viewer.close()  # returns only after the worker thread has ended
    assert job.worker.done.is_set()
    qtbot.waitUntil(lambda: not job.running, timeout=5_000)  # its finished signal, delivered
    ckpts = list((tmp_path / "models").glob("*.pt"))
    assert ckpts  # the stopped trainer saved its last state


def test_closing_the_viewer_stops_prediction_cleanly(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).integers(0, 255, (60, 256, 256), dtype=np.uint8)
    viewer.add_image(image, name="big")
    widgets = open_all_widgets(viewer)
    pr = widgets["predict"]
    pr.state.set_model(UNet.preset("small"), {"normalization": {"mean": 127.0, "std": 70.0}})
    pr.range.setCurrentText("all slices")
    pr.device.setCurrentText("cpu")
    job = pr.predict()
    qtbot.waitUntil(lambda: pr.slices_written >= 1, timeout=60_000)
    viewer.close()
    assert job.worker.done.is_set()
    assert pr.slices_written < 60


def test_cancel_prediction_keeps_finished_slices(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).integers(0, 255, (40, 128, 128), dtype=np.uint8)
    viewer.add_image(image, name="stack")
    pr = dock(viewer, "5 Predict")
    dock(viewer, "1 Annotate")
    pr.state.set_model(UNet.preset("small"), {"normalization": {"mean": 127.0, "std": 70.0}})
    pr.range.setCurrentText("all slices")
    pr.storage.setCurrentText("disk (zarr)")  # the streaming path
    with qtbot.waitSignal(pr.prediction_finished, timeout=60_000) as blocker:
        pr.predict()
        qtbot.waitUntil(lambda: pr.slices_written >= 2, timeout=60_000)
        pr.cancel()
    assert blocker.args == ["cancelled"]
    assert pr.on_disk and not isinstance(pr.layer.data, np.ndarray)  # zarr-backed layer
    done = pr.slices_written
    assert 2 <= done < 40
    data = np.asarray(pr.layer.data[:])
    assert data[:done].min() >= 1 and not data[done:].any()
    assert pr.predict_btn.isEnabled()
