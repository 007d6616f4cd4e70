"""The annotation loop through the real docks, in a shown napari window (Xvfb when headless).

The stack is written to the work folder and opened with the plugin's reader; all seven docks
are opened as ``napari-unet`` opens them (``open_all_widgets``). A simulated annotator then uses
the docks' own buttons: Annotate's "Create training labels", the first slice painted with the
truth (``Labels.data_setitem``, as a brush writes, with napari's undo history and paint events),
Train's Start with a limit, then for R rounds: the next slice (a: in order, via Annotate's
``go_to_slice``; b: Annotate's "Go to the next suggested slice", pressed again while it offers a
held-out slice), Predict "current slice", Correct's "Accept prediction for this slice", the wrong
pixels painted to the truth, Correct's "Train (fine-tune the model in memory)". Effort and quality
are scored as in ``bench_loop`` (held-out quality from a Predict of the held-out slices, timed
apart). Arm b starts from arm a's first model (``state.set_model`` of a copy: one first training
for both arms, as in the headless loop).

    xvfb-run -a python -m benchmarks.bench_loop_window --smoke
    xvfb-run -a python -m benchmarks.bench_loop_window --dataset isbi --iterations 150 \\
        --finetune-iterations 50 --rounds 3 --work /tmp/loop_window

A full run keeps ``benchmarks/results/loop_window_<data>.json`` and remakes ``docs/LOOP.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/bench_loop_window.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks import _common, _loop_docs
from benchmarks.bench_loop import (
    ROUND_KEYS,
    Budget,
    Limit,
    LoopData,
    correction_effort,
    load_data,
    quality,
    summarize,
)

NAME = "loop_window"
#: arm -> how the next slice is picked
ARMS = {"unet-order": "order", "unet-suggest": "suggest"}
EXTRA_KEYS = ("predict_s", "score_s", "skipped", "outcome")
SMOKE = Budget(minutes=None, finetune_minutes=None, rounds=1, iterations=3, finetune_iterations=2)
FULL = Budget(minutes=None, finetune_minutes=None, rounds=3, iterations=150, finetune_iterations=50)
#: Train settings of the smoke run (tiny stack); a full run keeps the dock's defaults
SMOKE_TRAIN = {"patch": 64, "batch": 1, "preview_every": 0.0}


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> float:
    """Run the Qt event loop until ``done()`` (polled every 20 ms); the seconds it took."""
    from qtpy.QtCore import QEventLoop, QTimer

    t0 = time.perf_counter()
    if not done():
        loop, check = QEventLoop(), QTimer()
        check.setInterval(20)
        check.timeout.connect(
            lambda: loop.quit() if done() or time.perf_counter() - t0 > timeout else None
        )
        check.start()
        loop.exec()
        check.stop()
    if not done():
        raise TimeoutError(f"{what}: not done after {timeout:g} s")
    return time.perf_counter() - t0


def _timeout(limit: Limit) -> float:
    spans = [60.0 * limit.minutes if limit.minutes is not None else np.inf]
    spans.append(10.0 * limit.iterations if limit.iterations is not None else np.inf)
    return min(spans) + 600.0


class Window:
    """A shown viewer with the stack read by the plugin and every dock, driven by its buttons."""

    def __init__(
        self, data: LoopData, image_path: Path, work: Path, viewer: Any, train: dict[str, Any]
    ) -> None:
        from napari_unet._qt import open_all_widgets

        self.data, self.viewer = data, viewer
        viewer.window._qt_window.resize(1500, 950)
        viewer.open(str(image_path), plugin="napari-unet")
        self.w = open_all_widgets(viewer)
        self.ann, self.tr, self.pr = self.w["annotate"], self.w["train"], self.w["predict"]
        self.co, self.state = self.w["correct"], self.w["annotate"].state
        self.ann.set_autosave(folder=work / "project")
        self.ann.create_btn.click()
        self.labels = self.state.labels_layer
        if self.labels is None:
            raise RuntimeError(f"no training labels: {self.ann.status.text()}")
        self.tr.folder_edit.setText(str(work / "models"))
        for key, value in train.items():
            getattr(self.tr, key).setValue(value)

    # -- the annotator's actions ---------------------------------------------------------------
    def paint(self, z: int, where: np.ndarray | None = None) -> None:
        """Write the truth of slice ``z`` (at ``where``, default everywhere) as a brush does."""
        where = np.ones(self.data.truth.shape[1:], bool) if where is None else where
        ys, xs = np.nonzero(where)
        values = self.data.truth[z][ys, xs].astype(self.labels.data.dtype)
        self.labels.data_setitem((np.full(ys.shape, z), ys, xs), values)

    def train(self, limit: Limit, first: bool) -> dict[str, Any]:
        """Start (first) or Correct's fine-tune button; wait for the run's end."""
        self.tr.iterations.set_field(limit.iterations)
        self.tr.minutes.set_field(limit.minutes)
        ended: list[str] = []
        self.tr.training_finished.connect(ended.append)
        t0 = time.perf_counter()
        (self.tr.start_btn if first else self.co.train_btn).click()
        if not self.tr.busy():
            raise RuntimeError(f"training did not start: {self.tr.status.text()}")
        wait_until(lambda: bool(ended), _timeout(limit), "training")
        self.tr.training_finished.disconnect(ended.append)
        if ended[0] not in ("completed", "time_limit"):
            raise RuntimeError(f"training ended {ended[0]}: {self.tr.status.text()}")
        return {"iterations": self.tr.iterations_seen, "train_s": time.perf_counter() - t0}

    def predict(self, slices: list[int] | None = None) -> tuple[np.ndarray, float]:
        """Predict (the current slice, or ``slices`` as a range); their classes and the seconds."""
        from napari_unet.slices import format_slices

        if slices is None:
            self.pr.range.setCurrentText("current slice")
        else:
            self.pr.range.setCurrentText("range")
            self.pr.range_edit.setText(format_slices(slices))
        ended: list[str] = []
        self.pr.prediction_finished.connect(ended.append)
        t0 = time.perf_counter()
        self.pr.predict_btn.click()
        wait_until(lambda: bool(ended), 1800, "prediction")
        self.pr.prediction_finished.disconnect(ended.append)
        if ended[0] != "completed":
            raise RuntimeError(f"prediction ended {ended[0]}: {self.pr.status.text()}")
        zs = slices if slices is not None else [self.current_z()]
        return np.stack([np.asarray(self.pr.layer.data[z]) for z in zs]), time.perf_counter() - t0

    def current_z(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def remaining(self) -> list[int]:
        return [z for z in self.data.pool if not self.labels.data[z].any()]

    def pick(self, strategy: str) -> tuple[int | None, int]:
        """Show the next slice to correct; (the slice, suggestions skipped as held out)."""
        remaining = self.remaining()
        if not remaining:
            return None, 0
        if strategy == "order":
            self.ann.go_to_slice(remaining[0])
            return remaining[0], 0
        panel = self.ann.suggestions
        wait_until(
            lambda: self.state.suggestions is not None and not panel.running, 900, "suggestions"
        )
        for skipped in range(len(self.data.image)):
            z = self.ann.go_to_next_suggestion()
            if z is None or z in remaining:
                return z, skipped
        return None, len(self.data.image)

    def accept_and_correct(self, z: int) -> dict[str, int]:
        """Correct's accept on the shown slice ``z``, then paint the wrong pixels to the truth."""
        self.co.accept_btn.click()
        accepted = np.asarray(self.labels.data[z])
        if not accepted.any():
            raise RuntimeError(f"nothing accepted on slice {z}: {self.co.status.text()}")
        effort = correction_effort(accepted, self.data.truth[z])
        self.paint(z, accepted != self.data.truth[z])
        if not np.array_equal(self.labels.data[z], self.data.truth[z]):
            raise RuntimeError(f"slice {z} is not the truth after the correction")
        return effort

    def score(self) -> tuple[dict[str, float], float]:
        pred, seconds = self.predict(list(self.data.held_out))
        return quality(pred, self.data.truth[list(self.data.held_out)]), seconds


def run_arm(
    arm: str, window: Window, budget: Budget, first: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of one arm in ``window``; ``first``: the shared first model (None: train it here)."""
    data, strategy = window.data, ARMS[arm]
    window.paint(data.start)
    if first is None:
        fit = window.train(budget.first, first=True)
        first = {"model": copy.deepcopy(window.state.model), "fit": fit,
                 "metadata": copy.deepcopy(window.state.metadata)}  # fmt: skip
    else:
        window.state.set_model(copy.deepcopy(first["model"]), copy.deepcopy(first["metadata"]))
    score, score_s = window.score()
    base = {"dataset": data.name, "arm": arm}
    fit = first["fit"]
    rows = [{**base, "round": 0, "slice": data.start, **fit, "wall_s": fit["train_s"], **score,
             "score_s": score_s, "outcome": "first model"}]  # fmt: skip
    area = int(np.prod(data.truth.shape[1:]))
    for r in range(1, budget.rounds + 1):
        t0 = time.perf_counter()
        z, skipped = window.pick(strategy)
        if z is None:
            break
        pick_s = time.perf_counter() - t0
        _, predict_s = window.predict()
        effort = window.accept_and_correct(z)
        fit = window.train(budget.finetune, first=False)
        wall_s = time.perf_counter() - t0
        score, score_s = window.score()
        rows.append(
            {
                **base, "round": r, "slice": z, **effort,
                "changed_pct": 100.0 * effort["pixels_changed"] / area, "pick_s": pick_s,
                **fit, "wall_s": wall_s, **score, "predict_s": predict_s, "score_s": score_s,
                "skipped": skipped, "outcome": window.tr.last_reason,
            }
        )  # fmt: skip
    return [{k: row.get(k) for k in (*ROUND_KEYS, *EXTRA_KEYS)} for row in rows], first


def run_loop(
    data: LoopData,
    budget: Budget,
    work: Path,
    arms: tuple[str, ...] = tuple(ARMS),
    make_viewer: Callable[[], Any] | None = None,
    train: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every arm in its own shown window (closed after it, unless ``make_viewer`` made it).

    The rows so far are kept in ``work/rows.json`` after each arm.
    """
    import tifffile

    work.mkdir(parents=True, exist_ok=True)
    image_path = work / f"{data.name}.tif"
    tifffile.imwrite(image_path, data.image, photometric="minisblack")
    own = make_viewer is None
    if make_viewer is None:
        import napari

        def make_viewer() -> Any:
            return napari.Viewer(show=True, title="bench_loop_window")

    rows: list[dict[str, Any]] = []
    first = None
    for arm in arms:
        print(f"  {data.name} (window): {arm}", flush=True)
        viewer = make_viewer()
        try:
            window = Window(data, image_path, work / arm, viewer, train or {})
            arm_rows, first = run_arm(arm, window, budget, first)
            rows += arm_rows
            (work / "rows.json").write_text(json.dumps(rows, indent=1, default=float))  # so far
        finally:
            if own:
                viewer.close()
    return rows


def run(
    quick: bool = False,
    *,
    smoke: bool | None = None,
    budget: Budget | None = None,
    dataset: str | None = None,
    arms: tuple[str, ...] = tuple(ARMS),
    work: Path | None = None,
    write_docs: bool | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """The window loop (smoke: tiny synthetic stack and budget; else ISBI if present, else the
    synthetic sample); keeps the result and remakes ``docs/LOOP.md`` unless smoke."""
    smoke = quick if smoke is None else smoke
    budget = budget or (SMOKE if smoke else FULL)
    name = dataset or ("synthetic" if smoke or not _common.isbi_available() else "isbi")
    data = load_data(name, quick=smoke)
    if data is None:
        return {"name": NAME, "rows": [], "skipped": True,
                "note": f"ISBI 2012 not found in {_common.ISBI_DIR}"}  # fmt: skip
    work = work or Path(tempfile.mkdtemp(prefix="bench_loop_window_"))
    t0 = time.perf_counter()
    from benchmarks.bench_gui import virtual_display

    with virtual_display():
        rows = run_loop(data, budget, work, arms, train=SMOKE_TRAIN if smoke else None)
    mode = "smoke" if smoke else "full"
    note = (
        "All seven docks in a shown napari window under Xvfb, driven through their buttons; the "
        "Train dock's defaults apart from the limits"
        + (f" and {SMOKE_TRAIN}" if smoke else "")
        + f"; CPUs shared with other work. Work folder {work}."
    )
    sec = _loop_docs.section(NAME, name, rows, summarize(rows), data.describe(), budget, mode,
                             time.perf_counter() - t0, note=note, command=command)  # fmt: skip
    if write_docs if write_docs is not None else not smoke:
        _loop_docs.save_section(sec)
        _loop_docs.write_docs()
    return {**sec, "note": f"{mode}: {budget.describe()}; {note}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny stack, 3+2 iterations, 1 round")
    parser.add_argument("--dataset", choices=("isbi", "synthetic"))
    parser.add_argument(
        "--iterations", type=int, help=f"first training (default {FULL.iterations})"
    )
    parser.add_argument("--finetune-iterations", type=int,
                        help=f"fine-tune per round (default {FULL.finetune_iterations})")  # fmt: skip
    parser.add_argument("--minutes", type=float, help="first training time limit")
    parser.add_argument("--finetune-minutes", type=float, help="fine-tune time limit")
    parser.add_argument("--rounds", type=int, help=f"corrected slices R (default {FULL.rounds})")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms")
    parser.add_argument("--work", type=Path, help="folder for the stack, autosaves, checkpoints")
    parser.add_argument("--no-docs", action="store_true", help="do not keep the result")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else FULL
    timed = args.minutes is not None or args.finetune_minutes is not None
    budget = Budget(
        args.minutes, args.finetune_minutes, args.rounds or base.rounds,
        args.iterations or (None if timed and args.minutes else base.iterations),
        args.finetune_iterations
        or (None if timed and args.finetune_minutes else base.finetune_iterations),
    )  # fmt: skip
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    result = run(
        smoke=args.smoke, budget=budget, dataset=args.dataset, arms=arms, work=args.work,
        write_docs=False if args.no_docs else None,
        command=" ".join(["xvfb-run -a python -m benchmarks.bench_loop_window",
                          *(argv or sys.argv[1:])]),
    )  # fmt: skip
    if result.get("skipped"):
        print(f"## {NAME}\n{result['note']}")
        return 0
    _common.report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
