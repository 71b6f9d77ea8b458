"""Global sensitivity: Sobol first-order and total indices with bootstrap confidence intervals.

```toml
[sensitivity]
endpoints = ["eos_peak_fold", "nk_peak_fold"]   # names (ENDPOINTS, or STAT(VAR) e.g. "peak_fold(Treg)")
N = 64                  # base samples; the model runs N * (k + 2) scenarios for k parameters
seed = 7                # seed of the scrambled Sobol sample and of the bootstrap
bootstrap = 500         # bootstrap resamples for the confidence intervals
confidence = 0.95
subjects = 1            # virtual patients per scenario; the endpoint is their mean
typical = true          # drop IIV/IOV: every scenario is the same covariates with typical parameters
[sensitivity.parameters]                # model parameters and their ranges (uniform)
EC50_Treg = [0.5, 60.0]
Emax_eo = { range = [5.0, 30.0], scale = "log" }   # uniform in log
```

Estimators (Saltelli et al. 2010, Comput Phys Commun 181:259, table 2): with two independent
N × k samples A and B and AB_i = A with column i taken from B,

    S_i  = mean(f(B) · (f(AB_i) − f(A))) / V            (Saltelli 2010, first order)
    ST_i = mean((f(A) − f(AB_i))²) / (2 V)              (Jansen 1999, total)

where V is the variance of f over A and B together. Confidence intervals are bootstrap
percentiles over the N rows (the same resample for A, B and every AB_i). Outputs are centred
on their mean first, which leaves the estimators unbiased and narrows the first-order intervals
when the mean is large compared with the spread (fold changes). A and B are the two
halves of one scrambled Sobol sequence in 2k dimensions (scipy.stats.qmc).

Model runs go through :func:`il2sim.sweep.sweep` with the design points as ``parameters.NAME``
overrides, so every scenario uses the same virtual patients (common random numbers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from il2sim import _validate as v
from il2sim.errors import ConfigError

__all__ = ["SensitivitySpec", "parse_sensitivity", "sobol_sample", "sobol_indices", "sobol_analyze",
           "sensitivity", "endpoint_values", "ENDPOINTS", "peak_fold"]


def peak_fold(ds: xr.Dataset, variable: str) -> xr.DataArray:
    """Maximum over time divided by the value at the first output time (per scenario/subject)."""
    x = ds[variable]
    return x.max("time") / x.isel(time=0)


_STATS = {
    "peak_fold": peak_fold,
    "peak": lambda ds, var: ds[var].max("time"),
    "final": lambda ds, var: ds[var].isel(time=-1),
    "auc": lambda ds, var: ds[var].integrate("time"),
    "nadir_fold": lambda ds, var: ds[var].min("time") / ds[var].isel(time=0),
}
#: named endpoints (each also reachable as ``STAT(VARIABLE)``, STAT one of peak_fold, peak, final, auc, nadir_fold)
ENDPOINTS = {
    "eos_peak_fold": "peak_fold(Eos)",
    "nk_peak_fold": "peak_fold(NK)",
    "treg_peak_fold": "peak_fold(Treg)",
    "cmax": "peak(C)",
}


def _endpoint_function(name: str, source: str = "sensitivity") -> Callable[[xr.Dataset], xr.DataArray]:
    text = ENDPOINTS.get(name, name)
    m = re.fullmatch(r"\s*(\w+)\s*\(\s*(\w+)\s*\)\s*", text)
    if not m or m.group(1) not in _STATS:
        raise ConfigError(f"{source}: endpoint {name!r}: expected one of {', '.join(ENDPOINTS)} or STAT(VARIABLE) "
                          f"with STAT one of {', '.join(_STATS)}")
    stat, var = m.groups()
    return lambda ds: _STATS[stat](ds, var)


def endpoint_values(ds: xr.Dataset, endpoint: str | Callable, *, summary: str = "mean") -> xr.DataArray:
    """An endpoint per scenario: computed per subject, then the ``summary`` (mean or median) over subjects."""
    f = endpoint if callable(endpoint) else _endpoint_function(endpoint)
    x = f(ds)
    if "subject" in x.dims:
        x = x.mean("subject") if summary == "mean" else x.median("subject")
    return x


@dataclass(frozen=True)
class SensitivitySpec:
    """A ``[sensitivity]`` table: parameter ranges, endpoints and sampling settings."""

    parameters: dict[str, tuple[float, float]]
    endpoints: tuple[str, ...]
    N: int = 64
    seed: int = 0
    bootstrap: int = 500
    confidence: float = 0.95
    subjects: int = 1
    typical: bool = True
    scales: dict[str, str] = field(default_factory=dict)


def parse_sensitivity(d: Any, source: str) -> tuple[SensitivitySpec | None, list[str]]:
    """Validate a ``[sensitivity]`` table (schema in the module docstring)."""
    if (msg := v.check_table(d, source, "sensitivity")) is not None:
        return None, [msg]
    problems = v.unknown_keys(d, ("parameters", "endpoints", "N", "seed", "bootstrap", "confidence", "subjects", "typical"),
                              source, "sensitivity")
    kw: dict[str, Any] = {}
    for key, lower, upper, integer in (("N", 2, None, True), ("seed", 0, None, True), ("bootstrap", 10, None, True),
                                       ("confidence", 0.5, 0.999, False), ("subjects", 1, None, True)):
        if key in d:
            if (msg := v.check_number(d[key], source, f"sensitivity.{key}", lower=lower, upper=upper, integer=integer)) is not None:
                problems.append(msg)
            else:
                kw[key] = d[key]
    if "typical" in d:
        if not isinstance(d["typical"], bool):
            problems.append(f"{source}: sensitivity.typical: expected true or false, got {d['typical']!r}")
        else:
            kw["typical"] = d["typical"]
    params, scales = {}, {}
    table = d.get("parameters")
    if not isinstance(table, dict) or not table:
        problems.append(f"{source}: sensitivity.parameters: expected a table of NAME = [low, high], got {table!r}")
        table = {}
    for name, spec in table.items():
        f = f"sensitivity.parameters.{name}"
        scale = "linear"
        if isinstance(spec, dict):
            problems += v.unknown_keys(spec, ("range", "scale"), source, f)
            scale = spec.get("scale", "linear")
            if (msg := v.check_choice(scale, ("linear", "log"), source, f + ".scale")) is not None:
                problems.append(msg)
            spec = spec.get("range")
        if (not isinstance(spec, list) or len(spec) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in spec)
                or spec[0] >= spec[1]):
            problems.append(f"{source}: {f}: expected [low, high] with low < high, got {spec!r}")
            continue
        if scale == "log" and spec[0] <= 0:
            problems.append(f"{source}: {f}: a log scale needs low > 0, got {spec!r}")
            continue
        params[name] = (float(spec[0]), float(spec[1]))
        scales[name] = scale
    if len(table) == 1:
        problems.append(f"{source}: sensitivity.parameters: Sobol indices need at least two parameters")
    endpoints = d.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints or not all(isinstance(e, str) for e in endpoints):
        problems.append(f"{source}: sensitivity.endpoints: expected a list of endpoint names, e.g. {list(ENDPOINTS)[:2]}, got {endpoints!r}")
        endpoints = []
    for e in endpoints:
        try:
            _endpoint_function(e, f"{source}: sensitivity.endpoints")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        return None, problems
    return SensitivitySpec(params, tuple(endpoints), scales=scales, **kw), []


def sobol_sample(bounds, N: int, *, seed: int = 0, scales=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saltelli sample: A, B (N × k) and AB (k × N × k), AB[i] = A with column i from B.

    ``bounds`` is a (k × 2) sequence of [low, high]; ``scales`` a list of "linear"/"log" per column.
    """
    from scipy.stats import qmc

    bounds = np.asarray(bounds, dtype=float)
    k = bounds.shape[0]
    scales = list(scales) if scales is not None else ["linear"] * k
    u = qmc.Sobol(d=2 * k, scramble=True, seed=seed).random(N) if (N & (N - 1)) == 0 else \
        qmc.LatinHypercube(d=2 * k, seed=seed).random(N)
    x = np.empty_like(u)
    for j in range(2 * k):
        lo, hi = bounds[j % k]
        x[:, j] = lo * (hi / lo) ** u[:, j] if scales[j % k] == "log" else lo + (hi - lo) * u[:, j]
    A, B = x[:, :k], x[:, k:]
    AB = np.repeat(A[None], k, axis=0)
    for i in range(k):
        AB[i, :, i] = B[:, i]
    return A, B, AB


def _indices(yA, yB, yAB):
    # Centring on the mean of A and B leaves both estimators unbiased (E[f(AB_i) - f(A)] = 0)
    # and removes the variance that a large mean adds to the first-order one.
    mean = np.mean(np.concatenate([yA, yB], axis=-1), axis=-1, keepdims=True)
    yA, yB, yAB = yA - mean, yB - mean, yAB - mean[..., None, :]
    V = np.var(np.concatenate([yA, yB], axis=-1), axis=-1)
    S1 = np.mean(yB[..., None, :] * (yAB - yA[..., None, :]), axis=-1) / V[..., None]
    ST = 0.5 * np.mean((yA[..., None, :] - yAB) ** 2, axis=-1) / V[..., None]
    return S1, ST


def sobol_indices(yA, yB, yAB, *, bootstrap: int = 500, confidence: float = 0.95, seed: int = 0) -> dict[str, np.ndarray]:
    """First-order (S1) and total (ST) indices with bootstrap percentile intervals.

    ``yA``, ``yB``: (N,) outputs on A and B; ``yAB``: (k, N) outputs on AB_i. Returns arrays of
    length k: ``S1``, ``S1_low``, ``S1_high``, ``ST``, ``ST_low``, ``ST_high``.
    """
    yA, yB, yAB = (np.asarray(a, dtype=float) for a in (yA, yB, yAB))
    S1, ST = _indices(yA, yB, yAB)
    rng = np.random.default_rng(seed)
    N = yA.shape[-1]
    idx = rng.integers(0, N, size=(bootstrap, N))
    bS1, bST = _indices(yA[idx], yB[idx], np.moveaxis(yAB[:, idx], 0, 1))
    a = (1 - confidence) / 2
    return {"S1": S1, "S1_low": np.quantile(bS1, a, axis=0), "S1_high": np.quantile(bS1, 1 - a, axis=0),
            "ST": ST, "ST_low": np.quantile(bST, a, axis=0), "ST_high": np.quantile(bST, 1 - a, axis=0)}


def sobol_analyze(func: Callable[[np.ndarray], np.ndarray], bounds, N: int, *, names=None, scales=None, seed: int = 0,
                  bootstrap: int = 500, confidence: float = 0.95):
    """Sobol indices of a vectorised ``func(X) -> y`` (X: n × k) over ``bounds``: a pandas table."""
    import pandas as pd

    A, B, AB = sobol_sample(bounds, N, seed=seed, scales=scales)
    k = A.shape[1]
    r = sobol_indices(func(A), func(B), np.stack([func(AB[i]) for i in range(k)]), bootstrap=bootstrap,
                      confidence=confidence, seed=seed)
    names = list(names) if names is not None else [f"x{i + 1}" for i in range(k)]
    return pd.DataFrame({"parameter": names, **r})


def sensitivity(
    config,
    /,
    *,
    spec: SensitivitySpec | dict | None = None,
    N: int | None = None,
    subjects: int | None = None,
    seed: int | None = None,
    overrides: dict | None = None,
    endpoints: dict[str, Callable] | None = None,
    progress: bool | None = None,
):
    """Sobol indices of endpoints to model parameters: ``(table, dataset)``.

    Main arguments
    --------------
    config : path of a scenario TOML file (or a Scenario loaded from one).
    spec : a SensitivitySpec or a ``[sensitivity]`` table (default: the config's).
    N, subjects, seed : override the spec's base samples, patients per scenario and design seed.

    Other arguments
    ---------------
    overrides : dotted config fields set first (as ``--set``).
    endpoints : extra endpoints as ``{name: f(sweep Dataset) -> DataArray (scenario[, subject])}``.
    progress : progress bar for the model runs.

    Returns
    -------
    table : pandas.DataFrame, one row per (endpoint, parameter): S1, S1_low, S1_high, ST,
        ST_low, ST_high and ``rank`` (1 = largest total index).
    dataset : xarray.Dataset of the same indices on dims (endpoint, parameter), plus the
        sampled parameters (``X``) and endpoint values (``Y``) on dim ``run``.
    """
    import pandas as pd

    from il2sim.scenario import Scenario, load_scenario
    from il2sim.sweep import SweepDesign, SweepFactor, sweep

    sc = config if isinstance(config, Scenario) else load_scenario(config, overrides=overrides)
    if spec is None:
        spec = sc.sensitivity
        if spec is None:
            raise ConfigError(f"{sc.source}: sensitivity: the config has no [sensitivity] table and no spec was given")
    elif isinstance(spec, dict):
        spec, problems = parse_sensitivity(spec, sc.source)
        if problems:
            raise ConfigError(f"{sc.source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))
    names = list(spec.parameters)
    unknown = [n for n in names if n not in sc.model.parameter_names]
    if unknown:
        raise ConfigError(f"{sc.source}: sensitivity.parameters: unknown model parameter(s) {', '.join(unknown)}")
    N = spec.N if N is None else int(N)
    dseed = spec.seed if seed is None else int(seed)
    A, B, AB = sobol_sample([spec.parameters[n] for n in names], N, seed=dseed,
                            scales=[spec.scales.get(n, "linear") for n in names])
    k = len(names)
    X = np.concatenate([A, B, *AB])  # run order: A, B, AB_1 .. AB_k
    ov = dict(overrides or {})
    if spec.typical:
        ov.update({"population.iiv": {}, "population.iov": {}, "population.correlation": {}})
    design = SweepDesign("grid", tuple(SweepFactor(n, path=f"parameters.{n}", values=(0.0,)) for n in names),
                         points=tuple(tuple(float(x) for x in row) for row in X))
    ds = sweep(sc, design=design, subjects=subjects or spec.subjects, overrides=ov or None, progress=progress)
    fns = {e: _endpoint_function(e, f"{sc.source}: sensitivity.endpoints") for e in spec.endpoints}
    fns.update(endpoints or {})
    rows, S = [], {}
    Ys = {}
    for ename, f in fns.items():
        y = endpoint_values(ds, f).values.astype(float)
        Ys[ename] = y
        r = sobol_indices(y[:N], y[N:2 * N], y[2 * N:].reshape(k, N), bootstrap=spec.bootstrap,
                          confidence=spec.confidence, seed=dseed)
        S[ename] = r
        order = np.argsort(-r["ST"])
        rank = np.empty(k, int)
        rank[order] = np.arange(1, k + 1)
        for i, p in enumerate(names):
            rows.append({"endpoint": ename, "parameter": p, **{key: float(val[i]) for key, val in r.items()},
                         "rank": int(rank[i])})
    table = pd.DataFrame(rows)
    ends = list(fns)
    out = xr.Dataset(
        {key: (("endpoint", "parameter"), np.array([S[e][key] for e in ends])) for key in S[ends[0]]},
        coords={"endpoint": ends, "parameter": names},
    )
    out["X"] = (("run", "parameter"), X)
    out["Y"] = (("endpoint", "run"), np.array([Ys[e] for e in ends]))
    out.attrs.update({"N": N, "seed": dseed, "bootstrap": spec.bootstrap, "confidence": spec.confidence,
                      "subjects": int(subjects or spec.subjects), "typical": int(spec.typical), "config": sc.source,
                      "estimators": "first order: Saltelli 2010; total: Jansen 1999"})
    return table, out
