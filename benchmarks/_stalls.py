"""What the GUI thread was doing when the heartbeat stalled: a sampling profiler for the benchmarks.

A daemon thread watches the last heartbeat tick; while the GUI thread has not ticked for
``threshold_ms`` it samples that thread's Python stack (``sys._current_frames``) every few ms. The
report groups the samples by the innermost frames of our code and napari's, so a stall can be traced to
a callback (a layer refresh, a slot) or, when only the event loop's own frame is seen, to Qt's C++
work (painting, compositing) that Python cannot see into.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

#: frames from these packages are the ones a stall is attributed to (innermost first)
_OURS = ("napari_unet", "napari", "vispy", "superqt", "magicgui", "numpy", "dask", "zarr", "torch")


def _where(frame: Any, depth: int = 4) -> str:
    """The innermost ``depth`` frames of interest, innermost first, as ``module:function:line``."""
    out: list[str] = []
    for fs in reversed(traceback.extract_stack(frame)):
        path = fs.filename.replace("\\", "/")
        pkg = next((p for p in _OURS if f"/{p}/" in path), None)
        if pkg is None and "benchmarks/" not in path:
            continue
        short = path.rsplit("/site-packages/", 1)[-1].rsplit("/src/", 1)[-1]
        out.append(f"{short}:{fs.name}:{fs.lineno}")
        if len(out) >= depth:
            break
    return " < ".join(out) or "(no Python frame of interest: Qt's C++ work)"


class StallSampler:
    """Sample the GUI thread's stack while ``last_tick()`` is older than ``threshold_ms``."""

    def __init__(
        self, last_tick: Callable[[], float], threshold_ms: float = 50.0, every_ms: float = 5.0
    ) -> None:
        self._last_tick = last_tick
        self._threshold = threshold_ms / 1000.0
        self._every = every_ms / 1000.0
        self._gui = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: Counter[str] = Counter()

    def start(self) -> None:
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            if time.perf_counter() - self._last_tick() < self._threshold:
                continue
            frame = sys._current_frames().get(self._gui)
            if frame is not None:
                self.samples[_where(frame)] += 1

    def stop(self, top: int = 6) -> list[dict[str, Any]]:
        """The ``top`` places the GUI thread was stalled in, with the ms sampled there."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        ms = 1000.0 * self._every
        return [
            {"where": where, "stalled_ms": round(n * ms)}
            for where, n in self.samples.most_common(top)
        ]
