"""Scenario configs: one TOML file names the models, drug, regimen, population, grid and solver.

```toml
[scenario]
name = "mm_low_dose_1995"
models = ["il2_pk_sc", "il2_signal", "lymphocytes"]   # names in models/ or paths (relative to this file)
seed = 1995

[drug]                      # the declared IU -> nmol factor (DOMAIN.md §1.1)
name = "aldesleukin"
nmol_per_MIU = 3.99

[regimen]                   # see il2sim.regimen
...

[population]
subjects = 18
bsa_formula = "mosteller"   # or "dubois"
[population.covariates]
height = { dist = "normal", mean = 168, sd = 9, lower = 140, upper = 200, unit = "cm" }
weight = { dist = "normal", mean = 72, sd = 12, lower = 40, upper = 130, unit = "kg" }
[population.iiv]            # log-normal inter-individual variability: omega = SD of log(parameter)
CL_lin = 0.3

[parameters]                # overrides of model default values
F = 0.35

[output]
dt_h = 6.0
end_day = 84
variables = ["C", "NK", "Eos"]   # default: every state and output

[solver]
method = "rodas5p"          # or "tsit5"
rtol = 1e-6
atol = 1e-9                 # a number, or a table {state = atol, default = ...}
backend = "cpu"             # "cuda": one subject per GPU thread (numba-cuda); "auto": GPU if present

[response]                  # best response at assessment visits (il2sim.response)
confirm = 2                 # PR/MR must hold at this many consecutive visits
sd_min_days = 84            # progression after this many days of stable disease counts as SD

[[targets]]                 # calibration/validation targets (il2sim.targets)
name = "eos_peak_fold"
variable = "Eos"
statistic = "peak_fold"
window_day = [0, 84]
reported = 15.0
band = [10.0, 22.0]         # declared before fitting
source = "Peest 1995"

[calibration]               # staged fits (il2sim.calibrate; schema in il2sim.targets)
output = "calibration/fitted.toml"
[[calibration.stage]]
name = "pk"
include = ["calibration/pk_iv_konrad_1990.toml"]
parameters = { V1 = [2.0, 5.0] }
```

Every problem in the file is reported at once, naming the file and the field.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from il2sim import _validate as v
from il2sim.errors import ConfigError, Il2simError, ModelSpecError, RegimenError

__all__ = ["Scenario", "SolverSettings", "OutputGrid", "CovariateSpec", "PopulationSpec", "load_scenario"]

SECTIONS = ("scenario", "drug", "regimen", "population", "parameters", "output", "solver", "response", "targets", "calibration", "observations", "events", "sweep", "sensitivity")
# Optional sections and their parsers, ``parse(table, source) -> (value, problems)``; the value
# (or the default when the section is absent) becomes the Scenario field of the same meaning.
_SECTION_PARSERS = {
    "targets": ("il2sim.targets", "parse_targets", ()),
    "calibration": ("il2sim.targets", "parse_calibration", None),
    "observations": ("il2sim.observations", "parse_observations", None),
    "sweep": ("il2sim.sweep", "parse_sweep", None),
    "sensitivity": ("il2sim.sensitivity", "parse_sensitivity", None),
}
SOLVER_METHODS = ("rodas5p", "tsit5")
SOLVER_BACKENDS = ("cpu", "cuda", "auto")
DISTRIBUTIONS = {
    "normal": ("mean", "sd"),
    "lognormal": ("median", "sd_log"),
    "uniform": ("low", "high"),
    "bernoulli": ("p",),
    "fixed": ("value",),
}
BSA_FORMULAS = ("mosteller", "dubois")
#: Largest inter-individual/occasion SD of a log-parameter (e**10 per SD is already absurd).
MAX_OMEGA = 10.0


@dataclass(frozen=True)
class SolverSettings:
    """Integration settings. ``atol`` is a scalar or a per-state mapping (``default`` key for the rest)."""

    method: str = "rodas5p"
    rtol: float = 1e-6
    atol: float | dict[str, float] = 1e-9
    max_steps: int = 1_000_000
    h0: float = 0.0
    hmax: float = 0.0
    backend: str = "cpu"  # "cpu", "cuda" (a GPU, via numba-cuda) or "auto" (the GPU if there is one)

    def atol_vector(self, state_names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Absolute tolerance per state, in each state's unit."""
        if isinstance(self.atol, dict):
            default = self.atol.get("default", 1e-9)
            return np.array([self.atol.get(s, default) for s in state_names], dtype=float)
        return np.full(len(state_names), float(self.atol))


@dataclass(frozen=True)
class OutputGrid:
    """Regular output grid in hours (``start_h`` to ``end_h`` every ``dt_h``) and the variables kept."""

    dt_h: float = 6.0
    end_h: float = 84 * 24.0
    start_h: float = 0.0
    variables: tuple[str, ...] | None = None
    keep_every_h: float | None = None  # thin stored trajectories of cohort runs (il2sim.cohort)

    def times(self) -> np.ndarray:
        """Output times in h, ``end_h`` included."""
        n = int(np.floor((self.end_h - self.start_h) / self.dt_h + 1e-9))
        t = self.start_h + self.dt_h * np.arange(n + 1)
        if t[-1] < self.end_h - 1e-9:
            t = np.append(t, self.end_h)
        return t


@dataclass(frozen=True)
class CovariateSpec:
    """A covariate drawn per subject from ``dist`` with ``params``, truncated to [lower, upper]."""

    name: str
    dist: str
    params: dict[str, float]
    lower: float = -np.inf
    upper: float = np.inf
    unit: str = ""


@dataclass(frozen=True)
class PopulationSpec:
    """Number of subjects, covariate distributions and log-normal IIV (omega per parameter)."""

    subjects: int = 1
    covariates: tuple[CovariateSpec, ...] = ()
    iiv: dict[str, float] = field(default_factory=dict)
    bsa_formula: str = "mosteller"
    correlations: dict[tuple[str, str], float] = field(default_factory=dict)
    iov: dict[str, float] = field(default_factory=dict)  # omega per parameter, occasion = regimen cycle
    covariate_model: tuple = ()  # il2sim.population.CovariateEffect, from [population.covariate_model]
    covariates_table: Any = None  # il2sim.population.CovariateTable, from population.covariates_csv


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: everything ``il2sim.simulate`` needs."""

    name: str
    source: str
    model: Any  # il2sim.model.Model
    models: tuple[str, ...]
    drug: Any  # il2sim.units.Drug
    regimen: Any | None  # il2sim.regimen.Regimen
    population: PopulationSpec
    parameters: dict[str, float]
    output: OutputGrid
    solver: SolverSettings
    seed: int
    description: str = ""
    text: str = ""
    response: Any = None  # il2sim.response.ResponseCriteria
    targets: tuple = ()  # il2sim.targets.Target, from [[targets]]
    calibration: Any = None  # il2sim.targets.CalibrationSpec, from [calibration]
    observations: Any = None  # il2sim.observations.ObservationSpec, from [observations]
    events: Any = None  # {subject ID: [Dose, ...]} from NONMEM-style records ([events] file)
    sweep: Any = None  # il2sim.sweep.SweepDesign, from [sweep]
    sensitivity: Any = None  # il2sim.sensitivity.SensitivitySpec, from [sensitivity]


def _read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario config; raise one ConfigError listing every problem.

    ``overrides`` maps dotted field paths to values (``{"population.subjects": 100}``), applied
    before validation, as the CLI's ``--set`` does.
    """
    path = Path(path)
    data, text = _read_toml(path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value, str(path))
    return scenario_from_dict(data, source=str(path), base_dir=path.parent, text=text)


def _set_dotted(data: dict, dotted: str, value: Any, source: str) -> None:
    """Set ``a.b[1].c`` in nested dicts/lists; indices are 0-based, as in the error messages."""
    node: Any = data
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        key, index = part, None
        if part.endswith("]") and "[" in part:
            key, idx = part[:-1].split("[", 1)
            try:
                index = int(idx)
            except ValueError:
                raise ConfigError(f"{source}: override '{dotted}': index '{idx}' is not an integer") from None
        last = i == len(parts) - 1
        if index is None:
            if last:
                node[key] = value
                return
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override '{dotted}': '{key}' is not a table")
        else:
            seq = node.get(key)
            if not isinstance(seq, list) or not 0 <= index < len(seq):
                n = len(seq) if isinstance(seq, list) else 0
                raise ConfigError(f"{source}: override '{dotted}': {key}[{index}] does not exist ({n} present; indices start at 0)")
            if last:
                seq[index] = value
                return
            node = seq[index]


def scenario_from_dict(data: dict, *, source: str = "<config>", base_dir: Path | None = None, text: str = "") -> Scenario:
    """Validate an already-parsed config mapping (see module docstring for the schema)."""
    from il2sim.model import load_model
    from il2sim.regimen import Regimen
    from il2sim.units import Drug

    base_dir = base_dir or Path.cwd()
    problems: list[str] = v.unknown_keys(data, SECTIONS, source, "")

    sc = data.get("scenario", {})
    if (msg := v.check_table(sc, source, "scenario")) is not None:
        problems.append(msg)
        sc = {}
    problems += v.unknown_keys(sc, ("name", "description", "models", "seed"), source, "scenario")
    name = sc.get("name", Path(source).stem)
    seed = sc.get("seed", 0)
    if (msg := v.check_number(seed, source, "scenario.seed", lower=0, integer=True)) is not None:
        problems.append(msg)
        seed = 0
    model_items = sc.get("models")
    if not isinstance(model_items, list) or not model_items or not all(isinstance(m, str) for m in model_items):
        problems.append(f"{source}: scenario.models: expected a non-empty list of model names or paths, got {model_items!r}")
        model_items = []

    drug, problems_drug = _drug(data.get("drug", {}), source, Drug)
    problems += problems_drug
    population, p = _population(data.get("population", {}), source)
    problems += p
    if isinstance(data.get("population"), dict) and {"covariates_csv", "covariate_model"} & data["population"].keys():
        from il2sim.population import parse_population_extras

        population, p = parse_population_extras(data["population"], population, source, base_dir)
        problems += p
    parameters, p = _parameters(data.get("parameters", {}), source)
    problems += p
    output, p = _output(data.get("output", {}), source)
    problems += p
    solver, p = _solver(data.get("solver", {}), source)
    problems += p
    response, p = _response(data.get("response", {}), source)
    problems += p
    parsed = {}
    for section, (module, func, default) in _SECTION_PARSERS.items():
        parsed[section] = default
        if section in data:  # each optional section is validated by the module that owns it
            parsed[section], p = getattr(importlib.import_module(module), func)(data[section], source)
            problems += p
    targets, calibration, observations = parsed["targets"], parsed["calibration"], parsed["observations"]
    sweep_design, sensitivity = parsed["sweep"], parsed["sensitivity"]

    regimen = None
    if "regimen" in data:
        try:
            regimen = Regimen.from_dict(data["regimen"], source=source)
        except RegimenError as exc:
            problems.append(str(exc))

    model, events = None, None
    resolved = tuple(_resolve_model(m, base_dir) for m in model_items)
    if resolved:
        try:
            model = load_model(list(resolved))
        except ModelSpecError as exc:
            problems.append(f"{source}: scenario.models: {exc}")
    if model is not None:
        problems += _check_against_model(model, parameters, population, output, solver, regimen, source)
        problems += _check_targets(model, targets, calibration, regimen, source)
        from il2sim.observations import check_observations
        from il2sim.population import check_covariate_model

        problems += check_observations(observations, model, output.end_h, source)
        events, p = _events(data.get("events"), regimen, model, base_dir, source)
        problems += p
        problems += check_covariate_model(population, model.parameter_names, source)
        if not problems and parameters:
            model = model.with_parameters(parameters)

    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))
    return Scenario(
        name=str(name), source=source, model=model, models=resolved, drug=drug, regimen=regimen,
        population=population, parameters=parameters, output=output, solver=solver, seed=int(seed),
        description=str(sc.get("description", "")), text=text, response=response, targets=targets,
        calibration=calibration, observations=observations, events=events, sweep=sweep_design,
        sensitivity=sensitivity,
    )


def _events(d: Any, regimen, model, base_dir: Path, source: str) -> tuple[Any, list[str]]:
    """``[events] file = "records.csv"``: NONMEM-style dosing records instead of a regimen.

    Subject i of the cohort gets the records of the i-th ID in the file (in file order); AMT is
    in the dosed state's unit, TIME in h; the model's bioavailability and lag apply as usual.
    """
    if d is None:
        return None, []
    from il2sim.dosing import read_nonmem

    if (msg := v.check_table(d, source, "events")) is not None:
        return None, [msg]
    problems = v.unknown_keys(d, ("file",), source, "events")
    if regimen is not None:
        problems.append(f"{source}: events: give either [regimen] or [events], not both")
    f = d.get("file")
    if not isinstance(f, str) or not f:
        return None, problems + [f"{source}: events.file: expected the path of a CSV file of NONMEM records, got {f!r}"]
    path = Path(f) if Path(f).is_absolute() else base_dir / f
    if not path.is_file():
        return None, problems + [f"{source}: events.file: {path}: file not found"]
    try:
        events = read_nonmem(path, state_names=list(model.state_names))
    except RegimenError as exc:
        return None, problems + [f"{source}: events.file: {exc}"]
    if not events:
        problems.append(f"{source}: events.file: {path}: no dosing records")
    return events, problems


def _resolve_model(item: str, base_dir: Path) -> str:
    if item.endswith(".toml"):
        p = Path(item)
        return str(p if p.is_absolute() else (base_dir / p))
    return item


def _drug(d: Any, source: str, Drug) -> tuple[Any, list[str]]:
    """The declared drug; without a ``[drug]`` table, aldesleukin (1 MIU = 3.99 nmol)."""
    from il2sim.units import ALDESLEUKIN

    if (msg := v.check_table(d, source, "drug")) is not None:
        return None, [msg]
    if not d:
        return ALDESLEUKIN, []
    problems = v.unknown_keys(d, ("name", "nmol_per_MIU", "molar_mass", "source"), source, "drug")
    kw: dict[str, Any] = {"name": str(d.get("name", "aldesleukin")), "source": str(d.get("source", ""))}
    if kw["name"] == ALDESLEUKIN.name:
        kw.setdefault("nmol_per_MIU", ALDESLEUKIN.nmol_per_MIU)
        kw.setdefault("molar_mass", ALDESLEUKIN.molar_mass)
    elif "nmol_per_MIU" not in d:
        problems.append(f"{source}: drug.nmol_per_MIU: required for drug '{kw['name']}' (nmol per million IU)")
    if "nmol_per_MIU" in d:
        if (msg := v.check_number(d["nmol_per_MIU"], source, "drug.nmol_per_MIU", lower=0, strict_lower=True)) is not None:
            problems.append(msg)
        else:
            kw["nmol_per_MIU"] = float(d["nmol_per_MIU"])
    if "molar_mass" in d:
        if (msg := v.check_number(d["molar_mass"], source, "drug.molar_mass", lower=0, strict_lower=True)) is not None:
            problems.append(msg)
        else:
            kw["molar_mass"] = float(d["molar_mass"])
    if problems:
        return None, problems
    try:
        return Drug(**kw), []
    except Il2simError as exc:
        return None, [f"{source}: drug: {exc}"]


def _population(d: Any, source: str) -> tuple[PopulationSpec, list[str]]:
    if (msg := v.check_table(d, source, "population")) is not None:
        return PopulationSpec(), [msg]
    problems = v.unknown_keys(d, ("subjects", "covariates", "iiv", "correlation", "iov", "bsa_formula",
                                     "covariates_csv", "covariate_model"), source, "population")
    subjects = d.get("subjects", 1)
    if (msg := v.check_number(subjects, source, "population.subjects", lower=1, integer=True)) is not None:
        problems.append(msg)
        subjects = 1
    formula = d.get("bsa_formula", "mosteller")
    if (msg := v.check_choice(formula, BSA_FORMULAS, source, "population.bsa_formula")) is not None:
        problems.append(msg)
    covs = []
    cov_table = d.get("covariates", {})
    if (msg := v.check_table(cov_table, source, "population.covariates")) is not None:
        problems.append(msg)
        cov_table = {}
    for cname, spec in cov_table.items():
        f = f"population.covariates.{cname}"
        if (msg := v.check_table(spec, source, f)) is not None:
            problems.append(msg)
            continue
        dist = spec.get("dist")
        if (msg := v.check_choice(dist, DISTRIBUTIONS, source, f + ".dist")) is not None:
            problems.append(msg)
            continue
        needed = DISTRIBUTIONS[dist]
        problems += v.unknown_keys(spec, ("dist", "lower", "upper", "unit", *needed), source, f)
        params = {}
        for key in needed:
            if key not in spec:
                problems.append(f"{source}: {f}.{key}: required for dist = '{dist}'")
                continue
            lower = 0 if key in ("sd", "sd_log") else None
            upper = 1 if key == "p" else None
            if key == "p":
                lower = 0
            if (msg := v.check_number(spec[key], source, f"{f}.{key}", lower=lower, upper=upper)) is not None:
                problems.append(msg)
            else:
                params[key] = float(spec[key])
        lo, hi = spec.get("lower", -np.inf), spec.get("upper", np.inf)
        bounds_ok = True
        for key, val in (("lower", lo), ("upper", hi)):
            if key in spec and (msg := v.check_number(val, source, f"{f}.{key}")) is not None:
                problems.append(msg)
                bounds_ok = False
        if not bounds_ok:  # already reported; keep the spec buildable so other checks still run
            lo, hi = -np.inf, np.inf
        elif lo >= hi:
            problems.append(f"{source}: {f}: expected lower < upper, got lower={lo!r}, upper={hi!r}")
        if dist == "uniform" and {"low", "high"} <= params.keys() and params["low"] >= params["high"]:
            problems.append(f"{source}: {f}: expected low < high, got low={params['low']!r}, high={params['high']!r}")
        covs.append(CovariateSpec(cname, dist, params, float(lo), float(hi), str(spec.get("unit", ""))))
    iiv_ok, p = _omegas(d.get("iiv", {}), source, "population.iiv")
    problems += p
    correlations, p = _correlations(d.get("correlation", {}), iiv_ok, source)
    problems += p
    iov_ok, p_iov = _omegas(d.get("iov", {}), source, "population.iov")
    problems += p_iov
    spec = PopulationSpec(int(subjects), tuple(covs), iiv_ok, str(formula), correlations, iov_ok)
    if correlations and not p:
        from il2sim.population import omega_cholesky

        try:
            omega_cholesky(spec)
        except ConfigError as exc:
            problems.append(f"{source}: {exc}")
    return spec, problems


def _omegas(d: Any, source: str, field_: str) -> tuple[dict[str, float], list[str]]:
    """A table of omegas (SD of the log-parameter, >= 0) per parameter name."""
    if (msg := v.check_table(d, source, field_)) is not None:
        return {}, [msg]
    problems, out = [], {}
    for name, omega in d.items():
        # an SD of log-parameter beyond MAX_OMEGA is a typo (exp(eta) would overflow)
        if (msg := v.check_number(omega, source, f"{field_}.{name}", lower=0, upper=MAX_OMEGA)) is not None:
            problems.append(msg)
        else:
            out[name] = float(omega)
    return out, problems


def _correlations(d: Any, iiv: dict, source: str) -> tuple[dict[tuple[str, str], float], list[str]]:
    """``[population.correlation]``: ``"CL:V1" = 0.5`` — correlation of the two log-parameters."""
    if (msg := v.check_table(d, source, "population.correlation")) is not None:
        return {}, [msg]
    out, problems = {}, []
    for key, rho in d.items():
        f = f"population.correlation.{key}"
        parts = key.split(":")
        if len(parts) != 2 or parts[0] == parts[1]:
            problems.append(f"{source}: {f}: expected a key 'A:B' naming two different parameters")
            continue
        missing = [x for x in parts if x not in iiv]
        if missing:
            problems.append(f"{source}: {f}: {', '.join(missing)} has no entry in population.iiv; correlations need an omega for both")
            continue
        if (msg := v.check_number(rho, source, f, lower=-1, upper=1)) is not None:
            problems.append(msg)
            continue
        out[(parts[0], parts[1])] = float(rho)
    return out, problems


def _response(d: Any, source: str) -> tuple[Any, list[str]]:
    """``[response]``: classification of best response at assessment visits (il2sim.response)."""
    from il2sim.response import ResponseCriteria

    if (msg := v.check_table(d, source, "response")) is not None:
        return ResponseCriteria(), [msg]
    problems = v.unknown_keys(d, ("pr_fall", "mr_fall", "confirm", "sd_min_days"), source, "response")
    kw: dict[str, Any] = {}
    for key, lower, upper, integer in (("pr_fall", 0, 1, False), ("mr_fall", 0, 1, False),
                                       ("confirm", 1, None, True), ("sd_min_days", 0, None, False)):
        if key in d:
            if (msg := v.check_number(d[key], source, f"response.{key}", lower=lower, upper=upper, integer=integer)) is not None:
                problems.append(msg)
            else:
                kw[key] = d[key]
    if not problems and kw.get("mr_fall", 0.25) > kw.get("pr_fall", 0.5):
        problems.append(f"{source}: response: expected mr_fall <= pr_fall, got mr_fall={kw.get('mr_fall', 0.25)!r}, pr_fall={kw.get('pr_fall', 0.5)!r}")
    if problems:
        return ResponseCriteria(), problems
    return ResponseCriteria(**kw), []


def _check_targets(model, targets, calibration, regimen, source) -> list[str]:
    """Target variables and calibrated parameters must exist in the model."""
    import difflib

    from il2sim.targets import check_target_variables

    has_progression = regimen is not None and regimen.stop == "progression"
    problems = check_target_variables(targets, model, has_progression, source)
    if calibration is not None:
        pnames = list(model.parameter_names)
        tnames = [t.name for t in targets]
        for i, stage in enumerate(calibration.stages):
            for name, (lo, hi) in stage.parameters.items():
                if name not in pnames:
                    close = difflib.get_close_matches(name, pnames, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    problems.append(f"{source}: calibration.stage[{i}].parameters.{name}: unknown model parameter{hint}")
                    continue
                prm = model.parameters[pnames.index(name)]
                if lo < prm.lower or hi > prm.upper:
                    problems.append(f"{source}: calibration.stage[{i}].parameters.{name}: bounds [{lo:g}, {hi:g}] exceed the model's [{prm.lower:g}, {prm.upper:g}]")
            for name in stage.targets or ():
                if name not in tnames:
                    close = difflib.get_close_matches(name, tnames, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    problems.append(f"{source}: calibration.stage[{i}].targets: no target named '{name}'{hint}")
    return problems


def _parameters(d: Any, source: str) -> tuple[dict[str, float], list[str]]:
    if (msg := v.check_table(d, source, "parameters")) is not None:
        return {}, [msg]
    problems, out = [], {}
    for k, val in d.items():
        if (msg := v.check_number(val, source, f"parameters.{k}")) is not None:
            problems.append(msg)
        else:
            out[k] = float(val)
    return out, problems


#: Most points an output grid may have (10 years every 3 s): beyond that the grid alone would not
#: fit in memory, and ``dt_h = 1e-9`` is a typo, not a design.
MAX_OUTPUT_TIMES = 100_000_000


def _output(d: Any, source: str) -> tuple[OutputGrid, list[str]]:
    if (msg := v.check_table(d, source, "output")) is not None:
        return OutputGrid(), [msg]
    problems = v.unknown_keys(d, ("dt_h", "end_day", "end_h", "start_h", "variables", "keep_every_h"), source, "output")
    dt = d.get("dt_h", 6.0)
    if (msg := v.check_number(dt, source, "output.dt_h", lower=0, strict_lower=True)) is not None:
        problems.append(msg)
        dt = 6.0
    if "end_day" in d and "end_h" in d:
        problems.append(f"{source}: output: give end_day or end_h, not both")
    end_h = 84 * 24.0
    if "end_day" in d:
        if (msg := v.check_number(d["end_day"], source, "output.end_day", lower=0, strict_lower=True)) is not None:
            problems.append(msg)
        else:
            end_h = 24.0 * d["end_day"]
    if "end_h" in d:
        if (msg := v.check_number(d["end_h"], source, "output.end_h", lower=0, strict_lower=True)) is not None:
            problems.append(msg)
        else:
            end_h = float(d["end_h"])
    start = d.get("start_h", 0.0)
    if (msg := v.check_number(start, source, "output.start_h", lower=0)) is not None:
        problems.append(msg)
        start = 0.0
    if start >= end_h:
        problems.append(f"{source}: output.start_h: expected < end ({end_h:g} h), got {start!r}")
    elif (end_h - start) / dt + 1 > MAX_OUTPUT_TIMES:
        # the grid is made by three fields: name each, whichever of them the user got wrong
        end = (f"end_h = {d['end_h']!r}" if "end_h" in d else f"end_day = {d['end_day']!r}" if "end_day" in d
               else "end_day = 84 (default)")
        problems.append(f"{source}: output: dt_h = {dt!r} h from start_h = {start!r} to {end} ({end_h:g} h) gives "
                        f"{(end_h - start) / dt + 1:.3g} time points; expected at most {MAX_OUTPUT_TIMES:.0e} (a larger "
                        f"dt_h or an earlier end; keep_every_h thins what a cohort run stores)")
    variables = d.get("variables")
    if variables is not None and (not isinstance(variables, list) or not all(isinstance(x, str) for x in variables)):
        problems.append(f"{source}: output.variables: expected a list of state/output names, got {variables!r}")
        variables = None
    keep = d.get("keep_every_h")
    if keep is not None:
        if (msg := v.check_number(keep, source, "output.keep_every_h", lower=0, strict_lower=True)) is not None:
            problems.append(msg)
            keep = None
        elif abs(keep / dt - round(keep / dt)) > 1e-9 * max(1.0, keep / dt):
            problems.append(f"{source}: output.keep_every_h: expected a multiple of output.dt_h ({dt:g} h), got {keep!r}")
            keep = None
    return OutputGrid(float(dt), float(end_h), float(start), tuple(variables) if variables else None,
                      None if keep is None else float(keep)), problems


def _solver(d: Any, source: str) -> tuple[SolverSettings, list[str]]:
    if (msg := v.check_table(d, source, "solver")) is not None:
        return SolverSettings(), [msg]
    problems = v.unknown_keys(d, ("method", "rtol", "atol", "max_steps", "h0", "hmax", "backend"), source, "solver")
    kw: dict[str, Any] = {}
    method = d.get("method", "rodas5p")
    if (msg := v.check_choice(method, SOLVER_METHODS, source, "solver.method")) is not None:
        problems.append(msg)
    else:
        kw["method"] = method
    rtol = d.get("rtol", 1e-6)
    if (msg := v.check_number(rtol, source, "solver.rtol", lower=1e-14, upper=0.1)) is not None:
        problems.append(msg)
    else:
        kw["rtol"] = float(rtol)
    atol = d.get("atol", 1e-9)
    if isinstance(atol, dict):
        for k, x in atol.items():
            if (msg := v.check_number(x, source, f"solver.atol.{k}", lower=0, strict_lower=True)) is not None:
                problems.append(msg)
        kw["atol"] = {k: float(x) for k, x in atol.items() if isinstance(x, (int, float))}
    elif (msg := v.check_number(atol, source, "solver.atol", lower=0, strict_lower=True)) is not None:
        problems.append(msg)
    else:
        kw["atol"] = float(atol)
    if "max_steps" in d:
        if (msg := v.check_number(d["max_steps"], source, "solver.max_steps", lower=1, integer=True)) is not None:
            problems.append(msg)
        else:
            kw["max_steps"] = int(d["max_steps"])
    for key in ("h0", "hmax"):
        if key in d:
            if (msg := v.check_number(d[key], source, f"solver.{key}", lower=0)) is not None:
                problems.append(msg)
            else:
                kw[key] = float(d[key])
    if "backend" in d:
        if (msg := v.check_choice(d["backend"], SOLVER_BACKENDS, source, "solver.backend")) is not None:
            problems.append(msg)
        else:
            kw["backend"] = d["backend"]
    return SolverSettings(**kw), problems


def _check_against_model(model, parameters, population, output, solver, regimen, source) -> list[str]:
    """Cross-checks that need the composed model: names used in the config must exist."""
    import difflib

    problems = []
    pnames = list(model.parameter_names)
    variables = list(model.state_names) + list(model.output_names)

    def unknown(kind, name, field_, valid):
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: {field_}: unknown {kind} '{name}'{hint}"

    for k in parameters:
        if k not in pnames:
            problems.append(unknown("model parameter", k, f"parameters.{k}", pnames))
    for k in population.iiv:
        if k not in pnames:
            problems.append(unknown("model parameter", k, f"population.iiv.{k}", pnames))
    for k in population.iov:
        if k not in pnames:
            problems.append(unknown("model parameter", k, f"population.iov.{k}", pnames))
    if population.iov and regimen is None:
        problems.append(f"{source}: population.iov: occasions are the cycles of a [regimen]; this scenario has none")
    for var in output.variables or ():
        if var not in variables:
            problems.append(unknown("state or output", var, "output.variables", variables))
    if isinstance(solver.atol, dict):
        for k in solver.atol:
            if k != "default" and k not in model.state_names:
                problems.append(unknown("state", k, f"solver.atol.{k}", list(model.state_names)))
    if regimen is not None and regimen.stop == "progression":
        from il2sim.stop_rules import ProgressionRule

        rule = ProgressionRule()
        units = {x.name: x.unit for x in (*model.states, *model.outputs)}
        if rule.output not in units:
            problems.append(f"{source}: regimen.stop: 'progression' is judged on '{rule.output}' (serum M-protein, {rule.unit}), "
                            f"which none of the models defines; add the myeloma model or set stop = \"none\"")
        elif units[rule.output] != rule.unit:
            problems.append(f"{source}: regimen.stop: 'progression' needs '{rule.output}' in {rule.unit}, but the model gives {units[rule.output]}")
    if regimen is not None:
        targets = {regimen.target: "regimen.target"}
        for i, block in enumerate(regimen.blocks):
            if block.target is not None:
                targets.setdefault(block.target, f"regimen.block[{i}].target")
        units = {s.name: s.unit for s in model.states}
        for target, field_ in targets.items():
            if target not in units:
                problems.append(unknown("state", target, field_, list(model.state_names)))
            elif units[target] not in ("nmol", "pmol"):
                problems.append(f"{source}: {field_}: dosed state '{target}' has unit '{units[target]}'; expected an amount in nmol or pmol")
    return problems
