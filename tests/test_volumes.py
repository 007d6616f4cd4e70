"""Opening volumes of every kind (napari_unet.volumes): OME-Zarr, zarr, N5, HDF5, lazily, with their pixel size."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch

from napari_unet.io import ImageNotFoundError, InvalidImageError
from napari_unet.model import UNet
from napari_unet.sample_data import synthetic_em
from napari_unet.tiling import predict_dask, predict_tiled
from napari_unet.volumes import member_locations, open_volume, split_location
from volume_files import write_h5, write_n5, write_ome_zarr, write_zarr

NM_IN_UM = (0.04, 0.004, 0.004)


@pytest.fixture(scope="module")
def em() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_em((3, 96, 80), seed=1)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_opens_level0_lazily_with_its_pyramid_and_scale(
    tmp_path: Path, em, version
) -> None:
    image, _ = em
    path = write_ome_zarr(tmp_path / "em.ome.zarr", image, version=version, levels=2)
    vol = open_volume(path)
    assert isinstance(vol.data, da.Array)  # nothing read into memory
    assert vol.format == "ome-zarr" and vol.metadata["ngff_version"] == version
    assert vol.shape == image.shape and not vol.is_labels
    np.testing.assert_array_equal(np.asarray(vol.data), image)
    assert [lvl.shape for lvl in vol.levels] == [(3, 96, 80), (3, 48, 40)]
    np.testing.assert_allclose(vol.scale, NM_IN_UM)  # nanometer axes, in µm
    assert vol.unit == "um" and vol.name == "em"
    assert vol.stored is not None and tuple(vol.stored.shape) == image.shape


def test_plain_zarr_array_group_member_and_resolution_attributes(tmp_path: Path, em) -> None:
    image, labels = em
    vol = open_volume(
        write_zarr(tmp_path / "plain.zarr", image, {"resolution": [40, 4, 4], "unit": "nm"})
    )
    np.testing.assert_allclose(vol.scale, NM_IN_UM)
    assert vol.unit == "um" and isinstance(vol.data, da.Array)
    write_zarr(tmp_path / "grp.zarr", image, name="raw")
    write_zarr(tmp_path / "grp.zarr", labels, name="labels")
    raw = open_volume(tmp_path / "grp.zarr" / "raw")
    lab = open_volume(f"{tmp_path}/grp.zarr/labels")
    assert raw.name == "raw" and not raw.is_labels and raw.scale == (1.0, 1.0, 1.0)
    assert lab.is_labels
    np.testing.assert_array_equal(np.asarray(lab.data), labels)
    with pytest.raises(
        InvalidImageError, match=r"name the image inside it \(it holds labels, raw\)"
    ):
        open_volume(tmp_path / "grp.zarr")


@pytest.mark.parametrize("compression", ["gzip", "raw"])
def test_n5_dataset_in_zyx_order_with_pixel_resolution(tmp_path: Path, em, compression) -> None:
    image, _ = em
    res = {"pixelResolution": {"dimensions": [4, 4, 40], "unit": "nm"}}  # N5 lists X first
    write_n5(tmp_path / "vol.n5", "volumes/raw", image, (2, 32, 32), res, compression)
    vol = open_volume(tmp_path / "vol.n5" / "volumes" / "raw")
    assert vol.format == "n5" and isinstance(vol.data, da.Array)
    np.testing.assert_array_equal(np.asarray(vol.data), image)  # edge blocks included
    np.testing.assert_allclose(vol.scale, NM_IN_UM)
    assert open_volume(tmp_path / "vol.n5").shape == image.shape  # the only dataset
    assert open_volume(tmp_path / "vol.n5" / "volumes" / "raw", as_labels=False).location.endswith(
        "vol.n5/volumes/raw"
    )


def test_hdf5_colon_and_slash_forms(tmp_path: Path, em) -> None:
    image, labels = em
    path = write_h5(tmp_path / "cremi.h5", "volumes/raw", image, {"resolution": [40.0, 4.0, 4.0]})
    write_h5(path, "volumes/labels/classes", labels.astype(np.uint64))
    vol = open_volume(f"{path}:/volumes/raw")
    assert vol.format == "hdf5" and isinstance(vol.data, da.Array)
    np.testing.assert_array_equal(np.asarray(vol.data), image)
    assert vol.scale == (40.0, 4.0, 4.0) and vol.unit == "pixel"  # no unit stated
    assert vol.location == f"{path}:/volumes/raw"
    lab = open_volume(path / "volumes" / "labels" / "classes")
    assert lab.is_labels and lab.name == "classes"
    with pytest.raises(InvalidImageError, match="volumes/labels/classes, volumes/raw"):
        open_volume(path)
    with pytest.raises(InvalidImageError, match="no dataset 'volumes/nope'"):
        open_volume(f"{path}:/volumes/nope")


def test_member_locations_of_files_groups_and_images(tmp_path: Path, em) -> None:
    image, labels = em
    h5 = write_h5(tmp_path / "a.h5", "raw", image)
    write_h5(h5, "gt/classes", labels)
    write_h5(h5, "meta/offsets", np.zeros(3))  # 1D: not an image
    assert member_locations(h5) == [f"{h5}:/gt/classes", f"{h5}:/raw"]
    assert member_locations(f"{h5}:/raw") == [f"{h5}:/raw"]
    ome = write_ome_zarr(tmp_path / "em.ome.zarr", image)
    assert member_locations(ome) == [str(ome)]


def test_split_location_and_bad_inputs(tmp_path: Path, em) -> None:
    image, _ = em
    write_zarr(tmp_path / "s.zarr", image, name="raw")
    assert split_location(tmp_path / "s.zarr" / "raw") == (tmp_path / "s.zarr", "raw", "zarr")
    assert split_location("x/file.h5:/a/b") == (Path("x/file.h5"), "a/b", "hdf5")
    with pytest.raises(ImageNotFoundError):
        open_volume(tmp_path / "missing.zarr")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidImageError, match="not a supported volume"):
        open_volume(tmp_path / "notes.txt")
    rgb = np.zeros((2, 3, 16, 16), np.uint8)  # z, c, y, x with 3 channels
    write_zarr(tmp_path / "rgb.zarr", rgb)
    with pytest.raises(InvalidImageError, match="4D array"):
        open_volume(tmp_path / "rgb.zarr")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InvalidImageError, match="not a readable HDF5 file"):
        open_volume(tmp_path / "junk.h5")


def test_predict_tiled_and_predict_dask_on_opened_volumes(tmp_path: Path, em) -> None:
    """The opened dask arrays go through the tiled and the dask prediction block by block."""
    import zarr

    image, _ = em
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=2).eval()
    norm = {"mean": float(image.mean()), "std": float(image.std())}
    opts = {"tile_size": 64, "device": "cpu", "normalization": norm}
    expected = predict_tiled(net, image, **opts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for vol in (
            open_volume(write_ome_zarr(tmp_path / "em.ome.zarr", image)),
            open_volume(f"{write_h5(tmp_path / 'em.h5', 'raw', image)}:/raw"),
        ):
            out = zarr.create_array(
                str(tmp_path / f"out_{vol.format}.zarr"),
                shape=image.shape,
                chunks=(1, 96, 80),
                dtype="u1",
            )
            predict_tiled(net, vol.data, out=out, **opts)
            np.testing.assert_array_equal(out[...], expected)
        n5 = open_volume(write_n5(tmp_path / "em.n5", "raw", image, (1, 48, 40)) / "raw")
        labels = predict_dask(net, n5.data, **opts).compute(scheduler="synchronous")
        np.testing.assert_array_equal(labels, expected)
    finally:
        torch.set_num_threads(threads)


def test_n5_scale_pyramid_s0_s1_is_one_multiscale_volume(tmp_path: Path, em) -> None:
    image, _ = em
    res = {"resolution": [4.0, 4.0, 40.0], "unit": "nm"}
    write_n5(tmp_path / "vol.n5", "raw/s0", image, (1, 64, 64), res)
    write_n5(tmp_path / "vol.n5", "raw/s1", image[:, ::2, ::2].copy(), (1, 64, 64))
    assert member_locations(tmp_path / "vol.n5") == [f"{tmp_path}/vol.n5/raw"]
    vol = open_volume(tmp_path / "vol.n5" / "raw")
    assert [lvl.shape for lvl in vol.levels] == [(3, 96, 80), (3, 48, 40)]
    np.testing.assert_array_equal(np.asarray(vol.data), image)
    np.testing.assert_allclose(vol.scale, NM_IN_UM)
