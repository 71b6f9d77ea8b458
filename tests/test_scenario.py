"""Scenario configs: the seed trial loads; every bad field is reported with file, field and expectation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from il2sim.errors import ConfigError
from il2sim.scenario import load_scenario

ROOT = Path(__file__).parents[1]
HERE = Path(__file__).parent
GOOD = (HERE / "configs" / "onecmt.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    # keep the model path valid from the temporary folder
    text = text.replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    p = tmp_path / name
    p.write_text(text)
    return p


def problems_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    return str(info.value)


def test_seed_trial_config_loads():
    sc = load_scenario(ROOT / "configs" / "mm_low_dose_1995.toml")
    assert sc.name == "mm_low_dose_1995"
    assert sc.population.subjects == 18
    assert sc.regimen.cycle_days == 84 and sc.regimen.stop == "progression"
    assert sc.drug.nmol_per_MIU == 3.99
    assert {"C", "NK", "Eos", "M"} <= set(sc.model.state_names) | set(sc.model.output_names)


def test_good_config_loads(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.population.iiv == {"ka": 0.3, "ke": 0.2, "F": 0.2}
    assert sc.output.times()[-1] == 14 * 24.0
    assert sc.solver.rtol == 1e-8


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("[output]", "[outputs]", r"bad.toml: outputs: unknown key \(did you mean 'output'\?\); valid keys: scenario, drug, regimen"),
        ("rtol = 1e-8", "rtol = 2.0", r"bad.toml: solver.rtol: expected a number <= 0.1, got 2.0"),
        ("rtol = 1e-8", "rtol = \"tight\"", r"bad.toml: solver.rtol: expected a number, got 'tight' \(str\)"),
        ('method = "rodas5p"', 'method = "lsoda"', r"bad.toml: solver.method: expected one of 'rodas5p', 'tsit5', got 'lsoda'"),
        ("atol = 1e-10", "atol = { Ac = 1e-9, Axx = 1e-9 }", r"bad.toml: solver.atol.Axx: unknown state 'Axx'"),
        ("subjects = 6", "subjects = 0", r"bad.toml: population.subjects: expected an integer >= 1, got 0"),
        ("subjects = 6", "subjects = 2.5", r"bad.toml: population.subjects: expected an integer, got 2.5 \(float\)"),
        ("ka = 0.3", "kaa = 0.3", r"bad.toml: population.iiv.kaa: unknown model parameter 'kaa' \(did you mean 'ka'\?\)"),
        ("ka = 0.3", "ka = -0.3", r"bad.toml: population.iiv.ka: expected a number >= 0, got -0.3"),
        ('dist = "normal", mean = 170.0', 'dist = "gauss", mean = 170.0', r"population.covariates.height.dist: expected one of 'normal', 'lognormal', 'uniform', 'bernoulli', 'fixed', got 'gauss'"),
        ("sd = 10.0, lower = 150.0", "sd = 10.0, lower = 200.0", r"population.covariates.height: expected lower < upper, got lower=200.0, upper=190.0"),
        ("end_day = 14", "end_day = -1", r"bad.toml: output.end_day: expected a number > 0, got -1"),
        ('target = "Ad"', 'target = "Adx"', r"bad.toml: regimen.target: unknown state 'Adx' \(did you mean 'Ad'\?\)"),
        ("nmol_per_MIU = 3.99", "nmol_per_MIU = 0", r"bad.toml: drug.nmol_per_MIU: expected a number > 0, got 0"),
        ("seed = 11", "seed = -4", r"bad.toml: scenario.seed: expected an integer >= 0, got -4"),
    ],
)
def test_each_bad_field_is_named(tmp_path, old, new, message):
    assert old in GOOD
    text = problems_of(write(tmp_path, GOOD.replace(old, new, 1)))
    assert re.search(message, text), text


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("rtol = 1e-8", "rtol = 5").replace("subjects = 6", "subjects = -1").replace("ka = 0.3", "kq = 0.3")
    msg = problems_of(write(tmp_path, text))
    assert "3 problem(s)" in msg
    assert "solver.rtol" in msg and "population.subjects" in msg and "population.iiv.kq" in msg


def test_parameter_override_must_name_a_model_parameter(tmp_path):
    msg = problems_of(write(tmp_path, GOOD + "\n[parameters]\nkee = 0.2\n"))
    assert "bad.toml: parameters.kee: unknown model parameter 'kee' (did you mean 'ke'?)" in msg


def test_parameter_override_changes_the_model(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD + "\n[parameters]\nke = 0.25\n"))
    assert sc.model.default_parameters()[sc.model.parameter_index("ke")] == 0.25


def test_dosed_state_must_be_an_amount(tmp_path):
    model = (HERE / "models" / "onecmt_oral.toml").read_text().replace('Ad = { initial = 0.0, unit = "nmol"', 'Ad = { initial = 0.0, unit = "pM"')
    (tmp_path / "m.toml").write_text(model)
    text = GOOD.replace('"../models/onecmt_oral.toml"', '"m.toml"')
    p = tmp_path / "bad.toml"
    p.write_text(text)
    assert "regimen.target: dosed state 'Ad' has unit 'pM'; expected an amount in nmol or pmol" in problems_of(p)


def test_progression_stop_needs_m_protein(tmp_path):
    text = GOOD.replace("max_cycles = 2", 'max_cycles = 2\nstop = "progression"')
    msg = problems_of(write(tmp_path, text))
    assert "regimen.stop: 'progression' is judged on 'M' (serum M-protein, g/L), which none of the models defines" in msg


def test_drug_other_than_aldesleukin_needs_its_factor(tmp_path):
    text = GOOD.replace('name = "aldesleukin"\nnmol_per_MIU = 3.99', 'name = "proleukin-x"')
    assert "bad.toml: drug.nmol_per_MIU: required for drug 'proleukin-x' (nmol per million IU)" in problems_of(write(tmp_path, text))


def test_regimen_errors_are_reported_with_the_config(tmp_path):
    msg = problems_of(write(tmp_path, GOOD.replace("days = [3, 5]", "days = [3, 9]")))
    assert "regimen.block[1].days: expected [first, last] with 1 <= first <= last <= cycle_days (7), got [3, 9]" in msg


def test_model_errors_are_reported_with_the_config(tmp_path):
    model = (HERE / "models" / "onecmt_oral.toml").read_text().replace('Ac = "ka * Ad - ke * Ac"', 'Ac = "ka * Ad - kel * Ac"')
    (tmp_path / "m.toml").write_text(model)
    p = tmp_path / "bad.toml"
    p.write_text(GOOD.replace('"../models/onecmt_oral.toml"', '"m.toml"'))
    msg = problems_of(p)
    assert "scenario.models" in msg and "[odes] Ac: unknown symbol 'kel' (did you mean 'ke'?)" in msg


def test_invalid_toml_and_missing_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[scenario\nname = 1\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML: .*line 1"):
        load_scenario(p)
    with pytest.raises(ConfigError, match=r"nothere.toml: file not found"):
        load_scenario(tmp_path / "nothere.toml")


def test_overrides_are_applied_before_validation(tmp_path):
    p = write(tmp_path, GOOD)
    sc = load_scenario(p, overrides={"population.subjects": 3, "regimen.block[1].amount": 0.25})
    assert sc.population.subjects == 3
    assert sc.regimen.blocks[1].amount == 0.25
    with pytest.raises(ConfigError, match=r"override 'regimen.block\[5\].amount': block\[5\] does not exist \(2 present; indices start at 0\)"):
        load_scenario(p, overrides={"regimen.block[5].amount": 1.0})
    with pytest.raises(ConfigError, match=r"solver.rtol: expected a number <= 0.1, got 3"):
        load_scenario(p, overrides={"solver.rtol": 3})


def test_correlation_config(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD + '\n[population.correlation]\n"ka:ke" = 0.5\n'))
    assert sc.population.correlations == {("ka", "ke"): 0.5}
    msg = problems_of(write(tmp_path, GOOD + '\n[population.correlation]\n"ka:V" = 0.5\n"ka:ke" = 1.5\n"ka" = 0.1\n'))
    assert "population.correlation.ka:V: V has no entry in population.iiv; correlations need an omega for both" in msg
    assert "population.correlation.ka:ke: expected a number <= 1, got 1.5" in msg
    assert "population.correlation.ka: expected a key 'A:B' naming two different parameters" in msg


def test_events_section_errors(tmp_path):
    text = GOOD + '\n[events]\nfile = "nothere.csv"\n'
    msg = problems_of(write(tmp_path, text))
    assert "bad.toml: events: give either [regimen] or [events], not both" in msg
    assert "nothere.csv: file not found" in msg
    (tmp_path / "rec.csv").write_text("ID,TIME,AMT,CMT,EVID,RATE\n1,0,5,1,1,-1\n")
    start, end = GOOD.index("[regimen]"), GOOD.index("[population]")
    msg = problems_of(write(tmp_path, GOOD[:start] + '[events]\nfile = "rec.csv"\n' + GOOD[end:]))
    assert "events.file: " in msg and "row 2: RATE=-1 (modelled rate) is not supported" in msg


def test_bad_covariate_bound_is_reported_not_a_crash(tmp_path):
    # found by tests/properties/test_fuzz_configs.py: float("") raised ValueError
    text = GOOD.replace("lower = 150.0,", 'lower = "",')
    msg = problems_of(write(tmp_path, text))
    assert "population.covariates.height.lower: expected a number" in msg


def test_iiv_omega_is_capped(tmp_path):
    # found by tests/properties/test_fuzz_configs.py: omega 1e12 overflowed exp() in sampling
    msg = problems_of(write(tmp_path, GOOD.replace("ka = 0.3", "ka = 1e12")))
    assert "population.iiv.ka: expected a number <= 10" in msg
