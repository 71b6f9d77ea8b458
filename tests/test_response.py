"""Response classes on hand-built M-protein trajectories (il2sim.response)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from il2sim.response import RESPONSE_CLASSES, ResponseCriteria, add_response, classify, first_progression_visit
from il2sim.stop_rules import ProgressionRule, first_progression

# 4-weekly visits within 12-week cycles: 00:00 of days 28, 56, 84, then 112, ... (t in days = day - 1)
DAYS = np.array([27.0, 55.0, 83.0, 111.0, 139.0, 167.0])


def one(baseline, visits, criteria=ResponseCriteria(), days=None):
    visits = np.asarray(visits, dtype=float)[None, :]
    days = DAYS[: visits.shape[1]] if days is None else np.asarray(days, float)
    cls, best, pd = classify(np.array([baseline], float), visits, days, criteria)
    return cls[0], best[0], pd[0]


def test_confirmed_partial_response_and_its_best_sustained_change():
    cls, best, pd = one(40.0, [30.0, 18.0, 15.0, 16.0])
    assert cls == "PR"
    # windows of two visits: worst changes -25, -55, -60 -> best sustained -60 %
    assert best == pytest.approx(-60.0)
    assert pd == -1


def test_a_single_dip_below_half_is_not_confirmed():
    cls, best, _ = one(40.0, [38.0, 19.0])
    assert cls == "SD"
    assert best == pytest.approx(-5.0)
    cls1, best1, _ = one(40.0, [38.0, 19.0], ResponseCriteria(confirm=1))
    assert (cls1, best1) == ("PR", pytest.approx(-52.5))


def test_minor_response_between_25_and_49_percent():
    cls, best, _ = one(40.0, [28.0, 29.0, 30.0])
    assert cls == "MR"
    assert best == pytest.approx(-27.5)


def test_early_progression_is_pd_and_the_waterfall_shows_the_rise():
    cls, best, pd = one(40.0, [52.0, 80.0])
    assert (cls, pd) == ("PD", 0)
    assert best == pytest.approx(30.0)  # only the progression visit is judged


def test_progression_needs_both_25_percent_and_5_g_per_l():
    assert one(10.0, [13.0, 14.0])[0] == "SD"  # +40 % but only +4 g/L
    assert one(40.0, [49.0])[0] == "SD"  # +9 g/L but only +22.5 %
    assert one(40.0, [50.5])[0] == "PD"


def test_progression_is_judged_from_the_nadir_and_a_prior_response_stays_best():
    cls, best, pd = one(40.0, [30.0, 30.0, 38.0, 60.0])
    assert pd == 2  # 38 > 1.25 * 30 and +8 g/L over the nadir
    assert cls == "MR"
    assert best == pytest.approx(-25.0)


def test_visits_after_progression_are_not_judged():
    cls, best, pd = one(40.0, [52.0, 10.0, 10.0])
    assert (cls, pd) == ("PD", 0)
    assert best == pytest.approx(30.0)


def test_durable_stable_disease_needs_no_progression_for_sd_min_days():
    visits = [41.0, 42.0, 43.0, 60.0]  # PD first seen on day 111 (cycle 2, day 28)
    assert one(40.0, visits, ResponseCriteria(sd_min_days=84))[0] == "SD"
    assert one(40.0, visits)[0] == "PD"  # default: any progression is PD
    early = [41.0, 60.0]  # PD on day 55
    assert one(40.0, early, ResponseCriteria(sd_min_days=84))[0] == "PD"


def test_missing_visits_end_the_record():
    cls, best, pd = one(40.0, [30.0, 19.0, math.nan, 5.0])
    assert cls == "MR"
    assert best == pytest.approx(-25.0)
    assert pd == -1


def test_cohort_arrays_and_classes():
    base = np.array([40.0, 40.0, 20.0])
    visits = np.array([[15.0, 12.0, 11.0], [41.0, 42.0, 41.0], [30.0, 35.0, 40.0]])
    cls, best, pd = classify(base, visits, DAYS[:3])
    assert list(cls) == ["PR", "SD", "PD"]
    assert set(cls) <= set(RESPONSE_CLASSES)
    assert list(pd) == [-1, -1, 0]


def test_progression_agrees_with_the_stop_rule_of_simulate():
    rng = np.random.default_rng(5)
    base = rng.uniform(10, 60, 200)
    visits = base[:, None] * np.exp(np.cumsum(rng.normal(0, 0.2, (200, 8)), axis=1))
    rule = ProgressionRule()
    expected = first_progression(base, visits, rule)
    got = first_progression_visit(base, visits, ResponseCriteria(pd_rise_fraction=rule.rise_fraction, pd_rise_abs=rule.rise_abs))
    assert np.array_equal(expected, got)
    assert np.any(expected >= 0) and np.any(expected < 0)


def test_add_response_writes_classes_and_visits_into_a_dataset():
    ds = xr.Dataset({"M": (("subject", "time"), np.zeros((2, 3)), {"units": "g/L"})},
                    coords={"subject": [0, 1], "time": [0.0, 1.0, 2.0]})
    add_response(ds, np.array([40.0, 40.0]), np.array([[15.0, 12.0], [60.0, 70.0]]), np.array([27.0, 55.0]))
    assert list(ds["response"].values) == ["PR", "PD"]
    assert ds["best_M_change"].attrs["units"] == "%"
    assert ds["M_visit"].dims == ("subject", "visit")
    assert list(ds["visit_day"].values) == [27.0, 55.0]


@pytest.mark.parametrize("kw, match", [
    ({"pr_fall": 0.2}, "mr_fall <= pr_fall"),
    ({"confirm": 0}, "confirm: expected an integer >= 1"),
    ({"sd_min_days": -1.0}, "sd_min_days: expected >= 0"),
])
def test_criteria_reject_inconsistent_thresholds(kw, match):
    with pytest.raises(ValueError, match=match):
        ResponseCriteria(**kw)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"expected at_visits of shape \(2, 3\)"):
        classify(np.ones(2), np.ones((2, 2)), np.arange(3.0))
