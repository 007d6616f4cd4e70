"""Peak memory of block-wise prediction: one huge slice (16k, 32k px per side) from zarr to zarr.

Each size runs in a fresh process that reports VmHWM and the peaks of RssAnon (its own memory)
and RssFile (file pages mapped in), sampled every 5 ms; the input is an on-disk zarr array
written chunk row by chunk row (never whole). A small fast network: memory is set by the block
size (docs/SCALE.md), not by the depth. ``--workers N`` runs predict_dask on N local worker
processes limited to ``--memory-limit`` each and compares with the local result.

    python -m benchmarks.bench_blocks [--quick]
    python -m benchmarks.bench_blocks --size 50000 --workers 2 --memory-limit 4GB
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks._common import report

WORK = Path(os.environ.get("NAPARI_UNET_BENCH_TMP", "/tmp/helperG/bench"))
#: the network: small and fast; its activations (one tile) are small next to the blocks
NET = {"depth": 1, "base_channels": 1, "padding": "valid"}

_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
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

    size, n_z, workers, limit, work, net_kw = sys.argv[1:7]
    size, n_z, workers = int(size), int(n_z), int(workers)
    torch.manual_seed(0)
    net = UNet(**json.loads(net_kw)).eval()
    shape = (n_z, size, size)
    src_path = f"{work}/in_{n_z}x{size}.zarr"
    try:
        src = zarr.open_array(src_path, mode="r")
    except Exception:
        src = zarr.open_array(src_path, mode="w", shape=shape, chunks=(1, 1024, 1024), dtype="u1")
        x = np.arange(size, dtype=np.uint32)
        for z in range(n_z):
            for y0 in range(0, size, 1024):
                y = np.arange(y0, min(y0 + 1024, size), dtype=np.uint32)[:, None]
                src[z, y0 : y0 + len(y)] = ((y * 7 + x * 13 + (y * x >> 5)) * (z + 3) % 251)
        src = zarr.open_array(src_path, mode="r")
    norm = {"mean": 125.0, "std": 72.0}
    out_path = f"{work}/out_{workers}w_{n_z}x{size}.zarr"
    out = zarr.open_array(out_path, mode="w", shape=shape, chunks=(1, 1024, 1024), dtype="u1")
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
            predict_dask(net, da.from_zarr(src_path), out=out, normalization=norm,
                         device="cpu")
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
           "rss_anon_start_mib": base["RssAnon"] / 2**20}
    if workers:  # each worker's own peaks, and the local result read back block by block
        row["worker_vmhwm_mib"] = [w["VmHWM"] / 2**20 for w in per_worker]
        row["worker_rss_anon_end_mib"] = [w["RssAnon"] / 2**20 for w in per_worker]
        ref_path = f"{work}/out_0w_{n_z}x{size}.zarr"
        try:
            ref = zarr.open_array(ref_path, mode="r")
            equal = all(np.array_equal(ref[z, y:y + 4096], out[z, y:y + 4096])
                        for z in range(n_z) for y in range(0, size, 4096))
            row["equal_to_local"] = bool(equal)
        except Exception as exc:
            row["equal_to_local"] = f"no local result ({type(exc).__name__})"
    print("RESULT " + json.dumps(row))
    """
)


def measure(size: int, n_z: int = 1, workers: int = 0, limit: str = "4GB") -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", _CHILD, str(size), str(n_z), str(workers), limit, str(WORK)]
    proc = subprocess.run([*cmd, json.dumps(NET)], capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"size {size} failed: {proc.stderr[-2000:]}")


def run(quick: bool = False) -> dict[str, Any]:
    cases = [(2048, 1), (4096, 1), (4096, 3)] if quick else [(4096, 1), (16384, 1), (32768, 1)]
    rows = [measure(size, n_z) for size, n_z in cases]
    note = (
        f"predict_tiled zarr -> zarr (uint8, 1024^2 chunks), default block, network {NET}, "
        "CPU float32; the CPUs were shared with other work"
    )
    return {"name": "blocks", "rows": rows, "note": note, "quick": quick}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int)
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--memory-limit", default="4GB")
    args = parser.parse_args()
    if args.size is None:
        report(run(quick=args.quick))
    else:
        print(json.dumps(measure(args.size, args.slices, args.workers, args.memory_limit)))
