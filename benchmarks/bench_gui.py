"""GUI responsiveness while napari-unet trains and predicts in its worker threads.

Runs the interactive loop headlessly (under Xvfb: the existing ``$DISPLAY``,
else PyVirtualDisplay, else an ``Xvfb`` subprocess) in a real, shown napari
window with all seven docks: synthetic EM stack, two painted slices, training
of the "small" preset on the CPU with the default settings (preview every 5 s,
checkpoints), then prediction of every slice.

A 10 ms ``QTimer`` heartbeat runs on the GUI thread the whole time; the gaps
between its ticks are how long the GUI was unresponsive (a redraw of the
canvas or of a plot lands there too).  Reported per phase: max and 99th
percentile gap, and for training the time from pressing Train to the first
iteration and to the first prediction-preview overlay.  Peak RSS of the process.

    python benchmarks/bench_gui.py [--quick]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks._common import peak_rss_mib, report
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import peak_rss_mib, report  # type: ignore[no-redef]


@contextlib.contextmanager
def virtual_display() -> Iterator[str]:
    """An X display for Qt/OpenGL: the current one, PyVirtualDisplay, or an Xvfb subprocess."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    disp = None
    try:
        from pyvirtualdisplay import Display

        disp = Display(visible=False, size=(1600, 1000), color_depth=24)
        disp.start()
    except Exception:  # no PyVirtualDisplay or it failed: fall back to a plain Xvfb
        disp = None
    if disp is not None:
        try:
            yield os.environ.get("DISPLAY", "")
        finally:
            disp.stop()
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError("no X display: install Xvfb (or run under xvfb-run)")
    num = 99
    proc = subprocess.Popen([xvfb, f":{num}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"])
    time.sleep(1.0)
    os.environ["DISPLAY"] = f":{num}"
    try:
        yield os.environ["DISPLAY"]
    finally:
        proc.terminate()
        proc.wait(10)


class Heartbeat:
    """Timestamps of a 10 ms QTimer on the GUI thread."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        gaps = np.diff(np.asarray(self.ticks)) * 1000.0
        return {
            "heartbeats": len(gaps),
            "max_gap_ms": float(gaps.max()) if gaps.size else float("nan"),
            "p99_gap_ms": float(np.percentile(gaps, 99)) if gaps.size else float("nan"),
            "median_gap_ms": float(np.median(gaps)) if gaps.size else float("nan"),
        }


def _wait(app: Any, done: Callable[[], bool], timeout: float) -> float:
    """Run the Qt event loop (not a busy poll) until ``done()``; return the seconds waited."""
    from qtpy.QtCore import QEventLoop, QTimer

    t0 = time.perf_counter()
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(
        lambda: loop.quit() if done() or time.perf_counter() - t0 > timeout else None
    )
    check.start()
    loop.exec()
    check.stop()
    return time.perf_counter() - t0


def run(quick: bool = False) -> dict[str, Any]:
    shape = (4, 128, 128) if quick else (16, 512, 512)
    iterations = 20 if quick else 25
    rows: list[dict[str, Any]] = []
    with virtual_display():
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_unet._qt import open_all_widgets
        from napari_unet.sample_data import synthetic_em

        image, truth = synthetic_em(shape, seed=0)
        viewer = napari.Viewer(show=True, title="bench_gui")
        app = QApplication.instance()
        viewer.window._qt_window.resize(1500, 950)
        viewer.add_image(image, name="synthetic EM", colormap="gray")
        widgets = open_all_widgets(viewer)
        ann, tr, pr = widgets["annotate"], widgets["train"], widgets["predict"]
        tmp = Path(tempfile.mkdtemp(prefix="bench_gui_"))
        try:
            ann.set_autosave(interval=5.0, folder=tmp / "autosave")
            labels = ann.create_labels()
            for z in (0, shape[0] // 2):
                ys, xs = np.nonzero(np.ones(shape[1:], bool))
                labels.data_setitem((np.full(ys.shape, z), ys, xs), truth[z][ys, xs])
            _wait(app, lambda: not any(w.busy("warmup") for w in (tr, pr)), 60)

            _wait(app, lambda: False, 3.0)  # let the first draws settle
            hb = Heartbeat()
            hb.start()
            _wait(app, lambda: False, 3.0)
            rows.append({"phase": "idle (baseline)", **hb.stop()})

            tr.iterations.setValue(iterations)
            tr.device.setCurrentText("cpu")
            tr.folder_edit.setText(str(tmp / "models"))
            if quick:
                tr.patch.setValue(64)
                tr.batch.setValue(2)
            cpus = os.cpu_count() or 1
            for threads in dict.fromkeys([max(cpus - 1, 1), cpus]):
                tr.threads.setValue(threads if threads < cpus else 0)
                t_start = time.perf_counter()
                job = tr.start()
                start_call = time.perf_counter() - t_start
                if job is None:
                    raise RuntimeError(f"training did not start: {tr.status.text()}")
                hb.start()  # from the end of the button press
                _wait(app, lambda: tr.iterations_seen >= 1, 600)
                to_first = time.perf_counter() - t_start
                _wait(app, lambda: not tr.busy(), 3600)
                train_s = time.perf_counter() - t_start
                stats = hb.stop()
                rows.append(
                    {
                        "phase": f"training small preset, CPU, {iterations} it, {threads} thread(s)",
                        **stats,
                        "start_click_ms": 1000 * start_call,
                        "wall_s": train_s,
                        "to_first_iteration_s": to_first,
                        "to_first_preview_s": tr.t_first_preview
                        if tr.t_first_preview is not None
                        else float("nan"),
                        "previews": tr.preview_count,
                        "it_per_s": tr.iterations_seen / max(train_s - to_first, 1e-9),
                        "outcome": tr.last_reason,
                    }
                )
                tr.set_model_choice("small")  # the same run again, from scratch

            pr.range.setCurrentText("all slices")
            pr.device.setCurrentText("cpu")
            t0 = time.perf_counter()
            pr.predict()
            start_call = time.perf_counter() - t0
            hb.start()
            _wait(app, lambda: not pr.busy(), 3600)
            rows.append(
                {
                    "phase": f"prediction of {shape[0]} slices",
                    **hb.stop(),
                    "start_click_ms": 1000 * start_call,
                    "wall_s": time.perf_counter() - t0,
                    "outcome": "completed" if pr.slices_written == shape[0] else "incomplete",
                }
            )
            viewer.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    import torch

    return {
        "name": "gui",
        "rows": rows,
        "peak_rss_mib": peak_rss_mib(),
        "stack": list(shape),
        "torch_threads": torch.get_num_threads(),
        "note": (
            f"Synthetic EM {shape}, 2 painted slices, all 7 docks in a shown napari window under Xvfb. "
            "Heartbeat: 10 ms QTimer on the GUI thread; a gap is time the GUI could not react. "
            "Gaps are measured from the end of the Start/Predict click (start_click_ms: what the click "
            "itself blocks, mostly napari adding the overlay layer). Training uses the default preview "
            "interval (5 s), so the first preview overlay comes about 5 s after training starts; "
            "it is run with the widget's default CPU threads (all but one core) and with all cores. "
            f"Peak RSS {peak_rss_mib():.0f} MiB."
        ),
    }


if __name__ == "__main__":
    report(run(quick="--quick" in sys.argv))
