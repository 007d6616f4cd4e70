"""Run every benchmark, each in a fresh subprocess, and write one summary.

Usage (from the repository root, with the ``bench`` extra installed:
``pip install -e .[bench]``)::

    python -m benchmarks.run_all                 # everything, full size
    python -m benchmarks.run_all --quick         # small/fast versions
    python -m benchmarks.run_all --only tiling,evaluation

Every ``benchmarks/bench_<name>.py`` module's ``run(quick)`` is called in its
own Python process (so peak memory, thread pools and CUDA state of one
benchmark never leak into the next; the peak RSS of each process is
recorded).  Known benchmarks that are not there yet are listed as missing.

Writes ``benchmarks/results/all.json`` (every result, plus status, wall time
and peak RSS per benchmark, and the machine) and
``benchmarks/results/SUMMARY.md`` (a human-readable overview and every
benchmark's table, with the spread of timings and ratios to the fastest row
where the rows hold ``median_s``).  Each benchmark's own JSON is also saved as
``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks import _common

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
#: the benchmarks the project plans, in report order (others found are appended)
KNOWN = (
    "weightmap", "elastic", "training", "tiling", "blocks", "evaluation", "recipe", "losses", "objects",
    "loop", "loop_window", "gui", "bigstack",
)  # fmt: skip


def discover() -> list[str]:
    """Names of the ``bench_*.py`` modules present (known order first)."""
    found = sorted(p.stem[len("bench_") :] for p in BENCH_DIR.glob("bench_*.py"))
    return [n for n in KNOWN if n in found] + [n for n in found if n not in KNOWN]


# --------------------------------------------------------------------------- child


def _child(name: str, quick: bool, out: Path) -> int:
    """Run one benchmark in this (fresh) process and dump its result as JSON."""
    import importlib

    module = importlib.import_module(f"benchmarks.bench_{name}")
    result = module.run(quick=quick)
    if not isinstance(result, dict):
        raise TypeError(f"bench_{name}.run() returned {type(result).__name__}, not a dict")
    result.setdefault("name", name)
    if "machine" not in result:
        result["machine"] = _common.machine()
    payload = {"result": result, "peak_rss_mib": _own_peak_rss_mib()}
    out.write_text(json.dumps(payload, indent=2, default=_json_default))
    return 0


def _own_peak_rss_mib() -> float | None:
    """Peak RSS of this process since its exec (VmHWM; ru_maxrss also counts the parent at fork)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    return str(value)


# --------------------------------------------------------------------------- parent


def run_one(name: str, quick: bool, timeout: float | None = None) -> dict[str, Any]:
    """Run ``bench_<name>`` in a subprocess; return a record with its result."""
    record: dict[str, Any] = {"name": name, "status": "ok"}
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.run_all", "--child", name, "--child-out", str(out)]
        if quick:
            cmd.append("--quick")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        output_lines: list[str] = []

        def pump() -> None:  # stream the child's output while it runs
            assert proc.stdout is not None
            for line in proc.stdout:
                print(f"  [{name}] {line}", end="", flush=True)
                output_lines.append(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        while True:  # os.wait4 (not proc.wait) to get the child's own peak RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
                timed_out = True
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=5)
        record["wall_s"] = round(time.perf_counter() - t0, 1)
        record["peak_rss_mib"] = round(
            usage.ru_maxrss / (1024.0 if sys.platform != "darwin" else 2**20), 1
        )
        if timed_out:
            record.update(status="timeout", error=f"killed after {timeout:g} s")
        elif proc.returncode != 0:
            tail = "".join(output_lines[-15:]).strip()
            record.update(
                status="failed", error=tail.splitlines()[-1] if tail else f"exit {proc.returncode}"
            )
            record["output_tail"] = tail
        else:
            payload = json.loads(out.read_text())
            result = payload["result"]
            if payload.get("peak_rss_mib") is not None:
                record["peak_rss_mib"] = payload["peak_rss_mib"]
            record["result"] = result
            if result.get("skipped"):
                record["status"] = "skipped"
            # like _common.save_result, without importing torch into this parent process
            # (its memory would count in the next children's ru_maxrss)
            _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            (_common.RESULTS_DIR / f"{result.get('name', name)}.json").write_text(
                json.dumps(result, indent=2, default=_json_default)
            )
    return record


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _spread_pairs(row: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(median column, IQR column, new spread column) pairs found in a row.

    Recognised: ``median_s`` + ``iqr_s`` and ``<x>_ms`` + ``<x>_iqr_ms`` (or ``_s``).
    """
    pairs = []
    if "median_s" in row and "iqr_s" in row:
        pairs.append(("median_s", "iqr_s", "spread_%"))
    for key in row:
        for unit in ("_ms", "_s"):
            suffix = f"_iqr{unit}"
            if key.endswith(suffix):
                base = key[: -len(suffix)] + unit
                if base in row and base != "median_s":
                    pairs.append((base, key, f"{key[: -len(suffix)]}_spread_%"))
    return pairs


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the spread (IQR / median, %) of every timing, and ``x_fastest`` for ``median_s``."""
    medians = [_num(r.get("median_s")) for r in rows]
    valid = [m for m in medians if m and m > 0]
    fastest = min(valid) if valid else None
    out = []
    for row, med in zip(rows, medians):
        row = dict(row)
        for base, iqr_key, new in _spread_pairs(row):
            value, iqr = _num(row.get(base)), _num(row.get(iqr_key))
            if value and value > 0 and iqr is not None and new not in row:
                row[new] = round(100.0 * iqr / value, 1)
        if fastest and med and len(valid) > 1 and "x_fastest" not in row:
            row["x_fastest"] = round(med / fastest, 2)
        out.append(row)
    return out


def summary_markdown(records: list[dict[str, Any]], quick: bool, machine: dict[str, Any]) -> str:
    when = datetime.datetime.now().isoformat(timespec="seconds")
    mach = ", ".join(f"{k}: {v}" for k, v in machine.items())
    lines = [
        "# Benchmark summary",
        "",
        f"Generated {when} by `python -m benchmarks.run_all{' --quick' if quick else ''}`.",
        "",
        f"Machine: {mach}.",
        "",
        "Each benchmark ran in a fresh Python process; peak RSS is that process's.",
        "Timing rows show the median, the spread (IQR / median) and the ratio to the",
        "fastest row of the same table where the benchmark reports `median_s`.",
        "",
        "| benchmark | status | wall (s) | peak RSS (MiB) | note |",
        "|---|---|---|---|---|",
    ]
    for rec in records:
        note = rec.get("error") or (rec.get("result") or {}).get("note") or rec.get("note") or ""
        note = str(note).replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {rec['name']} | {rec['status']} | {rec.get('wall_s', '-')} | "
            f"{rec.get('peak_rss_mib', '-')} | {note} |"
        )
    for rec in records:
        result = rec.get("result")
        if not result or not result.get("rows"):
            continue
        lines += ["", f"## {rec['name']}", ""]
        if result.get("note"):
            lines += [str(result["note"]), ""]
        lines.append(_common.format_table(_with_ratios(result["rows"])))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description="Run every benchmarks/bench_*.py in its own process; write results/all.json and SUMMARY.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the benchmarks' quick (small) versions"
    )
    parser.add_argument(
        "--only", metavar="NAMES", help="comma-separated benchmark names, e.g. tiling,evaluation"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="kill a benchmark after S seconds"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, Path(args.child_out))

    present = discover()
    if args.list:
        for name in (*KNOWN, *[n for n in present if n not in KNOWN]):
            print(f"{name:12s} {'present' if name in present else 'missing'}")
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in present and n not in KNOWN]
        if unknown:
            parser.error(
                f"unknown benchmark(s) {', '.join(unknown)}; present: {', '.join(present)}"
            )
    else:
        wanted = list(dict.fromkeys([*KNOWN, *present]))

    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name in wanted:
        if name not in present:
            print(f"== {name}: missing (benchmarks/bench_{name}.py not written yet)", flush=True)
            records.append(
                {"name": name, "status": "missing", "note": f"benchmarks/bench_{name}.py not found"}
            )
            continue
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        rec = run_one(name, args.quick, args.timeout)
        print(
            f"== {name}: {rec['status']} in {rec.get('wall_s', 0):.0f} s, peak RSS {rec.get('peak_rss_mib', 0):.0f} MiB",
            flush=True,
        )
        records.append(rec)

    machine = _common.machine()
    _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    all_path = _common.RESULTS_DIR / "all.json"
    payload = {
        "quick": args.quick,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "total_s": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "benchmarks": records,
    }
    all_path.write_text(json.dumps(payload, indent=2, default=_json_default))
    summary = _common.RESULTS_DIR / "SUMMARY.md"
    summary.write_text(summary_markdown(records, args.quick, machine))
    print(f"wrote {all_path} and {summary}")
    failed = [r["name"] for r in records if r["status"] in ("failed", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
