"""Declarative field bounds and the one-line messages they give."""

from __future__ import annotations

import dataclasses

import pytest

from napari_unet.checks import ArgumentError, check_float, check_int
from napari_unet.fields import bounded, check_value, field_bounds, validate_fields


@dataclasses.dataclass
class _Config:
    size: int | None = bounded(8, kind="int", low=8, optional=True)
    rate: float = bounded(1e-3, kind="float", low=0, low_open=True)
    mode: str = bounded("a", kind="choice", choices=("a", "b"))
    p: float = bounded(0.5, kind="float", low=0, high=1)
    flag: bool = bounded(True, kind="bool")
    free: object = None


def test_defaults_pass_and_bounds_are_listed() -> None:
    validate_fields(_Config())
    assert set(field_bounds(_Config)) == {"size", "rate", "mode", "p", "flag"}
    assert field_bounds(_Config)["mode"].choices == ("a", "b")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": 4}, "size must be an integer >= 8 or None, got 4"),
        ({"size": True}, "size must be an integer >= 8 or None, got True"),
        ({"rate": 0.0}, "rate must be a positive number, got 0.0"),
        ({"rate": float("nan")}, "rate must be a positive number, got nan"),
        ({"mode": "c"}, "mode must be one of a, b, got 'c'"),
        ({"p": 1.5}, "p must be a number between 0 and 1, got 1.5"),
        ({"flag": 1}, "flag must be True or False, got 1"),
    ],
)
def test_bad_values_get_one_line_messages(change: dict, message: str) -> None:
    config = dataclasses.replace(_Config(), **change)
    with pytest.raises(ValueError) as info:
        validate_fields(config)
    assert str(info.value) == message
    assert isinstance(info.value, TypeError)


def test_check_value_returns_the_accepted_value() -> None:
    assert check_value("size", field_bounds(_Config)["size"], None) is None
    assert check_value("size", field_bounds(_Config)["size"], 9) == 9


def test_check_int_and_float() -> None:
    assert check_int("n", 3, 1) == 3
    with pytest.raises(ArgumentError, match="n must be between 1 and 2, got 3"):
        check_int("n", 3, 1, 2)
    with pytest.raises(TypeError, match="must be an integer"):
        check_int("n", 2.0, 1)
    assert check_float("x", 2, 0.0) == 2.0
    with pytest.raises(ValueError, match=r"x must be a finite number in \[0.0, 1.0\]"):
        check_float("x", 2, 0.0, 1.0)
