"""Crafted autosave files in a real window: a clear notification, nothing half-applied, no widening."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qt_helpers import dock, messages

from napari_unet._qt import annotate as annotate_module
from napari_unet.autosave import AUTOSAVE_SUFFIX, MAX_CLASSES, MAX_NAME_LENGTH, classes_path
from napari_unet.classes import DEFAULT_CLASS_NAMES
from napari_unet.io import write_labels_tiff

SIDE = f"em{AUTOSAVE_SUFFIX}".replace(".tif", ".json")


def _window(viewer, qtbot):
    win = viewer.window._qt_window
    win.show()
    return win


def _width(win, qtbot) -> int:
    """The window's width once the pending layout requests are done."""
    qtbot.wait(50)
    width = win.width()
    while True:
        qtbot.wait(50)
        if win.width() == width:
            return width
        width = win.width()


def _autosave(tmp_path, labels: np.ndarray, sidecar: str | bytes | None):
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    path = folder / f"em{AUTOSAVE_SUFFIX}"
    write_labels_tiff(path, labels)
    if isinstance(sidecar, bytes):
        classes_path(path).write_bytes(sidecar)
    elif sidecar is not None:
        classes_path(path).write_text(sidecar)
    return folder


def _sidecar(names, colors=None) -> str:
    colors = ["#ff3b30"] * len(names) if colors is None else colors
    return json.dumps({"class_names": names, "class_colors": colors})


CRAFTED = {
    "names not text": (_sidecar([1, 2]), "class_names must be"),
    "a name is an object": (_sidecar(["a", {"x": 1}]), "class_names must be"),
    "names a string": ('{"class_names": "membrane", "class_colors": []}', "class_names must be"),
    "booleans": ('{"class_names": [true], "class_colors": [false]}', "class_names must be"),
    "deep nesting": ('{"class_names": ' + "[" * 100_000 + "]" * 100_000 + "}", "levels deep"),
    "nested lists": (_sidecar([[[["a"]]]]), "levels deep"),
    "300 names": (_sidecar([f"c{k}" for k in range(300)]), f"at most {MAX_CLASSES}"),
    "a long name": (_sidecar(["x" * 10_000, "cell"]), f"longer than {MAX_NAME_LENGTH}"),
    "control characters": (_sidecar(["a\x1b[2Jb", "cell"]), "control characters"),
    "bad colour": (_sidecar(["a", "b"], ["#ff3b30", "red; rm -rf"]), "one colour"),
    "colour not text": (_sidecar(["a", "b"], ["#ff3b30", 255]), "one colour"),
    "colour with a newline": (_sidecar(["a"], ["#ffffff\n"]), "one colour"),
    "too few colours": (_sidecar(["a", "b"], ["#ff3b30"]), "one colour"),
    "not an object": ("[1, 2, 3]", "expected an object"),
    "not JSON": ("{'class_names': ", "not a JSON classes file"),
    "not UTF-8": (b"\xff\xfe\x00\x01", "cannot read the classes file"),
    "huge": (" " * (2 << 20) + "{}", "too large for a classes file"),
}


@pytest.mark.parametrize(("content", "match"), CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_sidecar_is_refused_whole(
    viewer_with_stack, qtbot, tmp_path, notifications, content, match
):
    viewer, _, truth = viewer_with_stack()
    win = _window(viewer, qtbot)
    ann = dock(viewer, "1 Annotate")
    width = _width(win, qtbot)
    ann.set_autosave(folder=_autosave(tmp_path, truth, content))
    before = (list(ann.state.class_names), list(ann.state.class_colors))
    layer = ann.create_labels()
    warned = messages(notifications, "warning")
    assert any(SIDE in m and match in m and "class names were not restored" in m for m in warned)
    assert messages(notifications, "error") == []
    assert all(len(m) < 400 for m in warned)  # a crafted name is never echoed whole
    # the labels are restored, the classes are the ones before, and the layer shows them
    np.testing.assert_array_equal(layer.data, truth)
    assert (list(ann.state.class_names), list(ann.state.class_colors)) == before
    assert list(ann.state.class_names) == list(DEFAULT_CLASS_NAMES)
    assert layer.metadata["napari_unet"]["class_names"] == before[0]
    assert layer.metadata["napari_unet"]["class_colors"] == before[1]
    assert _width(win, qtbot) == width


def test_many_long_class_names_do_not_widen_the_window(
    viewer_with_stack, qtbot, tmp_path, notifications
):
    viewer, _, truth = viewer_with_stack()
    win = _window(viewer, qtbot)
    ann = dock(viewer, "1 Annotate")
    pr = dock(viewer, "5 Predict")
    width, hint = _width(win, qtbot), win.sizeHint().width()
    # every one of 255 classes painted on slice 0, each with a 64-character name
    labels = np.zeros(truth.shape, np.uint8)
    labels[0] = (np.arange(truth[0].size).reshape(truth.shape[1:]) % MAX_CLASSES + 1).astype(
        np.uint8
    )
    names = [f"{k:03d} " + "w" * (MAX_NAME_LENGTH - 4) for k in range(1, MAX_CLASSES + 1)]
    ann.set_autosave(folder=_autosave(tmp_path, labels, _sidecar(names)))
    ann.create_labels()
    qtbot.waitUntil(lambda: 0 in ann.labelled_slices(), timeout=30_000)
    assert ann.state.class_names == names
    assert names[-1] in ann.slices.summary.text()  # the balance line names them all
    assert pr.settings.prob_class.count() == MAX_CLASSES
    assert _width(win, qtbot) == width
    assert win.sizeHint().width() <= hint  # nor would the window ask for more when shown again
    assert ann.minimumSizeHint().width() < 600 and pr.minimumSizeHint().width() < 600
    # a name typed in the table is cut to the longest a classes file may hold
    ann.class_table.item(0, 1).setText("n" * 200)
    assert ann.state.class_names[0] == "n" * MAX_NAME_LENGTH
    assert any(f"cut to {MAX_NAME_LENGTH} characters" in m for m in messages(notifications))
    assert _width(win, qtbot) == width


def test_values_above_the_class_limit_name_at_most_255_classes(
    viewer_with_stack, qtbot, tmp_path, notifications
):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    labels = truth.astype(np.uint16)
    labels[0, 0, 0] = 60_000
    ann.set_autosave(folder=_autosave(tmp_path, labels, None))
    layer = ann.create_labels()
    qtbot.waitUntil(lambda: len(ann.state.class_names) == MAX_CLASSES, timeout=30_000)
    np.testing.assert_array_equal(layer.data, labels)  # the labels are kept as they are
    assert any(
        f"values up to 60,000: only classes 1..{MAX_CLASSES} are named" in m
        for m in messages(notifications, "warning")
    )


def test_a_failure_while_creating_labels_leaves_nothing_half_applied(
    viewer_with_stack, tmp_path, notifications, monkeypatch
):
    viewer, _, truth = viewer_with_stack()
    ann = dock(viewer, "1 Annotate")
    ann.set_autosave(folder=_autosave(tmp_path, truth, _sidecar(["a", "b"], ["#111", "#222"])))
    before = (list(ann.state.class_names), list(ann.state.class_colors))
    n_layers = len(viewer.layers)

    def broken(*args, **kwargs):
        raise TypeError("unexpected colour")

    monkeypatch.setattr(annotate_module, "style_labels", broken)
    assert ann.create_labels() is None
    assert any(
        "creating the training labels failed" in m and "unexpected colour" in m
        for m in messages(notifications, "error")
    )
    assert len(viewer.layers) == n_layers and ann.state.labels_layer is None  # no layer left
    assert (list(ann.state.class_names), list(ann.state.class_colors)) == before


def test_a_label_value_near_2_to_the_32_is_counted_without_a_huge_allocation() -> None:
    from napari_unet._qt.panels.slice_table import MAX_COUNTED_VALUE, count_values

    labels = np.zeros((2, 8, 8), np.uint32)
    labels[1, 0, :3] = (1, 2, 4_000_000_000)
    counts = count_values(labels, 1, 2)
    assert counts.size == MAX_COUNTED_VALUE + 2
    assert counts[1] == counts[2] == counts[-1] == 1
    assert counts.sum() == 64
