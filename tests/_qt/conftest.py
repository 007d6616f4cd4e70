"""Fixtures for the widget tests: a real napari viewer (under pytest-xvfb) with the docks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from napari_unet.model import UNet
from napari_unet.training import TrainConfig, Trainer


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch) -> None:
    """Autosaves of images without a file go to the test's tmp folder, never to $HOME."""
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path / "autosave"))


@pytest.fixture
def notifications() -> Iterator[list[Any]]:
    """Every napari notification dispatched during the test (real notification_manager)."""
    from napari.utils.notifications import notification_manager

    got: list[Any] = []

    def _collect(notification: Any) -> None:
        got.append(notification)

    notification_manager.notification_ready.connect(_collect)
    yield got
    notification_manager.notification_ready.disconnect(_collect)


@pytest.fixture
def viewer_with_stack(make_napari_viewer, small_stack) -> Callable[..., Any]:
    """``make(...)`` -> (viewer, image layer, ground truth)."""

    def make(
        scale: tuple[float, ...] = (1.0, 1.0, 1.0), **kwargs: Any
    ) -> tuple[Any, Any, np.ndarray]:
        image, truth = small_stack
        viewer = make_napari_viewer(**kwargs)
        layer = viewer.add_image(image, name="em", scale=scale)
        return viewer, layer, truth

    return make


@pytest.fixture(scope="module")
def trained(small_stack):
    """(model, metadata) of a tiny net trained briefly on slice 0 of the (uint8) small stack."""
    image, truth = small_stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=8, padding="same", norm="batch")
    config = TrainConfig(
        iterations=30, num_threads=1, preview_every_s=0.0, batch_size=2, patch_size=64
    )
    trainer = Trainer(image, labels, config, model=net)
    for _ in trainer.run():
        pass
    torch.set_num_threads(threads)
    return trainer.model.eval(), dict(trainer.metadata)
