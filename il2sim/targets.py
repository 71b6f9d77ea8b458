"""Calibration and validation targets (``[[targets]]``) and calibration stages (``[calibration]``).

A target says what to compute from a simulated cohort, what was reported, and the acceptance
band declared before any fitting::

    [[targets]]
    name = "eos_peak_fold"                 # unique in the config
    variable = "Eos"                       # a state or output, or a per-subject result
    statistic = "peak_fold"                # see STATISTICS
    window_day = [0, 42]                   # or window_h; at_day / at_h for *_at statistics
    reported = 15.0                        # a number, or text such as "<10" or "expanded"
    band = [10.0, 20.0]                    # pass if lower <= simulated <= upper (inf allowed)
    source = "Peest 1995 abstract: eosinophils increased 15-fold"

Optional keys: ``summary`` (over subjects: ``median`` (default), ``mean``, ``min``, ``max``),
``classes`` (for ``fraction``), ``time_unit`` (``h``, ``min`` or ``d``, for ``tmax`` and
half-lives), ``unit`` (shown in reports), ``sigma`` (scale of the residual; default half the band
width, or the finite edge for a one-sided band), ``weight`` (default 1; 0 = report only),
``min_days_on_therapy`` (only subjects treated at least this long count, as patients who stopped
early were not sampled later), ``description``.

Times: ``at_day``/``window_day`` are days since t = 0 (midnight before the first dose), so
``at_day = 28`` is t = 672 h; the regimen's day numbers are 1-based (day 1 starts at t = 0).

Residual used by calibration: ``(simulated - reported) / sigma`` for a numeric ``reported``;
for a text ``reported`` (a bound or a qualitative finding) the distance outside the band, narrowed
by 10 % of its width at each side so that a fit does not stop on the edge, divided by ``sigma``.

Calibration stages::

    [calibration]
    output = "calibration/fitted_parameters.toml"   # fitted-parameters TOML (relative to the config)

    [[calibration.stage]]
    name = "pk"
    include = ["calibration/pk_iv_konrad_1990.toml"]  # other configs whose targets join
    targets = []                                      # this config's targets used (default: all)
    method = "least_squares"                          # or "nelder_mead"
    max_evaluations = 300                             # per start
    subjects = 18                                     # cohort size while fitting (default: config's)
    starts = 8                                        # extra starts (Latin hypercube), best fit kept
    [calibration.stage.parameters]
    CL_RM0 = [5.0, 80.0]                              # bounds; fitted on a log scale
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from il2sim import _validate as v
from il2sim.endpoints import biexponential_half_lives, clip_window, interp_at

__all__ = [
    "STATISTICS", "SUMMARIES", "PER_SUBJECT", "Target", "TargetResult", "CalibrationStage",
    "CalibrationSpec", "parse_targets", "parse_calibration", "evaluate_target", "evaluate_targets",
]

#: statistic -> (needs, description). needs: "at" (a time), "window", "classes", or "".
STATISTICS: dict[str, tuple[str, str]] = {
    "value_at": ("at", "value at a time"),
    "fold_at": ("at", "value at a time / value at t = 0"),
    "peak": ("window", "maximum over the window (e.g. Cmax after a dose)"),
    "peak_fold": ("window", "maximum over the window / value at t = 0"),
    "trough": ("window", "minimum over the window"),
    "tmax": ("window", "time of the maximum, from the window start"),
    "auc": ("window", "area under the curve over the window (unit x h)"),
    "t_half_alpha": ("window", "initial half-life of a bi-exponential fit over the window"),
    "t_half_beta": ("window", "terminal half-life of a bi-exponential fit over the window"),
    "fraction": ("classes", "fraction of subjects whose response is in classes"),
    "value": ("", "the per-subject result itself (days_on_therapy, best_M_change, ...)"),
}
SUMMARIES = ("median", "mean", "min", "max")
#: Per-subject results that simulate adds when the regimen stops at progression.
PER_SUBJECT = ("response", "days_on_therapy", "best_M_change", "progression_day")
TIME_UNITS = {"h": 1.0, "min": 1.0 / 60.0, "d": 24.0}
_TARGET_KEYS = ("name", "variable", "statistic", "reported", "band", "source", "at_day", "at_h",
                "window_day", "window_h", "classes", "summary", "time_unit", "unit", "sigma",
                "weight", "min_days_on_therapy", "description")
_CAL_KEYS = ("output", "stage")
_STAGE_KEYS = ("name", "parameters", "include", "targets", "method", "max_evaluations", "subjects", "starts", "description")
METHODS = ("least_squares", "nelder_mead")


@dataclass(frozen=True)
class Target:
    """One declared target; see the module docstring for the fields."""

    name: str
    variable: str
    statistic: str
    band: tuple[float, float]
    source: str
    reported: float | None = None
    reported_text: str = ""
    at_h: float | None = None
    window_h: tuple[float, float] | None = None
    classes: tuple[str, ...] = ()
    summary: str = "median"
    time_unit: str = "h"
    unit: str = ""
    sigma: float | None = None
    weight: float = 1.0
    min_days_on_therapy: float = 0.0
    description: str = ""
    config: str = ""

    @property
    def scale(self) -> float:
        """The residual's denominator."""
        if self.sigma is not None:
            return self.sigma
        lo, hi = self.band
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            return (hi - lo) / 2.0
        edge = lo if math.isfinite(lo) else hi
        return abs(edge) if math.isfinite(edge) and edge != 0 else 1.0

    def residual(self, simulated: float) -> float:
        """Scaled distance of ``simulated`` from the reported value (or from the band)."""
        if not math.isfinite(simulated):
            return 1e3
        if self.reported is not None:
            return (simulated - self.reported) / self.scale
        lo, hi = self.band
        # aim inside the band, not at its edge: a fit that stops on the edge falls out of it
        # with any round-off or resampling (10 % of the width, or of the finite edge)
        margin = 0.1 * ((hi - lo) if math.isfinite(hi - lo) else abs(lo if math.isfinite(lo) else hi))
        lo, hi = lo + margin, hi - margin
        return (max(lo - simulated, 0.0) + max(simulated - hi, 0.0)) / self.scale

    def passed(self, simulated: float) -> bool:
        return bool(math.isfinite(simulated) and self.band[0] <= simulated <= self.band[1])

    def where(self) -> str:
        """``at``/``window`` in readable form for tables."""
        if self.at_h is not None:
            return f"t = {_fmt_time(self.at_h)}"
        if self.window_h is not None:
            return f"{_fmt_time(self.window_h[0])}–{_fmt_time(self.window_h[1])}"
        return ""


def _fmt_time(h: float) -> str:
    if h != 0 and abs(h) < 48 or (h % 24):
        return f"{h:g} h"
    return f"day {h / 24:g}"


@dataclass(frozen=True)
class TargetResult:
    """A target evaluated on one simulated cohort."""

    target: Target
    per_subject: np.ndarray  # the statistic per counted subject (for fraction: 0/1)
    simulated: float         # the summary over subjects, compared with the band
    median: float
    low: float
    high: float
    n: int

    @property
    def passed(self) -> bool:
        return self.target.passed(self.simulated)

    @property
    def residual(self) -> float:
        return self.target.residual(self.simulated)


@dataclass(frozen=True)
class CalibrationStage:
    """Parameters (name -> (lower, upper)) fitted to a set of targets."""

    name: str
    parameters: dict[str, tuple[float, float]]
    include: tuple[str, ...] = ()
    targets: tuple[str, ...] | None = None  # names from the config itself; None = all
    method: str = "least_squares"
    max_evaluations: int = 300
    subjects: int | None = None
    starts: int = 0  # extra starting points (Latin hypercube in the log bounds, fixed seed)
    description: str = ""


@dataclass(frozen=True)
class CalibrationSpec:
    """The ``[calibration]`` table: stages run in order, each starting from the previous fit."""

    stages: tuple[CalibrationStage, ...]
    output: str = ""


# --------------------------------------------------------------------------------- parsing


def _pair(value: Any, source: str, field_: str, *, allow_inf: bool = False) -> tuple[tuple[float, float] | None, str | None]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
          and all(allow_inf or math.isfinite(x) for x in value)
          and not any(math.isnan(x) for x in value))
    if not ok or value[0] > value[1]:
        kind = "numbers (inf allowed)" if allow_inf else "finite numbers"
        return None, f"{source}: {field_}: expected [lower, upper] with lower <= upper, two {kind}, got {value!r}"
    return (float(value[0]), float(value[1])), None


def parse_targets(items: Any, source: str) -> tuple[tuple[Target, ...], list[str]]:
    """Validate the ``[[targets]]`` array; return the targets and every problem found."""
    if not isinstance(items, list):
        return (), [f"{source}: targets: expected an array of tables ([[targets]]), got {v.describe(items)}"]
    problems: list[str] = []
    out: list[Target] = []
    seen: set[str] = set()
    for i, t in enumerate(items):
        f = f"targets[{i}]"
        if (msg := v.check_table(t, source, f)) is not None:
            problems.append(msg)
            continue
        p0 = len(problems)
        problems += v.unknown_keys(t, _TARGET_KEYS, source, f)
        for key in ("name", "variable", "statistic", "band", "source"):
            if key not in t:
                problems.append(f"{source}: {f}.{key}: required")
        name = t.get("name", f"target_{i}")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{source}: {f}.name: expected a non-empty string, got {v.describe(name)}")
        elif name in seen:
            problems.append(f"{source}: {f}.name: {name!r} is used by an earlier target")
        seen.add(str(name))
        for key in ("variable", "source", "unit", "description"):
            if key in t and not isinstance(t[key], str):
                problems.append(f"{source}: {f}.{key}: expected a string, got {v.describe(t[key])}")
        stat = t.get("statistic")
        if stat is not None and (msg := v.check_choice(stat, STATISTICS, source, f"{f}.statistic")) is not None:
            problems.append(msg)
            stat = None
        band, msg = (None, None)
        if "band" in t:
            band, msg = _pair(t["band"], source, f"{f}.band", allow_inf=True)
            if msg:
                problems.append(msg)
        reported, text = None, ""
        if "reported" in t:
            r = t["reported"]
            if isinstance(r, str) and r.strip():
                text = r
            elif isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r):
                reported, text = float(r), f"{r:g}"
            else:
                problems.append(f"{source}: {f}.reported: expected a finite number or a text such as \"<10\", got {v.describe(r)}")
        at_h = window = None
        if "at_day" in t and "at_h" in t:
            problems.append(f"{source}: {f}: give at_day or at_h, not both")
        for key, mult in (("at_day", 24.0), ("at_h", 1.0)):
            if key in t:
                if (msg := v.check_number(t[key], source, f"{f}.{key}", lower=0)) is not None:
                    problems.append(msg)
                else:
                    at_h = float(t[key]) * mult
        if "window_day" in t and "window_h" in t:
            problems.append(f"{source}: {f}: give window_day or window_h, not both")
        for key, mult in (("window_day", 24.0), ("window_h", 1.0)):
            if key in t:
                w, msg = _pair(t[key], source, f"{f}.{key}")
                if msg:
                    problems.append(msg)
                elif w[0] < 0 or w[0] == w[1]:
                    problems.append(f"{source}: {f}.{key}: expected 0 <= start < end, got {t[key]!r}")
                else:
                    window = (w[0] * mult, w[1] * mult)
        classes = t.get("classes", [])
        from il2sim.response import RESPONSE_CLASSES

        if not isinstance(classes, list) or not all(c in RESPONSE_CLASSES for c in classes):
            problems.append(f"{source}: {f}.classes: expected a list of {', '.join(RESPONSE_CLASSES)}, got {v.describe(classes)}")
            classes = []
        if stat is not None:
            need = STATISTICS[stat][0]
            if need == "at" and at_h is None:
                problems.append(f"{source}: {f}: statistic '{stat}' needs at_day or at_h")
            if need == "window" and window is None:
                problems.append(f"{source}: {f}: statistic '{stat}' needs window_day or window_h")
            if need == "classes" and not classes:
                problems.append(f"{source}: {f}: statistic 'fraction' needs classes, e.g. [\"PR\", \"MR\"]")
            if stat == "fraction" and t.get("variable", "response") != "response":
                problems.append(f"{source}: {f}.variable: statistic 'fraction' counts response classes; expected 'response', got {t.get('variable')!r}")
        summary = t.get("summary", "median")
        if (msg := v.check_choice(summary, SUMMARIES, source, f"{f}.summary")) is not None:
            problems.append(msg)
        time_unit = t.get("time_unit", "h")
        if (msg := v.check_choice(time_unit, TIME_UNITS, source, f"{f}.time_unit")) is not None:
            problems.append(msg)
        for key, lower, strict in (("sigma", 0, True), ("weight", 0, False), ("min_days_on_therapy", 0, False)):
            if key in t and (msg := v.check_number(t[key], source, f"{f}.{key}", lower=lower, strict_lower=strict)) is not None:
                problems.append(msg)
        if len(problems) > p0:
            continue
        out.append(Target(
            name=name, variable=t["variable"], statistic=stat, band=band, source=t["source"],
            reported=reported, reported_text=text, at_h=at_h, window_h=window, classes=tuple(classes),
            summary="mean" if stat == "fraction" else summary, time_unit=time_unit, unit=t.get("unit", ""),
            sigma=float(t["sigma"]) if "sigma" in t else None, weight=float(t.get("weight", 1.0)),
            min_days_on_therapy=float(t.get("min_days_on_therapy", 0.0)), description=t.get("description", ""),
            config=source,
        ))
    return tuple(out), problems


def check_target_variables(targets, model, has_progression: bool, source: str) -> list[str]:
    """Each target's variable must exist in the model (or be a per-subject result)."""
    import difflib

    names = list(model.state_names) + list(model.output_names)
    problems = []
    for i, t in enumerate(targets):
        if t.variable in PER_SUBJECT:
            if not has_progression:
                problems.append(f"{source}: targets[{i}].variable: '{t.variable}' exists only when regimen.stop = \"progression\"")
            elif t.statistic not in ("value", "fraction"):
                problems.append(f"{source}: targets[{i}].statistic: '{t.variable}' is one value per subject; use 'value' or 'fraction'")
        elif t.variable not in names:
            close = difflib.get_close_matches(t.variable, names + list(PER_SUBJECT), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{source}: targets[{i}].variable: unknown state or output '{t.variable}'{hint}")
        elif t.statistic in ("value", "fraction"):
            problems.append(f"{source}: targets[{i}].statistic: '{t.statistic}' applies to per-subject results ({', '.join(PER_SUBJECT)}), not to the trajectory '{t.variable}'")
        if t.min_days_on_therapy > 0 and not has_progression:
            problems.append(f"{source}: targets[{i}].min_days_on_therapy: needs regimen.stop = \"progression\" (days on therapy)")
    return problems


def parse_calibration(d: Any, source: str) -> tuple[CalibrationSpec | None, list[str]]:
    """Validate the ``[calibration]`` table (parameter names are checked against the model later)."""
    if (msg := v.check_table(d, source, "calibration")) is not None:
        return None, [msg]
    problems = v.unknown_keys(d, _CAL_KEYS, source, "calibration")
    output = d.get("output", "")
    if not isinstance(output, str):
        problems.append(f"{source}: calibration.output: expected a file path, got {v.describe(output)}")
    stages_in = d.get("stage")
    if not isinstance(stages_in, list) or not stages_in:
        problems.append(f"{source}: calibration.stage: expected one or more [[calibration.stage]] tables")
        stages_in = []
    stages = []
    for i, s in enumerate(stages_in):
        f = f"calibration.stage[{i}]"
        if (msg := v.check_table(s, source, f)) is not None:
            problems.append(msg)
            continue
        p0 = len(problems)
        problems += v.unknown_keys(s, _STAGE_KEYS, source, f)
        params = s.get("parameters")
        bounds = {}
        if not isinstance(params, dict) or not params:
            problems.append(f"{source}: {f}.parameters: expected a table of name = [lower, upper]")
            params = {}
        for name, b in params.items():
            pair, msg = _pair(b, source, f"{f}.parameters.{name}")
            if msg:
                problems.append(msg)
            elif pair[0] <= 0 or pair[0] == pair[1]:
                problems.append(f"{source}: {f}.parameters.{name}: expected 0 < lower < upper (fitted on a log scale), got {b!r}")
            else:
                bounds[name] = pair
        include = s.get("include", [])
        if not isinstance(include, list) or not all(isinstance(x, str) for x in include):
            problems.append(f"{source}: {f}.include: expected a list of config paths, got {v.describe(include)}")
        names = s.get("targets")
        if names is not None and (not isinstance(names, list) or not all(isinstance(x, str) for x in names)):
            problems.append(f"{source}: {f}.targets: expected a list of target names, got {v.describe(names)}")
        method = s.get("method", "least_squares")
        if (msg := v.check_choice(method, METHODS, source, f"{f}.method")) is not None:
            problems.append(msg)
        if "starts" in s and (msg := v.check_number(s["starts"], source, f"{f}.starts", lower=0, integer=True)) is not None:
            problems.append(msg)
        for key in ("max_evaluations", "subjects"):
            if key in s and (msg := v.check_number(s[key], source, f"{f}.{key}", lower=1, integer=True)) is not None:
                problems.append(msg)
        if len(problems) > p0:
            continue
        stages.append(CalibrationStage(
            name=str(s.get("name", f"stage{i}")), parameters=bounds, include=tuple(include),
            targets=None if names is None else tuple(names), method=method,
            max_evaluations=int(s.get("max_evaluations", 300)),
            subjects=int(s["subjects"]) if "subjects" in s else None, starts=int(s.get("starts", 0)),
            description=str(s.get("description", "")),
        ))
    return CalibrationSpec(tuple(stages), output if isinstance(output, str) else ""), problems


# ------------------------------------------------------------------------------ evaluation


# The grid statistics (value at a time, windows, half-lives) are shared with il2sim.endpoints.
_interp_rows = interp_at
_window = clip_window


def per_subject_values(ds, target: Target) -> np.ndarray:
    """The target's statistic for every counted subject (see :class:`Target`)."""
    n = ds.sizes["subject"]
    keep = np.ones(n, bool)
    if "status" in ds:
        keep &= ds["status"].values.astype(str) == "ok"
    if target.min_days_on_therapy > 0 and "days_on_therapy" in ds:
        keep &= ds["days_on_therapy"].values >= target.min_days_on_therapy
    stat = target.statistic
    if stat == "fraction":
        return np.isin(ds["response"].values.astype(str)[keep], target.classes).astype(float)
    if stat == "value":
        return np.asarray(ds[target.variable].values, dtype=float)[keep]
    t = ds["time"].values.astype(float)
    y = np.asarray(ds[target.variable].values, dtype=float)[keep]
    scale = TIME_UNITS[target.time_unit]
    if stat in ("value_at", "fold_at"):
        x = _interp_rows(t, y, target.at_h)
        return x / _interp_rows(t, y, 0.0) if stat == "fold_at" else x
    tt, yy = _window(t, y, target.window_h)
    if stat == "peak":
        return yy.max(axis=1)
    if stat == "peak_fold":
        return yy.max(axis=1) / _interp_rows(t, y, 0.0)
    if stat == "trough":
        return yy.min(axis=1)
    if stat == "tmax":
        return (tt[np.argmax(yy, axis=1)] - tt[0]) / scale
    if stat == "auc":
        return np.trapezoid(yy, tt, axis=1)
    if stat in ("t_half_alpha", "t_half_beta"):
        k = 0 if stat == "t_half_alpha" else 1
        return np.array([biexponential_half_lives(tt, row)[k] for row in yy]) / scale
    raise AssertionError(stat)


def evaluate_target(ds, target: Target) -> TargetResult:
    """Evaluate one target on a simulated cohort (NaN if no subject counts)."""
    x = per_subject_values(ds, target)
    finite = x[np.isfinite(x)]
    if x.size == 0:
        return TargetResult(target, x, math.nan, math.nan, math.nan, math.nan, 0)
    summary = {"median": np.median, "mean": np.mean, "min": np.min, "max": np.max}[target.summary]
    sim = float(summary(x)) if finite.size == x.size else math.nan
    if finite.size == 0:
        return TargetResult(target, x, sim, math.nan, math.nan, math.nan, int(x.size))
    return TargetResult(target, x, sim, float(np.median(finite)), float(finite.min()), float(finite.max()), int(x.size))


def evaluate_targets(ds, targets) -> list[TargetResult]:
    """Evaluate every target on ``ds``."""
    return [evaluate_target(ds, t) for t in targets]
