"""OME-NGFF labels out (napari_unet.ngff_labels): read back by ome-zarr's reader, validated as NGFF 0.4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_unet.completion import missing_slices
from napari_unet.io import InvalidImageError
from napari_unet.ngff_labels import create_ngff_labels, update_ngff_labels, write_ngff_labels
from napari_unet.volumes import open_volume
from volume_files import write_ome_zarr

NAMES = ["membrane", "cell"]


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 40, 36), dtype=np.uint8)
    labels = rng.integers(1, 3, (3, 40, 36)).astype(np.uint8)
    return image, labels


def _ome_zarr_nodes(path: Path) -> dict[str, object]:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return {str(node.zarr.path): node for node in Reader(parse_url(str(path)))()}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_inside_an_ome_zarr_image_open_with_ome_zarr(tmp_path: Path, stack, version) -> None:
    image, labels = stack
    img = write_ome_zarr(tmp_path / "em.ome.zarr", image, version=version)
    out = write_ngff_labels(img, labels, name="prediction", class_names=NAMES, n_levels=2)
    assert out == img / "labels" / "prediction"
    node = _ome_zarr_nodes(img)[str(out)]
    assert "Label" in {type(s).__name__ for s in node.specs}
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    assert np.asarray(node.data[1]).shape == (3, 20, 18)  # the pyramid
    assert node.metadata["properties"] == {1: {"class": "membrane"}, 2: {"class": "cell"}}
    np.testing.assert_allclose(node.metadata["color"][1], [1.0, 59 / 255, 48 / 255, 1.0])
    vol = open_volume(out)  # and the pixel size of the image (nm -> µm)
    assert vol.is_labels
    np.testing.assert_allclose(vol.scale, (0.04, 0.004, 0.004))
    assert missing_slices(vol.stored) == []  # complete


def test_standalone_label_image_is_valid_ngff_04(tmp_path: Path, stack) -> None:
    from ome_zarr_models.v04.image_label import ImageLabel

    _, labels = stack
    out = write_ngff_labels(
        tmp_path / "mask.ome.zarr",
        labels,
        scale=(50, 4, 4),
        unit="nm",
        class_names=NAMES,
        colors=["#00ff00", "#0000ff"],
    )
    model = ImageLabel.from_zarr(zarr.open_group(str(out), mode="r"))  # pydantic NGFF 0.4 schema
    label = model.attributes.image_label
    assert [(c.label_value, tuple(c.rgba)) for c in label.colors] == [
        (1, (0, 255, 0, 255)),
        (2, (0, 0, 255, 255)),
    ]
    assert [p.model_dump(by_alias=True)["class"] for p in label.properties] == NAMES
    attrs = json.loads((out / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["unit"] for a in ms["axes"]] == ["nanometer"] * 3
    assert ms["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [50.0, 4.0, 4.0]}
    ]
    assert json.loads((out / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[...], labels)


def test_a_failed_write_keeps_the_earlier_labels(tmp_path: Path, stack) -> None:
    image, labels = stack
    img = write_ome_zarr(tmp_path / "em.ome.zarr", image)
    write_ngff_labels(img, labels, name="prediction")

    class Broken:  # a lazy array whose second slice cannot be read
        shape, dtype, ndim = labels.shape, labels.dtype, 3

        def __getitem__(self, key):
            if key == 1:
                raise OSError(5, "Input/output error")
            return labels[key]

    with pytest.raises(InvalidImageError, match="could not write the labels"):
        write_ngff_labels(img, Broken(), name="prediction")
    np.testing.assert_array_equal(open_volume(img / "labels" / "prediction").data, labels)
    assert sorted(p.name for p in (img / "labels").iterdir() if p.name.startswith(".")) == [
        ".zattrs",
        ".zgroup",
    ]
    with pytest.raises(InvalidImageError, match="integers"):
        write_ngff_labels(img, labels.astype(np.float32), name="prediction")


def test_created_in_place_then_given_scale_and_classes(tmp_path: Path, stack) -> None:
    """The CLI's slice-by-slice path: an empty label image, filled, then its metadata completed."""
    _, labels = stack
    arr = create_ngff_labels(tmp_path / "seg.ome.zarr", labels.shape, np.uint8)
    arr[...] = labels
    update_ngff_labels(
        tmp_path / "seg.ome.zarr",
        scale=(0.05, 0.01, 0.01),
        unit="um",
        class_names=NAMES,
        values=[0, 255],
    )
    vol = open_volume(tmp_path / "seg.ome.zarr")
    np.testing.assert_allclose(vol.scale, (0.05, 0.01, 0.01))
    props = vol.metadata["image_label"]["properties"]
    assert props == [{"label-value": 0, "class": "membrane"}, {"label-value": 255, "class": "cell"}]
