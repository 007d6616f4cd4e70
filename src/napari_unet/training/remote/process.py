"""The front end's handle on a training process: spawn it warm, relay a run, stop it in time.

The parent serves image reads, pushes the edited label slices and the preview view, and saves
the last weights it got when the child has to be terminated.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from ...slices import read_block, read_slice
from .. import events as ev
from ..live_labels import signature
from .child import child_main
from .messages import (
    ChildFailed,
    ChildWarm,
    LabelEdits,
    ModelStart,
    StartRun,
    StopRun,
    TrainingProcessError,
    TrainResult,
    ViewChange,
    Weights,
    picklable,
)

#: niceness the child adds to itself, so that the GUI thread wins the CPU whenever it needs it
CHILD_NICE = 10
#: seconds Stop gives the child to save after its step, before it is terminated
STOP_GRACE_S = 1.0
#: ... plus this many of its recent steps (a loaded machine's step takes seconds)
STOP_GRACE_STEPS = 3.0
#: the longest Stop waits for the child, seconds
STOP_GRACE_MAX_S = 60.0
#: seconds the child may take to start (import torch) and report ready
START_TIMEOUT_S = 120.0
#: pixels of label slices the parent re-compares per sync (edits without an event: undo)
_SYNC_PIXELS = 16 * 2**20
_POLL_S = 0.05


def _label_store_of(labels: Any) -> Any:
    """The :class:`~napari_unet.label_store.LabelStore` of a big stack's labels (the zarr
    array napari paints into, on a write-back store), else None (numpy, dask, other zarr)."""
    store = getattr(labels, "store", None)
    if store is None or not hasattr(store, "dirty_keys"):
        return None
    from ...label_store import LabelStore, WriteBackStore

    root = getattr(getattr(store, "_store", None), "root", None)  # WrapperStore's documented _store
    if not isinstance(store, WriteBackStore) or root is None:
        return None
    return LabelStore(root, labels, store)


class _LabelsSync:
    """What the child knows of the parent's labels: the signature of every non-empty slice sent.

    Labels in a :class:`~napari_unet.label_store.LabelStore` (a big stack) are read only where
    chunks are stored or pending (:meth:`~napari_unet.label_store.LabelStore.stored_slices`):
    any other slice is all zeros, so the scan of a huge, sparsely painted stack reads only the
    painted slices.  numpy labels are read slice by slice, every one.
    """

    def __init__(self, labels: Any) -> None:
        self.labels = labels
        shape = tuple(labels.shape)
        self.n = int(shape[0]) if len(shape) == 3 else 1
        self.sent: dict[int, tuple[int, int]] = {}
        self._cursor = 0
        self._budget = max(1, _SYNC_PIXELS // max(1, shape[-1] * shape[-2]))
        self._store = _label_store_of(labels)

    def initial(self) -> dict[int, np.ndarray]:
        """Every non-empty slice (the labels scan), recorded as sent."""
        return {z: a for z, a in self.changes(range(self.n)).items() if a is not None}

    def _candidates(self, zs: Any) -> list[int]:
        """The slices of ``zs`` that can differ from what was sent, in order."""
        wanted = {int(z) for z in zs if 0 <= int(z) < self.n}
        if self._store is not None:  # an unstored slice is zeros: it changed only if it was sent
            wanted &= self._store.stored_slices() | set(self.sent)
        return sorted(wanted)

    def changes(self, zs: Any) -> dict[int, np.ndarray | None]:
        """The slices among ``zs`` that differ from what was sent (None: now empty)."""
        out: dict[int, np.ndarray | None] = {}
        for z in self._candidates(zs):
            view = read_slice(self.labels, z)
            if not np.any(view):
                if self.sent.pop(z, None) is not None:
                    out[z] = None
                continue
            arr = np.array(view, copy=True)
            sig = signature(arr)
            if self.sent.get(z) != sig:
                self.sent[z] = sig
                out[z] = arr
        return out

    def sweep(self) -> dict[int, np.ndarray | None]:
        """Changes of the sent slices and of the next others in turn (edits without an event)."""
        zs = set(self.sent)
        for _ in range(min(self._budget, self.n)):
            zs.add(self._cursor)
            self._cursor = (self._cursor + 1) % self.n
        return self.changes(zs)


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """Spawn without re-importing the parent's ``__main__`` (a napari script imports Qt)."""
    main = sys.modules.get("__main__")
    names = vars(main) if main is not None else {}
    saved = {k: names[k] for k in ("__spec__", "__file__") if k in names}
    try:
        if main is not None:
            main.__spec__ = None
            names.pop("__file__", None)
        yield
    finally:
        names.update(saved)


@dataclass
class _Outcome:
    weights: Weights | None = None
    finished: ev.Finished | None = None
    failure: BaseException | None = None
    iterations: int = 0
    last_at: float | None = None  # when the last Iteration event came
    step_s: float = 0.0  # a recent step's duration (the longest, decaying)

    def iteration(self, iteration: int) -> None:
        now = time.perf_counter()
        if self.last_at is not None and iteration > self.iterations:
            step = (now - self.last_at) / (iteration - self.iterations)
            self.step_s = max(0.8 * self.step_s, step)
        self.iterations, self.last_at = iteration, now

    def stop_grace(self) -> float:
        """Seconds Stop waits for the child to finish its step and save."""
        return min(STOP_GRACE_S + STOP_GRACE_STEPS * self.step_s, STOP_GRACE_MAX_S)


class TrainingProcess:
    """A child process that trains with :class:`~napari_unet.training.Trainer`.

    Spawned at once (it imports torch and warms up while the user paints, at a lower priority);
    :meth:`run` then trains once and yields the trainer's events, :class:`TrainerReady` first and
    :class:`TrainResult` last.  :meth:`notify_labels`, :meth:`set_view`, :meth:`stop` and
    :meth:`close` are thread-safe and return at once.  Stop: the child finishes its step and
    saves; after :meth:`_Outcome.stop_grace` it is terminated and the last weights it sent are saved.
    """

    def __init__(self, nice: int = CHILD_NICE) -> None:
        ctx = mp.get_context("spawn")
        cmd_child, self._commands = ctx.Pipe(duplex=False)
        self._events, ev_child = ctx.Pipe(duplex=False)
        self._reads, reads_child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=child_main,
            args=(cmd_child, ev_child, reads_child, int(nice)),
            name="napari-unet training",
            daemon=True,
        )
        with _plain_main():
            self.process.start()
        for conn in (cmd_child, ev_child, reads_child):
            conn.close()
        self.warm = False
        self.used = False
        self._lock = threading.Lock()
        self._recv_lock = threading.RLock()
        self._running = False
        self._dirty: set[int] = set()
        self._all_dirty = False
        self._view: tuple[int, tuple[int, int, int, int] | None] | None = None
        self._stop_at: float | None = None
        self._stop_sent = False
        self._closed = False
        self._failure: BaseException | None = None

    # -- thread-safe controls -------------------------------------------------------------
    def notify_labels(self, slices: Any = None) -> None:
        """These slices of the labels changed (None: any may have)."""
        with self._lock:
            if slices is None:
                self._all_dirty = True
            else:
                self._dirty.update(int(z) for z in slices)

    def set_view(self, z: int, region: tuple[int, int, int, int] | None = None) -> None:
        """Preview slice ``z``, only ``region`` ``(y0, y1, x0, x1)`` of it (None: all)."""
        with self._lock:
            self._view = (int(z), None if region is None else tuple(int(v) for v in region))

    def stop(self) -> None:
        """Finish after this step and save (terminated if that takes much longer than a step)."""
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.perf_counter()

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def close(self, grace: float = 0.0) -> None:
        """End the child: wait ``grace`` s for it to exit, then terminate it (idempotent)."""
        self._closed = True
        p = self.process
        if p.pid is not None and p.exitcode is None:
            p.join(grace)
            if p.exitcode is None:
                p.terminate()
                p.join(1.0)
            if p.exitcode is None:  # pragma: no cover - SIGTERM ignored
                p.kill()
                p.join(1.0)
        if not self._running:  # else the run closes them when it ends
            self._close_pipes()

    def _close_pipes(self) -> None:
        for conn in (self._commands, self._events, self._reads):
            conn.close()

    def wait_warm(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Block until the child has imported torch and warmed up; False if it cannot."""
        deadline = time.perf_counter() + timeout
        while not self.warm:
            if self._closed or self._failure is not None or not self.process.is_alive():
                return False
            if time.perf_counter() > deadline:
                return False
            with self._recv_lock:
                if self.warm:  # another thread read it meanwhile: the next messages are the run's
                    break
                try:
                    msg = self._events.recv() if self._events.poll(_POLL_S) else None
                except (EOFError, OSError):  # the child died, or close() closed the pipe
                    return False
                if isinstance(msg, ChildFailed):
                    self._failure = msg.error
                self.warm = self.warm or isinstance(msg, ChildWarm)
        return True

    # -- the run (in one worker thread) ----------------------------------------------------
    def run(
        self,
        image: Any,
        labels: Any,
        config: Any,
        start: ModelStart,
        classes: tuple[list[str], list[str]],
    ) -> Iterator[Any]:
        """Train ``config`` on ``image`` and the live ``labels`` in the child; yield its events."""
        if self.used:
            raise RuntimeError("a TrainingProcess trains once: start a new one")
        self.used = self._running = True
        try:
            if not self.wait_warm():
                raise self._failure or self._start_error()
            sync = _LabelsSync(labels)
            self._send(self._start_message(image, labels, config, start, classes, sync))
            outcome = _Outcome()
            yield from self._relay(image, sync, config, outcome)
            yield from self._ending(outcome, config)
        finally:
            self._running = False
            self.close(grace=0.5)

    def _start_error(self) -> TrainingProcessError:
        code = self.process.exitcode
        why = "was closed" if self._closed else f"ended (exit code {code})"
        if code is None and not self._closed:
            why = f"did not start within {START_TIMEOUT_S:.0f} s"
        return TrainingProcessError(f"the training process {why} before training started")

    def _start_message(
        self, image: Any, labels: Any, config: Any, start: ModelStart, classes: Any, sync: Any
    ) -> StartRun:
        weights = None
        if start.source == "memory" and start.model is not None:
            weights = Weights.of(start.model, start.metadata or {})
        with self._lock:
            view, self._view = self._view, None
        return StartRun(
            config=config,
            start=replace(start, model=None, metadata=None),
            weights=weights,
            classes=(list(classes[0]), list(classes[1])),
            image=(tuple(int(n) for n in image.shape), str(np.dtype(image.dtype))),
            labels=(tuple(int(n) for n in labels.shape), str(np.dtype(labels.dtype))),
            slices=sync.initial(),
            view=view,
        )

    def _send(self, msg: Any) -> None:
        with contextlib.suppress(OSError):  # the child is gone: the relay notices
            self._commands.send(msg)

    def _push(self, sync: _LabelsSync) -> None:
        """Send what the GUI asked for since the last call: edited slices, the view, Stop."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            if self._all_dirty:
                dirty, self._all_dirty = set(range(sync.n)), False
            view, self._view = self._view, None
            stop = self._stop_at is not None and not self._stop_sent
            self._stop_sent = self._stop_sent or stop
        changed = sync.changes(dirty) if dirty and self._stop_at is None else {}
        if changed:
            self._send(LabelEdits(changed))
        if view is not None:
            self._send(ViewChange(*view))
        if stop:
            self._send(StopRun())

    def _serve(self, image: Any) -> None:
        """Answer one image read of the child."""
        try:
            key = self._reads.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[bool, Any] = (True, read_block(image, key))
        except Exception as exc:
            reply = (False, picklable(exc))
        with contextlib.suppress(OSError):
            self._reads.send(reply)

    def _relay(
        self, image: Any, sync: _LabelsSync, config: Any, outcome: _Outcome
    ) -> Iterator[Any]:
        """Forward the child's events until it finished, failed, died, or Stop ran out of time."""
        next_sweep = time.perf_counter() + float(config.labels_rescan_s)
        sentinel = self.process.sentinel
        while outcome.finished is None and outcome.failure is None:
            self._push(sync)
            ready = wait([self._events, self._reads, sentinel], timeout=_POLL_S)
            if self._reads in ready:
                self._serve(image)
            if self._events in ready:
                try:
                    msg = self._events.recv()
                except (EOFError, OSError):
                    return
                yield from self._take(msg, outcome)
            elif sentinel in ready:
                return  # ended, and nothing is left to read
            now = time.perf_counter()
            if self._stop_at is not None and now - self._stop_at > outcome.stop_grace():
                return
            if now >= next_sweep:
                changed = sync.sweep()
                if changed:
                    self._send(LabelEdits(changed))
                next_sweep = now + float(config.labels_rescan_s)

    def _take(self, msg: Any, outcome: _Outcome) -> Iterator[Any]:
        if isinstance(msg, Weights):
            outcome.weights = msg
        elif isinstance(msg, ChildFailed):
            outcome.failure = msg.error
        else:
            if isinstance(msg, ev.Finished):
                outcome.finished = msg
            elif isinstance(msg, ev.Iteration):
                outcome.iteration(msg.iteration)
            yield msg

    def _ending(self, outcome: _Outcome, config: Any) -> Iterator[Any]:
        """The last events: a saved checkpoint and Finished when the child could not, the model."""
        weights, finished = outcome.weights, outcome.finished
        if outcome.failure is not None:
            raise outcome.failure
        if finished is None and self._stop_at is None and not self._closed:
            self.close()
            code = self.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            raise TrainingProcessError(
                f"the training process ended unexpectedly ({how}) after {outcome.iterations} "
                "iterations; napari is unaffected: press Train to start again"
            )
        model = weights.model() if weights is not None else None
        path = finished.checkpoint_path if finished is not None else None
        if finished is None:
            self.close()  # terminated inside a step: keep the last weights it sent
            path = yield from self._save(model, weights, config)
            finished = ev.Finished("stopped", outcome.iterations, path, None)
            yield finished
        if model is not None and weights is not None:
            yield TrainResult(model, weights.metadata, path, finished.reason)

    def _save(self, model: Any, weights: Weights | None, config: Any) -> Iterator[Any]:
        if model is None or weights is None or config.checkpoint_path is None:
            return None
        from ...checkpoint import CheckpointError, save_checkpoint

        try:
            path = str(save_checkpoint(config.checkpoint_path, model, **weights.metadata))
        except (OSError, RuntimeError, CheckpointError) as exc:
            yield ev.TrainingWarning(f"checkpoint not saved: {exc}")
            return None
        yield ev.CheckpointSaved(path=path, iteration=weights.iteration)
        return path
