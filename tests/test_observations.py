"""Simulated observations: sampling times in the solve grid, residual error with the declared
distribution, drawn from a stream that leaves every parameter and trajectory unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import il2sim
from il2sim.errors import ConfigError
from il2sim.observations import ObservationSpec, ObservedVariable, apply_error, observation_rng, residual_draws
from il2sim.scenario import load_scenario

HERE = Path(__file__).parent
ONECMT = (HERE / "configs" / "onecmt.toml").read_text().replace(
    '"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
OBS = """
[observations]
times_h = [8.75, 12, 30.25, 50]
times_day = [3, 7]

[observations.variables]
C = { error = "combined", sd = 20.0, cv = 0.15 }
Ac = { error = "proportional", cv = 0.2 }
Ad = { error = "additive", sd = 0.05 }
"""


def write(tmp_path, text, name="obs.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return load_scenario(write(tmp_path_factory.mktemp("obs"), ONECMT + OBS))


@pytest.fixture(scope="module")
def ds(scenario):
    return il2sim.simulate(scenario, subjects=800)


def test_config_is_parsed(scenario):
    spec = scenario.observations
    assert spec.times_h == (8.75, 12.0, 30.25, 50.0, 72.0, 168.0)  # days since t = 0, merged and sorted
    assert spec.variables == (ObservedVariable("C", "combined", sd=20.0, cv=0.15), ObservedVariable("Ac", "proportional", cv=0.2),
                              ObservedVariable("Ad", "additive", sd=0.05))


def test_results_layout(ds):
    assert ds.obs_time.attrs["units"] == "h"
    np.testing.assert_array_equal(ds.obs_time.values, [8.75, 12.0, 30.25, 50.0, 72.0, 168.0])
    for v in ("C", "Ac", "Ad"):
        assert ds[f"{v}_obs"].dims == ("subject", "obs_time") and ds[f"{v}_pred"].dims == ("subject", "obs_time")
        assert ds[f"{v}_obs"].attrs["units"] == ds[v].attrs["units"]
    assert ds.C_obs.attrs["error_model"] == "combined"
    assert "combined, sd 20 pM, cv 0.15" in ds.C_obs.attrs["description"]


def test_predictions_are_the_solution_at_the_sampling_times(scenario, ds):
    """Times on the output grid give the grid values; times off it equal a solve whose grid has them."""
    on_grid = [12.0, 50.0, 72.0, 168.0]
    np.testing.assert_array_equal(ds.C_pred.sel(obs_time=on_grid).values, ds.C.sel(time=on_grid).values)
    t_out = np.unique(np.concatenate([scenario.output.times(), [8.75, 30.25]]))
    other = il2sim.simulate(scenario, subjects=5, t_out=t_out)
    np.testing.assert_array_equal(ds.Ac_pred.isel(subject=slice(0, 5)).sel(obs_time=[8.75, 30.25]).values,
                                  other.Ac.sel(time=[8.75, 30.25]).values)


def test_observations_change_no_parameter_covariate_or_trajectory(ds, tmp_path):
    plain = il2sim.simulate(load_scenario(write(tmp_path, ONECMT, "plain.toml")), subjects=800)
    for name in plain.variables:
        if name not in ("status", "status_message"):
            np.testing.assert_array_equal(plain[name].values, ds[name].values, err_msg=name)


def test_residuals_have_the_declared_distribution(ds):
    """Each model's standardised residual is N(0, 1): mean and SD within 4 sampling SEs, and a KS test."""
    def check(z):
        z = z[np.isfinite(z)].ravel()
        n = z.size
        assert abs(z.mean()) < 4 / np.sqrt(n)
        assert z.std(ddof=1) == pytest.approx(1.0, abs=4 / np.sqrt(2 * (n - 1)))
        assert stats.kstest(z, "norm").pvalue > 1e-3

    pred, obs = ds.C_pred.values, ds.C_obs.values
    check((obs - pred) / np.sqrt(20.0**2 + (0.15 * pred) ** 2))
    pred, obs = ds.Ac_pred.values, ds.Ac_obs.values
    check((obs / pred - 1.0) / 0.2)
    # proportional: the SD of the residual grows with the prediction (slope cv within sampling error)
    r = np.abs(obs - pred).ravel()
    slope = np.sum(r * pred.ravel()) / np.sum(pred.ravel() ** 2) / np.sqrt(2 / np.pi)
    assert slope == pytest.approx(0.2, rel=0.05)
    pred, obs = ds.Ad_pred.values, ds.Ad_obs.values
    check((obs - pred) / 0.05)
    # residuals of different variables and times are independent
    eps = np.stack([(ds.Ad_obs - ds.Ad_pred).values.ravel(), ((ds.Ac_obs / ds.Ac_pred - 1) / 0.2).values.ravel()])
    assert abs(np.corrcoef(eps)[0, 1]) < 4 / np.sqrt(eps.shape[1])


def test_exponential_error_is_log_normal():
    spec = ObservationSpec((1.0, 2.0), (ObservedVariable("C", "exponential", sd_log=0.3),))
    eps = residual_draws(spec, np.arange(20000), seed=2)[:, 0]
    f = np.full(eps.shape, 50.0)
    z = np.log(apply_error(spec.variables[0], f, eps) / f).ravel()
    assert z.std(ddof=1) == pytest.approx(0.3, abs=4 * 0.3 / np.sqrt(2 * z.size))
    assert abs(z.mean()) < 4 * 0.3 / np.sqrt(z.size)


def test_residual_stream_is_per_subject_and_separate_from_parameters(scenario, ds):
    sub = il2sim.simulate(scenario, subject_ids=np.array([700, 3]))
    for v in ("C_obs", "Ac_obs", "Ad_obs"):
        np.testing.assert_array_equal(sub[v].values, ds[v].isel(subject=[700, 3]).values)
    first = observation_rng(scenario.seed, 3).standard_normal((3, 6))
    np.testing.assert_allclose(ds.Ad_obs.isel(subject=3).values, ds.Ad_pred.isel(subject=3).values + 0.05 * first[2])
    child = np.random.SeedSequence(scenario.seed, spawn_key=(3, 1))
    assert observation_rng(scenario.seed, 3).random() == np.random.default_rng(child).random()


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, ONECMT + text, "bad.toml"))
    return str(info.value)


def test_config_errors_name_field_and_expectation(tmp_path):
    msg = problems(tmp_path, """
[observations]
times_h = [1, -2]
when = 3
[observations.variables]
C = { error = "poisson" }
Ac = { error = "combined", sd = 1 }
Ad = { error = "additive", sd = -1, cv = 0.1 }
CC = { error = "additive", sd = 1 }
""")
    assert "observations.when: unknown key" in msg
    assert "observations.times_h[1]: expected a number >= 0, got -2" in msg
    assert "observations.variables.C.error: expected one of 'additive', 'proportional', 'combined', 'exponential', got 'poisson'" in msg
    assert "observations.variables.Ac.cv: required for error = 'combined'" in msg
    assert "observations.variables.Ad.cv: unknown key" in msg
    assert "observations.variables.Ad.sd: expected a number >= 0, got -1" in msg
    msg = problems(tmp_path, """
[observations]
times_day = [20]
[observations.variables]
CC = { error = "additive", sd = 1 }
""")
    assert "observations.variables.CC: unknown state or output 'CC' (did you mean 'C'?)" in msg
    assert "observations: sampling time 480 h is after the end of the output grid (336 h); extend output.end_day or drop the sample" in msg
    msg = problems(tmp_path, "\n[observations]\n[observations.variables]\nC = { error = \"additive\", sd = 1 }\n")
    assert "observations: expected sampling times in times_h and/or times_day" in msg
