"""The npe2 reader on OME-Zarr, zarr, N5 and HDF5 in a real napari viewer; incomplete zarr results warn."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_unet._napari.reader import get_reader
from napari_unet.completion import SliceRecorder, start_record
from napari_unet.ngff_labels import write_ngff_labels
from napari_unet.slices import read_slice
from volume_files import write_h5, write_n5, write_ome_zarr, write_zarr


@pytest.fixture
def notifications():
    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (4, 48, 40), dtype=np.uint8)
    return image, (image > 127).astype(np.uint8) + 1


def test_ome_zarr_image_with_labels_opens_as_a_pyramid(
    make_napari_viewer, tmp_path: Path, stack
) -> None:
    image, labels = stack
    path = write_ome_zarr(tmp_path / "em.ome.zarr", image, levels=2)
    write_ngff_labels(path, labels, name="prediction", class_names=["membrane", "cell"])
    viewer = make_napari_viewer()
    img, lab = viewer.open(path, plugin="napari-unet")
    assert type(img).__name__ == "Image" and img.multiscale
    assert [tuple(s) for s in img.data.shapes] == [(4, 48, 40), (4, 24, 20)]
    np.testing.assert_allclose(img.scale, (0.04, 0.004, 0.004))
    # the docks read the full resolution of the pyramid, not a level
    np.testing.assert_array_equal(read_slice(img.data, 3), image[3])
    assert type(lab).__name__ == "Labels" and lab.name == "prediction"
    np.testing.assert_array_equal(np.asarray(lab.data), labels)
    np.testing.assert_allclose(
        lab.colormap.map(np.array([1]))[0], [1.0, 59 / 255, 48 / 255, 1.0], atol=1e-6
    )


def test_zarr_n5_and_hdf5_open_lazily_with_scale(make_napari_viewer, tmp_path: Path, stack) -> None:
    image, labels = stack
    write_zarr(tmp_path / "plain.zarr", image, {"resolution": [40, 4, 4], "unit": "nm"})
    write_n5(tmp_path / "vol.n5", "raw", image, (2, 32, 32), {"resolution": [4, 4, 40]})
    h5 = write_h5(tmp_path / "cremi.h5", "volumes/raw", image, {"resolution": [40.0, 4.0, 4.0]})
    write_h5(h5, "volumes/labels/classes", labels)
    viewer = make_napari_viewer()
    (plain,) = viewer.open(tmp_path / "plain.zarr", plugin="napari-unet")
    np.testing.assert_allclose(plain.scale, (0.04, 0.004, 0.004))
    (n5,) = viewer.open(tmp_path / "vol.n5" / "raw", plugin="napari-unet")
    assert n5.name == "raw" and tuple(n5.scale) == (40.0, 4.0, 4.0)  # N5 lists X first
    np.testing.assert_array_equal(np.asarray(n5.data), image)
    layers = viewer.open(h5, plugin="napari-unet")  # every image dataset of the file
    assert {(ly.name.split(" [")[0], type(ly).__name__) for ly in layers} == {
        ("raw", "Image"),
        ("classes", "Labels"),
    }
    assert all(type(ly.data).__name__ == "Array" for ly in viewer.layers)  # dask: nothing loaded
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(f"{h5}:/volumes/raw") is not None


def test_incomplete_zarr_result_opens_with_a_warning(
    make_napari_viewer, tmp_path: Path, notifications, stack
) -> None:
    import zarr

    _, labels = stack
    arr = zarr.create_array(
        str(tmp_path / "seg.zarr"), shape=labels.shape, chunks=(1, 48, 40), dtype="u1"
    )
    recorder = SliceRecorder(arr, start_record(arr, {"slices": [0, 1, 2, 3]}))
    for z in (0, 2):  # an interrupted prediction: slices 1 and 3 never written
        arr[z] = labels[z]
        recorder.mark(z)
    recorder.flush()
    viewer = make_napari_viewer()
    (layer,) = viewer.open(tmp_path / "seg.zarr", plugin="napari-unet")
    assert type(layer).__name__ == "Labels"  # still opened
    messages = [str(n.message) for n in notifications]
    assert any(
        "incomplete" in m and "slice(s) 1,3 of 4 were never written" in m for m in messages
    ), messages
    recorder.finish()
    notifications.clear()
    viewer.open(tmp_path / "seg.zarr", plugin="napari-unet")
    assert not any("incomplete" in str(n.message) for n in notifications)


def test_bad_store_is_a_notification(make_napari_viewer, tmp_path: Path, notifications) -> None:
    write_zarr(tmp_path / "rgb.zarr", np.zeros((2, 3, 16, 16), np.uint8))
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "rgb.zarr", plugin="napari-unet")
    assert len(viewer.layers) == 0
    assert any("4D array" in str(n.message) for n in notifications)
