"""Fixtures for the widget tests: a real napari viewer (under pytest-xvfb) with the docks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest


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
