"""Annotate's slice suggestions: ranked in a worker after training, shown, followed, kept current."""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
from qt_helpers import dock, messages, paint

from napari_unet._qt import _suggest_job
from napari_unet._qt._common import current_z

TIMEOUT = 60_000


@pytest.fixture
def calls(monkeypatch):
    """Every rank_slices call the suggestion worker makes: (model, thread, cancelled)."""
    real = _suggest_job.rank_slices
    got: list[tuple] = []

    def spy(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        got.append((model, threading.current_thread(), result.cancelled))
        return result

    monkeypatch.setattr(_suggest_job, "rank_slices", spy)
    return got


def _annotated(viewer_with_stack, qtbot, truth_slices=(0,), **kw):
    viewer, image, truth = viewer_with_stack(**kw)
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    for z in truth_slices:
        paint(labels, truth, z)
    # the new labels layer asks for a ranking (debounced): let that settle first
    qtbot.waitUntil(lambda: not ann.suggestions._rerun.pending, timeout=5_000)
    return viewer, image, truth, ann, labels


def _wait_ranking(qtbot, ann, check=lambda r: True):
    qtbot.waitUntil(
        lambda: (
            ann.state.suggestions is not None
            and not ann.suggestions.running
            and check(ann.state.suggestions)
        ),
        timeout=TIMEOUT,
    )
    return ann.state.suggestions


def test_ranking_after_training_runs_off_the_gui_thread(viewer_with_stack, qtbot, tmp_path, calls):
    viewer, image, _, ann, _ = _annotated(viewer_with_stack, qtbot)
    qtbot.waitUntil(lambda: ann.slice_table.rowCount() == 1, timeout=10_000)
    tr = dock(viewer, "4 Train")
    tr.patch.setValue(64)
    tr.batch.setValue(1)
    tr.iterations.setValue(3)
    tr.preview_every.setValue(0)
    tr.folder_edit.setText(str(tmp_path))
    with qtbot.waitSignal(tr.training_finished, timeout=120_000):
        tr.start()
    ranking = _wait_ranking(qtbot, ann)
    assert sorted(ranking.slices) == [1, 2, 3]  # the unlabelled slices, by the trained model
    assert calls and all(model is ann.state.model for model, _, _ in calls)
    assert all(thread is not threading.main_thread() for _, thread, _ in calls)
    # the table shows the ranking; "next" goes to the top slice, then to the second
    assert ann.suggestion_table.slices() == ranking.slices
    ann.next_btn.click()
    assert current_z(viewer, image) == ranking.slices[0]
    assert ann.go_to_next_suggestion() == ranking.slices[1]
    assert current_z(viewer, image) == ranking.slices[1]


def _erase(labels, z: int) -> None:
    """Erase slice ``z`` with napari's history (as the eraser does: a paint event)."""
    ys, xs = np.nonzero(np.ones(labels.data.shape[1:], dtype=bool))
    labels.data_setitem((np.full(ys.shape, z), ys, xs), 0)


def test_a_correction_takes_the_slice_out_of_the_ranking(viewer_with_stack, qtbot, trained, calls):
    viewer, image, truth, ann, labels = _annotated(viewer_with_stack, qtbot)
    prediction = viewer.add_labels(
        truth.astype(np.uint8),
        name="em prediction",
        metadata={"napari_unet": {"generated": True, "prediction": True}},
    )
    co = dock(viewer, "6 Correct")
    co.state.set_prediction_layer(prediction)
    ann.state.set_model(*trained)
    first = _wait_ranking(qtbot, ann)
    assert sorted(first.slices) == [1, 2, 3]
    top, n_calls = first.slices[0], len(calls)
    assert co.accept_slice(top) > 0  # Correct's accept: state.labels_edited
    after = _wait_ranking(qtbot, ann, lambda r: top not in r.slices)
    assert after.slices == [z for z in first.slices if z != top]
    assert top not in ann.suggestion_table.slices()
    # painting a slice fully takes it out too; the model did not change: nothing is predicted again
    second = after.slices[0]
    paint(labels, truth, second)
    _wait_ranking(qtbot, ann, lambda r: second not in r.slices)
    assert len(calls) == n_calls
    viewer.dims.set_current_step(0, 0)  # the undone slice is not the one shown
    assert current_z(viewer, image) != second
    # an undone slice is unlabelled again (napari's undo sends no paint event): it comes back
    # with its score, without predicting again; a redo takes it out again
    labels.undo()
    again = _wait_ranking(qtbot, ann, lambda r: second in r.slices)
    assert second not in ann.state.labelled_slices
    assert dict(again.ranking)[second] == dict(first.ranking)[second]
    assert second in ann.suggestion_table.slices()
    labels.redo()
    _wait_ranking(qtbot, ann, lambda r: second not in r.slices)
    assert second in ann.state.labelled_slices
    assert len(calls) == n_calls
    # erased, it comes back the same way; a slice never ranked (labelled then) is ranked anew
    _erase(labels, second)
    again = _wait_ranking(qtbot, ann, lambda r: second in r.slices)
    assert dict(again.ranking)[second] == dict(first.ranking)[second]
    assert len(calls) == n_calls
    _erase(labels, 0)
    again = _wait_ranking(qtbot, ann, lambda r: 0 in r.slices)
    assert sorted(again.slices) == sorted({0, 1, 2, 3} - {top})
    assert len(calls) > n_calls  # slice 0 had no score yet


def test_a_model_change_cancels_the_running_ranking(
    viewer_with_stack, qtbot, trained, calls, monkeypatch
):
    spy = _suggest_job.rank_slices

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return spy(*args, **kwargs)

    monkeypatch.setattr(_suggest_job, "rank_slices", slow)
    _, _, _, ann, _ = _annotated(viewer_with_stack, qtbot)
    published = []
    ann.state.suggestions_changed.connect(lambda r: published.append(r) if r is not None else None)
    first, metadata = trained
    second = copy.deepcopy(first)
    ann.state.set_model(first, metadata)
    qtbot.waitUntil(lambda: len(calls) >= 1, timeout=TIMEOUT)
    ann.state.set_model(second, metadata)
    ranking = _wait_ranking(qtbot, ann)
    done_first = [c for m, _, c in calls if m is first and not c]
    assert len(done_first) < 3  # the first ranking stopped before the end
    assert len([m for m, _, c in calls if m is second and not c]) == 3
    assert published == [ranking]  # only the second model's ranking was published


def test_closing_the_viewer_stops_the_ranking(viewer_with_stack, qtbot, trained, monkeypatch):
    spy = _suggest_job.rank_slices
    monkeypatch.setattr(
        _suggest_job, "rank_slices", lambda *a, **k: (time.sleep(0.5), spy(*a, **k))[1]
    )
    viewer, _, _, ann, _ = _annotated(viewer_with_stack, qtbot)
    ann.state.set_model(*trained)
    qtbot.waitUntil(lambda: ann.suggestions.running, timeout=TIMEOUT)
    job = ann.job("suggest")
    viewer.close()
    assert job.wait(5.0)


def test_show_uncertainty_fills_an_aligned_generated_layer(viewer_with_stack, qtbot, trained):
    viewer, image, _, ann, _ = _annotated(viewer_with_stack, qtbot, scale=(2.0, 0.5, 0.5))
    image.translate = (0.0, 3.0, 5.0)
    ann.state.set_model(*trained)
    _wait_ranking(qtbot, ann)
    ann.suggestions.show_maps.setChecked(True)  # the slices are scored again, with their maps
    qtbot.waitUntil(lambda: ann.suggestions.layer is not None, timeout=TIMEOUT)
    layer = ann.suggestions.layer
    qtbot.waitUntil(lambda: not ann.suggestions.running and layer.data[1:].any(), timeout=TIMEOUT)
    assert layer.name == "em uncertainty"
    assert layer.data.shape == image.data.shape and layer.data.dtype == np.float32
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)
    assert layer.metadata["napari_unet"]["generated"]
    assert all(layer.data[z].any() for z in (1, 2, 3)) and not layer.data[0].any()
    assert 0.0 <= float(layer.data.min()) and float(layer.data.max()) <= 1.0
    assert ann.state.image_layer is image  # a generated layer is never the source image
    ann.suggestions.show_maps.setChecked(False)
    assert layer not in viewer.layers


def test_bad_input_is_a_notification(make_napari_viewer, small_stack, qtbot, notifications):
    viewer = make_napari_viewer()
    ann = dock(viewer, "1 Annotate")
    assert ann.go_to_next_suggestion() is None  # no image
    assert any("no image layer" in m for m in messages(notifications, "error"))
    viewer.add_image(small_stack[0], name="em")
    assert ann.go_to_next_suggestion() is None  # no model
    assert any("no model yet" in m for m in messages(notifications, "warning"))
    ann.state.set_model(object(), {})  # not a network: the worker fails, the GUI says so
    qtbot.waitUntil(
        lambda: any("ranking the slices" in m for m in messages(notifications, "error")),
        timeout=TIMEOUT,
    )
    assert ann.state.suggestions is None
