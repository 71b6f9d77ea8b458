"""Shared settings for the fuzz tests: a small CI budget, or a long run with IL2SIM_FUZZ=long.

Each fuzz test takes ``fuzz(ci, long)``: ``ci`` examples by default (a few hundred in total
across the fuzz files, well under a minute), ``long`` examples when ``IL2SIM_FUZZ=long``
(more than 10,000 in total). The deadline catches hangs: a bad input must fail fast.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

LONG = os.environ.get("IL2SIM_FUZZ", "").lower() == "long"

# CI draws the same examples every run (a red CI names the change that broke something); the
# long run explores new ones each time.
settings.register_profile(
    "il2sim-fuzz-ci", deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "il2sim-fuzz-long", deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow]
)
_PROFILE = settings.get_profile("il2sim-fuzz-long" if LONG else "il2sim-fuzz-ci")


def fuzz(ci: int, long: int, **kw) -> settings:
    """Settings for one fuzz test: ``ci`` examples normally, ``long`` under IL2SIM_FUZZ=long."""
    return settings(_PROFILE, max_examples=long if LONG else ci, **kw)


def same_float(a: float, b: float, rel: float = 1e-9) -> bool:
    """Equal as results: both NaN, the same infinity, or close."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


def toml_value(v) -> str:
    """A scalar, array or inline table as TOML text (enough for model and config files)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_escape(c) for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _escape(c: str) -> str:
    if c == '"':
        return '\\"'
    if c == "\\":
        return "\\\\"
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c


def toml_key(k: str) -> str:
    if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k):
        return k
    return toml_value(k)


def toml_document(data: dict) -> str:
    """Top-level tables of inline values, e.g. a model module."""
    lines = []
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{toml_key(name)} = {toml_value(table)}")
    return "\n".join(lines) + "\n"
