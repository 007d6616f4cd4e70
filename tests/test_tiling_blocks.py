"""Block-wise prediction: YX blocks with exact halos are bit-identical to whole slices; lazy in, lazy out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.completion import (
    BlockRecorder,
    RecordedTarget,
    SliceRecorder,
    missing_blocks,
    missing_slices,
    read_record,
    start_record,
)
from napari_unet.dihedral import dihedral
from napari_unet.model import UNet
from napari_unet.tiling import predict_dask, predict_tiled
from napari_unet.tiling.blocks import block_grid, frame_map, reflect_index
from napari_unet.tiling.geometry import plan_tiles
from napari_unet.tiling.scheduling import IN_FLIGHT_MIN

NORM = {"mean": 0.5, "std": 0.25}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(padding: str, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(depth=3, base_channels=4, padding=padding).eval()


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    return np.random.default_rng(0).random((2, 157, 203)).astype(np.float32)


class _CountingArray:
    """A lazy array that remembers the largest region read (how big a read the engine makes)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.largest = 0

    def __getitem__(self, key):
        part = self.data[key]
        self.largest = max(self.largest, part.size)
        return part


def test_reflect_index_and_frames_match_numpy_and_dihedral():
    for n in (1, 2, 5, 9):
        idx = np.arange(-30, n + 30)
        np.testing.assert_array_equal(
            reflect_index(idx, n), np.pad(np.arange(n), 30, mode="reflect")
        )
    img = np.arange(12).reshape(3, 4)
    for k in range(8):
        fm = frame_map(k)
        d = dihedral(img, k)
        rows = np.arange(d.shape[0])
        cols = np.arange(d.shape[1])
        r = img.shape[fm.row_axis] - 1 - rows if fm.row_reversed else rows
        c = img.shape[1 - fm.row_axis] - 1 - cols if fm.col_reversed else cols
        rebuilt = img[np.ix_(c, r)].T if fm.transposed else img[np.ix_(r, c)]
        np.testing.assert_array_equal(rebuilt, d)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("probabilities", [False, True])
def test_blocks_bit_identical_to_whole_slices(vol, padding, probabilities):
    """Blocks much smaller than a slice give exactly the whole-slice result (np.array_equal)."""
    net = _net(padding)
    plan = plan_tiles(net, vol.shape[1:], 64)
    opts = {"tile_size": 64, "normalization": NORM, "device": "cpu", "batch_size": 2}
    whole = predict_tiled(net, vol, return_probabilities=probabilities, block_size=10**6, **opts)
    assert len(block_grid(plan, 10**6)) == 1  # the whole-slice path
    assert len(block_grid(plan, 60)) >= 6
    source = _CountingArray(vol)
    blocks = predict_tiled(
        net, source, return_probabilities=probabilities, block_size=(60, 90), **opts
    )
    assert source.largest < vol.shape[1] * vol.shape[2]  # never a whole slice
    if probabilities:
        assert np.array_equal(blocks[0], whole[0]) and np.array_equal(blocks[1], whole[1])
    else:
        assert np.array_equal(blocks, whole)


def test_blocks_with_tta_and_a_2d_image_bit_identical(vol):
    net = _net("valid", 1)
    img = vol[0, :90, :130]
    opts = {"tile_size": 48, "normalization": NORM, "tta": True, "return_probabilities": True}
    whole = predict_tiled(net, img, block_size=10**6, **opts)
    blocks = predict_tiled(net, img, block_size=40, **opts)
    assert np.array_equal(blocks[0], whole[0]) and np.array_equal(blocks[1], whole[1])


def test_zarr_in_recorded_zarr_out_block_by_block(vol, tmp_path):
    """A zarr input and a recorded zarr output: a slice is recorded once all its blocks are in."""
    zarr = pytest.importorskip("zarr")
    net = _net("same")
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=vol.shape, dtype=vol.dtype)
    src[...] = vol
    ref = predict_tiled(net, vol, tile_size=64, normalization=NORM, block_size=10**6)
    out = zarr.open_array(
        str(tmp_path / "out.zarr"), mode="w", shape=vol.shape, dtype=np.uint8, chunks=(1, 64, 64)
    )
    start_record(out, {"model": "m"})
    recorder = SliceRecorder(out, read_record(out))
    target = RecordedTarget(out, [0, 1], recorder, channels=False)
    target[(0, slice(0, 50), slice(None))] = np.ones((50, vol.shape[2]), np.uint8)
    assert recorder.done == set()  # a part of a slice is not the slice
    predict_tiled(net, src, out=target, tile_size=64, normalization=NORM, block_size=60)
    recorder.flush()
    assert missing_slices(out) == []
    np.testing.assert_array_equal(out[...], ref)


def test_block_record_and_missing_blocks(tmp_path):
    zarr = pytest.importorskip("zarr")
    arr = zarr.open_array(str(tmp_path / "r.zarr"), mode="w", shape=(2, 50, 70), dtype=np.uint8)
    start_record(arr, {"model": "m"})
    rec = BlockRecorder(arr, read_record(arr), (32, 32))
    assert rec.n_blocks == 6
    for b in range(6):
        rec.mark_block(1, b)
    rec.mark_block(0, 4)
    rec.flush()
    assert missing_slices(arr) == [0]  # the slice-level API sees slice 1 done
    assert missing_blocks(arr, (32, 32)) == [(0, b) for b in (0, 1, 2, 3, 5)]
    assert missing_blocks(arr, (64, 64)) == [(0, b) for b in range(2)]  # another grid: redo
    BlockRecorder(arr, read_record(arr), (32, 32)).finish()
    assert missing_blocks(arr, (32, 32)) == [] and missing_slices(arr) == []


def test_predict_dask_blocks_tiff_on_local_cluster_and_resume(tmp_path):
    """A TIFF read on the workers, blocks written into zarr, recorded; resume does only what is missing."""
    pytest.importorskip("distributed")
    tifffile = pytest.importorskip("tifffile")
    zarr = pytest.importorskip("zarr")
    from distributed import Client, LocalCluster

    from napari_unet.tiling.sources import TiffSource

    net = _net("valid", 2)
    img = np.random.default_rng(3).integers(0, 256, (2, 130, 150), dtype=np.uint8)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img, imagej=True)
    norm = {"mean": 128.0, "std": 70.0}
    ref, pref = predict_tiled(
        net, img, tile_size=64, normalization=norm, block_size=10**6, return_probabilities=True
    )
    source = TiffSource.open(path)
    assert source.shape == img.shape
    shape, chunks = img.shape, (1, 32, 48)
    out = zarr.open_array(
        str(tmp_path / "o.zarr"), mode="w", shape=shape, dtype=np.uint8, chunks=chunks
    )
    pout = zarr.open_array(
        str(tmp_path / "p.zarr"), mode="w", shape=(2, *shape), dtype=np.float32, chunks=(1, *chunks)
    )
    for a in (out, pout):
        start_record(a, {"model": "m"})
    seen: list[tuple[int, int]] = []
    opts = {"tile_size": 64, "normalization": norm, "block_size": 64, "device": "cpu"}
    with (
        LocalCluster(
            processes=False, n_workers=2, threads_per_worker=1, host="127.0.0.1",
            protocol="tcp://", dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        held: list[int] = []  # futures the client holds when a block is done

        def progress(d: int, t: int) -> None:
            seen.append((d, t))
            held.append(len(client.futures))

        predict_dask(net, source, out=out, probabilities_out=pout, progress=progress, **opts)
        assert seen[-1] == (24, 24)  # 2 slices x 3 x 4 blocks of 64 x 48 (whole chunks)
        # a sliding window of 8 tasks (2 threads x 4, at least 8), not all 24 at once
        assert 1 <= max(held) <= IN_FLIGHT_MIN < 24
        # labels equal; probabilities to rounding: the worker threads' OpenMP thread count
        # (not the test's torch.set_num_threads(1)) changes the convolutions' summation order
        assert np.array_equal(out[...], ref)
        np.testing.assert_allclose(pout[...], pref, atol=1e-5, rtol=0)
        assert missing_slices(out) == [] and missing_blocks(out, (64, 48)) == []

        # an interrupted run: slice 1's blocks 0 and 5 are not recorded (and not written)
        for a in (out, pout):
            rec = read_record(a)
            rec.update(done="0", blocks={"size": [64, 48], "done": {"1": "1-4,6-11"}})
            a.attrs["napari_unet"] = rec
        out[1, 0:64, 0:48] = 0
        out[1, 64:128, 48:96] = 0
        out[0, :10, :10] = 0  # recorded done: resume must not touch it
        predict_dask(net, source, out=out, probabilities_out=pout, resume=True, **opts)
        assert not out[0, :10, :10].any()
        assert np.array_equal(out[1], ref[1])
        assert missing_slices(out) == []

        # a lazy result of a 2-D image, blocks from a dask array's chunks
        da = pytest.importorskip("dask.array")
        lazy = predict_dask(net, da.from_array(img[0], chunks=(40, 50)), **opts)
        assert np.array_equal(lazy.compute(), ref[0])


def test_out_none_holds_no_float_slice():
    """``predict_tiled(out=None)``: beyond the uint8 result, numpy holds far less than one
    float32 copy of the slice (the engine works block by block)."""
    import tracemalloc

    net = _net("valid", 4)
    img = np.random.default_rng(5).integers(0, 256, (1200, 1300), dtype=np.uint8)
    opts = {"tile_size": 64, "normalization": {"mean": 128.0, "std": 70.0}, "block_size": 128}
    predict_tiled(net, img[:200, :200], **opts)  # warm-up
    tracemalloc.start()
    try:
        labels = predict_tiled(net, img, **opts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert labels.dtype == np.uint8 and labels.shape == img.shape
    assert peak - labels.nbytes < img.size * 4 / 4, f"numpy peak {peak / 2**20:.1f} MiB"
