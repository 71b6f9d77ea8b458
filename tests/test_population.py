"""Virtual subjects: one random stream per subject index, truncation, declared IIV."""

from __future__ import annotations

import numpy as np
import pytest

from il2sim.population import sample_cohort, subject_rng
from il2sim.scenario import CovariateSpec, PopulationSpec

NAMES = ("CL", "V", "ka")
BASE = np.array([10.0, 3.0, 0.5])
HEIGHT = CovariateSpec("height", "normal", {"mean": 170.0, "sd": 10.0}, 160.0, 175.0, "cm")
WEIGHT = CovariateSpec("weight", "lognormal", {"median": 70.0, "sd_log": 0.2}, 40.0, 130.0, "kg")
SEX = CovariateSpec("male", "bernoulli", {"p": 0.55})


def spec(n, iiv=None):
    return PopulationSpec(n, (HEIGHT, WEIGHT, SEX), iiv if iiv is not None else {"CL": 0.3, "ka": 0.5})


def test_subject_does_not_depend_on_cohort_size_or_order():
    small = sample_cohort(spec(5), NAMES, BASE, seed=3)
    big = sample_cohort(spec(200), NAMES, BASE, seed=3)
    picked = sample_cohort(spec(3), NAMES, BASE, seed=3, subjects=np.array([150, 4, 0]))
    np.testing.assert_array_equal(small.parameters, big.parameters[:5])
    np.testing.assert_array_equal(picked.parameters, big.parameters[[150, 4, 0]])
    for k in ("height", "weight", "male", "BSA"):
        np.testing.assert_array_equal(small.covariates[k], big.covariates[k][:5])


def test_subject_stream_is_the_spawned_child():
    child = np.random.SeedSequence(9).spawn(8)[7]
    assert subject_rng(9, 7).random() == np.random.default_rng(child).random()


def test_truncation_bounds_hold_and_bsa_is_mosteller():
    c = sample_cohort(spec(2000), NAMES, BASE, seed=1)
    assert c.covariates["height"].min() >= 160.0 and c.covariates["height"].max() <= 175.0
    assert set(np.unique(c.covariates["male"])) == {0.0, 1.0}
    np.testing.assert_allclose(c.covariates["BSA"], np.sqrt(c.covariates["height"] * c.covariates["weight"] / 3600.0))
    assert c.covariate_units["BSA"] == "m2"


def test_iiv_has_the_declared_log_normal_spread():
    n = 20000
    c = sample_cohort(spec(n), NAMES, BASE, seed=5)
    eta = np.log(c.parameters / BASE)
    sd = eta.std(axis=0, ddof=1)
    # sampling SE of an SD is sd / sqrt(2(n-1)): allow 4 SE
    for j, omega in enumerate((0.3, 0.0, 0.5)):
        assert sd[j] == pytest.approx(omega, abs=4 * omega / np.sqrt(2 * (n - 1)) + 1e-15)
        assert abs(eta[:, j].mean()) < 4 * omega / np.sqrt(n) + 1e-15
    assert abs(np.corrcoef(eta[:, 0], eta[:, 2])[0, 1]) < 4 / np.sqrt(n)
    np.testing.assert_array_equal(c.parameters[:, 1], 3.0)  # no IIV declared on V


def test_no_iiv_gives_base_parameters():
    c = sample_cohort(spec(4, iiv={}), NAMES, BASE, seed=0)
    np.testing.assert_array_equal(c.parameters, np.tile(BASE, (4, 1)))


def test_correlated_iiv_matches_the_declared_omega():
    from il2sim.population import omega_matrix

    n = 20000
    sp = PopulationSpec(n, (), {"CL": 0.3, "V": 0.2, "ka": 0.5}, correlations={("CL", "V"): 0.6, ("V", "ka"): -0.3})
    c = sample_cohort(sp, NAMES, BASE, seed=8)
    eta = np.log(c.parameters / BASE)
    r = np.corrcoef(eta.T)
    se = (1 - 0.6**2) / np.sqrt(n)  # SE of a sample correlation
    assert r[0, 1] == pytest.approx(0.6, abs=4 * se)
    assert r[1, 2] == pytest.approx(-0.3, abs=4 * (1 - 0.09) / np.sqrt(n))
    assert abs(r[0, 2]) < 4 / np.sqrt(n)
    np.testing.assert_allclose(np.cov(eta.T), omega_matrix(sp), atol=4 * 0.3 * 0.5 * np.sqrt(2 / n))
    # correlations do not disturb the marginal spreads
    np.testing.assert_allclose(eta.std(axis=0, ddof=1), [0.3, 0.2, 0.5], rtol=4 / np.sqrt(2 * n))


def test_invalid_correlation_matrix_is_refused(tmp_path):
    from il2sim.errors import ConfigError
    from il2sim.population import omega_cholesky

    sp = PopulationSpec(1, (), {"CL": 0.3, "V": 0.2, "ka": 0.5},
                        correlations={("CL", "V"): 0.9, ("V", "ka"): 0.9, ("CL", "ka"): -0.9})
    with pytest.raises(ConfigError, match=r"population.correlation: the correlations among CL, V, ka do not form a valid \(positive definite\) correlation matrix"):
        omega_cholesky(sp)


# --- covariate models and covariates from a CSV of patients ---------------------------------

from pathlib import Path  # noqa: E402

from il2sim.errors import ConfigError  # noqa: E402
from il2sim.population import CovariateEffect, CovariateTable  # noqa: E402

HERE = Path(__file__).parent
ONECMT = (HERE / "configs" / "onecmt.toml").read_text().replace(
    '"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')


def with_model(n, effects, iiv=None):
    return PopulationSpec(n, (HEIGHT, WEIGHT, SEX), iiv if iiv is not None else {}, covariate_model=tuple(effects))


def test_covariate_effects_follow_their_formulas():
    effects = [
        CovariateEffect("CL", "weight", "power", 70.0, 0.75),
        CovariateEffect("V", "weight", "power", 70.0, 1.0),
        CovariateEffect("V", "male", "linear", 0.0, 0.2),
        CovariateEffect("ka", "height", "exponential", 170.0, -0.01),
    ]
    c = sample_cohort(with_model(50, effects), NAMES, BASE, seed=2)
    w, h, m = c.covariates["weight"], c.covariates["height"], c.covariates["male"]
    np.testing.assert_allclose(c.parameters[:, 0], 10.0 * (w / 70.0) ** 0.75, rtol=1e-14)
    np.testing.assert_allclose(c.parameters[:, 1], 3.0 * (w / 70.0) * (1 + 0.2 * m), rtol=1e-14)
    np.testing.assert_allclose(c.parameters[:, 2], 0.5 * np.exp(-0.01 * (h - 170.0)), rtol=1e-14)


def test_covariate_model_does_not_change_the_random_draws():
    iiv = {"CL": 0.3, "ka": 0.5}
    plain = sample_cohort(spec(40, iiv), NAMES, BASE, seed=4)
    eff = CovariateEffect("CL", "BSA", "power", 1.8, 1.0)
    c = sample_cohort(with_model(40, [eff], iiv), NAMES, BASE, seed=4)
    np.testing.assert_array_equal(c.covariates["weight"], plain.covariates["weight"])
    np.testing.assert_allclose(c.parameters[:, 0] / (c.covariates["BSA"] / 1.8), plain.parameters[:, 0], rtol=1e-14)
    np.testing.assert_array_equal(c.parameters[:, 2], plain.parameters[:, 2])


def test_allometric_exponent_is_recovered_from_a_cohort_with_iiv():
    """log CL = log θ + b log(w/70) + η: least squares recovers b within its standard error."""
    n, omega = 5000, 0.3
    eff = CovariateEffect("CL", "weight", "power", 70.0, 0.75)
    c = sample_cohort(with_model(n, [eff], {"CL": omega}), NAMES, BASE, seed=6)
    x = np.log(c.covariates["weight"] / 70.0)
    y = np.log(c.parameters[:, 0] / 10.0)
    b, a = np.polyfit(x, y, 1)
    se = omega / (x.std() * np.sqrt(n))
    assert b == pytest.approx(0.75, abs=4 * se)
    assert (y - a - b * x).std(ddof=2) == pytest.approx(omega, abs=4 * omega / np.sqrt(2 * n))


def test_a_factor_that_is_not_positive_names_the_subject():
    eff = CovariateEffect("V", "height", "linear", 170.0, -0.5)  # zero at 172 cm; heights reach 175 cm
    with pytest.raises(ConfigError, match=r"population.covariate_model.V: subject \d+ has height = 17\d.*, for which the linear "
                                          r"effect gives the factor -?\d.*; expected a positive number"):
        sample_cohort(with_model(200, [eff]), NAMES, BASE, seed=1)


def table(rows="cycle"):
    values = np.array([[60.0, 160.0], [80.0, 180.0], [70.0, 170.0]])
    return CovariateTable("patients.csv", ("weight", "height"), values, {"weight": "kg", "height": "cm"}, rows, "x")


def test_csv_rows_cycle_by_subject_index():
    sp = PopulationSpec(7, (SEX,), {"CL": 0.3}, covariates_table=table())
    c = sample_cohort(sp, NAMES, BASE, seed=3)
    np.testing.assert_array_equal(c.covariates["csv_row"], [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(c.covariates["weight"], [60, 80, 70, 60, 80, 70, 60])
    np.testing.assert_allclose(c.covariates["BSA"], np.sqrt(c.covariates["height"] * c.covariates["weight"] / 3600.0))
    assert c.covariate_units["weight"] == "kg"
    # the CSV takes no draws: the declared covariate and the IIV are those of a cohort without it
    plain = sample_cohort(PopulationSpec(7, (SEX,), {"CL": 0.3}), NAMES, BASE, seed=3)
    np.testing.assert_array_equal(c.parameters, plain.parameters)
    np.testing.assert_array_equal(c.covariates["male"], plain.covariates["male"])
    picked = sample_cohort(sp, NAMES, BASE, seed=3, subjects=np.array([5, 1]))
    np.testing.assert_array_equal(picked.covariates["csv_row"], [2, 1])


def test_csv_rows_resampled_per_subject_stream():
    sp = PopulationSpec(3000, (), {}, covariates_table=table("resample"))
    c = sample_cohort(sp, NAMES, BASE, seed=3)
    counts = np.bincount(c.covariates["csv_row"], minlength=3)
    assert np.all(np.abs(counts - 1000) < 4 * np.sqrt(3000 * (1 / 3) * (2 / 3)))
    picked = sample_cohort(sp, NAMES, BASE, seed=3, subjects=np.array([2999, 17]))
    np.testing.assert_array_equal(picked.covariates["csv_row"], c.covariates["csv_row"][[2999, 17]])
    other_seed = sample_cohort(sp, NAMES, BASE, seed=4)
    assert not np.array_equal(other_seed.covariates["csv_row"], c.covariates["csv_row"])


def config(tmp_path, population_extra, csv=None):
    text = ONECMT.replace("[population]\nsubjects = 6\n", "[population]\nsubjects = 6\n" + population_extra)
    if csv is not None:
        (tmp_path / "patients.csv").write_text(csv)
        # the CSV supplies height and weight, so the distributions go
        text = "\n".join(line for line in text.splitlines() if not line.startswith(("height =", "weight =")))
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_config_covariate_model_and_csv(tmp_path):
    from il2sim.scenario import load_scenario

    csv = "id,weight,height,age\n1,60,160,50\n2, 80,180,70\n3,70,175,40\n"
    p = config(tmp_path, 'covariates_csv = { path = "patients.csv", columns = ["weight", "height", "age"], units = { weight = "kg" } }\n'
                         "[population.covariate_model]\n"
                         'ke = { covariate = "weight", reference = 70, exponent = 0.75 }\n'
                         'V = [{ covariate = "weight", reference = 70, exponent = 1 }, { covariate = "age", reference = 50, slope = 0.01 }]\n',
               csv)
    sc = load_scenario(p)
    t = sc.population.covariates_table
    assert t.columns == ("weight", "height", "age") and t.rows == "cycle" and t.values.shape == (3, 3)
    assert sc.population.covariate_model == (
        CovariateEffect("ke", "weight", "power", 70.0, 0.75),
        CovariateEffect("V", "weight", "power", 70.0, 1.0),
        CovariateEffect("V", "age", "linear", 50.0, 0.01),
    )
    assert "sha256=" in repr(t)  # the content, not the path, identifies the table in run fingerprints
    # a plain path works too
    p2 = config(tmp_path, 'covariates_csv = "patients.csv"\n', csv)
    assert load_scenario(p2).population.covariates_table.columns == ("id", "weight", "height", "age")


def test_config_errors_name_field_and_expectation(tmp_path):
    from il2sim.scenario import load_scenario

    p = config(tmp_path, "[population.covariate_model]\n"
                         'CL = { covariate = "wieght", reference = 70, exponent = 0.75 }\n'
                         'ke = { covariate = "weight", exponent = 0.75 }\n'
                         'V = { covariate = "weight", reference = 70, exponent = 1, slope = 0.1 }\n'
                         'ka = { covariate = "height", form = "power", slope = 0.1 }\n')
    with pytest.raises(ConfigError) as info:
        load_scenario(p)
    msg = str(info.value)
    assert "population.covariate_model.CL.covariate: unknown covariate 'wieght' (did you mean 'weight'?); known: height, weight, BSA" in msg
    assert "population.covariate_model.ke.reference: required for a power effect (the covariate value with factor 1, e.g. 70 kg)" in msg
    assert "population.covariate_model.V: expected exactly one of exponent or slope or theta (power, linear or exponential effect), got 2" in msg
    assert "population.covariate_model.ka: form 'power' takes the key 'exponent' only" in msg

    p = config(tmp_path, '[population.covariate_model]\nCL_lin = { covariate = "weight", reference = 70, exponent = 0.75 }\n')
    with pytest.raises(ConfigError, match=r"population.covariate_model.CL_lin: unknown model parameter 'CL_lin'"):
        load_scenario(p)

    p = config(tmp_path, 'covariates_csv = "missing.csv"\n')
    with pytest.raises(ConfigError, match=r"population.covariates_csv: cannot read .*missing.csv"):
        load_scenario(p)
    p = config(tmp_path, 'covariates_csv = { path = "patients.csv", rows = "random" }\n', "weight,height,sex\n60,160,F\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(p)
    msg = str(info.value)
    assert "population.covariates_csv.rows: expected one of 'cycle', 'resample', got 'random'" in msg
    assert "population.covariates_csv: " in msg and "column 'sex', data row 1: expected a number, got 'F'" in msg
    p = config(tmp_path, 'covariates_csv = "patients.csv"\n', "weight,height\n60,160\n")
    p.write_text(p.read_text().replace("[population.iiv]", 'weight = { dist = "normal", mean = 70, sd = 10 }\n[population.iiv]')
                 .replace("[population.covariates]\n", "[population.covariates]\n"))
    with pytest.raises(ConfigError, match=r"population.covariates_csv: column\(s\) weight are also declared in population.covariates"):
        load_scenario(p)
