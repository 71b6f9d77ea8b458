"""Endpoints of a simulated cohort: PK per dose and per cycle, PD fold changes, tumour outcome.

Two views of the same numbers:

* :func:`compute_endpoints` → a tidy :class:`pandas.DataFrame`, one row per subject × endpoint
  (× dose or cycle), with columns ``[scenario,] subject, endpoint, variable, value, unit, dose,
  cycle, time_h, category``;
* :func:`add_endpoints` → the results Dataset with one variable per endpoint, e.g.
  ``Cmax_dose`` (subject, dose), ``Cmax_cycle`` (subject, cycle), ``Eos_peak_fold`` (subject),
  each with ``units`` and ``description`` attrs. (In a sweep whose factor is called ``dose``,
  that name is a coordinate on ``scenario``; the dose dimension is then ``dose_index``.)

Both take a list of :class:`Endpoint` specs (default :data:`DEFAULT`) and work on any Dataset
whose variables have ``time`` as the last dimension: a cohort (subject, time) or a sweep
(scenario, subject, time); every leading dimension is kept.

Conventions (all times in h unless a spec says ``time_unit = "d"``)
---------------------------------------------------------------------
* **Output grid.** Every statistic is computed on the Dataset's output grid. A window
  ``[a, b]`` whose ends fall between grid points is closed with linearly interpolated values at
  ``a`` and ``b``; maxima, minima and their times are those of the grid points (plus the two
  ends); AUC is the trapezoid rule over the same points (error ≤ (b − a)·Δt²·max|y''|/12). Use a
  finer ``output.dt_h`` for a more exact Cmax/Tmax/AUC; :func:`grid_is_exact` says whether a
  window's ends lie on the grid.
* **Dose times** are the *nominal* times of the regimen (``Regimen.schedule`` ``time_h``, what a
  clinic records), not shifted by the absorption lag: the lag delays absorption, so Tmax after a
  dose includes it. Dose ``k`` (1-based, in time order over the whole schedule) owns the interval
  ``[t_k, t_(k+1)]`` up to the next dose the subject received (the end of the grid after its last
  dose). With ``stop = "progression"``, doses after a subject's ``progression_day`` were not
  given: their per-dose values are NaN.
* **Ctrough** of dose ``k`` is the value just before the next dose, at ``t_(k+1)``
  (interpolated on the grid). An output at a dose time shows the post-dose state; for s.c.
  dosing into a depot the concentration is continuous there, so this is the pre-dose value.
  For a bolus into the compartment that the variable reads, use ``pre_dose = "before"``: the
  last output time strictly before the dose. The last dose has no next dose: NaN.
* **Folds** are relative to the value at t = 0 (before the first dose).
* **Cycle** ``c`` (1-based) is ``[(c−1)·cycle_days·24, c·cycle_days·24]`` h, cut at the end of
  the grid; a cycle in which a subject received no dose gives NaN.
* **Tumour.** ``best_M_change`` and ``response`` are those of :mod:`il2sim.response` (judged
  at assessment visits) when the Dataset has them; ``TTP`` is ``progression_day`` (NaN when no
  progression was seen), ``progression_event`` 1/0, and ``TTP_censored`` the time to
  progression or, without an event, to the last assessment visit on the grid (days; the pair
  ``TTP_censored``/``progression_event`` is what a Kaplan–Meier estimate needs).

* **Failed subjects** (``status`` other than ``ok``) are not dropped: their values come from
  the trajectory as far as it goes (NaN after a failure). Filter on ``ds.status`` first when a
  summary must count only completed patients, as :mod:`il2sim.targets` does.

Endpoint kinds (:data:`KINDS`)
------------------------------
====================== ======= ===================================================================
kind                   per     value
====================== ======= ===================================================================
``cmax``               dose,   maximum over the dose interval / cycle / window
                       cycle,
                       subject
``tmax``               same    time of that maximum after the dose / cycle start / window start
``auc``                same    trapezoid AUC over the interval (unit·h); per dose over
                               ``[t_k, t_k + interval_h]`` when ``interval_h`` is given
``ctrough``            dose,   value just before the next dose (per cycle: lowest pre-dose value)
                       cycle
``value_at``           subject value at ``at_h``
``fold_at``            subject value at ``at_h`` / value at t = 0
``change_at``          subject value at ``at_h`` − value at t = 0 (variable's unit)
``peak``               subject maximum over the window (default: the whole grid)
``peak_fold``          subject maximum over the window / value at t = 0
``trough``             subject minimum over the window
``fold_ratio``         subject selectivity: fold of ``variable`` / fold of ``reference`` (at
                               ``at_h``, or of their peak folds over the window)
``best_change``        subject best sustained change of M from baseline, % (response module)
``response``           subject response class; value = index in RESPONSE_CLASSES (0 = PR)
``ttp``                subject days to progression, NaN without progression
``progression_event``  subject 1 if progression was seen, else 0
``ttp_censored``       subject days to progression, or to the last assessment visit if none
``days_on_therapy``    subject days from the start of therapy to its end
====================== ======= ===================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "KINDS", "Endpoint", "DEFAULT", "parse_endpoints", "compute_endpoints", "add_endpoints", "dose_table",
    "interp_at", "clip_window", "window_statistic", "biexponential_half_lives", "grid_is_exact",
]

#: kind -> (allowed ``per`` values, description)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "cmax": (("dose", "cycle", "subject"), "maximum"),
    "tmax": (("dose", "cycle", "subject"), "time of the maximum"),
    "auc": (("dose", "cycle", "subject"), "area under the curve (trapezoid on the output grid)"),
    "ctrough": (("dose", "cycle"), "value just before the next dose"),
    "value_at": (("subject",), "value at a time"),
    "fold_at": (("subject",), "value at a time / value at t = 0"),
    "change_at": (("subject",), "value at a time - value at t = 0"),
    "peak": (("subject",), "maximum over the window"),
    "peak_fold": (("subject",), "maximum over the window / value at t = 0"),
    "trough": (("subject",), "minimum over the window"),
    "fold_ratio": (("subject",), "fold of variable / fold of reference"),
    "best_change": (("subject",), "best sustained change from baseline at assessment visits"),
    "response": (("subject",), "best response class"),
    "ttp": (("subject",), "time to progression"),
    "progression_event": (("subject",), "progression seen (1) or not (0)"),
    "ttp_censored": (("subject",), "time to progression or to the last assessment visit"),
    "days_on_therapy": (("subject",), "days on therapy"),
}
_TIME_UNITS = {"h": 1.0, "d": 24.0, "min": 1.0 / 60.0}
_TUMOUR = ("best_change", "response", "ttp", "progression_event", "ttp_censored", "days_on_therapy")


@dataclass(frozen=True)
class Endpoint:
    """One endpoint to compute.

    Parameters
    ----------
    name : endpoint name in the table; the Dataset variable is ``name`` (per subject) or
        ``name + "_dose"`` / ``name + "_cycle"``.
    kind : one of :data:`KINDS`.
    variable : the state or output it reads (tumour kinds: the judged variable, ``M``).
    per : ``"subject"``, ``"dose"`` or ``"cycle"``.
    at_h : time for ``*_at`` kinds and ``fold_ratio`` (h since t = 0).
    window_h : ``(start, end)`` in h for per-subject window statistics (default: whole grid).
    interval_h : per-dose AUC over ``[t_k, t_k + interval_h]`` instead of up to the next dose.
    reference : the denominator variable of ``fold_ratio``.
    time_unit : unit of a reported time (``tmax``): ``h``, ``d`` or ``min``.
    pre_dose : ``"at"`` (value at the next dose time) or ``"before"`` (last output time before
        it), for ``ctrough``.
    description : free text for the Dataset attrs (default: built from the spec).
    """

    name: str
    kind: str
    variable: str
    per: str = "subject"
    at_h: float | None = None
    window_h: tuple[float, float] | None = None
    interval_h: float | None = None
    reference: str | None = None
    time_unit: str = "h"
    pre_dose: str = "at"
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Endpoint {self.name!r}: kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        allowed = KINDS[self.kind][0]
        if self.per not in allowed:
            raise ValueError(f"Endpoint {self.name!r}: per: kind {self.kind!r} allows {', '.join(allowed)}, got {self.per!r}")
        if self.time_unit not in _TIME_UNITS:
            raise ValueError(f"Endpoint {self.name!r}: time_unit: expected one of {', '.join(_TIME_UNITS)}, got {self.time_unit!r}")
        if self.pre_dose not in ("at", "before"):
            raise ValueError(f"Endpoint {self.name!r}: pre_dose: expected 'at' or 'before', got {self.pre_dose!r}")
        if self.kind in ("value_at", "fold_at", "change_at") and self.at_h is None:
            raise ValueError(f"Endpoint {self.name!r}: kind {self.kind!r} needs at_h")
        if self.kind == "fold_ratio" and not self.reference:
            raise ValueError(f"Endpoint {self.name!r}: kind 'fold_ratio' needs reference (the denominator variable)")
        if self.window_h is not None and not (self.window_h[0] < self.window_h[1]):
            raise ValueError(f"Endpoint {self.name!r}: window_h: expected start < end, got {self.window_h!r}")
        if self.interval_h is not None and not self.interval_h > 0:
            raise ValueError(f"Endpoint {self.name!r}: interval_h: expected > 0, got {self.interval_h!r}")

    @property
    def var_name(self) -> str:
        """Name of the Dataset variable that :func:`add_endpoints` writes."""
        return self.name if self.per == "subject" else f"{self.name}_{self.per}"

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.variable,) + ((self.reference,) if self.reference else ())


def _day(d: float) -> float:
    return 24.0 * d


#: The default endpoints. Those whose variables are missing, or whose time is off the grid,
#: are skipped silently (an explicit list raises instead).
DEFAULT: tuple[Endpoint, ...] = (
    # PK, serum IL-2
    Endpoint("Cmax", "cmax", "C", per="dose"),
    Endpoint("Tmax", "tmax", "C", per="dose"),
    Endpoint("AUC", "auc", "C", per="dose"),
    Endpoint("Ctrough", "ctrough", "C", per="dose"),
    Endpoint("Cmax", "cmax", "C", per="cycle"),
    Endpoint("AUC", "auc", "C", per="cycle"),
    Endpoint("Ctrough", "ctrough", "C", per="cycle"),
    # PD
    *(Endpoint(f"{v}_peak_fold", "peak_fold", v) for v in ("Treg", "CD4", "CD8", "NK", "Eos", "sIL2R", "Treg_Tcon")),
    *(Endpoint(f"{v}_time_to_peak", "tmax", v, time_unit="d") for v in ("Treg", "NK", "Eos", "sIL2R")),
    Endpoint("Eos_peak", "peak", "Eos"),
    *(Endpoint(f"{v}_fold_day{d}", "fold_at", v, at_h=_day(d)) for d in (28, 56) for v in ("Treg", "CD4", "NK", "Eos")),
    Endpoint("Treg_selectivity", "fold_ratio", "Treg", reference="CD4",
             description="Treg : conventional CD4 selectivity, peak Treg fold / peak CD4 fold"),
    *(Endpoint(f"CD4_CD8_change_day{d}", "change_at", "CD4_CD8", at_h=_day(d)) for d in (28, 56)),
    # tumour
    Endpoint("best_M_change", "best_change", "M"),
    Endpoint("response", "response", "M"),
    Endpoint("TTP", "ttp", "M"),
    Endpoint("progression_event", "progression_event", "M"),
    Endpoint("TTP_censored", "ttp_censored", "M"),
    Endpoint("days_on_therapy", "days_on_therapy", "M"),
)


_SPEC_KEYS = ("name", "kind", "variable", "per", "at_h", "at_day", "window_h", "window_day", "interval_h",
              "reference", "time_unit", "pre_dose", "description")


def parse_endpoints(items: Any, source: str = "endpoints") -> tuple[Endpoint, ...]:
    """Endpoint specs from a list of tables (e.g. ``[[endpoints]]`` in a TOML file).

    Keys are the fields of :class:`Endpoint`; ``at_day``/``window_day`` may replace
    ``at_h``/``window_h``. Raises :class:`~il2sim.errors.ConfigError` listing every problem::

        [[endpoints]]
        name = "Eos_peak_fold"
        kind = "peak_fold"
        variable = "Eos"
        window_day = [0, 84]
    """
    from il2sim import _validate as v
    from il2sim.errors import ConfigError

    if not isinstance(items, list):
        raise ConfigError(f"{source}: expected an array of tables ([[endpoints]]), got {v.describe(items)}")
    out, problems, seen = [], [], set()
    for i, d in enumerate(items):
        f = f"endpoints[{i}]"
        if (msg := v.check_table(d, source, f)) is not None:
            problems.append(msg)
            continue
        p0 = len(problems)
        problems += v.unknown_keys(d, _SPEC_KEYS, source, f)
        for key in ("name", "kind", "variable"):
            if not isinstance(d.get(key), str) or not d.get(key):
                problems.append(f"{source}: {f}.{key}: required, a non-empty string; got {v.describe(d.get(key))}")
        kw = {k: d[k] for k in ("name", "kind", "variable", "per", "interval_h", "reference", "time_unit", "pre_dose",
                                "description") if k in d}
        for h_key, d_key in (("at_h", "at_day"), ("window_h", "window_day")):
            if h_key in d and d_key in d:
                problems.append(f"{source}: {f}: give {h_key} or {d_key}, not both")
            for key, mult in ((h_key, 1.0), (d_key, 24.0)):
                if key not in d:
                    continue
                x = d[key]
                if h_key == "at_h":
                    if (msg := v.check_number(x, source, f"{f}.{key}", lower=0)) is not None:
                        problems.append(msg)
                    else:
                        kw["at_h"] = float(x) * mult
                elif (isinstance(x, list) and len(x) == 2 and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in x)
                      and 0 <= x[0] < x[1]):
                    kw["window_h"] = (float(x[0]) * mult, float(x[1]) * mult)
                else:
                    problems.append(f"{source}: {f}.{key}: expected [start, end] with 0 <= start < end, got {v.describe(x)}")
        if len(problems) > p0:
            continue
        try:
            ep = Endpoint(**kw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{source}: {f}: {exc}")
            continue
        if ep.var_name in seen:
            problems.append(f"{source}: {f}.name: {ep.var_name!r} is used by an earlier endpoint")
        seen.add(ep.var_name)
        out.append(ep)
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(out)


# ------------------------------------------------------------------- statistics on a grid
# (rows × time) arrays; shared with il2sim.targets (calibration targets).


def interp_at(t: np.ndarray, y: np.ndarray, at: float) -> np.ndarray:
    """Rows of ``y`` (rows × time) at time ``at``: the grid value, or linear interpolation."""
    j = int(np.searchsorted(t, at))
    if j < t.size and t[j] == at:
        return y[:, j]
    if j == 0 or j >= t.size:
        raise ValueError(f"time {at:g} h is outside the simulated grid {t[0]:g}–{t[-1]:g} h")
    w = (at - t[j - 1]) / (t[j] - t[j - 1])
    return (1 - w) * y[:, j - 1] + w * y[:, j]


def clip_window(t: np.ndarray, y: np.ndarray, window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The grid points inside ``window`` with interpolated values at both ends."""
    a, b = window
    if a < t[0] - 1e-9 or b > t[-1] + 1e-9:
        raise ValueError(f"window {a:g}–{b:g} h is outside the simulated grid {t[0]:g}–{t[-1]:g} h")
    a, b = max(a, float(t[0])), min(b, float(t[-1]))
    inner = (t > a) & (t < b)
    tt = np.concatenate([[a], t[inner], [b]])
    yy = np.concatenate([interp_at(t, y, a)[:, None], y[:, inner], interp_at(t, y, b)[:, None]], axis=1)
    return tt, yy


def grid_is_exact(t: np.ndarray, window: tuple[float, float]) -> bool:
    """Whether both ends of ``window`` are output times (no interpolation at the ends)."""
    t = np.asarray(t, float)
    return bool(np.isin(np.asarray(window, float), t).all())


def window_statistic(t: np.ndarray, y: np.ndarray, stat: str, window: tuple[float, float]) -> np.ndarray:
    """``peak``, ``trough``, ``tmax`` (h from the window start) or ``auc`` of each row over a window.

    Rows that are NaN throughout give NaN.
    """
    tt, yy = clip_window(t, y, window)
    if stat == "auc":
        return np.trapezoid(yy, tt, axis=1)
    bad = np.isnan(yy).all(axis=1)
    filled = np.where(np.isnan(yy), -np.inf if stat != "trough" else np.inf, yy)
    if stat == "peak":
        out = filled.max(axis=1)
    elif stat == "trough":
        out = filled.min(axis=1)
    elif stat == "tmax":
        out = tt[np.argmax(filled, axis=1)] - tt[0]
    else:
        raise ValueError(f"window_statistic: unknown statistic {stat!r}")
    return np.where(bad, np.nan, out)


def biexponential_half_lives(t: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Half-lives (same unit as ``t``) of ``A e^(-a t) + B e^(-b t)`` fitted to ``c`` > 0.

    Curve peeling gives the start (terminal slope from the last 40 % of points, initial slope
    from the early residuals); a least-squares fit of log c refines it, as NCA software does.
    """
    from scipy.optimize import least_squares

    t = np.asarray(t, float) - float(t[0])
    c = np.asarray(c, float)
    ok = c > 0
    t, c = t[ok], c[ok]
    if t.size < 5:
        return math.nan, math.nan
    late = t >= t[0] + 0.6 * (t[-1] - t[0])
    sb, ib = np.polyfit(t[late], np.log(c[late]), 1)
    b0 = max(-sb, 1e-6)
    resid = c - np.exp(ib) * np.exp(-b0 * t)
    early = (t <= t[0] + 0.25 * (t[-1] - t[0])) & (resid > 0)
    if early.sum() >= 2:
        sa, ia = np.polyfit(t[early], np.log(resid[early]), 1)
        a0, A0 = max(-sa, 2 * b0), math.exp(ia)
    else:
        a0, A0 = 5 * b0, c[0] / 2
    x0 = np.log([max(A0, 1e-12), a0 - b0, max(math.exp(ib), 1e-12), b0])

    def f(x):  # a = b + exp(x1) keeps a > b
        A, da, B, b = np.exp(x)
        return np.log(A * np.exp(-(b + da) * t) + B * np.exp(-b * t)) - np.log(c)

    sol = least_squares(f, x0, method="lm", x_scale="jac")
    A, da, B, b = np.exp(sol.x)
    return math.log(2) / (b + da), math.log(2) / b


# ------------------------------------------------------------------------------ dose times


def _as_regimen(obj: Any):
    """A Regimen from a Scenario, a Regimen or a config path (None stays None)."""
    if obj is None:
        return None
    from il2sim.regimen import Regimen

    if isinstance(obj, Regimen):
        return obj
    if isinstance(obj, (str, Path)):
        from il2sim.scenario import load_scenario

        obj = load_scenario(obj)
    if getattr(obj, "events", None) is not None:
        raise ValueError("endpoints: the scenario doses from NONMEM records; pass dose_times_h= (h) for per-dose endpoints")
    return getattr(obj, "regimen", None)


def dose_table(regimen, t_end: float) -> pd.DataFrame:
    """Nominal dose times (h) and cycles of ``regimen`` up to ``t_end``, as ``simulate`` doses.

    Columns ``dose`` (1-based), ``time_h``, ``cycle``. Simultaneous doses (two targets at one
    time) count as one dose time.
    """
    cycle_h = regimen.cycle_days * 24.0
    n_cycles = min(regimen.max_cycles, max(1, math.ceil(t_end / cycle_h)))
    s = regimen.schedule(n_cycles)
    s = s[s["time_h"] <= t_end].drop_duplicates("time_h")
    return pd.DataFrame({"dose": np.arange(1, len(s) + 1), "time_h": s["time_h"].to_numpy(float),
                         "cycle": s["cycle"].to_numpy(int)})


@dataclass
class _Doses:
    times: np.ndarray         # (D,)
    cycles: np.ndarray        # (D,) 1-based, or zeros when unknown
    cycle_h: float | None     # cycle length, None when unknown


def _doses_for(regimen, dose_times_h, t_end: float) -> _Doses | None:
    if dose_times_h is not None:
        times = np.sort(np.unique(np.asarray(dose_times_h, float)))
        times = times[times <= t_end]
        if regimen is not None:
            ch = regimen.cycle_days * 24.0
            return _Doses(times, (times // ch).astype(int) + 1, ch)
        return _Doses(times, np.zeros(times.size, int), None)
    if regimen is None:
        return None
    tab = dose_table(regimen, t_end)
    return _Doses(tab["time_h"].to_numpy(), tab["cycle"].to_numpy(), regimen.cycle_days * 24.0)


# ---------------------------------------------------------------------------- evaluation


def _rows(ds: xr.Dataset, name: str, lead: list[str]) -> np.ndarray:
    """Variable ``name`` as (rows × time), rows in the order of the leading dims ``lead``."""
    da = ds[name]
    if "time" not in da.dims:
        raise ValueError(f"endpoints: variable {name!r} has no time dimension (dims {da.dims})")
    extra = [d for d in da.dims if d not in lead and d != "time"]
    if extra:
        raise ValueError(f"endpoints: variable {name!r} has dims {extra} that the other variables lack")
    missing = {d: ds.sizes[d] for d in lead if d not in da.dims}
    if missing:  # constant along a leading dim (e.g. a variable that a sweep does not change)
        da = da.expand_dims(missing)
    da = da.transpose(*lead, "time")
    return np.asarray(da.values, float).reshape(-1, da.shape[-1])


def _lead_of(ds: xr.Dataset) -> list[str]:
    for v in ds.data_vars:
        if "time" in ds[v].dims:
            return list(ds[v].transpose(..., "time").dims[:-1])
    return ["subject"]


def _stop_h(ds: xr.Dataset, lead: list[str]) -> np.ndarray | None:
    """Per-row end of therapy (h) from ``progression_day`` (inf where none), or None."""
    if "progression_day" not in ds:
        return None
    p = ds["progression_day"].broadcast_like(xr.DataArray(np.zeros([ds.sizes[d] for d in lead]), dims=lead, coords={d: ds[d] for d in lead if d in ds.coords}))
    p = np.asarray(p.transpose(*lead).values, float).ravel() * 24.0
    return np.where(np.isnan(p), np.inf, p)


def _per_dose(ep: Endpoint, t: np.ndarray, y: np.ndarray, doses: _Doses, stop: np.ndarray | None) -> np.ndarray:
    """(rows × doses) values of a per-dose endpoint."""
    n, D = y.shape[0], doses.times.size
    out = np.full((n, D), np.nan)
    given = np.ones((n, D), bool) if stop is None else doses.times[None, :] <= stop[:, None]
    t_end = float(t[-1])
    for k in range(D):
        tk = doses.times[k]
        rows_k = given[:, k]
        if not rows_k.any():
            continue
        nxt = doses.times[k + 1] if k + 1 < D else math.nan
        # rows that got the next dose end the interval there; the others at the end of the grid
        has_next = rows_k & (given[:, k + 1] if k + 1 < D else np.zeros(n, bool))
        for sel, end in ((has_next, nxt), (rows_k & ~has_next, t_end)):
            if not sel.any():
                continue
            if ep.kind == "ctrough":
                if sel is not has_next:
                    continue  # no next dose: no trough
                if ep.pre_dose == "at":
                    out[sel, k] = interp_at(t, y[sel], end)
                else:
                    j = int(np.searchsorted(t, end)) - 1  # last output time strictly before the dose
                    out[sel, k] = y[sel, j] if j >= 0 else np.nan
                continue
            b = tk + ep.interval_h if ep.kind == "auc" and ep.interval_h is not None else end
            b = min(b, t_end)
            if b <= tk:
                continue
            stat = {"cmax": "peak", "tmax": "tmax", "auc": "auc"}[ep.kind]
            v = window_statistic(t, y[sel], stat, (tk, b))
            out[sel, k] = v / _TIME_UNITS[ep.time_unit] if ep.kind == "tmax" else v
    return out


def _per_cycle(ep: Endpoint, t: np.ndarray, y: np.ndarray, doses: _Doses, stop: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows × cycles) values of a per-cycle endpoint, and the cycle numbers."""
    if doses.cycle_h is None:
        raise ValueError(f"endpoint {ep.name!r}: per-cycle endpoints need the regimen (pass scenario=)")
    t_end = float(t[-1])
    n_c = int(max(1, math.ceil(t_end / doses.cycle_h)))
    cycles = np.arange(1, n_c + 1)
    n = y.shape[0]
    given = np.ones((n, doses.times.size), bool) if stop is None else doses.times[None, :] <= stop[:, None]
    out = np.full((n, n_c), np.nan)
    if ep.kind == "ctrough":
        per_dose = _per_dose(replace(ep, per="dose"), t, y, doses, stop)
    for c in cycles:
        in_c = doses.cycles == c
        dosed = (given & in_c[None, :]).any(axis=1)
        if not dosed.any():
            continue
        if ep.kind == "ctrough":
            with np.errstate(all="ignore"):
                vals = per_dose[:, in_c]
                ok = ~np.isnan(vals).all(axis=1) & dosed
                out[ok, c - 1] = np.nanmin(vals[ok], axis=1)
            continue
        a, b = (c - 1) * doses.cycle_h, min(c * doses.cycle_h, t_end)
        if b <= a:
            continue
        stat = {"cmax": "peak", "tmax": "tmax", "auc": "auc"}[ep.kind]
        v = window_statistic(t, y[dosed], stat, (a, b))
        out[dosed, c - 1] = v / _TIME_UNITS[ep.time_unit] if ep.kind == "tmax" else v
    return out, cycles


def _unit(ds: xr.Dataset, name: str) -> str:
    return str(ds[name].attrs.get("units", "")) if name in ds else ""


def _evaluate_one(ds: xr.Dataset, ep: Endpoint, lead: list[str], doses_per: list[_Doses | None] | None,
                  scen_dim: str | None) -> xr.DataArray:
    """One endpoint as a DataArray over the leading dims (+ dose/cycle), with units."""
    t = np.asarray(ds["time"].values, float)
    shape = [ds.sizes[d] for d in lead]
    coords = {d: ds[d] for d in lead if d in ds.coords}
    unit = _unit(ds, ep.variable)
    tu = ep.time_unit
    desc = ep.description

    def wrap(values: np.ndarray, extra: tuple[str, ...] = (), extra_coords: dict | None = None, units: str = "", description: str = "") -> xr.DataArray:
        da = xr.DataArray(values.reshape(shape + list(values.shape[1:])), dims=tuple(lead) + extra,
                          coords={**coords, **(extra_coords or {})})
        da.attrs = {"units": units, "description": desc or description, "variable": ep.variable, "kind": ep.kind}
        return da

    if ep.kind in _TUMOUR:
        return _tumour(ds, ep, lead, shape, coords)

    y = _rows(ds, ep.variable, lead)
    window = ep.window_h or (float(t[0]), float(t[-1]))
    k = ep.kind
    if ep.per == "subject":
        if k in ("value_at", "fold_at", "change_at"):
            x = interp_at(t, y, ep.at_h)
            if k == "value_at":
                return wrap(x, units=unit, description=f"{ep.variable} at {ep.at_h:g} h")
            base = interp_at(t, y, 0.0)
            if k == "fold_at":
                with np.errstate(divide="ignore", invalid="ignore"):
                    return wrap(x / base, units="1", description=f"{ep.variable} at {ep.at_h:g} h / at t = 0")
            return wrap(x - base, units=unit, description=f"{ep.variable} at {ep.at_h:g} h minus at t = 0")
        if k == "fold_ratio":
            yr = _rows(ds, ep.reference, lead)
            with np.errstate(divide="ignore", invalid="ignore"):
                if ep.at_h is not None:
                    num = interp_at(t, y, ep.at_h) / interp_at(t, y, 0.0)
                    den = interp_at(t, yr, ep.at_h) / interp_at(t, yr, 0.0)
                    d = f"({ep.variable} fold) / ({ep.reference} fold) at {ep.at_h:g} h"
                else:
                    num = window_statistic(t, y, "peak", window) / interp_at(t, y, 0.0)
                    den = window_statistic(t, yr, "peak", window) / interp_at(t, yr, 0.0)
                    d = f"peak {ep.variable} fold / peak {ep.reference} fold over {window[0]:g}–{window[1]:g} h"
                return wrap(num / den, units="1", description=d)
        stat = {"cmax": "peak", "peak": "peak", "peak_fold": "peak", "trough": "trough", "tmax": "tmax", "auc": "auc"}[k]
        x = window_statistic(t, y, stat, window)
        w = f"over {window[0]:g}–{window[1]:g} h"
        if k == "peak_fold":
            with np.errstate(divide="ignore", invalid="ignore"):
                return wrap(x / interp_at(t, y, 0.0), units="1", description=f"maximum of {ep.variable} {w} / value at t = 0")
        if k == "tmax":
            return wrap(x / _TIME_UNITS[tu], units=tu, description=f"time of the maximum of {ep.variable} {w}, from the window start")
        if k == "auc":
            return wrap(x, units=f"{unit}*h", description=f"AUC of {ep.variable} {w} (trapezoid on the output grid)")
        return wrap(x, units=unit, description=f"{'maximum' if stat == 'peak' else 'minimum'} of {ep.variable} {w}")

    if doses_per is None:
        raise ValueError(f"endpoint {ep.name!r}: per-{ep.per} endpoints need dose times: pass scenario= (a Scenario, Regimen or config path) or dose_times_h=")
    stop = _stop_h(ds, lead)
    units = {"cmax": unit, "tmax": tu, "auc": f"{unit}*h", "ctrough": unit}[k]
    what = {
        "cmax": f"maximum of {ep.variable}",
        "tmax": "time of the maximum " + ("after the (nominal) dose time" if ep.per == "dose" else "after the cycle start"),
        "auc": f"AUC of {ep.variable} (trapezoid on the output grid) over " + (
            (f"{ep.interval_h:g} h after each dose" if ep.interval_h else "the dose interval") if ep.per == "dose" else "the cycle"),
        "ctrough": f"{ep.variable} just before the next dose" + ("" if ep.per == "dose" else " (lowest in the cycle)"),
    }[k]
    # one dose schedule per scenario of a sweep (or one for all rows)
    groups = _row_groups(lead, shape, scen_dim, len(doses_per))
    if ep.per == "dose":
        D = max(d.times.size for d in doses_per)
        out = np.full((int(np.prod(shape)), D), np.nan)
        dtime = np.full((len(doses_per), D), np.nan)
        dcyc = np.zeros((len(doses_per), D), int)
        for g, rows in enumerate(groups):
            dg = doses_per[g]
            out[rows, :dg.times.size] = _per_dose(ep, t, y[rows], dg, None if stop is None else stop[rows])
            dtime[g, :dg.times.size], dcyc[g, :dg.times.size] = dg.times, dg.cycles
        dd = _index_dim(ds, "dose")
        extra = {dd: np.arange(1, D + 1)}
        one_schedule = len(doses_per) == 1
        cdims = (dd,) if one_schedule else (scen_dim, dd)
        extra["dose_time_h"] = (cdims, dtime[0] if one_schedule else dtime,
                                {"units": "h", "description": "nominal dose time (before the absorption lag)"})
        if dcyc.any():  # unknown without a regimen
            extra["dose_cycle"] = (cdims, dcyc[0] if one_schedule else dcyc, {"description": "regimen cycle of the dose"})
        return wrap(out, (dd,), extra, units=units, description=what + " per dose")
    results = []
    for g, rows in enumerate(groups):
        v, cycles = _per_cycle(ep, t, y[rows], doses_per[g], None if stop is None else stop[rows])
        results.append((rows, v, cycles))
    C = max(r[2].size for r in results)
    out = np.full((int(np.prod(shape)), C), np.nan)
    for rows, v, cycles in results:
        out[rows, :cycles.size] = v
    cd = _index_dim(ds, "cycle")
    return wrap(out, (cd,), {cd: np.arange(1, C + 1)}, units=units, description=what + " per cycle")


def _index_dim(ds: xr.Dataset, name: str) -> str:
    """``dose``/``cycle``, or ``dose_index``/``cycle_index`` when ``ds`` uses the name otherwise
    (a sweep factor called ``dose`` is a coordinate on ``scenario``)."""
    if name not in ds.variables or ds[name].dims == (name,):
        return name
    return f"{name}_index"


def _row_groups(lead: list[str], shape: list[int], scen_dim: str | None, n_sched: int) -> list[np.ndarray]:
    """Flat row indices of each scenario (one group of all rows with one schedule)."""
    n = int(np.prod(shape))
    if n_sched == 1:
        return [np.arange(n)]
    idx = np.arange(n).reshape(shape)
    ax = lead.index(scen_dim)
    return [np.take(idx, g, axis=ax).ravel() for g in range(shape[ax])]


def _tumour(ds: xr.Dataset, ep: Endpoint, lead: list[str], shape: list[int], coords: dict) -> xr.DataArray:
    from il2sim.response import RESPONSE_CLASSES

    var = ep.variable
    k = ep.kind

    def per_subject(name: str) -> np.ndarray:
        if name not in ds:
            raise KeyError(f"endpoint {ep.name!r}: needs {name!r} in the Dataset (simulate with regimen.stop = \"progression\")")
        da = ds[name]
        tmpl = xr.DataArray(np.zeros(shape), dims=lead)
        return np.asarray(da.broadcast_like(tmpl).transpose(*lead).values)

    def wrap(values, units, description, category=None):
        da = xr.DataArray(np.asarray(values).reshape(shape), dims=tuple(lead), coords=coords)
        da.attrs = {"units": units, "description": ep.description or description, "variable": var, "kind": k}
        if category is not None:
            da.attrs["categories"] = ", ".join(RESPONSE_CLASSES)
            da.attrs["category_values"] = np.asarray(category).reshape(shape)
        return da

    if k == "best_change":
        name = f"best_{var}_change"
        if name in ds:
            return wrap(per_subject(name).astype(float), "%", f"best sustained change of {var} from baseline at assessment visits")
        y = _rows(ds, var, lead)
        with np.errstate(divide="ignore", invalid="ignore"):
            return wrap(100.0 * (np.nanmin(y, axis=1) - y[:, 0]) / y[:, 0], "%", f"lowest {var} on the output grid vs t = 0 (unconfirmed; no assessment visits in the Dataset)")
    if k == "response":
        cls = per_subject("response").astype(str)
        code = np.array([RESPONSE_CLASSES.index(c) if c in RESPONSE_CLASSES else np.nan for c in cls.ravel()], float)
        return wrap(code, "class", f"best response, index in {'/'.join(RESPONSE_CLASSES)} (0 = {RESPONSE_CLASSES[0]})", category=cls)
    if k == "days_on_therapy":
        return wrap(per_subject("days_on_therapy").astype(float), "d", "days from the start of therapy to its end")
    p = per_subject("progression_day").astype(float)
    if k == "ttp":
        return wrap(p, "d", "days from t = 0 to the assessment visit at which progression was seen; NaN if none")
    if k == "progression_event":
        return wrap(np.isfinite(p).astype(float), "1", "1 if progression was seen at an assessment visit, else 0 (censored)")
    # ttp_censored: last assessment visit on the grid for those without progression
    t_end_d = float(ds["time"].values[-1]) / 24.0
    if "visit_day" in ds.coords:
        vd = np.asarray(ds["visit_day"].values, float)
        vd = vd[vd <= t_end_d + 1e-9]
        last = vd.max() if vd.size else t_end_d
    else:
        last = t_end_d
    return wrap(np.where(np.isfinite(p), p, last), "d",
                "days to progression, or to the last assessment visit if none (censored; see progression_event)")


def _missing(ds: xr.Dataset, e: Endpoint) -> list[str]:
    """Dataset variables that endpoint ``e`` needs and ``ds`` lacks."""
    if e.kind == "best_change":
        return [] if f"best_{e.variable}_change" in ds or e.variable in ds else [f"best_{e.variable}_change"]
    need = {"response": ("response",), "days_on_therapy": ("days_on_therapy",), "ttp": ("progression_day",),
            "progression_event": ("progression_day",), "ttp_censored": ("progression_day",)}.get(e.kind, e.variables)
    return [v for v in need if v not in ds]


def _prepare(ds: xr.Dataset, scenario, endpoints, dose_times_h):
    explicit = endpoints is not None
    eps = list(DEFAULT if endpoints is None else endpoints)
    for e in eps:
        if not isinstance(e, Endpoint):
            raise TypeError(f"endpoints: expected Endpoint specs, got {type(e).__name__}")
    lead = _lead_of(ds)
    scen_dim = "scenario" if "scenario" in lead else None
    t = np.asarray(ds["time"].values, float)
    t_end = float(t[-1])
    need_doses = any(e.per != "subject" for e in eps)
    doses_per = None
    if need_doses:
        if isinstance(scenario, (list, tuple)):
            if scen_dim is None or len(scenario) != ds.sizes[scen_dim]:
                raise ValueError(f"endpoints: scenario: a list needs one entry per element of the 'scenario' dimension "
                                 f"({ds.sizes.get('scenario', 0)}), got {len(scenario)}")
            regs = [_as_regimen(s) for s in scenario]
        else:
            regs = [_as_regimen(scenario)]
        doses_per = [_doses_for(r, dose_times_h, t_end) for r in regs]
        if any(d is None for d in doses_per):
            doses_per = None
    keep = []
    for e in eps:
        missing = _missing(ds, e)
        skip_reason = None
        if missing:
            skip_reason = f"variable(s) {', '.join(missing)} not in the Dataset"
        elif e.per != "subject" and doses_per is None:
            skip_reason = "no dose times (pass scenario= or dose_times_h=)"
        elif e.per == "cycle" and any(d.cycle_h is None for d in doses_per):
            skip_reason = "per-cycle endpoints need the regimen's cycles (pass scenario=)"
        elif e.at_h is not None and not (t[0] <= e.at_h <= t_end):
            skip_reason = f"at_h = {e.at_h:g} h is outside the grid {t[0]:g}–{t_end:g} h"
        elif e.window_h is not None and (e.window_h[0] < t[0] - 1e-9 or e.window_h[1] > t_end + 1e-9):
            skip_reason = f"window {e.window_h[0]:g}–{e.window_h[1]:g} h is outside the grid {t[0]:g}–{t_end:g} h"
        if skip_reason:
            if explicit:
                raise ValueError(f"endpoint {e.name!r}: {skip_reason}")
            continue
        keep.append(e)
    return keep, lead, scen_dim, doses_per


def _evaluate(ds, scenario, endpoints, dose_times_h) -> list[tuple[Endpoint, xr.DataArray]]:
    eps, lead, scen_dim, doses_per = _prepare(ds, scenario, endpoints, dose_times_h)
    return [(e, _evaluate_one(ds, e, lead, doses_per, scen_dim)) for e in eps]


def compute_endpoints(
    ds: xr.Dataset,
    scenario: Any = None,
    *,
    endpoints: Sequence[Endpoint] | None = None,
    dose_times_h: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Endpoints of a results Dataset as a tidy table.

    Main arguments
    --------------
    ds : results of :func:`il2sim.simulate` (subject, time) or of a sweep (scenario, subject, time).
    scenario : the Scenario (or Regimen, or config path) whose regimen gives the dose times;
        for a sweep whose scenarios have different schedules, a list with one per scenario.
        Needed only for per-dose and per-cycle endpoints.
    endpoints : :class:`Endpoint` specs; default :data:`DEFAULT`, from which those whose
        variables are missing are skipped (an explicit list raises instead).

    Other arguments
    ---------------
    dose_times_h : nominal dose times in h, instead of the regimen's (e.g. NONMEM records).

    Returns
    -------
    pandas.DataFrame with one row per (scenario ×) subject × endpoint (× dose or cycle):
    columns ``[scenario,] subject, endpoint, variable, value, unit, dose, cycle, time_h,
    category``. ``dose`` and ``cycle`` are 1-based (``<NA>`` where not relevant), ``time_h`` the
    nominal dose time of a per-dose row, ``category`` the response class of a ``response`` row.
    """
    frames = []
    for ep, da in _evaluate(ds, scenario, endpoints, dose_times_h):
        s = da.drop_vars([c for c in da.coords if c not in da.dims]).to_series()
        df = s.rename("value").reset_index().rename(columns={"dose_index": "dose", "cycle_index": "cycle"})
        df.insert(0, "endpoint", ep.name)
        df["variable"] = ep.variable
        df["unit"] = da.attrs["units"]
        if "dose" not in df:
            df["dose"] = pd.NA
        if ep.per == "dose":
            # coords on (dose,) or (scenario, dose), flattened in the order of to_series
            for coord, col in (("dose_time_h", "time_h"), ("dose_cycle", "cycle")):
                if coord in da.coords:
                    df[col] = da[coord].broadcast_like(da).transpose(*da.dims).values.ravel()
            if "time_h" in df:  # padding of a sweep whose scenarios have fewer doses: no such dose
                df = df[df["time_h"].notna()]
        if "cycle" not in df:
            df["cycle"] = pd.NA
        if "time_h" not in df:
            df["time_h"] = np.nan
        df["category"] = (np.asarray(da.attrs["category_values"]).ravel().astype(object)
                          if "category_values" in da.attrs else None)
        frames.append(df)
    lead = _lead_of(ds)
    cols = lead + ["endpoint", "variable", "value", "unit", "dose", "cycle", "time_h", "category"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)[cols]
    out["dose"] = out["dose"].astype("Int64")
    out["cycle"] = out["cycle"].astype("Int64")
    out["value"] = out["value"].astype(float)
    return out


def add_endpoints(
    ds: xr.Dataset,
    scenario: Any = None,
    *,
    endpoints: Sequence[Endpoint] | None = None,
    dose_times_h: Sequence[float] | None = None,
) -> xr.Dataset:
    """A copy of ``ds`` with one variable per endpoint (arguments as :func:`compute_endpoints`).

    Per-subject endpoints become ``name`` (leading dims), per-dose ``name_dose`` (…, dose) with
    coords ``dose``, ``dose_time_h`` and ``dose_cycle``, per-cycle ``name_cycle`` (…, cycle).
    Each has ``units`` and ``description`` attrs. A variable that ``ds`` already has
    (``best_M_change``, ``response``, ``days_on_therapy`` from :func:`il2sim.simulate`) is left
    as it is: it is the source of the endpoint.
    """
    out = ds.copy()
    for ep, da in _evaluate(ds, scenario, endpoints, dose_times_h):
        name = ep.var_name
        if name in ds.data_vars:
            continue
        attrs = {k: v for k, v in da.attrs.items() if k != "category_values"}
        if "category_values" in da.attrs:  # a class: keep the text, as simulate does
            da = xr.DataArray(np.asarray(da.attrs["category_values"]).astype(str), dims=da.dims, coords=da.coords)
            attrs.pop("categories", None)
            attrs["units"] = ""
        if "cycle" in da.dims and "cycle" in out.dims and out.sizes["cycle"] != da.sizes["cycle"]:
            da = da.reindex(cycle=out["cycle"].values)  # the cycles of inter-occasion variability
        da.attrs = attrs
        out[name] = da
    return out
