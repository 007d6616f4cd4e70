"""Label dtypes: the smallest unsigned type that holds the classes or the values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.labels import LabelValueError, label_dtype, smallest_unsigned_dtype


@pytest.mark.parametrize(
    ("value", "dtype"),
    [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)],
)
def test_label_dtype(value: int, dtype: type) -> None:
    assert label_dtype(value) == np.dtype(dtype)
    assert smallest_unsigned_dtype(np.array([0, value])) == np.dtype(dtype)


def test_values_beyond_32_bits_or_negative_are_refused() -> None:
    with pytest.raises(LabelValueError, match="does not fit in 32 bits"):
        label_dtype(99999999999)
    with pytest.raises(LabelValueError, match="negative"):
        smallest_unsigned_dtype(np.array([-1, 2]))
    with pytest.raises(LabelValueError, match="whole numbers"):
        smallest_unsigned_dtype(np.array([0.5]))
    assert smallest_unsigned_dtype(np.zeros(3, bool)) == np.dtype(np.uint8)
