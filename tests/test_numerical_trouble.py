"""Numerical trouble (issue 6): subjects that blow up, go negative, return NaN or run out of
steps are marked in ``status`` with the reason and the time, the rest of the cohort is the
same as without them, the run says how many failed and why; absurd solver settings, empty
grids, zero subjects and doses after the end are clear errors or documented behaviour."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import il2sim
from il2sim.cli import main
from il2sim.errors import ConfigError, SolverError
from il2sim.scenario import load_scenario
from il2sim.simulate import _below_lower_bound

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"
KA, KE = 0, 1  # parameter columns of onecmt_oral: ka, ke, V, F, tlag


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(CONFIG)


def _params(scenario, n):
    return np.tile(scenario.model.default_parameters(), (n, 1))


# --- failed subjects ---------------------------------------------------------------------------


def test_bad_subjects_are_marked_with_reason_and_time_and_the_rest_is_unchanged(scenario):
    P = _params(scenario, 6)
    P[1, KA] = -0.5  # absorption runs backwards: the central amount goes negative after the first dose
    P[3, KE] = -5.0  # elimination becomes growth e^{5 t}: overflows
    P[4, KE] = np.nan  # a parameter that is NaN
    ds = il2sim.simulate(scenario, subjects=6, parameters=P)
    assert list(ds.status.values) == ["ok", "negative_state", "ok", "non_finite", "non_finite", "ok"]
    assert ds.attrs["n_failed"] == 3
    assert ds.attrs["status_summary"] == "3 ok, 2 non_finite, 1 negative_state"

    # negative_state: the state, its value, the time (first dose 08:00 + lag 0.5 h; grid every 1 h)
    msg = str(ds.status_message.values[1])
    assert msg.startswith("state 'Ac' = -") and " nmol at t = 9 h, below its lower bound 0 by more than the tolerance. " in msg
    assert "declares lower = -inf in its model file" in msg
    assert ds.t_reached.values[1] == 9.0
    assert np.isfinite(ds.Ac.values[1]).all()  # the trajectory is kept for inspection
    # the blow-up: when it happened, NaN after it, finite before
    t_blow = float(ds.t_reached.values[3])
    assert 8.0 < t_blow < ds.time.values[-1]
    assert str(ds.status_message.values[3]).startswith(f"stopped at t = {t_blow:.6g} h: The state or its derivative became NaN")
    after = ds.time.values > t_blow
    assert np.isnan(ds.C.values[3, after]).all() and np.isfinite(ds.C.values[3, ~after]).all()
    assert ds.t_reached.values[4] == 0.0  # NaN from the start
    assert [str(m) for m in ds.status_message.values[[0, 2, 5]]] == ["", "", ""]

    # the good subjects are bit for bit those of a run without the bad ones (same seed)
    good = [0, 2, 5]
    alone = il2sim.simulate(scenario, subject_ids=np.array(good), parameters=P[good])
    clean = _params(scenario, 6)
    healthy = il2sim.simulate(scenario, subjects=6, parameters=clean)
    for ref in (alone, healthy.isel(subject=good)):
        for name in ("Ad", "Ac", "C", "t_reached", "n_steps", "n_rhs", "BSA"):
            np.testing.assert_array_equal(ds[name].values[good], ref[name].values, err_msg=name)

    with pytest.raises(SolverError, match=r"^3 of 6 subject\(s\) failed \(3 ok, 2 non_finite, 1 negative_state\); "
                                          r"first: subject 1, state 'Ac' = -\S+ nmol at t = 9 h, below its lower bound 0"):
        il2sim.simulate(scenario, subjects=6, parameters=P, throw=True)


def test_max_steps_carries_the_time_reached(scenario):
    sc = replace(scenario, solver=replace(scenario.solver, max_steps=40))
    ds = il2sim.simulate(sc, subjects=2)
    assert list(ds.status.values) == ["max_steps", "max_steps"]
    for t, m in zip(ds.t_reached.values, ds.status_message.values):
        assert 0.0 < t < ds.time.values[-1]
        assert str(m) == f"stopped at t = {t:.6g} h: " + il2sim._solvers.status.Status.MAX_STEPS.message
    assert ds.attrs["status_summary"] == "2 max_steps"


def test_a_state_that_may_be_negative_opts_out(scenario, tmp_path):
    model = (HERE / "models" / "onecmt_oral.toml").read_text()
    model = model.replace('Ac = { initial = 0.0, unit = "nmol", description = "central" }',
                          'Ac = { initial = 0.0, unit = "nmol", description = "central", lower = -inf }')
    (tmp_path / "m.toml").write_text(model)
    (tmp_path / "c.toml").write_text(CONFIG.read_text().replace('"../models/onecmt_oral.toml"', '"m.toml"'))
    sc = load_scenario(tmp_path / "c.toml")
    P = _params(sc, 1)
    P[0, KA] = -0.5
    ds = il2sim.simulate(sc, subjects=1, parameters=P)
    assert list(ds.status.values) == ["ok"] and ds.Ac.values.min() < -1.0


def test_lower_bound_check_allows_tolerance_sized_dips():
    t = np.arange(5.0)
    atol, lower = np.array([1e-8, 1e-8]), np.array([0.0, -np.inf])
    Y = np.zeros((4, 5, 2))
    Y[0, :, 0] = [100.0, 1.0, 1e-3, -5e-8, 0.0]  # decays to 0 from 100: dip within 10 (atol + rtol 100)
    Y[1, :, 0] = [0.0, 1e-3, -2e-7, -1.0, np.nan]  # a real negative at t = 2 (running max is 1e-3 there)
    Y[2, :, 1] = -1e9  # unbounded state: never counts
    Y[3, :, 0] = [np.nan] * 5  # a failed subject's NaN: never counts
    rows, k_t, k_s = _below_lower_bound(t, Y, lower, 1e-9, atol)
    assert (list(rows), list(k_t), list(k_s)) == ([1], [2], [0])
    # an absurd but finite atol (found by the long fuzz run): no overflow warning, nothing flagged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, _, _ = _below_lower_bound(t, Y, lower, 0.1, np.array([1e308] * 2))
    assert rows.size == 0


def test_cli_run_summary_says_how_many_failed_and_why(tmp_path, capsys):
    out = tmp_path / "r.nc"
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "2", "--no-figures", "--set", "solver.max_steps=40"]) == 0
    text = capsys.readouterr().out
    assert "  status: 2 max_steps\n" in text
    assert "  max_steps: 2 subject(s). The solver took the maximum number of steps" in text
    assert "  failed subjects are kept: see status, status_message and t_reached (when) in the results" in text
    import xarray as xr

    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.attrs["status_summary"] == "2 max_steps" and ds.attrs["n_failed"] == 2


def test_chunked_run_summary_counts_every_chunk(scenario, tmp_path):
    from il2sim.cohort import run_cohort
    import xarray as xr

    sc = replace(scenario, solver=replace(scenario.solver, max_steps=40))
    run = run_cohort(sc, tmp_path / "s.zarr", subjects=5, chunk_size=2, progress=False)
    assert run.status == {"max_steps": 5} and run.n_failed == 5
    with xr.open_zarr(run.out, consolidated=True) as ds:
        assert ds.attrs["status_summary"] == "5 max_steps" and ds.attrs["n_failed"] == 5


# --- absurd settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rtol": 0}, r"solver\.rtol: expected a number >= 1e-14, got 0"),
        ({"rtol": -1e-6}, r"solver\.rtol: expected a number >= 1e-14, got -1e-06"),
        ({"rtol": 2.0}, r"solver\.rtol: expected a number <= 0\.1, got 2\.0"),
        ({"rtol": float("nan")}, r"solver\.rtol: expected a finite number, got nan"),
        ({"atol": 0}, r"solver\.atol: expected a number > 0, got 0"),
        ({"atol": -1.0}, r"solver\.atol: expected a number > 0, got -1\.0"),
        ({"atol": float("nan")}, r"solver\.atol: expected a finite number, got nan"),
        ({"atol": "tight"}, r"solver\.atol: expected a number, got 'tight' \(str\)"),
        ({"atol": {"Ac": 0.0}}, r"solver\.atol\.Ac: expected a number > 0, got 0\.0"),
        ({"atol": {"Acc": 1e-9}}, r"solver\.atol\.Acc: unknown state 'Acc'; states: Ad, Ac"),
    ],
)
def test_absurd_tolerances_given_to_simulate(scenario, kwargs, message):
    with pytest.raises(ConfigError, match=r"^simulate \(rtol/atol arguments\): " + message):
        il2sim.simulate(scenario, subjects=1, **kwargs)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("solver.rtol", 0, r"solver\.rtol: expected a number >= 1e-14, got 0"),
        ("solver.rtol", 1.5, r"solver\.rtol: expected a number <= 0\.1, got 1\.5"),
        ("solver.rtol", float("inf"), r"solver\.rtol: expected a finite number, got inf"),
        ("solver.atol", -1e-9, r"solver\.atol: expected a number > 0, got -1e-09"),
        ("solver.max_steps", 0, r"solver\.max_steps: expected an integer >= 1, got 0"),
        ("solver.hmax", -1.0, r"solver\.hmax: expected a number >= 0, got -1\.0"),
        ("output.dt_h", 0, r"output\.dt_h: expected a number > 0, got 0"),
        ("output.dt_h", 1e-9, r"output: dt_h = 1e-09 h from start_h = 0\.0 to end_day = 14 \(336 h\) gives 3\.36e\+11 time points; "
                              r"expected at most 1e\+08"),
        ("output.end_day", 5e6, r"output: dt_h = 1\.0 h from start_h = 0\.0 to end_day = 5000000\.0 \(1\.2e\+08 h\) gives 1\.2e\+08 time points"),
        ("output.start_h", 400.0, r"output\.start_h: expected < end \(336 h\), got 400\.0"),
        ("population.subjects", 0, r"population\.subjects: expected an integer >= 1, got 0"),
    ],
)
def test_absurd_settings_in_a_config(key, value, message):
    with pytest.raises(ConfigError, match=r"onecmt\.toml: " + message):
        load_scenario(CONFIG, overrides={key: value})


@pytest.mark.parametrize("t_out", [[], [np.nan], [0.0, np.inf], [-1.0, 1.0], [5.0, 1.0], [[0.0, 1.0]]])
def test_empty_or_broken_output_grids(scenario, t_out):
    with pytest.raises(ConfigError, match=r"^simulate: t_out: expected a non-empty, non-decreasing grid of finite times >= 0 h$"):
        il2sim.simulate(scenario, subjects=1, t_out=np.array(t_out, dtype=float))


def test_zero_subjects(scenario, tmp_path, capsys):
    from il2sim.cohort import run_cohort

    with pytest.raises(ConfigError, match=r"onecmt\.toml: population\.subjects: expected an integer >= 1, got 0"):
        il2sim.simulate(scenario, subjects=0)
    with pytest.raises(ConfigError, match=r"^simulate: subject_ids: expected a non-empty array of indices >= 0$"):
        il2sim.simulate(scenario, subject_ids=np.array([], dtype=int))
    with pytest.raises(ConfigError, match=r"^run_cohort: subjects: expected an integer >= 1, got 0$"):
        run_cohort(scenario, tmp_path / "z.zarr", subjects=0)
    assert main(["run", str(CONFIG), "--out", str(tmp_path / "z.nc"), "--subjects", "0"]) == 2
    assert "run_cohort: subjects: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_doses_after_the_end_are_not_given(scenario):
    """Documented (simulate): a dose after the last output time is dropped; it cannot change the
    output. A regimen that starts after the end leaves every subject drug-free."""
    early = il2sim.simulate(scenario, subjects=2, t_out=np.array([0.0, 2.0, 7.0]))  # first dose 08:00
    assert list(early.status.values) == ["ok", "ok"]
    assert (early.C.values == 0.0).all() and (early.Ad.values == 0.0).all()
    # doses up to 30 h are given, later ones are not: the same as a run over the whole grid
    full = il2sim.simulate(scenario, subjects=2)
    short = il2sim.simulate(scenario, subjects=2, t_out=full.time.values[:31])
    np.testing.assert_allclose(short.C.values, full.C.values[:, :31], rtol=1e-6, atol=1e-9)


BLOWUP_MODEL = """
[model]
name = "blowup"
description = "dX/dt = k X^2: a finite-time singularity at t = 1/(k X0)"
time_unit = "h"
[parameters]
k = { value = 0.01, unit = "1/(nmol h)", description = "growth constant", source = "test value" }
[states]
X = { initial = 1.0, unit = "nmol", description = "blows up" }
[odes]
X = "k * X**2"
"""


@pytest.mark.parametrize("method", ["rodas5p", "tsit5"])
def test_finite_time_singularity_is_marked_where_it_happens(tmp_path, method):
    (tmp_path / "blowup.toml").write_text(BLOWUP_MODEL)
    (tmp_path / "c.toml").write_text(
        f'[scenario]\nname = "b"\nmodels = ["blowup.toml"]\nseed = 1\n[population]\nsubjects = 3\n'
        f'[output]\ndt_h = 1.0\nend_h = 48\n[solver]\nmethod = "{method}"\nrtol = 1e-8\natol = 1e-10\n')
    sc = load_scenario(tmp_path / "c.toml")
    P = np.array([[0.01], [0.05], [0.02]])  # singular at 100 h (after the end), 20 h and 50 h (after the end)
    ds = il2sim.simulate(sc, subjects=3, parameters=P)
    assert [str(s) for s in ds.status.values[[0, 2]]] == ["ok", "ok"]
    assert str(ds.status.values[1]) in ("step_too_small", "non_finite")
    assert ds.t_reached.values[1] == pytest.approx(20.0, rel=1e-3)
    assert str(ds.status_message.values[1]).startswith(f"stopped at t = {ds.t_reached.values[1]:.6g} h: ")
    np.testing.assert_allclose(ds.X.values[0], 1.0 / (1.0 - 0.01 * ds.time.values), rtol=1e-6)
    assert np.isnan(ds.X.values[1, ds.time.values > 20.0]).all()
