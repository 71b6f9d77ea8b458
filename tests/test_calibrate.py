"""Targets, statistics and calibration: parsing, exact statistics, recovery of known parameters,
provenance written atomically, and the calibrated trial config within its declared bands."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from il2sim.calibrate import _edit_parameter_line, calibrate, fitted_toml, run_stage, write_fitted, write_to_models
from il2sim.errors import ConfigError
from il2sim.model import load_model
from il2sim.scenario import load_scenario, scenario_from_dict
from il2sim.simulate import simulate
from il2sim.targets import (CalibrationStage, Target, biexponential_half_lives, evaluate_target, evaluate_targets,
                            parse_calibration, parse_targets)

ROOT = Path(__file__).resolve().parents[1]
KONRAD = ROOT / "configs" / "calibration" / "pk_iv_konrad_1990.toml"
TRIAL = ROOT / "configs" / "mm_low_dose_1995.toml"


# ----------------------------------------------------------------------------- parsing


def test_targets_parse_with_defaults_and_units():
    targets, problems = parse_targets([{
        "name": "eos", "variable": "Eos", "statistic": "peak_fold", "window_day": [0, 42],
        "reported": 15.0, "band": [10.0, math.inf], "source": "Peest 1995",
    }], "x.toml")
    assert problems == []
    (t,) = targets
    assert t.window_h == (0.0, 42 * 24.0)
    assert t.summary == "median" and t.weight == 1.0
    assert t.scale == 10.0  # one-sided band: the finite edge
    assert t.residual(20.0) == pytest.approx(0.5)


def test_every_target_problem_is_reported_at_once():
    _, problems = parse_targets([
        {"name": "a", "variable": "C", "statistic": "peak", "band": [2, 1], "source": "s", "colour": "red"},
        {"name": "a", "variable": "C", "statistic": "fold_at", "band": [0, 1], "source": "s"},
        {"variable": "response", "statistic": "fraction", "band": [0, 1], "source": "s", "classes": ["CR"]},
        {"name": "d", "variable": "C", "statistic": "median_of", "band": [0, 1], "source": "s"},
    ], "x.toml")
    text = "\n".join(problems)
    assert "x.toml: targets[0].colour: unknown key" in text
    assert "x.toml: targets[0].band: expected [lower, upper] with lower <= upper" in text
    assert "x.toml: targets[0]: statistic 'peak' needs window_day or window_h" in text
    assert "x.toml: targets[1].name: 'a' is used by an earlier target" in text
    assert "x.toml: targets[1]: statistic 'fold_at' needs at_day or at_h" in text
    assert "x.toml: targets[2].name: required" in text
    assert "x.toml: targets[2].classes: expected a list of PR, MR, SD, PD" in text
    assert "x.toml: targets[3].statistic: expected one of" in text


def test_calibration_table_is_validated():
    spec, problems = parse_calibration({"stage": [{"name": "pk", "parameters": {"V1": [2.0, 5.0]}, "starts": 2}]}, "x.toml")
    assert problems == [] and spec.stages[0].starts == 2
    _, problems = parse_calibration({"stage": [{"parameters": {"V1": [0.0, 5.0], "Q": [3.0, 1.0]}, "method": "bfgs"}], "out": 1}, "x.toml")
    text = "\n".join(problems)
    assert "x.toml: calibration.out: unknown key" in text
    assert "calibration.stage[0].parameters.V1: expected 0 < lower < upper (fitted on a log scale)" in text
    assert "calibration.stage[0].parameters.Q: expected [lower, upper] with lower <= upper" in text
    assert "calibration.stage[0].method: expected one of 'least_squares', 'nelder_mead'" in text


def test_scenario_checks_targets_and_calibration_against_the_model():
    with open(KONRAD, "rb") as fh:
        data = tomllib.load(fh)
    data["targets"][0]["variable"] = "C_UI"
    data["targets"].append({"name": "days", "variable": "days_on_therapy", "statistic": "value", "band": [0, 1], "source": "s"})
    data["calibration"] = {"stage": [{"name": "pk", "parameters": {"V11": [1.0, 4.0], "F": [0.1, 2.0]}, "targets": ["C00"]}]}
    with pytest.raises(ConfigError) as err:
        scenario_from_dict(data, source="konrad.toml", base_dir=KONRAD.parent)
    text = str(err.value)
    assert "konrad.toml: targets[0].variable: unknown state or output 'C_UI' (did you mean 'C_IU'?)" in text
    assert "targets[3].variable: 'days_on_therapy' exists only when regimen.stop = \"progression\"" in text
    assert "calibration.stage[0].parameters.V11: unknown model parameter (did you mean 'V1'?)" in text
    assert "calibration.stage[0].parameters.F: bounds [0.1, 2] exceed the model's [0, 1]" in text
    assert "calibration.stage[0].targets: no target named 'C00' (did you mean 'C0'?)" in text


# -------------------------------------------------------------------------- statistics


def _ds(t, y, response=None):
    ds = xr.Dataset({"X": (("subject", "time"), np.atleast_2d(y), {"units": "pM"}),
                     "status": ("subject", np.array(["ok"] * np.atleast_2d(y).shape[0], dtype=object))},
                    coords={"time": t, "subject": np.arange(np.atleast_2d(y).shape[0])})
    if response is not None:
        ds["response"] = ("subject", np.array(response))
    return ds


def _target(**kw):
    base = dict(name="x", variable="X", band=(-math.inf, math.inf), source="test")
    base.update(kw)
    return Target(**base)


def test_statistics_on_known_curves():
    t = np.linspace(0.0, 48.0, 481)
    y = np.vstack([2.0 + np.sin(np.pi * t / 24.0), 1.0 + t / 48.0])  # subject 0 peaks at 12 h
    ds = _ds(t, y)
    peak = evaluate_target(ds, _target(statistic="peak", window_h=(0.0, 24.0))).per_subject
    assert peak == pytest.approx([3.0, 1.5])
    tmax = evaluate_target(ds, _target(statistic="tmax", window_h=(0.0, 24.0))).per_subject
    assert tmax == pytest.approx([12.0, 24.0])
    fold = evaluate_target(ds, _target(statistic="fold_at", at_h=36.05)).per_subject
    assert fold[1] == pytest.approx((1.0 + 36.05 / 48.0) / 1.0)
    auc = evaluate_target(ds, _target(statistic="auc", window_h=(0.0, 48.0))).per_subject
    assert auc[0] == pytest.approx(96.0, rel=1e-4)  # sine integrates to 0 over two half-periods
    assert auc[1] == pytest.approx(72.0)
    res = evaluate_target(ds, _target(statistic="peak_fold", window_h=(0.0, 48.0), summary="max"))
    assert res.simulated == pytest.approx(2.0) and res.low == pytest.approx(1.5) and res.n == 2


def test_biexponential_half_lives_are_recovered():
    t = np.linspace(0.0, 8.0, 481)
    c = 500.0 * np.exp(-math.log(2) / 0.2 * t) + 150.0 * np.exp(-math.log(2) / 1.4 * t)
    a, b = biexponential_half_lives(t, c)
    assert a == pytest.approx(0.2, rel=1e-6) and b == pytest.approx(1.4, rel=1e-6)
    ds = _ds(t, c)
    r = evaluate_target(ds, _target(statistic="t_half_beta", window_h=(0.0, 8.0), time_unit="min"))
    assert r.simulated == pytest.approx(84.0, rel=1e-6)


def test_fraction_and_pass_fail():
    ds = _ds(np.array([0.0, 1.0]), np.ones((4, 2)), response=["PR", "SD", "PD", "PD"])
    r = evaluate_target(ds, _target(variable="response", statistic="fraction", classes=("PR", "MR"), summary="mean",
                                    reported=0.25, band=(0.1, 0.3)))
    assert r.simulated == 0.25 and r.passed and r.residual == 0.0
    hinge = _target(statistic="peak", window_h=(0.0, 1.0), band=(0.0, 10.0), sigma=2.0)
    assert hinge.residual(8.5) == 0.0 and hinge.residual(13.0) == pytest.approx(2.0)  # aims at [1, 9]
    assert not hinge.passed(math.nan)


# ------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def konrad():
    return load_scenario(KONRAD)


def test_calibration_recovers_known_parameters_from_synthetic_targets(konrad):
    truth = {"V1": 3.4, "CL_lin": 12.0}
    sc_true = dataclasses.replace(konrad, model=konrad.model.with_parameters(truth))
    ds = simulate(sc_true, throw=True)
    defs = [
        _target(name="C0", variable="C", statistic="peak", window_h=(0.0, 0.05)),
        _target(name="AUC", variable="C", statistic="auc", window_h=(0.0, 8.0)),
    ]
    synthetic = tuple(dataclasses.replace(t, reported=r.simulated, band=(0.99 * r.simulated, 1.01 * r.simulated),
                                          reported_text=f"{r.simulated:g}", config="synthetic")
                      for t, r in zip(defs, evaluate_targets(ds, defs)))
    sc = dataclasses.replace(konrad, targets=synthetic)
    stage = CalibrationStage(name="synthetic", parameters={"V1": (1.5, 8.0), "CL_lin": (3.0, 40.0)}, targets=None)
    result = run_stage(sc, stage, base_dir=KONRAD.parent, log=lambda s: None)
    defaults = dict(zip(konrad.model.parameter_names, konrad.model.default_parameters()))
    assert result.initial == {"V1": defaults["V1"], "CL_lin": defaults["CL_lin"]}
    assert result.fitted["V1"] == pytest.approx(truth["V1"], rel=2e-3)
    assert result.fitted["CL_lin"] == pytest.approx(truth["CL_lin"], rel=2e-3)
    assert result.cost_final < 1e-3 < result.cost_initial
    assert all(r.passed for r in result.targets_final)


def test_fitted_toml_and_model_files_keep_units_and_record_provenance(tmp_path, konrad):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns("bench", "*.md"))
    model = load_model(sorted(models.glob("*.toml")))
    stage = CalibrationStage(name="pk", parameters={"V1": (2.0, 5.0), "CL_RM0": (5.0, 150.0)})
    from il2sim.calibrate import CalibrationResult, StageResult

    sr = StageResult(stage, {"V1": 2.8, "CL_RM0": 18.0}, {"V1": 3.1, "CL_RM0": 42.5}, 10.0, 0.5, 12, True, "ok",
                     [], [], ["pk_iv_konrad_1990:C0"], [str(KONRAD)], 1.0)
    result = CalibrationResult("configs/x.toml", "2025-01-02", [sr])
    out = write_fitted(result, tmp_path / "fit" / "fitted.toml")
    data = tomllib.loads(out.read_text())
    assert data["parameters"] == {"V1": 3.1, "CL_RM0": 42.5}
    assert data["provenance"]["CL_RM0"]["before"] == 18.0
    assert data["provenance"]["CL_RM0"]["targets"] == ["pk_iv_konrad_1990:C0"]
    assert data["calibration"]["stage"][0]["cost_final"] == 0.5
    assert not list(out.parent.glob(".*.tmp"))

    pk = models / "il2_pk_sc.toml"
    before = pk.read_text()
    write_to_models(result, model)
    after = pk.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert [b.split("=")[0].strip() for _, b in changed] == ["V1", "CL_RM0"]
    reloaded = load_model(sorted(models.glob("*.toml")))
    p = reloaded.parameters[reloaded.parameter_names.index("CL_RM0")]
    assert p.value == 42.5 and p.unit == "L/h"
    assert "[calibrated 2025-01-02 by il2sim.calibrate (configs/x.toml, stage pk" in p.source
    assert p.source.startswith("DOMAIN §1.4")
    # a second calibration replaces the note instead of stacking notes
    write_to_models(result, reloaded)
    assert load_model(sorted(models.glob("*.toml"))).parameters[reloaded.parameter_names.index("CL_RM0")].source.count("[calibrated") == 1


def test_editing_refuses_a_parameter_that_is_not_a_one_line_table():
    with pytest.raises(ConfigError, match="expected one one-line inline table to update, found 0"):
        _edit_parameter_line("[parameters]\nk.value = 1.0\n", "k", 2.0, "note", "m.toml")


def test_calibrate_without_a_calibration_table_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"no \[calibration\] table; nothing to fit"):
        calibrate(KONRAD, log=lambda s: None)


def test_unknown_stage_names_are_listed():
    with pytest.raises(ConfigError, match=r"no stage named 'pkk'; stages: pk, immune, tumour"):
        calibrate(TRIAL, stages=["pkk"], log=lambda s: None)


# ------------------------------------------------------------- calibrated configurations


def test_pk_anchor_configs_meet_their_fitted_bands_with_the_shipped_library():
    results = []
    for name in ("pk_iv_konrad_1990", "pk_sc_kirchner_1998"):
        sc = load_scenario(ROOT / "configs" / "calibration" / f"{name}.toml")
        results += evaluate_targets(simulate(sc, throw=True), sc.targets)
    failed = [(r.target.name, r.simulated, r.target.band) for r in results if not r.passed]
    assert not failed


def test_calibrated_trial_config_meets_its_declared_bands():
    """Immune targets on the trial's 18 virtual patients; outcome fractions and days on therapy on
    the tumour stage's cohort (90: the trial's 18 and 72 more), as fitted, since the outcomes of
    18 patients scatter widely (one long responder moves the mean by ~60 d)."""
    sc = load_scenario(TRIAL)
    (tumour,) = [st for st in sc.calibration.stages if st.name == "tumour"]
    outcome = set(tumour.targets)
    immune = tuple(t for t in sc.targets if t.name not in outcome and t.weight > 0)
    results = evaluate_targets(simulate(sc, throw=True), immune)
    ds90 = simulate(sc, subjects=tumour.subjects, throw=True)
    results += evaluate_targets(ds90, tuple(t for t in sc.targets if t.name in outcome))
    assert len(results) == 10
    failed = [(r.target.name, r.simulated, r.target.band) for r in results if not r.passed]
    assert not failed
    assert set(ds90["response"].values) <= {"PR", "MR", "SD", "PD"}
