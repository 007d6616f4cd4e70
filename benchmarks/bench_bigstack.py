"""Training labels of a big stack in a shown window: memory, GUI heartbeat, autosave per stroke.

A synthetic uint8 stack (default 20 GiB: 1280 x 4096 x 4096) is written slice by slice as an
uncompressed TIFF (never held whole; kept and reused between runs) and opened with the plugin's
reader (a lazy memmap) in a shown napari window under Xvfb with the Annotate dock.  Then, as a
user would: "Create training labels" (an on-disk zarr labels store, :mod:`napari_unet.label_store`),
10 brush strokes (50 dabs of a 24 px brush each, events processed between dabs, two strokes on
each of 5 slices) each followed by an autosave tick, an 11th stroke left unsaved, close the
viewer (it writes what the last tick did not), open a new viewer and restore the labels.

Measured: peak RSS above the window's own (the RSS with the stack shown, before the labels;
VmHWM reset there via ``/proc/self/clear_refs``), anonymous memory separately; the 10 ms
``QTimer`` heartbeat's largest gap while painting and autosaving (slice changes are timed
apart: that is napari drawing a new 4096^2 slice); the worker time of each autosave and the
chunks it wrote; close and restore times; the restored strokes checked against the painted ones.

    python benchmarks/bench_bigstack.py [--quick] [--gib 20] [--edge 4096] [--folder DIR]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks._common import machine, report
    from benchmarks.bench_gui import Heartbeat, _wait, virtual_display
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import machine, report  # type: ignore[no-redef]
    from bench_gui import Heartbeat, _wait, virtual_display  # type: ignore[no-redef]

EDGE = 4096
SLICES = (100, 400, 700, 1000, 1270)  # two strokes on each (clipped to the stack)
DABS, BRUSH = 50, 24


def make_stack(path: Path, gib: float, edge: int = EDGE) -> tuple[int, int, int]:
    """An uncompressed uint8 TIFF of about ``gib`` GiB, written one slice at a time (reused)."""
    import tifffile

    n = max(round(gib * 2**30 / edge / edge), 2)
    shape = (n, edge, edge)
    if path.is_file() and path.stat().st_size >= n * edge * edge:
        return shape
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:edge, 0:edge]
    base = ((np.sin(yy / 37.0) + np.cos(xx / 23.0)) * 60 + 128).astype(np.uint8)
    del yy, xx
    tmp = path.with_name(path.name + ".partial")
    out = tifffile.memmap(str(tmp), shape=shape, dtype=np.uint8, photometric="minisblack")
    for z in range(n):
        out[z] = np.roll(base, z * 7, axis=1)
        if z % 64 == 63:
            out.flush()
    out.flush()
    del out
    os.replace(tmp, path)
    return shape


def _status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class AnonPeak:
    """The largest RssAnon seen, sampled every 20 ms by a QTimer (anonymous = not page cache)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.peak = _status_kib()["RssAnon"]
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self.sample)
        self.timer.start()

    def sample(self) -> None:
        self.peak = max(self.peak, _status_kib()["RssAnon"])


def _open(path: Path, project: Path) -> tuple[Any, Any]:
    import napari

    viewer = napari.Viewer(show=True, title="bench_bigstack")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(str(path), plugin="napari-unet")
    _, ann = viewer.window.add_plugin_dock_widget("napari-unet", "1 Annotate")
    ann.set_autosave(interval=1.0, folder=project)
    _wait(lambda: False, 1.0)
    return viewer, ann


def _go_to(viewer: Any, z: int) -> float:
    t0 = time.perf_counter()
    viewer.dims.set_current_step(0, z)
    _wait(lambda: False, 0.05)
    return time.perf_counter() - t0


def _stroke(labels: Any, z: int, k: int, value: int) -> float:
    """One brush stroke (one undo item): DABS dabs along a diagonal, events between dabs."""
    from qtpy.QtWidgets import QApplication

    labels.brush_size = BRUSH
    y0, x0 = 300 + 350 * k, 200 + 90 * (z % 7)
    t0 = time.perf_counter()
    with labels.block_history():
        for i in range(DABS):
            labels.paint((z, y0 + 6 * i, x0 + 10 * i), value)
            QApplication.processEvents()
    return time.perf_counter() - t0


def _timed_saves(store: Any) -> list[tuple[float, int]]:
    """Wrap the store's autosave (run in the worker) to time it: ``[(seconds, chunks)]``."""
    times: list[tuple[float, int]] = []
    save = store.save_changes

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0, before = time.perf_counter(), store.chunks_written
        result = save(*args, **kwargs)
        times.append((time.perf_counter() - t0, store.chunks_written - before))
        return result

    store.save_changes = timed
    return times


def _session(path: Path, shape: tuple[int, ...], project: Path, quick: bool) -> dict[str, Any]:
    from napari_unet import label_store
    from napari_unet.label_store import LabelStore

    if "--debug-threshold" in sys.argv:  # a tiny stack to try the script: the store anyway
        label_store.LABEL_STORE_MIN_VOXELS = 1

    viewer, ann = _open(path, project)
    base = _status_kib()
    reset = _reset_peak()
    anon = AnonPeak()
    hb = Heartbeat()
    hb.start()
    t0 = time.perf_counter()
    labels = ann.create_labels()
    create_s = time.perf_counter() - t0
    store = ann._autosave
    if not isinstance(store, LabelStore):
        raise RuntimeError(f"expected a labels store for {shape}, got {type(store).__name__}")
    saves = _timed_saves(store)
    slices = [min(z, shape[0] - 1) for z in (SLICES[:2] if quick else SLICES)]
    strokes, changes, painted = [], [], {}
    create_gap = hb.stop()["max_gap_ms"]  # napari adding a layer: timed apart
    gaps = {"max_gap_ms": 0.0, "p99_gap_ms": 0.0}
    stalls: dict[str, float] = {}
    for i, z in enumerate(s for s in slices for _ in range(2)):
        changes.append(_go_to(viewer, z))
        hb.start()
        n = ann.save_count
        strokes.append(_stroke(labels, z, i % 2, 1 + i % 2))
        _wait(lambda n=n: ann.save_count > n and not ann.busy("autosave"), 30.0)
        g = hb.stop()
        gaps = {k: max(gaps[k], g[k]) for k in ("max_gap_ms", "p99_gap_ms")}
        for row in g["stalls"]:
            stalls[row["where"]] = stalls.get(row["where"], 0) + row["stalled_ms"]
    for z in slices:
        painted[z] = np.asarray(labels.data[z])
    last = _stroke(labels, slices[-1], 2, 2)  # left for the close to write
    painted[slices[-1]] = np.asarray(labels.data[slices[-1]])
    t0 = time.perf_counter()
    before = store.chunks_written
    viewer.close()
    close_s = time.perf_counter() - t0
    close_chunks = store.chunks_written - before

    viewer2, ann2 = _open(path, project)
    t0 = time.perf_counter()
    labels2 = ann2.create_labels()
    restore_s = time.perf_counter() - t0
    restored = all(np.array_equal(np.asarray(labels2.data[z]), painted[z]) for z in painted)
    lazy = not isinstance(labels2.data, np.ndarray)
    anon.sample()
    end = _status_kib()
    viewer2.close()
    per_save = [s for s, chunks in saves if chunks]
    return {
        "stack": f"{shape[0]} x {shape[1]} x {shape[2]} uint8",
        "stack_gib": float(np.prod(shape) / 2**30),
        "window_rss_mib": base["VmRSS"] / 1024,
        "peak_rss_above_window_mib": (end["VmHWM"] - base["VmRSS"]) / 1024 if reset else None,
        "peak_anon_above_window_mib": (anon.peak - base["RssAnon"]) / 1024,
        "create_labels_s": create_s,
        "strokes": len(strokes),
        "stroke_s_median": float(np.median(strokes)),
        "create_heartbeat_max_gap_ms": create_gap,
        "heartbeat_max_gap_ms": gaps["max_gap_ms"],
        "heartbeat_p99_gap_ms": gaps["p99_gap_ms"],
        "slice_change_s_max": float(max(changes)),
        "autosave_s_per_stroke_median": float(np.median(per_save)) if per_save else None,
        "autosave_s_per_stroke_max": float(max(per_save)) if per_save else None,
        "chunks_per_autosave_median": float(np.median([c for _, c in saves if c] or [0])),
        "last_stroke_s": last,
        "close_s": close_s,
        "close_chunks_written": close_chunks,
        "restore_s": restore_s,
        "restored_equal": bool(restored),
        "restored_lazily": bool(lazy),
        "store_files": sum(1 for p in store.path.rglob("*") if p.is_file()),
        "stalls": [  # where the GUI thread was while a heartbeat was > 30 ms late (painting)
            {"where": k, "stalled_ms": v}
            for k, v in sorted(stalls.items(), key=lambda kv: -kv[1])[:6]
        ],
    }


def run(
    quick: bool = False, gib: float = 20.0, folder: str | None = None, edge: int = EDGE
) -> dict[str, Any]:
    gib = min(gib, 1.5) if quick else gib
    root = Path(folder) if folder else Path(tempfile.gettempdir()) / "napari_unet_bigstack"
    path = root / f"bigstack_{gib:g}gib_{edge}.tif"
    t0 = time.perf_counter()
    shape = make_stack(path, gib, edge)
    made_s = time.perf_counter() - t0
    project = Path(tempfile.mkdtemp(prefix="project_", dir=root))
    try:
        with virtual_display():
            row = _session(path, shape, project, quick)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    row["make_stack_s"] = made_s
    return {
        "name": "bigstack",
        "rows": [row],
        "machine": machine(),
        "targets": {
            "peak_rss_above_window_mib": 2048,
            "heartbeat_max_gap_ms": 100,
            "autosave_s_per_stroke_max": 1.0,
        },
        "note": (
            f"{row['stack']} ({row['stack_gib']:.1f} GiB) uncompressed TIFF opened lazily by the "
            "plugin's reader in a shown napari window under Xvfb with the Annotate dock; labels in "
            f"an on-disk zarr store; {row['strokes']} strokes of {DABS} dabs ({BRUSH} px brush), "
            "an autosave tick after each (1 s interval), an 11th stroke written by the close, then "
            "a new viewer restores the store. RSS above the window's own: VmHWM (reset when the "
            "stack is shown) minus the RSS then; anon: RssAnon sampled every 20 ms. Heartbeat: "
            "10 ms QTimer while painting and autosaving; creating the layer and slice changes "
            "(napari adding a layer, drawing a new slice) timed apart. A shared 2-core machine: other work skews times."
        ),
    }


def _arg(argv: list[str], flag: str, default: str | None) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else default


if __name__ == "__main__":
    report(
        run(
            quick="--quick" in sys.argv,
            gib=float(_arg(sys.argv, "--gib", "20")),
            folder=_arg(sys.argv, "--folder", None),
            edge=int(_arg(sys.argv, "--edge", str(EDGE))),
        )
    )
