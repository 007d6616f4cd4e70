"""Make the screenshots of the napari-unet docks in ``docs/images/``.

Runs the real workflow in a real napari window (under Xvfb when there is no
display: ``xvfb-run -a python docs/make_screenshots.py`` or let the script
start PyVirtualDisplay): open the synthetic sample in a 1500 x 950 window, dock
the eight widgets as ``napari-unet`` does (one tab group, vertical tabs:
:mod:`napari_unet._qt._dock_layout`), paint three slices, preview the
augmentation and the weight map, train the small preset briefly on the CPU,
predict, find the cells, accept a slice, open Export -- and grab the whole window after each step:

    annotate.png augmentation.png weightmap.png training.png
    prediction.png objects.png correction.png export.png main.png

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


class _Session:
    """A napari window with the eight docks, and the helpers that drive and grab it."""

    def __init__(self, out: Path) -> None:
        import napari

        from napari_unet._qt._dock_layout import open_docks

        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix="napari-unet-shots-"))
        os.environ.setdefault("NAPARI_UNET_AUTOSAVE_DIR", str(self.tmp / "autosave"))
        self.viewer = napari.Viewer(title="napari-unet")
        self.win = self.viewer.window._qt_window
        self.win.resize(1500, 950)  # the size the README's layout is checked at
        self.viewer.open_sample("napari-unet", "synthetic_em")
        self.truth = self.viewer.layers["synthetic EM ground truth"].data
        self.widgets = open_docks(self.viewer)

    def wait(self, done: Callable[[], bool] = lambda: False, timeout: float = 1.0) -> None:
        from qtpy.QtCore import QEventLoop, QTimer

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

    def show_tab(self, widget: Any) -> None:
        from qtpy.QtWidgets import QDockWidget

        dock = widget
        while not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        dock.show()
        dock.raise_()
        self.wait(timeout=0.5)

    def only(self, *names: str) -> None:
        for layer in self.viewer.layers:
            layer.visible = layer.name in names

    def shot(self, name: str) -> None:
        self.wait(timeout=1.0)
        path = self.out / name
        self.win.grab().save(str(path))
        print(f"saved {path}")

    def go(self, z: int) -> None:
        self.viewer.dims.set_point(0, float(z))
        self.wait(timeout=0.3)


def _annotate(s: _Session) -> Any:
    ann, truth = s.widgets["annotate"], s.truth
    labels = ann.create_labels()
    for z in (0, 5, 10):
        ys, xs = np.nonzero(np.ones(truth.shape[1:], bool))
        labels.data_setitem((np.full(ys.shape, z), ys, xs), truth[z][ys, xs])
    # and a few strokes on slice 7, as a user would paint
    for y0, value in ((60, 1), (200, 2), (330, 2)):
        ys, xs = np.mgrid[y0 : y0 + 6, 40:400]
        labels.data_setitem((np.full(ys.size, 7), ys.ravel(), xs.ravel()), value)
    s.go(5)
    s.wait(lambda: ann.slice_table.rowCount() == 4, 10)
    s.show_tab(ann)
    s.only("synthetic EM", labels.name)
    s.viewer.layers.selection.active = labels
    s.shot("annotate.png")
    return labels


def _previews(s: _Session, labels: Any) -> None:
    aug, wm, viewer = s.widgets["augmentation"], s.widgets["weightmap"], s.viewer
    s.show_tab(aug)
    aug.n_samples.setValue(4)
    aug.compute(5)
    s.wait(lambda: aug.compute_count >= 1 and not aug.busy(), 60)
    s.wait(timeout=1.0)  # the debounced update after the setting change
    s.wait(lambda: not aug.busy(), 60)
    s.only("synthetic EM", labels.name, "augmentation preview", "augmentation preview labels")
    viewer.reset_view()
    s.go(5)
    s.shot("augmentation.png")
    for name in (
        "augmentation preview",
        "augmentation preview labels",
        "augmentation preview weights",
    ):
        if name in viewer.layers:
            viewer.layers.remove(name)
    viewer.reset_view()
    s.show_tab(wm)
    wm.compute("current slice")
    s.wait(lambda: wm.compute_count >= 1 and not wm.busy(), 60)
    s.only("synthetic EM", "weight map")
    s.go(5)
    s.shot("weightmap.png")


def _train_predict_correct(s: _Session, labels: Any, iterations: int) -> None:
    tr, pr, co = s.widgets["train"], s.widgets["predict"], s.widgets["correct"]
    s.show_tab(tr)
    # the recipe lives in the viewer's state; the Train dock shows what it holds
    tr.state.update_config(
        patch_size=128, iterations=iterations, preview_every_s=2.0, device="cpu", val_slices=[10]
    )
    tr.folder_edit.setText(str(s.tmp / "models"))
    s.go(12)  # the preview follows the slice being looked at
    tr.start()
    s.wait(lambda: not tr.busy(), 1800)
    s.only("synthetic EM", labels.name, "synthetic EM training preview")
    s.go(12)
    s.shot("training.png")
    s.show_tab(pr)
    pr.range.setCurrentText("all slices")
    pr.probs.setChecked(True)
    pr.predict()
    s.wait(lambda: not pr.busy(), 1800)
    s.only("synthetic EM", "synthetic EM prediction")
    s.go(12)
    s.shot("prediction.png")
    ob = s.widgets["objects"]
    s.show_tab(ob)
    ob.class_combo.setCurrentText("cell")  # cells between membranes: boundary watershed
    ob.find_objects()
    s.wait(lambda: not ob.busy(), 600)
    objects = [lay.name for lay in s.viewer.layers if "objects" in lay.name]
    s.only("synthetic EM", *objects)
    s.go(12)
    s.shot("objects.png")
    s.show_tab(co)
    s.go(7)
    co.accept_slice()
    s.only("synthetic EM", labels.name)
    s.viewer.layers.selection.active = labels
    s.shot("correction.png")
    ex = s.widgets["export"]
    s.show_tab(ex)
    ex.what.setCurrentText("prediction")
    ex.bioimageio.setChecked(ex.bioimageio.isEnabled())
    ex.folder.setText(str(s.tmp / "export"))
    s.shot("export.png")


def _run(out: Path, iterations: int) -> None:
    s = _Session(out)
    labels = _annotate(s)
    _previews(s, labels)
    _train_predict_correct(s, labels, iterations)
    # the whole loop at a glance
    s.show_tab(s.widgets["annotate"])
    s.wait(timeout=1.0)
    s.only("synthetic EM", labels.name, "synthetic EM prediction")
    s.viewer.layers["synthetic EM prediction"].opacity = 0.35
    s.go(7)
    s.shot("main.png")
    s.viewer.close()
    shutil.rmtree(s.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
