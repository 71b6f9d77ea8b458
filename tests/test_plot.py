"""Figures (il2sim.plot) checked by what they draw: labels with units, the plotted data, colours,
legend entries, Kaplan–Meier steps against a hand-computed estimate; and ``il2sim plot`` end to
end on a file written by ``il2sim run``, with its bad-input messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.colors import to_rgba

from il2sim import plot
from il2sim.cli import main
from il2sim.errors import ConfigError

HERE = Path(__file__).parent
ONECMT = HERE / "configs" / "onecmt.toml"
TOY_TUMOUR = HERE / "configs" / "toy_tumour.toml"
PNG = b"\x89PNG\r\n\x1a\n"


# -- synthetic results ----------------------------------------------------------------------------

def cohort(n: int = 7, seed: int = 0) -> xr.Dataset:
    """One cohort: C (pM) on subject x time (h); subject 2's solve failed."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 97.0, 12.0)
    C = rng.lognormal(0.0, 0.5, (n, 1)) * np.exp(-t / 40.0)[None, :] * 100.0
    status = np.array(["ok"] * n, dtype=object)
    status[2] = "max_steps"
    return xr.Dataset(
        {"C": (("subject", "time"), C, {"units": "pM", "description": "serum IL-2"}),
         "status": ("subject", status.astype(str)),
         "BSA_end": ("subject", rng.normal(1.8, 0.1, n), {"units": "m2"})},
        coords={"subject": np.arange(n), "time": ("time", t, {"units": "h"})},
        attrs={"scenario": "synthetic"},
    )


def sweep(doses=(0.5, 1.0, 2.0), per_day=None, n: int = 9, seed: int = 1) -> xr.Dataset:
    """A sweep as il2sim.sweep writes it: leading scenario dim, one coordinate per factor."""
    rng = np.random.default_rng(seed)
    if per_day is None:
        d = np.asarray(doses, float)
        coords = {"dose": ("scenario", d, {"units": "MIU/m2"})}
    else:
        d = np.repeat(np.asarray(doses, float), len(per_day))
        f = np.tile(np.asarray(per_day), len(doses))
        coords = {"dose": ("scenario", d, {"units": "MIU/m2"}), "doses_per_day": ("scenario", f)}
    s = d.size
    t = np.arange(0.0, 49.0, 6.0)
    C = d[:, None, None] * rng.lognormal(0.0, 0.3, (s, n, 1)) * np.exp(-t / 20.0)[None, None, :]
    days = rng.uniform(30.0, 200.0, (s, n)) * d[:, None]
    prog = np.where(rng.random((s, n)) < 0.6, days, np.nan)
    return xr.Dataset(
        {"C": (("scenario", "subject", "time"), C, {"units": "pM", "description": "serum IL-2"}),
         "days_on_therapy": (("scenario", "subject"), days, {"units": "d"}),
         "progression_day": (("scenario", "subject"), prog, {"units": "d"}),
         "status": (("scenario", "subject"), np.full((s, n), "ok"))},
        coords={"scenario": np.arange(s), "subject": np.arange(n), "time": t, **coords},
    )


def outcomes() -> xr.Dataset:
    best = np.array([-60.0, 10.0, -30.0, 40.0, -5.0, -80.0])
    resp = np.array(["PR", "SD", "MR", "PD", "SD", "PR"])
    days = np.array([300.0, 120.0, 250.0, 56.0, 168.0, 336.0])
    prog = np.array([np.nan, 120.0, 250.0, 56.0, np.nan, np.nan])
    return xr.Dataset(
        {"best_M_change": ("subject", best, {"units": "%"}), "response": ("subject", resp),
         "days_on_therapy": ("subject", days, {"units": "d"}), "progression_day": ("subject", prog, {"units": "d"})},
        coords={"subject": np.arange(10, 16)}, attrs={"scenario": "trial"},
    )


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# -- trajectories ---------------------------------------------------------------------------------

def test_trajectories_band_draws_the_median_of_finished_subjects_with_units(tmp_path):
    ds = cohort()
    fig = plot.trajectories(ds, ["C"], tmp_path / "traj.png", time_unit="h")
    ax = fig.axes[0]
    ok = np.arange(7) != 2
    y = ds["C"].values[ok]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), ds["time"].values)
    np.testing.assert_allclose(line.get_ydata(), np.median(y, axis=0))
    verts = np.concatenate([p.vertices for p in ax.collections[0].get_paths()])
    np.testing.assert_allclose([verts[:, 1].min(), verts[:, 1].max()],
                               [np.percentile(y, 5, axis=0).min(), np.percentile(y, 95, axis=0).max()])
    assert ax.get_ylabel() == "C (pM)" and ax.get_xlabel() == "time (h)"
    assert ax.get_yscale() == "log"  # C is drawn on a log axis
    assert legend_texts(ax) == ["5–95 %", "median"]
    assert "6 subjects" in fig._suptitle.get_text()
    assert (tmp_path / "traj.png").read_bytes().startswith(PNG)
    assert "C (pM)" in (tmp_path / "traj.svg").read_text()  # SVG keeps text as text


def test_trajectories_days_on_the_time_axis():
    fig = plot.trajectories(cohort(), "C", log=())
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), cohort()["time"].values / 24.0)
    assert ax.get_xlabel() == "time (d)" and ax.get_yscale() == "linear"


def test_trajectories_one_colour_per_scenario_with_factor_values_in_the_legend():
    ds = sweep()
    fig = plot.trajectories(ds, ["C"], log=())
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3 and len(ax.collections) == 3
    assert len({to_rgba(line.get_color()) for line in lines}) == 3
    for k, line in enumerate(lines):
        np.testing.assert_allclose(line.get_ydata(), np.median(ds["C"].values[k], axis=0))
    (legend,) = fig.legends  # beside the panels, one entry per scenario
    assert [t.get_text() for t in legend.get_texts()] == ["dose = 0.5 MIU/m2", "dose = 1 MIU/m2", "dose = 2 MIU/m2"]
    assert legend.get_title().get_text() == "dose"
    assert "27 subjects in 3 scenarios" in fig._suptitle.get_text()


def test_spaghetti_draws_each_subject_and_the_median():
    ds = sweep(n=5)
    fig = plot.trajectories(ds, ["C"], mode="spaghetti", max_subjects=4, log=())
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3 * (4 + 1)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), ds["C"].values[0, 0])
    np.testing.assert_allclose(ax.get_lines()[4].get_ydata(), np.median(ds["C"].values[0], axis=0))
    single = plot.trajectories(cohort(), ["C"], mode="spaghetti")
    assert legend_texts(single.axes[0]) == ["subjects (6)", "median"]


@pytest.mark.parametrize("call, match", [
    (lambda: plot.trajectories(cohort(), ["Q"]), r"trajectories: no variable 'Q' in the results; available: C"),
    (lambda: plot.trajectories(cohort(), ["BSA_end"]), r"'BSA_end' has dims \(subject\) but needs time"),
    (lambda: plot.trajectories(cohort(), ["C"], mode="lines"), r"mode 'lines'; expected 'band' or 'spaghetti'"),
    (lambda: plot.trajectories(cohort(), ["C"], time_unit="min"), r"time_unit 'min'; expected one of h, d, wk"),
])
def test_trajectories_errors_name_what_is_available(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# -- dose–response and heatmap --------------------------------------------------------------------

def test_dose_response_median_and_band_over_subjects():
    ds = sweep(doses=(2.0, 0.5, 1.0))  # unsorted design: the curve is drawn in dose order
    fig = plot.dose_response(ds, "dose", var="days_on_therapy", logx=True)
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    order = np.argsort(ds["dose"].values)
    values = ds["days_on_therapy"].values[order]
    np.testing.assert_allclose(line.get_xdata(), [0.5, 1.0, 2.0])
    np.testing.assert_allclose(line.get_ydata(), np.median(values, axis=1))
    verts = np.concatenate([p.vertices for p in ax.collections[0].get_paths()])
    np.testing.assert_allclose([verts[:, 1].min(), verts[:, 1].max()],
                               [np.percentile(values, 5, axis=1).min(), np.percentile(values, 95, axis=1).max()])
    assert ax.get_xlabel() == "dose (MIU/m2)" and ax.get_ylabel() == "days_on_therapy (d)"
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2"]  # ticks at the swept values
    assert legend_texts(ax) == ["median", "5–95 % of subjects"]


def test_dose_response_from_a_dataarray_and_a_tidy_table_agree():
    ds = sweep()
    a = plot.dose_response(ds["days_on_therapy"], "dose").axes[0].get_lines()[0].get_ydata()
    df = ds["days_on_therapy"].to_dataframe().reset_index()[["dose", "days_on_therapy"]]
    df.attrs["units"] = {"dose": "MIU/m2", "days_on_therapy": "d"}
    fig = plot.dose_response(df, "dose", var="days_on_therapy")
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), a)
    assert fig.axes[0].get_ylabel() == "days_on_therapy (d)"


def test_dose_response_one_curve_per_level_of_the_other_factor():
    ds = sweep(doses=(0.5, 1.0), per_day=(1, 2, 3))
    ax = plot.dose_response(ds, "dose", var="days_on_therapy").axes[0]
    assert len(ax.get_lines()) == 3
    assert legend_texts(ax)[:3] == ["doses_per_day = 1", "doses_per_day = 2", "doses_per_day = 3"]
    mask = ds["doses_per_day"].values == 2
    expect = [np.median(ds["days_on_therapy"].values[mask & (ds["dose"].values == d)]) for d in (0.5, 1.0)]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), expect)


def test_dose_response_leaves_out_failed_subjects():
    ds = sweep()
    ds["status"][0, 0] = "non_finite"
    ds["days_on_therapy"][0, 0] = 1e9
    y = plot.dose_response(ds, "dose", var="days_on_therapy").axes[0].get_lines()[0].get_ydata()
    assert y[0] == pytest.approx(np.median(ds["days_on_therapy"].values[0, 1:]))


def test_heatmap_cells_are_medians_on_the_factor_grid():
    ds = sweep(doses=(0.5, 1.0, 2.0), per_day=(1, 2))
    fig = plot.heatmap(ds, "dose", "doses_per_day", var="days_on_therapy")
    ax = fig.axes[0]
    Z = np.asarray(ax.images[0].get_array())
    v = ds["days_on_therapy"].values
    for i, f in enumerate((1, 2)):
        for j, d in enumerate((0.5, 1.0, 2.0)):
            k = int(np.flatnonzero((ds["dose"].values == d) & (ds["doses_per_day"].values == f))[0])
            assert Z[i, j] == pytest.approx(np.median(v[k]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]
    assert ax.get_xlabel() == "dose (MIU/m2)" and ax.get_ylabel() == "doses_per_day"
    assert fig.axes[1].get_ylabel() == "median days_on_therapy (d)"  # the colour bar
    assert len(ax.texts) == 6


@pytest.mark.parametrize("call, match", [
    (lambda: plot.heatmap(sweep(), "dose", "dose", var="days_on_therapy"), "x and y are both 'dose'"),
    (lambda: plot.heatmap(sweep(), "dose", "cycle_days", var="days_on_therapy"),
     "no swept factor 'cycle_days'; factors of these results: dose"),
    (lambda: plot.dose_response(sweep(), "dose", var="C"), r"'C' has dims \(scenario, subject, time\).*max\('time'\)"),
    (lambda: plot.dose_response(sweep(), "dose"), "name the endpoint"),
    (lambda: plot.dose_response(sweep(), "dose", var="nope"), "no variable 'nope'"),
    (lambda: plot.dose_response(pd.DataFrame({"a": [1]}), "dose", var="y"), r"no column\(s\) 'dose', 'y'"),
])
def test_sweep_figure_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_heatmap_refuses_a_third_factor_that_varies():
    ds = sweep(doses=(0.5, 1.0), per_day=(1, 2))
    ds = ds.assign_coords(cycle_days=("scenario", [28, 28, 84, 84]))
    with pytest.raises(ConfigError, match="cycle_days also vary"):
        plot.heatmap(ds, "dose", "doses_per_day", var="days_on_therapy")


# -- waterfall and swimmer ------------------------------------------------------------------------

def test_waterfall_bars_sorted_and_coloured_by_response_with_thresholds(tmp_path):
    ds = outcomes()
    fig = plot.waterfall(ds, tmp_path / "w.svg")
    ax = fig.axes[0]
    bars = ax.containers[0]
    heights = [b.get_height() for b in bars]
    assert heights == [40.0, 10.0, -5.0, -30.0, -60.0, -80.0]
    assert [to_rgba(b.get_facecolor()) for b in bars] == [
        to_rgba(plot.RESPONSE_COLOURS[r]) for r in ("PD", "SD", "SD", "MR", "PR", "PR")]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["13", "11", "14", "12", "10", "15"]
    levels = sorted(line.get_ydata()[0] for line in ax.get_lines())
    assert levels == [-50.0, -25.0, 0.0]
    assert legend_texts(ax) == ["PR (2)", "MR (1)", "SD (2)", "PD (1)", "PR: -50 %", "MR: -25 %"]
    assert ax.get_ylabel() == "best M-protein change (%)"
    assert (tmp_path / "w.png").is_file() and (tmp_path / "w.svg").is_file()


def test_waterfall_thresholds_follow_the_criteria():
    from il2sim.response import ResponseCriteria

    ax = plot.waterfall(outcomes(), criteria=ResponseCriteria(pr_fall=0.6, mr_fall=0.3)).axes[0]
    assert sorted(line.get_ydata()[0] for line in ax.get_lines()) == [-60.0, -30.0, 0.0]


def test_swimmer_bars_are_days_on_therapy_with_progression_marks():
    ds = outcomes()
    ax = plot.swimmer(ds).axes[0]
    bars = ax.containers[0]
    assert [b.get_width() for b in bars] == sorted(ds["days_on_therapy"].values)
    assert to_rgba(bars[-1].get_facecolor()) == to_rgba(plot.RESPONSE_COLOURS["PR"])  # 336 d, PR
    prog, censored = ax.get_lines()
    np.testing.assert_allclose(prog.get_xdata(), [56.0, 120.0, 250.0])
    np.testing.assert_allclose(censored.get_xdata(), [168.0, 300.0, 336.0])
    assert ax.get_xlabel() == "days on therapy (d)"
    assert "progression (3)" in legend_texts(ax) and "ended without progression (3)" in legend_texts(ax)


@pytest.mark.parametrize("func", [plot.waterfall, plot.swimmer, plot.kaplan_meier])
def test_outcome_figures_need_a_progression_run(func):
    with pytest.raises(ConfigError, match=r"regimen.stop = \"progression\""):
        func(cohort())


@pytest.mark.parametrize("func", [plot.waterfall, plot.swimmer])
def test_per_subject_figures_refuse_a_whole_sweep(func):
    ds = sweep()
    with pytest.raises(ConfigError, match=r"3 scenarios; draw one at a time \(ds.isel\(scenario=k\)"):
        func(ds)


# -- Kaplan–Meier ---------------------------------------------------------------------------------

# Hand-computed product-limit estimate. Times 2, 3, 3+, 5, 6+, 8 (+ = censored):
#   t=2: 6 at risk, 1 event -> S = 5/6
#   t=3: 5 at risk (the subject censored at 3 still counts), 1 event -> 5/6 * 4/5 = 2/3
#   t=5: 3 at risk, 1 event -> 2/3 * 2/3 = 4/9;  t=6: censoring only -> 4/9
#   t=8: 1 at risk, 1 event -> 0
KM_T = [8.0, 3.0, 2.0, 6.0, 3.0, 5.0]
KM_E = [True, True, True, False, False, True]
KM_S = [5 / 6, 2 / 3, 4 / 9, 4 / 9, 0.0]


def test_product_limit_matches_the_hand_computed_estimate():
    table = plot.product_limit(KM_T, KM_E)
    np.testing.assert_allclose(table["time"], [2, 3, 5, 6, 8])
    np.testing.assert_array_equal(table["at_risk"], [6, 5, 3, 2, 1])
    np.testing.assert_array_equal(table["events"], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(table["censored"], [0, 1, 0, 1, 0])
    np.testing.assert_allclose(table["survival"], KM_S)


def test_product_limit_without_events_stays_at_one():
    assert list(plot.product_limit([1.0, 2.0], [False, False])["survival"]) == [1.0, 1.0]
    with pytest.raises(ConfigError, match="durations must be finite"):
        plot.product_limit([np.nan], [True])


def test_kaplan_meier_steps_and_censor_ticks(tmp_path):
    days = np.array(KM_T)
    prog = np.where(KM_E, days, np.nan)
    ds = xr.Dataset({"progression_day": ("subject", prog, {"units": "d"}),
                     "days_on_therapy": ("subject", days, {"units": "d"})}, coords={"subject": np.arange(6)})
    fig = plot.kaplan_meier(ds, tmp_path / "km")
    ax = fig.axes[0]
    step, ticks, _key = ax.get_lines()
    np.testing.assert_allclose(step.get_xdata(), [0, 2, 3, 5, 6, 8])
    np.testing.assert_allclose(step.get_ydata(), [1.0, *KM_S])
    assert step.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(ticks.get_xdata(), [3.0, 6.0])
    np.testing.assert_allclose(ticks.get_ydata(), [2 / 3, 4 / 9])
    assert legend_texts(ax) == ["median 5 d (n = 6, 4 progressed)", "censored (no progression)"]
    assert ax.get_xlabel() == "time since start of therapy (d)" and ax.get_ylabel() == "progression-free fraction"
    assert (tmp_path / "km.png").read_bytes().startswith(PNG)


def test_kaplan_meier_one_curve_per_scenario():
    ds = sweep()
    ax = plot.kaplan_meier(ds).axes[0]
    steps = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert len(steps) == 3
    for k, line in enumerate(steps):
        prog = ds["progression_day"].values[k]
        table = plot.product_limit(np.where(np.isnan(prog), ds["days_on_therapy"].values[k], prog), ~np.isnan(prog))
        np.testing.assert_allclose(line.get_ydata(), [1.0, *table["survival"]])
    assert legend_texts(ax)[0].startswith("dose = 0.5 MIU/m2: median")


# -- Sobol ----------------------------------------------------------------------------------------

def bar_containers(ax) -> list:
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def sobol_table() -> pd.DataFrame:
    return pd.DataFrame({
        "endpoint": ["ttp", "ttp", "ttp", "eos_peak", "eos_peak", "eos_peak"],
        "parameter": ["ka", "kg", "kkill", "ka", "kg", "kkill"],
        "S1": [0.10, 0.50, 0.20, 0.60, 0.01, 0.05],
        "S1_conf": [0.02, 0.05, 0.03, 0.04, 0.01, 0.02],
        "ST": [0.15, 0.70, 0.25, 0.80, 0.02, 0.10],
        "ST_conf": [0.03, 0.06, 0.04, 0.05, 0.01, 0.03],
    })


def test_sobol_bars_heights_and_confidence_intervals(tmp_path):
    fig = plot.sobol_bars(sobol_table(), tmp_path / "sobol.png")
    ax = fig.axes[0]
    assert ax.get_title() == "ttp"
    s1, st = bar_containers(ax)
    assert [round(b.get_height(), 6) for b in s1] == [0.5, 0.2, 0.1]  # sorted by ST: kg, kkill, ka
    assert [round(b.get_height(), 6) for b in st] == [0.7, 0.25, 0.15]
    segments = s1.errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in segments], [0.10, 0.06, 0.04])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["kg", "kkill", "ka"]
    assert ax.get_ylabel() == "Sobol index (fraction of variance)"
    assert legend_texts(ax) == ["first order S1", "total ST"]
    assert fig.axes[1].get_title() == "eos_peak"
    assert (tmp_path / "sobol.svg").is_file()


def test_sobol_bars_with_bounds_as_il2sim_sensitivity_writes_them():
    t = sobol_table().drop(columns=["S1_conf", "ST_conf"])
    t["S1_low"], t["S1_high"] = t["S1"] - 0.01, t["S1"] + 0.03
    t["ST_low"], t["ST_high"] = t["ST"] - 0.02, t["ST"] + 0.02
    ax = plot.sobol_bars(t, endpoints=["eos_peak"]).axes[0]
    segments = bar_containers(ax)[0].errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([(seg[0, 1], seg[1, 1]) for seg in segments][0], (0.59, 0.63))
    assert ax.get_title() == "eos_peak"


@pytest.mark.parametrize("table, kwargs, match", [
    (sobol_table().drop(columns=["ST"]), {}, "no column.s. ST"),
    (sobol_table(), {"endpoints": ["M"]}, "no endpoint 'M'; endpoints: ttp, eos_peak"),
])
def test_sobol_bars_errors(table, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        plot.sobol_bars(table, **kwargs)


# -- a real run -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tumour_run():
    from il2sim.simulate import simulate

    return simulate(str(TOY_TUMOUR), subjects=6)


def test_outcome_figures_of_a_simulated_progression_run(tumour_run):
    ds = tumour_run
    bars = plot.waterfall(ds).axes[0].containers[0]
    assert sorted(b.get_height() for b in bars) == sorted(ds["best_M_change"].values)
    swim = plot.swimmer(ds).axes[0].containers[0]
    assert sorted(b.get_width() for b in swim) == sorted(ds["days_on_therapy"].values)
    step = plot.kaplan_meier(ds).axes[0].get_lines()[0]
    assert step.get_ydata()[0] == 1.0 and np.all(np.diff(step.get_ydata()) <= 0)
    ax = plot.trajectories(ds, ["M"]).axes[0]
    assert ax.get_ylabel() == f"M ({ds['M'].attrs['units']})"


# -- command line ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "one.nc"
    assert main(["run", str(ONECMT), "--out", str(out), "--subjects", "4", "--seed", "3", "--no-figures", "--quiet"]) == 0
    return out


def test_cli_plot_trajectories_of_a_run(run_file, tmp_path, capsys):
    out = tmp_path / "figs" / "traj.png"
    assert main(["plot", str(run_file), "--var", "C", "--out", str(out)]) == 0
    assert f"il2sim plot: wrote {out} and {out.with_suffix('.svg')}" in capsys.readouterr().out
    assert out.read_bytes().startswith(PNG)
    svg = out.with_suffix(".svg").read_text()
    assert "time (d)" in svg and "median" in svg and "4 subjects" in svg


def test_cli_plot_spaghetti_default_path(run_file, capsys):
    assert main(["plot", str(run_file), "--kind", "spaghetti", "--time-unit", "h"]) == 0
    png = run_file.with_name("one_spaghetti.png")
    assert png.is_file() and png.with_suffix(".svg").is_file()
    assert "time (h)" in png.with_suffix(".svg").read_text()


def test_cli_plot_sweep_kinds(tmp_path, capsys):
    path = tmp_path / "sweep.nc"
    sweep(doses=(0.5, 1.0), per_day=(1, 2)).to_netcdf(path, engine="h5netcdf")
    for args in (["--kind", "dose-response", "--x", "dose", "--logx"],
                 ["--kind", "heatmap", "--x", "dose", "--y", "doses_per_day", "--var", "days_on_therapy"],
                 ["--kind", "km"], ["--kind", "trajectories", "--var", "C"]):
        assert main(["plot", str(path), *args]) == 0, args
        kind = args[1].replace("-", "_")
        assert path.with_name(f"sweep_{kind}.svg").is_file()
    svg = path.with_name("sweep_heatmap.svg").read_text()
    assert "median days_on_therapy (d)" in svg and "dose (MIU/m2)" in svg


def test_cli_plot_endpoint_as_a_statistic_over_time(tmp_path, capsys):
    path = tmp_path / "sweep.nc"
    ds = sweep(doses=(0.5, 1.0), per_day=(1, 2))
    ds.to_netcdf(path, engine="h5netcdf")
    out = tmp_path / "cmax"
    assert main(["plot", str(path), "--kind", "heatmap", "--var", "C:max", "--x", "dose", "--y", "doses_per_day",
                 "--out", str(out)]) == 0
    assert "median C_max (pM)" in out.with_suffix(".svg").read_text()
    assert main(["plot", str(path), "--kind", "dose-response", "--var", "C:median", "--x", "dose"]) == 2
    assert "statistic 'median'; expected one of max, min, mean, last" in capsys.readouterr().err
    assert main(["plot", str(path), "--kind", "dose-response", "--var", "days_on_therapy:max", "--x", "dose"]) == 2
    assert "'days_on_therapy' is not a time-dependent variable of the results; available: C" in capsys.readouterr().err


def test_cli_plot_outcomes_of_one_scenario(tmp_path, capsys):
    path = tmp_path / "sweep.nc"
    ds = sweep()
    ds["best_M_change"] = (("scenario", "subject"), np.linspace(-80, 40, ds["days_on_therapy"].size).reshape(3, -1), {"units": "%"})
    ds["response"] = (("scenario", "subject"), np.full(ds["days_on_therapy"].shape, "SD"))
    ds.to_netcdf(path, engine="h5netcdf")
    assert main(["plot", str(path), "--kind", "waterfall", "--scenario", "1", "--out", str(tmp_path / "w")]) == 0
    assert main(["plot", str(path), "--kind", "swimmer", "--scenario", "-1", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "w.png").is_file() and (tmp_path / "s.svg").is_file()


def test_cli_plot_sobol_from_csv(tmp_path, capsys):
    path = tmp_path / "sobol.csv"
    sobol_table().to_csv(path, index=False)
    assert main(["plot", str(path), "--kind", "sobol", "--var", "ttp"]) == 0
    assert "ttp" in path.with_name("sobol_sobol.svg").read_text()


@pytest.mark.parametrize("args, message", [
    (["--kind", "waterfall"], "waterfall: no variable 'best_M_change' in the results (written by a run whose regimen stops at progression"),
    (["--var", "nope"], "trajectories: no variable 'nope' in the results; available: "),
    (["--kind", "dose-response", "--var", "Ac"], "--kind dose-response needs --x FACTOR; these results have no scenario dimension"),
    (["--kind", "km", "--scenario", "0"], "--scenario 0: "),
    (["--kind", "sobol"], "no Sobol indices"),
])
def test_cli_plot_bad_input_is_one_paragraph(run_file, tmp_path, capsys, args, message):
    assert main(["plot", str(run_file), *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("il2sim plot: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_missing_file_and_help(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none.nc")]) == 2
    assert f"{tmp_path / 'none.nc'}: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    text = capsys.readouterr().out
    assert "il2sim plot results/sweep.nc --kind heatmap" in text and "--kind {trajectories,spaghetti" in text
