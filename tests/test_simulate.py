"""End-to-end: config → regimen → cohort → kernels → Dataset, against closed forms.

The one-compartment oral model has a closed form under repeated doses (superposition of
Bateman functions), so the whole chain — BSA from covariates, MIU/m² → nmol with the declared
factor, bioavailability and lag per subject, exact stops at doses — is checked at once.
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
import xarray as xr

import il2sim
from il2sim.errors import ConfigError, SolverError
from il2sim.results import write_netcdf
from il2sim.scenario import load_scenario

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(CONFIG)


@pytest.fixture(scope="module")
def ds(scenario):
    return il2sim.simulate(scenario)


def bateman(t, doses, ka, ke, V, F, lag):
    """Closed-form concentration (pM) of the one-compartment oral model under bolus doses (nmol)."""
    c = np.zeros_like(t)
    for td, amt in doses:
        tau = t - (td + lag)
        on = tau >= 0
        c[on] += 1000.0 * F * amt * ka / (V * (ka - ke)) * (np.exp(-ke * tau[on]) - np.exp(-ka * tau[on]))
    return c


def dose_list(scenario, bsa):
    """(time h, nmol) of every dose, written out by hand from the config."""
    doses = []
    for cycle in range(2):
        base = cycle * 7 * 24.0
        for day in (1, 2):
            for clock in (8.0, 20.0):
                doses.append((base + (day - 1) * 24 + clock, 2.0 * bsa * 3.99))
        for day in (3, 4, 5):
            doses.append((base + (day - 1) * 24 + 9.5, 0.5 * bsa * 3.99))
    return doses


def test_matches_closed_form_for_every_subject(scenario, ds):
    t = ds.time.values
    rtol, atol = 1e-8, 1e-10
    for i in range(ds.sizes["subject"]):
        sub = ds.isel(subject=i)
        bsa = float(np.sqrt(sub.height * sub.weight / 3600.0))  # Mosteller, by hand
        assert float(sub.BSA) == pytest.approx(bsa, rel=1e-14)
        exact = bateman(t, dose_list(scenario, bsa), float(sub.ka), float(sub.ke), float(sub.V), float(sub.F), float(sub.tlag))
        # state Ac in nmol; the tolerance-unit error (atol in nmol → scale the pM output)
        err = (sub.C.values - exact) / (1000.0 / float(sub.V) * atol + rtol * np.abs(exact))
        assert np.max(np.abs(err)) < 5.0


def test_dataset_contract(ds):
    assert ds.C.dims == ("subject", "time")
    assert ds.time.attrs["units"] == "h"
    assert ds.C.attrs["units"] == "pM" and ds.Ac.attrs["units"] == "nmol"
    assert ds.Ac.attrs["description"] == "central"
    assert ds.ka.dims == ("subject",) and ds.ka.attrs["units"] == "1/h"
    assert ds.BSA.attrs["units"] == "m2"
    assert list(ds.status.values) == ["ok"] * 6
    for key in ("il2sim_version", "model_hash", "scenario", "seed", "solver_method", "rtol", "atol"):
        assert key in ds.attrs
    assert ds.attrs["seed"] == 11 and ds.attrs["solver_method"] == "rodas5p"
    assert (ds.n_steps > 0).all() and (ds.n_rhs >= ds.n_steps).all()


def test_output_at_dose_time_is_post_dose(scenario):
    # the depot jumps at 08:00 + lag; with lag 0 an output exactly at 08:00 shows the dose
    ds = il2sim.simulate(scenario, subjects=1, t_out=np.array([0.0, 8.0, 8.5]),
                         parameters=np.array([[0.5, 0.1, 3.0, 0.4, 0.0]]))
    bsa = float(ds.BSA[0])
    assert ds.Ad.values[0, 0] == 0.0
    assert ds.Ad.values[0, 1] == pytest.approx(0.4 * 2.0 * bsa * 3.99, rel=1e-12)


def test_thread_count_does_not_change_results(scenario):
    numba.set_num_threads(1)
    a = il2sim.simulate(scenario, subjects=5)
    numba.set_num_threads(2)
    b = il2sim.simulate(scenario, subjects=5)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(a.Ac.values, b.Ac.values)
    np.testing.assert_array_equal(a.n_steps.values, b.n_steps.values)


def test_subject_is_the_same_patient_in_any_cohort_and_chunking(scenario):
    small = il2sim.simulate(scenario, subjects=4)
    large = il2sim.simulate(scenario, subjects=9, chunk_size=2)
    for var in ("Ac", "C", "ka", "F", "BSA"):
        np.testing.assert_array_equal(small[var].values, large[var].values[:4])


def test_seed_changes_patients(scenario):
    a = il2sim.simulate(scenario, subjects=3, seed=1)
    b = il2sim.simulate(scenario, subjects=3, seed=2)
    assert not np.array_equal(a.ka.values, b.ka.values)


def test_parameter_matrix_replaces_sampled_parameters(scenario):
    model = scenario.model
    P = np.tile(model.default_parameters(), (3, 1))
    P[:, model.parameter_index("ke")] = [0.05, 0.1, 0.2]
    ds = il2sim.simulate(scenario, subjects=3, parameters=P)
    np.testing.assert_array_equal(ds.ke.values, [0.05, 0.1, 0.2])
    assert ds.C.values[0, -1] > ds.C.values[1, -1] > ds.C.values[2, -1]


def test_parameter_matrix_shape_is_checked(scenario):
    with pytest.raises(ConfigError, match=r"parameters: expected shape \(2, 5\) \(subjects × parameters in model.parameter_names order\), got \(2, 4\)"):
        il2sim.simulate(scenario, subjects=2, parameters=np.ones((2, 4)))


def test_explicit_method_agrees_with_stiff_method(scenario):
    a = il2sim.simulate(scenario, subjects=2, method="rodas5p", rtol=1e-9, atol=1e-12)
    b = il2sim.simulate(scenario, subjects=2, method="tsit5", rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.C.values, b.C.values, rtol=1e-6, atol=1e-6)
    assert b.attrs["solver_method"] == "tsit5"


def test_failing_subject_is_marked_and_others_kept(scenario):
    P = np.tile(scenario.model.default_parameters(), (3, 1))
    ok = il2sim.simulate(scenario, subjects=3, parameters=P)
    tiny = il2sim.simulate(scenario, subjects=3, parameters=P, t_out=ok.time.values)
    assert list(tiny.status.values) == ["ok"] * 3
    # max_steps reached: a 1-step budget fails every subject, with the time reached recorded
    from dataclasses import replace

    sc = replace(scenario, solver=replace(scenario.solver, max_steps=3))
    bad = il2sim.simulate(sc, subjects=2)
    assert list(bad.status.values) == ["max_steps", "max_steps"]
    assert np.isnan(bad.C.values[:, -1]).all()
    assert "solver.max_steps" in str(bad.status_message.values[0])
    assert str(ok.status_message.values[0]) == ""
    assert (bad.t_reached.values < bad.time.values[-1]).all()
    with pytest.raises(SolverError, match=r"2 of 2 subject\(s\) failed \(2 max_steps\); first: subject 0, stopped at t = \S+ h: .*max_steps"):
        il2sim.simulate(sc, subjects=2, throw=True)


def test_variables_selection(scenario):
    ds = il2sim.simulate(scenario, subjects=1, variables=["C"])
    assert "C" in ds and "Ac" not in ds and "Ad" not in ds


def test_netcdf_round_trip_is_atomic(tmp_path, ds):
    out = write_netcdf(ds, tmp_path / "run.nc")
    back = xr.open_dataset(out, engine="h5netcdf")
    np.testing.assert_array_equal(back.C.values, ds.C.values)
    assert back.C.attrs["units"] == "pM"
    assert list(back.status.values) == list(ds.status.values)
    back.close()
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary left behind
    with pytest.raises(ConfigError, match=r"run.nc: exists; pass --overwrite to replace it"):
        write_netcdf(ds, out, overwrite=False)


def test_mass_balance_with_no_elimination(scenario):
    model = scenario.model
    P = np.tile(model.default_parameters(), (2, 1))
    P[:, model.parameter_index("ke")] = 0.0
    ds = il2sim.simulate(scenario, subjects=2, parameters=P, rtol=1e-10, atol=1e-12)
    bsa = ds.BSA.values
    F = P[:, model.parameter_index("F")]
    total = np.array([sum(a for _, a in dose_list(scenario, b)) for b in bsa]) * F
    amount = ds.Ad.values[:, -1] + ds.Ac.values[:, -1]
    np.testing.assert_allclose(amount, total, rtol=1e-10)


def test_progression_stops_dosing_at_the_visit():
    sc = load_scenario(HERE / "configs" / "toy_tumour.toml")
    ds = il2sim.simulate(sc)
    from dataclasses import replace

    free = il2sim.simulate(replace(sc, regimen=replace(sc.regimen, stop="none")))
    prog = np.flatnonzero(~np.isnan(ds.progression_day.values))
    never = np.flatnonzero(np.isnan(ds.progression_day.values))
    assert prog.size >= 2 and never.size >= 2, "the test cohort should contain both outcomes"
    t = ds.time.values
    visits = sc.regimen.assessment_times(6)
    for i in prog:
        t_stop = ds.progression_day.values[i] * 24.0
        assert t_stop in visits
        assert ds.days_on_therapy.values[i] == ds.progression_day.values[i]
        before, after = t <= t_stop, t > t_stop + 48.0
        # identical therapy up to the visit; no dose afterwards (the depot only empties)
        np.testing.assert_allclose(ds.M.values[i, before], free.M.values[i, before], rtol=1e-7)
        assert np.all(np.abs(ds.Ad.values[i, after]) < 1e-9)  # a dose would put 10 nmol there
        assert free.Ad.values[i, after].max() > 1.0  # without the stop rule dosing goes on
        # the judged visit really shows progression, none before it
        m = ds.M.sel(time=np.append([0.0], visits[visits <= t_stop])).values[i]
        nadir = np.minimum.accumulate(m)[:-1]
        assert m[-1] > 1.25 * nadir[-1] and m[-1] - nadir[-1] >= 5.0
    last_dose = max(sc.regimen.schedule(6)["time_h"])
    np.testing.assert_array_equal(ds.days_on_therapy.values[never], last_dose / 24.0)
    np.testing.assert_allclose(ds.M.values[never], free.M.values[never], rtol=1e-7)


def test_subject_ids_select_the_same_patients(scenario):
    whole = il2sim.simulate(scenario, subjects=8)
    part = il2sim.simulate(scenario, subject_ids=np.array([6, 2, 7]))
    np.testing.assert_array_equal(part.subject.values, [6, 2, 7])
    np.testing.assert_array_equal(part.Ac.values, whole.Ac.values[[6, 2, 7]])
    with pytest.raises(ConfigError, match=r"subject_ids: expected a non-empty array of indices >= 0"):
        il2sim.simulate(scenario, subject_ids=np.array([-1]))


def test_nonmem_records_drive_the_cohort(tmp_path):
    text = CONFIG.read_text()
    start, end = text.index("[regimen]"), text.index("[population]")
    text = text[:start] + f'[events]\nfile = "{HERE / "configs" / "onecmt_events.csv"}"\n\n' + text[end:]
    text = text.replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    cfg = tmp_path / "onecmt_events.toml"
    cfg.write_text(text)
    sc = load_scenario(cfg)
    ds = il2sim.simulate(sc, parameters=np.tile([0.5, 0.1, 3.0, 0.4, 0.5], (2, 1)))
    assert ds.sizes["subject"] == 2  # one per ID
    t = ds.time.values
    # subject 0 (ID 101): 4 boluses of 10 nmol q12h from 8 h into the depot (F 0.4, lag 0.5),
    # plus 5 nmol infused into the central compartment at 2.5 nmol/h from 30 h (2 h)
    ka, ke, V, F, lag = 0.5, 0.1, 3.0, 0.4, 0.5
    oral = bateman(t, [(8.0 + 12 * k, 10.0) for k in range(4)], ka, ke, V, F, lag)
    tau_on = np.clip(t - 30.0, 0.0, 2.0)
    infused = 1000.0 / V * 2.5 / ke * (1 - np.exp(-ke * tau_on)) * np.exp(-ke * np.clip(t - 32.0, 0.0, None))
    np.testing.assert_allclose(ds.C.values[0], oral + infused, rtol=1e-6, atol=1e-6)
    exact1 = bateman(t, [(0.0, 20.0), (24.0, 20.0)], ka, ke, V, F, lag)
    np.testing.assert_allclose(ds.C.values[1], exact1, rtol=1e-6, atol=1e-6)


def test_inter_occasion_variability_changes_parameters_per_cycle(tmp_path):
    from scipy.integrate import solve_ivp

    text = CONFIG.read_text().replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    cfg = tmp_path / "iov.toml"
    cfg.write_text(text + "\n[population.iov]\nke = 0.3\nF = 0.2\n")
    sc = load_scenario(cfg)
    ds = il2sim.simulate(sc, subjects=3)
    plain = il2sim.simulate(scenario_plain := load_scenario(CONFIG), subjects=3)
    # IOV draws from its own stream: covariates and IIV values are unchanged
    for var in ("ka", "ke", "F", "BSA"):
        np.testing.assert_array_equal(ds[var].values, plain[var].values)
    assert ds.ke_by_cycle.dims == ("subject", "cycle") and list(ds.cycle.values) == [1, 2]
    assert ds.ke_by_cycle.attrs["units"] == "1/h"
    assert not np.allclose(ds.ke_by_cycle.values[:, 0], ds.ke_by_cycle.values[:, 1])
    # reference: scipy Radau, dose by dose, with each cycle's ke and F (cycle 2 starts at 168 h)
    t = ds.time.values
    for i in range(3):
        sub = ds.isel(subject=i)
        ka, V, lag = float(sub.ka), float(sub.V), float(sub.tlag)
        kes, Fs = sub.ke_by_cycle.values, sub.F_by_cycle.values
        doses = sorted((td + lag, amt * Fs[int(td // 168.0)]) for td, amt in dose_list(scenario_plain, float(sub.BSA)))
        breaks = sorted({0.0, 168.0, t[-1]} | {d[0] for d in doses})
        y, out = np.zeros(2), np.zeros(t.size)
        for a, b in zip(breaks[:-1], breaks[1:]):
            y[0] += sum(amt for td, amt in doses if td == a)
            ke = kes[0] if a < 168.0 else kes[1]
            sol = solve_ivp(lambda _, x: [-ka * x[0], ka * x[0] - ke * x[1]], (a, b), y, method="Radau",
                            rtol=1e-11, atol=1e-13, dense_output=True)
            m = (t >= a) & (t < b) if b < t[-1] else (t >= a)
            out[m] = sol.sol(t[m])[1]
            y = sol.y[:, -1].copy()
        np.testing.assert_allclose(sub.Ac.values, out, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sub.C.values, 1000 * out / V, rtol=1e-6, atol=1e-6)


def test_iov_has_the_declared_spread(tmp_path):
    text = CONFIG.read_text().replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    text = text.replace("max_cycles = 2", "max_cycles = 4").replace("end_day = 14", "end_day = 28").replace("dt_h = 1.0", "dt_h = 24.0")
    cfg = tmp_path / "iov.toml"
    cfg.write_text(text + "\n[population.iov]\nV = 0.25\n")
    ds = il2sim.simulate(load_scenario(cfg), subjects=1500, variables=["C"])
    kappa = np.log(ds.V_by_cycle.values / ds.V.values[:, None])  # V has no IIV: kappa = omega z
    n = kappa.size
    assert kappa.std(ddof=1) == pytest.approx(0.25, abs=4 * 0.25 / np.sqrt(2 * n))
    assert abs(kappa.mean()) < 4 * 0.25 / np.sqrt(n)
    r = np.corrcoef(kappa[:, 0], kappa[:, 1])[0, 1]
    assert abs(r) < 4 / np.sqrt(kappa.shape[0])  # occasions independent


def test_iov_config_errors(tmp_path):
    text = CONFIG.read_text().replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text + "\n[population.iov]\nkee = 0.3\nV = -1\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(cfg)
    assert "bad.toml: population.iov.V: expected a number >= 0, got -1" in str(info.value)
    assert "bad.toml: population.iov.kee: unknown model parameter 'kee' (did you mean 'ke'?)" in str(info.value)


def test_a_cohort_that_would_not_fit_in_memory_is_refused_up_front(scenario, monkeypatch):
    import importlib

    simulate_module = importlib.import_module("il2sim.simulate")  # il2sim.simulate is also the function
    monkeypatch.setattr(simulate_module, "available_memory_bytes", lambda: 1024**3)  # 1 GiB free
    # 200,000 subjects × 337 times × 3 variables × 8 B × 2 ≈ 3.0 GiB
    with pytest.raises(ConfigError, match=r"onecmt.toml: 200000 subjects × 337 time points × 3 variables need about "
                                          r"3\.\d GiB in memory, more than the 1\.0 GiB available\. Stream the cohort to "
                                          r"disk instead: il2sim run CONFIG --out results/cohort.zarr --chunk-size 1024"):
        il2sim.simulate(scenario, subjects=200_000)
    ds = il2sim.simulate(scenario, subjects=2)  # small cohorts are unaffected
    assert ds.sizes["subject"] == 2
