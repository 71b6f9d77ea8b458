"""Progression at assessment visits: >25 % and >= 5 g/L above the nadir so far."""

from __future__ import annotations

import numpy as np

from il2sim.stop_rules import ProgressionRule, first_progression

RULE = ProgressionRule()


def test_first_progression_by_hand():
    baseline = np.array([40.0, 40.0, 10.0, 40.0, 30.0])
    visits = np.array([
        [44.0, 49.0, 51.0, 60.0],   # 49 <= 1.25*40 = 50 → no; 51 > 50 and +11 → PD at visit 2
        [20.0, 24.0, 26.0, 26.0],   # nadir 20: 26 > 25 and +6 → PD at visit 2
        [10.0, 13.0, 14.9, 20.0],   # >25 % but rise < 5 g/L until 20 (+10) → PD at visit 3
        [30.0, 20.0, 10.0, 5.0],    # responding: never
        [30.0, 37.5, 37.6, 35.0],   # 37.5 is not > 37.5; 37.6 > 37.5 and +7.6 → PD at visit 2
    ])
    np.testing.assert_array_equal(first_progression(baseline, visits, RULE), [2, 2, 3, -1, 2])


def test_no_visits_means_no_progression():
    assert first_progression(np.array([1.0]), np.zeros((1, 0)), RULE).tolist() == [-1]
