"""Argument checks shared by the public entry points: a number is what it claims to be.

A bool is never a number here (it is an int subclass in Python, but a bool where a count is
expected is a bug), a float is never an integer (2.5 tokens is not 2), and an integer too
large for a double is not a finite real.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np


def is_integer(x: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def is_real(x: object) -> bool:
    """A Python or numpy real number, not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def is_finite_real(x: object) -> bool:
    """A real number that is finite as a float."""
    try:
        return is_real(x) and math.isfinite(float(x))  # type: ignore[arg-type]
    except OverflowError:
        return False


def as_integer(value: object, what: str) -> int:
    """`value` as an int; TypeError naming `what` for a bool or anything not an integer."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r}") from None
