"""Dose events: the :class:`Dose` value object, NONMEM-style records and solver event arrays.

Event semantics
---------------
============== ===== ============================================================================
EventType      EVID  meaning
============== ===== ============================================================================
``OBS``        0     observation record (read and skipped: the output grid comes from the scenario)
``DOSE``       1     dose: bolus, or zero-order infusion when ``rate`` or ``duration`` is given
``OTHER``      2     other event (compartment on/off): not supported yet
``RESET``      3     reset every state to its initial value and switch every infusion off
``DOSE_RESET`` 4     reset, then dose (the reset at the record time, the dose after any lag)
============== ===== ============================================================================

Infusions (``rate`` XOR ``duration``) follow NONMEM/PREDPP:

* ``rate`` given (NONMEM ``RATE > 0``): the amount ``F·AMT`` is delivered at ``rate``, so
  bioavailability changes the *duration*, ``F·AMT / rate``.
* ``duration`` given (rxode2's ``dur``; NONMEM ``RATE = -2`` with a fixed ``Dn``): the amount
  ``F·AMT`` is delivered over ``duration``, so bioavailability changes the *rate*.
* An infusion is active on ``[start, end)``.

Ordering at equal times is explicit (:func:`event_priority`): a reset first, then infusion
stops, then doses and infusion starts in record order; observations last (they see the doses).

Kernel events
-------------
:func:`to_kernel_events` turns one subject's doses into four flat arrays that a numba kernel
consumes without Python objects: ``time`` (f8), ``kind`` (i8, :class:`EventKind`), ``state``
(i8, state index; -1 for a reset) and ``value`` (f8: amount for a bolus, rate change for an
infusion). :func:`cohort_kernel_events` concatenates subjects behind an ``ev_ptr`` offset array.

NONMEM records
--------------
:func:`read_nonmem` / :func:`write_nonmem` read and write ``ID, TIME, AMT, CMT, EVID, II, ADDL,
RATE`` (plus optional ``SS`` and rxode2's ``DUR``). Column names are case-insensitive; other
columns (``DV``, ``MDV``, covariates) are ignored. ``CMT`` is a 1-based index into
``state_names`` or a state name; ``write_nonmem`` writes the index. A row number in a message is
the line number in the CSV file (the header is line 1), or the index label of a DataFrame row.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from il2sim._solvers.status import EventKind
from il2sim.errors import RegimenError

__all__ = [
    "Dose",
    "EventType",
    "EventKind",
    "cohort_kernel_events",
    "event_priority",
    "expand_addl",
    "read_nonmem",
    "sort_doses",
    "to_kernel_events",
    "write_nonmem",
]


class EventType(IntEnum):
    """NONMEM event identifier (``EVID``)."""

    OBS = 0
    DOSE = 1
    OTHER = 2
    RESET = 3
    DOSE_RESET = 4


_DOSE_EVIDS = (EventType.DOSE, EventType.RESET, EventType.DOSE_RESET)

# Priority at equal times: smaller first. Used for Dose ordering and kernel events alike.
_PRIORITY_RESET = 0
_PRIORITY_RATE_OFF = 1
_PRIORITY_DOSE = 2
_PRIORITY_OBS = 3


def event_priority(evid: EventType) -> int:
    """Order of records at equal times: reset (3, 4) before dose (1) before observation (0, 2)."""
    if evid in (EventType.RESET, EventType.DOSE_RESET):
        return _PRIORITY_RESET
    if evid == EventType.DOSE:
        return _PRIORITY_DOSE
    return _PRIORITY_OBS


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


@dataclass(frozen=True)
class Dose:
    """One dosing record (immutable).

    Parameters
    ----------
    time
        Record time in hours.
    amt
        Amount in the dosed state's unit (> 0 for a dose; 0 for a reset).
    cmt
        Name of the dosed state; ``None`` only for a ``RESET`` (use :meth:`Dose.reset`).
    rate
        Zero-order infusion rate (amount/h, > 0); ``None`` for a bolus. Excludes ``duration``.
    duration
        Zero-order infusion duration (h, > 0); ``None`` for a bolus. Excludes ``rate``.
    ii
        Interdose interval (h) of the ``addl`` additional doses; ``None`` when there are none.
    addl
        Number of additional identical doses, ``ii`` apart (needs ``ii > 0``).
    evid
        ``EventType.DOSE`` (default), ``RESET`` or ``DOSE_RESET``.

    ``ii=0`` and ``addl=0`` are stored as ``None`` so that equal doses compare equal however
    they were written.
    """

    time: float
    amt: float
    cmt: str | None
    rate: float | None = None
    duration: float | None = None
    ii: float | None = None
    addl: int | None = None
    evid: EventType = EventType.DOSE

    def __post_init__(self) -> None:
        problems = []
        if not _is_number(self.time) or not math.isfinite(self.time):
            problems.append(f"time: expected a finite number (h), got {self.time!r}")
        try:
            evid = EventType(self.evid)
        except ValueError:
            evid = None
        if evid not in _DOSE_EVIDS:
            problems.append(
                f"evid: expected EventType.DOSE, RESET or DOSE_RESET, got {self.evid!r}"
            )
        else:
            object.__setattr__(self, "evid", evid)
        is_reset = evid == EventType.RESET
        if not _is_number(self.amt) or not math.isfinite(self.amt):
            problems.append(f"amt: expected a finite number, got {self.amt!r}")
        elif is_reset and self.amt != 0:
            problems.append(f"amt: a RESET record carries no amount; expected 0, got {self.amt!r}")
        elif not is_reset and self.amt <= 0:
            problems.append(f"amt: expected a number > 0 for a dose, got {self.amt!r}")
        if is_reset:
            if self.cmt is not None:
                problems.append(f"cmt: a RESET applies to every state; expected None, got {self.cmt!r}")
        elif not isinstance(self.cmt, str) or not self.cmt:
            problems.append(f"cmt: expected a state name, got {self.cmt!r}")
        for name in ("rate", "duration"):
            v = getattr(self, name)
            if v is not None and (not _is_number(v) or not math.isfinite(v) or v <= 0):
                hint = " (use None for a bolus)" if _is_number(v) and v == 0 else ""
                problems.append(f"{name}: expected None or a finite number > 0, got {v!r}{hint}")
        if self.rate is not None and self.duration is not None:
            problems.append(
                f"rate={self.rate!r} and duration={self.duration!r} given together; "
                "an infusion is set by one of them"
            )
        if is_reset and (self.rate is not None or self.duration is not None):
            problems.append("rate/duration: a RESET record is not an infusion")
        if self.ii is not None:
            if not _is_number(self.ii) or not math.isfinite(self.ii) or self.ii < 0:
                problems.append(f"ii: expected None or a finite number >= 0 (h), got {self.ii!r}")
            elif self.ii == 0:
                object.__setattr__(self, "ii", None)
            else:
                object.__setattr__(self, "ii", float(self.ii))
        if self.addl is not None:
            if not isinstance(self.addl, (int, np.integer)) or isinstance(self.addl, bool) or self.addl < 0:
                problems.append(f"addl: expected None or an integer >= 0, got {self.addl!r}")
            elif self.addl == 0:
                object.__setattr__(self, "addl", None)
            else:
                object.__setattr__(self, "addl", int(self.addl))
                if self.ii is None:
                    problems.append(f"addl={self.addl}: additional doses need ii > 0, got ii={self.ii!r}")
                if is_reset:
                    problems.append("addl: a RESET record cannot be repeated")
        if problems:
            raise RegimenError("invalid Dose: " + "; ".join(problems))
        for name in ("time", "amt", "rate", "duration"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, float(v))

    @classmethod
    def reset(cls, time: float) -> Dose:
        """A reset record (EVID 3) at ``time``."""
        return cls(time=time, amt=0.0, cmt=None, evid=EventType.RESET)

    @property
    def is_infusion(self) -> bool:
        """True for a zero-order infusion (``rate`` or ``duration`` given)."""
        return self.rate is not None or self.duration is not None

    @property
    def priority(self) -> int:
        """Order among records at equal times (see :func:`event_priority`)."""
        return event_priority(self.evid)


def sort_doses(doses: Iterable[Dose]) -> list[Dose]:
    """Stable sort by ``(time, priority)``: resets before doses at equal times; ties keep record order."""
    return sorted(doses, key=lambda d: (d.time, d.priority))


def expand_addl(doses: Iterable[Dose]) -> list[Dose]:
    """Expand ``addl``/``ii`` into concrete doses, sorted by ``(time, priority)``.

    A dose with ``addl = n`` becomes ``n + 1`` doses at ``time + k·ii`` (``k = 0..n``; each
    time computed directly, not accumulated) with ``ii = addl = None``. The result never
    carries ``addl``.
    """
    out: list[Dose] = []
    for d in doses:
        if not isinstance(d, Dose):
            raise RegimenError(f"expand_addl: expected Dose records, got {d!r}")
        if d.addl is None:
            out.append(replace(d, ii=None) if d.ii is not None else d)
            continue
        for k in range(d.addl + 1):
            out.append(replace(d, time=d.time + k * d.ii, ii=None, addl=None))
    return sort_doses(out)


# --------------------------------------------------------------------------- kernel events


def _per_state(values: Mapping[str, float] | None, name: str, state_index: Mapping[str, int],
               *, lower: float) -> dict[str, float]:
    if values is None:
        return {}
    out = {}
    for key, v in values.items():
        if key not in state_index:
            raise RegimenError(
                f"{name}: {key!r} is not a state; states: {', '.join(state_index)}"
            )
        if not _is_number(v) or not math.isfinite(v) or v < lower:
            raise RegimenError(f"{name}[{key!r}]: expected a finite number >= {lower:g}, got {v!r}")
        out[key] = float(v)
    return out


def to_kernel_events(
    doses: Iterable[Dose],
    *,
    state_index: Mapping[str, int],
    F: Mapping[str, float] | None = None,
    lag: Mapping[str, float] | None = None,
    t_end: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One subject's doses as solver event arrays ``(time, kind, state, value)``.

    Parameters
    ----------
    doses
        The subject's records (``addl`` is expanded here).
    state_index
        State name → index in the state vector.
    F
        Bioavailability per dosed state (default 1). A bolus delivers ``F·amt``; an infusion
        with ``rate`` runs ``F·amt/rate`` hours at ``rate``; an infusion with ``duration``
        runs ``duration`` hours at ``F·amt/duration``. ``F = 0`` gives no event.
    lag
        Absorption lag per dosed state (h, default 0): the dose (and infusion start) moves to
        ``time + lag``. A reset stays at its record time.
    t_end
        Events after ``t_end`` are dropped (an infusion started before ``t_end`` stays on to the
        end); events at ``t_end`` are kept.

    Returns
    -------
    time : float64[n]
    kind : int64[n]
        :class:`EventKind`: 0 bolus (``y[state] += value``), 1 rate change
        (``rate[state] += value``), 2 reset.
    state : int64[n]
        State index; -1 for a reset.
    value : float64[n]
        Amount (bolus), signed rate change (infusion start/stop) or 0 (reset).

    Events are sorted stably by ``(time, priority)``: reset, then infusion stops, then
    boluses and infusion starts in record order.
    """
    state_index = dict(state_index)
    Fs = _per_state(F, "F", state_index, lower=0.0)
    lags = _per_state(lag, "lag", state_index, lower=0.0)
    if t_end is not None and (not _is_number(t_end) or not math.isfinite(t_end)):
        raise RegimenError(f"t_end: expected None or a finite number (h), got {t_end!r}")

    rows: list[tuple[float, int, int, int, float]] = []  # (time, priority, kind, state, value)

    def add(t: float, prio: int, kind: EventKind, state: int, value: float) -> None:
        if t_end is None or t <= t_end:
            rows.append((t, prio, int(kind), state, value))

    for d in expand_addl(doses):
        if d.evid in (EventType.RESET, EventType.DOSE_RESET):
            add(d.time, _PRIORITY_RESET, EventKind.RESET, -1, 0.0)
        if d.evid == EventType.RESET:
            continue
        if d.cmt not in state_index:
            raise RegimenError(
                f"dose at t={d.time:g} h: cmt {d.cmt!r} is not a state; states: {', '.join(state_index)}"
            )
        s = state_index[d.cmt]
        f = Fs.get(d.cmt, 1.0)
        t0 = d.time + lags.get(d.cmt, 0.0)
        amount = f * d.amt
        if amount == 0.0:
            continue
        if d.rate is not None:
            rate, length = d.rate, amount / d.rate
        elif d.duration is not None:
            rate, length = amount / d.duration, d.duration
        else:
            add(t0, _PRIORITY_DOSE, EventKind.BOLUS, s, amount)
            continue
        add(t0, _PRIORITY_DOSE, EventKind.RATE, s, rate)
        add(t0 + length, _PRIORITY_RATE_OFF, EventKind.RATE, s, -rate)

    rows.sort(key=lambda r: (r[0], r[1]))  # stable: record order among equals
    n = len(rows)
    time = np.fromiter((r[0] for r in rows), dtype=np.float64, count=n)
    kind = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
    state = np.fromiter((r[3] for r in rows), dtype=np.int64, count=n)
    value = np.fromiter((r[4] for r in rows), dtype=np.float64, count=n)
    return time, kind, state, value


def cohort_kernel_events(
    per_subject: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-subject event arrays: ``(ev_ptr, time, kind, state, value)``.

    Subject ``i``'s events are ``time[ev_ptr[i]:ev_ptr[i + 1]]`` (and likewise for the others);
    ``ev_ptr`` has ``n_subjects + 1`` entries and starts at 0.
    """
    counts = np.fromiter((len(ev[0]) for ev in per_subject), dtype=np.int64, count=len(per_subject))
    ev_ptr = np.zeros(len(per_subject) + 1, dtype=np.int64)
    np.cumsum(counts, out=ev_ptr[1:])
    if len(per_subject) == 0:
        empty_f, empty_i = np.zeros(0, np.float64), np.zeros(0, np.int64)
        return ev_ptr, empty_f, empty_i, empty_i.copy(), empty_f.copy()
    for i, ev in enumerate(per_subject):
        if len(ev) != 4 or len({len(a) for a in ev}) != 1:
            raise RegimenError(
                f"cohort_kernel_events: subject {i}: expected four arrays of equal length "
                "(time, kind, state, value)"
            )
    time = np.concatenate([np.asarray(ev[0], np.float64) for ev in per_subject])
    kind = np.concatenate([np.asarray(ev[1], np.int64) for ev in per_subject])
    state = np.concatenate([np.asarray(ev[2], np.int64) for ev in per_subject])
    value = np.concatenate([np.asarray(ev[3], np.float64) for ev in per_subject])
    return ev_ptr, time, kind, state, value


# --------------------------------------------------------------------------- NONMEM records

_REQUIRED = ("ID", "TIME", "AMT", "CMT")
_OPTIONAL = ("EVID", "II", "ADDL", "RATE", "SS", "DUR")


class _Row:
    """Accessors for one record that raise messages naming the source, row and column."""

    def __init__(self, source: str, label: str, values: Mapping[str, Any]):
        self.source, self.label, self.values = source, label, values

    def fail(self, msg: str) -> RegimenError:
        return RegimenError(f"{self.source} row {self.label}: {msg}")

    def raw(self, col: str) -> Any:
        v = self.values.get(col)
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, str):
            v = v.strip()
            if v in ("", "."):  # NONMEM reads "." as 0
                return None if v == "" else 0
        return v

    def number(self, col: str, *, required: bool = False, default: float = 0.0) -> float:
        v = self.raw(col)
        if v is None:
            if required:
                raise self.fail(f"{col} is missing; expected a number")
            return default
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise self.fail(f"{col}={v!r} is not a number") from None
        if not math.isfinite(x):
            raise self.fail(f"{col}={v!r}: expected a finite number")
        return x

    def integer(self, col: str, *, default: int = 0) -> int:
        x = self.number(col, default=default)
        if x != int(x):
            raise self.fail(f"{col}={x:g}: expected an integer")
        return int(x)


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def _subject_id(row: _Row) -> int | str:
    v = row.raw("ID")
    if v is None:
        raise row.fail("ID is missing")
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isfinite(x) and x == int(x):
        return int(x)
    return str(v)


def _cmt(row: _Row, state_names: Sequence[str]) -> str:
    v = row.raw("CMT")
    valid = f"expected 1..{len(state_names)} or a state name ({', '.join(state_names)})"
    if v is None:
        raise row.fail(f"CMT is missing; {valid}")
    if isinstance(v, str) and v in state_names:
        return v
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise row.fail(f"CMT={v!r} is not a state; {valid}") from None
    if not math.isfinite(x):
        raise row.fail(f"CMT={v!r} is not a state; {valid}")
    if x < 0:
        raise row.fail(f"CMT={_fmt(x)} (compartment off) is not supported; {valid}")
    if x != int(x) or not 1 <= x <= len(state_names):
        raise row.fail(f"CMT={_fmt(x)}: {valid}")
    return state_names[int(x) - 1]


def _row_to_dose(row: _Row, state_names: Sequence[str]) -> Dose | None:
    evid_raw = row.integer("EVID", default=-1) if row.raw("EVID") is not None else None
    amt = row.number("AMT", required=False)
    if evid_raw is None:  # NONMEM default: a record with an amount is a dose
        evid_raw = 1 if amt != 0 else 0
    try:
        evid = EventType(evid_raw)
    except ValueError:
        raise row.fail(f"EVID={evid_raw}: expected 0, 1, 2, 3 or 4") from None
    time = row.number("TIME", required=True)
    if evid == EventType.OBS:
        return None
    if evid == EventType.OTHER:
        raise row.fail("EVID=2 (other event) is not supported yet; remove the record")
    ss = row.number("SS")
    if ss != 0:
        raise row.fail(
            f"SS={_fmt(ss)} (steady state) is not supported yet; give the doses explicitly "
            "(II/ADDL) from the start"
        )
    if evid == EventType.RESET:
        for col in ("AMT", "RATE", "ADDL"):
            if row.number(col) != 0:
                raise row.fail(f"{col}={_fmt(row.number(col))}: a reset record (EVID=3) takes {col}=0")
        return Dose.reset(time)
    if amt <= 0:
        raise row.fail(f"AMT={_fmt(amt)}: a dose record (EVID={int(evid)}) needs AMT > 0")
    cmt = _cmt(row, state_names)
    rate = row.number("RATE")
    if rate == -1:
        raise row.fail("RATE=-1 (modelled rate) is not supported; give a rate > 0 or 0")
    if rate == -2:
        raise row.fail(
            "RATE=-2 (modelled duration) is not supported; give a rate > 0 or 0, "
            "or a duration in a DUR column"
        )
    if rate < 0:
        raise row.fail(f"RATE={_fmt(rate)} is not valid; give a rate > 0 or 0")
    dur = row.number("DUR")
    if dur < 0:
        raise row.fail(f"DUR={_fmt(dur)} is not valid; give a duration > 0 or 0")
    if rate > 0 and dur > 0:
        raise row.fail(f"RATE={_fmt(rate)} and DUR={_fmt(dur)} given together; give one of them")
    ii = row.number("II")
    if ii < 0:
        raise row.fail(f"II={_fmt(ii)}: expected an interdose interval >= 0")
    addl = row.integer("ADDL")
    if addl < 0:
        raise row.fail(f"ADDL={addl}: negative ADDL is not supported; expected an integer >= 0")
    if addl > 0 and ii <= 0:
        raise row.fail(f"ADDL={addl} needs II > 0, got II={_fmt(ii)}")
    return Dose(
        time=time, amt=amt, cmt=cmt,
        rate=rate if rate > 0 else None, duration=dur if dur > 0 else None,
        ii=ii if ii > 0 else None, addl=addl if addl > 0 else None, evid=evid,
    )


def read_nonmem(
    path_or_dataframe: str | os.PathLike | pd.DataFrame,
    *,
    state_names: Sequence[str],
    source: str | None = None,
) -> dict[int | str, list[Dose]]:
    """Read NONMEM-style event records into doses per subject.

    Parameters
    ----------
    path_or_dataframe
        A CSV file or a :class:`pandas.DataFrame` with columns ``ID, TIME, AMT, CMT`` and
        optionally ``EVID, II, ADDL, RATE, SS, DUR`` (any case; other columns are ignored).
    state_names
        The model's states in order; ``CMT = k`` means ``state_names[k - 1]``. ``CMT`` may
        also hold a state name.
    source
        Name used in messages (default: the path, or ``"DataFrame"``).

    Returns
    -------
    dict
        Subject ID (an int when the ID is integral, else a string) → that subject's doses in
        record order. Subjects appear in file order; a subject with only observations maps to
        an empty list.

    Notes
    -----
    An ID that reads as an integer becomes an int (``"007"`` → 7); any other ID stays a string.
    Blank cells and NONMEM's ``"."`` read as 0 in optional columns. ``EVID`` defaults to 1
    when ``AMT ≠ 0`` and to 0 otherwise. Observation rows (EVID 0) are skipped. Not supported
    (each a :class:`~il2sim.errors.RegimenError` naming the row and column): EVID 2, SS ≠ 0,
    RATE -1/-2, negative CMT or ADDL. As in NONMEM, each subject must be one contiguous block of
    rows.
    """
    state_names = list(state_names)
    if not state_names or not all(isinstance(s, str) and s for s in state_names):
        raise RegimenError(f"read_nonmem: state_names: expected a list of state names, got {state_names!r}")
    if isinstance(path_or_dataframe, pd.DataFrame):
        src = source or "DataFrame"
        df = path_or_dataframe
        labels = [str(i) for i in df.index]
    else:
        path = Path(path_or_dataframe)
        src = source or str(path_or_dataframe)
        try:
            df = pd.read_csv(
                path, dtype=str, keep_default_na=False, skip_blank_lines=False,
            )
        except FileNotFoundError:
            raise RegimenError(f"{src}: file not found") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise RegimenError(f"{src}: not a readable CSV file ({exc})") from None
        labels = [str(i + 2) for i in range(len(df))]  # file line number; header is line 1

    by_upper: dict[str, str] = {}
    for col in df.columns:
        key = str(col).strip().upper()
        if key in by_upper:
            raise RegimenError(f"{src}: columns {by_upper[key]!r} and {col!r} differ only in case")
        by_upper[key] = col
    missing = [c for c in _REQUIRED if c not in by_upper]
    if missing:
        raise RegimenError(
            f"{src}: missing column(s) {', '.join(missing)}; required: {', '.join(_REQUIRED)} "
            f"(optional: {', '.join(_OPTIONAL)}; column names are case-insensitive)"
        )
    wanted = [c for c in _REQUIRED + _OPTIONAL if c in by_upper]
    columns = {c: df[by_upper[c]].tolist() for c in wanted}

    out: dict[int | str, list[Dose]] = {}
    finished: set[int | str] = set()
    current: int | str | None = None
    for i, label in enumerate(labels):
        values = {c: columns[c][i] for c in wanted}
        row = _Row(src, label, values)
        if all(row.raw(c) is None for c in wanted):
            continue  # blank line
        sid = _subject_id(row)
        if sid != current:
            if sid in finished or sid in out:
                raise row.fail(
                    f"ID={sid} appears again after other subjects; give each subject one "
                    "contiguous block of rows (NONMEM would read a new individual)"
                )
            if current is not None:
                finished.add(current)
            current = sid
            out[sid] = []
        dose = _row_to_dose(row, state_names)
        if dose is not None:
            out[sid].append(dose)
    return out


def write_nonmem(
    doses_by_id: Mapping[int | str, Iterable[Dose]],
    path_or_None: str | os.PathLike | None,
    *,
    state_names: Sequence[str],
) -> pd.DataFrame:
    """Write doses per subject as NONMEM-style records; return them as a DataFrame.

    Columns are ``ID, TIME, AMT, CMT, EVID, II, ADDL, RATE`` (``CMT`` the 1-based index into
    ``state_names``; 0 on a reset), plus ``DUR`` when any dose is a duration-based infusion.
    Records keep their given order (``addl`` is not expanded). When a path is given, the CSV
    is written atomically (temporary file in the same folder, then rename). Floats are written
    with enough digits to read back exactly: ``read_nonmem(write_nonmem(x, p, ...), ...) == x``.
    """
    state_names = list(state_names)
    index = {name: k + 1 for k, name in enumerate(state_names)}
    records = []
    has_dur = False
    for sid, doses in doses_by_id.items():
        for d in doses:
            if not isinstance(d, Dose):
                raise RegimenError(f"write_nonmem: subject {sid!r}: expected Dose records, got {d!r}")
            if d.evid == EventType.RESET:
                cmt = 0
            elif d.cmt in index:
                cmt = index[d.cmt]
            else:
                raise RegimenError(
                    f"write_nonmem: subject {sid!r}: cmt {d.cmt!r} is not in state_names "
                    f"({', '.join(state_names)})"
                )
            has_dur = has_dur or d.duration is not None
            records.append({
                "ID": sid, "TIME": d.time, "AMT": d.amt, "CMT": cmt, "EVID": int(d.evid),
                "II": d.ii or 0.0, "ADDL": d.addl or 0, "RATE": d.rate or 0.0,
                "DUR": d.duration or 0.0,
            })
    cols = ["ID", "TIME", "AMT", "CMT", "EVID", "II", "ADDL", "RATE"] + (["DUR"] if has_dur else [])
    df = pd.DataFrame.from_records(records, columns=cols + ([] if has_dur else ["DUR"]))[cols]
    if path_or_None is not None:
        path = Path(path_or_None)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                df.to_csv(fh, index=False, float_format=None)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return df
