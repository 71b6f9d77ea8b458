"""Small, single-purpose validators for config tables.

Every check raises (or collects) a message of the form ``FILE: FIELD: expected ..., got ...``
so that the user sees the file, the field path and what was expected.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any


def where(source: str, field: str) -> str:
    """``'configs/x.toml: solver.rtol'``."""
    return f"{source}: {field}" if field else source


def unknown_keys(table: Mapping[str, Any], valid: Iterable[str], source: str, field: str) -> list[str]:
    """One message per key of ``table`` that is not in ``valid``, listing the valid keys."""
    valid = list(valid)
    problems = []
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            name = f"{field}.{key}" if field else key
            problems.append(
                f"{where(source, name)}: unknown key{hint}; valid keys: {', '.join(valid)}"
            )
    return problems


def describe(value: Any) -> str:
    """Value and type as shown in messages."""
    return f"{value!r} ({type(value).__name__})"


def check_number(
    value: Any,
    source: str,
    field: str,
    *,
    lower: float | None = None,
    upper: float | None = None,
    strict_lower: bool = False,
    integer: bool = False,
) -> str | None:
    """Return a message if ``value`` is not a finite number in the allowed range, else None."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        return f"{where(source, field)}: expected {kind}, got {describe(value)}"
    if not math.isfinite(value):
        return f"{where(source, field)}: expected a finite number, got {value!r}"
    if lower is not None and (value <= lower if strict_lower else value < lower):
        op = ">" if strict_lower else ">="
        return f"{where(source, field)}: expected {kind} {op} {lower:g}, got {value!r}"
    if upper is not None and value > upper:
        return f"{where(source, field)}: expected {kind} <= {upper:g}, got {value!r}"
    return None


def check_choice(value: Any, choices: Iterable[str], source: str, field: str) -> str | None:
    """Return a message if ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        return f"{where(source, field)}: expected one of {', '.join(map(repr, choices))}, got {value!r}"
    return None


def check_table(value: Any, source: str, field: str) -> str | None:
    """Return a message if ``value`` is not a TOML table."""
    if not isinstance(value, Mapping):
        return f"{where(source, field)}: expected a table, got {describe(value)}"
    return None
