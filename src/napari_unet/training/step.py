"""One optimiser step on the training device: placement, mixed precision, memory format.

A step whose loss or gradient is not finite changes nothing (weights and batch-norm statistics);
when the device runs out of memory, the step is dropped and the memory freed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..augment import Augmentation
from ..devices import OOM_ERRORS, resolve_device, training_amp_dtype
from ..losses import combined_loss
from ..model import UNet
from .config import TrainConfig

__all__ = ["DeviceStep"]


class DeviceStep:
    """A model placed on its training device, and one optimiser step of it.

    The device, the autocast dtype (``amp``: ``None`` = float32) and the
    channels-last memory format (CUDA and the CPU) come from ``config``.
    """

    def __init__(self, model: UNet, config: TrainConfig) -> None:
        self.model = model
        self.loss_mode = config.loss
        self.grad_clip = config.grad_clip
        self.device = resolve_device(config.device)
        self.on_cuda = self.device.type == "cuda"
        self.channels_last = bool(config.channels_last and self.device.type in ("cuda", "cpu"))
        #: autocast dtype (None = float32), resolved once: the CPU probe is not free
        self.amp = training_amp_dtype(self.device, config.amp)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # batch-norm statistics move in the forward pass: restored when a step is skipped
        self._buffers = list(model.buffers())
        self._saved = [b.detach().clone() for b in self._buffers]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def grad_scaler(self) -> Any:
        """A gradient scaler for float16 mixed precision, else None."""
        if self.amp != torch.float16:
            return None
        amp_mod = getattr(torch, "amp", None)
        if amp_mod is not None and hasattr(amp_mod, "GradScaler"):
            return amp_mod.GradScaler("cuda")
        return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3

    def __call__(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        batch: tuple[np.ndarray, np.ndarray, np.ndarray | None],
        augmentation: Augmentation,
        generator: torch.Generator,
    ) -> tuple[float, bool]:
        """Augment ``batch`` (images, labels, weights or None) on the device and step.

        Returns the loss and whether the step was applied: ``False`` when the
        loss or the gradient norm is NaN/inf, and then nothing changed.
        """
        images, labels, weights = batch
        dev = self.device
        x = torch.from_numpy(images).to(dev)
        targets = [torch.from_numpy(labels).to(dev)[:, None]]
        if weights is not None:
            targets.append(torch.from_numpy(weights).to(dev)[:, None])
        augmented = augmentation(x, *targets, generator=generator)
        x, y = augmented[0], augmented[1][:, 0]
        wt = augmented[2][:, 0] if weights is not None else None
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for saved, buffer in zip(self._saved, self._buffers):
            saved.copy_(buffer)
        with self.autocast():
            logits = self.model(x)
        loss = combined_loss(logits.float(), y, wt, mode=self.loss_mode)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        value = float(loss.detach())
        norm = self._gradient_norm()
        # float16 with a scaler: inf gradients are the scaler's business (it skips the step)
        ok = math.isfinite(value) and (scaler is not None or bool(torch.isfinite(norm)))
        if not ok:
            optimizer.zero_grad(set_to_none=True)
            for saved, buffer in zip(self._saved, self._buffers):
                buffer.copy_(saved)
            if scaler is not None:
                scaler.update(scaler.get_scale() / 2)
            return value, False
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return value, True

    def _gradient_norm(self) -> torch.Tensor:
        """The global gradient norm, clipped to ``grad_clip`` when it is set."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        limit = self.grad_clip if self.grad_clip is not None else math.inf
        if not params:
            return torch.zeros(())
        return torch.nn.utils.clip_grad_norm_(params, limit)

    def out_of_memory(
        self, fn: Callable[..., Any], *args: Any, optimizer: torch.optim.Optimizer | None = None
    ) -> tuple[bool, Any]:
        """``(False, fn(*args))``, or ``(True, None)`` when the device ran out of memory.

        Then the exception is dropped (its traceback no longer pins tensors), the
        ``optimizer``'s gradients are freed and the CUDA cache emptied.
        """
        try:
            return False, fn(*args)
        except OOM_ERRORS:
            pass
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        if self.on_cuda:
            torch.cuda.empty_cache()
        return True, None
