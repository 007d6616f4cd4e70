"""Running ``predict_dask``'s block tasks: on a distributed client in a sliding window, or on
dask's local schedulers in small groups; each finished block is recorded (and resumable)."""

from __future__ import annotations

import itertools
from typing import Any

#: block tasks submitted at once per worker thread (and at least :data:`IN_FLIGHT_MIN`)
IN_FLIGHT_PER_THREAD = 4
IN_FLIGHT_MIN = 8


def run_tasks(tasks: list[tuple[int, int, Any]], recorders: list[Any], progress: Any) -> None:
    """Compute the block tasks (on the default distributed client if there is one), recording each."""
    import dask

    try:
        from distributed import as_completed, default_client

        client = default_client()
    except (ImportError, ValueError):
        client = None
    total, done = len(tasks), 0

    def finished(z: int, b: int) -> None:
        nonlocal done
        done += 1
        for recorder in recorders:
            recorder.mark_block(z, b)
        if progress is not None:
            progress(done, total)

    try:
        if client is not None:
            _run_on_client(client, as_completed, tasks, finished)
            return
        step = 8  # the local schedulers: record after every few blocks
        for i in range(0, total, step):
            group = tasks[i : i + step]
            dask.compute(*[t for _, _, t in group])
            for z, b, _ in group:
                finished(z, b)
    finally:
        for recorder in recorders:
            recorder.flush()


def _in_flight(client: Any) -> int:
    """How many block tasks the client keeps submitted at once: a few per worker thread."""
    try:
        threads = sum(int(n) for n in client.nthreads().values())
    except Exception:  # a client that cannot say (closing, an old distributed)
        threads = 0
    return max(IN_FLIGHT_PER_THREAD * threads, IN_FLIGHT_MIN)


def _run_on_client(client: Any, as_completed: Any, tasks: list, finished: Any) -> None:
    """Submit the tasks in a sliding window (the client holds a future, its graph and its
    result per submitted task: all at once grew the client by ~0.6 MiB per block), in order."""
    pending = iter(tasks)
    index: dict[str, tuple[int, int]] = {}
    running = as_completed()

    def submit(n: int) -> None:
        for z, b, task in itertools.islice(pending, n):
            fut = client.compute(task)
            index[fut.key] = (z, b)
            running.add(fut)

    submit(_in_flight(client))
    for fut in running:
        fut.result()
        finished(*index.pop(fut.key))
        fut.release()
        submit(1)
