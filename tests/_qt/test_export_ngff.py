"""The Export dock writes masks as OME-NGFF labels (class names, colours, scale) in a worker."""

from __future__ import annotations

import numpy as np
import pytest
from qt_helpers import dock, messages, paint

zarr = pytest.importorskip("zarr")


def test_export_dock_writes_ngff_labels(viewer_with_stack, qtbot, tmp_path, notifications):
    viewer, _, truth = viewer_with_stack(scale=(2.0, 0.5, 0.5))
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    paint(labels, truth, 1)
    ex = dock(viewer, "7 Export")
    ex.what.setCurrentText("training labels")
    ex.mask_fmt.setCurrentText("OME-Zarr labels (.ome.zarr)")
    ex.folder.setText(str(tmp_path))
    with qtbot.waitSignal(ex.export_finished, timeout=60_000) as blocker:
        assert ex.export() is not None
    assert blocker.args == [True], messages(notifications, "error")
    path = tmp_path / "em_labels.ome.zarr"
    assert ex.written == [f"{path} (OME-NGFF labels)"]
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    attrs = attrs.get("ome", attrs)
    colors = attrs["image-label"]["colors"]
    assert [c["label-value"] for c in colors] == [1, 2]
    scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [2.0, 0.5, 0.5]
    level0 = attrs["multiscales"][0]["datasets"][0]["path"]
    np.testing.assert_array_equal(group[level0][1], truth[1])
    assert not group[level0][0].any()
