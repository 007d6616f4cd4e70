"""Stop's grace follows the child's step time, so a loaded machine still saves every iteration."""

from __future__ import annotations

import time

from napari_unet.training.remote.process import (
    STOP_GRACE_MAX_S,
    STOP_GRACE_S,
    STOP_GRACE_STEPS,
    _Outcome,
)


def test_stop_grace_grows_with_slow_steps_and_is_capped() -> None:
    out = _Outcome()
    assert out.stop_grace() == STOP_GRACE_S  # no step seen yet
    out.iteration(1)
    time.sleep(0.2)
    out.iteration(2)  # one step of ~0.2 s
    assert out.step_s >= 0.2
    assert out.stop_grace() >= STOP_GRACE_S + STOP_GRACE_STEPS * 0.2
    time.sleep(0.1)
    out.iteration(4)  # two quick steps: the slow one still counts (it decays)
    assert out.step_s >= 0.8 * 0.2
    out.step_s = 1e6
    assert out.stop_grace() == STOP_GRACE_MAX_S
