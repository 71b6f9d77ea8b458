"""Mechanisms of the calibrated model library, on the seed regimen and without drug.

One typical subject (no variability) on the seed trial's first cycle is simulated once and
shared; all runs use the library composition, so the compiled model is reused.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import numpy as np
import pytest

from il2sim.scenario import scenario_from_dict
from il2sim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "configs" / "mm_low_dose_1995.toml"


def _trial_dict() -> dict:
    with open(TRIAL, "rb") as fh:
        data = tomllib.load(fh)
    for key in ("targets", "calibration"):
        data.pop(key, None)
    data["population"]["subjects"] = 1
    data["population"].pop("iiv", None)
    data["population"]["covariates"] = {
        "height": {"dist": "fixed", "value": 170.0, "unit": "cm"},
        "weight": {"dist": "fixed", "value": 68.6, "unit": "kg"},
    }
    return data


@pytest.fixture(scope="module")
def cycle1():
    """Seed regimen, first 84-day cycle, hourly output, typical subject (BSA 1.80 m2)."""
    data = _trial_dict()
    data["regimen"]["max_cycles"] = 1
    data["regimen"]["stop"] = "none"
    data.pop("response", None)
    data["output"] = {"dt_h": 1.0, "end_day": 84}
    data["solver"] = {"method": "rodas5p", "rtol": 1e-8, "atol": 1e-10}
    sc = scenario_from_dict(data, source=str(TRIAL), base_dir=TRIAL.parent)
    return simulate(sc, throw=True).isel(subject=0)


def _day(ds, d):
    return int(np.searchsorted(ds["time"].values, d * 24.0))


def test_high_affinity_signal_in_treg_is_at_least_10x_the_beta_gamma_signal_in_nk(cycle1):
    ds = cycle1
    maintenance = (ds["time"].values >= 7 * 24) & (ds["time"].values <= 56 * 24)  # 0.9 MIU/m2 only
    s_treg = ds["S_Treg"].values[maintenance]
    s_nkdim = ds["S_NKdim"].values[maintenance]
    dosed = ds["C"].values[maintenance] > 0.1
    assert dosed.sum() > 100
    assert np.all(s_treg[dosed] >= 10.0 * s_nkdim[dosed])
    # at the maintenance peak too (C within a few pM, far below the beta-gamma EC50)
    i = int(np.argmax(ds["C"].values[maintenance]))
    assert s_treg[i] >= 10.0 * s_nkdim[i] > 0


def test_clearance_rises_as_receptor_bearing_cells_expand(cycle1):
    ds = cycle1
    cl, rm = ds["CL_tot"].values, ds["RM_rel"].values
    d1, d56 = _day(ds, 0), _day(ds, 55)  # 00:00 of day 1 and of day 56, before that day's doses
    assert rm[d1] == pytest.approx(1.0)
    assert rm[d56] > 1.5
    assert cl[d56] > 1.3 * cl[d1]


def test_eosinophil_peak_lags_the_cd25_activation_peak_by_days(cycle1):
    ds = cycle1
    t = ds["time"].values / 24.0
    t_cd25 = t[int(np.argmax(ds["CD25_frac"].values))]
    t_eos = t[int(np.argmax(ds["Eos"].values))]
    assert t_eos - t_cd25 >= 3.0
    # the rise starts days after activation, not with the first dose
    assert ds["Eos"].values[_day(ds, 1)] < 1.2 * ds["Eos"].values[0]


def test_without_drug_every_cell_count_stays_at_baseline():
    data = _trial_dict()
    data.pop("regimen")
    data.pop("response", None)
    data["output"] = {"dt_h": 24.0, "end_day": 84}
    data["solver"] = {"method": "rodas5p", "rtol": 1e-10, "atol": 1e-12}
    sc = scenario_from_dict(data, source=str(TRIAL), base_dir=TRIAL.parent)
    ds = simulate(sc, throw=True).isel(subject=0)
    tumour = {"Tum", "M"}  # progressing myeloma grows without drug, by design
    for name in sc.model.state_names:
        if name in tumour:
            continue
        y = ds[name].values
        if y[0] == 0.0:  # drug amounts (nmol) and signals: zero up to solver round-off (atol 1e-12)
            assert np.max(np.abs(y)) < 1e-9, name
        else:  # cells, activation, sIL-2R: relative change
            assert np.max(np.abs(y - y[0])) <= 1e-9 * abs(y[0]), name
    assert np.max(np.abs(ds["C"].values)) < 1e-6  # pM: round-off only
    assert ds["M"].values[-1] > ds["M"].values[0]
