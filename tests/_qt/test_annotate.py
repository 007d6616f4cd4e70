"""Annotate: labels layer creation/adoption, classes, slice table, autosave and restore."""

from __future__ import annotations

import numpy as np
import tifffile
from qt_helpers import dock, messages, paint, wait_idle

from napari_unet.autosave import AUTOSAVE_SUFFIX
from napari_unet.io import write_labels_tiff


def test_classes_presets_and_colours(viewer_with_stack):
    viewer, _, _ = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    assert ann.class_table.rowCount() == 2
    ann.preset_combo.setCurrentText("Mitochondria (background, mitochondria)")
    ann.preset_btn.click()
    assert ann.state.class_names == ["background", "mitochondria"]
    assert labels.metadata["napari_unet"]["class_names"] == ["background", "mitochondria"]
    ann.add_class("vesicle")
    assert ann.state.class_names[-1] == "vesicle" and ann.class_table.rowCount() == 3
    ann.class_table.item(2, 1).setText("synaptic vesicle")  # rename in the table
    assert ann.state.class_names[2] == "synaptic vesicle"
    ann.set_class_color(1, "#00ff00")
    np.testing.assert_allclose(labels.colormap.map(1), [0.0, 1.0, 0.0, 1.0])
    assert labels.colormap.map(0)[3] == 0  # unlabelled is transparent
    ann.remove_last_class()
    assert len(ann.state.class_names) == 2


def test_remove_painted_class_refused(viewer_with_stack, qtbot, notifications):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    paint(ann.create_labels(), truth, 1)
    qtbot.waitUntil(lambda: ann.slice_table.rowCount() == 1, timeout=10_000)
    ann.remove_last_class()
    assert ann.state.class_names == ["membrane", "cell"]
    assert any("erase them first" in m for m in messages(notifications, "warning"))


def test_slice_table_and_jump(viewer_with_stack, qtbot):
    viewer, _image, truth = viewer_with_stack(scale=(3.0, 1.0, 1.0))
    ann = dock(viewer, "1 Annotate")
    labels = ann.create_labels()
    paint(labels, truth, 1)
    paint(labels, truth, 3)
    qtbot.waitUntil(lambda: ann.slice_table.rowCount() == 2, timeout=10_000)
    assert ann.slice_table.item(1, 0).text() == "3"
    n = int((truth[3] > 0).sum())
    assert ann.slice_table.item(1, 1).text() == f"{n:,}"
    assert "membrane" in ann.slice_table.item(1, 2).text()
    ann.slice_table._on_double_clicked(1, 0)
    assert viewer.dims.point[0] == 9.0  # slice 3 at z scale 3
    # a stroke erased by undo disappears from the table
    labels.undo()
    ann.mark_dirty()
    qtbot.waitUntil(lambda: ann.slice_table.rowCount() == 1, timeout=10_000)


def test_adopt_existing_labels(viewer_with_stack):
    viewer, _image, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    gt = viewer.add_labels(truth.copy(), name="ground truth")
    assert ann.state.labels_layer is None  # never adopted silently
    ann.labels_combo.set_value(gt)
    assert ann.state.labels_layer is gt
    assert gt.metadata["napari_unet"]["training_labels"]


def test_autosave_and_restore_in_a_new_viewer(
    make_napari_viewer, small_stack, qtbot, tmp_path, notifications
):
    image, truth = small_stack
    stack = tmp_path / "stack.tif"  # the image "came from" this file
    meta = {"napari_unet": {"path": str(stack)}}
    viewer = make_napari_viewer()
    viewer.add_image(image, name="stack", metadata=meta)
    ann = dock(viewer, "1 Annotate")
    ann.set_autosave(interval=0.5)
    labels = ann.create_labels()
    paint(labels, truth, 2)
    expected = tmp_path / f"stack{AUTOSAVE_SUFFIX}"
    assert ann.autosave_path() == expected  # next to the stack
    qtbot.waitUntil(lambda: expected.exists(), timeout=10_000)
    wait_idle(qtbot, ann, "autosave")
    np.testing.assert_array_equal(tifffile.imread(expected), labels.data)
    # more painting is saved again at the next tick
    paint(labels, truth, 3)
    n = ann.save_count
    qtbot.waitUntil(lambda: ann.save_count > n, timeout=10_000)
    wait_idle(qtbot, ann, "autosave")
    saved = labels.data.copy()
    np.testing.assert_array_equal(tifffile.imread(expected), saved)
    ann.set_classes(["membrane", "cell", "mito"])
    ann.save_now()
    viewer.close()

    # "open the same stack again": the saved labels and classes come back
    viewer2 = make_napari_viewer()
    viewer2.add_image(image, name="stack", metadata=meta)
    ann2 = dock(viewer2, "1 Annotate")
    assert "Autosaved labels found" in ann2.autosave_hint.text()
    assert any("autosaved labels found for 'stack'" in m for m in messages(notifications, "info"))
    labels2 = ann2.create_labels()
    np.testing.assert_array_equal(labels2.data, saved)
    assert ann2.state.class_names == ["membrane", "cell", "mito"]
    assert "restored autosaved labels" in ann2.status.text()


def test_autosave_encodes_only_the_painted_slices(viewer_with_stack, qtbot, tmp_path):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    ann.set_autosave(interval=0.3, folder=tmp_path / "project")
    labels = ann.create_labels()
    results = []
    shown = ann._on_saved
    ann._on_saved = lambda result: (results.append(result), shown(result))
    paint(labels, truth, 1)
    qtbot.waitUntil(lambda: any(r.saved for r in results), timeout=10_000)
    paint(labels, truth, 3)
    qtbot.waitUntil(lambda: sum(r.saved for r in results) >= 2, timeout=10_000)
    wait_idle(qtbot, ann, "autosave")
    assert [r.encoded for r in results if r.saved][:2] == [(1,), (3,)]
    np.testing.assert_array_equal(tifffile.imread(ann.autosave_path()), labels.data)


def test_autosave_without_a_file_uses_the_project_folder(viewer_with_stack, qtbot, tmp_path):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    ann.set_autosave(interval=0.5)
    labels = ann.create_labels()
    assert ann.autosave_path() == tmp_path / "autosave" / f"em{AUTOSAVE_SUFFIX}"  # env override
    ann.set_autosave(folder=tmp_path / "project")
    paint(labels, truth, 0)
    target = tmp_path / "project" / f"em{AUTOSAVE_SUFFIX}"
    qtbot.waitUntil(lambda: target.exists(), timeout=10_000)


def test_restore_with_wrong_shape_is_refused(make_napari_viewer, tmp_path, notifications):
    folder = tmp_path / "project"
    folder.mkdir()
    write_labels_tiff(folder / f"em{AUTOSAVE_SUFFIX}", np.ones((2, 64, 64), np.uint8))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 128, 128), np.uint8), name="em")
    ann = dock(viewer, "1 Annotate")
    ann.set_autosave(folder=folder)
    labels = ann.create_labels()
    assert not labels.data.any()
    assert any("not restored" in m for m in messages(notifications, "warning"))
    # and the untouched zeros never overwrite the old autosave
    ann.save_now()
    assert tifffile.imread(folder / f"em{AUTOSAVE_SUFFIX}").shape == (2, 64, 64)


def test_restore_can_be_declined(viewer_with_stack, tmp_path):
    viewer, _, _ = viewer_with_stack()
    folder = tmp_path / "project"
    folder.mkdir()
    write_labels_tiff(folder / f"em{AUTOSAVE_SUFFIX}", np.ones((4, 128, 128), np.uint8))
    ann = dock(viewer, "1 Annotate")
    ann.set_autosave(folder=folder)
    ann.restore_check.setChecked(False)
    assert not ann.create_labels().data.any()


def test_suggested_slices_table_and_next(viewer_with_stack, qtbot, notifications):
    from napari_unet._qt._common import current_z
    from napari_unet.suggest import Ranking, SliceScore

    viewer, image, truth = viewer_with_stack(scale=(3.0, 1.0, 1.0))
    ann = dock(viewer, "1 Annotate")
    assert ann.suggestion_table.rowCount() == 0
    assert "after training" in ann.suggestions.summary.text()
    labels = ann.create_labels()
    scores = [SliceScore(z, s, s) for z, s in ((2, 0.5), (0, 0.4), (3, 0.3), (1, 0.1))]
    ann.state.set_suggestions(Ranking(scores=scores))
    assert ann.suggestion_table.slices() == [2, 0, 3, 1]
    assert ann.suggestion_table.item(0, 2).text() == "0.500"
    paint(labels, truth, 0)  # a labelled slice is never suggested
    qtbot.waitUntil(lambda: 0 in ann.state.labelled_slices, timeout=10_000)
    assert [ann.go_to_next_suggestion() for _ in range(3)] == [2, 3, 1]
    assert viewer.dims.point[0] == 3.0  # slice 1 at z scale 3
    assert current_z(viewer, image) == 1
    assert ann.go_to_next_suggestion() == 2  # all visited: from the top again
    assert any("starting from the top" in m for m in messages(notifications, "info"))
    ann.suggestion_table._on_double_clicked(2, 0)  # the row of slice 1
    assert current_z(viewer, image) == 1
