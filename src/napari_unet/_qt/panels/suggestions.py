"""The suggestions panel of the Annotate dock: the unlabelled slices ranked by the model's uncertainty.

A worker ranks them whenever the model changes or a correction lands; the ranking is published in
the shared state, and "Go to the next suggested slice" shows the top one not labelled or visited yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...suggest import Ranking, SliceScore
from .._common import Debounce, Throttle, friendly_error, put_layer, spatial_kwargs
from .._suggest_job import (
    SuggestProgress,
    SuggestRequest,
    SuggestResult,
    default_downsample,
    suggest_job,
)
from .._workers import Job
from .slice_table import SliceRows

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .._state import UNetState

METHOD_TEXT = {"entropy": "entropy of the prediction", "disagreement": "flip/rotation disagreement"}
#: rows of the table (the most uncertain slices)
SHOWN = 20
#: a correction is followed by a new ranking this long after the last one
RERUN_MS = 800
#: the uncertainty layer is redrawn at most this often while the maps are written
REFRESH_MS = 500
#: the ranking's progress line is redrawn at most this often (milliseconds)
PROGRESS_MS = 2000
#: larger uncertainty maps are not kept in memory
MAX_MAP_BYTES = 2 * 1024**3


class SuggestionTable(SliceRows):
    """The most uncertain unlabelled slices, one row each: rank, slice and uncertainty."""

    slice_column = 1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(["rank", "slice", "uncertainty"], parent)
        self.setMaximumHeight(150)

    def show_scores(self, scores: Sequence[SliceScore]) -> None:
        """One row per score, in the order given (at most :data:`SHOWN`)."""
        rows = list(scores)[:SHOWN]
        self.setRowCount(len(rows))
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for r, s in enumerate(rows):
            for col, text in enumerate((str(r + 1), str(s.slice), f"{s.score:.3f}")):
                item = QTableWidgetItem(text)
                item.setTextAlignment(right)
                self.setItem(r, col, item)


class SuggestionPanel(QGroupBox):
    """Ranks the unlabelled slices in a worker and offers the next one to correct.

    ``start_job(name, job)`` is the dock's (its jobs stop when the viewer closes).
    """

    #: (level "info" | "warning" | "error", text) for the dock's notifications
    message = Signal(str, str)
    #: show this slice (the dock moves the viewer)
    slice_activated = Signal(int)

    def __init__(
        self,
        viewer: napari.Viewer,
        state: UNetState,
        start_job: Callable[[str, Job], Job],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Suggested slices (most uncertain first)", parent)
        self.viewer, self.state, self._start_job = viewer, state, start_job
        self._job: Job | None = None
        self._pending = False  # rank again once the running job has stopped
        self._known: dict[int, SliceScore] = {}  # scores of the model ``_known_for``
        self._known_for: Any = None
        self._generation = 0  # bumped when the scores no longer hold: late results are dropped
        self._candidates: set[int] = set()  # unlabelled slices of the last full ranking
        self._maps: np.ndarray | None = None  # (Z, H, W) uncertainty, written by the worker
        self._mapped: set[int] = set()  # slices of ``_maps`` filled by ``_known_for``
        self._map_max = 0.0
        self.layer: Image | None = None
        #: slices shown by "next" or a double click since the model changed
        self.visited: set[int] = set()
        self._build()
        self._rerun = Debounce(self.request, RERUN_MS, self)
        self._refresh = Throttle(self._refresh_layer, REFRESH_MS, self)
        self._progress_text = ""
        self._progress = Throttle(self._show_progress, PROGRESS_MS, self)
        self._connect()
        if state.model is not None:
            self.request()
        else:
            self._show(state.suggestions)

    # ================================================================= layout
    def _build(self) -> None:
        vb = QVBoxLayout(self)
        row = QHBoxLayout()
        self.next_btn = QPushButton("Go to the next suggested slice")
        self.next_btn.setToolTip(
            "show the unlabelled slice the model is least sure about (not visited yet)"
        )
        self.show_maps = QCheckBox("show uncertainty")
        self.show_maps.setToolTip("an image layer '<image> uncertainty' with the per-pixel map")
        row.addWidget(self.next_btn)
        row.addWidget(self.show_maps)
        vb.addLayout(row)
        self.method = QComboBox()
        for key, text in METHOD_TEXT.items():
            self.method.addItem(text, key)
        self.method.setToolTip("the disagreement costs four predictions per slice")
        form = QHBoxLayout()
        form.addWidget(QLabel("Rank by"))
        form.addWidget(self.method, 1)
        vb.addLayout(form)
        self.table = SuggestionTable()
        vb.addWidget(self.table)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        vb.addWidget(self.summary)

    def _connect(self) -> None:
        st = self.state
        for signal, slot in (
            (st.model_changed, self._on_model_changed),
            (st.image_changed, self._on_image_changed),
            (st.labels_changed, self._rerun.trigger),
            (st.labels_edited, self._rerun.trigger),  # Correct's accept / undo
            (st.labelled_slices_changed, self._on_labelled),
            (st.training_busy_changed, self._on_training_busy),
            (st.suggestions_changed, self._show),
            (st.shutting_down, self._rerun.cancel),
            (self.next_btn.clicked, self.go_to_next),
            (self.table.slice_activated, self.visit),
            (self.method.currentIndexChanged, self._on_method),
            (self.show_maps.toggled, self._on_show_maps),
        ):
            signal.connect(slot)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)

    # ================================================================= running the ranking
    @property
    def running(self) -> bool:
        return self._job is not None and self._job.running

    def request(self, *_: Any) -> None:
        """Rank the unlabelled slices (again) in the background; a running ranking stops first."""
        self._rerun.cancel()
        if self.state.closed:
            return
        if self.running:
            self._pending = True
            self._job.cancel()
            return
        self._pending = False
        self._start()

    def _start(self) -> None:
        state = self.state
        model, image = state.model, state.image_layer
        if model is None or image is None:
            self._show(state.suggestions)
            return
        if state.training_busy:  # the cores are training's; rank once the new model is in
            self._pending = True
            self.summary.setText("the slices are ranked again when training ends")
            return
        if model is not self._known_for:
            self._forget()
            self._known_for = model
        maps = self._ensure_maps(image) if self.show_maps.isChecked() else None
        known = {z: s for z, s in self._known.items() if maps is None or z in self._mapped}
        labels = state.labels_layer
        if labels is not None and tuple(labels.data.shape) != tuple(image.data.shape):
            labels = None
        req = SuggestRequest(
            model,
            image.data,
            labels.data if labels is not None else None,
            metadata=dict(state.metadata),
            method=self.method.currentData(),
            downsample=default_downsample(tuple(image.data.shape)),
            known=known,
            maps_out=maps,
        )
        stop = threading.Event()
        self._job = Job(
            suggest_job,
            req,
            stop,
            on_yield=partial(self._on_yield, self._generation, maps),
            on_error=self._on_error,
            on_finished=self._on_finished,
            cancel=stop.set,
            quit_on_cancel=False,  # the last value (what was scored) still arrives
        )
        self._start_job("suggest", self._job)

    def _on_yield(self, generation: int, maps: np.ndarray | None, value: Any) -> None:
        if isinstance(value, SuggestProgress):
            self._progress_text = f"ranking the unlabelled slices: {value.done}/{value.total}"
            self._progress.trigger()  # each redraw of the window costs: at most every 2 s
            if maps is not None and maps is self._maps:
                self._refresh.trigger()
        elif isinstance(value, SuggestResult) and generation == self._generation:
            self._on_result(value, maps)

    def _on_result(self, result: SuggestResult, maps: np.ndarray | None) -> None:
        self._known.update({s.slice: s for s in result.ranking.scores})
        if maps is not None and maps is self._maps:
            self._mapped.update(result.scored)
            self._map_max = max(self._map_max, result.map_max)
            self._refresh.trigger()
            if self.layer is not None and self._map_max > 0:
                self.layer.contrast_limits = (0.0, self._map_max)
        if not result.ranking.cancelled:
            self._candidates = set(result.candidates)
            self._publish()
            self._score_unlabelled()

    def _show_progress(self) -> None:
        if self.running and self._progress_text:
            self.summary.setText(self._progress_text)

    def _on_error(self, exc: BaseException) -> None:
        self.message.emit("error", friendly_error(exc, "ranking the slices to suggest"))

    def _on_finished(self) -> None:
        self._job = None
        if self._pending:
            self.request()
        elif self.state.suggestions is not None:
            self._show(self.state.suggestions)

    def _publish(self) -> None:
        """Put the ranking of the slices unlabelled now in the shared state."""
        labelled = set(self.state.labelled_slices)
        todo = self._candidates - labelled
        scores = sorted(
            (self._known[z] for z in todo if z in self._known), key=lambda s: (-s.score, s.slice)
        )
        self.state.set_suggestions(Ranking(scores=scores, method=self.method.currentData()))

    def _forget(self) -> None:
        """The scores no longer hold (another model, image or method)."""
        self._generation += 1
        self._known.clear()
        self._mapped.clear()
        self._candidates = set()
        self._map_max = 0.0
        self.visited.clear()

    # ================================================================= what changed
    def _on_model_changed(self) -> None:
        self._forget()
        self._known_for = self.state.model
        self.state.set_suggestions(None)
        self.request()

    def _on_image_changed(self, *_: Any) -> None:
        self._forget()
        self._drop_maps()
        self.state.set_suggestions(None)
        self.request()

    def _on_method(self, *_: Any) -> None:
        self._forget()
        self.state.set_suggestions(None)
        self.request()

    def _on_labelled(self, slices: Any) -> None:
        ranking = self.state.suggestions
        if ranking is None:
            return
        labelled = set(slices)
        if labelled & set(ranking.slices):  # a slice was labelled: it leaves the ranking at once
            kept = [s for s in ranking.scores if s.slice not in labelled]
            self.state.set_suggestions(Ranking(scores=kept, method=ranking.method))
        if self.running:  # its result is published against the labelled slices of then
            return
        back = self._candidates - labelled - set(ranking.slices)
        if back and self._known_for is self.state.model and back <= set(self._known):
            self._publish()  # unlabelled again (undo, erase): back in with the score it had
        elif back:
            self._rerun.trigger()
        self._score_unlabelled()

    def _score_unlabelled(self) -> None:
        """Rank again (debounced) when a slice lost its labels after the last ranking."""
        image = self.state.image_layer
        if image is None or not self._candidates or self._known_for is not self.state.model:
            return
        n = int(image.data.shape[0]) if image.ndim >= 3 else 1
        if len(self._candidates | set(self.state.labelled_slices)) < n:
            self._rerun.trigger()

    def _on_training_busy(self, busy: bool) -> None:
        if busy and self.running:
            self._pending = True
            self._job.cancel()
        elif not busy and self._pending and not self.running:
            self.request()

    # ================================================================= going to a slice
    def go_to_next(self, *_: Any) -> int | None:
        """Show the most uncertain slice not labelled or visited yet; return it (None if none)."""
        ranking = self.state.suggestions
        if ranking is None:
            self._explain_missing()
            return None
        labelled = set(self.state.labelled_slices)
        z = ranking.next(labelled | self.visited)
        if z is None and ranking.next(labelled) is not None:
            self.visited.clear()
            self.message.emit("info", "every suggested slice was visited: starting from the top")
            z = ranking.next(labelled)
        if z is None:
            self.message.emit("info", "no unlabelled slice left to suggest")
            return None
        self.visit(z)
        return z

    def visit(self, z: int) -> None:
        """Show slice ``z`` and remember it as visited."""
        self.visited.add(int(z))
        self.slice_activated.emit(int(z))
        ranking = self.state.suggestions
        if ranking is not None and int(z) in ranking.slices:
            rank = ranking.slices.index(int(z))
            score = ranking.scores[rank].score
            self.summary.setText(
                f"slice {z}: uncertainty {score:.3f}, suggestion {rank + 1} of {len(ranking)}"
            )

    def _explain_missing(self) -> None:
        if self.state.image_layer is None:
            self.message.emit(
                "error", "no image layer: open a stack (File > Open) and pick it in '1 Annotate'"
            )
        elif self.state.model is None:
            self.message.emit(
                "warning",
                "no model yet: train one in '4 Train'; the unlabelled slices are ranked when it ends",
            )
        else:
            self.message.emit("info", "ranking the unlabelled slices: try again in a moment")
            if not self.running:
                self.request()

    def _show(self, ranking: Ranking | None) -> None:
        if ranking is None:
            self.table.show_scores([])
            waiting = self.running or (self.state.model is not None and self._pending)
            self.summary.setText(
                "ranking the unlabelled slices…"
                if waiting
                else "after training, the unlabelled slices are ranked by the model's uncertainty"
            )
            return
        self.table.show_scores(ranking.scores)
        method = METHOD_TEXT.get(ranking.method, ranking.method)
        self.summary.setText(
            f"{len(ranking)} unlabelled slice(s) ranked by {method}"
            if len(ranking)
            else "every slice is labelled"
        )

    # ================================================================= the uncertainty layer
    def _ensure_maps(self, image: Image) -> np.ndarray | None:
        shape = tuple(int(s) for s in image.data.shape)
        full = shape if len(shape) == 3 else (1, *shape)
        if self._maps is not None and self._maps.shape == full:
            return self._maps
        if int(np.prod(full)) * 4 > MAX_MAP_BYTES:
            self.message.emit("warning", "the stack is too large to keep its uncertainty map")
            self.show_maps.setChecked(False)
            return None
        self._maps = np.zeros(full, dtype=np.float32)
        self._mapped.clear()
        self._map_max = 0.0
        md = {"napari_unet": {"generated": True, "uncertainty": True, "image": image.name}}
        existing = self.layer if self.layer in self.viewer.layers else None
        self.layer = put_layer(
            self.viewer, existing, f"{image.name} uncertainty", "image",
            self._maps if len(shape) == 3 else self._maps[0],
            colormap="inferno", contrast_limits=(0.0, 1.0), blending="additive",
            opacity=0.7, metadata=md, **spatial_kwargs(image),
        )  # fmt: skip
        return self._maps

    def _refresh_layer(self) -> None:
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.refresh()

    def _on_show_maps(self, on: bool) -> None:
        if on:
            self.request()  # the slices scored without a map are scored again
        else:
            self._drop_maps()

    def _drop_maps(self) -> None:
        layer, self.layer = self.layer, None
        self._maps = None
        self._mapped.clear()
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _on_layer_removed(self, event: Any) -> None:
        if event.value is self.layer:  # the user deleted it
            self.layer = None
            self._maps = None
            self._mapped.clear()
            self.show_maps.blockSignals(True)
            self.show_maps.setChecked(False)
            self.show_maps.blockSignals(False)
