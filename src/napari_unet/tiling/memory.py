"""Default tile and batch sizes from the device's memory budget.

An estimate of a tile's activation memory, set against free CUDA memory or a CPU budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..devices import free_memory_bytes, resolve_device
from .geometry import check_model, plan_tiles, resolve_overlap, round_tile, tile_pair

__all__ = [
    "ACTIVATION_FACTOR",
    "BLOCK_MEMORY_BUDGET",
    "BLOCK_SIZES",
    "CPU_BATCH_PIXELS",
    "CPU_MAX_BATCH",
    "CPU_MEMORY_BUDGET",
    "CPU_TILE_SAME",
    "CPU_TILE_VALID",
    "CUDA_MAX_BATCH",
    "CUDA_MEMORY_FRACTION",
    "CUDA_TILES",
    "default_batch",
    "default_block_size",
    "default_tile_and_batch",
    "estimate_tile_bytes",
]

#: Default target input tile (pixels per side) on the CPU.
CPU_TILE_SAME = 512
CPU_TILE_VALID = 572
#: Largest default batch on the CPU / on CUDA.
CPU_MAX_BATCH = 4
#: On the CPU a batch holds about this many input pixels (batching big tiles
#: does not speed up the CPU, it only costs memory; small tiles are batched).
CPU_BATCH_PIXELS = 512 * 512
CUDA_MAX_BATCH = 32
#: Candidate target tiles on CUDA, largest first.
CUDA_TILES = (1024, 768, 512, 384, 256)
#: Multiplier from "sum over levels of channels x pixels" to peak activation memory.
ACTIVATION_FACTOR = 4.0
#: Fraction of the free CUDA memory the default tile/batch may use.
CUDA_MEMORY_FRACTION = 0.5
#: Memory budget for the activations on the CPU (also capped by MemAvailable / 4).
CPU_MEMORY_BUDGET = 2 << 30
#: Candidate YX block sizes (kept pixels per side), largest first: a slice is predicted block
#: by block, so memory is bounded by the block, not the slice (docs/SCALE.md).
BLOCK_SIZES = (4096, 2048, 1024, 512)
#: Memory the blocks in flight may take (read-ahead, accumulators, writes), beside the network's.
BLOCK_MEMORY_BUDGET = 512 << 20


def block_bytes_per_pixel(n_classes: int, probabilities: bool, tta: bool) -> int:
    """Bytes per block pixel of everything the engine holds for blocks at once.

    Two inputs (the one computed and the one read ahead), each as the read block, its float32
    copy and the gathered tile input (4 + 4 + 4 bytes, halo aside); labels for the block and two
    finished blocks waiting to be written (3 x 2 bytes); with probabilities or TTA the float32
    accumulator of the block and of the two written ones (3 x 4 C) and, for TTA, one frame buffer (4 C).
    """
    total = 2 * 12 + 3 * 2
    if probabilities or tta:
        total += 3 * 4 * n_classes + (4 * n_classes if tta else 0)
    return total


def default_block_size(n_classes: int, probabilities: bool = False, tta: bool = False) -> int:
    """The largest of :data:`BLOCK_SIZES` whose blocks fit in :data:`BLOCK_MEMORY_BUDGET`."""
    per_pixel = block_bytes_per_pixel(n_classes, probabilities, tta)
    for size in BLOCK_SIZES:
        if size * size * per_pixel <= BLOCK_MEMORY_BUDGET:
            return size
    return BLOCK_SIZES[-1]


def estimate_tile_bytes(
    model: nn.Module, tile: int | Sequence[int], bytes_per_value: int = 4
) -> int:
    """Rough peak activation memory of one input tile in a forward pass.

    ``sum over levels l of channels_l * pixels_l * bytes * ACTIVATION_FACTOR``
    where level ``l`` has ``base_channels * 2**l`` channels and
    ``tile_pixels / 4**l`` pixels.  The factor covers the two convolution
    outputs, the kept skip connection, the up-convolution and the
    concatenation alive at the same time.
    """
    ty, tx = tile_pair(tile, "tile")
    base = int(getattr(model, "base_channels", 64))
    total = 0.0
    for level in range(int(model.depth)):
        total += base * 2**level * (ty / 2**level) * (tx / 2**level)
    total += (1 + int(model.n_classes)) * ty * tx  # input and logits
    return int(total * bytes_per_value * ACTIVATION_FACTOR)


def _cpu_budget() -> int:
    budget = CPU_MEMORY_BUDGET
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    budget = min(budget, int(line.split()[1]) * 1024 // 4)
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    return max(budget, 64 << 20)


def _amp_bytes(device: torch.device, amp: bool) -> int:
    return 2 if (amp and device.type == "cuda") else 4


def _candidate_tiles(model: nn.Module, device: torch.device, overlap: int) -> list[int]:
    """Possible input tiles to try, largest first."""
    if device.type == "cuda":
        return [round_tile(model, t, overlap) for t in CUDA_TILES]
    candidates = []
    t = CPU_TILE_VALID if model.padding == "valid" else CPU_TILE_SAME
    while t >= 64:
        candidates.append(round_tile(model, t, overlap))
        t //= 2
    return candidates


def default_tile_and_batch(
    model: nn.Module,
    device: torch.device | str,
    shape: Sequence[int] | None = None,
    amp: bool = True,
    overlap: int | None = None,
) -> tuple[int, int]:
    """Default ``(tile_size, batch_size)`` for ``model`` on ``device``.

    CUDA: the largest tile of :data:`CUDA_TILES` whose estimated activation
    memory (:func:`estimate_tile_bytes`, 2 bytes per value under autocast)
    fits in half the free memory, and as many tiles per batch as fit
    (at most :data:`CUDA_MAX_BATCH`).  CPU/MPS: :data:`CPU_TILE_SAME` or
    :data:`CPU_TILE_VALID`, halved while one tile exceeds the CPU memory
    budget, and a batch of about :data:`CPU_BATCH_PIXELS` input pixels (1 to
    :data:`CPU_MAX_BATCH` tiles) within the budget.  When ``shape``
    (the slice's height, width) is given the batch is computed for the
    balanced tile actually used for that slice.
    """
    check_model(model)
    dev = resolve_device(device)
    ov = resolve_overlap(model, overlap)
    nbytes = _amp_bytes(dev, amp)
    if dev.type == "cuda":
        budget = int((free_memory_bytes(dev) or 0) * CUDA_MEMORY_FRACTION)
    else:
        budget = _cpu_budget()
    candidates = _candidate_tiles(model, dev, ov)
    tile = candidates[-1]
    for cand in candidates:
        if estimate_tile_bytes(model, cand, nbytes) <= budget:
            tile = cand
            break
    actual: tuple[int, int] = (tile, tile)
    if shape is not None:
        actual = plan_tiles(model, shape, tile, overlap=overlap).tile
    return tile, default_batch(model, dev, actual, amp)


def default_batch(model: nn.Module, device: torch.device, tile: tuple[int, int], amp: bool) -> int:
    """Tiles per batch for input tiles of size ``tile`` (see :func:`default_tile_and_batch`)."""
    per_tile = max(1, estimate_tile_bytes(model, tile, _amp_bytes(device, amp)))
    if device.type == "cuda":
        budget = int((free_memory_bytes(device) or 0) * CUDA_MEMORY_FRACTION)
        return int(max(1, min(CUDA_MAX_BATCH, budget // per_tile)))
    by_pixels = CPU_BATCH_PIXELS // max(1, tile[0] * tile[1])
    return int(max(1, min(CPU_MAX_BATCH, by_pixels, _cpu_budget() // per_tile)))
