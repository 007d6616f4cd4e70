"""SliceSelection (the CLI's view of the --slices of a stack) reads YX blocks, not whole slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_unet.cli._common import SliceSelection
from napari_unet.model import UNet
from napari_unet.tiling import predict_tiled

SHAPE = (4, 150, 170)
NORM = {"mean": 0.5, "std": 0.25}


class _RecordingArray:
    """A real on-disk zarr array that records every index it is asked for (instrumentation)."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]


@pytest.fixture()
def stack(tmp_path) -> tuple[np.ndarray, _RecordingArray]:
    data = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    arr = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=SHAPE, chunks=(1, 32, 32), dtype="f4"
    )
    arr[:] = data
    return data, _RecordingArray(zarr.open_array(str(tmp_path / "in.zarr"), mode="r"))


def _pixels(key: tuple, hw: tuple[int, int]) -> int:
    """Pixels of a ``(z, rows, columns)`` index into a slice of shape ``hw``."""
    ys, xs = key[1:]
    return len(range(*ys.indices(hw[0]))) * len(range(*xs.indices(hw[1])))


def test_block_index_reads_only_the_block(stack) -> None:
    data, rec = stack
    sel = SliceSelection(rec, [3, 1])
    block = sel[1, 10:40, 25:90]
    assert rec.keys == [(1, slice(10, 40), slice(25, 90))]  # the block, never slice 1 whole
    np.testing.assert_array_equal(block, data[1][10:40, 25:90])
    np.testing.assert_array_equal(block, sel[1][10:40, 25:90])  # = the full-slice read
    assert rec.keys[-1] == 1  # that one read the slice (an integer index)
    rec.keys.clear()
    strided = sel[0, ::7, ::5]  # the normalisation sample's read
    assert rec.keys == [(3, slice(None, None, 7), slice(None, None, 5))]
    np.testing.assert_array_equal(strided, data[3, ::7, ::5])
    np.testing.assert_array_equal(sel[-1, ...], data[1])  # an Ellipsis: the slice, as before
    with pytest.raises(IndexError):
        sel[2, 0:4, 0:4]


def test_blockwise_prediction_through_a_selection_reads_blocks(stack) -> None:
    data, rec = stack
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=2, padding="valid").eval()
    kw = {"tile_size": 64, "block_size": 48, "normalization": NORM, "device": "cpu"}
    got = predict_tiled(net, SliceSelection(rec, [3, 1]), **kw)
    hw = SHAPE[1:]
    reads = [k for k in rec.keys if isinstance(k, tuple)]
    assert reads and len(reads) == len(rec.keys)  # every read is (z, rows, columns)
    assert {k[0] for k in reads} == {3, 1}  # slices outside the selection are never read
    largest = max(_pixels(k, hw) for k in reads)
    assert largest < hw[0] * hw[1] / 2  # a block with its halo, far from the whole slice
    assert all(sum(k[0] == z for k in reads) > 1 for z in (3, 1))  # several blocks per slice
    whole = predict_tiled(net, data[[3, 1]], **kw)  # bit-identical to the numpy prediction
    np.testing.assert_array_equal(got, whole)
