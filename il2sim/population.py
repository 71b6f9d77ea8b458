"""Virtual subjects: covariates, covariate models and log-normal inter-individual variability (full Ω).

Randomness is keyed by subject index: subject ``i`` draws from
``SeedSequence(seed, spawn_key=(i,))`` (the ``i``-th child of ``SeedSequence(seed).spawn``),
always in the same order (covariates as declared, then one standard normal per IIV
parameter, in declared order). A subject is therefore the same patient whatever the cohort
size, the chunking or the number of threads. Other per-subject streams hang off the same
subject key with a second element, so they never shift the parameter draws:
``(i, 1)`` residual error of simulated observations (il2sim.observations), ``(i, 2)`` the row of
a covariate CSV when rows are resampled, ``(i, 3)`` inter-occasion deviates.

Parameters of subject ``i``::

    P_i = θ · Π_k effect_k(covariate_ik) · exp(η_i),   η_i ~ N(0, Ω)

with θ the model value (after ``[parameters]`` overrides) and the covariate effects of
``[population.covariate_model]``:

=============  ==========================================  ===================
form           factor                                      key
=============  ==========================================  ===================
power          (x / reference) ** exponent                 ``exponent``
linear         1 + slope * (x - reference)                 ``slope``
exponential    exp(theta * (x - reference))                ``theta``
=============  ==========================================  ===================

Covariates of real patients come from ``[population] covariates_csv``: subject ``i`` takes row
``i mod n_rows`` (``rows = "cycle"``, the default: the first ``n_rows`` subjects are the
patients, in file order) or a row drawn from its own stream (``rows = "resample"``, the usual
bootstrap of a virtual population). Either way subject ``i`` gets the same row in any cohort.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from il2sim import _validate as v
from il2sim.errors import ConfigError
from il2sim.scenario import CovariateSpec, PopulationSpec
from il2sim.units import bsa_dubois, bsa_mosteller

__all__ = [
    "Cohort", "CovariateEffect", "CovariateTable", "COVARIATE_FORMS", "CSV_ROWS", "subject_rng",
    "sample_cohort", "omega_matrix", "omega_cholesky", "parse_population_extras", "check_covariate_model",
]

#: form -> the key holding its coefficient
COVARIATE_FORMS = {"power": "exponent", "linear": "slope", "exponential": "theta"}
#: how subjects map to the rows of a covariate CSV
CSV_ROWS = ("cycle", "resample")
#: second element of the per-subject seed key of the CSV row stream (see module docstring)
CSV_STREAM = 2
IOV_STREAM = 3  # inter-occasion deviates (streams: (i,) parameters, (i, 1) residual errors)


@dataclass(frozen=True)
class Cohort:
    """Per-subject covariates (name -> array) and parameter matrix (subject × parameter)."""

    subject: np.ndarray
    covariates: dict[str, np.ndarray]
    covariate_units: dict[str, str]
    parameters: np.ndarray


@dataclass(frozen=True)
class CovariateEffect:
    """One covariate effect on one parameter: ``P *= factor(x)`` (forms in the module docstring)."""

    parameter: str
    covariate: str
    form: str
    reference: float
    coefficient: float

    def factor(self, x: np.ndarray) -> np.ndarray:
        """Multiplicative factor for covariate values ``x``."""
        x = np.asarray(x, dtype=float)
        if self.form == "power":
            with np.errstate(divide="ignore", invalid="ignore"):
                return (x / self.reference) ** self.coefficient
        if self.form == "linear":
            return 1.0 + self.coefficient * (x - self.reference)
        return np.exp(self.coefficient * (x - self.reference))


@dataclass(frozen=True, eq=False, repr=False)
class CovariateTable:
    """Covariates of real patients read from a CSV file: ``values`` is rows × columns."""

    path: str
    columns: tuple[str, ...]
    values: np.ndarray
    units: dict[str, str] = field(default_factory=dict)
    rows: str = "cycle"
    sha256: str = ""

    def __repr__(self) -> str:  # the content hash stands for the values (used in run fingerprints)
        return (f"CovariateTable(path={self.path!r}, columns={self.columns!r}, n_rows={self.values.shape[0]}, "
                f"units={self.units!r}, rows={self.rows!r}, sha256={self.sha256!r})")

    def row_of(self, seed: int, subjects: np.ndarray) -> np.ndarray:
        """The CSV row (0-based) that each subject takes."""
        n_rows = self.values.shape[0]
        if self.rows == "cycle":
            return np.asarray(subjects, dtype=np.int64) % n_rows
        return np.array([
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(i), CSV_STREAM))).integers(n_rows)
            for i in subjects
        ], dtype=np.int64)


def subject_rng(seed: int, subject: int) -> np.random.Generator:
    """The random stream of one subject, independent of every other subject."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(subject),)))


def _draw(spec: CovariateSpec, u: float) -> float:
    """Inverse-CDF draw from the truncated distribution, so one uniform gives one value."""
    p = spec.params
    lo, hi = spec.lower, spec.upper
    if spec.dist == "fixed":
        return p["value"]
    if spec.dist == "bernoulli":
        return 1.0 if u < p["p"] else 0.0
    if spec.dist == "uniform":
        a, b = max(p["low"], lo), min(p["high"], hi)
        return a + u * (b - a)
    if spec.dist == "normal":
        mu, sd = p["mean"], p["sd"]
        to_x = lambda z: mu + sd * z  # noqa: E731
        to_z = lambda x: (x - mu) / sd if sd > 0 else 0.0  # noqa: E731
    else:  # lognormal
        mu, sd = np.log(p["median"]), p["sd_log"]
        to_x = lambda z: float(np.exp(mu + sd * z))  # noqa: E731
        to_z = lambda x: ((np.log(x) - mu) / sd if sd > 0 else 0.0) if x > 0 else -np.inf  # noqa: E731
    if sd == 0:
        return float(min(max(to_x(0.0), lo), hi))
    c_lo = special.ndtr(to_z(lo)) if np.isfinite(lo) else 0.0
    c_hi = special.ndtr(to_z(hi)) if np.isfinite(hi) else 1.0
    return float(to_x(special.ndtri(c_lo + u * (c_hi - c_lo))))


def omega_matrix(spec: PopulationSpec) -> np.ndarray:
    """Ω (variances and covariances of the log-parameters) in ``spec.iiv`` order: D R D."""
    names = list(spec.iiv)
    sd = np.array([spec.iiv[k] for k in names], dtype=float)
    R = np.eye(len(names))
    for (a, b), rho in spec.correlations.items():
        i, j = names.index(a), names.index(b)
        R[i, j] = R[j, i] = rho
    return R * np.outer(sd, sd)


def omega_cholesky(spec: PopulationSpec) -> np.ndarray:
    """Lower factor L with L Lᵀ = Ω, so that η = L z for independent standard normal z.

    Parameters with zero omega are allowed (their rows are zero); the correlation matrix of the
    others must be positive definite.
    """
    omega = omega_matrix(spec)
    k = omega.shape[0]
    L = np.zeros((k, k))
    live = np.flatnonzero(np.diag(omega) > 0)
    if live.size:
        sub = omega[np.ix_(live, live)]
        try:
            L[np.ix_(live, live)] = np.linalg.cholesky(sub)
        except np.linalg.LinAlgError:
            names = [list(spec.iiv)[i] for i in live]
            raise ConfigError(
                f"population.correlation: the correlations among {', '.join(names)} do not form a valid "
                "(positive definite) correlation matrix; reduce them or remove one"
            ) from None
    return L


def iov_etas(seed: int, subjects: np.ndarray, n_occasions: int, n_parameters: int) -> np.ndarray:
    """Standard normal inter-occasion deviates, (subjects, occasions, parameters).

    Drawn from a per-subject stream of their own (``spawn_key=(i, IOV_STREAM)``), so declaring IOV never
    changes a subject's covariates, IIV or residual errors.
    """
    out = np.empty((np.size(subjects), n_occasions, n_parameters))
    for row, sid in enumerate(np.asarray(subjects, dtype=np.int64)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(sid), IOV_STREAM)))
        out[row] = rng.standard_normal((n_occasions, n_parameters))
    return out


def sample_cohort(
    spec: PopulationSpec,
    parameter_names: list[str] | tuple[str, ...],
    base_parameters: np.ndarray,
    seed: int,
    subjects: np.ndarray | None = None,
) -> Cohort:
    """Draw covariates and parameters for the given subject indices (default 0..n-1).

    Raises ``ConfigError`` if a covariate model gives a subject a factor that is not a positive
    finite number (e.g. a linear effect far from its reference), naming the subject.
    """
    subjects = np.arange(spec.subjects) if subjects is None else np.asarray(subjects, dtype=np.int64)
    n = subjects.size
    names = list(parameter_names)
    iiv_idx = [names.index(k) for k in spec.iiv]
    chol = omega_cholesky(spec)
    cov = {c.name: np.empty(n) for c in spec.covariates}
    eta = np.zeros((n, len(iiv_idx)))
    for row, sid in enumerate(subjects):
        rng = subject_rng(seed, sid)
        u = rng.random(len(spec.covariates))
        for k, c in enumerate(spec.covariates):
            cov[c.name][row] = _draw(c, u[k])
        if iiv_idx:
            eta[row] = rng.standard_normal(len(iiv_idx))
    units = {c.name: c.unit for c in spec.covariates}
    table = getattr(spec, "covariates_table", None)
    if table is not None:
        rows = table.row_of(seed, subjects)
        for j, col in enumerate(table.columns):
            cov[col] = table.values[rows, j].copy()
            units[col] = table.units.get(col, "")
        cov["csv_row"] = rows
        units["csv_row"] = ""
    P = np.tile(np.asarray(base_parameters, dtype=float), (n, 1))
    if iiv_idx:
        P[:, iiv_idx] *= np.exp(eta @ chol.T)
    if "height" in cov and "weight" in cov:
        f = bsa_dubois if spec.bsa_formula == "dubois" else bsa_mosteller
        cov["BSA"] = f(cov["height"], cov["weight"])
        units["BSA"] = "m2"
    for effect in getattr(spec, "covariate_model", ()):
        x = cov[effect.covariate]
        factor = effect.factor(x)
        bad = np.flatnonzero(~(np.isfinite(factor) & (factor > 0)))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"population.covariate_model.{effect.parameter}: subject {int(subjects[i])} has "
                f"{effect.covariate} = {float(x[i]):g}, for which the {effect.form} effect gives the factor "
                f"{float(factor[i]):g}; expected a positive number (bound the covariate or change the effect)"
            )
        P[:, names.index(effect.parameter)] *= factor
    return Cohort(subjects, cov, units, P)


# ---------------------------------------------------------------------------------------------
# Config: [population] covariates_csv and [population.covariate_model]

def parse_population_extras(d: Any, spec: PopulationSpec, source: str, base_dir: Path | None = None) -> tuple[PopulationSpec, list[str]]:
    """Read ``covariates_csv`` and ``covariate_model`` of a ``[population]`` table into ``spec``.

    ``covariates_csv`` is a path (relative to the config) or a table
    ``{ path = "...", rows = "cycle" | "resample", columns = [...], units = { weight = "kg" } }``.
    ``[population.covariate_model]`` maps a parameter to one effect or a list of effects:
    ``CL = { covariate = "weight", reference = 70, exponent = 0.75 }`` (``form`` is inferred from
    ``exponent``/``slope``/``theta`` and may be given explicitly).
    """
    if not isinstance(d, dict):
        return spec, []
    problems: list[str] = []
    table = None
    if "covariates_csv" in d:
        table, p = _parse_csv(d["covariates_csv"], source, base_dir or Path(source).parent)
        problems += p
    known = [c.name for c in spec.covariates]
    if table is not None:
        both = [c for c in table.columns if c in known]
        if both:
            problems.append(f"{source}: population.covariates_csv: column(s) {', '.join(both)} are also declared in "
                            "population.covariates; give each covariate one source")
        known += [*table.columns, "csv_row"]
    if "height" in known and "weight" in known:
        known.append("BSA")
    effects: list[CovariateEffect] = []
    if "covariate_model" in d:
        effects, p = _parse_covariate_model(d["covariate_model"], known, source)
        problems += p
    return replace(spec, covariates_table=table, covariate_model=tuple(effects)), problems


def check_covariate_model(spec: PopulationSpec, parameter_names, source: str) -> list[str]:
    """Parameters named in ``[population.covariate_model]`` must exist in the model."""
    import difflib

    names = list(parameter_names)
    problems = []
    for pname in dict.fromkeys(e.parameter for e in getattr(spec, "covariate_model", ())):
        if pname not in names:
            close = difflib.get_close_matches(pname, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{source}: population.covariate_model.{pname}: unknown model parameter '{pname}'{hint}")
    return problems


def _parse_covariate_model(d: Any, known: list[str], source: str) -> tuple[list[CovariateEffect], list[str]]:
    import difflib

    if (msg := v.check_table(d, source, "population.covariate_model")) is not None:
        return [], [msg]
    effects, problems = [], []
    for pname, items in d.items():
        many = isinstance(items, list)
        for k, item in enumerate(items if many else [items]):
            f = f"population.covariate_model.{pname}" + (f"[{k}]" if many else "")
            if (msg := v.check_table(item, source, f)) is not None:
                problems.append(msg)
                continue
            problems += v.unknown_keys(item, ("covariate", "reference", "form", *COVARIATE_FORMS.values()), source, f)
            cov = item.get("covariate")
            if not isinstance(cov, str):
                problems.append(f"{source}: {f}.covariate: expected the name of a covariate, got {v.describe(cov)}")
            elif cov not in known:
                close = difflib.get_close_matches(cov, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"{source}: {f}.covariate: unknown covariate '{cov}'{hint}; known: {', '.join(known) or 'none'}")
            given = [form for form, key in COVARIATE_FORMS.items() if key in item]
            form = item.get("form")
            if form is not None and (msg := v.check_choice(form, COVARIATE_FORMS, source, f + ".form")) is not None:
                problems.append(msg)
                continue
            if form is None:
                if len(given) != 1:
                    keys = " or ".join(COVARIATE_FORMS.values())
                    problems.append(f"{source}: {f}: expected exactly one of {keys} (power, linear or exponential effect), "
                                    f"got {len(given)}")
                    continue
                form = given[0]
            elif given != [form]:
                problems.append(f"{source}: {f}: form '{form}' takes the key '{COVARIATE_FORMS[form]}' only")
                continue
            key = COVARIATE_FORMS[form]
            if (msg := v.check_number(item[key], source, f"{f}.{key}")) is not None:
                problems.append(msg)
                continue
            ref = item.get("reference", 1.0 if form == "power" else 0.0)
            strict = form == "power"
            if (msg := v.check_number(ref, source, f"{f}.reference", lower=0 if strict else None, strict_lower=strict)) is not None:
                problems.append(msg)
                continue
            if "reference" not in item and form == "power":
                problems.append(f"{source}: {f}.reference: required for a power effect (the covariate value with factor 1, e.g. 70 kg)")
                continue
            if isinstance(cov, str):
                effects.append(CovariateEffect(str(pname), cov, form, float(ref), float(item[key])))
    return effects, problems


def _parse_csv(value: Any, source: str, base_dir: Path) -> tuple[CovariateTable | None, list[str]]:
    import pandas as pd

    f = "population.covariates_csv"
    if isinstance(value, str):
        value = {"path": value}
    if (msg := v.check_table(value, source, f)) is not None:
        return None, [f"{source}: {f}: expected a path or a table {{ path = ..., rows = ... }}, got {v.describe(value)}"]
    problems = v.unknown_keys(value, ("path", "rows", "columns", "units"), source, f)
    path = value.get("path")
    if not isinstance(path, str) or not path:
        return None, problems + [f"{source}: {f}.path: expected the path of a CSV file, got {v.describe(path)}"]
    rows = value.get("rows", "cycle")
    if (msg := v.check_choice(rows, CSV_ROWS, source, f"{f}.rows")) is not None:
        problems.append(msg)
    units = value.get("units", {})
    if (msg := v.check_table(units, source, f"{f}.units")) is not None:
        problems.append(msg)
        units = {}
    columns = value.get("columns")
    if columns is not None and (not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)):
        problems.append(f"{source}: {f}.columns: expected a non-empty list of column names, got {v.describe(columns)}")
        columns = None
    file = Path(path) if Path(path).is_absolute() else base_dir / path
    try:
        raw = file.read_bytes()
    except OSError as exc:
        return None, problems + [f"{source}: {f}: cannot read {file} ({exc.strerror or exc})"]
    import io

    try:
        frame = pd.read_csv(io.BytesIO(raw), skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as exc:
        return None, problems + [f"{source}: {f}: {file} is not a readable CSV file: {exc}"]
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.shape[0] == 0:
        return None, problems + [f"{source}: {f}: {file} has no data rows"]
    if columns is None:
        columns = list(frame.columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        problems.append(f"{source}: {f}.columns: {file} has no column(s) {', '.join(missing)}; it has {', '.join(frame.columns)}")
        return None, problems
    for c in units:
        if c not in columns:
            problems.append(f"{source}: {f}.units.{c}: not a column used from {file}")
    bad_names = [c for c in columns if not c.isidentifier()]
    if bad_names:
        problems.append(f"{source}: {f}: column name(s) {', '.join(map(repr, bad_names))} in {file} are not identifiers")
    values = np.empty((frame.shape[0], len(columns)))
    for j, c in enumerate(columns):
        col = pd.to_numeric(frame[c], errors="coerce")
        bad = np.flatnonzero(col.isna().to_numpy())
        if bad.size:
            r = int(bad[0])
            problems.append(f"{source}: {f}: {file}, column '{c}', data row {r + 1}: expected a number, got {frame[c].iloc[r]!r}"
                            + (f" ({bad.size} such rows; list the numeric columns in {f}.columns)" if bad.size > 1 else ""))
            continue
        values[:, j] = col.to_numpy(dtype=float)
    if problems:
        return None, problems
    return CovariateTable(str(file), tuple(columns), values, {str(k): str(u) for k, u in units.items()}, str(rows),
                          hashlib.sha256(raw).hexdigest()), []
