"""One painted class in the window: training runs, and a notification says why it will fail."""

from __future__ import annotations

import numpy as np
from qt_helpers import messages, setup_training


def test_training_on_one_painted_class_is_a_warning(
    viewer_with_stack, qtbot, tmp_path, notifications
):
    viewer, _, truth = viewer_with_stack()
    _, labels, tr = setup_training(viewer, truth, tmp_path, iterations=2)
    one = np.where(truth[0] == 1, 1, 0).astype(labels.data.dtype)
    labels.data_setitem(
        (np.zeros(one.size, int), *np.indices(one.shape).reshape(2, -1)), one.ravel()
    )
    assert set(np.unique(labels.data)) == {0, 1}
    with qtbot.waitSignal(tr.training_finished, timeout=60_000) as blocker:
        tr.start()
    assert blocker.args == ["completed"]
    warned = [m for m in messages(notifications, "warning") if "only one class" in m]
    assert len(warned) == 1, messages(notifications, "warning")
    assert "label 1" in warned[0]
