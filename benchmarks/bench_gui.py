"""The Train dock against ``napari-unet train``: throughput, latency and GUI responsiveness.

ISBI 2012 (``../shared/data/isbi2012``; else the synthetic sample, noted) is opened with the
plugin's reader in a real, shown napari window under Xvfb with all seven docks; slices 0-2 are
painted with the truth.  Per configuration:

* **headless**: ``napari-unet train`` in a fresh process, same data, same recipe, same minutes;
* **window**: Train pressed with the dock's defaults and the same time limit.  Measured: the
  iterations (and their ratio to the headless run), click -> first iteration, click -> first
  preview overlay, a brush stroke on the viewed slice -> the trainer's ``LabelsChanged`` (seconds
  and iterations) -> the first preview after it, and a 10 ms ``QTimer`` heartbeat on the GUI
  thread (p50 / p99 / max gap: how long the GUI could not react) and the passes over the window
  (each a composite of the whole window with napari's canvas: its cost is measured too);
* then Predict of every slice, with the heartbeat.

A second window run with training threads = 1 (``--threads default,1``, the default) shows what the
thread setting costs; ``summary`` is the short table (both phases).

    python benchmarks/bench_gui.py [--quick] [--minutes M] [--threads default,1]
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
    from benchmarks._common import (
        ISBI_DIR,
        format_table,
        isbi_available,
        machine,
        peak_rss_mib,
        report,
    )
    from benchmarks._gui_docs import write_doc
    from benchmarks._stalls import StallSampler
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import (  # type: ignore[no-redef]
        ISBI_DIR,
        format_table,
        isbi_available,
        machine,
        peak_rss_mib,
        report,
    )
    from _gui_docs import write_doc  # type: ignore[no-redef]
    from _stalls import StallSampler  # type: ignore[no-redef]

PAINTED = (0, 1, 2)
#: the slice shown (and previewed) while training; the stroke lands there
VIEWED = 1


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


class WindowPasses:
    """Counts the main window's paint passes (``UpdateRequest``: one composite of the window each)."""

    def __init__(self, window: Any) -> None:
        from qtpy.QtCore import QEvent, QObject

        kind = QEvent.Type.UpdateRequest

        class _Filter(QObject):
            count = 0

            def eventFilter(self, obj: Any, event: Any) -> bool:  # Qt's name
                if event.type() == kind:
                    self.count += 1
                return False

        self._filter = _Filter()
        window.installEventFilter(self._filter)  # the window's own events only: cheap

    @property
    def count(self) -> int:
        return self._filter.count


class Heartbeat:
    """Timestamps of a 10 ms QTimer on the GUI thread (and the window passes meanwhile)."""

    passes: WindowPasses | None = None  # set once the window exists

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self._passes0 = 0
        self.stalls = StallSampler(lambda: self.ticks[-1], threshold_ms=30.0)

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self._passes0 = self.passes.count if self.passes is not None else 0
        self.timer.start()
        self.stalls.start()

    def stop(self) -> dict[str, Any]:
        self.timer.stop()
        stalls = self.stalls.stop()
        self.ticks.append(time.perf_counter())
        gaps = np.diff(np.asarray(self.ticks)) * 1000.0
        nan = float("nan")
        out = {
            "heartbeats": len(gaps),
            "p50_gap_ms": float(np.median(gaps)) if gaps.size else nan,
            "p99_gap_ms": float(np.percentile(gaps, 99)) if gaps.size else nan,
            "max_gap_ms": float(gaps.max()) if gaps.size else nan,
            "gaps_over_100ms": int(np.count_nonzero(gaps > 100.0)),
        }
        if self.passes is not None:
            seconds = max(self.ticks[-1] - self.ticks[0], 1e-9)
            out["window_passes_per_s"] = (self.passes.count - self._passes0) / seconds
        out["stalls"] = stalls  # where the GUI thread was while a tick was > 30 ms late
        return out


def _redraw_cost(w: dict[str, Any], n: int = 10) -> dict[str, Any]:
    """What one pass over the window costs: the median of ``n`` synchronous repaints of the
    Train dock's progress bar (a small widget: the whole window is composited) and of the canvas."""
    bar = w["train"].progress
    canvas = w["viewer"].window._qt_viewer.canvas
    out: dict[str, Any] = {"phase": "window: redraw cost (idle)"}
    for key, draw in (("bar_repaint_ms", bar.repaint), ("canvas_redraw_ms", None)):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            if draw is not None:
                draw()
            else:
                canvas.native.repaint()
            times.append(1000 * (time.perf_counter() - t0))
            _wait(lambda: False, 0.05)
        out[key] = float(np.median(times))
    return out


def _wait(done: Callable[[], bool], timeout: float) -> float:
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


class CpuShare:
    """CPU seconds this benchmark (and its reaped children) used vs. the whole machine."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float]:
        import resource

        own = sum(
            getattr(resource.getrusage(who), f)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for f in ("ru_utime", "ru_stime")
        )
        try:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        except OSError:  # not Linux
            busy = float("nan")
        return own, busy

    def stop(self) -> dict[str, float]:
        """``cpu_other_s``: what other processes took meanwhile (others' load skews a row)."""
        own, busy = (b - a for a, b in zip(self.start, self._now()))
        return {"cpu_own_s": own, "cpu_other_s": max(busy - own, 0.0)}


# ----------------------------------------------------------------------------- data


def _data(quick: bool, tmp: Path) -> tuple[Path, np.ndarray, Path, str]:
    """(image file, truth classes 1/2, labels file with slices 0-2 painted, description)."""
    import tifffile

    if isbi_available() and not quick:
        image_path = ISBI_DIR / "train-volume.tif"
        truth = np.where(tifffile.imread(ISBI_DIR / "train-labels.tif") == 0, 1, 2)
        source = "ISBI 2012 train-volume (30 x 512 x 512)"
    else:
        from napari_unet.sample_data import synthetic_em

        shape = (4, 128, 128) if quick else (30, 512, 512)
        image, truth = synthetic_em(shape, seed=0)
        image_path = tmp / "image.tif"
        tifffile.imwrite(image_path, image, photometric="minisblack")
        why = "quick run" if quick else f"ISBI 2012 not found in {ISBI_DIR}"
        source = f"synthetic EM {shape} ({why})"
    truth = truth.astype(np.uint8)
    labels = np.zeros_like(truth)
    labels[list(PAINTED)] = truth[list(PAINTED)]
    labels_path = tmp / "labels.tif"
    tifffile.imwrite(labels_path, labels, photometric="minisblack")
    return image_path, truth, labels_path, source


def _limit_args(limit: dict[str, float]) -> list[str]:
    if "minutes" in limit:
        return ["--minutes", f"{limit['minutes']:g}"]
    return ["--iterations", str(int(limit["iterations"]))]


def headless(image: Path, labels: Path, limit: dict[str, float], out: Path) -> dict[str, Any]:
    """``napari-unet train`` in a fresh process; the iterations its checkpoint records."""
    cmd = [sys.executable, "-m", "napari_unet.cli", "train", "--image", str(image)]
    cmd += ["--labels", str(labels), "--device", "cpu", "--out", str(out), "-q"]
    t0, share = time.perf_counter(), CpuShare()
    proc = subprocess.run(cmd + _limit_args(limit), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"napari-unet train failed: {proc.stderr.strip()[-2000:]}")
    from napari_unet.checkpoint import load_checkpoint

    _, meta = load_checkpoint(out)
    return {
        "phase": "headless: napari-unet train",
        "iterations": meta["iterations"],
        "wall_s": wall,
        **share.stop(),
    }


def headless_predict(image: Path, model: Path, out: Path) -> dict[str, Any]:
    """``napari-unet predict`` of every slice in a fresh process: the seconds it reports for
    predicting and writing (its "wrote ... in N s"), and the process's wall time with startup."""
    import re

    cmd = [sys.executable, "-m", "napari_unet.cli", "predict", "--model", str(model)]
    cmd += ["--image", str(image), "--device", "cpu", "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    found = re.search(r" in ([0-9.]+) s", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"napari-unet predict failed: {proc.stderr.strip()[-2000:]}")
    return {
        "phase": "headless: napari-unet predict (all slices)",
        "predict_s": float(found.group(1)),
        "wall_s": wall,
    }


# ----------------------------------------------------------------------------- window


def _open_window(image_path: Path, truth: np.ndarray, tmp: Path) -> dict[str, Any]:
    """A shown viewer with the stack read by the plugin, all docks, slices 0-2 painted."""
    import napari

    from napari_unet._qt import open_all_widgets

    viewer = napari.Viewer(show=True, title="bench_gui")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(str(image_path), plugin="napari-unet")
    widgets = open_all_widgets(viewer)
    ann = widgets["annotate"]
    ann.set_autosave(interval=5.0, folder=tmp / "autosave")
    labels = ann.create_labels()
    for z in PAINTED:
        ys, xs = np.nonzero(np.ones(truth.shape[1:], bool))
        labels.data_setitem((np.full(ys.shape, z), ys, xs), truth[z][ys, xs])
    viewer.dims.set_current_step(0, VIEWED)
    return {"viewer": viewer, "labels": labels, **widgets}


def _show_dock(widget: Any) -> None:
    """Bring ``widget``'s tab to the front, as a user pressing its button sees it."""
    dock = widget
    while dock is not None and not hasattr(dock, "isFloating"):  # the QDockWidget
        dock = dock.parentWidget()
    if dock is not None:
        dock.show()
        dock.raise_()
    _wait(lambda: False, 0.5)


def _stroke(labels: Any, z: int) -> None:
    """An eraser stroke: a 48 x 48 block of slice ``z`` set to 0 (as the brush does)."""
    ys, xs = np.mgrid[200:248, 200:248]
    # erase, or paint class 1 where an earlier run erased: a stroke must change the labels
    value = 0 if np.asarray(labels.data[z, 200:248, 200:248]).any() else 1
    labels.data_setitem((np.full(ys.size, z), ys.ravel(), xs.ravel()), value)


def _stroke_latency(tr: Any, labels: Any, previews: list[tuple[float, int]]) -> dict[str, float]:
    """Paint on the viewed slice mid-run; how long until the trainer and a preview show it."""
    seen = len(tr.labels_changed_slices)
    it0, t0 = tr.iterations_seen, time.perf_counter()
    _stroke(labels, VIEWED)
    _wait(lambda: VIEWED in tr.labels_changed_slices[seen:] or not tr.busy(), 60)
    t1, it1 = time.perf_counter(), tr.iterations_seen
    n = len(previews)
    _wait(lambda: any(z == VIEWED for _, z in previews[n:]) or not tr.busy(), 60)
    after = [t for t, z in previews[n:] if z == VIEWED]
    nan = float("nan")
    return {
        "stroke_to_trainer_s": t1 - t0 if tr.busy() else nan,
        "stroke_to_trainer_iterations": it1 - it0,
        "stroke_to_preview_s": after[0] - t0 if after else nan,
    }


def _train(w: dict[str, Any], limit: dict[str, float], threads: str, tmp: Path) -> dict[str, Any]:
    """Press Train with the dock's defaults and ``limit``; what the window and heartbeat saw."""
    tr, labels = w["train"], w["labels"]
    tr.set_model_choice("small")  # a new model each time
    if "minutes" in limit:
        tr.minutes.setValue(limit["minutes"])
        tr.iterations.setValue(0)  # "no limit": the time limit decides
    else:
        tr.iterations.setValue(int(limit["iterations"]))
    tr.device.setCurrentText("cpu")
    tr.folder_edit.setText(str(tmp / "models"))
    if threads != "default":
        tr.threads.setValue(int(threads))
    _show_dock(tr)
    previews: list[tuple[float, int]] = []
    tr.preview_updated.connect(lambda z: previews.append((time.perf_counter(), int(z))))
    hb, share = Heartbeat(), CpuShare()
    t0 = time.perf_counter()
    if tr.start() is None:
        raise RuntimeError(f"training did not start: {tr.status.text()}")
    click = time.perf_counter() - t0
    hb.start()
    _wait(lambda: tr.iterations_seen >= 1 or not tr.busy(), 600)
    first = time.perf_counter() - t0
    stroke: dict[str, float] = {}
    if "minutes" in limit:
        _wait(lambda: not tr.busy(), 20.0)
        stroke = _stroke_latency(tr, labels, previews)
    _wait(lambda: not tr.busy(), 3600)
    wall = time.perf_counter() - t0
    preview = previews[0][0] - t0 if previews else float("nan")
    return {
        "phase": f"window: Train dock in front, threads {threads} ({tr.threads.text()})",
        "iterations": tr.iterations_seen,
        "wall_s": wall,
        "click_ms": 1000 * click,
        "to_first_iteration_s": first,
        "to_first_preview_s": preview,
        "previews": len(previews),
        **stroke,
        **hb.stop(),
        **share.stop(),
        "outcome": tr.last_reason,
    }


def _predict(w: dict[str, Any]) -> dict[str, Any]:
    pr = w["predict"]
    pr.range.setCurrentText("all slices")
    pr.device.setCurrentText("cpu")
    _show_dock(pr)
    hb = Heartbeat()
    t0 = time.perf_counter()
    pr.predict()
    click = time.perf_counter() - t0
    hb.start()
    _wait(lambda: not pr.busy(), 3600)
    n = int(w["viewer"].layers[0].data.shape[0])
    return {
        "phase": f"window: Predict all {n} slices (Predict dock in front)",
        "wall_s": time.perf_counter() - t0,
        "click_ms": 1000 * click,
        **hb.stop(),
        "outcome": "completed" if pr.slices_written == n else "incomplete",
    }


def _window_rows(
    image: Path, truth: np.ndarray, limit: dict[str, float], threads: list[str], tmp: Path
) -> list[dict[str, Any]]:
    rows = []
    with virtual_display():
        w = _open_window(image, truth, tmp)
        tr = w["train"]
        ready = ("warmup", "process")  # torch in the window; the training process, warm
        _wait(lambda: not any(w[k].busy(j) for k in ("train", "predict") for j in ready), 120)
        _show_dock(w["annotate"])  # where the user paints
        _wait(lambda: False, 3.0)  # let the first draws settle
        Heartbeat.passes = WindowPasses(w["viewer"].window._qt_window)
        hb = Heartbeat()
        hb.start()
        _wait(lambda: False, 3.0)
        rows.append({"phase": "window: idle (baseline)", **hb.stop()})
        rows.append(_redraw_cost(w))
        for i, t in enumerate(threads):
            if i:  # an edit (as Correct's accept makes) readies the next training process
                tr.state.mark_labels_edited([0])
                _wait(lambda: not tr.busy("process"), 120)
            rows.append(_train(w, limit, t, tmp))
        rows.append(_predict(w))
        w["viewer"].close()
    return rows


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The short table: per phase the iterations (and their ratio) and the heartbeat."""
    keys = ("phase", "iterations", "ratio_to_headless", "p50_gap_ms", "p99_gap_ms", "max_gap_ms")
    keys += ("predict_s", "speed_to_headless", "window_passes_per_s", "cpu_other_s")
    return [{k: row[k] for k in keys if k in row} for row in rows if "redraw" not in row["phase"]]


def run(quick: bool = False, minutes: float = 2.0, threads: str = "default,1") -> dict[str, Any]:
    limit: dict[str, float] = {"iterations": 20} if quick else {"minutes": minutes}
    tmp = Path(tempfile.mkdtemp(prefix="bench_gui_"))
    try:
        image, truth, labels, source = _data(quick, tmp)
        rows = [headless(image, labels, limit, tmp / "headless.pt")]
        rows += _window_rows(image, truth, limit, threads.split(","), tmp)
        rows.append(headless_predict(image, tmp / "headless.pt", tmp / "headless_pred.tif"))
        window = next(r for r in rows if r["phase"].startswith("window: Predict"))
        window["speed_to_headless"] = rows[-1]["predict_s"] / window["wall_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["iterations"]
    for row in rows:
        if "iterations" in row and row is not rows[0]:
            row["ratio_to_headless"] = row["iterations"] / max(base, 1)
    what = f"{limit['minutes']:g} min" if "minutes" in limit else f"{limit['iterations']} it"
    return {
        "name": "gui",
        "summary": _summary(rows),
        "rows": rows,
        "machine": machine(),
        "peak_rss_mib": peak_rss_mib(),
        "source": source,
        "limit": limit,
        "note": (
            f"{source}, slices {PAINTED[0]}-{PAINTED[-1]} painted, all 7 docks in a shown napari "
            f"window under Xvfb; small preset, CPU, the dock's defaults, {what} per run. headless: "
            "napari-unet train (fresh process, same files and limit). ratio_to_headless: window "
            "iterations / headless iterations. Heartbeat: 10 ms QTimer on the GUI thread, measured "
            "from the end of the click; a gap is time the GUI could not react. stroke_*: an eraser "
            f"stroke on the viewed slice {VIEWED} ~20 s into the run -> the trainer's LabelsChanged "
            "-> the next preview of that slice. cpu_own_s: CPU time of this benchmark and its "
            "processes; cpu_other_s: of everything else on the machine meanwhile (a shared "
            "machine: rows with a large cpu_other_s were slowed by others). window_passes_per_s: "
            "paint passes of the main window (each composites the whole window with the canvas); "
            "redraw cost: median synchronous repaint of a small widget (the progress bar) and of "
            "the canvas, idle. The threads-1 row sets the Train dock's CPU threads to 1 (its "
            "ratio is to the same headless run, all threads). Predict: the window's click to "
            "the last slice shown vs napari-unet predict's own 'in N s' (predicting and writing, "
            "not its start-up) on the headless model (same preset); speed_to_headless: headless "
            "seconds / window seconds."
        ),
    }


def _arg(argv: list[str], flag: str, default: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv else default


if __name__ == "__main__":
    result = run(
        quick="--quick" in sys.argv,
        minutes=float(_arg(sys.argv, "--minutes", "2")),
        threads=_arg(sys.argv, "--threads", "default,1"),
    )
    report(result)
    print(format_table(result["summary"]))
    if "--quick" not in sys.argv:
        print(
            f"(wrote {write_doc(result, 'python benchmarks/bench_gui.py ' + ' '.join(sys.argv[1:]))})"
        )
