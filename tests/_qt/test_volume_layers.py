"""The Predict dock on a lazily opened OME-Zarr pyramid: it computes on level 0, as on the array itself."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_unet._qt.predict import PredictWidget
from volume_files import write_ome_zarr

TIMEOUT = 60_000


def _predict(pr, qtbot, layer) -> np.ndarray:
    pr.state.set_image_layer(layer)
    with qtbot.waitSignal(pr.prediction_finished, timeout=TIMEOUT) as blocker:
        pr.predict()
    assert blocker.args == ["completed"]
    return np.array(pr.layer.data)


def test_predict_dock_on_a_multiscale_ome_zarr_layer(
    make_napari_viewer, small_stack, trained, qtbot, tmp_path
):
    image, _ = small_stack
    path = write_ome_zarr(tmp_path / "em.ome.zarr", image, levels=2)
    viewer = make_napari_viewer()
    pr = PredictWidget(viewer)
    viewer.window.add_dock_widget(pr)
    pr.state.set_model(*trained)
    pr.device.setCurrentText("cpu")
    (pyramid,) = viewer.open(path, plugin="napari-unet")
    assert pyramid.multiscale and type(pyramid.data[0]).__name__ == "Array"  # lazy dask levels
    on_pyramid = _predict(pr, qtbot, pyramid)
    assert on_pyramid.shape == image.shape  # full resolution, not a level
    in_memory = viewer.add_image(image, name="em in memory")
    np.testing.assert_array_equal(on_pyramid, _predict(pr, qtbot, in_memory))
