"""Shared fixtures: small real data made on the fly (no ../shared needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.sample_data import synthetic_em


@pytest.fixture(scope="session")
def small_stack() -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 128 x 128 synthetic EM stack and its labels (1 membrane, 2 cell)."""
    return synthetic_em((4, 128, 128), seed=1, cell_size=24)
