"""The one intensity-statistics estimator used by training, the CLI and the window."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_unet.normalization import compute_normalization, estimate_normalization, normalize


def test_matches_numpy_on_a_small_image() -> None:
    image = np.random.default_rng(0).normal(100, 7, size=(3, 64, 64)).astype(np.float32)
    stats = compute_normalization(image)
    assert stats["mean"] == pytest.approx(float(image.mean()), rel=1e-6)
    assert stats["std"] == pytest.approx(float(image.std()), rel=1e-5)


def test_same_statistics_for_numpy_and_dask() -> None:
    image = np.random.default_rng(1).integers(0, 255, size=(40, 300, 300), dtype=np.uint8)
    a = compute_normalization(image, max_samples=50_000, max_slices=8)
    b = compute_normalization(da.from_array(image, chunks=(1, 100, 100)), 50_000, 8)
    assert a == b


def test_prediction_uses_the_same_estimator() -> None:
    assert estimate_normalization is compute_normalization


def test_non_finite_pixels_are_left_out() -> None:
    image = np.full((8, 8), 5.0)
    image[0, :4] = 9.0
    image[1, 0] = np.nan
    image[2, 0] = np.inf
    stats = compute_normalization(image)
    finite = image[np.isfinite(image)]
    assert stats["mean"] == pytest.approx(finite.mean())
    assert stats["std"] == pytest.approx(finite.std())


def test_constant_image_gets_unit_std_and_all_nan_is_refused() -> None:
    assert compute_normalization(np.full((4, 4), 3.0)) == {"mean": 3.0, "std": 1.0}
    with pytest.raises(ValueError, match="no finite pixel"):
        compute_normalization(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="image must be"):
        compute_normalization(np.zeros(5))


def test_normalize_applies_the_statistics() -> None:
    out = normalize(np.array([1, 3], np.uint8), {"mean": 2.0, "std": 0.5})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-2.0, 2.0])
