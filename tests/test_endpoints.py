"""Endpoints against hand-computed values on analytic trajectories, plus one simulated cohort.

Synthetic Datasets carry curves whose statistics are known exactly: piecewise-linear curves
with knots on the output grid (trapezoid AUC exact, maxima at knots), exponentials and a
Bateman function (AUC and Cmax/Tmax bounded by the trapezoid and grid errors), tent-shaped
fold changes, and M-protein at visits judged by hand. The integration test compares Cmax per
dose of a simulated one-compartment cohort with the closed-form maximum of each dose interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import il2sim
from il2sim.endpoints import (DEFAULT, Endpoint, add_endpoints, clip_window, compute_endpoints, dose_table,
                              grid_is_exact, interp_at, window_statistic)
from il2sim.regimen import Regimen
from il2sim.response import ResponseCriteria, add_response
from il2sim.scenario import load_scenario

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"


def make_ds(t, units=None, **variables) -> xr.Dataset:
    """A (subject, time) Dataset; each variable is (subjects, time) or (time,) for one subject."""
    data = {}
    for name, y in variables.items():
        y = np.atleast_2d(np.asarray(y, float))
        data[name] = (("subject", "time"), y, {"units": (units or {}).get(name, "1"), "description": name})
    n = next(iter(data.values()))[1].shape[0]
    return xr.Dataset(data, coords={"subject": np.arange(n), "time": ("time", np.asarray(t, float), {"units": "h"})})


def one(df, endpoint, **where) -> pd.Series:
    sel = df[df.endpoint == endpoint]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel


# ------------------------------------------------------------------------ PK per dose

KNOTS = [0, 3, 10, 13, 20, 23, 30]
VALUES = [0, 10, 4, 14, 6, 12, 2]


@pytest.fixture(scope="module")
def pk():
    t = np.arange(0.0, 31.0)
    c = np.interp(t, KNOTS, VALUES)
    ds = make_ds(t, {"C": "pM"}, C=np.vstack([c, 2 * c]))
    eps = [Endpoint("Cmax", "cmax", "C", per="dose"), Endpoint("Tmax", "tmax", "C", per="dose"),
           Endpoint("AUC", "auc", "C", per="dose"), Endpoint("Ctrough", "ctrough", "C", per="dose")]
    return ds, compute_endpoints(ds, endpoints=eps, dose_times_h=[0, 10, 20])


def test_cmax_tmax_per_dose_on_a_piecewise_linear_curve(pk):
    _, df = pk
    cmax = one(df, "Cmax", subject=0)
    assert cmax["value"].tolist() == [10.0, 14.0, 12.0]
    assert cmax["dose"].tolist() == [1, 2, 3] and cmax["time_h"].tolist() == [0.0, 10.0, 20.0]
    assert (cmax["unit"] == "pM").all()
    assert one(df, "Cmax", subject=1)["value"].tolist() == [20.0, 28.0, 24.0]
    tmax = one(df, "Tmax", subject=0)
    assert tmax["value"].tolist() == [3.0, 3.0, 3.0] and (tmax["unit"] == "h").all()


def test_auc_per_dose_is_the_exact_integral_of_a_piecewise_linear_curve(pk):
    _, df = pk
    # by hand: [0,10] 3*(0+10)/2 + 7*(10+4)/2 = 64; [10,20] 27 + 70 = 97; [20,30] 27 + 49 = 76
    auc = one(df, "AUC", subject=0)
    assert auc["value"].tolist() == pytest.approx([64.0, 97.0, 76.0], rel=1e-14)
    assert (auc["unit"] == "pM*h").all()


def test_ctrough_is_the_value_at_the_next_dose_and_nan_after_the_last(pk):
    _, df = pk
    trough = one(df, "Ctrough", subject=0)["value"].to_numpy()
    assert trough[:2].tolist() == [4.0, 6.0] and math.isnan(trough[2])


def test_ctrough_before_a_bolus_into_the_measured_compartment():
    # an i.v. bolus at t = 10 h: the output at 10 h shows the post-dose state (100 + residual)
    t = np.arange(0.0, 21.0)
    c = np.where(t < 10, 100 * np.exp(-0.2 * t), 100 * np.exp(-0.2 * t) + 100 * np.exp(-0.2 * (t - 10)))
    ds = make_ds(t, {"C": "pM"}, C=c)
    at = compute_endpoints(ds, endpoints=[Endpoint("Ctrough", "ctrough", "C", per="dose")], dose_times_h=[0, 10])
    before = compute_endpoints(ds, endpoints=[Endpoint("Ctrough", "ctrough", "C", per="dose", pre_dose="before")],
                               dose_times_h=[0, 10])
    assert at["value"].iloc[0] == pytest.approx(100 * math.exp(-2.0) + 100, rel=1e-14)
    assert before["value"].iloc[0] == pytest.approx(100 * math.exp(-0.2 * 9), rel=1e-14)  # sample at 9 h


def test_dose_time_between_grid_points_is_interpolated():
    # C = t on [0, 10]: dose at 4.5 h, interval [4.5, 10]: Cmax 10 at 5.5 h after; AUC (100-20.25)/2
    t = np.arange(0.0, 11.0)
    ds = make_ds(t, {"C": "pM"}, C=t)
    df = compute_endpoints(ds, endpoints=[Endpoint("AUC", "auc", "C", per="dose"), Endpoint("Tmax", "tmax", "C", per="dose")],
                           dose_times_h=[4.5])
    assert one(df, "AUC")["value"].item() == pytest.approx((100 - 4.5 ** 2) / 2, rel=1e-14)
    assert one(df, "Tmax")["value"].item() == 5.5
    assert not grid_is_exact(t, (4.5, 10)) and grid_is_exact(t, (4, 10))


def test_auc_over_a_fixed_interval_after_each_dose():
    t = np.arange(0.0, 31.0)
    ds = make_ds(t, {"C": "pM"}, C=np.interp(t, KNOTS, VALUES))
    df = compute_endpoints(ds, endpoints=[Endpoint("AUC0_3", "auc", "C", per="dose", interval_h=3)], dose_times_h=[0, 10, 20])
    assert df["value"].tolist() == pytest.approx([15.0, 27.0, 27.0], rel=1e-14)


def test_auc_of_an_exponential_within_the_trapezoid_error_bound():
    k, h = 0.1, 1.0
    t = np.arange(0.0, 25.0, h)
    ds = make_ds(t, {"C": "pM"}, C=np.exp(-k * t))
    df = compute_endpoints(ds, endpoints=[Endpoint("AUC", "auc", "C", window_h=(0, 24))])
    exact = (1 - math.exp(-2.4)) / k
    bound = 24 * h ** 2 * k ** 2 / 12  # (b - a) h^2 max|C''| / 12
    err = df["value"].item() - exact
    assert 0 < err <= bound  # convex: the trapezoid overestimates


def test_bateman_cmax_and_tmax_within_the_grid_error():
    ka, ke, dt = 1.0, 0.5, 0.05
    t = np.arange(0.0, 24.0 + dt / 2, dt)
    c = 100 * (np.exp(-ke * t) - np.exp(-ka * t))
    ds = make_ds(t, {"C": "pM"}, C=c)
    df = compute_endpoints(ds, endpoints=[Endpoint("Cmax", "cmax", "C", per="dose"), Endpoint("Tmax", "tmax", "C", per="dose")],
                           dose_times_h=[0.0])
    t_star = math.log(ka / ke) / (ka - ke)
    c_star = 100 * (math.exp(-ke * t_star) - math.exp(-ka * t_star))
    c2 = abs(100 * (ke ** 2 * math.exp(-ke * t_star) - ka ** 2 * math.exp(-ka * t_star)))
    cmax, tmax = one(df, "Cmax")["value"].item(), one(df, "Tmax")["value"].item()
    assert c_star - 0.5 * c2 * (dt / 2) ** 2 * 1.01 <= cmax <= c_star
    assert abs(tmax - t_star) <= dt / 2 + 1e-12


def test_doses_after_progression_are_nan():
    t = np.arange(0.0, 31.0)
    c = np.interp(t, KNOTS, VALUES)
    ds = make_ds(t, {"C": "pM"}, C=np.vstack([c, c]))
    ds["progression_day"] = ("subject", [np.nan, 15 / 24], {"units": "d"})  # subject 1 stopped at 15 h
    df = compute_endpoints(ds, endpoints=[Endpoint("Cmax", "cmax", "C", per="dose"), Endpoint("Ctrough", "ctrough", "C", per="dose")],
                           dose_times_h=[0, 10, 20])
    assert one(df, "Cmax", subject=0)["value"].tolist() == [10.0, 14.0, 12.0]
    c1 = one(df, "Cmax", subject=1)["value"].to_numpy()
    assert c1[:2].tolist() == [10.0, 14.0] and math.isnan(c1[2])  # dose 2's interval runs to the end: max 14
    tr1 = one(df, "Ctrough", subject=1)["value"].to_numpy()
    assert tr1[0] == 4.0 and np.isnan(tr1[1:]).all()  # no next dose after dose 2


# ------------------------------------------------------------------------ per cycle


@pytest.fixture(scope="module")
def regimen():
    return Regimen.from_dict({"target": "Ad", "amount_unit": "MIU", "cycle_days": 2, "max_cycles": 2,
                              "block": [{"days": [1, 1], "clock": ["00:00", "12:00"], "amount": 1.0}]})


def test_dose_table_from_the_regimen(regimen):
    tab = dose_table(regimen, 96.0)
    assert tab["time_h"].tolist() == [0.0, 12.0, 48.0, 60.0]
    assert tab["cycle"].tolist() == [1, 1, 2, 2] and tab["dose"].tolist() == [1, 2, 3, 4]


def test_per_cycle_summaries(regimen):
    t = np.arange(0.0, 97.0)
    knots = [0, 2, 12, 14, 48, 51, 60, 62, 96]
    vals = [0, 8, 3, 9, 1, 12, 4, 7, 0]
    c = np.interp(t, knots, vals)
    ds = make_ds(t, {"C": "pM"}, C=c)
    eps = [Endpoint("Cmax", "cmax", "C", per="cycle"), Endpoint("Tmax", "tmax", "C", per="cycle"),
           Endpoint("AUC", "auc", "C", per="cycle"), Endpoint("Ctrough", "ctrough", "C", per="cycle")]
    df = compute_endpoints(ds, regimen, endpoints=eps)
    assert one(df, "Cmax")["value"].tolist() == [9.0, 12.0]
    assert one(df, "Tmax")["value"].tolist() == [14.0, 3.0]  # h after each cycle start
    auc_by_hand = [np.trapezoid(np.interp(np.arange(0, 49.0), knots, vals), np.arange(0, 49.0)),
                   np.trapezoid(np.interp(np.arange(48, 97.0), knots, vals), np.arange(48, 97.0))]
    # piecewise linear with knots on the grid: the trapezoid is the integral
    assert auc_by_hand[0] == pytest.approx(2 * 8 / 2 + 10 * 11 / 2 + 2 * 12 / 2 + 34 * 10 / 2)
    assert one(df, "AUC")["value"].tolist() == pytest.approx(auc_by_hand, rel=1e-14)
    # cycle 1: pre-dose values C(12) = 3 and C(48) = 1 -> 1; cycle 2: C(60) = 4 (last dose: none)
    assert one(df, "Ctrough")["value"].tolist() == [1.0, 4.0]
    assert one(df, "Cmax")["cycle"].tolist() == [1, 2] and one(df, "Cmax")["dose"].isna().all()


# ------------------------------------------------------------------------ PD


@pytest.fixture(scope="module")
def pd_ds():
    t = np.arange(0.0, 24.0 * 56 + 1, 6.0)
    day = t / 24
    g10 = np.interp(day, [0, 10, 30, 56], [0, 1, 0, 0])     # tent, peak 1 on day 10
    g21 = np.interp(day, [0, 21, 42, 56], [0, 1, 0, 0])     # tent, peak 1 on day 21
    treg = 50 * (1 + 2 * g10)                                 # peak fold 3
    cd4 = 500 * (1 + 0.5 * g10)                               # peak fold 1.5
    return make_ds(
        t, {"Treg": "cells/uL", "CD4": "cells/uL", "Eos": "cells/uL", "NK": "cells/uL"},
        Treg=treg, CD4=cd4, Treg_Tcon=treg / cd4, Eos=150 * (1 + 14 * g21), NK=100 * np.exp(0.05 * day),
        CD4_CD8=0.9 + 0.3 * day / 28,
    )


def test_pd_endpoints_by_hand(pd_ds):
    eps = [
        Endpoint("Treg_peak_fold", "peak_fold", "Treg"), Endpoint("Treg_ttp", "tmax", "Treg", time_unit="d"),
        Endpoint("Treg_fold_d5", "fold_at", "Treg", at_h=120), Endpoint("CD4_fold_d5", "fold_at", "CD4", at_h=120),
        Endpoint("sel_peak", "fold_ratio", "Treg", reference="CD4"),
        Endpoint("sel_d5", "fold_ratio", "Treg", reference="CD4", at_h=120),
        Endpoint("TT_fold_d5", "fold_at", "Treg_Tcon", at_h=120),
        Endpoint("Eos_peak", "peak", "Eos"), Endpoint("Eos_peak_fold", "peak_fold", "Eos"),
        Endpoint("Eos_ttp", "tmax", "Eos", time_unit="d"),
        Endpoint("NK_fold_d10", "fold_at", "NK", at_h=240), Endpoint("NK_fold_d10_5", "fold_at", "NK", at_h=252),
        Endpoint("CD4_CD8_change_d28", "change_at", "CD4_CD8", at_h=672),
        Endpoint("CD4_CD8_fold_d28", "fold_at", "CD4_CD8", at_h=672),
        Endpoint("Eos_trough", "trough", "Eos", window_h=(24 * 21, 24 * 42)),
    ]
    df = compute_endpoints(pd_ds, endpoints=eps).set_index("endpoint")
    v = df["value"]
    assert v["Treg_peak_fold"] == 3.0 and v["Treg_ttp"] == 10.0 and df.loc["Treg_ttp", "unit"] == "d"
    assert v["Treg_fold_d5"] == 2.0 and v["CD4_fold_d5"] == 1.25
    assert v["sel_peak"] == 2.0 and v["sel_d5"] == pytest.approx(1.6, rel=1e-15)
    assert v["TT_fold_d5"] == pytest.approx(v["sel_d5"], rel=1e-14)  # Treg_Tcon fold = Treg fold / CD4 fold
    assert v["Eos_peak"] == 2250.0 and df.loc["Eos_peak", "unit"] == "cells/uL"
    assert v["Eos_peak_fold"] == 15.0 and df.loc["Eos_peak_fold", "unit"] == "1" and v["Eos_ttp"] == 21.0
    assert v["NK_fold_d10"] == pytest.approx(math.exp(0.5), rel=1e-14)
    # off the 6-h grid (day 10.5 = 252 h is on it; 255 h is not): linear interpolation between points
    assert v["NK_fold_d10_5"] == pytest.approx(math.exp(0.525), rel=1e-14)
    assert v["CD4_CD8_change_d28"] == pytest.approx(0.3, rel=1e-14) and v["CD4_CD8_fold_d28"] == pytest.approx(1.2 / 0.9)
    assert v["Eos_trough"] == 150.0


def test_fold_between_grid_points_interpolates_linearly(pd_ds):
    df = compute_endpoints(pd_ds, endpoints=[Endpoint("f", "fold_at", "NK", at_h=255)])
    lin = (math.exp(0.05 * 252 / 24) * 0.5 + math.exp(0.05 * 258 / 24) * 0.5)
    assert df["value"].item() == pytest.approx(lin, rel=1e-14)


# ------------------------------------------------------------------------ tumour


@pytest.fixture(scope="module")
def tumour_ds():
    t = np.arange(0.0, 24.0 * 120 + 1, 24.0)
    ds = make_ds(t, {"M": "g/L"}, M=np.full((2, t.size), 40.0))
    visits = np.array([28.0, 56.0, 84.0, 112.0])
    at = np.array([[30.0, 18.0, 19.0, 20.0],          # changes -25, -55, -52.5, -50: PR, best (confirm 2) -52.5
                   [42.0, 50.0, 60.0, np.nan]])       # 60 > 1.25 x nadir 40 and >= 5 above: PD at day 84
    add_response(ds, np.array([40.0, 40.0]), at, visits, ResponseCriteria())
    ds["progression_day"] = ("subject", [np.nan, 84.0], {"units": "d"})
    ds["days_on_therapy"] = ("subject", [120.0, 84.0], {"units": "d"})
    return ds


def test_tumour_endpoints_by_hand(tumour_ds):
    df = compute_endpoints(tumour_ds)
    best = one(df, "best_M_change")
    assert best["value"].tolist() == pytest.approx([-52.5, 25.0], rel=1e-14) and (best["unit"] == "%").all()
    resp = one(df, "response")
    assert resp["category"].tolist() == ["PR", "PD"] and resp["value"].tolist() == [0.0, 3.0]
    ttp = one(df, "TTP")["value"].to_numpy()
    assert math.isnan(ttp[0]) and ttp[1] == 84.0
    assert one(df, "progression_event")["value"].tolist() == [0.0, 1.0]
    assert one(df, "TTP_censored")["value"].tolist() == [112.0, 84.0]  # censored at the last visit
    assert one(df, "days_on_therapy")["value"].tolist() == [120.0, 84.0]
    assert (one(df, "TTP")["unit"] == "d").all()


def test_best_change_from_the_trajectory_without_visits():
    t = np.arange(0.0, 10.0)
    ds = make_ds(t, {"M": "g/L"}, M=[40, 38, 30, 25, 28, 31, 33, 35, 36, 37])
    df = compute_endpoints(ds, endpoints=[Endpoint("best", "best_change", "M")])
    assert df["value"].item() == pytest.approx(-37.5, rel=1e-14)


# ------------------------------------------------------------------------ API


def test_add_endpoints_adds_variables_with_units(tumour_ds, pd_ds):
    t = np.arange(0.0, 31.0)
    ds = make_ds(t, {"C": "pM"}, C=np.interp(t, KNOTS, VALUES))
    out = add_endpoints(ds, endpoints=[Endpoint("Cmax", "cmax", "C", per="dose"), Endpoint("Cpeak", "peak", "C")], dose_times_h=[0, 10, 20])
    assert out["Cmax_dose"].dims == ("subject", "dose") and out["Cmax_dose"].attrs["units"] == "pM"
    assert out["Cmax_dose"].attrs["description"]
    assert out["dose_time_h"].values.tolist() == [0.0, 10.0, 20.0] and out["dose_time_h"].attrs["units"] == "h"
    assert out["Cpeak"].dims == ("subject",) and float(out["Cpeak"][0]) == 14.0
    assert "Cmax_dose" not in ds  # a copy
    pdo = add_endpoints(pd_ds)
    assert pdo["Eos_peak_fold"].attrs["units"] == "1" and float(pdo["Eos_peak_fold"][0]) == 15.0
    assert pdo["Treg_selectivity"].attrs["units"] == "1"
    tu = add_endpoints(tumour_ds)
    assert tu["response"].values.tolist() == ["PR", "PD"]  # kept as simulate wrote it
    assert tu["TTP_censored"].attrs["units"] == "d" and tu["progression_event"].values.tolist() == [0.0, 1.0]


def test_sweep_dimension_is_kept():
    t = np.arange(0.0, 31.0)
    c = np.interp(t, KNOTS, VALUES)
    C = np.stack([np.vstack([c, c]), np.vstack([2 * c, 3 * c])])  # (scenario, subject, time)
    ds = xr.Dataset({"C": (("scenario", "subject", "time"), C, {"units": "pM"})},
                    coords={"scenario": ["low", "high"], "subject": [0, 1], "time": t})
    eps = [Endpoint("Cmax", "cmax", "C", per="dose"), Endpoint("Cpeak_fold", "peak", "C")]
    df = compute_endpoints(ds, endpoints=eps, dose_times_h=[0, 10, 20])
    assert list(df.columns[:2]) == ["scenario", "subject"]
    assert one(df, "Cmax", scenario="high", subject=1)["value"].tolist() == [30.0, 42.0, 36.0]
    assert one(df, "Cpeak_fold", scenario="low")["value"].tolist() == [14.0, 14.0]
    out = add_endpoints(ds, endpoints=eps, dose_times_h=[0, 10, 20])
    assert out["Cmax_dose"].dims == ("scenario", "subject", "dose")
    assert out["Cmax_dose"].sel(scenario="high", subject=0).values.tolist() == [20.0, 28.0, 24.0]


def test_sweep_with_one_regimen_per_scenario(regimen):
    other = Regimen.from_dict({"target": "Ad", "amount_unit": "MIU", "cycle_days": 2, "max_cycles": 2,
                               "block": [{"days": [1, 1], "clock": ["06:00"], "amount": 1.0}]})
    t = np.arange(0.0, 97.0)
    C = np.broadcast_to(np.interp(t, [0, 6, 9, 54, 57, 96], [0, 0, 5, 0, 5, 0]), (2, 1, t.size))
    ds = xr.Dataset({"C": (("scenario", "subject", "time"), C, {"units": "pM"})},
                    coords={"scenario": [0, 1], "subject": [0], "time": t})
    out = add_endpoints(ds, [regimen, other], endpoints=[Endpoint("Tmax", "tmax", "C", per="dose")])
    assert out["Tmax_dose"].sel(scenario=1).values.ravel().tolist()[:2] == [3.0, 3.0]  # doses at 6 h and 54 h
    assert out["Tmax_dose"].sel(scenario=0).values.ravel()[0] == 9.0  # dose at 0 h, interval to 12 h
    assert out.sizes["dose"] == 4 and np.isnan(out["Tmax_dose"].sel(scenario=1).values.ravel()[2:]).all()
    assert np.isnan(out["dose_time_h"].sel(scenario=1).values[2:]).all()
    df = compute_endpoints(ds, [regimen, other], endpoints=[Endpoint("Tmax", "tmax", "C", per="dose")])
    assert one(df, "Tmax", scenario=1)["time_h"].tolist() == [6.0, 54.0]  # no rows for the padding
    assert one(df, "Tmax", scenario=0)["time_h"].tolist() == [0.0, 12.0, 48.0, 60.0]
    assert one(df, "Tmax", scenario=0)["cycle"].tolist() == [1, 1, 2, 2]


def test_defaults_skip_missing_variables_and_explicit_specs_raise(pk):
    ds, _ = pk
    df = compute_endpoints(ds, dose_times_h=[0, 10, 20])
    assert set(df.endpoint) == {"Cmax", "Tmax", "AUC", "Ctrough"}  # no cycle endpoints without a regimen
    with pytest.raises(ValueError, match="'Eos_peak'.*Eos not in the Dataset"):
        compute_endpoints(ds, endpoints=[Endpoint("Eos_peak", "peak", "Eos")])
    with pytest.raises(ValueError, match="need dose times|no dose times"):
        compute_endpoints(ds, endpoints=[Endpoint("Cmax", "cmax", "C", per="dose")])
    with pytest.raises(ValueError, match="outside the grid"):
        compute_endpoints(ds, endpoints=[Endpoint("x", "fold_at", "C", at_h=1000)])
    assert {e.name for e in DEFAULT} >= {"Cmax", "Eos_peak_fold", "Treg_selectivity", "TTP", "best_M_change"}


def test_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="kind: expected one of"):
        Endpoint("x", "cmin", "C")
    with pytest.raises(ValueError, match="per: kind 'fold_at' allows subject"):
        Endpoint("x", "fold_at", "C", per="dose", at_h=1)
    with pytest.raises(ValueError, match="needs at_h"):
        Endpoint("x", "fold_at", "C")
    with pytest.raises(ValueError, match="needs reference"):
        Endpoint("x", "fold_ratio", "Treg")


def test_shared_grid_statistics():
    t = np.array([0.0, 1.0, 2.0, 4.0])
    y = np.array([[0.0, 2.0, 1.0, 5.0]])
    assert interp_at(t, y, 3.0).tolist() == [3.0]
    tt, yy = clip_window(t, y, (0.5, 3.0))
    assert tt.tolist() == [0.5, 1.0, 2.0, 3.0] and yy.tolist() == [[1.0, 2.0, 1.0, 3.0]]
    assert window_statistic(t, y, "tmax", (0.5, 3.0)).tolist() == [2.5]
    assert window_statistic(t, y, "trough", (0.5, 3.0)).tolist() == [1.0]


# ------------------------------------------------------------------------ integration


def bateman(t, doses, ka, ke, V, F, lag):
    """Closed-form concentration (pM) of the one-compartment oral model under bolus doses (nmol)."""
    c = np.zeros_like(t)
    for td, amt in doses:
        tau = t - (td + lag)
        on = tau >= 0
        c[on] += 1000.0 * F * amt * ka / (V * (ka - ke)) * (np.exp(-ke * tau[on]) - np.exp(-ka * tau[on]))
    return c


def test_cmax_per_dose_matches_the_closed_form_on_a_simulated_cohort():
    sc = load_scenario(CONFIG)
    t_out = np.arange(0.0, 14 * 24 + 1e-9, 0.05)
    ds = il2sim.simulate(sc, subjects=3, t_out=t_out)
    out = add_endpoints(ds, sc, endpoints=[Endpoint("Cmax", "cmax", "C", per="dose"), Endpoint("Tmax", "tmax", "C", per="dose")])
    tab = dose_table(sc.regimen, t_out[-1])
    times = tab["time_h"].to_numpy()
    assert times.tolist()[:7] == [8.0, 20.0, 32.0, 44.0, 57.5, 81.5, 105.5] and len(times) == 14
    fine = np.arange(0.0, 14 * 24 + 1e-9, 0.001)
    for i in range(3):
        sub = ds.isel(subject=i)
        bsa = float(sub.BSA)
        amounts = np.where(np.isin(tab["time_h"].to_numpy() % 168, [8.0, 20.0, 32.0, 44.0]), 2.0, 0.5) * bsa * 3.99
        exact = bateman(fine, list(zip(times, amounts)), float(sub.ka), float(sub.ke), float(sub.V), float(sub.F), float(sub.tlag))
        ends = np.append(times[1:], fine[-1])
        for k, (a, b) in enumerate(zip(times, ends)):
            w = (fine >= a) & (fine <= b)
            c_star, t_star = exact[w].max(), fine[w][np.argmax(exact[w])] - a
            cmax = float(out["Cmax_dose"].isel(subject=i, dose=k))
            assert cmax == pytest.approx(c_star, rel=2e-4), (i, k)
            assert abs(float(out["Tmax_dose"].isel(subject=i, dose=k)) - t_star) <= 0.05, (i, k)
        # Tmax counts from the nominal dose time, so it includes the absorption lag
        assert float(out["Tmax_dose"].isel(subject=i, dose=0)) > float(sub.tlag)


def test_sweep_factor_called_dose_does_not_clash_with_the_dose_dimension():
    t = np.arange(0.0, 31.0)
    c = np.interp(t, KNOTS, VALUES)
    ds = xr.Dataset({"C": (("scenario", "subject", "time"), np.stack([c[None], 2 * c[None]]), {"units": "pM"})},
                    coords={"scenario": [0, 1], "subject": [0], "time": t, "dose": ("scenario", [0.5, 1.0], {"units": "MIU/m2"})})
    eps = [Endpoint("Cmax", "cmax", "C", per="dose")]
    out = add_endpoints(ds, endpoints=eps, dose_times_h=[0, 10, 20])
    assert out["Cmax_dose"].dims == ("scenario", "subject", "dose_index")
    assert out["dose"].values.tolist() == [0.5, 1.0]  # the sweep factor is untouched
    df = compute_endpoints(ds, endpoints=eps, dose_times_h=[0, 10, 20])
    assert one(df, "Cmax", scenario=1)["dose"].tolist() == [1, 2, 3]
    assert one(df, "Cmax", scenario=1)["value"].tolist() == [20.0, 28.0, 24.0]


def test_parse_endpoints_from_tables():
    from il2sim.endpoints import parse_endpoints
    from il2sim.errors import ConfigError

    eps = parse_endpoints([
        {"name": "Eos_peak_fold", "kind": "peak_fold", "variable": "Eos", "window_day": [0, 84]},
        {"name": "Cmax", "kind": "cmax", "variable": "C", "per": "dose"},
        {"name": "Treg_d28", "kind": "fold_at", "variable": "Treg", "at_day": 28},
    ])
    assert eps[0] == Endpoint("Eos_peak_fold", "peak_fold", "Eos", window_h=(0.0, 2016.0))
    assert eps[1].var_name == "Cmax_dose" and eps[2].at_h == 672.0
    with pytest.raises(ConfigError) as exc:
        parse_endpoints([{"name": "x", "kind": "cmin", "variable": "C"}, {"kind": "peak", "variable": "C", "at_hour": 3},
                         {"name": "y", "kind": "peak", "variable": "C", "window_day": [5, 1]}], "cfg.toml")
    msg = str(exc.value)
    assert "cfg.toml: endpoints[0]: Endpoint 'x': kind: expected one of" in msg
    assert "endpoints[1].name: required" in msg and "at_hour" in msg
    assert "endpoints[2].window_day: expected [start, end]" in msg


def test_variable_without_the_sweep_dimension_is_broadcast():
    t = np.arange(0.0, 31.0)
    c = np.interp(t, KNOTS, VALUES)
    ds = xr.Dataset({"C": (("scenario", "subject", "time"), np.stack([c[None], 2 * c[None]]), {"units": "pM"}),
                     "Eos": (("subject", "time"), 150 * (1 + t[None] / 30), {"units": "cells/uL"})},
                    coords={"scenario": ["a", "b"], "subject": [0], "time": t})
    df = compute_endpoints(ds, endpoints=[Endpoint("Eos_peak_fold", "peak_fold", "Eos"), Endpoint("Cpeak", "peak", "C")])
    assert one(df, "Eos_peak_fold")["value"].tolist() == [2.0, 2.0]
    assert one(df, "Cpeak")["value"].tolist() == [14.0, 28.0]
