"""The network as prediction runs it: an eval-mode copy with batch norm folded, channels_last.

Copies are cached while the weights stay the same; the caller's model is never modified.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["CHANNELS_LAST_DEVICES", "inference_model", "prepare_for_inference"]

#: Devices where the network runs in ``channels_last`` (NHWC) memory format
#: (faster cuDNN and oneDNN convolutions).
CHANNELS_LAST_DEVICES = ("cpu", "cuda")

#: Attribute set on networks prepared by :func:`prepare_for_inference`.
_READY = "_napari_unet_inference_device"

_PREPARED: OrderedDict[tuple[int, str], tuple[Any, tuple[Any, ...], nn.Module]] = OrderedDict()
_PREPARED_LOCK = threading.Lock()
_PREPARED_SIZE = 2


def _fuse_batchnorm(net: nn.Module) -> None:
    """Fold every eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` into the conv.

    Works on ``nn.Sequential`` containers (the UNet's double-conv blocks);
    the folded norm becomes an ``Identity``.  Saves a full pass over every
    feature map; the result changes only by rounding.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if (
                type(conv) is nn.Conv2d
                and type(norm) is nn.BatchNorm2d
                and norm.track_running_stats
                and norm.running_mean is not None
                and norm.running_var is not None
            ):
                module[i] = fuse_conv_bn_eval(conv.eval(), norm.eval())
                module[i + 1] = nn.Identity()


def prepare_for_inference(net: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, batch norm folded, on ``device``, channels_last where it pays (in place)."""
    net.eval()
    _fuse_batchnorm(net)
    if device.type in CHANNELS_LAST_DEVICES:
        net = net.to(device=device, memory_format=torch.channels_last)
    else:
        net = net.to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    setattr(net, _READY, str(device))
    return net


def _weights_signature(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple(
        (t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device))
        for t in itertools.chain(model.parameters(), model.buffers())
    )


@contextlib.contextmanager
def inference_model(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The network to run: a prepared copy of ``model`` (see :func:`prepare_for_inference`).

    The copy is cached (two entries) while the model's weights stay the same
    (same tensors, same in-place version counters), so predicting a stack
    slice by slice does not copy the network every time; training steps change
    the counters and invalidate it.  A network already prepared for the same
    device (the per-worker cache of ``predict_dask``) is used as it is.
    """
    if getattr(model, _READY, None) == str(device):
        yield model
        return
    key = (id(model), str(device))
    signature = _weights_signature(model)
    with _PREPARED_LOCK:
        entry = _PREPARED.get(key)
        if entry is not None and entry[0]() is model and entry[1] == signature:
            _PREPARED.move_to_end(key)
            net = entry[2]
        else:
            net = prepare_for_inference(copy.deepcopy(model), device)
            # the entry goes when the model does (no lock: called by the GC)
            ref = weakref.ref(model, lambda _, key=key: _PREPARED.pop(key, None))
            _PREPARED[key] = (ref, signature, net)
            while len(_PREPARED) > _PREPARED_SIZE:
                _PREPARED.popitem(last=False)
    yield net
