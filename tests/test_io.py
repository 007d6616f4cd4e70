"""Reader/writer round trips on real TIFF files, lazy opening and bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.io import (
    ImageNotFoundError,
    InvalidImageError,
    ShapeMismatchError,
    WriteError,
    atomic_write,
    check_same_shape,
    read_tiff,
    smallest_unsigned_dtype,
    write_labels_tiff,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_read_multipage_stack_values_dtype_shape(tmp_path: Path, dtype) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((5, 40, 30)) * 200).astype(dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data)
    td = read_tiff(path)
    assert td.shape == (5, 40, 30)
    assert td.axes == "ZYX"
    assert np.asarray(td.data).dtype == dtype
    np.testing.assert_array_equal(np.asarray(td.data), data)
    assert not td.lazy
    assert not td.is_labels  # noisy data is an image


def test_read_single_page(tmp_path: Path) -> None:
    data = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    tifffile.imwrite(tmp_path / "page.tif", data)
    td = read_tiff(tmp_path / "page.tif")
    assert td.shape == (64, 48) and td.axes == "YX"
    np.testing.assert_array_equal(td.data, data)


def test_imagej_scale_becomes_layer_scale(tmp_path: Path) -> None:
    data = np.zeros((3, 16, 20), np.uint8)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.005),  # pixels per micron in X, Y
        metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"},
    )
    td = read_tiff(tmp_path / "ij.tif")
    assert td.unit == "um"
    np.testing.assert_allclose(td.scale, (0.05, 0.005, 0.004), rtol=1e-5)


def test_imagej_hyperstack_time_axis_maps_to_z(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 255, (4, 1, 1, 12, 10), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    td = read_tiff(tmp_path / "hyper.tif")
    assert td.shape == (4, 12, 10)
    np.testing.assert_array_equal(td.data, data[:, 0, 0])


def test_ome_tiff_physical_size(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 255, (3, 20, 22), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "x.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 4.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 4.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 50.0,
            "PhysicalSizeZUnit": "nm",
        },
    )
    td = read_tiff(tmp_path / "x.ome.tif")
    np.testing.assert_array_equal(td.data, data)
    np.testing.assert_allclose(td.scale, (0.05, 0.004, 0.004), rtol=1e-6)


def test_labels_detected_and_forced(tmp_path: Path, small_stack) -> None:
    image, labels = small_stack
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    assert read_tiff(tmp_path / "lab.tif").is_labels
    assert not read_tiff(tmp_path / "img.tif").is_labels
    assert read_tiff(tmp_path / "img.tif", as_labels=True).is_labels
    # instance labels with many ids are piecewise constant -> labels
    inst = np.repeat(np.repeat(np.arange(400, dtype=np.uint16).reshape(20, 20), 8, 0), 8, 1)
    tifffile.imwrite(tmp_path / "inst.tif", inst)
    assert read_tiff(tmp_path / "inst.tif").is_labels


def test_writer_round_trip_fiji_metadata(tmp_path: Path, small_stack) -> None:
    _, labels = small_stack
    out = write_labels_tiff(
        tmp_path / "mask.tif", labels.astype(np.int64), scale=(0.05, 0.004, 0.004)
    )
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej
        ij = tif.imagej_metadata
        assert ij["images"] == labels.shape[0]
        assert ij["unit"] == "um"
        assert ij["spacing"] == pytest.approx(0.05)
        assert tif.series[0].dtype == np.uint8
    td = read_tiff(out)
    assert td.is_labels
    np.testing.assert_array_equal(td.data, labels)
    np.testing.assert_allclose(td.scale, (0.05, 0.004, 0.004), rtol=1e-5)


@pytest.mark.parametrize(
    ("top", "dtype"), [(1, np.uint8), (255, np.uint8), (256, np.uint16), (70000, np.uint32)]
)
def test_writer_smallest_unsigned_dtype(tmp_path: Path, top: int, dtype) -> None:
    data = np.zeros((2, 1, 8, 9), np.int64)  # singleton axis is squeezed
    data[0, 0, 0, 0] = top
    out = write_labels_tiff(tmp_path / "m.tif", data)
    back = tifffile.imread(out)
    assert back.dtype == dtype
    assert back.shape == (2, 8, 9)
    assert back.max() == top


def test_writer_rejects_negative_and_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "keep.tif"
    good = np.ones((4, 4), np.uint8)
    write_labels_tiff(target, good)
    before = target.read_bytes()
    with pytest.raises(InvalidImageError, match="negative"):
        write_labels_tiff(target, -np.ones((4, 4), np.int32))
    with pytest.raises(InvalidImageError, match=r"2D .* or 3D"):
        write_labels_tiff(target, np.ones((2, 2, 3, 4), np.uint8))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]  # no temp files left


def test_writer_failure_midway_keeps_old_file(tmp_path: Path) -> None:
    """A write that fails part-way (disk full after some bytes) leaves the old file intact."""
    target = tmp_path / "keep.tif"
    write_labels_tiff(target, np.full((3, 4, 4), 2, np.uint8))
    before = target.read_bytes()

    def half_then_disk_full(tmp: Path) -> None:
        tmp.write_bytes(b"II*\x00partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(InvalidImageError, match="No space left"):
        atomic_write(target, half_then_disk_full)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]


def test_writer_unwritable_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="does not exist"):
        write_labels_tiff(tmp_path / "nope" / "m.tif", np.ones((3, 3), np.uint8))
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(InvalidImageError, match="not writable"):
            write_labels_tiff(ro / "m.tif", np.ones((3, 3), np.uint8))


def test_smallest_unsigned_dtype_floats() -> None:
    assert smallest_unsigned_dtype(np.array([0.0, 3.0])) == np.uint8
    with pytest.raises(InvalidImageError, match="whole numbers"):
        smallest_unsigned_dtype(np.array([0.5]))


# ----------------------------------------------------------------- bad inputs


def test_missing_path() -> None:
    with pytest.raises(ImageNotFoundError, match="no such file"):
        read_tiff("/definitely/not/here.tif")
    with pytest.raises(FileNotFoundError):
        read_tiff("/definitely/not/here.tif")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        read_tiff(tmp_path / "empty.tif")


def test_not_a_tiff(tmp_path: Path) -> None:
    (tmp_path / "fake.tif").write_text("this is a text file, not an image")
    with pytest.raises(InvalidImageError, match="not a TIFF"):
        read_tiff(tmp_path / "fake.tif")


def test_truncated_tiff(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 255, (6, 64, 64), dtype=np.uint8)
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, data)
    raw = full.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidImageError, match=r"truncated|corrupt"):
        read_tiff(tmp_path / "cut.tif")


def test_corrupt_header(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(InvalidImageError, match=r"corrupt|no image"):
        read_tiff(tmp_path / "bad.tif")


def test_rgb_rejected(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    with pytest.raises(InvalidImageError, match="RGB"):
        read_tiff(tmp_path / "rgb.tif")


def test_4d_rejected(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "4d.tif",
        np.zeros((2, 3, 8, 8), np.uint8),
        imagej=True,
        metadata={"axes": "TZYX"},
    )
    with pytest.raises(InvalidImageError, match="4D"):
        read_tiff(tmp_path / "4d.tif")


def test_labels_shape_mismatch_message() -> None:
    with pytest.raises(ShapeMismatchError) as info:
        check_same_shape((10, 256, 256), (30, 512, 512))
    assert str(info.value) == "labels shape (10, 256, 256) does not match image (30, 512, 512)"


# ----------------------------------------------------------------- lazy opening


LAZY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from napari_unet.io import read_tiff

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    import dask.array, zarr  # libraries' own import cost is not data
    path, compressed = sys.argv[1], sys.argv[2] == "1"
    before = rss()
    td = read_tiff(path, memory_budget=16 << 20)
    after_open = rss()
    page = np.asarray(td.data[7])
    after_page = rss()
    print(json.dumps({"lazy": td.lazy, "storage": td.metadata["storage"], "shape": list(td.shape),
                      "open": after_open - before, "page": after_page - after_open,
                      "checksum": int(page.sum())}))
    """
)


@pytest.mark.parametrize("compressed", [False, True])
def test_lazy_open_reads_only_what_is_viewed(tmp_path: Path, compressed: bool) -> None:
    """A stack above the memory budget opens lazily: RSS grows by far less than its size."""
    shape = (64, 1024, 1024)  # 64 Mi pixels of uint16 = 128 MiB
    path = tmp_path / "big.tif"
    rng = np.random.default_rng(4)
    with tifffile.TiffWriter(path) as tw:
        for z in range(shape[0]):
            page = rng.integers(0, 4000, shape[1:], dtype=np.uint16)
            if z == 7:
                expected = int(page.sum())
            if compressed:
                tw.write(page, compression="zlib", photometric="minisblack", metadata=None)
            else:
                tw.write(page, contiguous=True, photometric="minisblack", metadata=None)
    nbytes = int(np.prod(shape)) * 2
    out = subprocess.run(
        [sys.executable, "-c", LAZY_SCRIPT, str(path), "1" if compressed else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["lazy"] is True
    assert res["storage"] == ("dask" if compressed else "memmap")
    assert res["shape"] == list(shape)
    assert res["checksum"] == expected
    # opening (which decodes one page to guess image vs labels, plus the decoder's
    # one-off buffers) costs a small fraction of the stack; another page about one page
    assert res["open"] < nbytes / 4, res
    assert res["page"] < 3 * nbytes / shape[0], res


# ----------------------------------------------------------------- safe outputs


def test_atomic_write_uses_the_umask_and_names_the_users_path(tmp_path: Path) -> None:
    import stat

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.tif", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp would give 0600

    def disk_full(tmp: Path) -> None:
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(WriteError) as info:
        atomic_write(tmp_path / "b.tif", disk_full)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'b.tif'}: could not write the file: the disk is full")
    assert ".part" not in text and info.value.errno == 28
    assert isinstance(info.value, OSError) and isinstance(info.value, InvalidImageError)


@pytest.mark.parametrize(
    ("code", "words"),
    [(28, "the disk is full"), (13, "permission denied"), (30, "the file system is read-only"),
     (122, "the disk quota is exceeded")],
)  # fmt: skip
def test_os_errors_in_words(code: int, words: str) -> None:
    from napari_unet.outputs import describe_os_error

    text = describe_os_error(OSError(code, os.strerror(code), "/tmp/.x.p1-ab.part"))
    assert text.startswith(words) and ".part" not in text


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    from napari_unet.outputs import clean_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    target = tmp_path / "m.tif"
    stale = tmp_path / f".m.tif.p{dead}-0a1b2c3d.tif.part"
    alive = tmp_path / f".m.tif.p{os.getpid()}-0a1b2c3d.tif.part"
    other = tmp_path / ".other.tif.p1-0a1b2c3d.tif.part"
    for p in (stale, alive, other):
        p.write_bytes(b"partial")
    assert clean_stale_temps(target) == [stale]
    assert not stale.exists() and alive.exists() and other.exists()
    atomic_write(target, lambda tmp: tmp.write_bytes(b"x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "m.tif"])


def test_output_lock_is_exclusive_and_removed(tmp_path: Path) -> None:
    from napari_unet.outputs import OutputLock, OutputLockedError

    out = tmp_path / "m.pt"
    with OutputLock(out, "--out") as lock:
        assert lock.lock_path.read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(
            OutputLockedError, match=f"--out {out} is being written .*pid {os.getpid()}"
        ):
            OutputLock(out, "--out").acquire()
    assert list(tmp_path.iterdir()) == []
    with OutputLock(out):  # free again
        pass
