"""Zarr results written slice by slice: an interrupted one says which slices are missing and resumes."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import tifffile
import zarr
from fault_helpers import fill_disk, one_line_error, python, wait_for

from napari_unet.cli import main
from napari_unet.completion import IncompleteResultError, RecordedTarget, missing_slices
from napari_unet.evaluation import evaluate_arrays

#: a prediction that hangs (as if the machine died) after writing three slices
_HANG_AFTER_3 = """
import time
from napari_unet import completion
from napari_unet.cli import main
completion.FLUSH_EVERY_S = 0.0
real = completion.RecordedTarget.__setitem__
written = []
def slow(self, key, value):
    real(self, key, value)
    if not self._channels:
        written.append(key)
        if len(written) == 3:
            print("THREE", flush=True)
            time.sleep(60)
completion.RecordedTarget.__setitem__ = slow
main(ARGV)
"""


def _predict(data, out, *extra):
    return ["predict", "--model", str(data["model"]), "--image", str(data["image"]), "--out",
            str(out), "--device", "cpu", "--threads", "1", "--batch-size", "1", "-q", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "full.tif"
    assert main(_predict(data, out)) == 0
    return tifffile.imread(out)


def _killed_at_three(data, out, *extra) -> None:
    proc = python(_HANG_AFTER_3.replace("ARGV", repr(_predict(data, out, *extra))))
    try:
        wait_for(proc, "THREE")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_kill_during_zarr_prediction_then_evaluate_and_resume(
    data, tmp_path, reference, monkeypatch, capsys
):
    out = tmp_path / "p.zarr"
    _killed_at_three(data, out, "--probabilities")
    labels = zarr.open_array(str(out), mode="r")
    assert labels.shape == reference.shape  # full-shape, but not complete
    assert missing_slices(labels) == [3, 4, 5]
    assert labels.attrs["napari_unet"]["complete"] is False
    assert missing_slices(zarr.open_array(str(tmp_path / "p_probabilities.zarr"))) == [2, 3, 4, 5]

    code = main(["evaluate", "--prediction", str(out), "--truth", str(data["truth"])])
    one_line_error(capsys, code, str(out), "is incomplete", "slice(s) 3-5 of 6 were never written",
                   "--resume")  # fmt: skip
    with pytest.raises(IncompleteResultError, match="3-5"):
        evaluate_arrays(labels, tifffile.imread(data["truth"]))

    one_line_error(capsys, main(_predict(data, out, "--probabilities")), "already exists")
    one_line_error(capsys, main(_predict(data, out, "--probabilities", "--resume", "--tta")),
                   "--resume", "another tta")  # fmt: skip

    written: list[int] = []
    real = RecordedTarget.__setitem__

    def spy(self, key, value):
        real(self, key, value)
        if not self._channels:
            written.append(self._positions[int(key)])

    monkeypatch.setattr(RecordedTarget, "__setitem__", spy)
    assert main(_predict(data, out, "--probabilities", "--resume")) == 0
    assert written == [2, 3, 4, 5]  # only the slices a record lacks (2: its probabilities)
    labels = zarr.open_array(str(out), mode="r")
    np.testing.assert_array_equal(labels[...], reference)
    assert labels.attrs["napari_unet"]["complete"] is True
    assert labels.attrs["napari_unet"]["slices"] == list(range(6))
    assert main(["evaluate", "--prediction", str(out), "--truth", str(data["truth"])]) == 0


def test_evaluate_a_subset_of_an_incomplete_result(data, tmp_path):
    out = tmp_path / "p.zarr"
    _killed_at_three(data, out)
    labels = zarr.open_array(str(out), mode="r")
    truth = tifffile.imread(data["truth"])
    evaluate_arrays(labels, truth, slices=[0, 1, 2])  # written slices only: fine
    with pytest.raises(IncompleteResultError, match="slice\\(s\\) 4 of 6"):
        evaluate_arrays(labels, truth, slices=[1, 4])


def test_full_disk_during_zarr_prediction_then_resume(data, make_disk, monkeypatch, capsys,
                                                      reference):  # fmt: skip
    from napari_unet import completion

    disk = make_disk("1m")
    out = disk / "p.zarr"
    monkeypatch.setattr(completion, "FLUSH_EVERY_S", 0.0)
    real = completion.SliceRecorder.mark

    def fill_after_first(self, z):
        real(self, z)
        if len(self.done) == 1:
            fill_disk(disk)

    monkeypatch.setattr(completion.SliceRecorder, "mark", fill_after_first)
    code = main(_predict(data, out))
    line = one_line_error(capsys, code, str(out), "the disk is full", "--resume")
    assert "1 of 6 slice(s) are written and recorded" in line
    assert missing_slices(zarr.open_array(str(out), mode="r")) == [1, 2, 3, 4, 5]
    monkeypatch.setattr(completion.SliceRecorder, "mark", real)
    (disk / "filler.bin").unlink()
    assert main(_predict(data, out, "--resume")) == 0
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...], reference)


def test_foreign_zarr_without_a_record_is_read_as_before(data, tmp_path):
    path = tmp_path / "foreign.zarr"
    truth = tifffile.imread(data["truth"])
    arr = zarr.open_array(str(path), mode="w", shape=truth.shape, dtype=truth.dtype)
    arr[...] = truth
    assert missing_slices(arr) is None
    assert main(["evaluate", "--prediction", str(path), "--truth", str(data["truth"])]) == 0
