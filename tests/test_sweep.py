"""Sweeps: scenario 0 is a plain run, the same patients in every scenario, declared designs,
named regimen factors, streaming to zarr, clear errors, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from il2sim.cli import main
from il2sim.errors import ConfigError
from il2sim.scenario import load_scenario
from il2sim.simulate import simulate
from il2sim.sweep import SweepDesign, SweepFactor, design_points, parse_sweep, sweep

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"
ROOT = HERE.parent
AMOUNT = {"path": "regimen.block[1].amount", "values": [0.5, 1.0]}  # 0.5 is the config's value


def _config_with(tmp_path, extra: str) -> Path:
    """onecmt.toml plus ``extra`` TOML, written elsewhere (model path made absolute)."""
    text = CONFIG.read_text().replace("../models/onecmt_oral.toml", str((HERE / "models" / "onecmt_oral.toml").resolve()))
    path = tmp_path / "onecmt_sweep.toml"
    path.write_text(text + "\n" + extra)
    return path


def test_scenario_zero_is_bit_identical_to_a_plain_run():
    ds = sweep(CONFIG, design={"factor": [AMOUNT]}, subjects=3)
    plain = simulate(load_scenario(CONFIG), subjects=3)
    first = ds.isel(scenario=0)
    assert ds.sizes["scenario"] == 2
    for name in plain.data_vars:
        if plain[name].dims and plain[name].dims[-1] == "time":
            np.testing.assert_array_equal(first[name].values, plain[name].values, err_msg=name)
    for name in ("ka", "ke", "F", "BSA", "height", "weight"):
        np.testing.assert_array_equal(first[name].values, plain[name].values)
    assert list(ds["regimen.block[1].amount"].values) == [0.5, 1.0]
    assert not np.array_equal(ds["C"].isel(scenario=1).values, plain["C"].values)


def test_common_random_numbers_differences_only_from_the_factor():
    ds = sweep(CONFIG, design={"factor": [{"path": "parameters.ke", "values": [0.05, 0.1, 0.2]}]}, subjects=4)
    for name in ("ka", "F", "V", "height", "weight", "BSA"):
        vals = ds[name].values
        np.testing.assert_array_equal(vals, np.broadcast_to(vals[0], vals.shape), err_msg=name)
    ke = ds["ke"].values  # θ set by the factor; each patient keeps its own exp(η)
    np.testing.assert_allclose(ke[1] / ke[0], 2.0, rtol=1e-14)
    np.testing.assert_allclose(ke[2] / ke[1], 2.0, rtol=1e-14)
    assert len(set(ke[0])) == 4  # and the patients differ from each other
    # faster elimination: lower exposure for every patient
    auc = ds["C"].integrate("time").values
    assert np.all(np.diff(auc, axis=0) < 0)


def test_grid_levels_linear_log_and_full_factorial():
    d, problems = parse_sweep({"factor": [{"name": "maintenance_dose", "range": [0.1, 3.0], "levels": 8, "scale": "log"},
                                          {"path": "parameters.ke", "range": [1.0, 2.0], "levels": 3},
                                          {"name": "doses_per_day", "values": [1, 2]}]}, "x.toml")
    assert problems == []
    pts = design_points(d)
    assert len(pts) == 8 * 3 * 2
    np.testing.assert_allclose(sorted({p[0] for p in pts}), np.geomspace(0.1, 3.0, 8), rtol=1e-12)
    assert sorted({p[1] for p in pts}) == [1.0, 1.5, 2.0]
    assert len(set(pts)) == len(pts)  # every combination once
    assert pts[0] == (pts[0][0], 1.0, 1) and pts[1] == (pts[0][0], 1.0, 2)  # last factor fastest


@pytest.mark.parametrize("kind", ["lhs", "sobol"])
def test_space_filling_designs_are_stratified_within_their_ranges(kind):
    n = 16
    d, problems = parse_sweep({"design": kind, "n": n, "seed": 3,
                               "factor": [{"path": "parameters.ka", "range": [0.1, 1.0], "scale": "log"},
                                          {"path": "parameters.ke", "range": [0.02, 0.2]},
                                          {"name": "days_per_week", "range": [1, 7]}]}, "x.toml")
    assert problems == []
    pts = np.array(design_points(d), dtype=float)
    assert pts.shape == (n, 3)
    u_log = np.log(pts[:, 0] / 0.1) / np.log(10.0)
    u_lin = (pts[:, 1] - 0.02) / 0.18
    for u in (u_log, u_lin):  # one point in each of n equal strata (log strata for a log scale)
        assert np.all((u >= 0) & (u < 1))
        assert sorted(np.floor(u * n).astype(int)) == list(range(n))
    assert set(pts[:, 2]) <= set(range(1, 8)) and np.all(pts[:, 2] == np.round(pts[:, 2]))
    d2, _ = parse_sweep({"design": kind, "n": n, "seed": 3, "factor": d and [
        {"path": "parameters.ka", "range": [0.1, 1.0], "scale": "log"}, {"path": "parameters.ke", "range": [0.02, 0.2]},
        {"name": "days_per_week", "range": [1, 7]}]}, "x.toml")
    assert design_points(d2) == design_points(d)  # seeded


def test_lhs_sweep_has_its_points_as_scenario_coordinates():
    design = {"design": "lhs", "n": 4, "seed": 1, "factor": [{"path": "parameters.ke", "range": [0.05, 0.2]}]}
    ds = sweep(CONFIG, design=design, subjects=2)
    d, _ = parse_sweep(design, "x")
    np.testing.assert_array_equal(ds["parameters.ke"].values, [p[0] for p in design_points(d)])
    np.testing.assert_allclose(ds["ke"].values[:, 0] / ds["ke"].values[0, 0],
                               ds["parameters.ke"].values / ds["parameters.ke"].values[0], rtol=1e-13)


def test_named_regimen_factors_map_onto_config_fields():
    data = {"regimen": {"cycle_days": 84, "block": [{"days": [1, 2], "amount": 9.0}, {"days": [3, 56], "amount": 0.9}]}}
    f = lambda name: SweepFactor(name, values=(1,), integer=True)  # noqa: E731
    assert f("maintenance_dose").overrides(0.5, data, "x") == {"regimen.block[1].amount": 0.5}
    assert f("loading_dose").overrides(3.0, data, "x") == {"regimen.block[0].amount": 3.0}
    assert f("dose").overrides(1.8, data, "x") == pytest.approx({"regimen.block[0].amount": 18.0, "regimen.block[1].amount": 1.8})
    assert f("doses_per_day").overrides(1, data, "x") == {"regimen.block[1].clock": ["08:00"]}
    assert f("doses_per_day").overrides(2, data, "x") == {"regimen.block[1].clock": ["08:00", "20:00"]}
    assert f("doses_per_day").overrides(3, data, "x") == {"regimen.block[1].clock": ["00:00", "08:00", "16:00"]}
    assert f("days_per_week").overrides(5, data, "x") == {"regimen.block[1].weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri"]}
    assert len(f("days_per_week").overrides(7, data, "x")["regimen.block[1].weekdays"]) == 7
    assert f("cycle_days").overrides(70, data, "x") == {"regimen.cycle_days": 70}
    assert f("rest_weeks").overrides(4, data, "x") == {"regimen.cycle_days": 56 + 28}
    with pytest.raises(ConfigError, match="'loading_dose': the regimen has one block"):
        f("loading_dose").overrides(1.0, {"regimen": {"block": [{"days": [1, 5]}]}}, "x")


def test_schedule_sweep_gives_the_declared_dose_counts():
    ds = sweep(CONFIG, design={"factor": [{"name": "doses_per_day", "values": [1, 2]},
                                          {"name": "days_per_week", "values": [5, 7]}]}, subjects=1,
               overrides={"regimen.cycle_days": 14, "regimen.max_cycles": 1, "regimen.block[1].days": [3, 14]})
    assert list(ds["doses_per_day"].values) == [1, 1, 2, 2]
    assert list(ds["days_per_week"].values) == [5, 7, 5, 7]
    auc = ds["C"].integrate("time").values[:, 0]
    assert auc[0] < auc[1] < auc[3] and auc[0] < auc[2] < auc[3]  # more doses, more exposure


def test_streamed_zarr_equals_the_in_memory_sweep(tmp_path):
    design = {"factor": [AMOUNT, {"name": "doses_per_day", "values": [1, 2]}]}
    mem = sweep(CONFIG, design=design, subjects=2)
    out = tmp_path / "s.zarr"
    disk = sweep(CONFIG, design=design, subjects=2, out=out)
    assert out.exists() and not (tmp_path / "s.zarr.partial").exists()
    np.testing.assert_array_equal(disk["C"].values, mem["C"].values)
    np.testing.assert_array_equal(disk["ke"].values, mem["ke"].values)
    assert list(disk["doses_per_day"].values) == [1, 2, 1, 2]
    assert list(disk["status"].values.ravel()) == ["ok"] * 8
    assert disk.attrs["sweep_scenarios"] == 4
    assert [str(x) for x in disk["status_message"].values.ravel()] == [str(x) for x in mem["status_message"].values.ravel()]
    with pytest.raises(ConfigError, match="exists; pass overwrite=True"):
        sweep(CONFIG, design=design, subjects=2, out=out)


def test_config_sweep_table_is_parsed_and_used(tmp_path):
    path = _config_with(tmp_path, '[sweep]\ndesign = "grid"\nsubjects = 2\n[[sweep.factor]]\nname = "maintenance_dose"\nvalues = [0.5, 2.0]\n')
    sc = load_scenario(path)
    assert isinstance(sc.sweep, SweepDesign) and sc.sweep.subjects == 2
    ds = sweep(path)
    assert ds.sizes["scenario"] == 2 and ds.sizes["subject"] == 2
    assert list(ds["maintenance_dose"].values) == [0.5, 2.0]


@pytest.mark.parametrize("table, message", [
    ({"design": "grd", "factor": [AMOUNT]}, "sweep.design: expected one of 'grid', 'lhs', 'sobol', got 'grd'"),
    ({"design": "lhs", "factor": [{"path": "parameters.ke", "range": [0.1, 0.2]}]}, "sweep.n: required for design = 'lhs'"),
    ({"factor": [{"path": "parameters.ke", "range": [0.1, 0.2]}]}, r"sweep.factor\[0\].levels: required with `range` in a grid design"),
    ({"factor": [{"path": "parameters.ke", "range": [0.2, 0.1], "levels": 2}]}, r"sweep.factor\[0\].range: expected \[low, high\] with low < high"),
    ({"factor": [{"path": "parameters.ke", "range": [0.0, 0.1], "levels": 2, "scale": "log"}]}, "a log scale needs low > 0"),
    ({"factor": [{"name": "maintenance_dos", "values": [1]}]}, "did you mean 'maintenance_dose'"),
    ({"factor": [{"path": "parameters.ke", "values": [1], "range": [1, 2]}]}, "give `values` .* or `range`"),
    ({"factor": []}, r"expected one or more \[\[sweep.factor\]\] tables"),
    ({"factor": [{"path": "scenario.seed", "values": [1, 2]}]}, "'scenario.seed' cannot be swept"),
    ({"factor": [AMOUNT, AMOUNT]}, "appears more than once"),
])
def test_bad_sweep_tables_are_reported(table, message):
    with pytest.raises(ConfigError, match=message):
        sweep(CONFIG, design=table)


def test_bad_factor_paths_name_the_scenario_values_and_field():
    with pytest.raises(ConfigError) as exc:
        sweep(CONFIG, design={"factor": [{"path": "regimen.block[5].amount", "values": [1.0]}]})
    msg = str(exc.value)
    assert "sweep scenario 0 (regimen.block[5].amount = 1; config fields regimen.block[5].amount)" in msg
    assert "block[5] does not exist (2 present" in msg
    with pytest.raises(ConfigError, match=r"(?s)sweep scenario 0 \(parameters.kee = 0.1; .*unknown model parameter 'kee' \(did you mean 'ke'\?\)"):
        sweep(CONFIG, design={"factor": [{"path": "parameters.kee", "values": [0.1]}]})
    with pytest.raises(ConfigError) as exc:  # a bad path fails for every value: one message
        sweep(CONFIG, design={"factor": [{"path": "parameters.kee", "values": [0.1, 0.2, 0.3]}]})
    assert "3 invalid sweep scenario(s)" in str(exc.value)
    assert str(exc.value).count("unknown model parameter") == 1
    assert "(the same problem in scenario(s) 1, 2)" in str(exc.value)
    with pytest.raises(ConfigError, match=r"regimen.cycl_days: unknown key"):
        sweep(CONFIG, design={"factor": [{"path": "regimen.cycl_days", "values": [7]}]})


def test_an_invalid_scenario_value_names_its_index_values_and_field():
    with pytest.raises(ConfigError) as exc:
        sweep(CONFIG, design={"factor": [{"name": "maintenance_dose", "values": [0.5, -1.0, 2.0]}]})
    msg = str(exc.value)
    assert "1 invalid sweep scenario(s)" in msg
    assert "sweep scenario 1 (maintenance_dose = -1; config fields regimen.block[1].amount)" in msg
    assert "regimen.block[1].amount" in msg.split("sweep scenario 1", 1)[1]
    with pytest.raises(ConfigError, match=r"(?s)sweep scenario 0 \(cycle_days = 3; .*regimen.cycle_days\)"):
        sweep(CONFIG, design={"factor": [{"name": "cycle_days", "values": [3]}]})  # block days [3, 5] > 3


def test_cli_sweep_writes_a_store_and_prints_a_table(tmp_path, capsys):
    path = _config_with(tmp_path, '[sweep]\n[[sweep.factor]]\nname = "maintenance_dose"\nvalues = [0.5, 2.0]\n')
    out = tmp_path / "res" / "sw.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--subjects", "2", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    assert "il2sim sweep onecmt: 2 scenarios (grid) x 2 subjects" in text
    assert f"wrote {out}" in text
    ds = xr.open_zarr(out)
    assert ds.sizes["scenario"] == 2 and ds.attrs["seed"] == 4
    nc = tmp_path / "sw.nc"
    assert main(["sweep", str(path), "--out", str(nc), "--set", "sweep.factor[0].values=[1.0]", "--quiet"]) == 0
    assert xr.open_dataset(nc, engine="h5netcdf").sizes["scenario"] == 1


def test_cli_sweep_errors_are_one_paragraph_with_exit_2(tmp_path, capsys):
    path = _config_with(tmp_path, '[sweep]\n[[sweep.factor]]\nname = "maintenance_dose"\nvalues = [0.5, -2.0]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("il2sim sweep: error: ") and "sweep scenario 1 (maintenance_dose = -2;" in err
    assert not (tmp_path / "x.zarr").exists()


def test_shipped_sweep_configs_validate_and_expand():
    for name, size in (("sweep_maintenance_dose", 8), ("sweep_schedule", 4), ("sweep_dose_loading_2d", 16)):
        sc = load_scenario(ROOT / "configs" / f"{name}.toml")
        assert len(design_points(sc.sweep)) == size
        assert sc.output.end_h == 84 * 24 and sc.regimen.max_cycles == 1
