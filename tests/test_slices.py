"""Slice reading and slice-range parsing shared by the GUI and the CLI."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet.slices import (
    array_shape,
    format_slices,
    parse_slices,
    read_block,
    read_slice,
    unique_values,
)


@pytest.fixture
def volume() -> np.ndarray:
    return np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)


def test_read_slice_is_the_same_for_every_array_type(volume, tmp_path) -> None:
    store = zarr.open_array(
        str(tmp_path / "v.zarr"), mode="w", shape=volume.shape, dtype=volume.dtype
    )
    store[:] = volume
    memmap = np.lib.format.open_memmap(
        tmp_path / "v.npy", mode="w+", dtype=volume.dtype, shape=volume.shape
    )
    memmap[:] = volume
    for array in (volume, da.from_array(volume, chunks=(1, 5, 6)), store, memmap):
        got = read_slice(array, 2)
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, volume[2])
        np.testing.assert_array_equal(read_block(array, (1, slice(0, 2))), volume[1, :2])


def test_read_slice_of_a_2d_array_is_the_whole_array(volume) -> None:
    np.testing.assert_array_equal(read_slice(volume[0], 0), volume[0])


def test_array_shape_names_what_is_not_an_array() -> None:
    assert array_shape(np.zeros((2, 3))) == (2, 3)
    with pytest.raises(TypeError, match="labels must be an array"):
        array_shape([1, 2], "labels")


def test_unique_values_reads_the_chosen_slices(volume) -> None:
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0, 0, 0] = 1
    labels[2, 1, 1] = 7
    np.testing.assert_array_equal(unique_values(labels, [0]), [0, 1])
    np.testing.assert_array_equal(unique_values(labels, [0, 2]), [0, 1, 7])
    assert unique_values(labels, []).size == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0,3,7", [0, 3, 7]), ("0-2,5", [0, 1, 2, 5]), ("2:4", [2, 3, 4]), (" 1 , 1-2 ", [1, 2])],
)
def test_parse_slices(spec: str, expected: list[int]) -> None:
    assert parse_slices(spec, 10) == expected
    assert parse_slices(format_slices(expected), 10) == expected


def test_parse_slices_blank_is_empty() -> None:
    assert parse_slices(None) == []
    assert parse_slices("   ") == []


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("4-2", "goes backwards"),
        ("1,,2", "empty item"),
        ("a", "cannot read"),
        ("-1", "cannot read"),
        ("3-12", r"out of range: the stack has 10 slice\(s\) \(0-9\)"),
    ],
)
def test_parse_slices_errors(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_slices(spec, 10)


def test_a_huge_range_is_refused_before_it_is_expanded() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_slices("0-99999999999999999999", 30)


def test_format_slices_merges_runs() -> None:
    assert format_slices([5, 0, 1, 2, 9, 10]) == "0-2,5,9-10"
    assert format_slices([]) == ""
