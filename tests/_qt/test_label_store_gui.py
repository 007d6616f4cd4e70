"""Annotate with a big stack (threshold lowered): labels in an on-disk zarr store, chunk autosave."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr
from qt_helpers import dock, wait_idle

from napari_unet import label_store
from napari_unet.label_store import LABEL_STORE_SUFFIX, LabelStore

SHAPE = (6, 1024, 1024)  # 6 MiB of uint8 labels: "big" once the threshold is lowered


@pytest.fixture
def big(monkeypatch, tmp_path, make_napari_viewer):
    """``make() -> (viewer, annotate dock)`` for a stack "read from" tmp_path/stack.tif."""
    monkeypatch.setattr(label_store, "LABEL_STORE_MIN_VOXELS", 1 << 20)
    image = np.zeros(SHAPE, np.uint8)
    meta = {"napari_unet": {"path": str(tmp_path / "stack.tif")}}

    def make():
        viewer = make_napari_viewer()
        viewer.add_image(image, name="stack", metadata=meta)
        ann = dock(viewer, "1 Annotate")
        ann.set_autosave(interval=600.0)  # ticks are driven by the test
        return viewer, ann

    return make


def _chunk_files(store_path):
    return {
        p.relative_to(store_path).as_posix(): p.stat().st_mtime_ns
        for p in (store_path / "c").rglob("*")
        if p.is_file()
    }


def _tick(qtbot, ann):
    n = ann.save_count
    ann._autosave_tick()
    wait_idle(qtbot, ann, "autosave")
    qtbot.waitUntil(lambda: ann.save_count > n, timeout=10_000)


def _stroke(labels, z, y, x, value=1):
    labels.brush_size = 9
    labels.paint((z, y, x), value)  # one brush dab: one undo item, one paint event


def test_big_stack_labels_live_in_a_zarr_store(big, tmp_path):
    _viewer, ann = big()
    tracemalloc.start()
    try:
        labels = ann.create_labels()
        numpy_blocks = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
        )
    finally:
        tracemalloc.stop()
    assert isinstance(labels.data, zarr.Array)
    biggest = max((t.size for t in numpy_blocks.traces), default=0)
    assert biggest < np.prod(SHAPE) // 2  # no full-size array was allocated (one slice is 1/6)
    path = tmp_path / f"stack{LABEL_STORE_SUFFIX}"
    assert ann.autosave_path() == path and (path / "zarr.json").is_file()
    assert not (path / "c").exists()  # nothing painted, no chunk on disk


def test_autosave_writes_only_the_painted_chunks_and_undo_works(big, tmp_path, qtbot):
    viewer, ann = big()
    labels = ann.create_labels()
    store = ann._autosave
    path = tmp_path / f"stack{LABEL_STORE_SUFFIX}"
    results = []
    shown = ann._on_saved
    ann._on_saved = lambda result: (results.append(result), shown(result))
    viewer.dims.set_point(0, 2)
    _stroke(labels, 2, 100, 100)
    _tick(qtbot, ann)
    assert _chunk_files(path).keys() == {"c/2/0/0"}
    first = _chunk_files(path)
    _stroke(labels, 4, 700, 900, 2)
    _tick(qtbot, ann)
    files = _chunk_files(path)
    assert files.keys() == {"c/2/0/0", "c/4/1/1"}
    assert files["c/2/0/0"] == first["c/2/0/0"]  # the untouched chunk was not rewritten
    assert store.chunks_written == 2
    assert [r.encoded for r in results] == [(2,), (4,)]
    qtbot.waitUntil(lambda: set(ann.state.labelled_slices) == {2, 4}, timeout=10_000)
    # the classes go with the labels
    assert (tmp_path / "stack.napari-unet-labels.json").is_file()

    labels.undo()  # the second stroke goes: its chunk is all zeros again and leaves the disk
    assert labels.data[4, 700, 900] == 0 and labels.data[2, 100, 100] == 1
    _tick(qtbot, ann)
    assert _chunk_files(path).keys() == {"c/2/0/0"}
    qtbot.waitUntil(lambda: set(ann.state.labelled_slices) == {2}, timeout=10_000)
    labels.redo()
    assert labels.data[4, 700, 900] == 2


def test_close_then_reopen_restores_the_store_lazily(big, tmp_path, qtbot):
    viewer, ann = big()
    labels = ann.create_labels()
    ann.set_classes(["membrane", "cell", "mito"])
    _stroke(labels, 1, 50, 60, 3)
    _stroke(labels, 5, 1000, 20, 2)
    painted = np.asarray(labels.data[:])
    viewer.close()  # no tick ran: closing writes the painted chunks (only those)

    path = tmp_path / f"stack{LABEL_STORE_SUFFIX}"
    assert _chunk_files(path).keys() == {"c/1/0/0", "c/5/1/0"}
    np.testing.assert_array_equal(LabelStore.open(path, SHAPE).array[:], painted)

    _viewer2, ann2 = big()
    assert "Autosaved labels found" in ann2.autosave_hint.text()
    labels2 = ann2.create_labels()
    assert isinstance(labels2.data, zarr.Array)  # opened lazily, not read into memory
    assert ann2.state.class_names == ["membrane", "cell", "mito"]
    np.testing.assert_array_equal(labels2.data[:], painted)
    qtbot.waitUntil(lambda: set(ann2.state.labelled_slices) == {1, 5}, timeout=10_000)
    assert "restored autosaved labels" in ann2.status.text()


def test_a_brush_dab_on_a_store_reads_no_other_slice(big, monkeypatch):
    """napari checks every dab's label with ``data[0]``: on a store, a whole slice's chunks."""
    viewer, ann = big()
    labels = ann.create_labels()
    viewer.dims.set_current_step(0, 3)  # napari redraws the slice it shows: this one
    disk = ann._autosave._store._store  # the LocalStore under the write-back overlay
    read: list[str] = []
    get = disk.get

    async def counting(key, *args, **kwargs):
        read.append(key)
        return await get(key, *args, **kwargs)

    monkeypatch.setattr(disk, "get", counting)
    _stroke(labels, 3, 100, 100)
    assert labels.data[3, 100, 100] == 1
    assert read and all(key.startswith("c/3/") for key in read if key.startswith("c/"))
    with pytest.raises(Exception, match="300"):  # napari's own range check still runs
        labels.paint((3, 10, 10), 300)
    assert labels.data[3, 10, 10] == 0
