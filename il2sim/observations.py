"""Simulated observations: model predictions at sampling times plus residual error.

``[observations]`` declares when samples are taken and how each observed variable is measured::

    [observations]
    times_h = [0.5, 1, 2, 4, 8, 24]      # hours since t = 0 (midnight before the first dose)
    times_day = [7, 14, 28]              # days since t = 0 (day 7 is t = 168 h); merged with times_h

    [observations.variables]
    C   = { error = "combined", sd = 2.0, cv = 0.15 }   # sd in C's unit, cv as a fraction
    Eos = { error = "proportional", cv = 0.2 }
    NK  = { error = "additive", sd = 5.0 }
    M   = { error = "exponential", sd_log = 0.1 }

Error models, for a prediction ``f`` and independent standard normal ``ε``:

=============  ==========================================  ==================
error          observation                                 keys
=============  ==========================================  ==================
additive       f + sd * ε                                  ``sd``
proportional   f * (1 + cv * ε)                            ``cv``
combined       f + sqrt(sd**2 + (cv * f)**2) * ε           ``sd``, ``cv``
exponential    f * exp(sd_log * ε)                         ``sd_log``
=============  ==========================================  ==================

(``combined`` is NONMEM's additive-plus-proportional model, one ε with summed variances.)

The sampling times are merged into the solve grid, so predictions are the solver's dense output
at exactly those times; they are added to the results as ``<var>_pred`` and ``<var>_obs`` on
the dimension ``obs_time`` (h). Residual draws come from the subject's own stream
``SeedSequence(seed, spawn_key=(i, 1))``, independent of the parameter stream ``(i,)``: adding
or changing observations never changes a subject's covariates, parameters or trajectories, and
subject ``i`` gets the same residuals in any cohort, chunk or worker. Each subject draws one
standard normal per (variable, time), variables in declared order, times in increasing order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from il2sim import _validate as v

__all__ = ["ERROR_MODELS", "OBS_STREAM", "ObservedVariable", "ObservationSpec", "parse_observations",
           "check_observations", "observation_rng", "residual_draws", "apply_error", "add_observations"]

#: error model -> its keys
ERROR_MODELS: dict[str, tuple[str, ...]] = {
    "additive": ("sd",),
    "proportional": ("cv",),
    "combined": ("sd", "cv"),
    "exponential": ("sd_log",),
}
#: second element of the per-subject seed key of the residual-error stream
OBS_STREAM = 1


@dataclass(frozen=True)
class ObservedVariable:
    """How one state or output is measured: error model and its SDs."""

    name: str
    error: str
    sd: float = 0.0
    cv: float = 0.0
    sd_log: float = 0.0


@dataclass(frozen=True)
class ObservationSpec:
    """Sampling times (h, sorted, unique) and the observed variables in declared order."""

    times_h: tuple[float, ...]
    variables: tuple[ObservedVariable, ...]

    def times(self) -> np.ndarray:
        return np.asarray(self.times_h, dtype=float)


def parse_observations(d: Any, source: str) -> tuple[ObservationSpec | None, list[str]]:
    """Validate an ``[observations]`` table; return the spec (None on problems) and the problems."""
    f = "observations"
    if (msg := v.check_table(d, source, f)) is not None:
        return None, [msg]
    problems = v.unknown_keys(d, ("times_h", "times_day", "variables"), source, f)
    times: list[float] = []
    for key, scale in (("times_h", 1.0), ("times_day", 24.0)):
        if key not in d:
            continue
        vals = d[key]
        if not isinstance(vals, list) or not vals:
            problems.append(f"{source}: {f}.{key}: expected a non-empty list of times, got {v.describe(vals)}")
            continue
        for i, t in enumerate(vals):
            if (msg := v.check_number(t, source, f"{f}.{key}[{i}]", lower=0)) is not None:
                problems.append(msg)
            else:
                times.append(float(t) * scale)
    if "times_h" not in d and "times_day" not in d:
        problems.append(f"{source}: {f}: expected sampling times in times_h and/or times_day")
    table = d.get("variables")
    if table is None:
        problems.append(f"{source}: {f}.variables: expected a table naming each observed variable and its error model, "
                        "e.g. C = { error = \"proportional\", cv = 0.2 }")
        table = {}
    elif (msg := v.check_table(table, source, f"{f}.variables")) is not None:
        problems.append(msg)
        table = {}
    observed = []
    for name, spec in table.items():
        fv = f"{f}.variables.{name}"
        if (msg := v.check_table(spec, source, fv)) is not None:
            problems.append(msg)
            continue
        error = spec.get("error")
        if (msg := v.check_choice(error, ERROR_MODELS, source, f"{fv}.error")) is not None:
            problems.append(msg)
            continue
        keys = ERROR_MODELS[error]
        problems += v.unknown_keys(spec, ("error", *keys), source, fv)
        kw = {}
        for key in keys:
            if key not in spec:
                problems.append(f"{source}: {fv}.{key}: required for error = '{error}'")
            elif (msg := v.check_number(spec[key], source, f"{fv}.{key}", lower=0)) is not None:
                problems.append(msg)
            else:
                kw[key] = float(spec[key])
        if len(kw) == len(keys):
            observed.append(ObservedVariable(str(name), str(error), **kw))
    if problems:
        return None, problems
    return ObservationSpec(tuple(sorted(set(times))), tuple(observed)), []


def check_observations(spec: ObservationSpec | None, model, end_h: float, source: str) -> list[str]:
    """Observed variables must be states or outputs; times must lie within the output grid."""
    import difflib

    if spec is None:
        return []
    problems = []
    names = [*model.state_names, *model.output_names]
    for ov in spec.variables:
        if ov.name not in names:
            close = difflib.get_close_matches(ov.name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{source}: observations.variables.{ov.name}: unknown state or output '{ov.name}'{hint}")
        for suffix in ("_obs", "_pred"):
            if ov.name + suffix in names:
                problems.append(f"{source}: observations.variables.{ov.name}: the model already defines '{ov.name}{suffix}', "
                                "the name of the simulated observation; rename one")
    late = [t for t in spec.times_h if t > end_h]
    if late:
        problems.append(f"{source}: observations: sampling time {late[0]:g} h is after the end of the output grid "
                        f"({end_h:g} h); extend output.end_day or drop the sample")
    return problems


def observation_rng(seed: int, subject: int) -> np.random.Generator:
    """The residual-error stream of one subject, independent of its parameter stream."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(subject), OBS_STREAM)))


def residual_draws(spec: ObservationSpec, subjects: np.ndarray, seed: int) -> np.ndarray:
    """Standard normals, subjects × variables × times, each subject from its own stream."""
    shape = (len(spec.variables), len(spec.times_h))
    eps = np.empty((len(subjects), *shape))
    for row, sid in enumerate(subjects):
        eps[row] = observation_rng(seed, sid).standard_normal(shape)
    return eps


def apply_error(ov: ObservedVariable, f: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Observation from prediction ``f`` and standard normal ``eps`` under ``ov``'s error model."""
    if ov.error == "additive":
        return f + ov.sd * eps
    if ov.error == "proportional":
        return f * (1.0 + ov.cv * eps)
    if ov.error == "combined":
        return f + np.sqrt(ov.sd**2 + (ov.cv * f) ** 2) * eps
    return f * np.exp(ov.sd_log * eps)


def add_observations(ds, spec: ObservationSpec, model, Y_obs: np.ndarray, O_obs: np.ndarray, subjects: np.ndarray, seed: int) -> None:
    """Add ``<var>_pred`` and ``<var>_obs`` (subject × obs_time) to the results ``ds`` in place.

    ``Y_obs``/``O_obs`` are the states/outputs at the sampling times (subject × time × variable).
    """
    units = {x.name: x.unit for x in (*model.states, *model.outputs)}
    eps = residual_draws(spec, subjects, seed)
    ds.coords["obs_time"] = ("obs_time", spec.times(), {"units": "h", "description": "sampling time of simulated observations"})
    for k, ov in enumerate(spec.variables):
        if ov.name in model.state_names:
            pred = Y_obs[:, :, list(model.state_names).index(ov.name)]
        else:
            pred = O_obs[:, :, list(model.output_names).index(ov.name)]
        err = {"additive": f"additive, sd {ov.sd:g} {units[ov.name]}", "proportional": f"proportional, cv {ov.cv:g}",
               "combined": f"combined, sd {ov.sd:g} {units[ov.name]}, cv {ov.cv:g}",
               "exponential": f"exponential, sd_log {ov.sd_log:g}"}[ov.error]
        ds[f"{ov.name}_pred"] = (("subject", "obs_time"), pred.copy(),
                                 {"units": units[ov.name], "description": f"{ov.name} predicted at the sampling times (no residual error)"})
        ds[f"{ov.name}_obs"] = (("subject", "obs_time"), apply_error(ov, pred, eps[:, k]),
                                {"units": units[ov.name], "description": f"simulated observation of {ov.name}: prediction with residual error ({err})",
                                 "error_model": ov.error})
