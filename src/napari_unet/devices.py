"""Device selection shared by training and prediction (no Qt, no napari)."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")

#: what a device raises when it runs out of memory (torch >= 2.5 has the top-level name)
OOM_ERRORS: tuple[type[BaseException], ...] = (
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``.

    ``"auto"`` (or ``None``) picks CUDA, then Apple MPS, then the CPU.  An
    explicit device that is not available raises a ``ValueError`` with a
    message a user can act on.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        name = "auto" if device is None else str(device).strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(
                f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}"
            ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but no CUDA GPU is available: use 'cpu' or 'auto'"
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                "device 'mps' requested but Apple MPS is not available: use 'cpu' or 'auto'"
            )
    return dev


def describe_device(device: torch.device) -> str:
    """A one-line human description, e.g. ``"cuda:0 (NVIDIA H100, 75.2 GiB free)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        free, total = torch.cuda.mem_get_info(index)
        return f"cuda:{index} ({name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles).

    On such CPUs oneDNN runs bfloat16 convolutions about twice as fast as
    float32; elsewhere bfloat16 is emulated and slower than float32.  Uses
    PyTorch's own CPU feature probes (private helpers of ``torch.cpu``); when
    they are missing the answer is ``False``.
    """
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and bool(fn()):
                return True
        except Exception:  # a probe that fails to run means "unknown": stay in float32
            continue
    return False


def training_amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for training on ``device``, or ``None`` for float32.

    CUDA: bfloat16 where supported, else float16 (with a gradient scaler).
    CPU: bfloat16 when the CPU has native bfloat16 (:func:`cpu_has_native_bf16`),
    else ``None``.  MPS and ``enabled=False``: ``None``.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def free_memory_bytes(device: torch.device) -> int | None:
    """Free accelerator memory in bytes, or ``None`` on the CPU/MPS."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None
