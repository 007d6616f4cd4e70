"""When things happen in a training run: learning rate, validations, previews and the run's clock.

The trainer applies these policies itself; front ends pass the user's config untouched.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FINAL_LR_FRACTION",
    "LR_SCHEDULES",
    "MAX_SKIPPED_STEPS",
    "PREVIEW_BUDGET",
    "RunClock",
    "learning_rate",
    "min_learning_rate",
    "preview_interval",
    "validation_interval",
    "warmup_iterations",
]

LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant", "cyclic")
#: the cosine schedule decays to, and the cyclic one starts from, this fraction of the learning
#: rate when ``min_learning_rate`` is None
FINAL_LR_FRACTION = 0.05
#: steps in a row with a NaN/inf loss or gradient after which training stops
MAX_SKIPPED_STEPS = 5
#: previews take at most this fraction of a run's time (their interval grows with their cost)
PREVIEW_BUDGET = 0.05
#: seconds of training before the first preview (at most the preview interval)
FIRST_PREVIEW_S = 1.0
#: a run validates about this many times when ``val_every`` would validate less than twice
_VALIDATIONS_PER_RUN = 5


def warmup_iterations(config: Any) -> int:
    """Warm-up steps of ``config``: ``warmup_iterations``, at most a tenth of ``iterations``."""
    warmup = int(config.warmup_iterations)
    if config.iterations is not None:
        warmup = min(warmup, int(config.iterations) // 10)
    return warmup


def validation_interval(val_every: int, iterations: int | None) -> int:
    """Iterations between validations: ``val_every``, shortened for short runs.

    ``val_every`` is kept when it validates at least twice in ``iterations``
    steps; otherwise the run validates about five times
    (``max(1, iterations // 5)``), so a short run still gets a validation curve.
    """
    if iterations is None or val_every <= iterations // 2:
        return int(val_every)
    return min(int(val_every), max(1, int(iterations) // _VALIDATIONS_PER_RUN))


def min_learning_rate(config: Any) -> float:
    """The lowest rate of the cosine and cyclic schedules: ``min_learning_rate``, else 5 %."""
    low = config.min_learning_rate
    return float(low) if low is not None else FINAL_LR_FRACTION * float(config.learning_rate)


def learning_rate(config: Any, iteration: int, elapsed_s: float) -> float:
    """Learning rate of step ``iteration`` (0-based): linear warm-up, then the schedule.

    - ``"constant"``: ``learning_rate``.
    - ``"cosine"``: from ``learning_rate`` down to :func:`min_learning_rate`; its
      progress is the larger of the iteration and the elapsed-time
      (``max_minutes``) fractions.
    - ``"cyclic"``: triangular (Smith 2017) between :func:`min_learning_rate` and
      ``learning_rate``: up from the minimum for half of ``lr_period`` iterations,
      down for the other half, again and again (iterations count from the end of
      the warm-up); a run of whole periods ends at the minimum.

    The warm-up ramps linearly to the schedule's first value.
    """
    warmup = warmup_iterations(config)
    if iteration < warmup:
        first = (
            min_learning_rate(config) if config.lr_schedule == "cyclic" else config.learning_rate
        )
        return float(first) * (iteration + 1) / (warmup + 1)
    return _scheduled(config, iteration, warmup, elapsed_s)


def _scheduled(config: Any, iteration: int, warmup: int, elapsed_s: float) -> float:
    """The schedule's rate at ``iteration`` (``>= warmup``), warm-up aside."""
    base = float(config.learning_rate)
    if config.lr_schedule == "constant":
        return base
    lo = min_learning_rate(config)
    if config.lr_schedule == "cyclic":
        period = int(config.lr_period)
        phase = ((iteration - warmup) % period) / period  # 0..1 through one cycle
        return lo + (base - lo) * (1.0 - abs(2.0 * phase - 1.0))
    fractions = []
    if config.iterations is not None:
        fractions.append((iteration - warmup) / max(1, config.iterations - warmup))
    if config.max_minutes is not None:
        fractions.append(elapsed_s / (60.0 * config.max_minutes))
    progress = min(1.0, max(fractions))
    return lo + 0.5 * (base - lo) * (1.0 + math.cos(math.pi * progress))


def preview_interval(every_s: float, cost_s: float) -> float:
    """Seconds from a preview that took ``cost_s`` to the next: ``every_s``, or longer so that
    previews stay within :data:`PREVIEW_BUDGET` of the run."""
    return max(float(every_s), cost_s * (1.0 - PREVIEW_BUDGET) / PREVIEW_BUDGET)


@dataclass
class RunClock:
    """The clocks and counters of one run: when to rescan, preview, checkpoint and stop."""

    t_start: float
    next_rescan: float
    next_preview: float
    next_checkpoint: float
    #: the configured preview interval (0: no previews) and when the last preview ended
    preview_every: float = 0.0
    preview_at: float = -math.inf
    iteration: int = 0
    last_loss: float | None = None
    #: steps in a row skipped for a NaN/inf loss or gradient
    bad_steps: int = 0
    skipped_steps: int = 0
    #: (seconds, samples) of the last steps, for the throughput
    window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20))

    @classmethod
    def start(cls, config: Any) -> RunClock:
        t = time.perf_counter()
        every = float(config.preview_every_s)
        preview = t + min(every, FIRST_PREVIEW_S) if every > 0 else math.inf
        return cls(
            t_start=t,
            next_rescan=t + config.labels_rescan_s,
            next_preview=preview,
            next_checkpoint=t + config.checkpoint_every_s,
            preview_every=every,
        )

    def preview_due(self, now: float, changed: bool) -> bool:
        """Whether to preview now; ``changed``: a new view or new labels on it (no budget wait)."""
        if self.preview_every <= 0:
            return False
        due = self.next_preview
        if changed:
            due = min(due, self.preview_at + self.preview_every)
        return now >= due

    def preview_done(self, now: float, cost_s: float | None) -> None:
        """A preview ended at ``now`` after ``cost_s`` seconds (None: skipped, nothing changed)."""
        if cost_s is None:
            self.next_preview = now + self.preview_every
            return
        self.preview_at = now
        self.next_preview = now + preview_interval(self.preview_every, cost_s)

    def stop_reason(self, config: Any, stopping: bool, now: float) -> str | None:
        """Why the run ends now ("stopped", "completed", "time_limit"), or None."""
        if stopping:
            return "stopped"
        if config.iterations is not None and self.iteration >= config.iterations:
            return "completed"
        if config.max_minutes is not None and now - self.t_start >= 60.0 * config.max_minutes:
            return "time_limit"
        return None

    def count_skipped(self, applied: bool, lr: float) -> tuple[str | None, str | None]:
        """Count a step, ``applied`` or skipped for a NaN/inf loss or gradient.

        Returns a warning (the run's first skipped step) and the reason to stop
        (:data:`MAX_SKIPPED_STEPS` skipped in a row), each None when there is none.
        """
        if applied:
            self.bad_steps = 0
            return None, None
        self.bad_steps += 1
        self.skipped_steps += 1
        warning = None
        if self.skipped_steps == 1:
            warning = (
                f"iteration {self.iteration}: the loss or its gradient is NaN or infinite: "
                "step skipped, the weights are unchanged"
            )
        if self.bad_steps < MAX_SKIPPED_STEPS:
            return warning, None
        return warning, (
            f"training stopped at iteration {self.iteration}: {self.bad_steps} steps in a row "
            f"had a NaN or infinite loss or gradient; lower the learning rate (now {lr:.3g}) "
            "or check the image; the weights are the last finite ones"
        )

    def count_step(self, seconds: float, samples: int) -> None:
        self.iteration += 1
        self.window.append((seconds, samples))

    @property
    def samples_per_s(self) -> float:
        total_s = sum(t for t, _ in self.window)
        return sum(n for _, n in self.window) / total_s if total_s > 0 else 0.0
