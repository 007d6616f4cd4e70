"""Autosave files on disk: paths, round trip, only changed slices re-encoded, bad sidecars."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from napari_unet.autosave import (
    AUTOSAVE_ENV,
    AUTOSAVE_SUFFIX,
    MAX_CLASSES,
    MAX_DEPTH,
    MAX_NAME_LENGTH,
    MAX_SIDECAR_BYTES,
    AutosaveError,
    LabelsAutosave,
    PendingChanges,
    autosave_path_for,
    check_classes,
    classes_path,
    default_autosave_dir,
    read_autosaved_classes,
    read_autosaved_labels,
    restore_autosave,
    write_classes,
)
from napari_unet.io import read_tiff, write_labels_tiff

NAMES, COLORS = ["membrane", "cell"], ["#ff3b30", "#1e90ff"]


def _labels(shape=(3, 32, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, shape).astype(np.uint8)


def test_paths(tmp_path, monkeypatch):
    monkeypatch.setenv(AUTOSAVE_ENV, str(tmp_path / "env"))
    assert default_autosave_dir() == tmp_path / "env"
    src = tmp_path / "stack.tif"
    assert autosave_path_for(src, "ignored") == tmp_path / f"stack{AUTOSAVE_SUFFIX}"
    assert autosave_path_for(None, "em") == tmp_path / "env" / f"em{AUTOSAVE_SUFFIX}"
    assert autosave_path_for(None, "em", tmp_path / "p") == tmp_path / "p" / f"em{AUTOSAVE_SUFFIX}"
    side = classes_path(tmp_path / f"em{AUTOSAVE_SUFFIX}")
    assert side == tmp_path / "em.napari-unet-labels.json"
    if os.geteuid() != 0:  # a read-only image folder falls back to the project folder
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            got = autosave_path_for(ro / "stack.tif", "em", tmp_path / "p")
            assert got == tmp_path / "p" / f"stack{AUTOSAVE_SUFFIX}"
        finally:
            ro.chmod(0o700)


def test_round_trip_with_scale_and_classes(tmp_path):
    labels = _labels()
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    auto = LabelsAutosave(labels.shape, scale=(2.0, 0.5, 0.25))
    result = auto.save_changes(path, NAMES, COLORS, {z: labels[z] for z in range(3)})
    assert result.saved and result.path == path and result.encoded == (0, 1, 2)
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    td = read_tiff(path, as_labels=True)
    np.testing.assert_allclose(td.scale, (2.0, 0.5, 0.25))
    np.testing.assert_array_equal(read_autosaved_labels(path, labels.shape), labels)
    assert read_autosaved_classes(path) == (NAMES, COLORS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


def test_only_changed_slices_are_encoded_again(tmp_path):
    labels = _labels((5, 32, 32))
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    auto = LabelsAutosave(labels.shape)
    auto.save_changes(path, NAMES, COLORS, {z: labels[z] for z in range(5)})
    labels[3, :4, :4] = 2
    dirty = {1: labels[1].copy(), 3: labels[3].copy()}  # slice 1 marked dirty but unchanged
    result = auto.save_changes(path, NAMES, COLORS, dirty)
    assert result.saved and result.encoded == (3,)
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    mtime = path.stat().st_mtime_ns
    again = auto.save_changes(path, NAMES, COLORS, dirty)  # nothing new: nothing written
    assert not again.saved and again.encoded == ()
    assert path.stat().st_mtime_ns == mtime
    renamed = auto.save_changes(path, ["membrane", "cytoplasm"], COLORS)  # classes only
    assert renamed.saved and renamed.encoded == ()
    assert read_autosaved_classes(path) == (["membrane", "cytoplasm"], COLORS)
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    moved = tmp_path / "other" / f"em{AUTOSAVE_SUFFIX}"  # a new project folder: written there
    assert auto.save_changes(moved, ["membrane", "cytoplasm"], COLORS).saved
    np.testing.assert_array_equal(tifffile.imread(moved), labels)


def test_read_all_and_wider_dtype(tmp_path):
    labels = _labels((3, 16, 16)).astype(np.uint16)
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    auto = LabelsAutosave(labels.shape)
    assert auto.save_changes(path, NAMES, COLORS, source=labels).encoded == (0, 1, 2)
    assert tifffile.imread(path).dtype == np.uint8  # the smallest dtype that holds the labels
    labels[2, 0, 0] = 300
    auto.save_changes(path, NAMES, COLORS, {2: labels[2]})
    back = tifffile.imread(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)


def test_zeros_never_replace_an_old_autosave(tmp_path):
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    write_labels_tiff(path, np.ones((2, 8, 8), np.uint8))
    auto = LabelsAutosave((2, 8, 8))
    result = auto.save_changes(path, NAMES, COLORS, {0: np.zeros((8, 8), np.uint8)})
    assert not result.saved
    assert tifffile.imread(path).max() == 1


def test_pending_changes_copy_only_the_painted_slices(tmp_path):
    labels = _labels((4, 16, 16))
    pending = PendingChanges(4)
    assert not pending.pending
    pending.mark([1, 3, 9])  # 9 is not a slice: ignored
    assert pending.pending and pending.slices == {1, 3}
    changes = pending.take(labels, tmp_path / f"em{AUTOSAVE_SUFFIX}", NAMES, COLORS)
    assert sorted(changes["slices"]) == [1, 3] and changes["source"] is None
    labels[1, 0, 0] += 1  # the copies do not follow the layer
    assert changes["slices"][1][0, 0] != labels[1, 0, 0]
    assert not pending.pending
    pending.mark(None)  # unknown slices: the worker reads everything
    changes = pending.take(labels, tmp_path / f"em{AUTOSAVE_SUFFIX}", NAMES, COLORS)
    assert changes["slices"] == {} and changes["source"] is labels
    result = LabelsAutosave(labels.shape).save_changes(**changes)
    assert result.saved and result.encoded == (0, 1, 2, 3)
    np.testing.assert_array_equal(tifffile.imread(result.path), labels)


def test_restore_says_what_is_not_restored(tmp_path):
    labels = _labels()
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    write_labels_tiff(path, labels)
    data, classes, problem = restore_autosave(path, labels.shape)
    np.testing.assert_array_equal(data, labels)
    assert classes is None and problem is None  # no sidecar: the current classes stay
    write_classes(path, NAMES, COLORS)
    assert restore_autosave(path, labels.shape)[1:] == ((NAMES, COLORS), None)
    classes_path(path).write_text("{bad")
    data, classes, problem = restore_autosave(path, labels.shape)
    assert data is not None and classes is None
    assert "not a JSON classes file" in problem and "class names were not restored" in problem
    data, classes, problem = restore_autosave(path, (9, 9, 9))
    assert data is None and "the autosave was not restored (it is kept on disk)" in problem


def test_2d_labels(tmp_path):
    labels = _labels((24, 20))
    path = tmp_path / f"one{AUTOSAVE_SUFFIX}"
    LabelsAutosave(labels.shape).save_changes(path, NAMES, COLORS, {0: labels})
    np.testing.assert_array_equal(read_autosaved_labels(path, labels.shape), labels)


def test_bad_labels_files(tmp_path):
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    with pytest.raises(AutosaveError, match="no such file"):
        read_autosaved_labels(path, (2, 8, 8))
    path.write_bytes(b"not a tiff at all")
    with pytest.raises(AutosaveError):
        read_autosaved_labels(path, (2, 8, 8))
    write_labels_tiff(path, np.ones((2, 8, 8), np.uint8))
    with pytest.raises(AutosaveError, match=r"shape \(2, 8, 8\) does not match image \(3, 8, 8\)"):
        read_autosaved_labels(path, (3, 8, 8))
    auto = LabelsAutosave((2, 8, 8))
    with pytest.raises(ValueError, match="expected"):
        auto.update({0: np.zeros((4, 4), np.uint8)})
    good = np.full((8, 8), 2, np.int16)
    with pytest.raises(AutosaveError, match=r"negative \(slice 1\)"):
        auto.update({0: good, 1: -np.ones((8, 8), np.int16)})
    assert auto.save(path, NAMES, COLORS).saved  # the good slice before the bad one is kept
    np.testing.assert_array_equal(tifffile.imread(path)[0], good)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not a JSON classes file"),
        ('["membrane"]', "expected an object"),
        ('{"class_names": "abc", "class_colors": ["#fff"]}', "class_names must be"),
        ('{"class_names": [], "class_colors": []}', "class_names must be"),
        ('{"class_names": ["a", ""], "class_colors": ["#fff", "#000"]}', "class_names must be"),
        ('{"class_names": ["a", 3], "class_colors": ["#fff", "#000"]}', "class_names must be"),
        ('{"class_names": ["a", "b"], "class_colors": ["#fff"]}', "one colour"),
        ('{"class_names": ["a"], "class_colors": ["red; rm -rf"]}', "one colour"),
        ('{"class_names": ["a"]}', "one colour"),
        (json.dumps({"class_names": ["c"] * 300, "class_colors": ["#fff"] * 300}), "at most 255"),
    ],
)
def test_crafted_sidecars_give_a_clear_error(tmp_path, content, match):
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    classes_path(path).write_text(content)
    with pytest.raises(AutosaveError, match=match) as info:
        read_autosaved_classes(path)
    assert "em.napari-unet-labels.json" in str(info.value)  # says which file


def test_sidecar_not_utf8_and_missing(tmp_path):
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    assert read_autosaved_classes(path) is None  # no sidecar: nothing to restore
    classes_path(path).write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(AutosaveError, match="cannot read the classes file"):
        read_autosaved_classes(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"class_names": [True], "class_colors": ["#fff"]}, "bool True is not text"),
        ({"class_names": [None], "class_colors": ["#fff"]}, "NoneType None is not text"),
        ({"class_names": ["x" * 65], "class_colors": ["#fff"]}, "longer than 64 characters"),
        ({"class_names": ["a\nb"], "class_colors": ["#fff"]}, "control characters"),
        ({"class_names": ["\u202egnp.exe"], "class_colors": ["#fff"]}, "control characters"),
        ({"class_names": [[["a"]]], "class_colors": ["#fff"]}, "is not text"),
        ({"class_names": ["a"], "class_colors": ["#fff"], "x": [[[[1]]]]}, "4 levels deep"),
        ({"class_names": ["a"], "class_colors": ["#ffffff\n"]}, "one colour"),
        ({"class_names": ["a"], "class_colors": ["#12345"]}, "one colour"),
    ],
)
def test_classes_schema(data, match):
    with pytest.raises(AutosaveError, match=match) as info:
        check_classes(data, "side.json")
    assert str(info.value).startswith("side.json: ") and len(str(info.value)) < 200


def test_classes_schema_accepts_what_the_dock_writes(tmp_path):
    names = [f"{k:03d} " + "n" * (MAX_NAME_LENGTH - 4) for k in range(MAX_CLASSES)]
    colors = ["#abc", "#a1b2c3", "#a1b2c3d4"] * (MAX_CLASSES // 3)
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    write_classes(path, names, colors)
    assert read_autosaved_classes(path) == (names, colors)
    assert check_classes({"class_names": ["  cell "], "class_colors": ["#fff"]}) == (
        ["cell"],
        ["#fff"],
    )


def test_deeply_nested_or_huge_sidecars(tmp_path):
    path = tmp_path / f"em{AUTOSAVE_SUFFIX}"
    side = classes_path(path)
    side.write_text('{"class_names": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(AutosaveError, match=f"nested more than {MAX_DEPTH} levels deep"):
        read_autosaved_classes(path)  # json's RecursionError becomes the file's error
    side.write_text(" " * (MAX_SIDECAR_BYTES + 1))
    with pytest.raises(AutosaveError, match="too large for a classes file"):
        read_autosaved_classes(path)
    write_labels_tiff(path, _labels())
    data, classes, problem = restore_autosave(path, _labels().shape)
    assert data is not None and classes is None and "too large" in problem


def test_a_chosen_folder_wins_and_a_read_only_data_folder_is_never_written(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "stack.tif").write_bytes(b"")
    chosen = tmp_path / "project"
    assert autosave_path_for(data / "stack.tif", "em", chosen) == chosen / f"stack{AUTOSAVE_SUFFIX}"
    data.chmod(0o555)  # a shared, read-only data folder (root could still write into it)
    try:
        got = autosave_path_for(data / "stack.tif", "em")
    finally:
        data.chmod(0o755)
    assert got.parent != data
    assert got.name == f"stack{AUTOSAVE_SUFFIX}"
