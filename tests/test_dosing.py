"""Dose records, ADDL expansion, kernel events and NONMEM records (PEERS.md §6 semantics)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from il2sim.dosing import (
    Dose,
    EventType,
    EventKind,
    cohort_kernel_events,
    expand_addl,
    read_nonmem,
    sort_doses,
    to_kernel_events,
    write_nonmem,
)
from il2sim.errors import RegimenError

STATES = ["Asc", "Ac", "Ap"]
IDX = {s: i for i, s in enumerate(STATES)}


def events(doses, **kw):
    t, k, s, v = to_kernel_events(doses, state_index=IDX, **kw)
    assert t.dtype == np.float64 and k.dtype == np.int64 and s.dtype == np.int64 and v.dtype == np.float64
    return list(zip(t.tolist(), k.tolist(), s.tolist(), v.tolist()))


# ----------------------------------------------------------------------------- Dose


def test_event_type_codes_are_nonmem_evid():
    assert [int(e) for e in EventType] == [0, 1, 2, 3, 4]
    assert [e.name for e in EventType] == ["OBS", "DOSE", "OTHER", "RESET", "DOSE_RESET"]


def test_dose_is_immutable_and_canonical():
    d = Dose(time=8, amt=10, cmt="Asc", ii=0, addl=0)
    assert d == Dose(8.0, 10.0, "Asc")
    assert d.ii is None and d.addl is None and isinstance(d.time, float)
    with pytest.raises(AttributeError):
        d.amt = 3.0  # type: ignore[misc]
    assert Dose.reset(5.0) == Dose(5.0, 0.0, None, evid=EventType.RESET)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 2.0, "duration": 1.0}, "rate=2.0 and duration=1.0 given together; an infusion is set by one of them"),
        ({"addl": 3}, "addl=3: additional doses need ii > 0, got ii=None"),
        ({"rate": 0.0}, "rate: expected None or a finite number > 0, got 0.0 (use None for a bolus)"),
        ({"rate": -1.0}, "rate: expected None or a finite number > 0, got -1.0"),
        ({"duration": float("inf")}, "duration: expected None or a finite number > 0, got inf"),
        ({"amt": 0.0}, "amt: expected a number > 0 for a dose, got 0.0"),
        ({"amt": None}, "amt: expected a finite number, got None"),
        ({"cmt": ""}, "cmt: expected a state name, got ''"),
        ({"time": float("nan")}, "time: expected a finite number (h), got nan"),
        ({"addl": 1.5, "ii": 12.0}, "addl: expected None or an integer >= 0, got 1.5"),
        ({"ii": -1.0}, "ii: expected None or a finite number >= 0 (h), got -1.0"),
        ({"evid": EventType.OBS}, "evid: expected EventType.DOSE, RESET or DOSE_RESET, got <EventType.OBS: 0>"),
    ],
)
def test_dose_rejects(kwargs, message):
    base = {"time": 0.0, "amt": 1.0, "cmt": "Asc"}
    with pytest.raises(RegimenError, match=re.escape("invalid Dose: " + message)):
        Dose(**{**base, **kwargs})


def test_reset_record_rules():
    with pytest.raises(RegimenError, match=re.escape("cmt: a RESET applies to every state; expected None, got 'Asc'")):
        Dose(1.0, 0.0, "Asc", evid=EventType.RESET)
    with pytest.raises(RegimenError, match=re.escape("amt: a RESET record carries no amount; expected 0, got 5.0")):
        Dose(1.0, 5.0, None, evid=EventType.RESET)


# ----------------------------------------------------------------------------- ordering and ADDL


def test_expand_addl_gives_concrete_sorted_doses():
    doses = [Dose(0.0, 10.0, "Asc", ii=12.0, addl=3), Dose(6.0, 1.0, "Ac")]
    got = expand_addl(doses)
    assert [(d.time, d.cmt) for d in got] == [(0.0, "Asc"), (6.0, "Ac"), (12.0, "Asc"), (24.0, "Asc"), (36.0, "Asc")]
    assert all(d.addl is None and d.ii is None for d in got)
    # times are time + k*ii, not accumulated sums
    many = expand_addl([Dose(0.1, 1.0, "Asc", ii=0.1, addl=99)])
    assert many[-1].time == 0.1 + 99 * 0.1


def test_reset_sorts_before_dose_at_equal_times_and_ties_keep_record_order():
    a = Dose(5.0, 1.0, "Asc")
    b = Dose(5.0, 2.0, "Ac")
    r = Dose.reset(5.0)
    assert sort_doses([a, b, r]) == [r, a, b]
    assert sort_doses([b, a]) == [b, a]
    dr = Dose(5.0, 3.0, "Asc", evid=EventType.DOSE_RESET)
    assert sort_doses([a, dr]) == [dr, a]


# ----------------------------------------------------------------------------- kernel events


def test_bolus_with_bioavailability_and_lag():
    ev = events([Dose(8.0, 10.0, "Asc")], F={"Asc": 0.35}, lag={"Asc": 0.45})
    assert ev == [(8.45, EventKind.BOLUS, 0, 10.0 * 0.35)]


def test_rate_infusion_F_scales_duration():
    # RATE = 5/h, AMT = 10, F = 0.5: 5 units at 5/h -> on at 2 h, off at 3 h (not 4 h)
    ev = events([Dose(2.0, 10.0, "Ac", rate=5.0)], F={"Ac": 0.5})
    assert ev == [(2.0, EventKind.RATE, 1, 5.0), (3.0, EventKind.RATE, 1, -5.0)]


def test_duration_infusion_F_scales_rate():
    # duration 4 h, AMT = 10, F = 0.5: 5 units over 4 h -> rate 1.25/h
    ev = events([Dose(2.0, 10.0, "Ac", duration=4.0)], F={"Ac": 0.5})
    assert ev == [(2.0, EventKind.RATE, 1, 1.25), (6.0, EventKind.RATE, 1, -1.25)]


def test_infusion_lag_shifts_start_and_stop():
    ev = events([Dose(2.0, 10.0, "Ac", rate=10.0)], lag={"Ac": 0.5})
    assert ev == [(2.5, EventKind.RATE, 1, 10.0), (3.5, EventKind.RATE, 1, -10.0)]


def test_back_to_back_infusions_stop_before_start():
    # [0, 1) then [1, 2): at t = 1 the first stops before the second starts
    ev = events([Dose(0.0, 2.0, "Ac", rate=2.0), Dose(1.0, 2.0, "Ac", rate=2.0)])
    assert ev == [(0.0, 1, 1, 2.0), (1.0, 1, 1, -2.0), (1.0, 1, 1, 2.0), (2.0, 1, 1, -2.0)]


def test_reset_first_then_stops_then_doses_in_record_order():
    doses = [Dose(0.0, 4.0, "Ac", rate=1.0), Dose(4.0, 7.0, "Ap"), Dose(4.0, 3.0, "Asc"), Dose.reset(4.0)]
    ev = events(doses)
    assert ev == [
        (0.0, EventKind.RATE, 1, 1.0),
        (4.0, EventKind.RESET, -1, 0.0),
        (4.0, EventKind.RATE, 1, -1.0),
        (4.0, EventKind.BOLUS, 2, 7.0),
        (4.0, EventKind.BOLUS, 0, 3.0),
    ]


def test_dose_reset_resets_at_record_time_and_doses_after_lag():
    ev = events([Dose(10.0, 5.0, "Asc", evid=EventType.DOSE_RESET)], lag={"Asc": 1.0})
    assert ev == [(10.0, EventKind.RESET, -1, 0.0), (11.0, EventKind.BOLUS, 0, 5.0)]


def test_split_dose_gives_two_events_summing_to_the_dose():
    whole = events([Dose(8.0, 64.638, "Asc")], F={"Asc": 0.35})
    halves = events([Dose(8.0, 32.319, "Asc"), Dose(8.0, 32.319, "Asc")], F={"Asc": 0.35})
    assert len(halves) == 2 and all(e[:3] == whole[0][:3] for e in halves)
    assert halves[0][3] + halves[1][3] == pytest.approx(whole[0][3], rel=1e-15)


def test_t_end_drops_later_events_but_keeps_a_running_infusion():
    doses = [Dose(0.0, 30.0, "Ac", rate=1.0), Dose(24.0, 1.0, "Asc"), Dose(30.0, 1.0, "Asc")]  # on [0, 30)
    ev = events(doses, t_end=24.0)
    assert ev == [(0.0, EventKind.RATE, 1, 1.0), (24.0, EventKind.BOLUS, 0, 1.0)]


def test_addl_expanded_into_kernel_events():
    ev = events([Dose(0.0, 1.0, "Asc", ii=24.0, addl=2)])
    assert [e[0] for e in ev] == [0.0, 24.0, 48.0]


def test_zero_bioavailability_gives_no_event():
    assert events([Dose(0.0, 1.0, "Asc")], F={"Asc": 0.0}) == []


def test_kernel_event_errors():
    with pytest.raises(RegimenError, match=re.escape("dose at t=1 h: cmt 'Agut' is not a state; states: Asc, Ac, Ap")):
        to_kernel_events([Dose(1.0, 1.0, "Agut")], state_index=IDX)
    with pytest.raises(RegimenError, match=re.escape("F: 'Fsc' is not a state; states: Asc, Ac, Ap")):
        to_kernel_events([], state_index=IDX, F={"Fsc": 0.3})
    with pytest.raises(RegimenError, match=re.escape("lag['Asc']: expected a finite number >= 0, got -0.5")):
        to_kernel_events([], state_index=IDX, lag={"Asc": -0.5})


def test_cohort_kernel_events_concatenates_behind_ev_ptr():
    a = to_kernel_events([Dose(0.0, 1.0, "Asc"), Dose(1.0, 1.0, "Ac", rate=1.0)], state_index=IDX)
    b = to_kernel_events([], state_index=IDX)
    c = to_kernel_events([Dose(2.0, 3.0, "Ap")], state_index=IDX)
    ev_ptr, t, k, s, v = cohort_kernel_events([a, b, c])
    assert ev_ptr.tolist() == [0, 3, 3, 4] and ev_ptr.dtype == np.int64
    assert t.tolist() == [0.0, 1.0, 2.0, 2.0] and k.tolist() == [0, 1, 1, 0]
    assert s.tolist() == [0, 1, 1, 2] and v.tolist() == [1.0, 1.0, -1.0, 3.0]
    ptr0, *rest = cohort_kernel_events([])
    assert ptr0.tolist() == [0] and all(len(x) == 0 for x in rest)


# ----------------------------------------------------------------------------- NONMEM records


def sample_doses():
    return {
        1: [
            Dose(0.0, 64.638, "Asc", ii=12.0, addl=3),
            Dose(48.0, 6.4638, "Asc"),
            Dose(50.0, 10.0, "Ac", rate=2.5),
            Dose(60.0, 10.0, "Ac", duration=0.1 + 0.2),  # awkward float survives the CSV
            Dose.reset(100.0),
            Dose(100.0, 1 / 3, "Ap", evid=EventType.DOSE_RESET),
        ],
        "P-02": [Dose(8.0, 1.0, "Asc")],
    }


def test_write_then_read_is_identity_in_memory_and_via_csv(tmp_path: Path):
    x = sample_doses()
    df = write_nonmem(x, None, state_names=STATES)
    assert list(df.columns) == ["ID", "TIME", "AMT", "CMT", "EVID", "II", "ADDL", "RATE", "DUR"]
    assert df["CMT"].tolist() == [1, 1, 2, 2, 0, 3, 1]
    assert df["EVID"].tolist() == [1, 1, 1, 1, 3, 4, 1]
    assert read_nonmem(df, state_names=STATES) == x
    path = tmp_path / "events.csv"
    write_nonmem(x, path, state_names=STATES)
    assert read_nonmem(path, state_names=STATES) == x
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]  # no temp file left behind


def test_write_omits_dur_column_when_unused():
    df = write_nonmem({1: [Dose(0.0, 1.0, "Asc", rate=1.0)]}, None, state_names=STATES)
    assert list(df.columns) == ["ID", "TIME", "AMT", "CMT", "EVID", "II", "ADDL", "RATE"]


def test_write_rejects_unknown_state():
    with pytest.raises(RegimenError, match=re.escape("write_nonmem: subject 1: cmt 'Agut' is not in state_names (Asc, Ac, Ap)")):
        write_nonmem({1: [Dose(0.0, 1.0, "Agut")]}, None, state_names=STATES)


def test_read_accepts_any_case_names_extra_columns_and_observations(tmp_path: Path):
    path = tmp_path / "nm.csv"
    path.write_text(
        "id,time,dv,amt,cmt,evid,mdv,ii,addl,rate,ss,wt\n"
        "1,0,.,16.2,Asc,1,1,24,2,0,0,70\n"
        "1,1,3.2,.,.,0,0,.,.,.,.,70\n"
        "\n"
        "2,0,.,5,2,1,1,0,0,10,0,60\n"
        "3,0,1.0,0,1,0,0,0,0,0,0,80\n"
    )
    got = read_nonmem(path, state_names=STATES)
    assert got == {
        1: [Dose(0.0, 16.2, "Asc", ii=24.0, addl=2)],
        2: [Dose(0.0, 5.0, "Ac", rate=10.0)],
        3: [],
    }


def test_read_defaults_evid_from_amt():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1.0], "AMT": [5.0, 0.0], "CMT": [1, 1]})
    assert read_nonmem(df, state_names=STATES) == {1: [Dose(0.0, 5.0, "Asc")]}


def _csv(tmp_path: Path, body: str, name: str = "events.csv") -> Path:
    p = tmp_path / name
    p.write_text("ID,TIME,AMT,CMT,EVID,II,ADDL,RATE\n" + body)
    return p


GOOD = "1,0,1,1,1,0,0,0\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,6,10,1,1,0,0,-1", "events.csv row 7: RATE=-1 (modelled rate) is not supported; give a rate > 0 or 0"),
        ("1,6,10,1,1,0,0,-2", "events.csv row 7: RATE=-2 (modelled duration) is not supported; give a rate > 0 or 0, or a duration in a DUR column"),
        ("1,6,10,1,1,0,0,-5", "events.csv row 7: RATE=-5 is not valid; give a rate > 0 or 0"),
        ("1,6,10,1,2,0,0,0", "events.csv row 7: EVID=2 (other event) is not supported yet; remove the record"),
        ("1,6,10,1,7,0,0,0", "events.csv row 7: EVID=7: expected 0, 1, 2, 3 or 4"),
        ("1,6,0,1,1,0,0,0", "events.csv row 7: AMT=0: a dose record (EVID=1) needs AMT > 0"),
        ("1,6,10,4,1,0,0,0", "events.csv row 7: CMT=4: expected 1..3 or a state name (Asc, Ac, Ap)"),
        ("1,6,10,Agut,1,0,0,0", "events.csv row 7: CMT='Agut' is not a state; expected 1..3 or a state name (Asc, Ac, Ap)"),
        ("1,6,10,-2,1,0,0,0", "events.csv row 7: CMT=-2 (compartment off) is not supported; expected 1..3"),
        ("1,6,10,1,1,0,3,0", "events.csv row 7: ADDL=3 needs II > 0, got II=0"),
        ("1,6,10,1,1,12,-1,0", "events.csv row 7: ADDL=-1: negative ADDL is not supported; expected an integer >= 0"),
        ("1,6,10,1,1,12,1.5,0", "events.csv row 7: ADDL=1.5: expected an integer"),
        ("1,6,ten,1,1,0,0,0", "events.csv row 7: AMT='ten' is not a number"),
        ("1,,10,1,1,0,0,0", "events.csv row 7: TIME is missing; expected a number"),
        ("1,6,10,1,3,0,0,0", "events.csv row 7: AMT=10: a reset record (EVID=3) takes AMT=0"),
        ("2,6,10,1,1,0,0,0\n1,7,1,1,1,0,0,0", "events.csv row 8: ID=1 appears again after other subjects; give each subject one contiguous block of rows"),
    ],
)
def test_read_errors_name_file_row_and_column(tmp_path: Path, row: str, message: str):
    # header is line 1, five good rows are lines 2-6, the bad row is line 7
    path = _csv(tmp_path, GOOD * 5 + row + "\n")
    with pytest.raises(RegimenError, match=re.escape(message)):
        read_nonmem(path, state_names=STATES, source="events.csv")


def test_read_ss_not_supported_yet(tmp_path: Path):
    p = tmp_path / "ss.csv"
    p.write_text("ID,TIME,AMT,CMT,EVID,II,ADDL,RATE,SS\n1,0,10,1,1,12,0,0,1\n")
    with pytest.raises(RegimenError, match=re.escape(f"{p} row 2: SS=1 (steady state) is not supported yet")):
        read_nonmem(p, state_names=STATES)


def test_read_rate_and_dur_together(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_text("ID,TIME,AMT,CMT,RATE,DUR\n1,0,10,1,2,5\n")
    with pytest.raises(RegimenError, match=re.escape(f"{p} row 2: RATE=2 and DUR=5 given together; give one of them")):
        read_nonmem(p, state_names=STATES)


def test_read_missing_columns_and_case_duplicates():
    with pytest.raises(RegimenError, match=re.escape("DataFrame: missing column(s) CMT; required: ID, TIME, AMT, CMT")):
        read_nonmem(pd.DataFrame({"ID": [1], "TIME": [0], "AMT": [1]}), state_names=STATES)
    df = pd.DataFrame([[1, 0, 1, 1, 1]], columns=["ID", "TIME", "AMT", "CMT", "cmt"])
    with pytest.raises(RegimenError, match=re.escape("my.csv: columns 'CMT' and 'cmt' differ only in case")):
        read_nonmem(df, state_names=STATES, source="my.csv")


def test_read_dataframe_errors_name_the_index_label():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [1, 1], "CMT": [1, 1], "RATE": [0, -1]})
    with pytest.raises(RegimenError, match=re.escape("DataFrame row 1: RATE=-1 (modelled rate) is not supported")):
        read_nonmem(df, state_names=STATES)


def test_read_missing_file(tmp_path: Path):
    with pytest.raises(RegimenError, match=re.escape(f"{tmp_path / 'nope.csv'}: file not found")):
        read_nonmem(tmp_path / "nope.csv", state_names=STATES)


@pytest.mark.parametrize("cmt", ["nan", "inf", "-inf", float("inf")])
def test_non_finite_cmt_names_the_row_and_column(cmt):
    # found by tests/properties/test_fuzz_nonmem.py: int(nan) raised ValueError, int(inf) OverflowError
    df = pd.DataFrame({"ID": [1], "TIME": [0.0], "AMT": [1.0], "CMT": [cmt]})
    with pytest.raises(RegimenError, match=r"^recs row 0: CMT=.* is not a state"):
        read_nonmem(df, state_names=["Ad", "Ac"], source="recs")
