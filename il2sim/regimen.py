"""The regimen language: cycles of dosing blocks, written in a config's ``[regimen]`` table.

Example (the seed trial, Peest et al. 1995; ``configs/regimens/seed_1995.toml``)::

    [regimen]
    target = "Asc"                 # dosed state
    amount_unit = "MIU/m2"
    cycle_days = 84                # one cycle = 12 weeks; cycle k starts at (k-1)·84·24 h
    max_cycles = 13
    stop = "progression"           # applied by the simulation layer at assessment visits
    assess_days = [84]             # default [cycle_days]
    start_weekday = "Mon"          # weekday of day 1 of cycle 1 (default "Mon")

    [[regimen.block]]
    days = [1, 2]                  # inclusive day range within the cycle
    clock = ["08:00", "20:00"]     # dose times on each selected day
    amount = 9.0

    [[regimen.block]]
    days = [3, 56]
    weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri"]
    clock = ["08:00", "20:00"]
    amount = 0.9

Keys
----
``[regimen]``

================= ========== ======================================================================
key               default    meaning
================= ========== ======================================================================
``target``        required   dosed state (a model state in nmol or pmol)
``amount_unit``   required   unit of ``amount``, one of :data:`il2sim.units.AMOUNT_UNITS`
``cycle_days``    required   cycle length in days (integer, 1..3650)
``max_cycles``    1          number of cycles (integer >= 1)
``stop``          ``"none"`` stop rule checked at assessment visits: ``"none"`` or ``"progression"``
``assess_days``   [cycle]    assessment visit days within each cycle, strictly increasing
``start_weekday`` ``"Mon"``  weekday of day 1 of cycle 1
``block``         required   one or more ``[[regimen.block]]`` tables
================= ========== ======================================================================

``[[regimen.block]]``

================= ========== ======================================================================
``days``          required   ``[first, last]``, inclusive, ``1 <= first <= last <= cycle_days``
``clock``         required   dose clock times ``"HH:MM"`` (``"00:00"``–``"23:59"``), each once
``amount``        required   amount per dose, in ``amount_unit`` (> 0)
``weekdays``      all        only these weekdays (``"Mon"`` … ``"Sun"``)
``every_days``    1          every k-th day counted from ``first``
``target``        regimen's  dosed state for this block
``amount_unit``   regimen's  unit for this block (``rate`` is in this unit per hour)
``duration_h``    —          zero-order infusion over this many hours (excludes ``rate``)
``rate``          —          zero-order infusion at this rate, ``amount_unit`` per hour
================= ========== ======================================================================

Time semantics
--------------
t = 0 h is midnight at the start of day 1 of cycle 1. Cycle k (1-based) starts at
``(k - 1) · cycle_days · 24`` h, and day d of a cycle starts ``(d - 1) · 24`` h later. Weekdays
follow the calendar: day 1 of cycle 1 is ``start_weekday`` and the days run on from there, so a
cycle whose length is not a multiple of 7 starts on another weekday. An assessment visit on day d
is at the start (00:00) of that day, before that day's doses.

Two blocks that dose the same state at the same time are an error (merge them into one block
whose amount is the sum, or separate their day ranges): in practice this is a mistyped day range,
and a silent double dose is the worst outcome of a dosing typo.

Every problem in a ``[regimen]`` table is reported at once in one
:class:`~il2sim.errors.RegimenError`, each line naming the file and the field path, e.g.
``configs/x.toml: regimen.block[1].days: expected [first, last] with 1 <= first <= last <=
cycle_days (84), got [3, 90]``. Block indices are 0-based, as in the TOML array.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from il2sim.dosing import Dose, write_nonmem
from il2sim.errors import RegimenError
from il2sim.units import AMOUNT_UNITS, STATE_AMOUNT_UNITS, Drug, dose_to_amount

__all__ = ["STOP_RULES", "WEEKDAYS", "Block", "Regimen"]

#: Weekday names, Monday first (one spelling each).
WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Valid values of ``regimen.stop``.
STOP_RULES: tuple[str, ...] = ("none", "progression")

_REGIMEN_KEYS = (
    "target", "amount_unit", "cycle_days", "max_cycles", "stop", "assess_days",
    "start_weekday", "block",
)
_BLOCK_KEYS = (
    "days", "clock", "amount", "weekdays", "every_days", "target", "amount_unit",
    "duration_h", "rate",
)
_CLOCK_RE = re.compile(r"(\d\d):(\d\d)")


# --------------------------------------------------------------------------- validators
# Each returns a message (without the "source: field: " prefix) or None.


def _describe(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})" if not isinstance(v, (list, str, int, float)) else repr(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(v: Any, low: int) -> str | None:
    if not _is_int(v) or v < low:
        return f"expected an integer >= {low}, got {_describe(v)}"
    return None


#: Longest cycle accepted: day-by-day checks and expansion walk every day of a cycle.
MAX_CYCLE_DAYS = 3650


def _at_most(v: Any, high: int, what: str) -> str | None:
    if v > high:
        return f"expected at most {high} {what}, got {_describe(v)}"
    return None


def _positive(v: Any) -> str | None:
    if not _is_num(v) or not math.isfinite(v) or v <= 0:
        return f"expected a finite number > 0, got {_describe(v)}"
    return None


def _name(v: Any) -> str | None:
    if not isinstance(v, str) or not v.strip():
        return f"expected a state name (non-empty string), got {_describe(v)}"
    return None


def _unit(v: Any) -> str | None:
    if v not in AMOUNT_UNITS:
        return f"unknown amount unit {v!r}; valid units: {', '.join(AMOUNT_UNITS)}"
    return None


def _weekday(v: Any) -> str | None:
    if v not in WEEKDAYS:
        close = difflib.get_close_matches(str(v), WEEKDAYS, n=1) if isinstance(v, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown weekday {v!r}{hint}; valid: {', '.join(WEEKDAYS)}"
    return None


def _clock_minutes(v: Any) -> int | None:
    m = _CLOCK_RE.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        return None
    hh, mm = int(m.group(1)), int(m.group(2))
    if hh > 23 or mm > 59:
        return None
    return 60 * hh + mm


def _unknown_keys(table: Mapping[str, Any], valid: Sequence[str], where: str) -> list[str]:
    out = []
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{where}.{key}: unknown key{hint}; valid keys: {', '.join(valid)}")
    return out


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class Block:
    """One ``[[regimen.block]]``: which days of a cycle, at which clock times, how much.

    Build blocks through :meth:`Regimen.from_dict`, which validates them; the fields hold
    canonical values (``days`` a 2-tuple, ``clock`` sorted ``"HH:MM"`` strings, ``weekdays``
    a tuple in the order given or None).
    """

    days: tuple[int, int]
    clock: tuple[str, ...]
    amount: float
    weekdays: tuple[str, ...] | None = None
    every_days: int = 1
    target: str | None = None
    amount_unit: str | None = None
    duration_h: float | None = None
    rate: float | None = None

    @property
    def clock_hours(self) -> tuple[float, ...]:
        """Clock times as hours after midnight."""
        return tuple(_clock_minutes(c) / 60.0 for c in self.clock)

    def selects(self, day: int, weekday: str) -> bool:
        """Whether cycle day ``day`` (falling on ``weekday``) is a dosing day of this block."""
        first, last = self.days
        return (
            first <= day <= last
            and (day - first) % self.every_days == 0
            and (self.weekdays is None or weekday in self.weekdays)
        )

    def to_dict(self) -> dict[str, Any]:
        """The block as a TOML-ready table (only keys that differ from their defaults)."""
        d: dict[str, Any] = {"days": list(self.days), "clock": list(self.clock), "amount": self.amount}
        if self.weekdays is not None:
            d["weekdays"] = list(self.weekdays)
        if self.every_days != 1:
            d["every_days"] = self.every_days
        for key in ("target", "amount_unit", "duration_h", "rate"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


@dataclass(frozen=True)
class Regimen:
    """A validated dosing regimen: cycles of blocks (see the module docstring for the language).

    Build one with :meth:`from_dict` (a parsed ``[regimen]`` table) or :meth:`from_toml`. Two
    regimens are equal when their canonical fields are equal (``source`` is not compared);
    ``Regimen.from_dict(r.to_dict()) == r``.
    """

    target: str
    amount_unit: str
    cycle_days: int
    blocks: tuple[Block, ...]
    max_cycles: int = 1
    stop: str = "none"
    assess_days: tuple[int, ...] = ()
    start_weekday: str = "Mon"
    source: str = field(default="<regimen>", compare=False)

    def __post_init__(self) -> None:
        # Every construction, direct or via from_dict, ends here: one validator, so a Regimen
        # object is always valid and canonical (from_dict validates once more; it costs < 1 ms).
        if not isinstance(self.blocks, tuple) or not all(isinstance(b, Block) for b in self.blocks):
            raise RegimenError(f"{self.source}: regimen.block: expected a tuple of Block, got {self.blocks!r}")
        if self.assess_days == () and _is_int(self.cycle_days):
            object.__setattr__(self, "assess_days", (self.cycle_days,))
        canonical = _parse(self.to_dict(), self.source)
        object.__setattr__(self, "blocks", canonical["blocks"])
        object.__setattr__(self, "assess_days", canonical["assess_days"])

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config.toml") -> Regimen:
        """Validate a parsed ``[regimen]`` table (the value of ``config["regimen"]``).

        Raises :class:`~il2sim.errors.RegimenError` listing every problem, each naming
        ``source`` and the field path (``regimen.block[1].days``).
        """
        return cls(**_parse(d, source), source=source)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> Regimen:
        """Read a TOML file whose only table is ``[regimen]``."""
        src = str(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise RegimenError(f"{src}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise RegimenError(f"{src}: not valid TOML ({exc})") from None
        problems = [f"{src}: {p.lstrip('.')}" for p in _unknown_keys(doc, ("regimen",), "")]
        if "regimen" not in doc:
            problems.append(f"{src}: regimen: missing [regimen] table")
        _raise(problems, src)
        return cls.from_dict(doc["regimen"], source=src)

    def to_dict(self) -> dict[str, Any]:
        """The canonical ``[regimen]`` table (every regimen-level key, blocks as tables)."""
        return {
            "target": self.target,
            "amount_unit": self.amount_unit,
            "cycle_days": self.cycle_days,
            "max_cycles": self.max_cycles,
            "stop": self.stop,
            "assess_days": list(self.assess_days),
            "start_weekday": self.start_weekday,
            "block": [b.to_dict() for b in self.blocks],
        }

    def to_toml(self) -> str:
        """The regimen as TOML text; ``Regimen.from_dict(tomllib.loads(r.to_toml())["regimen"]) == r``."""
        d = self.to_dict()
        blocks = d.pop("block")
        lines = ["[regimen]"] + [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        for b in blocks:
            lines += ["", "[[regimen.block]]"] + [f"{k} = {_toml_value(v)}" for k, v in b.items()]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ expansion

    def _check_n_cycles(self, n_cycles: int | None) -> int:
        if n_cycles is None:
            return self.max_cycles
        if not _is_int(n_cycles) or not 1 <= n_cycles <= self.max_cycles:
            raise RegimenError(
                f"{self.source}: n_cycles: expected an integer in 1..max_cycles ({self.max_cycles}), "
                f"got {n_cycles!r}"
            )
        return n_cycles

    def cycle_start(self, cycle: int) -> float:
        """Start time (h) of ``cycle`` (1-based)."""
        return float((cycle - 1) * self.cycle_days * 24)

    def weekday(self, cycle: int, day: int) -> str:
        """Weekday of ``day`` (1-based) of ``cycle`` (1-based), following the calendar."""
        start = WEEKDAYS.index(self.start_weekday)
        return WEEKDAYS[(start + (cycle - 1) * self.cycle_days + day - 1) % 7]

    def schedule(self, n_cycles: int | None = None) -> pd.DataFrame:
        """Every dose as a table, before unit conversion, sorted by time then block.

        Columns: ``time_h``, ``cycle``, ``day``, ``weekday``, ``clock``, ``block`` (0-based),
        ``target``, ``amount``, ``amount_unit``, ``duration_h``, ``rate`` (NaN for a bolus).
        The same table serves every subject of a cohort: only the unit conversion
        (:func:`il2sim.units.dose_to_amount`, vectorised over BSA or weight) differs.
        """
        n = self._check_n_cycles(n_cycles)
        rows = []
        hours = [b.clock_hours for b in self.blocks]
        for cycle in range(1, n + 1):
            t_cycle = (cycle - 1) * self.cycle_days * 24
            for day in range(1, self.cycle_days + 1):
                wd = self.weekday(cycle, day)
                for bi, b in enumerate(self.blocks):
                    if not b.selects(day, wd):
                        continue
                    for c, h in zip(b.clock, hours[bi]):
                        rows.append((
                            t_cycle + (day - 1) * 24 + h, cycle, day, wd, c, bi,
                            b.target or self.target, b.amount, b.amount_unit or self.amount_unit,
                            np.nan if b.duration_h is None else b.duration_h,
                            np.nan if b.rate is None else b.rate,
                        ))
        cols = ["time_h", "cycle", "day", "weekday", "clock", "block", "target", "amount",
                "amount_unit", "duration_h", "rate"]
        df = pd.DataFrame.from_records(rows, columns=cols)
        return df.sort_values(["time_h", "block"], kind="stable", ignore_index=True)

    def doses(
        self,
        *,
        bsa: float | None = None,
        weight: float | None = None,
        drug: Drug,
        n_cycles: int | None = None,
        state_units: Mapping[str, str] | None = None,
    ) -> list[Dose]:
        """Concrete doses (time in h, amount in the dosed state's unit) for one subject.

        Parameters
        ----------
        bsa
            Body-surface area (m²); needed when a unit is per m².
        weight
            Body weight (kg); needed when a unit is per kg.
        drug
            Conversion factors (:data:`il2sim.units.ALDESLEUKIN` for rIL-2).
        n_cycles
            Cycles to expand, 1..``max_cycles`` (default ``max_cycles``). A stop rule is not
            applied here; the simulation layer drops doses after a stopping assessment.
        state_units
            State name → unit; a dosed state must be in ``"nmol"`` or ``"pmol"``. Default: every
            dosed state in nmol.
        """
        sched = self.schedule(n_cycles)
        units = {}
        for tgt in dict.fromkeys(sched["target"]):
            if state_units is None:
                units[tgt] = "nmol"
            elif tgt not in state_units:
                raise RegimenError(
                    f"{self.source}: regimen.target: dosed state {tgt!r} is not in state_units "
                    f"({', '.join(state_units)})"
                )
            elif state_units[tgt] not in STATE_AMOUNT_UNITS:
                raise RegimenError(
                    f"{self.source}: regimen.target: dosed state {tgt!r} is in {state_units[tgt]!r}; "
                    f"a dosed state must be in one of {', '.join(STATE_AMOUNT_UNITS)}"
                )
            else:
                units[tgt] = state_units[tgt]
        conv: dict[tuple[float, str, str], float] = {}

        def amount(x: float, unit: str, tgt: str) -> float:
            key = (x, unit, units[tgt])
            if key not in conv:
                try:
                    conv[key] = dose_to_amount(
                        x, unit, bsa=bsa, weight=weight, drug=drug, target_unit=units[tgt]
                    )
                except RegimenError as exc:
                    raise RegimenError(f"{self.source}: {exc}") from None
            return conv[key]

        out = []
        for r in sched.itertuples(index=False):
            rate = None if math.isnan(r.rate) else amount(r.rate, r.amount_unit, r.target)
            out.append(Dose(
                time=r.time_h,
                amt=amount(r.amount, r.amount_unit, r.target),
                cmt=r.target,
                rate=rate,
                duration=None if math.isnan(r.duration_h) else r.duration_h,
            ))
        return out

    def assessment_times(self, n_cycles: int | None = None) -> np.ndarray:
        """Assessment visit times (h): 00:00 of each ``assess_days`` day of cycles 1..n_cycles."""
        n = self._check_n_cycles(n_cycles)
        return np.array(
            [((k * self.cycle_days) + d - 1) * 24.0 for k in range(n) for d in self.assess_days],
            dtype=np.float64,
        )

    def to_nonmem(
        self,
        path_or_None: str | os.PathLike | None,
        *,
        state_names: Sequence[str],
        drug: Drug,
        bsa: float | None = None,
        weight: float | None = None,
        n_cycles: int | None = None,
        state_units: Mapping[str, str] | None = None,
        subject_id: int | str = 1,
    ) -> pd.DataFrame:
        """One subject's doses as NONMEM records (see :func:`il2sim.dosing.write_nonmem`)."""
        doses = self.doses(bsa=bsa, weight=weight, drug=drug, n_cycles=n_cycles, state_units=state_units)
        return write_nonmem({subject_id: doses}, path_or_None, state_names=state_names)


# --------------------------------------------------------------------------- parsing


def _raise(problems: list[str], source: str) -> None:
    if len(problems) == 1:
        raise RegimenError(problems[0])
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise RegimenError(f"{source}: {len(problems)} problems in [regimen]:\n{lines}")


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        text = v.replace("\\", "\\\\").replace('"', '\\"')
        # control characters must be escaped in a TOML basic string
        text = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
        return '"' + text + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")  # unreachable for a validated regimen


def _parse(d: Any, source: str) -> dict[str, Any]:
    """Validate a ``[regimen]`` table; return the Regimen fields (canonical) or raise."""
    if not isinstance(d, Mapping):
        raise RegimenError(f"{source}: regimen: expected a table, got {_describe(d)}")
    P: list[str] = []

    def bad(path: str, msg: str | None) -> bool:
        if msg is not None:
            P.append(f"{source}: {path}: {msg}")
            return True
        return False

    P += [f"{source}: {p}" for p in _unknown_keys(d, _REGIMEN_KEYS, "regimen")]
    for key in ("target", "amount_unit", "cycle_days", "block"):
        if key not in d:
            P.append(f"{source}: regimen.{key}: missing (required)")

    out: dict[str, Any] = {}
    if "target" in d and not bad("regimen.target", _name(d["target"])):
        out["target"] = d["target"]
    if "amount_unit" in d and not bad("regimen.amount_unit", _unit(d["amount_unit"])):
        out["amount_unit"] = d["amount_unit"]
    cycle_days = d.get("cycle_days")
    if "cycle_days" in d and bad("regimen.cycle_days", _int_at_least(cycle_days, 1)
                                 or _at_most(cycle_days, MAX_CYCLE_DAYS, "days (10 years)")):
        cycle_days = None
    out["cycle_days"] = cycle_days
    max_cycles = d.get("max_cycles", 1)
    if bad("regimen.max_cycles", _int_at_least(max_cycles, 1)):
        max_cycles = 1
    out["max_cycles"] = max_cycles
    stop = d.get("stop", "none")
    bad("regimen.stop", None if stop in STOP_RULES else
        f"expected one of {', '.join(repr(s) for s in STOP_RULES)}, got {_describe(stop)}")
    out["stop"] = stop
    start_wd = d.get("start_weekday", "Mon")
    if bad("regimen.start_weekday", _weekday(start_wd)):
        start_wd = None
    out["start_weekday"] = start_wd

    cd_text = f"cycle_days ({cycle_days})" if cycle_days is not None else "cycle_days"
    assess = d.get("assess_days", [cycle_days] if cycle_days is not None else [])
    if (not isinstance(assess, list) or not assess or not all(_is_int(a) for a in assess)
            or any(a < 1 or (cycle_days is not None and a > cycle_days) for a in assess)
            or any(b <= a for a, b in zip(assess, assess[1:]))):
        bad("regimen.assess_days",
            f"expected a non-empty, strictly increasing list of days in 1..{cd_text}, got {_describe(assess)}")
    out["assess_days"] = tuple(assess) if isinstance(assess, list) else ()

    blocks_raw = d.get("block")
    blocks: list[Block | None] = []
    if "block" in d and (not isinstance(blocks_raw, list) or not blocks_raw
                         or not all(isinstance(b, Mapping) for b in blocks_raw)):
        bad("regimen.block", f"expected one or more [[regimen.block]] tables, got {_describe(blocks_raw)}")
    elif "block" in d:
        for i, b in enumerate(blocks_raw):
            blocks.append(_parse_block(b, f"regimen.block[{i}]", cycle_days, bad, P, source))
    out["blocks"] = tuple(blocks)

    if not P:
        _check_schedule(out, source, P)
    _raise(P, source)
    return out


def _parse_block(b: Mapping[str, Any], where: str, cycle_days: int | None, bad, P: list[str],
                 source: str) -> Block | None:
    n_before = len(P)
    P += [f"{source}: {p}" for p in _unknown_keys(b, _BLOCK_KEYS, where)]
    for key in ("days", "clock", "amount"):
        if key not in b:
            P.append(f"{source}: {where}.{key}: missing (required)")

    days = b.get("days")
    if "days" in b:
        hi = cycle_days if cycle_days is not None else math.inf
        cd_text = f"cycle_days ({cycle_days})" if cycle_days is not None else "cycle_days"
        if not (isinstance(days, list) and len(days) == 2 and all(_is_int(x) for x in days)
                and 1 <= days[0] <= days[1] <= hi):
            bad(f"{where}.days",
                f"expected [first, last] with 1 <= first <= last <= {cd_text}, got {_describe(days)}")
    clock = b.get("clock")
    if "clock" in b:
        if not isinstance(clock, list) or not clock:
            bad(f"{where}.clock", f'expected a non-empty list of times "HH:MM", got {_describe(clock)}')
        else:
            for j, c in enumerate(clock):
                if _clock_minutes(c) is None:
                    bad(f"{where}.clock[{j}]",
                        f'expected a time "HH:MM" from "00:00" to "23:59", got {_describe(c)}')
                elif c in clock[:j]:
                    bad(f"{where}.clock[{j}]", f"{c!r} is listed twice; give each clock time once")
    if "amount" in b:
        bad(f"{where}.amount", _positive(b["amount"]))
    weekdays = b.get("weekdays")
    if weekdays is not None:
        if not isinstance(weekdays, list) or not weekdays:
            bad(f"{where}.weekdays", f"expected a non-empty list of weekdays "
                f"({', '.join(WEEKDAYS)}), got {_describe(weekdays)}")
        else:
            for j, w in enumerate(weekdays):
                if not bad(f"{where}.weekdays[{j}]", _weekday(w)) and w in weekdays[:j]:
                    bad(f"{where}.weekdays[{j}]", f"{w!r} is listed twice")
    every = b.get("every_days", 1)
    bad(f"{where}.every_days", _int_at_least(every, 1))
    if "target" in b:
        bad(f"{where}.target", _name(b["target"]))
    if "amount_unit" in b:
        bad(f"{where}.amount_unit", _unit(b["amount_unit"]))
    for key in ("duration_h", "rate"):
        if key in b:
            bad(f"{where}.{key}", _positive(b[key]))
    if "duration_h" in b and "rate" in b:
        bad(where, "duration_h and rate given together; an infusion is set by one of them")
    if len(P) > n_before:
        return None
    return Block(
        days=(days[0], days[1]),
        clock=tuple(sorted(clock, key=_clock_minutes)),
        amount=float(b["amount"]),
        weekdays=tuple(weekdays) if weekdays is not None else None,
        every_days=every,
        target=b.get("target"),
        amount_unit=b.get("amount_unit"),
        duration_h=float(b["duration_h"]) if "duration_h" in b else None,
        rate=float(b["rate"]) if "rate" in b else None,
    )


def _check_schedule(out: dict[str, Any], source: str, P: list[str]) -> None:
    """Empty blocks and double doses. Weekday phases repeat every 7 cycles, so check up to 7."""
    cycle_days, blocks = out["cycle_days"], out["blocks"]
    start = WEEKDAYS.index(out["start_weekday"])
    n_check = min(out["max_cycles"], 7)
    used = [False] * len(blocks)
    seen: dict[tuple[str, int, int], int] = {}  # (target, absolute day, minute) → block
    clashes: set[tuple[int, int]] = set()
    for k in range(n_check):
        for day in range(1, cycle_days + 1):
            absday = k * cycle_days + day - 1
            wd = WEEKDAYS[(start + absday) % 7]
            for bi, b in enumerate(blocks):
                if not b.selects(day, wd):
                    continue
                used[bi] = True
                tgt = b.target or out["target"]
                for c in b.clock:
                    key = (tgt, absday, _clock_minutes(c))
                    other = seen.setdefault(key, bi)
                    if other != bi and (other, bi) not in clashes:
                        clashes.add((other, bi))
                        P.append(
                            f"{source}: regimen.block[{bi}]: doses {tgt} at cycle {k + 1} day {day} "
                            f"({wd}) {c}, as regimen.block[{other}] does; merge them into one block "
                            "(amounts add) or separate their days"
                        )
    for bi, b in enumerate(blocks):
        if not used[bi]:
            wds = f", weekdays {list(b.weekdays)}" if b.weekdays is not None else ""
            P.append(
                f"{source}: regimen.block[{bi}]: selects no dosing day (days {list(b.days)}"
                f"{wds}, every_days {b.every_days}, start_weekday {out['start_weekday']!r}); "
                "check days, weekdays and every_days"
            )
