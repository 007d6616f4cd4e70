"""Declarative bounds for the fields of configuration dataclasses, checked in one place.

A field made with :func:`bounded` states its type, range or choices once; :func:`validate_fields`
checks every such field of a dataclass and raises a one-line :class:`~napari_unet.checks.ArgumentError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .checks import ArgumentError, is_int, is_number

__all__ = ["Bounds", "bounded", "check_value", "field_bounds", "validate_fields"]

_KEY = "napari_unet_bounds"


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a field accepts: ``kind`` is "int", "float", "bool" or "choice"."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False

    def describe(self) -> str:
        """The phrase after "must be", e.g. "an integer >= 1 or None"."""
        if self.kind == "choice":
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind == "bool":
            text = "True or False"
        else:
            text = ("an integer" if self.kind == "int" else "a number") + self._range()
            if self.kind == "float" and self.low == 0 and self.low_open and self.high is None:
                text = "a positive number"
        return text + (" or None" if self.optional else "")

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f" between {_num(self.low)} and {_num(self.high)}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f" <= {_num(self.high)}"
        return ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if not (is_int(value) if self.kind == "int" else is_number(value)):
            return False
        if not math.isfinite(float(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    kind: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: Sequence[Any] = (),
    optional: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its accepted values stated once (see :class:`Bounds`)."""
    bounds = Bounds(kind, low, high, low_open, tuple(choices), optional)
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={_KEY: bounds}
    )


def field_bounds(cls_or_obj: Any) -> dict[str, Bounds]:
    """``{field name: Bounds}`` of the bounded fields of a dataclass."""
    return {f.name: f.metadata[_KEY] for f in dataclasses.fields(cls_or_obj) if _KEY in f.metadata}


def check_value(name: str, bounds: Bounds, value: Any) -> Any:
    """``value`` if ``bounds`` accepts it, else an :class:`ArgumentError` naming ``name``."""
    if not bounds.accepts(value):
        raise ArgumentError(f"{name} must be {bounds.describe()}, got {value!r}")
    return value


def validate_fields(obj: Any) -> None:
    """Check every bounded field of the dataclass instance ``obj``."""
    for name, bounds in field_bounds(obj).items():
        check_value(name, bounds, getattr(obj, name))
