"""What crosses between the front end and the training process: weights, starts, results, commands.

Everything here pickles; numpy arrays carry the weights, so no tensor is shared between processes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import events as ev


class TrainingProcessError(RuntimeError):
    """The training process ended without finishing (killed, crashed, or could not start)."""


# ----------------------------------------------------------------------------- what crosses


@dataclass
class Weights:
    """A U-Net's architecture, weights (numpy) and checkpoint metadata, to cross processes."""

    config: dict[str, Any]
    state: dict[str, np.ndarray]
    metadata: dict[str, Any]
    #: optimiser steps of this run behind these weights
    iteration: int = 0

    @classmethod
    def of(cls, model: Any, metadata: dict[str, Any], iteration: int = 0) -> Weights:
        import torch

        state = {}
        for name, t in model.state_dict().items():
            t = t.detach().to("cpu")
            state[name] = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()
        return cls(dict(model.config), state, copy.deepcopy(dict(metadata)), int(iteration))

    def model(self) -> Any:
        """The UNet with these weights, in eval mode on the CPU."""
        import torch

        from ...model import UNet

        net = UNet(**self.config)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
        return net.eval()


@dataclass
class ModelStart:
    """What training starts from: ``source`` is a preset name, "memory" or "checkpoint"."""

    source: str
    model: Any = None
    metadata: dict[str, Any] | None = None
    checkpoint_file: str | None = None


@dataclass
class TrainerReady:
    """Sent once the trainer is built (labels scanned, normalisation computed)."""

    source: str
    iterations_before: int
    n_classes: int
    class_names: list[str]
    checkpoint_path: str | None


@dataclass
class TrainResult:
    """Last value of a run: the trained model, on the CPU, owned by the caller."""

    model: Any
    metadata: dict[str, Any]
    checkpoint_path: str | None
    reason: str


@dataclass(frozen=True, eq=False)
class RegionPreview(ev.Preview):
    """A :class:`Preview` whose ``labels`` cover ``region`` ``(y0, y1, x0, x1)`` of the slice."""

    kind: ClassVar[str] = "preview"
    region: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class StartRun:
    config: Any
    start: ModelStart
    weights: Weights | None
    classes: tuple[list[str], list[str]]
    image: tuple[tuple[int, ...], str]
    labels: tuple[tuple[int, ...], str]
    slices: dict[int, np.ndarray]
    view: tuple[int, tuple[int, int, int, int] | None] | None


@dataclass
class LabelEdits:
    slices: dict[int, np.ndarray | None]


@dataclass
class ViewChange:
    z: int
    region: tuple[int, int, int, int] | None


class StopRun:
    pass


@dataclass
class ChildWarm:
    pid: int


@dataclass
class ChildFailed:
    error: BaseException


def picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return TrainingProcessError(f"{type(exc).__name__}: {exc}")
