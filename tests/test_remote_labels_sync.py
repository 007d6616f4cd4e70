"""The training process's labels sync reads only the painted slices of a big stack's label store."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.label_store import LabelStore
from napari_unet.sample_data import synthetic_em
from napari_unet.training import Finished, Iteration, LabelsChanged, TrainConfig
from napari_unet.training.remote.process import _LabelsSync

SHAPE = (40, 64, 72)


class _RecordingLabels:
    """The store's zarr array, recording each index it is read at (instrumentation, not a fake:
    reads, writes and the store all go to the real array on disk)."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.store = array.store
        self.reads: list = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]

    def __setitem__(self, key, value) -> None:
        self.array[key] = value


def _painted(labels) -> None:
    labels[3, 5:20, 10:30] = 1
    labels[17, 40:60, 0:8] = 2


@pytest.fixture()
def store(tmp_path) -> LabelStore:
    store = LabelStore.create(tmp_path / "stack.napari-unet-labels.zarr", SHAPE, np.uint8)
    _painted(store.array)
    store.flush()  # slice 3 and 17 on disk ...
    store.array[25, 0:4, 0:4] = 1  # ... and 25 only pending in the write-back overlay
    return store


def test_initial_scan_reads_only_stored_slices(store) -> None:
    rec = _RecordingLabels(store.array)
    sync = _LabelsSync(rec)
    first = sync.initial()
    assert sorted(first) == [3, 17, 25]
    assert sorted(rec.reads) == [3, 17, 25]  # the 37 empty slices are never read
    np.testing.assert_array_equal(first[3], store.array[3])
    assert first[17][40:60, 0:8].min() == 2 and first[25].sum() == 16

    # the same labels as numpy: the same slices sent (numpy is scanned slice by slice)
    dense = np.zeros(SHAPE, np.uint8)
    _painted(dense)
    dense[25, 0:4, 0:4] = 1
    plain = _LabelsSync(dense).initial()
    assert sorted(plain) == sorted(first)
    for z in plain:
        np.testing.assert_array_equal(plain[z], first[z])


def test_changes_and_sweep_on_a_store(store) -> None:
    rec = _RecordingLabels(store.array)
    sync = _LabelsSync(rec)
    sync.initial()
    rec.reads.clear()
    rec[17] = 0  # erased: zarr deletes its chunks, the slice is no longer stored
    rec[30, 1:3, 1:3] = 2  # painted without an event
    changed = sync.changes(range(SHAPE[0]))  # "any slice may have changed"
    assert sorted(changed) == [17, 30] and changed[17] is None
    assert changed[30].sum() == 8
    assert set(rec.reads) <= {3, 17, 25, 30}  # stored or sent before, nothing else
    assert sync.sweep() == {}  # nothing new: the sweep reads the stored slices again
    store.flush()  # flushed to disk: still found, nothing changed
    assert sync.changes(range(SHAPE[0])) == {}
    rec[3, 5:20, 10:30] = 2  # repainted: a changed signature
    assert sorted(sync.sweep()) == [3]


def test_training_process_trains_on_a_label_store(tmp_path) -> None:
    from napari_unet.training.remote import ModelStart, TrainingProcess, TrainResult

    image, truth = synthetic_em((6, 96, 96), seed=3, cell_size=22)
    store = LabelStore.create(tmp_path / "l.napari-unet-labels.zarr", truth.shape, np.uint8)
    store.array[0] = truth[0]
    cfg = TrainConfig(
        iterations=30,
        num_threads=1,
        batch_size=4,
        patch_size=64,
        preview_every_s=3600.0,
        labels_rescan_s=3600.0,
        checkpoint_path=str(tmp_path / "m.pt"),
    )
    process = TrainingProcess()
    events = []
    for event in process.run(
        image, store.array, cfg, ModelStart("small"), (["a", "b"], ["red", "blue"])
    ):
        events.append(event)
        if isinstance(event, Iteration) and event.iteration == 3:
            store.array[2] = truth[2]  # painted into the store during training
            process.notify_labels([2])
    changed = [e for e in events if isinstance(e, LabelsChanged)]
    assert changed and 2 in changed[-1].slices
    finished = next(e for e in events if isinstance(e, Finished))
    assert finished.reason == "completed" and finished.iterations == 30
    assert isinstance(events[-1], TrainResult) and process.process.exitcode == 0
