"""Formats through napari's own entry points: a dataset inside an HDF5 file opened with
``viewer.open``, and Labels layers saved as OME-NGFF labels with ``viewer.layers.save``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_unet._napari.reader import local_location, napari_location
from volume_files import write_h5, write_ome_zarr


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (3, 40, 36), dtype=np.uint8)
    return image, (image > 127).astype(np.uint8) + 1


def test_hdf5_dataset_opens_in_napari_by_its_file_url(
    make_napari_viewer, tmp_path: Path, stack
) -> None:
    image, labels = stack
    folder = tmp_path / "EM data #1"  # a space and a '#' survive the URL
    folder.mkdir()
    attrs = {"resolution": [40.0, 4.0, 4.0], "unit": "nm"}
    h5 = write_h5(folder / "cremi.h5", "volumes/raw", image, attrs)
    write_h5(h5, "volumes/labels/classes", labels)
    viewer = make_napari_viewer()
    # napari refuses a path that does not exist before any reader sees it
    with pytest.raises(FileNotFoundError):
        viewer.open(f"{h5}:/volumes/raw", plugin="napari-unet")
    url = napari_location(f"{h5}:/volumes/raw")
    assert url.startswith("file://localhost/") and " " not in url and "#" not in url
    assert local_location(url) == f"{h5.resolve()}:/volumes/raw"
    # plugin=None: the reader napari picks by itself, as File > Open and the napari command do
    (raw,) = viewer.open(url, plugin=None)
    assert type(raw).__name__ == "Image" and raw.name == "raw"
    np.testing.assert_allclose(raw.scale, (0.04, 0.004, 0.004))
    assert type(raw.data).__name__ == "Array"  # lazy: dask over the HDF5 chunks
    np.testing.assert_array_equal(np.asarray(raw.data), image)
    # the file.h5/inner spelling makes the same URL
    (classes,) = viewer.open(napari_location(f"{h5}/volumes/labels/classes"), plugin="napari-unet")
    assert type(classes).__name__ == "Labels" and classes.name == "classes"
    np.testing.assert_array_equal(np.asarray(classes.data), labels)
    assert napari_location(h5) == str(h5)  # the file itself: every dataset, by its path


def _ome_zarr_label(path: Path):
    """The label image at ``path`` as ome-zarr's reader sees it: (data, color, properties)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    (node,) = [n for n in nodes if n.load(Label) is not None]
    return np.asarray(node.data[0]), node.metadata.get("color"), node.metadata.get("properties")


def test_labels_layer_saves_as_standalone_ngff_labels(
    make_napari_viewer, tmp_path: Path, stack
) -> None:
    _, labels = stack
    viewer = make_napari_viewer()
    layer = viewer.add_labels(
        labels,
        name="mask",
        scale=(0.04, 0.004, 0.004),
        units=("µm",) * 3,
        metadata={"napari_unet": {"class_names": ["membrane", "cell"]}},
    )
    membrane = [float(c) for c in layer.colormap.map(np.array([1]))[0]]
    for name in ("mask.ome.zarr", "plain.zarr"):
        written = viewer.layers.save(str(tmp_path / name), plugin="napari-unet")
        assert written == [str(tmp_path / name)]
        data, color, props = _ome_zarr_label(tmp_path / name)
        np.testing.assert_array_equal(data, labels)
        np.testing.assert_allclose(color[1], membrane, atol=1 / 255)  # the layer's colours
        assert props[1]["class"] == "membrane" and props[2]["class"] == "cell"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    # and back through our reader: a Labels layer with its scale and name
    viewer.layers.clear()
    (back,) = viewer.open(tmp_path / "mask.ome.zarr", plugin="napari-unet")
    assert type(back).__name__ == "Labels" and back.name == "mask"
    np.testing.assert_allclose(back.scale, (0.04, 0.004, 0.004))
    np.testing.assert_array_equal(np.asarray(back.data), labels)


def test_labels_saved_onto_an_ome_zarr_image_go_into_its_labels(
    make_napari_viewer, tmp_path: Path, stack
) -> None:
    image, labels = stack
    em = write_ome_zarr(tmp_path / "em.ome.zarr", image, levels=1)
    viewer = make_napari_viewer()
    viewer.open(em, plugin="napari-unet")
    viewer.add_labels(labels, name="prediction", scale=viewer.layers[0].scale)
    viewer.layers.selection = {viewer.layers["prediction"]}
    written = viewer.layers.save(str(em), selected=True, plugin="napari-unet")
    assert written == [str(em / "labels" / "prediction")]
    data, _, _ = _ome_zarr_label(em)
    np.testing.assert_array_equal(data, labels)
    # a save dialog opens an existing folder instead of choosing it: a name typed inside the
    # image (or inside its labels folder) still lands in labels/
    inverted = (3 - labels).astype(np.uint8)
    viewer.layers["prediction"].data = inverted
    for typed, name in (
        (em / "corrected.zarr", "corrected"),
        (em / "labels" / "v2.ome.zarr", "v2"),
    ):
        written = viewer.layers.save(str(typed), selected=True, plugin="napari-unet")
        assert written == [str(em / "labels" / name)]
        assert not typed.exists()
    viewer.layers.clear()
    layers = viewer.open(em, plugin="napari-unet")  # the image with all its labels
    assert [type(ly).__name__ for ly in layers] == ["Image", "Labels", "Labels", "Labels"]
    by_name = {ly.name: np.asarray(ly.data) for ly in layers[1:]}
    assert set(by_name) == {"prediction", "corrected", "v2"}
    np.testing.assert_array_equal(by_name["prediction"], labels)
    np.testing.assert_array_equal(by_name["v2"], inverted)


def test_tiff_stays_the_writer_for_tif_paths(make_napari_viewer, tmp_path: Path, stack) -> None:
    import tifffile

    _, labels = stack
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="mask")
    (written,) = viewer.layers.save(str(tmp_path / "mask.tif"), plugin="napari-unet")
    np.testing.assert_array_equal(tifffile.imread(written), labels)
