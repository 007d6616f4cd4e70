"""The on-disk labels store of big stacks: write-back chunks, incremental flush, lazy restore."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from napari_unet import label_store
from napari_unet.autosave import AutosaveError, default_autosave_dir
from napari_unet.label_store import (
    LABEL_STORE_SUFFIX,
    LabelStore,
    label_store_path_for,
    open_label_store,
    uses_label_store,
)


def _chunks(path):
    return {p.relative_to(path).as_posix() for p in (path / "c").rglob("*") if p.is_file()}


def test_policy_threshold_is_stated_once(monkeypatch):
    big = label_store.LABEL_STORE_MIN_VOXELS
    assert uses_label_store((1, big)) and not uses_label_store((1, big - 1))
    assert uses_label_store((4, 8, 8), min_voxels=256)
    monkeypatch.setattr(label_store, "LABEL_STORE_MIN_VOXELS", 100)
    assert uses_label_store((1, 10, 10))


def test_paint_flush_writes_only_changed_chunks(tmp_path):
    path = tmp_path / f"em{LABEL_STORE_SUFFIX}"
    store = LabelStore.create(path, (3, 1024, 1100), np.uint8)
    arr = store.array
    assert arr.chunks == (1, 512, 512) and not (path / "c").exists()
    arr[1, 10:20, 10:20] = 2
    arr[2, 600, 1090] = 1
    assert not (path / "c").exists()  # painting stays in memory until flushed
    assert store.dirty and store.dirty_slices() == {1, 2}
    result = store.flush(["a", "b"], ["#111", "#222"])
    assert result.chunks == ("c/1/0/0", "c/2/1/2") and result.slices == (1, 2) and result.classes
    assert _chunks(path) == {"c/1/0/0", "c/2/1/2"} and not store.dirty
    mtime = (path / "c/2/1/2").stat().st_mtime_ns
    arr[1, 15, 15] = 0  # one chunk again
    result = store.flush(["a", "b"], ["#111", "#222"])
    assert result.chunks == ("c/1/0/0",) and not result.classes  # classes unchanged
    assert (path / "c/2/1/2").stat().st_mtime_ns == mtime and store.chunks_written == 3
    arr[2, 600, 1090] = 0  # all zeros again: the chunk leaves the disk
    store.flush()
    assert _chunks(path) == {"c/1/0/0"}
    assert store.stored_slices() == {1}
    assert not [p for p in path.rglob("*.partial")]


def test_unpainted_store_writes_no_classes(tmp_path):
    path = tmp_path / f"em{LABEL_STORE_SUFFIX}"
    store = LabelStore.create(path, (2, 64, 64), np.uint8)
    result = store.save_changes(path, ["a"], ["#111"])
    assert not result.saved and not (tmp_path / "em.napari-unet-labels.json").exists()


def test_reopen_is_lazy_and_equal(tmp_path):
    path = tmp_path / f"em{LABEL_STORE_SUFFIX}"
    store = LabelStore.create(path, (4, 300, 200), np.uint8)
    truth = np.zeros((4, 300, 200), np.uint8)
    truth[3, 100:250, 50:60] = 5
    store.array[3] = truth[3]
    store.save_changes(path, ["a"], ["#abc"])
    again, restored, classes, problem = open_label_store(path, truth.shape, np.uint8)
    assert restored and problem is None and classes == (["a"], ["#abc"])
    assert isinstance(again.array, zarr.Array) and again.stored_slices() == {3}
    np.testing.assert_array_equal(again.array[:], truth)
    assert again.array[:2].max() == 0


def test_a_2d_store(tmp_path):
    path = tmp_path / f"im{LABEL_STORE_SUFFIX}"
    store = LabelStore.create(path, (700, 600), np.uint8)
    store.array[650, 10] = 1
    assert store.flush().slices == (0,) and _chunks(path) == {"c/1/0"}
    assert store.stored_slices() == {0}


def test_bad_stores_are_refused_and_kept(tmp_path):
    path = tmp_path / f"em{LABEL_STORE_SUFFIX}"
    LabelStore.create(path, (2, 64, 64), np.uint8)
    with pytest.raises(AutosaveError, match="shape"):
        LabelStore.open(path, (3, 64, 64))
    store, restored, _, problem = open_label_store(path, (3, 64, 64), np.uint8)
    assert not restored and "not restored" in problem and store.array.shape == (3, 64, 64)
    assert len(list(tmp_path.glob(f"em{LABEL_STORE_SUFFIX}.*.bak"))) == 1  # the old one is kept
    junk = tmp_path / f"junk{LABEL_STORE_SUFFIX}"
    junk.mkdir()
    (junk / "zarr.json").write_text("{not json")
    with pytest.raises(AutosaveError, match="not a readable zarr"):
        LabelStore.open(junk, (2, 64, 64))
    floats = tmp_path / f"floats{LABEL_STORE_SUFFIX}"
    zarr.create_array(store=str(floats), shape=(2, 64, 64), dtype="f4")
    with pytest.raises(AutosaveError, match="unsigned"):
        LabelStore.open(floats, (2, 64, 64))
    meta = json.loads((floats / "zarr.json").read_text())
    assert meta["data_type"] == "float32"


def test_location_follows_the_autosave_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    data = tmp_path / "data"
    data.mkdir()
    stack = data / "em.tif"
    assert label_store_path_for(stack, "x") == data / f"em{LABEL_STORE_SUFFIX}"
    assert (
        label_store_path_for(stack, "x", tmp_path / "p")
        == tmp_path / "p" / f"em{LABEL_STORE_SUFFIX}"
    )
    assert label_store_path_for(None, "img") == default_autosave_dir() / f"img{LABEL_STORE_SUFFIX}"
    os.chmod(data, 0o555)  # a read-only data folder is never written
    try:
        assert (
            label_store_path_for(stack, "x") == default_autosave_dir() / f"em{LABEL_STORE_SUFFIX}"
        )
    finally:
        os.chmod(data, 0o755)
