"""Tiled prediction: napari_unet.tiling.predict_tiled against MONAI's sliding window.

Both predict the class map of an EM stack (ISBI 2012 ``train-volume.tif``,
30 x 512 x 512, or a synthetic stand-in when it is not there; ``--quick``: 4
slices) with the same same-padded network (``UNet(padding="same", depth=4,
base_channels=16, norm="batch")``, eval mode, random weights) on the same
device (the CPU here), including normalisation and the argmax:

* ours: ``predict_tiled`` with its defaults (on the CPU one 512 px tile per
  slice, channels_last, batch norm folded) and with ``tile_size=256``
  (MONAI's ROI size: 9 tiles of 240 px per slice with the exact overlap);
* MONAI: ``monai.inferers.sliding_window_inference(roi_size=(256, 256),
  sw_batch_size=4, overlap=0.25, mode="gaussian")`` on batches of 4 slices,
  with the model as it is and converted to channels_last (to show how much
  of the difference is the memory format).

Timings are taken in one process, after a warm-up of every peer, in 3 rounds
with the peers alternating (paired under a drifting machine load);
throughput is the median.  Peak RSS is that of one run of each peer in a
fresh subprocess on up to 8 slices (``VmHWM``, the volume included).  The
seam check compares probabilities with a single whole-slice forward pass:
ours with 256 px tiles (several tiles per slice), and MONAI's gaussian
blend, everywhere and more than ``model.context`` pixels from the border.
With CUDA, the paper network (bf16 autocast) is also timed: Mpx/s, one
512 x 512 slice, and the fraction of the measured bf16 matmul TFLOP/s
reached, counting 2.0 MFLOP per output pixel (301 GFLOP per 572 -> 388 tile).

    python benchmarks/bench_tiling.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from benchmarks._common import ISBI_DIR, isbi_available, peak_rss_mib, report
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import ISBI_DIR, isbi_available, peak_rss_mib, report  # type: ignore[no-redef]

from napari_unet.model import UNet
from napari_unet.tiling import predict_tiled

FLOP_PER_OUTPUT_PIXEL = 2.0e6  # the paper network: 301 GFLOP per 572 -> 388 tile


def load_volume(n_slices: int) -> tuple[np.ndarray, str]:
    """``n_slices`` x 512 x 512 uint8 EM slices and a description of the source."""
    if isbi_available():
        import tifffile

        vol = tifffile.imread(ISBI_DIR / "train-volume.tif")[:n_slices]
        return np.ascontiguousarray(vol), f"ISBI 2012 train-volume.tif[:{n_slices}]"
    from napari_unet.sample_data import synthetic_em

    vol, _ = synthetic_em((n_slices, 512, 512), seed=0)
    return vol, "synthetic_em (ISBI data not found)"


def small_net() -> UNet:
    torch.manual_seed(0)
    return UNet(padding="same", depth=4, base_channels=16, norm="batch").eval()


def normalization(vol: np.ndarray) -> dict[str, float]:
    return {"mean": float(vol.mean()), "std": float(vol.std())}


def _labels(logits: torch.Tensor) -> torch.Tensor:
    """argmax + 1 over the channels as uint8 (running maximum: fast on the CPU)."""
    best = logits[:, 0]
    labels = torch.ones(best.shape, dtype=torch.uint8, device=logits.device)
    for c in range(1, logits.shape[1]):
        better = logits[:, c] > best
        best = torch.where(better, logits[:, c], best)
        labels.masked_fill_(better, c + 1)
    return labels


def monai_predict(
    model: torch.nn.Module,
    vol: np.ndarray,
    norm: dict[str, float],
    device: str = "cpu",
    amp: bool = False,
    return_probabilities: bool = False,
    slices_per_batch: int = 4,
    channels_last: bool = False,
) -> np.ndarray:
    """MONAI sliding-window inference, slices in batches of ``slices_per_batch``."""
    from monai.inferers import sliding_window_inference

    out = np.empty(vol.shape, np.uint8)
    probs = []
    with torch.inference_mode():
        for z0 in range(0, vol.shape[0], slices_per_batch):
            chunk = vol[z0 : z0 + slices_per_batch].astype(np.float32)
            chunk = (chunk - np.float32(norm["mean"])) / np.float32(norm["std"])
            x = torch.from_numpy(chunk[:, None]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device == "cuda"):
                logits = sliding_window_inference(
                    x,
                    roi_size=(256, 256),
                    sw_batch_size=4,
                    predictor=model,
                    overlap=0.25,
                    mode="gaussian",
                )
            logits = logits.float()
            out[z0 : z0 + len(chunk)] = _labels(logits).cpu().numpy()
            if return_probabilities:
                probs.append(torch.softmax(logits, 1).cpu().numpy())
    if return_probabilities:
        return np.concatenate(probs, axis=0).transpose(1, 0, 2, 3)
    return out


# --------------------------------------------------------------------------- workers
PEERS = {
    "ours": "predict_tiled (defaults: one 512 tile per slice)",
    "monai": "MONAI sliding_window (256, sw 4, overlap 0.25, gaussian)",
    "ours-256": "predict_tiled (tile_size=256)",
    "monai-cl": "MONAI sliding_window, channels_last model",
}


def cpu_peer(peer: str, vol: np.ndarray, norm: dict[str, float]) -> Any:
    """A zero-argument function predicting ``vol`` on the CPU the way ``peer`` does."""
    model = small_net()
    if peer.startswith("monai"):
        cl = peer == "monai-cl"
        if cl:
            model = model.to(memory_format=torch.channels_last)
        return lambda: monai_predict(model, vol, norm, channels_last=cl)
    tile = 256 if peer == "ours-256" else None
    return lambda: predict_tiled(model, vol, device="cpu", normalization=norm, tile_size=tile)


def _vm_hwm_mib() -> float:
    """Peak RSS of this process image.

    ``/proc/self/status`` VmHWM is reset by ``exec``, unlike ``ru_maxrss``,
    which a subprocess inherits from its (possibly large) parent on Linux.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return peak_rss_mib()


def _worker(peer: str, n_slices: int) -> dict[str, Any]:
    """One run in this (fresh) process: seconds and peak RSS (the volume included)."""
    vol, _ = load_volume(n_slices)
    norm = normalization(vol)
    if peer in PEERS:
        fn = cpu_peer(peer, vol, norm)
        t0 = time.perf_counter()
        fn()
        return {"seconds": time.perf_counter() - t0, "peak_rss_mib": _vm_hwm_mib()}
    if peer.startswith("cuda-"):
        return _cuda_worker(peer, vol, norm)
    raise ValueError(f"unknown peer {peer!r}")


def _matmul_tflops(n: int = 8192, repeat: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e12


def _cuda_worker(peer: str, vol: np.ndarray, norm: dict[str, float]) -> dict[str, Any]:
    def sync_time(fn: Any, repeat: int = 5) -> float:
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    if peer == "cuda-paper":
        torch.manual_seed(0)
        model = UNet.preset("paper").eval()
    else:
        model = small_net()
    model = model.cuda()  # as after training on the GPU
    if peer == "cuda-monai":
        net = model.to(memory_format=torch.channels_last)
        seconds = sync_time(
            lambda: monai_predict(net, vol, norm, device="cuda", amp=True, channels_last=True), 3
        )
        return {"seconds": seconds, "peak_rss_mib": _vm_hwm_mib()}
    seconds = sync_time(lambda: predict_tiled(model, vol, device="cuda", normalization=norm), 3)
    result: dict[str, Any] = {"seconds": seconds, "peak_rss_mib": _vm_hwm_mib()}
    if peer == "cuda-paper":
        result["one_slice_s"] = sync_time(
            lambda: predict_tiled(model, vol[0], device="cuda", normalization=norm), 10
        )
        result["matmul_bf16_tflops"] = _matmul_tflops()
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def _spawn(peer: str, n_slices: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, str(n_slices)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {peer} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


# --------------------------------------------------------------------------- seams
def seam_check(vol: np.ndarray, norm: dict[str, float]) -> dict[str, float]:
    """Max |p - p_whole| of ours (256 px tiles) and MONAI against one whole-slice forward."""
    model = small_net()
    sample = vol[:2]
    _, ours = predict_tiled(
        model, sample, device="cpu", normalization=norm, tile_size=256, return_probabilities=True
    )
    theirs = monai_predict(model, sample, norm, return_probabilities=True)
    x = (sample.astype(np.float32) - np.float32(norm["mean"])) / np.float32(norm["std"])
    with torch.inference_mode():
        whole = torch.softmax(model(torch.from_numpy(x[:, None])), 1).numpy().transpose(1, 0, 2, 3)
    m = model.context
    inner = (slice(None), slice(None), slice(m, -m), slice(m, -m))
    return {
        "ours_max_abs_diff": float(np.abs(ours - whole).max()),
        "ours_max_abs_diff_interior": float(np.abs(ours - whole)[inner].max()),
        "monai_max_abs_diff": float(np.abs(theirs - whole).max()),
        "monai_max_abs_diff_interior": float(np.abs(theirs - whole)[inner].max()),
    }


# --------------------------------------------------------------------------- run
def run(quick: bool = False) -> dict[str, Any]:
    n_slices = 4 if quick else 30
    vol, source = load_volume(n_slices)
    norm = normalization(vol)
    mpx = vol.size / 1e6

    rounds = 3
    peers = list(PEERS)
    rss_slices = min(n_slices, 8)
    rss = {peer: _spawn(peer, rss_slices)["peak_rss_mib"] for peer in peers}
    fns = {peer: cpu_peer(peer, vol, norm) for peer in peers}
    for peer in peers:  # warm-up on 4 slices: oneDNN primitives, allocator
        cpu_peer(peer, vol[:4], norm)()
    times: dict[str, list[float]] = {peer: [] for peer in peers}
    for _ in range(rounds):  # peers alternate: paired under a drifting machine load
        for peer in peers:
            t0 = time.perf_counter()
            fns[peer]()
            times[peer].append(time.perf_counter() - t0)

    rows: list[dict[str, Any]] = []
    for peer in peers:
        med = statistics.median(times[peer])
        ratios = [m / t for m, t in zip(times["monai"], times[peer])]
        rows.append(
            {
                "peer": PEERS[peer],
                "device": "cpu",
                "slices": n_slices,
                "median_s": med,
                "min_s": min(times[peer]),
                "max_s": max(times[peer]),
                "mpx_per_s": mpx / med,
                "ms_per_slice": 1e3 * med / n_slices,
                "speedup_vs_monai": statistics.median(times["monai"]) / med,
                "paired_speedup_median": statistics.median(ratios),
                "peak_rss_mib": rss[peer],
            }
        )
    seams = seam_check(vol, norm)

    cuda: dict[str, Any] = {}
    if torch.cuda.is_available():
        for peer in ("cuda-small", "cuda-monai", "cuda-paper"):
            cuda[peer] = _spawn(peer, n_slices)
        cuda_monai = cuda["cuda-monai"]["seconds"]
        for peer, name in (
            ("cuda-small", "predict_tiled small net (bf16)"),
            ("cuda-monai", "MONAI sliding_window small net (bf16)"),
            ("cuda-paper", "predict_tiled paper net (bf16)"),
        ):
            r = cuda[peer]
            row = {
                "peer": name,
                "device": "cuda",
                "slices": n_slices,
                "median_s": r["seconds"],
                "mpx_per_s": mpx / r["seconds"],
                "ms_per_slice": 1e3 * r["seconds"] / n_slices,
                "peak_rss_mib": r["peak_rss_mib"],
            }
            if peer != "cuda-paper":
                row["speedup_vs_monai"] = cuda_monai / r["seconds"]
            else:
                useful_tflops = mpx * 1e6 / r["seconds"] * FLOP_PER_OUTPUT_PIXEL / 1e12
                row["one_512_slice_ms"] = 1e3 * r["one_slice_s"]
                row["useful_tflops"] = useful_tflops
                row["matmul_bf16_tflops"] = r["matmul_bf16_tflops"]
                row["fraction_of_matmul"] = useful_tflops / r["matmul_bf16_tflops"]
            rows.append(row)

    note = (
        f"Data: {source}, {vol.shape}. Network: UNet(padding='same', depth=4, "
        f"base_channels=16, norm='batch'), eval, random weights; torch threads "
        f"{torch.get_num_threads()}. Timings: one process, after a warm-up of every "
        f"peer, {rounds} rounds with the peers alternating; median (and the median of the "
        f"per-round MONAI/peer ratios). Peak RSS: one run of each peer in a fresh "
        f"subprocess on {rss_slices} slices (VmHWM, the volume included). "
        f"Seam check (2 slices, probabilities vs one whole-slice forward pass): ours with "
        f"256 px tiles max |diff| {seams['ours_max_abs_diff']:.2e} "
        f"(interior {seams['ours_max_abs_diff_interior']:.2e}); MONAI gaussian blend "
        f"{seams['monai_max_abs_diff']:.2e} (interior {seams['monai_max_abs_diff_interior']:.2e})."
    )
    return {
        "name": "tiling",
        "rows": rows,
        "note": note,
        "seams": seams,
        "times": times,
        "cuda": cuda,
        "quick": quick,
    }


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        print("RESULT " + json.dumps(_worker(sys.argv[2], int(sys.argv[3]))))
    else:
        report(run(quick="--quick" in sys.argv))
