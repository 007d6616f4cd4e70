"""Shared helpers for the benchmark scripts: timing, tables, JSON results.

Every ``bench_*.py`` module exposes ``run(quick: bool = False) -> dict`` and
can be run on its own (``python benchmarks/bench_x.py [--quick]``).  A result
dict has a ``name``, a ``machine`` description and ``rows`` (a list of flat
dicts), plus anything else worth keeping; ``run_all.py`` gathers them.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: ``../shared/data/isbi2012`` beside the checkout, or ``$NAPARI_UNET_ISBI_DIR``
ISBI_DIR = Path(
    os.environ.get("NAPARI_UNET_ISBI_DIR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012"
)


def machine() -> dict[str, Any]:
    """Describe the machine the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:  # the CPU's model name (Linux)
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        from napari_unet.devices import cpu_has_native_bf16

        info["cpu_native_bf16"] = cpu_has_native_bf16()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def timeit(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` + ``repeat`` times; return median and spread in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    q1 = times[len(times) // 4]
    q3 = times[(3 * len(times)) // 4]
    return {
        "median_s": statistics.median(times),
        "min_s": times[0],
        "max_s": times[-1],
        "iqr_s": q3 - q1,
        "repeat": repeat,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def current_rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover
        return peak_rss_mib()


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (union of keys, in first-seen order)."""
    if not rows:
        return "(no rows)"
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def save_result(result: dict[str, Any]) -> Path:
    """Write ``result`` to ``benchmarks/results/<name>.json`` and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result.setdefault("machine", machine())
    path = RESULTS_DIR / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    return path


def report(result: dict[str, Any]) -> None:
    """Print the result's table and save its JSON."""
    print(f"## {result['name']}")
    if result.get("note"):
        print(result["note"])
    print(format_table(result.get("rows", [])))
    print(f"(saved {save_result(result)})")


def isbi_available() -> bool:
    return (ISBI_DIR / "train-volume.tif").exists() and (ISBI_DIR / "train-labels.tif").exists()
