"""Background jobs: napari ``thread_worker`` generators with a clean shutdown.

A :class:`Job` runs a generator function in a napari :class:`GeneratorWorker`
(napari's QThreadPool machinery).  The generator talks to the GUI **only**
through the values it yields: the ``yielded`` signal is delivered on the GUI
thread, where the widget turns them into layers, progress bars and plots.

Exceptions inside the generator are caught in the worker and yielded as a
:class:`WorkerFailed`, so they reach the widget's ``on_error`` handler (which
shows a napari notification and resets the buttons) rather than napari's
traceback notification.  ``finished`` always fires, so a widget that resets
its buttons there can never be left with Train disabled.

:meth:`Job.shutdown` is what widgets call when the viewer closes: it asks the
work to stop (``cancel`` callback, e.g. ``Trainer.stop``), disconnects the
GUI handlers (the widgets are about to be deleted) and waits a bounded time
for the thread to finish.

On Linux a job's thread runs at a lower priority than the GUI thread (:data:`JOB_NICE`),
and so do the compute threads it starts (torch's), so the viewer gets the CPU first.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker

logger = logging.getLogger("napari_unet")

#: niceness a job's thread adds to the process's (Linux; threads it starts inherit it)
JOB_NICE = 10


def lower_thread_priority(nice: int = JOB_NICE) -> None:
    """Make the calling thread ``nice`` steps nicer than the process's main thread (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        target = min(os.getpriority(os.PRIO_PROCESS, os.getpid()) + int(nice), 19)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:  # pool threads are reused
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except (OSError, AttributeError):  # pragma: no cover - not permitted here
        pass


@dataclass
class WorkerFailed:
    """Yielded by a guarded generator when its body raised."""

    error: BaseException


class UNetWorker(GeneratorWorker):
    """A napari GeneratorWorker that records completion in a ``threading.Event``.

    Errors are reported through our own handlers (see :class:`Job`), not
    napari's generic error relay.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done = threading.Event()

    def _relay_error(self, exc: Exception) -> None:  # napari's mixin hook
        logger.debug("napari-unet worker error: %r", exc)

    def work(self) -> Any:
        lower_thread_priority()
        try:
            return super().work()
        finally:
            self.done.set()


def _guarded(func: Callable[..., Generator[Any, Any, Any]], *args: Any, **kwargs: Any) -> Generator:
    try:
        return (yield from func(*args, **kwargs))
    except Exception as exc:  # reported to the GUI as a value, never re-raised
        logger.debug("napari-unet job failed", exc_info=True)
        yield WorkerFailed(exc)
        return None


class Job:
    """One background task of a widget.

    Parameters
    ----------
    func
        Generator function run in the worker thread; it must not touch any
        widget or layer, only yield values.
    on_yield
        Called on the GUI thread with every yielded value.
    on_error
        Called on the GUI thread with the exception if ``func`` raised.
    on_finished
        Called on the GUI thread when the thread has ended (success, error,
        cancel).
    cancel
        Thread-safe callable asking the work to stop early (e.g. a trainer's
        ``stop``); the worker is also asked to quit at its next yield when
        ``quit_on_cancel``.
    """

    def __init__(
        self,
        func: Callable[..., Generator[Any, Any, Any]],
        *args: Any,
        on_yield: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_returned: Callable[[Any], None] | None = None,
        cancel: Callable[[], None] | None = None,
        quit_on_cancel: bool = True,
        **kwargs: Any,
    ) -> None:
        self._on_yield = on_yield
        self._on_error = on_error
        self._on_finished = on_finished
        self._on_returned = on_returned
        self._cancel = cancel
        self._quit_on_cancel = quit_on_cancel
        self.cancelled = False
        self.failed = False
        self.started = False
        self.finished = False  # the GUI thread has handled ``finished``
        self.worker: UNetWorker = create_worker(
            _guarded,
            func,
            *args,
            _worker_class=UNetWorker,
            _start_thread=False,
            _ignore_errors=True,
            **kwargs,
        )
        self.worker.yielded.connect(self._yielded)
        self.worker.errored.connect(self._errored)
        self.worker.returned.connect(self._returned)
        self.worker.finished.connect(self._finished)

    # -- GUI-thread slots ----------------------------------------------------------------
    def _call(self, handler: Callable[..., None] | None, *args: Any) -> None:
        if handler is None:
            return
        try:
            handler(*args)
        except RuntimeError as exc:
            # the widget was deleted while a queued signal was in flight (viewer closing)
            if "has been deleted" not in str(exc):
                raise
            self.disconnect()

    def _yielded(self, value: Any) -> None:
        if isinstance(value, WorkerFailed):
            self._errored(value.error)
            return
        self._call(self._on_yield, value)

    def _errored(self, exc: BaseException) -> None:
        self.failed = True
        self._call(self._on_error, exc)

    def _returned(self, value: Any) -> None:
        self._call(self._on_returned, value)

    def _finished(self) -> None:
        self.finished = True
        self._call(self._on_finished)

    # -- control -------------------------------------------------------------------------
    def start(self) -> Job:
        self.started = True
        self.worker.start()
        return self

    @property
    def running(self) -> bool:
        """Started and not yet finished *as seen by the GUI thread* (its handler has run)."""
        return self.started and not self.finished

    def cancel(self) -> None:
        """Ask the work to stop (thread-safe, returns at once)."""
        self.cancelled = True
        if self._cancel is not None:
            try:
                self._cancel()
            except Exception:  # pragma: no cover - a cancel hook must not break the GUI
                logger.exception("napari-unet: cancel hook failed")
        if self._quit_on_cancel or self._cancel is None:
            self.worker.quit()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread has ended; return whether it did."""
        if not self.started:
            return True
        return self.worker.done.wait(timeout)

    def disconnect(self) -> None:
        """Drop the GUI handlers (before the widgets owning them are deleted)."""
        self._on_yield = self._on_error = self._on_finished = self._on_returned = None

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel, detach from the GUI and wait up to ``timeout`` s; return whether it ended."""
        if not self.running:
            self.disconnect()
            return True
        self.disconnect()
        self.cancel()
        ended = self.wait(timeout)
        if not ended:
            self.worker.quit()
            ended = self.wait(2.0)
        if not ended:
            logger.warning("napari-unet: a background job did not stop within %.0f s", timeout)
        return ended
