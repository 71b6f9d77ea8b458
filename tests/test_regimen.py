"""The regimen language: the seed trial's schedule exactly, features, round trips and every error."""

import copy
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from il2sim.dosing import Dose, read_nonmem, write_nonmem
from il2sim.errors import RegimenError
from il2sim.regimen import Block, Regimen
from il2sim.units import ALDESLEUKIN

SEED_TOML = Path(__file__).resolve().parents[1] / "configs" / "regimens" / "seed_1995.toml"
STATES = ["Asc", "Ac", "Ap"]
MIU_NMOL = 3.99  # DOMAIN §1.1


def seed_dict():
    return {
        "target": "Asc",
        "amount_unit": "MIU/m2",
        "cycle_days": 84,
        "max_cycles": 13,
        "stop": "progression",
        "block": [
            {"days": [1, 2], "clock": ["08:00", "20:00"], "amount": 9.0},
            {"days": [3, 56], "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri"], "clock": ["08:00", "20:00"], "amount": 0.9},
        ],
    }


def expected_seed_cycle():
    """(time h, MIU/m²) of one cycle, built by hand from the abstract: day 1 = Monday."""
    out = [(8.0, 9.0), (20.0, 9.0), (32.0, 9.0), (44.0, 9.0)]
    for day in range(3, 57):
        if (day - 1) % 7 < 5:  # Mon..Fri when day 1 is a Monday
            out += [((day - 1) * 24 + 8.0, 0.9), ((day - 1) * 24 + 20.0, 0.9)]
    return out


def make(d, source="configs/x.toml"):
    return Regimen.from_dict(d, source=source)


def mutate(path, value, *, delete=False):
    d = copy.deepcopy(seed_dict())
    node = d
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


# ----------------------------------------------------------------------------- the seed trial


def test_seed_file_is_the_seed_regimen():
    r = Regimen.from_toml(SEED_TOML)
    assert r == make(seed_dict())
    assert r.source == str(SEED_TOML)
    assert r.stop == "progression" and r.max_cycles == 13 and r.cycle_days == 84
    doc = tomllib.loads(SEED_TOML.read_text())
    assert list(doc) == ["regimen"]


def test_seed_cycle_has_exactly_80_doses_at_the_expected_times():
    r = make(seed_dict())
    doses = r.doses(bsa=1.8, drug=ALDESLEUKIN, n_cycles=1)
    expected = expected_seed_cycle()
    assert len(expected) == 80 and len(doses) == 80
    assert [d.time for d in doses] == [t for t, _ in expected]
    assert sum(1 for _, a in expected if a == 9.0) == 4
    assert sum(1 for _, a in expected if a == 0.9) == 76  # 38 weekdays × 2
    for d, (_, miu_m2) in zip(doses, expected):
        assert d.cmt == "Asc" and d.rate is None and d.duration is None
        assert d.amt == pytest.approx(miu_m2 * 1.8 * MIU_NMOL, rel=1e-14)
    assert doses[0].amt == pytest.approx(64.638, rel=1e-14)  # DOMAIN §1.1
    assert doses[4].amt == pytest.approx(6.4638, rel=1e-14)
    # first maintenance doses: day 3 (Wed) 08:00 = 56 h; the first weekend is days 6-7
    assert [d.time for d in doses[4:10]] == [56.0, 68.0, 80.0, 92.0, 104.0, 116.0]
    assert doses[10].time == 7 * 24 + 8.0  # Monday of week 2
    # last dose: day 56 is a Sunday, so Friday day 54 20:00
    assert doses[-1].time == 53 * 24 + 20.0


def test_seed_no_weekend_doses_after_day_2_and_none_after_day_56():
    sched = make(seed_dict()).schedule(13)
    maintenance = sched[sched["block"] == 1]
    assert set(maintenance["weekday"]) == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert sched["day"].max() == 54
    assert len(sched) == 13 * 80


def test_seed_cycle_2_is_cycle_1_shifted_by_2016_h():
    r = make(seed_dict())
    doses = r.doses(bsa=1.8, drug=ALDESLEUKIN, n_cycles=2)
    assert len(doses) == 160
    assert [d.time for d in doses[80:]] == [d.time + 2016.0 for d in doses[:80]]
    assert [d.amt for d in doses[80:]] == [d.amt for d in doses[:80]]
    assert r.cycle_start(2) == 2016.0 == 84 * 24


def test_seed_assessment_times_and_default_assess_day():
    r = make(seed_dict())
    assert r.assess_days == (84,)
    np.testing.assert_array_equal(r.assessment_times(3), [83 * 24.0, 83 * 24.0 + 2016, 83 * 24.0 + 4032])
    assert len(r.assessment_times()) == 13
    r2 = make({**seed_dict(), "assess_days": [28, 56, 84]})
    np.testing.assert_array_equal(r2.assessment_times(1), [27 * 24.0, 55 * 24.0, 83 * 24.0])


def test_seed_in_pmol_state():
    doses = make(seed_dict()).doses(bsa=1.8, drug=ALDESLEUKIN, n_cycles=1, state_units={"Asc": "pmol", "Ac": "pmol"})
    assert doses[0].amt == pytest.approx(64_638.0, rel=1e-14)


# ----------------------------------------------------------------------------- features


def base(**blk):
    return {"target": "Asc", "amount_unit": "MIU", "cycle_days": 7, "block": [{"days": [1, 7], "clock": ["08:00"], "amount": 1.0, **blk}]}


def test_every_days_counts_from_the_first_day():
    r = make(base(days=[2, 7], every_days=2))
    assert [d.time for d in r.doses(drug=ALDESLEUKIN)] == [24 + 8.0, 3 * 24 + 8.0, 5 * 24 + 8.0]


def test_clock_is_sorted_and_minutes_are_fractional_hours():
    r = make(base(days=[1, 1], clock=["20:30", "07:15"]))
    assert r.blocks[0].clock == ("07:15", "20:30")
    assert [d.time for d in r.doses(drug=ALDESLEUKIN)] == [7.25, 20.5]


def test_block_overrides_target_and_unit_and_infusions():
    d = base(days=[1, 1])
    d["block"].append({"days": [1, 1], "clock": ["08:00"], "amount": 10.0, "target": "Ac", "amount_unit": "ug/kg", "duration_h": 2.0})
    d["block"].append({"days": [2, 2], "clock": ["08:00"], "amount": 1.0, "target": "Ac", "rate": 0.5})
    doses = make(d).doses(weight=70.0, drug=ALDESLEUKIN)
    assert doses[0] == Dose(8.0, 3.99, "Asc")
    assert doses[1].cmt == "Ac" and doses[1].duration == 2.0 and doses[1].rate is None
    assert doses[1].amt == pytest.approx(10.0 * 70 * 1e3 / 15_300, rel=1e-14)
    # rate is in the block's unit per hour: 0.5 MIU/h = 1.995 nmol/h
    assert doses[2] == Dose(32.0, 3.99, "Ac", rate=0.5 * 3.99)


def test_same_time_in_different_states_is_allowed():
    d = base(days=[1, 1])
    d["block"].append({"days": [1, 1], "clock": ["08:00"], "amount": 1.0, "target": "Ac"})
    assert [x.cmt for x in make(d).doses(drug=ALDESLEUKIN)] == ["Asc", "Ac"]


def test_weekdays_follow_the_calendar_across_cycles():
    # cycle of 10 days starting on a Monday: cycle 2 starts on a Thursday
    r = make({"target": "Asc", "amount_unit": "MIU", "cycle_days": 10, "max_cycles": 2,
              "block": [{"days": [1, 10], "weekdays": ["Mon"], "clock": ["00:00"], "amount": 1.0}]})
    assert r.weekday(2, 1) == "Thu"
    assert [d.time / 24 for d in r.doses(drug=ALDESLEUKIN)] == [0.0, 7.0, 14.0]
    # seed regimen with day 1 a Wednesday: day 3 is a Friday, days 4-5 the weekend, day 6 Monday
    r2 = make({**seed_dict(), "start_weekday": "Wed"})
    times = [d.time for d in r2.doses(bsa=1.0, drug=ALDESLEUKIN, n_cycles=1)]
    assert times[4:8] == [56.0, 68.0, 5 * 24 + 8.0, 5 * 24 + 20.0]
    assert r2.weekday(1, 3) == "Fri" and r2.weekday(1, 6) == "Mon"


def test_to_dict_and_toml_round_trip():
    r = make({**seed_dict(), "assess_days": [28, 84], "start_weekday": "Tue"})
    assert Regimen.from_dict(r.to_dict(), source="x") == r
    assert Regimen.from_dict(tomllib.loads(r.to_toml())["regimen"]) == r
    r3 = make(base(days=[1, 5], every_days=2, target="Ac", amount_unit="nmol/kg", rate=1.5, weekdays=["Sun", "Mon"]))
    assert Regimen.from_dict(tomllib.loads(r3.to_toml())["regimen"]) == r3


def test_direct_construction_is_validated_and_canonical():
    r = Regimen(target="Asc", amount_unit="MIU", cycle_days=7,
                blocks=(Block(days=(1, 1), clock=("20:00", "08:00"), amount=1),))
    assert r.assess_days == (7,) and r.blocks[0].clock == ("08:00", "20:00")
    assert r == make(base(days=[1, 1], clock=["08:00", "20:00"]))
    with pytest.raises(RegimenError, match=re.escape("<regimen>: regimen.block[0].days: expected [first, last] with 1 <= first <= last <= cycle_days (7), got [1, 9]")):
        Regimen(target="Asc", amount_unit="MIU", cycle_days=7, blocks=(Block(days=(1, 9), clock=("08:00",), amount=1.0),))


def test_regimen_to_nonmem_and_back(tmp_path: Path):
    r = make(seed_dict())
    doses = r.doses(bsa=1.8, drug=ALDESLEUKIN, n_cycles=2)
    df = r.to_nonmem(None, state_names=STATES, drug=ALDESLEUKIN, bsa=1.8, n_cycles=2, subject_id=7)
    assert len(df) == 160 and set(df["CMT"]) == {1} and set(df["EVID"]) == {1}
    assert read_nonmem(df, state_names=STATES) == {7: doses}
    path = tmp_path / "seed.csv"
    r.to_nonmem(path, state_names=STATES, drug=ALDESLEUKIN, bsa=1.8, n_cycles=2)
    assert read_nonmem(path, state_names=STATES) == {1: doses}
    # several subjects with their own BSA
    cohort = {i: r.doses(bsa=b, drug=ALDESLEUKIN, n_cycles=1) for i, b in enumerate([1.6, 1.8, 2.1], start=1)}
    write_nonmem(cohort, path, state_names=STATES)
    assert read_nonmem(path, state_names=STATES) == cohort


# ----------------------------------------------------------------------------- errors

SRC = "configs/x.toml: "


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (mutate(["block", 1, "days"], [3, 90]),
         "regimen.block[1].days: expected [first, last] with 1 <= first <= last <= cycle_days (84), got [3, 90]"),
        (mutate(["block", 0, "days"], [2, 1]),
         "regimen.block[0].days: expected [first, last] with 1 <= first <= last <= cycle_days (84), got [2, 1]"),
        (mutate(["block", 0, "days"], 3),
         "regimen.block[0].days: expected [first, last] with 1 <= first <= last <= cycle_days (84), got 3"),
        (mutate(["cycle_day"], 84),
         "regimen.cycle_day: unknown key (did you mean 'cycle_days'?); valid keys: target, amount_unit, cycle_days, max_cycles, stop, assess_days, start_weekday, block"),
        (mutate(["block", 0, "dose"], 1.0),
         "regimen.block[0].dose: unknown key; valid keys: days, clock, amount, weekdays, every_days, target, amount_unit, duration_h, rate"),
        (mutate(["block", 0, "clock"], ["08:00", "25:00"]),
         'regimen.block[0].clock[1]: expected a time "HH:MM" from "00:00" to "23:59", got \'25:00\''),
        (mutate(["block", 0, "clock"], ["8:00"]),
         'regimen.block[0].clock[0]: expected a time "HH:MM" from "00:00" to "23:59", got \'8:00\''),
        (mutate(["block", 0, "clock"], ["08:00", "08:00"]),
         "regimen.block[0].clock[1]: '08:00' is listed twice; give each clock time once"),
        (mutate(["block", 0, "clock"], []),
         'regimen.block[0].clock: expected a non-empty list of times "HH:MM", got []'),
        (mutate(["block", 1, "weekdays"], ["Mon", "Tues"]),
         "regimen.block[1].weekdays[1]: unknown weekday 'Tues' (did you mean 'Tue'?); valid: Mon, Tue, Wed, Thu, Fri, Sat, Sun"),
        (mutate(["block", 1, "weekdays"], ["Mon", "Mon"]),
         "regimen.block[1].weekdays[1]: 'Mon' is listed twice"),
        (mutate(["block", 1, "weekdays"], []),
         "regimen.block[1].weekdays: expected a non-empty list of weekdays (Mon, Tue, Wed, Thu, Fri, Sat, Sun), got []"),
        (mutate(["start_weekday"], "Monday"),
         "regimen.start_weekday: unknown weekday 'Monday' (did you mean 'Mon'?); valid: Mon, Tue, Wed, Thu, Fri, Sat, Sun"),
        (mutate(["block"], []),
         "regimen.block: expected one or more [[regimen.block]] tables, got []"),
        (mutate(["block"], None, delete=True), "regimen.block: missing (required)"),
        (mutate(["target"], None, delete=True), "regimen.target: missing (required)"),
        (mutate(["target"], ""), "regimen.target: expected a state name (non-empty string), got ''"),
        (mutate(["block", 0, "amount"], None, delete=True), "regimen.block[0].amount: missing (required)"),
        (mutate(["block", 0, "amount"], -9.0), "regimen.block[0].amount: expected a finite number > 0, got -9.0"),
        (mutate(["block", 0, "amount"], "9"), "regimen.block[0].amount: expected a finite number > 0, got '9'"),
        (mutate(["amount_unit"], "MIU/m²"),
         "regimen.amount_unit: unknown amount unit 'MIU/m²'; valid units: MIU, IU, nmol, pmol, ug, mg, MIU/m2, IU/m2"),
        (mutate(["block", 0, "amount_unit"], "MU"), "regimen.block[0].amount_unit: unknown amount unit 'MU'"),
        (mutate(["cycle_days"], 0), "regimen.cycle_days: expected an integer >= 1, got 0"),
        (mutate(["cycle_days"], 84.0), "regimen.cycle_days: expected an integer >= 1, got 84.0"),
        (mutate(["max_cycles"], True), "regimen.max_cycles: expected an integer >= 1, got True"),
        (mutate(["stop"], "toxicity"), "regimen.stop: expected one of 'none', 'progression', got 'toxicity'"),
        (mutate(["assess_days"], [56, 28]),
         "regimen.assess_days: expected a non-empty, strictly increasing list of days in 1..cycle_days (84), got [56, 28]"),
        (mutate(["assess_days"], [85]),
         "regimen.assess_days: expected a non-empty, strictly increasing list of days in 1..cycle_days (84), got [85]"),
        (mutate(["block", 0, "every_days"], 0), "regimen.block[0].every_days: expected an integer >= 1, got 0"),
        (mutate(["block", 0, "duration_h"], 0.0), "regimen.block[0].duration_h: expected a finite number > 0, got 0.0"),
        ({**seed_dict(), "block": [{"days": [1, 2], "clock": ["08:00"], "amount": 1.0, "rate": 1.0, "duration_h": 1.0}]},
         "regimen.block[0]: duration_h and rate given together; an infusion is set by one of them"),
        (mutate(["block", 1, "days"], [2, 56]),
         "regimen.block[1]: doses Asc at cycle 1 day 2 (Tue) 08:00, as regimen.block[0] does; merge them into one block (amounts add) or separate their days"),
        ({**seed_dict(), "block": [{"days": [6, 7], "weekdays": ["Mon"], "clock": ["08:00"], "amount": 1.0}]},
         "regimen.block[0]: selects no dosing day (days [6, 7], weekdays ['Mon'], every_days 1, start_weekday 'Mon'); check days, weekdays and every_days"),
    ],
)
def test_regimen_errors_name_file_field_and_expectation(d, message):
    with pytest.raises(RegimenError, match=re.escape(SRC + message)):
        make(d)


def test_not_a_table():
    with pytest.raises(RegimenError, match=re.escape("configs/x.toml: regimen: expected a table, got [1, 2]")):
        make([1, 2])


def test_every_problem_is_reported_at_once():
    d = mutate(["stop"], "never")
    d["block"][0]["clock"] = ["25:00"]
    d["bogus"] = 1
    with pytest.raises(RegimenError) as info:
        make(d)
    msg = str(info.value)
    assert msg.startswith("configs/x.toml: 3 problems in [regimen]:\n  - ")
    assert "regimen.bogus: unknown key" in msg and "regimen.stop:" in msg and "regimen.block[0].clock[0]:" in msg


def test_expansion_errors():
    r = make(seed_dict())
    with pytest.raises(RegimenError, match=re.escape("configs/x.toml: n_cycles: expected an integer in 1..max_cycles (13), got 14")):
        r.doses(bsa=1.8, drug=ALDESLEUKIN, n_cycles=14)
    with pytest.raises(RegimenError, match=re.escape("configs/x.toml: dose unit 'MIU/m2' is per m² of body-surface area; give bsa= (m²)")):
        r.doses(drug=ALDESLEUKIN)
    with pytest.raises(RegimenError, match=re.escape("configs/x.toml: regimen.target: dosed state 'Asc' is not in state_units (Ac)")):
        r.doses(bsa=1.8, drug=ALDESLEUKIN, state_units={"Ac": "nmol"})
    with pytest.raises(RegimenError, match=re.escape("configs/x.toml: regimen.target: dosed state 'Asc' is in 'pM'; a dosed state must be in one of nmol, pmol")):
        r.doses(bsa=1.8, drug=ALDESLEUKIN, state_units={"Asc": "pM"})


def test_from_toml_errors(tmp_path: Path):
    p = tmp_path / "r.toml"
    p.write_text('[regimen]\ntarget = "Asc"\n[model]\nname = "x"\n')
    with pytest.raises(RegimenError, match=re.escape(f"{p}: model: unknown key; valid keys: regimen")):
        Regimen.from_toml(p)
    p.write_text("[regimen\n")
    with pytest.raises(RegimenError, match=re.escape(f"{p}: not valid TOML (")):
        Regimen.from_toml(p)
    with pytest.raises(RegimenError, match=re.escape(f"{tmp_path / 'none.toml'}: file not found")):
        Regimen.from_toml(tmp_path / "none.toml")


def test_cycle_days_is_capped_so_validation_cannot_hang():
    # found by tests/properties/test_fuzz_configs.py: cycle_days = 10**12 walked every day
    with pytest.raises(RegimenError, match=r"c\.toml.*regimen\.cycle_days: expected at most 3650"):
        Regimen.from_dict({**base(), "cycle_days": 10**12}, source="c.toml")
    assert Regimen.from_dict({**base(), "cycle_days": 3650}, source="c.toml").cycle_days == 3650


def test_to_toml_escapes_control_characters():
    # found by tests/properties/test_fuzz_configs.py (long run): a target with '\x08' wrote invalid TOML
    r = Regimen.from_dict({**base(), "target": "A\x08c\t\"\\"}, source="c.toml")
    assert Regimen.from_dict(tomllib.loads(r.to_toml())["regimen"], source="c.toml") == r
