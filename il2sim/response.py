"""Myeloma response classes from serum M-protein judged at assessment visits (pure numpy).

Criteria (DOMAIN.md §5.2; EBMT 1998 / IMWG 2006 as a 1990s trial would have applied them):

====== =========================================================================================
class  rule
====== =========================================================================================
PR     M-protein at least ``pr_fall`` (50 %) below baseline, sustained at ``confirm`` consecutive
       visits before therapy stopped
MR     at least ``mr_fall`` (25 %) below baseline (but not PR), sustained the same way
PD     progression — more than ``pd_rise_fraction`` (25 %) above the nadir and at least
       ``pd_rise_abs`` (5 g/L) above it — at a visit on or before day ``sd_min_days``
SD     otherwise: no PR/MR, and no progression up to ``sd_min_days`` (``inf``: never)
====== =========================================================================================

The nadir is the lowest value at baseline or at an earlier visit (as in
:mod:`il2sim.stop_rules`). Visits after the first progression are not judged: therapy ends
there. ``best_M_change`` is the best (most negative) change from baseline, in %, that held at
``confirm`` consecutive judged visits; with ``confirm = 1`` it is the plain best change at a
visit. A subject with fewer judged visits than ``confirm`` gets the worst change over the
visits it has.

``sd_min_days`` separates "durable stable disease" from early progression. DOMAIN §5.2
recommends "SD lasting at least one 12-week cycle", i.e. ``sd_min_days = 84``: a subject
whose progression was first seen at a visit after day 84 had stable disease for a cycle, so
its best response is SD. With the default ``inf``, any progression is PD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RESPONSE_CLASSES", "ResponseCriteria", "classify", "first_progression_visit"]

#: Response classes, best first.
RESPONSE_CLASSES: tuple[str, ...] = ("PR", "MR", "SD", "PD")


@dataclass(frozen=True)
class ResponseCriteria:
    """Thresholds of the response classes (fractions; ``pd_rise_abs`` in the variable's unit)."""

    pr_fall: float = 0.50
    mr_fall: float = 0.25
    pd_rise_fraction: float = 0.25
    pd_rise_abs: float = 5.0
    confirm: int = 2
    sd_min_days: float = math.inf

    def __post_init__(self) -> None:
        if not 0 < self.mr_fall <= self.pr_fall < 1:
            raise ValueError(f"ResponseCriteria: expected 0 < mr_fall <= pr_fall < 1, got mr_fall={self.mr_fall!r}, pr_fall={self.pr_fall!r}")
        if self.pd_rise_fraction < 0 or self.pd_rise_abs < 0:
            raise ValueError("ResponseCriteria: pd_rise_fraction and pd_rise_abs must be >= 0")
        if not isinstance(self.confirm, int) or self.confirm < 1:
            raise ValueError(f"ResponseCriteria: confirm: expected an integer >= 1, got {self.confirm!r}")
        if not self.sd_min_days >= 0:
            raise ValueError(f"ResponseCriteria: sd_min_days: expected >= 0, got {self.sd_min_days!r}")


def first_progression_visit(baseline: np.ndarray, at_visits: np.ndarray, criteria: ResponseCriteria) -> np.ndarray:
    """Index of the first visit showing progression per subject (-1 if none)."""
    base = np.asarray(baseline, dtype=float)
    m = np.asarray(at_visits, dtype=float)
    nadir = base.copy()
    first = np.full(base.shape[0], -1, dtype=np.int64)
    for j in range(m.shape[1]):
        x = m[:, j]
        pd = (x > (1.0 + criteria.pd_rise_fraction) * nadir) & (x - nadir >= criteria.pd_rise_abs) & (first < 0)
        first[pd] = j
        nadir = np.fmin(nadir, x)
    return first


def classify(
    baseline: np.ndarray,
    at_visits: np.ndarray,
    visit_days: np.ndarray,
    criteria: ResponseCriteria = ResponseCriteria(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best response per subject.

    Parameters
    ----------
    baseline : (subjects,) M-protein before the first dose.
    at_visits : (subjects, visits) M-protein at each assessment visit, in time order. NaN marks
        a visit that did not happen (it and later visits are ignored).
    visit_days : (visits,) time of each visit in days since the start of therapy.
    criteria : thresholds, confirmation and the minimum duration of stable disease.

    Returns
    -------
    classes : (subjects,) array of ``"PR"``, ``"MR"``, ``"SD"`` or ``"PD"``.
    best_change : (subjects,) best sustained change from baseline in % (negative = fall);
        NaN for a subject with no judged visit.
    pd_visit : (subjects,) index of the first progression visit, -1 if none.
    """
    base = np.asarray(baseline, dtype=float)
    m = np.array(at_visits, dtype=float, copy=True)
    days = np.asarray(visit_days, dtype=float)
    if m.ndim != 2 or m.shape[0] != base.shape[0] or m.shape[1] != days.shape[0]:
        raise ValueError(f"classify: expected at_visits of shape ({base.shape[0]}, {days.shape[0]}), got {m.shape}")
    n, k = m.shape
    # A missing visit ends the record: later visits are treated as missing too.
    missing = np.cumsum(np.isnan(m), axis=1) > 0
    m[missing] = np.nan
    pd_visit = first_progression_visit(base, m, criteria)  # NaN visits never show progression
    judged = ~missing & ((pd_visit[:, None] < 0) | (np.arange(k)[None, :] <= pd_visit[:, None]))
    change = np.where(judged, 100.0 * (m - base[:, None]) / base[:, None], np.nan)

    c = criteria.confirm
    best = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        if k >= c:
            # worst change within each run of c consecutive judged visits; NaN if any is unjudged
            windows = np.stack([change[:, j:j + c] for j in range(k - c + 1)], axis=1)  # (n, k-c+1, c)
            sustained = np.max(windows, axis=2)
            sustained[np.isnan(windows).any(axis=2)] = np.nan
            has = ~np.all(np.isnan(sustained), axis=1)
            best[has] = np.nanmin(sustained[has], axis=1)
        n_judged = judged.sum(axis=1)
        short = np.isnan(best) & (n_judged > 0)
        if short.any():
            best[short] = np.nanmax(change[short], axis=1)

    classes = np.full(n, "SD", dtype=object)
    pd_day = np.where(pd_visit >= 0, days[np.clip(pd_visit, 0, max(k - 1, 0))] if k else np.inf, np.inf)
    classes[(pd_visit >= 0) & (pd_day <= criteria.sd_min_days)] = "PD"
    with np.errstate(invalid="ignore"):
        classes[best <= -100.0 * criteria.mr_fall] = "MR"
        classes[best <= -100.0 * criteria.pr_fall] = "PR"
    return classes, best, pd_visit


def add_response(ds, baseline: np.ndarray, at_visits: np.ndarray, visit_days: np.ndarray,
                 criteria: ResponseCriteria = ResponseCriteria(), variable: str = "M") -> None:
    """Add ``response``, ``best_M_change`` and the judged values at visits to a result Dataset.

    Called by :func:`il2sim.simulate` when the regimen stops at progression; ``at_visits`` are
    the values of ``variable`` at the visits (exact, from the solver's step boundaries).
    """
    classes, best, pd_visit = classify(baseline, at_visits, visit_days, criteria)
    unit = ds[variable].attrs.get("units", "") if variable in ds else ""
    ds.coords["visit_day"] = ("visit", np.asarray(visit_days, dtype=float), {"units": "d", "description": "assessment visit, days since the start of therapy"})
    ds[f"{variable}_visit"] = (("subject", "visit"), np.asarray(at_visits, dtype=float),
                               {"units": unit, "description": f"{variable} at each assessment visit (not judged after the first progression)"})
    ds["response"] = ("subject", classes.astype(str), {
        "description": (f"best response: PR >= {100 * criteria.pr_fall:g} % fall, MR >= {100 * criteria.mr_fall:g} % fall "
                        f"(sustained at {criteria.confirm} consecutive visits), PD = progression (> {100 * criteria.pd_rise_fraction:g} % "
                        f"and >= {criteria.pd_rise_abs:g} {unit} over nadir) by day {criteria.sd_min_days:g}, SD otherwise")})
    ds[f"best_{variable}_change"] = ("subject", best, {"units": "%", "description": f"best sustained change of {variable} from baseline at assessment visits"})
