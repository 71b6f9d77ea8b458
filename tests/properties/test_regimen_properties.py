"""Hypothesis properties of the regimen language, dose records and NONMEM round trips."""

import math
import tempfile
import tomllib
from pathlib import Path

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from il2sim.dosing import Dose, EventType, expand_addl, read_nonmem, to_kernel_events, write_nonmem
from il2sim.errors import RegimenError
from il2sim.regimen import WEEKDAYS, Regimen
from il2sim.units import ALDESLEUKIN

STATES = ["Asc", "Ac", "Ap"]
FAST = settings(max_examples=200, deadline=None)


@st.composite
def regimens(draw):
    cycle_days = draw(st.integers(1, 40))
    n_blocks = draw(st.integers(1, 3))
    blocks = []
    for i in range(n_blocks):
        first = draw(st.integers(1, cycle_days))
        last = draw(st.integers(first, cycle_days))
        # block i doses at minute i of its hours, so two blocks never share a dose time
        hours = draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))
        blk = {
            "days": [first, last],
            "clock": [f"{h:02d}:{i:02d}" for h in hours],
            "amount": draw(st.floats(0.01, 20.0, allow_nan=False)),
        }
        if draw(st.booleans()):
            blk["weekdays"] = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
        if draw(st.booleans()):
            blk["every_days"] = draw(st.integers(1, 5))
        if draw(st.booleans()):
            blk["target"] = draw(st.sampled_from(STATES))
        infusion = draw(st.sampled_from([None, "duration_h", "rate"]))
        if infusion:
            blk[infusion] = draw(st.floats(0.1, 10.0, allow_nan=False))
        blocks.append(blk)
    d = {
        "target": draw(st.sampled_from(STATES)),
        "amount_unit": draw(st.sampled_from(["MIU", "MIU/m2", "ug/kg", "nmol"])),
        "cycle_days": cycle_days,
        "max_cycles": draw(st.integers(1, 4)),
        "start_weekday": draw(st.sampled_from(WEEKDAYS)),
        "stop": draw(st.sampled_from(["none", "progression"])),
        "block": blocks,
    }
    try:
        return Regimen.from_dict(d, source="hyp.toml")
    except RegimenError as exc:
        # the only way a drawn regimen is invalid: a weekday filter that leaves a block empty
        assert "selects no dosing day" in str(exc), str(exc)
        assume(False)


def expand(r: Regimen) -> list[Dose]:
    return r.doses(bsa=1.8, weight=70.0, drug=ALDESLEUKIN)


@FAST
@given(regimens())
def test_doses_sorted_and_inside_their_cycle_windows(r: Regimen):
    doses = expand(r)
    times = np.array([d.time for d in doses])
    assert np.all(np.diff(times) >= 0)
    window = r.cycle_days * 24.0
    cycle = np.floor(times / window)
    assert np.all((cycle >= 0) & (cycle < r.max_cycles))
    # every dose falls on a day that one of the blocks selects, at one of its clock times
    for d in doses:
        k = int(d.time // window)
        day = int((d.time - k * window) // 24) + 1
        hour = d.time - k * window - (day - 1) * 24
        wd = r.weekday(k + 1, day)
        assert any(
            b.selects(day, wd) and any(math.isclose(hour, h, abs_tol=1e-9) for h in b.clock_hours)
            and (b.target or r.target) == d.cmt
            for b in r.blocks
        )
    # and the count matches a brute-force count over the calendar
    expected = sum(
        len(b.clock)
        for k in range(1, r.max_cycles + 1)
        for day in range(1, r.cycle_days + 1)
        for b in r.blocks
        if b.selects(day, r.weekday(k, day))
    )
    assert len(doses) == expected > 0


@FAST
@given(regimens())
def test_regimen_round_trips_through_nonmem_records_and_toml(r: Regimen):
    doses = expand(r)
    assert read_nonmem(write_nonmem({1: doses}, None, state_names=STATES), state_names=STATES) == {1: doses}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        r.to_nonmem(path, state_names=STATES, drug=ALDESLEUKIN, bsa=1.8, weight=70.0)
        assert read_nonmem(path, state_names=STATES) == {1: doses}
    assert Regimen.from_dict(tomllib.loads(r.to_toml())["regimen"]) == r


@FAST
@given(regimens())
def test_assessment_times_are_inside_their_cycles(r: Regimen):
    t = r.assessment_times()
    assert len(t) == r.max_cycles * len(r.assess_days)
    assert np.all(np.diff(t) > 0)
    assert t[-1] < r.max_cycles * r.cycle_days * 24


finite_times = st.floats(0.0, 1000.0, allow_nan=False)
amounts = st.floats(1e-3, 1e3, allow_nan=False)


@st.composite
def dose_records(draw):
    kind = draw(st.sampled_from(["bolus", "rate", "duration", "reset", "dose_reset"]))
    t = draw(finite_times)
    if kind == "reset":
        return Dose.reset(t)
    extra = {}
    if kind == "rate":
        extra["rate"] = draw(st.floats(0.01, 100.0))
    if kind == "duration":
        extra["duration"] = draw(st.floats(0.01, 100.0))
    if draw(st.booleans()):
        extra["ii"] = draw(st.floats(0.5, 48.0))
        extra["addl"] = draw(st.integers(0, 5))
    evid = EventType.DOSE_RESET if kind == "dose_reset" else EventType.DOSE
    return Dose(t, draw(amounts), draw(st.sampled_from(STATES)), evid=evid, **extra)


@FAST
@given(st.dictionaries(st.integers(1, 50) | st.sampled_from(["A", "pt-2"]), st.lists(dose_records(), min_size=1, max_size=8), min_size=1, max_size=4))
def test_any_records_round_trip_through_csv(x):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nm.csv"
        write_nonmem(x, path, state_names=STATES)
        assert read_nonmem(path, state_names=STATES) == x


@FAST
@given(st.lists(dose_records(), max_size=8))
def test_addl_expansion_count_and_order(doses):
    out = expand_addl(doses)
    assert len(out) == sum((d.addl or 0) + 1 for d in doses)
    keys = [(d.time, d.priority) for d in out]
    assert keys == sorted(keys)


@FAST
@given(st.lists(dose_records(), min_size=1, max_size=6), st.floats(0.0, 1.0), st.floats(0.0, 2.0))
def test_splitting_doses_in_halves_preserves_delivered_amount(doses, f, lag):
    idx = {s: i for i, s in enumerate(STATES)}
    F, LAG = {"Asc": f}, {"Asc": lag}

    def delivered(ds):
        t, k, s, v = to_kernel_events(ds, state_index=idx, F=F, lag=LAG)
        # bolus amounts, plus infusion amounts (rate × length): integrate the rate steps
        total = v[k == 0].sum()
        rates = np.zeros(len(STATES))
        for i in range(len(t) - 1):
            if k[i] == 1:
                rates[s[i]] += v[i]
            total += rates.sum() * (t[i + 1] - t[i]) if k[i + 1] != 2 else 0.0
        return total

    def halve(d):
        if d.evid == EventType.RESET:
            return [d]
        h = Dose(d.time, d.amt / 2, d.cmt, rate=None if d.rate is None else d.rate / 2,
                 duration=d.duration, ii=d.ii, addl=d.addl, evid=d.evid)
        return [h, Dose(h.time, h.amt, h.cmt, rate=h.rate, duration=h.duration, ii=h.ii, addl=h.addl)]

    plain = [d for d in doses if d.evid == EventType.DOSE]  # resets would cut infusions short
    assume(plain)
    split = [h for d in plain for h in halve(d)]
    assert math.isclose(delivered(split), delivered(plain), rel_tol=1e-9, abs_tol=1e-9)
    expected = sum(d.amt * ((d.addl or 0) + 1) * (f if d.cmt == "Asc" else 1.0) for d in plain)
    assert math.isclose(delivered(plain), expected, rel_tol=1e-9, abs_tol=1e-9)
