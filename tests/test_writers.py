"""Export writers on real files: probabilities layout, zarr, PNG dtypes, streamed masks."""

from __future__ import annotations

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.io import InvalidImageError, read_tiff
from napari_unet.writers import (
    write_label_stack,
    write_mask_tiff,
    write_pngs,
    write_probabilities_tiff,
    write_probabilities_zarr,
)


def _probs(shape=(2, 3, 16, 20)) -> np.ndarray:
    p = np.random.default_rng(0).random(shape).astype(np.float32)
    return p / p.sum(axis=0, keepdims=True)


def test_probabilities_tiff_is_an_imagej_zcyx_hyperstack(tmp_path):
    probs = _probs()
    path = write_probabilities_tiff(tmp_path / "p.tif", probs, scale=(2.0, 0.5, 0.25))
    back = tifffile.imread(path)
    assert back.shape == (3, 2, 16, 20) and back.dtype == np.float32  # Z C Y X
    np.testing.assert_array_equal(np.moveaxis(back, 1, 0), probs)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        assert meta["channels"] == 2 and meta["slices"] == 3 and meta["spacing"] == 2.0
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(4.0)  # 1 / 0.25 pixels per unit


def test_probabilities_tiff_one_slice_and_dtype(tmp_path):
    probs = _probs((3, 16, 20))
    back = tifffile.imread(write_probabilities_tiff(tmp_path / "p.tif", probs))
    assert back.shape == (3, 16, 20)
    np.testing.assert_array_equal(back, probs)
    with pytest.raises(InvalidImageError, match="holds float32, not float16: write zarr"):
        write_probabilities_tiff(tmp_path / "half.tif", probs, dtype=np.float16)
    assert not list(tmp_path.glob("half*"))
    with pytest.raises(InvalidImageError, match="must be"):
        write_probabilities_tiff(tmp_path / "bad.tif", probs[0])


def test_probabilities_zarr_keeps_czyx(tmp_path):
    probs = _probs()
    path = write_probabilities_zarr(tmp_path / "p.zarr", da.from_array(probs, chunks=(1, 1, 8, 8)))
    back = zarr.open_array(str(path), mode="r")
    assert back.shape == probs.shape and back.dtype == np.float32
    np.testing.assert_array_equal(back[:], probs)
    write_probabilities_zarr(path, probs * 0)  # replaced in place, no leftovers
    assert not zarr.open_array(str(path), mode="r")[:].any()
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]


@pytest.mark.parametrize(("top", "dtype"), [(2, np.uint8), (300, np.uint16)])
def test_pngs_smallest_dtype(tmp_path, top, dtype):
    labels = np.zeros((3, 8, 8), np.int32)
    labels[1, 2, 2] = top
    files = write_pngs(tmp_path / "png", labels)
    assert [f.name for f in files] == ["slice_0000.png", "slice_0001.png", "slice_0002.png"]
    back = iio.imread(files[1])
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels[1])


def test_pngs_refuse_values_above_uint16(tmp_path):
    with pytest.raises(InvalidImageError, match="do not fit in a PNG"):
        write_pngs(tmp_path / "png", np.full((1, 4, 4), 70_000, np.uint32))


def test_mask_tiff_streams_lazy_data(tmp_path):
    labels = np.random.default_rng(1).integers(0, 3, (4, 16, 20)).astype(np.uint16)
    store = zarr.open_array(str(tmp_path / "l.zarr"), mode="w", shape=labels.shape, dtype="u2")
    store[:] = labels
    for name, data in (("zarr", store), ("dask", da.from_array(labels, chunks=(1, 16, 20)))):
        path = write_mask_tiff(tmp_path / f"{name}.tif", data, scale=(3.0, 1.0, 1.0))
        td = read_tiff(path, as_labels=True)
        assert np.asarray(td.data).dtype == np.uint8  # smallest dtype, like the numpy writer
        np.testing.assert_array_equal(td.data, labels)
        assert td.scale == (3.0, 1.0, 1.0)
    numpy_path = write_mask_tiff(tmp_path / "np.tif", labels, scale=(3.0, 1.0, 1.0))
    np.testing.assert_array_equal(tifffile.imread(numpy_path), labels)


def test_label_stack_from_arrays_and_uint32(tmp_path):
    big = np.full((2, 8, 8), 70_000, np.uint32)
    path = write_label_stack(tmp_path / "b.tif", iter(big), big.shape, np.uint32)
    np.testing.assert_array_equal(tifffile.imread(path), big)
    flat = write_label_stack(tmp_path / "f.tif", [big[0].astype(np.uint32)], (8, 8), np.uint32)
    assert tifffile.imread(flat).shape == (8, 8)
