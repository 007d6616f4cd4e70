"""Argument checks with one-line messages, shared by the model, augmentation and tiling.

:class:`ArgumentError` is both a ``ValueError`` and a ``TypeError`` so callers
may catch either.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["ArgumentError", "check_float", "check_int", "is_int", "is_number"]


class ArgumentError(ValueError, TypeError):
    """A bad argument value or type (catchable as ``ValueError`` or ``TypeError``)."""


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]``, or an :class:`ArgumentError`."""
    if not is_int(value):
        raise ArgumentError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ArgumentError(f"{name} must be {bound}, got {value}")
    return value


def check_float(name: str, value: Any, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a finite ``float`` within ``[low, high]``, or an :class:`ArgumentError`."""
    if not is_number(value):
        raise ArgumentError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        bounds = f"in [{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise ArgumentError(f"{name} must be a finite number {bounds}, got {value!r}")
    return value
