"""Make the screenshots of the napari-unet docks in ``docs/images/``.

Runs the real workflow in a real napari window (under Xvfb when there is no
display: ``xvfb-run -a python docs/make_screenshots.py`` or let the script
start PyVirtualDisplay): open the synthetic sample, dock the seven widgets,
paint three slices, preview the augmentation and the weight map, train the
small preset briefly on the CPU, predict, accept a slice -- and grab the whole
window after each step:

    annotate.png augmentation.png weightmap.png training.png
    prediction.png correction.png main.png

    python docs/make_screenshots.py [--out docs/images] [--iterations 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _ensure_display() -> Any:
    if os.environ.get("DISPLAY"):
        return None
    from pyvirtualdisplay import Display

    disp = Display(visible=False, size=(1700, 1100), color_depth=24)
    disp.start()
    return disp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "images"))
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    disp = _ensure_display()
    try:
        _run(out, args.iterations)
    finally:
        if disp is not None:
            disp.stop()


def _run(out: Path, iterations: int) -> None:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QDockWidget

    from napari_unet._qt import open_all_widgets

    def wait(done: Callable[[], bool] = lambda: False, timeout: float = 1.0) -> None:
        t0 = time.perf_counter()
        loop = QEventLoop()
        timer = QTimer()
        timer.setInterval(30)
        timer.timeout.connect(
            lambda: loop.quit() if done() or time.perf_counter() - t0 > timeout else None
        )
        timer.start()
        loop.exec()
        timer.stop()

    tmp = Path(tempfile.mkdtemp(prefix="napari-unet-shots-"))
    os.environ.setdefault("NAPARI_UNET_AUTOSAVE_DIR", str(tmp / "autosave"))
    viewer = napari.Viewer(title="napari-unet")
    win = viewer.window._qt_window
    win.resize(1600, 1000)
    viewer.open_sample("napari-unet", "synthetic_em")
    truth = viewer.layers["synthetic EM ground truth"].data
    widgets = open_all_widgets(viewer)
    ann, aug, wm = widgets["annotate"], widgets["augmentation"], widgets["weightmap"]
    tr, pr, co = widgets["train"], widgets["predict"], widgets["correct"]

    def dock_of(widget: Any) -> QDockWidget:
        w = widget
        while not isinstance(w, QDockWidget):
            w = w.parentWidget()
        return w

    def show_tab(widget: Any) -> None:
        d = dock_of(widget)
        d.show()
        d.raise_()
        wait(timeout=0.5)

    def only(*names: str) -> None:
        for layer in viewer.layers:
            layer.visible = layer.name in names

    def shot(name: str) -> None:
        wait(timeout=1.0)
        path = out / name
        win.grab().save(str(path))
        print(f"saved {path}")

    def go(z: int) -> None:
        viewer.dims.set_point(0, float(z))
        wait(timeout=0.3)

    # -- 1 annotate ------------------------------------------------------------------------
    labels = ann.create_labels()
    for z in (0, 5, 10):
        ys, xs = np.nonzero(np.ones(truth.shape[1:], bool))
        labels.data_setitem((np.full(ys.shape, z), ys, xs), truth[z][ys, xs])
    # and a few strokes on slice 7, as a user would paint
    for y0, value in ((60, 1), (200, 2), (330, 2)):
        ys, xs = np.mgrid[y0 : y0 + 6, 40:400]
        labels.data_setitem((np.full(ys.size, 7), ys.ravel(), xs.ravel()), value)
    go(5)
    wait(lambda: ann.slice_table.rowCount() == 4, 10)
    show_tab(ann)
    only("synthetic EM", labels.name)
    viewer.layers.selection.active = labels
    shot("annotate.png")

    # -- 2 augmentation preview ------------------------------------------------------------------
    show_tab(aug)
    aug.n_samples.setValue(4)
    aug.compute(5)
    wait(lambda: aug.compute_count >= 1 and not aug.busy(), 60)
    wait(timeout=1.0)  # the debounced update after the setting change
    wait(lambda: not aug.busy(), 60)
    only("synthetic EM", labels.name, "augmentation preview", "augmentation preview labels")
    viewer.reset_view()
    go(5)
    shot("augmentation.png")

    for name in (
        "augmentation preview",
        "augmentation preview labels",
        "augmentation preview weights",
    ):
        if name in viewer.layers:
            viewer.layers.remove(name)
    viewer.reset_view()

    # -- 3 weight map ---------------------------------------------------------------------------
    show_tab(wm)
    wm.compute("current slice")
    wait(lambda: wm.compute_count >= 1 and not wm.busy(), 60)
    only("synthetic EM", "weight map")
    go(5)
    shot("weightmap.png")

    # -- 4 train ----------------------------------------------------------------------------------
    show_tab(tr)
    tr.patch.setValue(128)
    tr.iterations.setValue(iterations)
    tr.preview_every.setValue(2.0)
    tr.device.setCurrentText("cpu")
    tr.folder_edit.setText(str(tmp / "models"))
    tr.val_edit.setText("10")
    go(12)  # the preview follows the slice being looked at
    tr.start()
    wait(lambda: not tr.busy(), 1800)
    only("synthetic EM", labels.name, "synthetic EM training preview")
    go(12)
    shot("training.png")

    # -- 5 predict ----------------------------------------------------------------------------------
    show_tab(pr)
    pr.range.setCurrentText("all slices")
    pr.probs.setChecked(True)
    pr.predict()
    wait(lambda: not pr.busy(), 1800)
    only("synthetic EM", "synthetic EM prediction")
    go(12)
    shot("prediction.png")

    # -- 6 correct ----------------------------------------------------------------------------------
    show_tab(co)
    go(7)
    co.accept_slice()
    only("synthetic EM", labels.name)
    viewer.layers.selection.active = labels
    shot("correction.png")

    # -- main: the whole loop at a glance ---------------------------------------------------------
    show_tab(ann)
    wait(timeout=1.0)
    only("synthetic EM", labels.name, "synthetic EM prediction")
    viewer.layers["synthetic EM prediction"].opacity = 0.35
    go(7)
    shot("main.png")
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
