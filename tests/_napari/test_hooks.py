"""The npe2 reader, writer and sample data in a real napari viewer (under Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import notification_manager

from napari_unet.io import read_tiff


@pytest.fixture
def notifications():
    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def test_open_stack_with_scale(make_napari_viewer, tmp_path: Path, small_stack) -> None:
    image, labels = small_stack
    tifffile.imwrite(
        tmp_path / "em.tif",
        image,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"},
    )
    tifffile.imwrite(tmp_path / "em_labels.tif", labels, photometric="minisblack")
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "em.tif", plugin="napari-unet")
    viewer.open(tmp_path / "em_labels.tif", plugin="napari-unet")
    img_layer, lab_layer = viewer.layers
    assert img_layer.__class__.__name__ == "Image"
    assert lab_layer.__class__.__name__ == "Labels"
    np.testing.assert_array_equal(img_layer.data, image)
    np.testing.assert_allclose(img_layer.scale, (0.05, 0.004, 0.004), rtol=1e-5)
    np.testing.assert_array_equal(lab_layer.data, labels)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"hello, not a tiff", "not a TIFF"), (b"II*\x00" + b"\xff" * 40, "corrupt")],
)
def test_bad_file_is_a_notification_not_a_crash(
    make_napari_viewer, tmp_path: Path, notifications, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    viewer = make_napari_viewer()
    viewer.open(path, plugin="napari-unet")
    assert len(viewer.layers) == 0
    assert any(message in str(n.message) for n in notifications), [
        str(n.message) for n in notifications
    ]


def test_rgb_file_is_a_notification(make_napari_viewer, tmp_path: Path, notifications) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "rgb.tif", plugin="napari-unet")
    assert len(viewer.layers) == 0
    assert any("RGB" in str(n.message) for n in notifications)


def test_sample_and_screenshot_not_blank(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-unet", "synthetic_em")
    names = [layer.name for layer in viewer.layers]
    assert names == ["synthetic EM", "synthetic EM ground truth"]
    assert viewer.layers[0].data.shape == (16, 512, 512)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    gray = shot[..., :3].astype(float).mean(axis=-1)
    assert gray.std() > 10  # an EM-like image, not a flat canvas


def test_writer_saves_labels_layer(make_napari_viewer, tmp_path: Path, small_stack) -> None:
    _, labels = small_stack
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels.astype(np.int32), scale=(0.05, 0.004, 0.004), name="mask")
    out = tmp_path / "mask.tif"
    written = layer.save(str(out), plugin="napari-unet")
    assert Path(written[0]) == out
    td = read_tiff(out)
    assert np.asarray(td.data).dtype == np.uint8
    np.testing.assert_array_equal(td.data, labels)
    np.testing.assert_allclose(td.scale, (0.05, 0.004, 0.004), rtol=1e-5)
