"""Predict normalises each stack as the training stack was, and says so; NaN pixels are counted."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from qt_helpers import dock, messages

from napari_unet import normalization
from napari_unet.checkpoint import save_checkpoint
from napari_unet.tiling import predict_dask, predict_tiled

TIMEOUT = 60_000


def _predict(pr, qtbot, image) -> np.ndarray:
    pr.state.set_image_layer(image)
    with qtbot.waitSignal(pr.prediction_finished, timeout=TIMEOUT) as blocker:
        pr.predict()
    assert blocker.args == ["completed"]
    return np.array(pr.layer.data)


def _copies(image: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "uint8": image,
        "uint16": image.astype(np.uint16) * 257,
        "float": image.astype(np.float32) / 255,
    }


def test_same_stack_in_three_dtypes_predicts_the_same_classes_in_the_window(
    make_napari_viewer, small_stack, trained, qtbot, notifications, monkeypatch
):
    image, _ = small_stack
    assert image.dtype == np.uint8 and trained[1]["intensity"]["dtype"] == "uint8"
    threads = []
    real = normalization.stack_normalization

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(normalization, "stack_normalization", spy)
    viewer = make_napari_viewer()
    pr = dock(viewer, "5 Predict")
    pr.state.set_model(*trained)
    pr.device.setCurrentText("cpu")
    results, notes = {}, {}
    for name, data in _copies(image).items():
        layer = viewer.add_image(data, name=name)
        before = len(notifications)
        results[name] = _predict(pr, qtbot, layer)
        notes[name] = messages(notifications[before:], "warning")
    assert notes["uint8"] == []  # the training stack itself: the recorded statistics, silently
    assert set(np.unique(results["uint8"])) == {1, 2}
    # without the mapping, the recorded absolute statistics give another result
    raw = predict_tiled(trained[0], _copies(image)["uint16"], device="cpu",
                        normalization=trained[1]["normalization"])  # fmt: skip
    assert (raw != results["uint8"]).mean() > 0.1
    for name, dtype in (("uint16", "uint16"), ("float", "float32")):
        assert len(notes[name]) == 1, notes[name]
        assert f"'{name}'" in notes[name][0] and dtype in notes[name][0]
        assert "differ from the training stack's" in notes[name][0]
        assert "mapped linearly" in notes[name][0]
        np.testing.assert_array_equal(results[name], results["uint8"])
    # normalised in the worker, once per stack: predicting the float stack again reuses it
    assert len(threads) == 3 and threading.main_thread() not in threads
    before = len(notifications)
    _predict(pr, qtbot, viewer.layers["float"])
    assert len(threads) == 3
    assert messages(notifications[before:], "warning") == []  # said once per stack


def test_nan_pixels_are_counted_once_per_run(
    make_napari_viewer, small_stack, trained, qtbot, notifications
):
    image, _ = small_stack
    data = image.astype(np.float32) / 255
    data[1, 10:20, 30:40] = np.nan
    data[3, 0, 0] = np.inf
    viewer = make_napari_viewer()
    pr = dock(viewer, "5 Predict")
    pr.state.set_model(*trained)
    pr.device.setCurrentText("cpu")
    layer = viewer.add_image(data, name="holes")
    before = len(notifications)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _predict(pr, qtbot, layer)
    said = [m for m in messages(notifications[before:], "warning") if "NaN/inf" in m]
    assert said == [
        f"'holes': the image has 101 NaN/inf pixel(s) of {data.size:,} on 2 slices: they were "
        "predicted as the mean intensity (slice(s) 1,3)"
    ]
    # predict_tiled's own warning for each slice is not repeated
    assert not [w for w in caught if "NaN/inf" in str(w.message)]


def test_predict_dask_maps_a_checkpoint_onto_another_dtype(small_stack, trained, tmp_path):
    image, _ = small_stack
    model, meta = trained
    path = save_checkpoint(tmp_path / "m.pt", model, **meta)
    kwargs = {"device": "cpu", "tile_size": 128}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training dtype: no warning
        reference = np.asarray(predict_dask(path, image, **kwargs))
    for data in list(_copies(image).values())[1:]:
        with pytest.warns(UserWarning, match="mapped linearly"):
            got = np.asarray(predict_dask(path, data, **kwargs))
        np.testing.assert_array_equal(got, reference)
    # an explicit normalization is used as given (no mapping, no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_dask(path, image, normalization=meta["normalization"], **kwargs)


def test_an_image_without_finite_pixels_is_refused(
    make_napari_viewer, trained, qtbot, notifications
):
    viewer = make_napari_viewer()
    pr = dock(viewer, "5 Predict")
    pr.state.set_model(*trained)
    pr.device.setCurrentText("cpu")
    layer = viewer.add_image(np.full((2, 64, 64), np.nan, np.float32), name="void")
    pr.state.set_image_layer(layer)
    with qtbot.waitSignal(pr.prediction_finished, timeout=TIMEOUT) as blocker:
        pr.predict()
    assert blocker.args == ["error"]
    assert any(
        "prediction failed" in m and "no finite pixel values" in m
        for m in messages(notifications, "error")
    )
    assert pr.predict_btn.isEnabled() and pr.layer is None  # no all-one-class result
