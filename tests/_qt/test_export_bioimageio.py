"""The Export dock writes the model in memory as a bioimage.io package, in a worker, with
its test input cut from the slice on screen; problems become notifications."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qt_helpers import dock, messages

pytest.importorskip("bioimageio.spec")


def test_export_dock_writes_a_bioimageio_package(viewer_with_stack, trained, qtbot, tmp_path):
    from bioimageio.spec import load_model_description

    from napari_unet.bioimageio_export import load_bioimageio_model

    viewer, layer, _ = viewer_with_stack()
    model, metadata = trained
    ex = dock(viewer, "7 Export")
    assert ex.bioimageio.isEnabled()
    ex.state.set_model(model, metadata)
    ex.what.setCurrentText("both")  # no labels or prediction yet: only the package
    ex.bioimageio.setChecked(True)
    ex.folder.setText(str(tmp_path / "out"))
    viewer.dims.set_point(0, 2.0)
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    with qtbot.waitSignal(ex.export_finished, timeout=120_000) as blocker:
        assert ex.export() is not None
    assert blocker.args == [True]
    path = tmp_path / "out" / "em_bioimageio.zip"
    assert ex.written == [f"{path} (bioimage.io model)"]

    descr = load_model_description(path)  # validates the format and every file's hash
    assert descr.validation_summary.status == "valid-format"
    test_in = descr.get_input_test_arrays()[0][0, 0]
    side, h = test_in.shape[-1], layer.data.shape[-1]
    top = (h - side) // 2
    np.testing.assert_array_equal(test_in, layer.data[2, top : top + side, top : top + side])
    reloaded, extra = load_bioimageio_model(path)
    assert extra["class_names"] == metadata["class_names"]
    x = torch.randn(1, 1, side, side)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))
    for k, v in model.state_dict().items():  # the model in memory is left as it was
        torch.testing.assert_close(v, weights_before[k])


def test_export_dock_bioimageio_without_model(viewer_with_stack, tmp_path, notifications):
    viewer, _, _ = viewer_with_stack()
    ex = dock(viewer, "7 Export")
    ex.bioimageio.setChecked(True)
    ex.folder.setText(str(tmp_path))
    assert ex.export() is None
    assert any("no model in memory" in m for m in messages(notifications, "error"))
    assert not list(tmp_path.glob("*.zip"))
