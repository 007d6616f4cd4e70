"""Pure helpers of the widgets."""

from __future__ import annotations

import pytest

from napari_unet._qt._common import friendly_error, parse_slice_ranges


def test_parse_slice_ranges():
    assert parse_slice_ranges("20-22,25", 30) == [20, 21, 22, 25]
    assert parse_slice_ranges(" 3 , 1-2 ,3", 5) == [1, 2, 3]
    assert parse_slice_ranges("", 5) == []
    with pytest.raises(ValueError, match="reversed"):
        parse_slice_ranges("5-3", 10)
    with pytest.raises(ValueError, match="out of range"):
        parse_slice_ranges("30", 30)
    with pytest.raises(ValueError, match="cannot read"):
        parse_slice_ranges("x", 30)


def test_friendly_error_messages():
    disk_full = OSError(28, "No space left on device")
    assert "no space left on the disk" in friendly_error(disk_full, "export")
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
    assert "reduce the batch size" in friendly_error(oom, "training")
    assert friendly_error(ValueError("bad"), "x") == "x: bad"
