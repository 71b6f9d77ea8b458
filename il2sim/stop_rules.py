"""Stop rules judged at assessment visits: therapy ends at the first visit that shows progression.

Progression (IMWG 2006, DOMAIN.md §5.2): serum M-protein more than 25 % above its nadir and at
least 5 g/L above it, the nadir being the lowest value at baseline or at an earlier visit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ProgressionRule", "first_progression"]


@dataclass(frozen=True)
class ProgressionRule:
    """Progressive disease on ``output`` (g/L): rise > ``rise_fraction`` and >= ``rise_abs`` over nadir."""

    output: str = "M"
    unit: str = "g/L"
    rise_fraction: float = 0.25
    rise_abs: float = 5.0


def first_progression(baseline: np.ndarray, at_visits: np.ndarray, rule: ProgressionRule) -> np.ndarray:
    """Index of the first visit with progression per subject, or -1.

    Parameters
    ----------
    baseline : (subjects,) value before therapy.
    at_visits : (subjects, visits) value at each assessment visit, in visit order.
    """
    n, k = at_visits.shape
    nadir = np.asarray(baseline, dtype=float).copy()
    first = np.full(n, -1, dtype=np.int64)
    for j in range(k):
        m = at_visits[:, j]
        pd = (m > (1.0 + rule.rise_fraction) * nadir) & (m - nadir >= rule.rise_abs) & (first < 0)
        first[pd] = j
        nadir = np.fmin(nadir, m)
    return first
