"""The training process itself: it lowers its priority, warms torch up, then trains one run.

It reads the image from the parent block by block and keeps the labels slices the parent sends.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from .. import events as ev
from .messages import (
    ChildFailed,
    ChildWarm,
    LabelEdits,
    RegionPreview,
    StartRun,
    StopRun,
    TrainerReady,
    ViewChange,
    Weights,
    picklable,
)

#: the child sends its weights at least this often (what a terminated run keeps)
SNAPSHOT_EVERY_S = 15.0
_CACHED_SLICES = 8


class _RemoteImage:
    """The parent's image, read block by block through a pipe; whole slices are cached."""

    def __init__(self, shape: tuple[int, ...], dtype: str, conn: Connection) -> None:
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self._conn = conn
        self._lock = threading.Lock()
        self._cache: dict[int, np.ndarray] = {}

    def __getitem__(self, key: Any) -> np.ndarray:
        z = int(key) if isinstance(key, int | np.integer) else None
        if z is not None and z in self._cache:
            return self._cache[z]
        with self._lock:
            self._conn.send(key)
            ok, value = self._conn.recv()
        if not ok:
            raise value
        if z is not None:
            if len(self._cache) >= _CACHED_SLICES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[z] = value
        return value


class _SliceStore:
    """The labels as the parent sent them: its non-empty slices, zeros elsewhere."""

    def __init__(self, shape: tuple[int, ...], dtype: str, slices: dict[int, np.ndarray]) -> None:
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self._slices = dict(slices)
        self._zero = np.zeros(self.shape[-2:], self.dtype)
        self._zero.flags.writeable = False

    def __getitem__(self, key: Any) -> np.ndarray:
        if key is Ellipsis and self.ndim == 2:
            key = 0
        if not isinstance(key, int | np.integer):
            raise TypeError(f"labels are read slice by slice, not with {key!r}")
        return self._slices.get(int(key), self._zero)

    def update(self, slices: dict[int, np.ndarray | None]) -> None:
        for z, arr in slices.items():
            if arr is None:
                self._slices.pop(z, None)
            else:
                self._slices[z] = arr


def child_main(commands: Connection, events: Connection, reads: Connection, nice: int) -> None:
    """The child: lower its priority, import torch, wait for a start, train, report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's
    if nice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(nice)
    _exit_with_parent()
    try:
        _warm_up()
        events.send(ChildWarm(os.getpid()))
        start = commands.recv()
        if isinstance(start, StartRun):
            _ChildRun(start, commands, events, reads).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away
    except BaseException as exc:  # reported to the parent, never a traceback on its terminal
        with contextlib.suppress(OSError):
            events.send(ChildFailed(picklable(exc)))
    # everything sent waits in the pipe; skip the interpreter's (torch's) slow teardown
    os._exit(0)


def _exit_with_parent() -> None:
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()


def _warm_up() -> None:
    """An optimiser step of the default recipe's network, so that the first real step is quick
    (torch's one-off imports and kernel choices happen here, while the user paints)."""
    import torch

    from ...devices import resolve_device, training_amp_dtype
    from ...model import UNet
    from ..config import TrainConfig

    cfg = TrainConfig()
    device = resolve_device("cpu")
    net = UNet.preset(cfg.model, n_classes=2).to(memory_format=torch.channels_last)
    x = torch.zeros((cfg.batch_size, 1, 128, 128)).to(memory_format=torch.channels_last)
    amp = training_amp_dtype(device, cfg.amp)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.0)
    with torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext():
        net(x).float().sum().backward()
    optimizer.step()


class _ChildRun:
    """One run in the child: the Trainer on the mirrored labels, its events sent back."""

    def __init__(
        self, start: StartRun, commands: Connection, events: Connection, reads: Connection
    ) -> None:
        self.start = start
        self.events = events
        self.image = _RemoteImage(*start.image, reads)
        self.labels = _SliceStore(*start.labels, start.slices)
        self.trainer: Any = None
        self._lock = threading.Lock()
        self._notified: set[int] = set()
        self._stop = False
        self._closed_pipe = False
        self._view = start.view
        self._sent_at = (-1, 0.0)  # (iteration, time) of the last weights sent
        threading.Thread(target=self._listen, args=(commands,), daemon=True).start()

    def _listen(self, commands: Connection) -> None:
        while True:
            try:
                msg = commands.recv()  # read to the end: a sender must never block on us
            except (EOFError, OSError):
                msg, self._closed_pipe = StopRun(), True
            with self._lock:
                if isinstance(msg, LabelEdits):
                    self.labels.update(msg.slices)
                    self._notified.update(msg.slices)
                elif isinstance(msg, ViewChange):
                    self._view = (msg.z, msg.region)
                elif isinstance(msg, StopRun):
                    self._stop = True
                if self.trainer is not None:
                    self._apply(self.trainer)
            if self._closed_pipe:
                return

    def _apply(self, trainer: Any) -> None:
        """Hand the trainer what the parent asked for (under the lock)."""
        if self._notified:
            trainer.notify_labels_changed(sorted(self._notified))
            self._notified.clear()
        if self._view is not None:
            z, region = self._view
            with contextlib.suppress(ValueError):  # not a slice of this stack: keep the last
                trainer.set_preview_slice(z)
                trainer.set_preview_region(region)
            self._view = None
        if self._stop:
            trainer.stop()

    def _build(self) -> Any:
        from ...checkpoint import load_checkpoint
        from ..trainer import Trainer

        s = self.start
        model, metadata = None, None
        if s.start.source == "checkpoint":
            model, metadata = load_checkpoint(s.start.checkpoint_file)
        elif s.weights is not None:
            model, metadata = s.weights.model(), dict(s.weights.metadata)
        config = s.config
        names, colors = s.classes
        if model is not None and len(names) == int(model.n_classes):
            config = replace(config, class_names=list(names), class_colors=list(colors))
        trainer = Trainer(self.image, self.labels, config, model=model, metadata=metadata)
        self.events.send(
            TrainerReady(
                source=s.start.source,
                iterations_before=int((metadata or {}).get("iterations") or 0),
                n_classes=trainer.n_classes,
                class_names=list(trainer.class_names),
                checkpoint_path=config.checkpoint_path,
            )
        )
        return trainer

    def _send_weights(self, trainer: Any, force: bool = False) -> None:
        it, at = self._sent_at
        now = time.perf_counter()
        if it == trainer.iterations_done or (not force and now - at < SNAPSHOT_EVERY_S):
            return
        self.events.send(Weights.of(trainer.model, trainer.metadata, trainer.iterations_done))
        self._sent_at = (trainer.iterations_done, now)

    def run(self) -> None:
        trainer = self._build()
        self._send_weights(trainer, force=True)
        with self._lock:
            self.trainer = trainer
            self._apply(trainer)
        for event in trainer.run():
            if isinstance(event, ev.Finished):
                self._send_weights(trainer, force=True)
            elif isinstance(event, ev.Preview):
                event = _crop(event, trainer.last_preview_region)
            self.events.send(event)
            if isinstance(event, ev.CheckpointSaved):
                self._send_weights(trainer, force=True)
            elif isinstance(event, ev.Iteration):
                self._send_weights(trainer)


def _crop(event: ev.Preview, region: tuple[int, int, int, int] | None) -> ev.Preview:
    """The preview of ``region`` only (what the parent shows), else ``event`` itself."""
    if region is None:
        return event
    y0, y1, x0, x1 = region
    return RegionPreview(
        iteration=event.iteration,
        slice_index=event.slice_index,
        labels=np.ascontiguousarray(event.labels[y0:y1, x0:x1]),
        probabilities=None,
        region=(y0, y1, x0, x1),
    )


# ----------------------------------------------------------------------------- parent side
