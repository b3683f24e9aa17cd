"""The project's one error base (what the CLI turns into a one-line message, exit 2) and the one
option check.

Every error raised for bad input, a bad config or a damaged file derives from
:class:`BilafError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class BilafError(ValueError):
    """Bad input, config or file: the message names the thing and the fix."""


class InputError(BilafError):
    """An input file or option is missing, unreadable or malformed."""


class OutputError(BilafError):
    """An output path would replace something that is not this command's earlier output."""


def check_option(
    value: Any,
    name: str,
    kind: type = float,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    optional: bool = False,
    error: type[BilafError] = InputError,
) -> None:
    """Raise ``error`` naming ``name`` unless ``value`` is an integer (``kind=int``) or a
    finite number (``kind=float``) between ``low`` and ``high`` (open ends where asked); None
    passes when ``optional``. Every option is checked through this one function, so every
    message reads the same: "k must be an integer >= 1, got 0"."""
    if value is None and optional:
        return
    number = isinstance(value, numbers.Integral if kind is int else numbers.Real)
    ok = number and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if open_low else value >= low))
    ok = ok and (high is None or (value < high if open_high else value <= high))
    if not ok:
        kind_text = "an integer" if kind is int else "a finite number"
        if low is not None and high is not None:
            bounds = f" in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        elif low is not None:
            bounds = f" {'>' if open_low else '>='} {low:g}"
        elif high is not None:
            bounds = f" {'<' if open_high else '<='} {high:g}"
        else:
            bounds = ""
        none = " or None" if optional else ""
        raise error(f"{name} must be {kind_text}{bounds}{none}, got {value!r}")
