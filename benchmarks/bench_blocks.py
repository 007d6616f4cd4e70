"""Peak memory of block-wise prediction: huge slices (16k, 32k px per side), 1 or more of them.

Each case runs in a fresh process that reports VmHWM and the peaks of RssAnon (its own memory)
and RssFile (file pages mapped in), sampled every 5 ms; the input is an on-disk zarr array
written chunk row by chunk row (never whole) by another process beforehand, so writing it is
not in the peaks. A small fast network (its output bias set so that both classes occur: the
results compared are not constant): memory is set by the block size (docs/SCALE.md), not by
the depth. ``--counts 1,4`` measures the same slice size with 1 and 4 slices (memory must not
grow with the count); ``--workers N`` runs the local prediction, then predict_dask on N local
worker processes limited to ``--memory-limit`` each, and compares the two results.

    python -m benchmarks.bench_blocks [--quick]                       # results/blocks.json
    python -m benchmarks.bench_blocks --size 16384 --counts 1,4       # results/blocks_counts.json
    python -m benchmarks.bench_blocks --size 50000 --workers 2 --memory-limit 4GB
                                                                      # results/blocks_dask.json

Inputs and outputs go to ``$NAPARI_UNET_BENCH_TMP`` (default: a folder in the temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks._common import report

WORK = Path(
    os.environ.get("NAPARI_UNET_BENCH_TMP", Path(tempfile.gettempdir()) / "napari_unet_blocks")
)
#: the network: small and fast; its activations (one tile) are small next to the blocks
NET = {"depth": 1, "base_channels": 1, "padding": "valid"}

_PREPARE = textwrap.dedent(
    """
    import sys
    import numpy as np, zarr

    size, n_z, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    try:
        zarr.open_array(path, mode="r")
    except Exception:
        tmp = path + ".part"
        src = zarr.open_array(tmp, mode="w", shape=(n_z, size, size), chunks=(1, 1024, 1024),
                              dtype="u1")
        x = np.arange(size, dtype=np.uint32)
        for z in range(n_z):
            for y0 in range(0, size, 1024):
                y = np.arange(y0, min(y0 + 1024, size), dtype=np.uint32)[:, None]
                v = np.multiply(y, x)  # (y * 7 + x * 13 + (y * x >> 5)) * (z + 3) % 251, in place
                v >>= 5
                v += y * 7
                v += x * 13
                v *= z + 3
                v %= 251
                src[z, y0 : y0 + len(y)] = v.astype(np.uint8)
        import os
        os.replace(tmp, path)
    """
)

_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import numpy as np, torch, zarr
    from napari_unet.model import UNet
    from napari_unet.tiling import predict_dask, predict_tiled

    def status():
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    size, n_z, workers, limit, src_path, work, net_kw = sys.argv[1:8]
    size, n_z, workers = int(size), int(n_z), int(workers)
    torch.manual_seed(0)
    net = UNet(**json.loads(net_kw)).eval()
    shape = (n_z, size, size)
    src = zarr.open_array(src_path, mode="r")
    norm = {"mean": 125.0, "std": 72.0}
    with torch.no_grad():  # balance the classes on this input: a varied result to compare
        x = (torch.from_numpy(src[0, :256, :256].astype("float32")) - 125.0) / 72.0
        logits = net(x[None, None])[0]
        net.head.bias[1] -= float((logits[1] - logits[0]).median())
        del x, logits
    try:  # VmHWM from here on (Linux: "5" resets the peak to the current RSS)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    out_path = f"{work}/out_{workers}w_{n_z}x{size}.zarr"
    out = zarr.open_array(out_path, mode="w", shape=shape, chunks=(1, 1024, 1024), dtype="u1")
    load = os.getloadavg()[0]
    base = status()
    peak = dict(base)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for k, v in status().items():
                peak[k] = max(peak[k], v)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    if workers:
        import dask.array as da
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=limit,
                          processes=True, dashboard_address=":0") as cluster, Client(cluster) as c:
            t1 = time.perf_counter()
            predict_dask(net, da.from_zarr(src_path), out=out, normalization=norm,
                         device="cpu")
            predict_s = time.perf_counter() - t1
            per_worker = list(c.run(status).values())
    else:
        predict_tiled(net, src, out=out, normalization=norm, device="cpu")
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    row = {"size": size, "slices": n_z, "workers": workers, "seconds": seconds,
           "mpx_per_s": n_z * size * size / seconds / 1e6,
           "vmhwm_mib": peak["VmHWM"] / 2**20, "rss_anon_peak_mib": peak["RssAnon"] / 2**20,
           "rss_file_peak_mib": peak["RssFile"] / 2**20,
           "rss_anon_start_mib": base["RssAnon"] / 2**20,
           "torch_threads": torch.get_num_threads(), "loadavg_1min_start": load,
           "class2_fraction_rows_0_2048": float(np.mean(out[0, :2048] == 2)),
           "vmhwm_reset_before_predict": hwm_reset}
    if workers:  # each worker's own peaks, and the local result read back block by block
        row["memory_limit"] = limit
        row["predict_s"] = predict_s  # without starting and closing the cluster
        row["worker_vmhwm_mib"] = [w["VmHWM"] / 2**20 for w in per_worker]
        row["worker_rss_anon_end_mib"] = [w["RssAnon"] / 2**20 for w in per_worker]
        ref_path = f"{work}/out_0w_{n_z}x{size}.zarr"
        try:
            ref = zarr.open_array(ref_path, mode="r")
            equal = all(np.array_equal(ref[z, y:y + 2048], out[z, y:y + 2048])
                        for z in range(n_z) for y in range(0, size, 2048))
            row["equal_to_local"] = bool(equal)
        except Exception as exc:
            row["equal_to_local"] = f"no local result ({type(exc).__name__})"
    print("RESULT " + json.dumps(row))
    """
)


def _input(size: int, n_z: int) -> Path:
    """The on-disk input of ``n_z`` slices of ``size``^2, written (once) by another process."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"in_{n_z}x{size}.zarr"
    cmd = [sys.executable, "-c", _PREPARE, str(size), str(n_z), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"writing the input {path} failed: {proc.stderr[-2000:]}")
    return path


def measure(size: int, n_z: int = 1, workers: int = 0, limit: str = "4GB") -> dict[str, Any]:
    src = _input(size, n_z)
    cmd = [sys.executable, "-c", _CHILD, str(size), str(n_z), str(workers), limit, str(src)]
    proc = subprocess.run(
        [*cmd, str(WORK), json.dumps(NET)], capture_output=True, text=True, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"size {size} failed: {proc.stderr[-2000:]}")


def _note(what: str) -> str:
    return (
        f"{what}: uint8 zarr -> zarr (1024^2 chunks), default block, network {NET}, CPU float32; "
        f"the CPUs ({os.cpu_count()}) may be shared with other work (see loadavg_1min_start)"
    )


def growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    """How much the peaks of the largest count exceed those of the smallest (MiB)."""
    lo, hi = min(rows, key=lambda r: r["slices"]), max(rows, key=lambda r: r["slices"])
    keys = ("vmhwm_mib", "rss_anon_peak_mib", "rss_file_peak_mib")
    return {f"{k}_growth": hi[k] - lo[k] for k in keys} | {"slices": [lo["slices"], hi["slices"]]}


def run(quick: bool = False) -> dict[str, Any]:
    """Slice sizes and slice counts (``(size, count)`` cases), each in a fresh process."""
    if quick:
        cases = [(2048, 1), (4096, 1), (4096, 3)]
    else:
        cases = [(8192, 1), (8192, 4), (16384, 1), (16384, 4), (32768, 1)]
    rows = [measure(size, n_z) for size, n_z in cases]
    return {"name": "blocks", "rows": rows, "note": _note("predict_tiled"), "quick": quick}


def run_counts(size: int, counts: list[int]) -> dict[str, Any]:
    rows = [measure(size, n_z) for n_z in counts]
    note = _note(f"predict_tiled, {size}^2 slices, {counts} of them")
    return {"name": "blocks_counts", "rows": rows, "growth": growth(rows), "note": note}


def run_dask(size: int, n_z: int, workers: int, limit: str) -> dict[str, Any]:
    """The local prediction, then ``workers`` local dask workers of ``limit`` each (compared)."""
    rows = [measure(size, n_z), measure(size, n_z, workers, limit)]
    note = _note(f"predict_tiled, then predict_dask on {workers} workers x {limit}")
    return {"name": "blocks_dask", "rows": rows, "note": note}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int)
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--counts", help="slice counts to compare, e.g. 1,4 (with --size)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--name", help="results/<name>.json instead of the mode's default")
    args = parser.parse_args()
    if args.size is None:
        result = run(quick=args.quick)
    elif args.counts:
        result = run_counts(args.size, [int(c) for c in args.counts.split(",")])
    elif args.workers:
        result = run_dask(args.size, args.slices, args.workers, args.memory_limit)
    else:
        print(json.dumps(measure(args.size, args.slices)))
        sys.exit(0)
    if args.name:
        result["name"] = args.name
    report(result)
