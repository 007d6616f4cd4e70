"""Helpers shared by the widget tests (imported as a plain module)."""

from __future__ import annotations

from typing import Any

import numpy as np


def messages(notes: list[Any], severity: str | None = None) -> list[str]:
    out = []
    for n in notes:
        sev = str(getattr(n, "severity", "")).lower()
        if severity is None or severity in sev:
            out.append(str(n.message))
    return out


def dock(viewer: Any, name: str) -> Any:
    """Dock a napari-unet widget by its manifest display name; return the widget."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return widget


def paint(labels_layer: Any, truth: np.ndarray, z: int) -> None:
    """Copy the ground truth of slice ``z`` into the labels with napari's history (a 'paint')."""
    ys, xs = np.nonzero(np.ones(truth.shape[1:], dtype=bool))
    labels_layer.data_setitem((np.full(ys.shape, z), ys, xs), truth[z][ys, xs])


def wait_idle(qtbot: Any, widget: Any, name: str = "main", timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not widget.busy(name), timeout=timeout)


def setup_training(viewer: Any, truth: np.ndarray, tmp_path: Any, iterations: int = 100_000):
    """Training labels with slice 0 painted, and a Train dock set for a tiny, fast CPU run."""
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    paint(labels, truth, 0)
    tr = dock(viewer, "4 Train")
    tr.patch.setValue(64)
    tr.batch.setValue(1)
    tr.iterations.setValue(iterations)
    tr.preview_every.setValue(0.5)
    tr.device.setCurrentText("cpu")
    tr.folder_edit.setText(str(tmp_path / "models"))
    return ann, labels, tr
