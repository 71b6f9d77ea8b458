"""Sweeps: one scenario config run over a design of factor values, on the same virtual patients.

```toml
[sweep]
design = "grid"            # "grid" (full factorial over the levels), "lhs" or "sobol" (scipy.stats.qmc)
n = 16                     # points of an lhs/sobol design (sobol: a power of 2 keeps its balance)
seed = 1                   # seed of the lhs/sobol design (the patients' seed is scenario.seed)
subjects = 8               # virtual patients per scenario (default: population.subjects)

[[sweep.factor]]
name = "maintenance_dose"  # a named regimen factor (table below) ...
range = [0.1, 3.0]         # ... with a range (lhs/sobol; grid with `levels`) ...
levels = 8                 # grid: this many levels over the range
scale = "log"              # "linear" (default) or "log"

[[sweep.factor]]
path = "parameters.EC50_Treg"         # ... or any dotted config path (0-based indices)
values = [1.0, 3.0, 10.0]             # explicit levels (grid; lhs/sobol pick among them)
```

Every scenario is the config with the factor values set by dotted path (as ``--set`` does)
and validated as a whole; it runs with the same seed and the same subject ids, so subject i
is the same patient (covariates and random effects) in every scenario: common random numbers,
so differences between scenarios are due to the factors alone. A model parameter set by a
factor is the typical value θ; each patient keeps its own covariate effects and exp(η).

Named regimen factors (the maintenance block is the config's last ``[[regimen.block]]``, the
loading block its first; both must exist when the name is used):

==================== ===================================================== ======================
name                 config field(s) set                                   value
==================== ===================================================== ======================
``maintenance_dose`` ``regimen.block[last].amount``                        amount per dose
``dose``             ``regimen.block[i].amount`` of every block, scaled so  maintenance amount;
                     the maintenance block gets the value (loading keeps   the loading:maintenance
                     its ratio)                                            ratio is kept
``loading_dose``     ``regimen.block[0].amount`` (needs >= 2 blocks)       amount per dose
``doses_per_day``    ``regimen.block[last].clock``: k doses from 08:00,    integer 1..6
                     24/k h apart (1: 08:00; 2: 08:00, 20:00; 3: 00:00,
                     08:00, 16:00)
``days_per_week``    ``regimen.block[last].weekdays``: 7 all, 5 Mon-Fri,   integer 1..7
                     3 Mon/Wed/Fri (table ``WEEKDAY_SETS``)
``cycle_days``       ``regimen.cycle_days``                                integer days
``rest_weeks``       ``regimen.cycle_days`` = last dosing day of the cycle integer weeks
                     + 7 × value
==================== ===================================================== ======================

Results: an ``xarray.Dataset`` with dims ``scenario``, ``subject``, ``time`` (every variable of
a single run gains the ``scenario`` dimension, per-subject coordinates included) and one
coordinate per factor on ``scenario`` holding its value (a list value, such as a clock list,
as its TOML text). With ``out`` each scenario is streamed into a zarr store (written to
``<out>.partial`` and renamed when complete), so a large sweep never holds more than one
scenario in memory.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import time as _time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from il2sim import _validate as v
from il2sim.errors import ConfigError

__all__ = ["SweepFactor", "SweepDesign", "parse_sweep", "design_points", "sweep", "NAMED_FACTORS", "WEEKDAY_SETS"]

DESIGNS = ("grid", "lhs", "sobol")
SCALES = ("linear", "log")
#: named regimen factors: whether their values are integers
NAMED_FACTORS = {
    "maintenance_dose": False, "dose": False, "loading_dose": False, "doses_per_day": True,
    "days_per_week": True, "cycle_days": True, "rest_weeks": True,
}
WEEKDAY_SETS = {
    1: ["Mon"], 2: ["Mon", "Thu"], 3: ["Mon", "Wed", "Fri"], 4: ["Mon", "Tue", "Thu", "Fri"],
    5: ["Mon", "Tue", "Wed", "Thu", "Fri"], 6: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat"],
    7: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
}


@dataclass(frozen=True)
class SweepFactor:
    """One factor: a named regimen factor or a dotted config path, with levels or a range."""

    name: str
    path: str | None = None  # dotted config path; None for a named factor
    values: tuple | None = None
    range: tuple[float, float] | None = None
    levels: int | None = None
    scale: str = "linear"
    integer: bool = False

    def grid_levels(self) -> list:
        """Levels of a grid design: ``values``, or ``levels`` points over ``range``."""
        if self.values is not None:
            return list(self.values)
        lo, hi = self.range
        u = np.linspace(0.0, 1.0, self.levels)
        return [self._round(x) for x in self.from_unit(u)]

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map points of [0, 1) onto the factor's range (linear or log)."""
        lo, hi = self.range
        if self.scale == "log":
            return lo * (hi / lo) ** u
        return lo + (hi - lo) * u

    def at_unit(self, u: float):
        """The factor's value at a point ``u`` in [0, 1) of a space-filling design."""
        if self.values is not None:
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        x = float(self.from_unit(np.array([u]))[0])
        if self.integer:  # equal-width bins over [lo, hi] so each integer is equally likely
            lo, hi = self.range
            return int(min(hi, math.floor(lo + (hi - lo + 1) * u)))
        return x

    def _round(self, x):
        return int(round(x)) if self.integer else float(x)

    def overrides(self, value, data: dict, source: str) -> dict[str, Any]:
        """The dotted config paths and values this factor sets for ``value``."""
        if self.path is not None:
            return {self.path: value}
        blocks = data.get("regimen", {}).get("block") if isinstance(data.get("regimen"), dict) else None
        if not isinstance(blocks, list) or not blocks:
            raise ConfigError(f"{source}: sweep.factor '{self.name}': needs a [regimen] with [[regimen.block]] tables")
        last = len(blocks) - 1
        if self.name == "maintenance_dose":
            return {f"regimen.block[{last}].amount": value}
        if self.name == "loading_dose":
            if last == 0:
                raise ConfigError(f"{source}: sweep.factor 'loading_dose': the regimen has one block; "
                                  f"a loading block is the first of two or more")
            return {"regimen.block[0].amount": value}
        if self.name == "dose":
            base = blocks[last].get("amount")
            if not isinstance(base, (int, float)) or base <= 0:
                raise ConfigError(f"{source}: sweep.factor 'dose': regimen.block[{last}].amount must be a positive number to scale the others")
            return {f"regimen.block[{i}].amount": b.get("amount", 0) * value / base for i, b in enumerate(blocks)}
        if self.name == "doses_per_day":
            k = int(value)
            if not 1 <= k <= 6 or k != value:
                raise ConfigError(f"{source}: sweep.factor 'doses_per_day': expected an integer 1..6, got {value!r}")
            minutes = sorted((8 * 60 + i * (24 * 60 // k)) % (24 * 60) for i in range(k))
            return {f"regimen.block[{last}].clock": [f"{m // 60:02d}:{m % 60:02d}" for m in minutes]}
        if self.name == "days_per_week":
            if value not in WEEKDAY_SETS:
                raise ConfigError(f"{source}: sweep.factor 'days_per_week': expected an integer 1..7, got {value!r}")
            return {f"regimen.block[{last}].weekdays": list(WEEKDAY_SETS[int(value)])}
        if self.name == "cycle_days":
            return {"regimen.cycle_days": value}
        if self.name == "rest_weeks":
            ends = [b.get("days", [0, 0])[-1] for b in blocks if isinstance(b.get("days"), list) and b.get("days")]
            return {"regimen.cycle_days": int(max(ends, default=0)) + 7 * int(value)}
        raise ConfigError(f"{source}: sweep.factor: unknown name '{self.name}'")  # pragma: no cover (parse checks)


@dataclass(frozen=True)
class SweepDesign:
    """A design over factors: ``grid`` (full factorial), ``lhs`` or ``sobol`` with ``n`` points."""

    kind: str = "grid"
    factors: tuple[SweepFactor, ...] = ()
    n: int | None = None
    seed: int = 0
    subjects: int | None = None
    points: tuple[tuple, ...] | None = None  # explicit points (used by il2sim.sensitivity)


def parse_sweep(d: Any, source: str) -> tuple[SweepDesign | None, list[str]]:
    """Validate a ``[sweep]`` table (schema in the module docstring); every problem at once."""
    if (msg := v.check_table(d, source, "sweep")) is not None:
        return None, [msg]
    problems = v.unknown_keys(d, ("design", "n", "seed", "subjects", "factor"), source, "sweep")
    kind = d.get("design", "grid")
    if (msg := v.check_choice(kind, DESIGNS, source, "sweep.design")) is not None:
        problems.append(msg)
    n = d.get("n")
    if kind in ("lhs", "sobol"):
        if n is None:
            problems.append(f"{source}: sweep.n: required for design = '{kind}' (number of points)")
        elif (msg := v.check_number(n, source, "sweep.n", lower=1, integer=True)) is not None:
            problems.append(msg)
    elif n is not None:
        problems.append(f"{source}: sweep.n: only for design 'lhs' or 'sobol' (a grid has the product of its levels)")
    seed = d.get("seed", 0)
    if (msg := v.check_number(seed, source, "sweep.seed", lower=0, integer=True)) is not None:
        problems.append(msg)
        seed = 0
    subjects = d.get("subjects")
    if subjects is not None and (msg := v.check_number(subjects, source, "sweep.subjects", lower=1, integer=True)) is not None:
        problems.append(msg)
        subjects = None
    items = d.get("factor")
    if not isinstance(items, list) or not items:
        problems.append(f"{source}: sweep.factor: expected one or more [[sweep.factor]] tables, got {items!r}")
        items = []
    factors = []
    for i, fd in enumerate(items):
        f, p = _factor(fd, kind, source, f"sweep.factor[{i}]")
        problems += p
        if f is not None:
            factors.append(f)
    names = [f.name for f in factors]
    for name in sorted({x for x in names if names.count(x) > 1}):
        problems.append(f"{source}: sweep.factor: '{name}' appears more than once")
    if problems:
        return None, problems
    return SweepDesign(str(kind), tuple(factors), None if n is None else int(n), int(seed),
                       None if subjects is None else int(subjects)), []


def _factor(fd: Any, kind: str, source: str, where: str) -> tuple[SweepFactor | None, list[str]]:
    if (msg := v.check_table(fd, source, where)) is not None:
        return None, [msg]
    problems = v.unknown_keys(fd, ("name", "path", "values", "range", "levels", "scale", "integer"), source, where)
    name, path = fd.get("name"), fd.get("path")
    if path is not None:
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            problems.append(f"{source}: {where}.path: expected a dotted config path such as "
                            f"'regimen.block[1].amount' or 'parameters.F', got {path!r}")
        elif path.split(".")[0] in ("scenario", "sweep", "sensitivity"):
            problems.append(f"{source}: {where}.path: '{path}' cannot be swept (seed, models and the design itself are fixed)")
        name = name if isinstance(name, str) and name else path
    elif name not in NAMED_FACTORS:
        import difflib

        close = difflib.get_close_matches(str(name), list(NAMED_FACTORS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(f"{source}: {where}: give `path` (a dotted config path) or `name`, one of "
                        f"{', '.join(NAMED_FACTORS)}; got name={name!r}{hint}")
    integer = fd.get("integer", NAMED_FACTORS.get(name, False) if path is None else False)
    if not isinstance(integer, bool):
        problems.append(f"{source}: {where}.integer: expected true or false, got {integer!r}")
        integer = False
    scale = fd.get("scale", "linear")
    if (msg := v.check_choice(scale, SCALES, source, f"{where}.scale")) is not None:
        problems.append(msg)
    values, rng, levels = fd.get("values"), fd.get("range"), fd.get("levels")
    if (values is None) == (rng is None):
        problems.append(f"{source}: {where}: give `values` (a list of levels) or `range` = [low, high], not both or neither")
    if values is not None and (not isinstance(values, list) or not values):
        problems.append(f"{source}: {where}.values: expected a non-empty list, got {values!r}")
        values = None
    if rng is not None:
        if (not isinstance(rng, list) or len(rng) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in rng)
                or rng[0] >= rng[1]):
            problems.append(f"{source}: {where}.range: expected [low, high] with low < high, got {rng!r}")
            rng = None
        elif scale == "log" and rng[0] <= 0:
            problems.append(f"{source}: {where}.range: a log scale needs low > 0, got {rng!r}")
            rng = None
        if kind == "grid":
            if levels is None:
                problems.append(f"{source}: {where}.levels: required with `range` in a grid design (number of levels)")
            elif (msg := v.check_number(levels, source, f"{where}.levels", lower=1, integer=True)) is not None:
                problems.append(msg)
    if levels is not None and (rng is None or kind != "grid") and not any("levels" in p for p in problems):
        problems.append(f"{source}: {where}.levels: only with `range` in a grid design")
    if problems:
        return None, problems
    return SweepFactor(str(name), path, tuple(values) if values is not None else None,
                       (float(rng[0]), float(rng[1])) if rng is not None else None,
                       None if levels is None else int(levels), str(scale), integer), []


def design_points(design: SweepDesign) -> list[tuple]:
    """The design's points, one tuple of factor values per scenario, in scenario order.

    A grid varies the last factor fastest (``itertools.product`` order). LHS and Sobol points
    come from ``scipy.stats.qmc`` (scrambled, seeded by ``design.seed``) on the unit cube and
    are mapped onto each factor's range (linear or log), or onto its listed ``values`` in
    equal-probability bins.
    """
    if design.points is not None:
        return [tuple(p) for p in design.points]
    fs = design.factors
    if design.kind == "grid":
        return list(itertools.product(*(f.grid_levels() for f in fs)))
    from scipy.stats import qmc

    if design.kind == "lhs":
        u = qmc.LatinHypercube(d=len(fs), seed=design.seed).random(design.n)
    else:
        import warnings

        with warnings.catch_warnings():  # n not a power of 2 only loses balance; the docs say so
            warnings.simplefilter("ignore", UserWarning)
            u = qmc.Sobol(d=len(fs), scramble=True, seed=design.seed).random(design.n)
    return [tuple(f.at_unit(float(u[j, i])) for i, f in enumerate(fs)) for j in range(design.n)]


def _coord_value(x):
    """Scenario coordinate value: numbers as they are, lists as their TOML text."""
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(f'"{e}"' if isinstance(e, str) else repr(e) for e in x) + "]"
    return x


def _describe(factors, point) -> str:
    def text(x):
        return f"{x:.6g}" if isinstance(x, float) else str(_coord_value(x))

    return ", ".join(f"{f.name} = {text(x)}" for f, x in zip(factors, point))


def scenarios_of(config, design: SweepDesign | dict | None = None, *, overrides: dict | None = None):
    """Validated scenarios of a sweep, one per design point: ``(design, points, [Scenario])``.

    Raises one ConfigError listing every invalid scenario (its index, factor values and the
    config fields they set).
    """
    from il2sim.scenario import Scenario, _set_dotted, scenario_from_dict

    if isinstance(config, Scenario):
        source, text = config.source, config.text
        if not text:
            raise ConfigError(f"{source}: sweep: a Scenario built without its config text cannot be swept; pass the config path")
    else:
        source = str(config)
        try:
            text = Path(config).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{config}: cannot read ({exc.strerror})") from None
    base_dir = Path(source).parent
    try:
        base = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(base, dotted, value, source)
    if design is None or isinstance(design, dict):
        table = design if isinstance(design, dict) else base.get("sweep")
        if table is None:
            raise ConfigError(f"{source}: sweep: the config has no [sweep] table and no design was given")
        design, problems = parse_sweep(table, source)
        if problems:
            raise ConfigError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))
    points = design_points(design)
    scenarios, problems, seen = [], [], {}
    import copy

    for i, point in enumerate(points):
        data = copy.deepcopy(base)
        try:
            sets = {}
            for f, x in zip(design.factors, point):
                sets.update(f.overrides(x, data, source))
            for dotted, value in sets.items():
                _set_dotted(data, dotted, value, source)
            scenarios.append(scenario_from_dict(data, source=source, base_dir=base_dir, text=text))
        except ConfigError as exc:
            fields = ", ".join(sets) if sets else "(none set)"
            detail = str(exc).replace(f"{source}: ", "").replace("\n", "\n    ")
            if detail in seen:  # the same problem whatever the value (a bad path): say it once
                seen[detail].append(i)
                continue
            seen[detail] = [i]
            problems.append((detail, f"sweep scenario {i} ({_describe(design.factors, point)}; config fields {fields}): {detail}"))
            if len(problems) >= 10:
                problems.append((None, "... (stopped after 10 invalid scenarios)"))
                break
    if problems:
        n_bad = sum(len(x) for x in seen.values())
        lines = []
        for detail, text in problems:
            more = seen.get(detail, [])[1:]
            also = f"\n    (the same problem in scenario(s) {', '.join(map(str, more))})" if more else ""
            lines.append(f"  - {text}{also}")
        raise ConfigError(f"{source}: {n_bad} invalid sweep scenario(s)\n" + "\n".join(lines))
    return design, points, scenarios


def sweep(
    config,
    /,
    *,
    design: SweepDesign | dict | None = None,
    subjects: int | None = None,
    seed: int | None = None,
    overrides: dict | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    variables: list[str] | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Run a config over a design of factor values on the same virtual patients.

    Main arguments
    --------------
    config : path of a scenario TOML file, or a Scenario loaded from one.
    design : a SweepDesign, or a table in the ``[sweep]`` schema (default: the config's ``[sweep]``).
    subjects : virtual patients per scenario (default ``[sweep] subjects``, else ``population.subjects``).
    seed : patients' seed for every scenario (default ``scenario.seed``): common random numbers.

    Other arguments
    ---------------
    overrides : dotted config fields set before the factors (as ``--set``).
    out : a ``.zarr`` store to stream scenarios into (``overwrite`` to replace one); the returned
        Dataset then reads from it lazily.
    variables : trajectories to keep (default: the config's ``output.variables``, else all).
    progress : a progress bar on stderr (default: only when stderr is a terminal).

    Returns
    -------
    xarray.Dataset with dims ``scenario``, ``subject``, ``time``; one coordinate per factor on
    ``scenario``; attrs ``sweep_design``, ``sweep_factors`` and the first run's provenance.
    """
    from il2sim.simulate import simulate

    t0 = _time.perf_counter()
    design, points, scenarios = scenarios_of(config, design, overrides=overrides)
    source = scenarios[0].source
    n = subjects if subjects is not None else design.subjects
    if n is not None and (isinstance(n, bool) or int(n) < 1):
        raise ConfigError(f"{source}: sweep: subjects: expected an integer >= 1, got {n!r}")
    seed = scenarios[0].seed if seed is None else int(seed)
    factor_names = [f.name for f in design.factors]
    units = [_factor_unit(f, scenarios[0]) for f in design.factors]
    if out is not None:
        out = Path(out)
        if out.suffix != ".zarr":
            raise ConfigError(f"{out}: sweep: out: expected a .zarr store (stream scenarios into it)")
        if out.exists() and not overwrite:
            raise ConfigError(f"{out}: exists; pass overwrite=True (--overwrite) to replace it, or choose another --out")
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
    bar = None
    if progress or (progress is None and _isatty()):
        from tqdm import tqdm

        bar = tqdm(total=len(points), desc=f"sweep {scenarios[0].name}", unit="scenario")
    parts = []
    for i, (point, sc) in enumerate(zip(points, scenarios)):
        ds = simulate(sc, subjects=None if n is None else int(n), seed=seed, variables=variables)
        ds = _with_scenario(ds, i, factor_names, point, units)
        if out is None:
            parts.append(ds)
        else:
            _strings_fixed(ds).to_zarr(partial, mode="w" if i == 0 else "a", append_dim=None if i == 0 else "scenario",
                                       consolidated=True, zarr_format=2)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    attrs = {"sweep_design": design.kind, "sweep_factors": ", ".join(factor_names),
             "sweep_scenarios": len(points), "sweep_seconds": round(_time.perf_counter() - t0, 3)}
    if out is None:
        result = xr.concat(parts, dim="scenario", data_vars="all", coords="all", join="outer",
                           combine_attrs="drop_conflicts")
        result.attrs.update(attrs)
        return result
    import zarr

    root = zarr.open_group(partial, mode="a", zarr_format=2)
    root.attrs.update(attrs)
    zarr.consolidate_metadata(partial)
    # The old store (overwrite) is moved aside before the new one takes its name, and deleted
    # only after: a kill in between leaves the complete old store as .NAME.old, never a
    # half-deleted store under the output's name.
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)
    return xr.open_zarr(out, consolidated=True)


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


# units of the named regimen factors (dose factors take the regimen's amount unit)
_NAMED_UNITS = {"doses_per_day": "1/d", "days_per_week": "d/wk", "cycle_days": "d", "rest_weeks": "wk"}


def _factor_unit(factor: SweepFactor, scenario) -> str:
    """Unit of a factor's values, for axis labels: a model parameter's unit, the regimen's
    amount unit for doses, days for day counts; '' when the path has no declared unit."""
    path = factor.path or ""
    regimen = scenario.regimen
    if path.startswith("parameters."):
        name = path.split(".", 1)[1]
        return next((p.unit for p in scenario.model.parameters if p.name == name), "")
    if factor.path is None:
        if factor.name in _NAMED_UNITS:
            return _NAMED_UNITS[factor.name]
        return regimen.amount_unit if regimen is not None and "dose" in factor.name else ""
    if path.endswith(".amount") and regimen is not None:
        return regimen.amount_unit
    if path.endswith("cycle_days"):
        return "d"
    return ""


def _with_scenario(ds: xr.Dataset, index: int, names: list[str], point: tuple, units: list[str]) -> xr.Dataset:
    """Every variable and per-subject coordinate gains a leading ``scenario`` dimension."""
    coords = [c for c in ds.coords if c not in ds.dims]
    out = ds.reset_coords(coords).expand_dims(scenario=[index])
    out = out.set_coords(coords)
    return out.assign_coords({name: ("scenario", [_coord_value(x)], {"units": u} if u else {})
                              for name, x, u in zip(names, point, units)})


def _strings_fixed(ds: xr.Dataset) -> xr.Dataset:
    """Text arrays as variable-length strings, so a longer status message or response class in
    a later scenario is never cut to the width of the first one's."""
    out = ds.copy()
    for name in list(out.variables):
        if out[name].dtype.kind in "UO" and name not in out.dims:
            out[name] = out[name].astype(object)
    return out
