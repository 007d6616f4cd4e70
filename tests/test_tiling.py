"""Tests of napari_unet.tiling: exact overlap-tile stitching, out-of-core, dask, cancellation."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from napari_unet.model import UNet
from napari_unet.tiling import (
    PredictionCancelled,
    TilingWarning,
    exact_overlap,
    plan_tiles,
    predict_dask,
    predict_tiled,
)

NORM = {"mean": 0.5, "std": 0.25}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny networks run faster single-threaded (and much faster on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    kwargs.setdefault("depth", 3)
    kwargs.setdefault("base_channels", 4)
    return UNet(**kwargs).eval()


@pytest.fixture(scope="module")
def valid3() -> UNet:
    """Valid padding, depth 3 (output tiles are multiples of size_multiple)."""
    return _net(0)


@pytest.fixture(scope="module")
def valid4() -> UNet:
    """Valid padding, depth 4: output tiles are 4 mod 8, the pooling-phase case."""
    return _net(1, depth=4)


@pytest.fixture(scope="module")
def same4() -> UNet:
    """Same padding, depth 4, eval-mode batch norm with non-trivial running statistics."""
    net = _net(2, depth=4, padding="same", norm="batch")
    gen = torch.Generator().manual_seed(3)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).random((301, 517)).astype(np.float32)


def _probs(net, img, **kwargs):
    kwargs.setdefault("normalization", NORM)
    kwargs.setdefault("device", "cpu")
    return predict_tiled(net, img, return_probabilities=True, **kwargs)


# --------------------------------------------------------------------------- seams
def test_valid_seamless_odd_image(valid4, image):
    """Valid net (depth 4): two tilings and one whole-image tile agree to 1e-4."""
    whole_labels, whole = _probs(valid4, image, tile_size=2048)
    assert plan_tiles(valid4, image.shape, 2048).n_tiles == 1
    for tile in (200, 300):
        plan = plan_tiles(valid4, image.shape, tile)
        assert plan.n_tiles > 4
        labels, probs = _probs(valid4, image, tile_size=tile)
        assert probs.shape == (2, 301, 517) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, whole, atol=1e-4, rtol=0)
        assert (labels == whole_labels).mean() > 0.9999


def test_valid_whole_image_is_network_on_mirrored_image(valid3):
    """The stitched result is the network applied to the mirror-extended image."""
    rng = np.random.default_rng(1)
    img = rng.random((37, 53)).astype(np.float32)
    _, probs = _probs(valid3, img, tile_size=64)  # several tiles
    c = valid3.context
    in_h, in_w = valid3.valid_input_size((37 + c, 53 + c))
    x = (img - NORM["mean"]) / NORM["std"]
    x = np.pad(x, ((c // 2, in_h - 37 - c // 2), (c // 2, in_w - 53 - c // 2)), mode="reflect")
    with torch.inference_mode():
        ref = torch.softmax(valid3(torch.from_numpy(x)[None, None]), 1)[0, :, :37, :53].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)


def test_valid_seamless_stack(valid3):
    stack = np.random.default_rng(2).random((3, 90, 131)).astype(np.float32)
    _, whole = _probs(valid3, stack, tile_size=512)
    _, tiled = _probs(valid3, stack, tile_size=64, batch_size=3)
    assert whole.shape == (2, 3, 90, 131)
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)
    # each slice equals its own 2-D prediction
    _, second = _probs(valid3, stack[1], tile_size=64)
    np.testing.assert_allclose(tiled[:, 1], second, atol=1e-5, rtol=0)


def test_same_padded_tiled_equals_whole(same4, image):
    """Same padding with the default (exact) overlap.

    Stated tolerance: 1e-5 on the float32 probabilities *everywhere* (image
    borders included), because every kept pixel's receptive field lies inside
    its tile and border tiles are flush with the image edges.
    """
    _, whole = _probs(same4, image, tile_size=1024)
    for tile in (224, 320):
        plan = plan_tiles(same4, image.shape, tile)
        assert plan.n_tiles >= 2
        _, probs = _probs(same4, image, tile_size=tile)
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)


def test_exact_overlap_is_minimal():
    """exact_overlap(3) is exact and one pooling step less is not."""
    assert [exact_overlap(d) for d in range(1, 6)] == [4, 16, 44, 96, 192]
    net = _net(4, depth=3, base_channels=2, padding="same")
    img = np.random.default_rng(4).random((64, 400)).astype(np.float32)
    _, whole = _probs(net, img, tile_size=512)
    ov = exact_overlap(3)
    _, exact = _probs(net, img, tile_size=ov + 64, overlap=ov)
    _, short = _probs(net, img, tile_size=ov + 64, overlap=ov - net.size_multiple)
    np.testing.assert_allclose(exact, whole, atol=1e-5, rtol=0)
    assert np.abs(short - whole).max() > 1e-4


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (17, 300), (1, 40)])
def test_tiny_and_thin_images(valid4, same4, shape):
    img = np.random.default_rng(5).random(shape).astype(np.float32)
    for net in (valid4, same4):
        labels, probs = _probs(net, img)
        assert labels.shape == shape and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {1, 2}
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        labels_only = predict_tiled(net, img, normalization=NORM)
        np.testing.assert_array_equal(labels_only, labels)


@pytest.mark.parametrize("shape", [(5, 7), (1, 9)])
def test_tiny_image_repeated_reflection(valid4, shape):
    """A 44 px mirror border around a tiny image: repeated reflection like np.pad."""
    h, w = shape
    img = np.random.default_rng(6).random(shape).astype(np.float32)
    _, probs = _probs(valid4, img)
    c = valid4.context
    in_h, in_w = valid4.valid_input_size((h + c, w + c))
    x = np.pad(
        (img - NORM["mean"]) / NORM["std"],
        ((c // 2, in_h - h - c // 2), (c // 2, in_w - w - c // 2)),
        mode="reflect",
    )
    # the reflection itself: period 2 * (n - 1), a length-1 axis is constant
    row = np.pad(np.arange(5.0), (c // 2, 0), mode="reflect")
    assert row[0] == [0, 1, 2, 3, 4, 3, 2, 1][(c // 2) % 8]
    assert np.pad(np.ones(1), (c // 2, c // 2), mode="reflect").tolist() == [1.0] * (c + 1)
    with torch.inference_mode():
        ref = torch.softmax(valid4(torch.from_numpy(x)[None, None]), 1)[0, :, :h, :w].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)


def test_one_slice_volume_three_classes_and_dtypes():
    net = _net(7, n_classes=3)
    vol = np.random.default_rng(7).integers(0, 256, (1, 40, 50), dtype=np.uint8)
    labels, probs = predict_tiled(
        net, vol, return_probabilities=True, probabilities_dtype=np.float16
    )
    assert labels.shape == (1, 40, 50) and labels.dtype == np.uint8
    assert probs.shape == (3, 1, 40, 50) and probs.dtype == np.float16
    assert labels.min() >= 1 and labels.max() <= 3
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=3e-3)
    many = _net(8, depth=2, base_channels=2, n_classes=300)
    out = predict_tiled(many, vol[0, :9, :9], normalization={"mean": 128, "std": 64})
    assert out.dtype == np.uint16 and out.min() >= 1 and out.max() <= 300


def test_default_normalization_is_volume_statistics(valid3):
    vol = np.random.default_rng(9).integers(0, 256, (3, 30, 40), dtype=np.uint8)
    default = predict_tiled(valid3, vol, return_probabilities=True)[1]
    stats = {"mean": float(vol.mean()), "std": float(vol.std())}
    explicit = predict_tiled(valid3, vol, return_probabilities=True, normalization=stats)[1]
    np.testing.assert_allclose(default, explicit, atol=1e-5)


# --------------------------------------------------------------------------- inputs/outputs
def test_array_types_and_preallocated_zarr(valid3, tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    vol = np.random.default_rng(10).integers(0, 256, (3, 45, 61), dtype=np.uint8)
    norm = {"mean": 120.0, "std": 60.0}
    ref = predict_tiled(valid3, vol, normalization=norm, tile_size=64)

    np.save(tmp_path / "v.npy", vol)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    zin = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=vol.shape, chunks=(1, 20, 20), dtype=vol.dtype
    )
    zin[...] = vol
    for source in (mm, zin, da.from_array(vol, chunks=(2, 30, 30))):
        np.testing.assert_array_equal(
            predict_tiled(valid3, source, normalization=norm, tile_size=64), ref
        )

    zout = zarr.create_array(
        store={}, shape=vol.shape, chunks=(1, 45, 61), dtype=np.uint8, fill_value=0
    )
    zprob = zarr.create_array(
        store={}, shape=(2, *vol.shape), chunks=(2, 1, 45, 61), dtype=np.float32
    )
    labels, probs = predict_tiled(
        valid3, vol, normalization=norm, tile_size=64, out=zout, probabilities_out=zprob
    )
    assert labels is zout and probs is zprob
    np.testing.assert_array_equal(zout[...], ref)
    np.testing.assert_allclose(zprob[...].sum(0), 1.0, atol=1e-5)


def test_model_is_left_untouched_and_weight_changes_are_seen():
    net = _net(11, norm="batch")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    img = np.random.default_rng(11).random((30, 40)).astype(np.float32)
    _, first = _probs(net, img)
    assert net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    # an in-place weight update (an optimiser step) is picked up on the next call
    with torch.no_grad():
        net.head.bias.add_(torch.tensor([2.0, -2.0]))
    _, second = _probs(net, img)
    assert np.abs(second - first).max() > 0.1
    np.testing.assert_allclose(second, _probs(copy.deepcopy(net), img)[1], atol=1e-6)


# --------------------------------------------------------------------------- progress
def test_cancellation_keeps_only_finished_slices(valid3):
    vol = np.random.default_rng(12).random((4, 40, 70)).astype(np.float32)
    full = predict_tiled(valid3, vol, normalization=NORM, tile_size=64, batch_size=1)
    per_slice = plan_tiles(valid3, (40, 70), 64).n_tiles
    assert per_slice > 1
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> bool:
        calls.append((done, total))
        return done < per_slice + 1  # cancel one batch into the second slice

    out = np.zeros(vol.shape, np.uint8)
    with pytest.raises(PredictionCancelled) as info:
        predict_tiled(
            valid3, vol, normalization=NORM, tile_size=64, batch_size=1, out=out, progress=progress
        )
    assert info.value.done_slices == 1 and info.value.total_slices == 4
    np.testing.assert_array_equal(out[0], full[0])
    assert not out[1:].any()  # the slice in progress and later ones untouched
    assert calls[0] == (0, 4 * per_slice)
    assert all(total == 4 * per_slice for _, total in calls)

    # cancelling at the start writes nothing; returning None/True continues
    out2 = np.zeros(vol.shape, np.uint8)
    with pytest.raises(PredictionCancelled) as info:
        predict_tiled(valid3, vol, normalization=NORM, out=out2, progress=lambda d, t: False)
    assert info.value.done_slices == 0 and not out2.any()
    seen = []
    predict_tiled(valid3, vol, normalization=NORM, progress=lambda d, t: seen.append(d))
    assert seen[-1] == 4 * plan_tiles(valid3, (40, 70), 572).n_tiles


# --------------------------------------------------------------------------- tta
def test_tta_is_average_of_dihedral_predictions(valid3):
    img = np.random.default_rng(13).random((33, 47)).astype(np.float32)
    labels, tta = _probs(valid3, img, tta=True, tile_size=64)
    manual = np.zeros_like(tta)
    for k in range(8):
        x = img[:, ::-1] if k >= 4 else img
        x = np.ascontiguousarray(np.rot90(x, k % 4))
        _, p = _probs(valid3, x, tile_size=64)
        p = np.rot90(p, -(k % 4), axes=(1, 2))
        manual += p[:, :, ::-1] if k >= 4 else p
    manual /= 8
    np.testing.assert_allclose(tta, manual, atol=1e-5, rtol=0)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {1, 2}
    np.testing.assert_array_equal(labels, np.argmax(tta, axis=0) + 1)
    np.testing.assert_allclose(tta.sum(0), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- dask
def test_predict_dask_threaded_and_zarr_out(valid3, tmp_path):
    da = pytest.importorskip("dask.array")
    vol = np.random.default_rng(14).integers(0, 256, (3, 50, 70), dtype=np.uint8)
    norm = {"mean": 128.0, "std": 70.0}
    ref, pref = predict_tiled(
        valid3, vol, tile_size=64, normalization=norm, return_probabilities=True
    )
    arr = da.from_array(vol, chunks=(2, 25, 35))
    lazy = predict_dask(valid3, arr, tile_size=64, normalization=norm)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.uint8
    np.testing.assert_array_equal(lazy.compute(), ref)

    labels, probs = predict_dask(
        valid3, arr, tile_size=64, normalization=norm, return_probabilities=True
    )
    np.testing.assert_array_equal(labels.compute(), ref)
    # worker threads run torch with their own thread count: the float sums may differ
    # in the last bits (the labels above are equal)
    np.testing.assert_allclose(probs.compute(), pref, rtol=1e-5, atol=1e-6)

    z = predict_dask(valid3, arr, tile_size=64, normalization=norm, out=str(tmp_path / "o.zarr"))
    assert z.chunks == (1, 25, 35)
    np.testing.assert_array_equal(z[...], ref)

    np.testing.assert_array_equal(
        predict_dask(valid3, arr[1], tile_size=64, normalization=norm).compute(), ref[1]
    )
    # default normalization: the same volume statistics as predict_tiled
    np.testing.assert_array_equal(
        predict_dask(valid3, arr, tile_size=64).compute(),
        predict_tiled(valid3, vol, tile_size=64),
    )


def test_predict_dask_local_cluster(same4):
    pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    from distributed import Client, LocalCluster

    vol = np.random.default_rng(15).random((3, 64, 90)).astype(np.float32)
    ref = predict_tiled(same4, vol, tile_size=128, normalization=NORM)
    with (
        LocalCluster(
            processes=False,
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            protocol="tcp://",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster),
    ):
        result = predict_dask(
            same4, da.from_array(vol, chunks=(1, 32, 90)), tile_size=128, normalization=NORM
        )
        np.testing.assert_array_equal(result.compute(), ref)


def test_predict_dask_checkpoint_path(valid3, tmp_path):
    ckpt = pytest.importorskip("napari_unet.checkpoint")
    da = pytest.importorskip("dask.array")
    vol = np.random.default_rng(16).integers(0, 256, (2, 30, 40), dtype=np.uint8)
    norm = {"mean": 100.0, "std": 40.0}
    path = tmp_path / "m.pt"
    ckpt.save_checkpoint(path, valid3, normalization=norm)
    result = predict_dask(str(path), da.from_array(vol), tile_size=64)
    np.testing.assert_array_equal(
        result.compute(), predict_tiled(valid3, vol, tile_size=64, normalization=norm)
    )


# --------------------------------------------------------------------------- out-of-core
_OOC_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    import numpy as np, torch
    from napari_unet.model import UNet
    from napari_unet.tiling import predict_tiled

    def rss_anon():  # anonymous resident memory: excludes the memmaps' page cache
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no RssAnon")

    tmp, n_z = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = UNet(depth=1, base_channels=1).eval()
    shape = (n_z, 1024, 1024)
    src = np.lib.format.open_memmap(os.path.join(tmp, "in.npy"), "w+", np.uint8, shape)
    for z in range(n_z):
        src[z] = (np.arange(1024 * 1024, dtype=np.uint32).reshape(1024, 1024) * (z + 7) % 251)
    src.flush()
    del src
    image = np.load(os.path.join(tmp, "in.npy"), mmap_mode="r")
    out = np.lib.format.open_memmap(os.path.join(tmp, "out.npy"), "w+", np.uint8, shape)
    norm = {"mean": 125.0, "std": 72.0}
    predict_tiled(net, image[:2], normalization=norm)  # warm-up (allocator, oneDNN)
    base = rss_anon()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    result = predict_tiled(net, image, out=out, normalization=norm)
    stop.set()
    thread.join()
    assert result is out
    check = predict_tiled(net, np.asarray(image[n_z - 1]), normalization=norm)
    assert np.array_equal(np.asarray(out[n_z - 1]), check)
    print(peak[0] - base)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_out_of_core_memory_is_bounded(tmp_path):
    """40 x 1024 x 1024 uint8 memmap in and out: anonymous RSS growth stays far below the volume.

    The bound is a third of input + output + float32 probabilities
    (40 MiB + 40 MiB + 320 MiB); the engine holds a few slices at a time.
    """
    n_z = 40
    proc = subprocess.run(
        [sys.executable, "-c", _OOC_SCRIPT, str(tmp_path), str(n_z)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = int(proc.stdout.strip().splitlines()[-1])
    volume = n_z * 1024 * 1024
    bound = (volume + volume + 2 * 4 * volume) / 3
    assert growth < bound, f"RSS grew by {growth / 2**20:.1f} MiB (bound {bound / 2**20:.0f} MiB)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(valid3, same4):
    """CUDA (channels_last, with and without bf16 autocast) agrees with the CPU."""
    img = np.random.default_rng(17).random((150, 230)).astype(np.float32)
    for net in (valid3, same4):
        cpu_labels, cpu = _probs(net, img, tile_size=128)
        _, fp32 = _probs(net, img, tile_size=128, device="cuda", amp=False)
        np.testing.assert_allclose(fp32, cpu, atol=1e-2)  # cuDNN may use TF32
        labels, bf16 = _probs(net, img, device="cuda", amp=True)
        assert np.abs(bf16 - cpu).mean() < 2e-2
        assert (labels == cpu_labels).mean() > 0.95
        whole = predict_tiled(net, img, normalization=NORM, device="cuda", tile_size=1024)
        tiled = predict_tiled(net, img, normalization=NORM, device="cuda", tile_size=128)
        assert (whole == tiled).mean() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_real_out_of_memory_shrinks_and_matches(same4):
    """A real CUDA OOM (allocator capped): the batch is halved, then the tile,
    and the labels equal the uncapped prediction."""
    vol = np.random.default_rng(3).random((1, 4096, 4096)).astype(np.float32)
    kwargs = {"normalization": NORM, "device": "cuda", "amp": False}
    reference = predict_tiled(same4, vol, tile_size=512, batch_size=1, **kwargs)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(0.5 * 2**30 / total)  # ~0.5 GiB
    try:
        with pytest.warns(TilingWarning, match="CUDA out of memory") as record:
            capped = predict_tiled(same4, vol, tile_size=4096, batch_size=16, **kwargs)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    messages = [str(w.message) for w in record]
    assert any("tile reduced" in m or "batch size reduced" in m for m in messages), messages
    assert (capped == reference).mean() > 0.999


# --------------------------------------------------------------------------- errors
def test_bad_inputs(valid3):
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(ValueError, match="2-D"):
        predict_tiled(valid3, np.zeros((2, 2, 20, 20)))
    with pytest.raises(ValueError, match="shape"):
        predict_tiled(valid3, img, out=np.zeros((20, 21), np.uint8))
    with pytest.raises(TypeError, match="integer dtype"):
        predict_tiled(valid3, img, out=np.zeros((20, 20), np.float32))
    with pytest.raises(ValueError, match="in_channels=2"):
        predict_tiled(UNet(in_channels=2, depth=2, base_channels=2), img)
    with pytest.raises(TypeError, match="UNet"):
        predict_tiled(torch.nn.Conv2d(1, 2, 3), img)
    with pytest.raises(TypeError, match="UNet"):
        predict_tiled("not a model", img)
    with pytest.raises(ValueError, match="tile_size"):
        predict_tiled(valid3, img, tile_size=0)
    with pytest.raises(ValueError, match="std"):
        predict_tiled(valid3, img, normalization={"mean": 0.0, "std": 0.0})
    with pytest.raises(ValueError, match="mean"):
        predict_tiled(valid3, img, normalization={"std": 1.0})
    with pytest.raises(ValueError, match="probabilities_dtype"):
        predict_tiled(valid3, img, probabilities_dtype=np.int32)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(valid3, img, overlap=8)
    with pytest.raises(ValueError, match="empty"):
        predict_tiled(valid3, np.zeros((0, 5)))
    with pytest.raises(TypeError, match="dtype"):
        predict_tiled(valid3, np.zeros((5, 5), complex))
    with pytest.raises(TypeError, match="progress"):
        predict_tiled(valid3, img, progress=3)
    with pytest.raises(ValueError, match="probabilities_out"):
        predict_dask(valid3, img, out="x.zarr", return_probabilities=True)
    with pytest.raises(FileNotFoundError):
        predict_dask("/nonexistent/model.pt", img)
