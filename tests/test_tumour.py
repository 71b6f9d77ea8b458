"""Gompertzian myeloma growth (models/myeloma.toml): without drug the tumour grows at kg at
baseline and slows toward the carrying capacity Tmax, so serum M-protein stays below Tmax * M0
over the trial's 1,100 days and approaches it."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from il2sim.scenario import scenario_from_dict
from il2sim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "configs" / "mm_low_dose_1995.toml"


def _untreated(parameters: dict | None = None, end_day: int = 1100, dt_h: float = 24.0):
    """One typical subject of the seed trial, no drug, no variability."""
    with open(TRIAL, "rb") as fh:
        data = tomllib.load(fh)
    for key in ("targets", "calibration", "regimen", "response"):
        data.pop(key, None)
    data["population"]["subjects"] = 1
    data["population"].pop("iiv", None)
    data["population"]["covariates"] = {
        "height": {"dist": "fixed", "value": 170.0, "unit": "cm"},
        "weight": {"dist": "fixed", "value": 68.6, "unit": "kg"},
    }
    if parameters:
        data["parameters"] = parameters
    data["output"] = {"dt_h": dt_h, "end_day": end_day}
    data["solver"] = {"method": "rodas5p", "rtol": 1e-10, "atol": 1e-12}
    sc = scenario_from_dict(data, source=str(TRIAL), base_dir=TRIAL.parent)
    values = dict(zip(sc.model.parameter_names, sc.model.default_parameters()))
    values.update(parameters or {})
    return simulate(sc, throw=True).isel(subject=0), values


def _gompertz(t_d, kg, tmax):
    """Closed form of dT/dt = kg*T*ln(Tmax/T)/ln(Tmax), T(0) = 1 (t in days)."""
    return np.exp(math.log(tmax) * (1.0 - np.exp(-kg * t_d / math.log(tmax))))


@pytest.fixture(scope="module")
def untreated():
    return _untreated()


def test_without_drug_m_protein_stays_below_and_approaches_the_gompertz_plateau(untreated):
    ds, p = untreated
    kg, tmax, m0 = p["kg"], p["Tmax"], p["M0"]
    t_d = ds["time"].values / 24.0
    assert t_d[-1] == pytest.approx(1100.0)
    tum, m = ds["Tum"].values, ds["M"].values
    plateau = tmax * m0
    # the calibrated library is bounded where the exponential model reached ~1e15 g/L
    assert plateau <= 200.0
    assert np.all(np.diff(tum) > 0) and np.all(np.diff(m) > 0)  # progressing disease still grows
    assert np.all(tum < tmax) and np.all(m < plateau)
    # and approaches the plateau: the closed form is within 2 % of Tmax by day 1,100
    assert tum[-1] == pytest.approx(_gompertz(1100.0, kg, tmax), rel=1e-6)
    assert _gompertz(1100.0, kg, tmax) > 0.98 * tmax
    assert m[-1] > 0.95 * plateau
    # the whole path is the Gompertz solution
    np.testing.assert_allclose(tum, _gompertz(t_d, kg, tmax), rtol=1e-6)


def test_growth_rate_at_baseline_is_kg_and_slower_than_exponential_later(untreated):
    ds, p = untreated
    kg, tmax = p["kg"], p["Tmax"]
    t_d = ds["time"].values / 24.0
    tum = ds["Tum"].values
    # early on the tumour grows like exp(kg*t): d ln(Tum)/dt at t = 0 is kg
    # (ln Tum = kg*t*(1 - kg*t/(2 ln Tmax) + ...); at 1 d the difference is < 0.5 %)
    rate_day1 = math.log(tum[1]) / t_d[1]
    assert rate_day1 == pytest.approx(kg, rel=kg / (2 * math.log(tmax)) * 1.1)
    assert tum[1] == pytest.approx(math.exp(kg * t_d[1]), rel=1e-4)
    # then slower: far below exponential growth at 1 year
    i365 = int(np.searchsorted(t_d, 365.0))
    assert tum[i365] < 0.9 * math.exp(kg * t_d[i365])


def test_gompertz_normalisation_holds_for_other_parameters():
    """kg and Tmax enter as documented: d ln(Tum)/dt = kg at Tum = 1 for any Tmax."""
    for kg, tmax in ((0.002, 2.0), (0.02, 10.0)):
        ds, _ = _untreated({"kg": kg, "Tmax": tmax}, end_day=400, dt_h=24.0)
        t_d = ds["time"].values / 24.0
        tum = ds["Tum"].values
        np.testing.assert_allclose(tum, _gompertz(t_d, kg, tmax), rtol=1e-6)
        assert math.log(tum[1]) / t_d[1] == pytest.approx(kg, rel=0.01)
        assert np.all(tum < tmax)


def test_kg_zero_gives_a_stable_tumour():
    ds, _ = _untreated({"kg": 0.0}, end_day=200)
    np.testing.assert_allclose(ds["Tum"].values, 1.0, rtol=1e-9)
    np.testing.assert_allclose(ds["M"].values / ds["M"].values[0], 1.0, rtol=1e-9)
