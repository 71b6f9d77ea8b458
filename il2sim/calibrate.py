"""Fit declared model parameters to declared targets, stage by stage, and record where they came from.

A scenario config carries the targets (``[[targets]]``) and the calibration plan
(``[calibration]`` with one or more ``[[calibration.stage]]``); see :mod:`il2sim.targets` for
the schema. Each stage fits its parameters (log scale, within bounds) by minimising the sum of
squared weighted target residuals over the stage's scenarios (the config itself and any
``include``-d configs, e.g. the PK anchor configs), simulating each scenario's cohort with the
current values. Stages run in order; a later stage starts from the earlier fits.

Results are written atomically to a fitted-parameters TOML (``calibration.output`` or
``--output``): each parameter's value, its value before, the bounds, the stage, the targets
and data it was fitted to, the date and the final cost. ``--write-models`` also writes the
values into the model files, keeping units and appending to each source text that (and to
what) the value was calibrated.

Command line (the ``il2sim`` CLI is for running; fitting is a developer step)::

    python -m il2sim.calibrate configs/mm_low_dose_1995.toml [--stage pk] [--write-models]

Methods: ``least_squares`` (scipy trust-region reflective with finite differences; for smooth
targets such as PK exposures and cell folds) and ``nelder_mead`` (derivative-free; for targets
that move in steps, such as fractions of a cohort with a response class or days on therapy
judged at visits, evaluated with fixed random numbers, i.e. the same virtual patients).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np

from il2sim.errors import ConfigError, Il2simError
from il2sim.scenario import Scenario, load_scenario
from il2sim.targets import CalibrationStage, Target, TargetResult, evaluate_targets

__all__ = ["StageResult", "CalibrationResult", "calibrate", "run_stage", "write_fitted", "write_to_models", "main"]


@dataclass
class StageResult:
    """Outcome of one stage: fitted values, costs and the targets at the fit."""

    stage: CalibrationStage
    initial: dict[str, float]
    fitted: dict[str, float]
    cost_initial: float
    cost_final: float
    evaluations: int
    success: bool
    message: str
    targets_initial: list[TargetResult]
    targets_final: list[TargetResult]
    target_ids: list[str]
    data: list[str]
    seconds: float


@dataclass
class CalibrationResult:
    config: str
    date: str
    stages: list[StageResult] = field(default_factory=list)

    @property
    def fitted(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.stages:
            out.update(s.fitted)
        return out


def _with_values(sc: Scenario, values: dict[str, float]) -> Scenario:
    """The scenario with new default values for the named parameters (IIV applies on top)."""
    if not values:
        return sc
    return dataclasses.replace(sc, model=sc.model.with_parameters(values))


def _simulate_targets(sc: Scenario, targets: tuple[Target, ...], subjects: int | None) -> list[TargetResult]:
    from il2sim.simulate import simulate

    variables = sorted({t.variable for t in targets} | ({"M"} if sc.regimen is not None and sc.regimen.stop == "progression" else set()))
    variables = [v for v in variables if v in sc.model.state_names or v in sc.model.output_names]
    ds = simulate(sc, subjects=subjects, variables=variables or None)
    return evaluate_targets(ds, targets)


def _stage_problems(sc: Scenario, stage: CalibrationStage, base_dir: Path) -> list[tuple[Scenario, tuple[Target, ...]]]:
    own = sc.targets if stage.targets is None else tuple(t for t in sc.targets if t.name in stage.targets)
    items = [(sc, own)] if own else []
    for inc in stage.include:
        p = Path(inc)
        inc_sc = load_scenario(p if p.is_absolute() else base_dir / p)
        if not inc_sc.targets:
            raise ConfigError(f"{sc.source}: calibration stage '{stage.name}': included config {inc} declares no [[targets]]")
        items.append((inc_sc, inc_sc.targets))
    if not items:
        raise ConfigError(f"{sc.source}: calibration stage '{stage.name}': no targets to fit")
    return items


def run_stage(
    sc: Scenario,
    stage: CalibrationStage,
    *,
    base_dir: Path | None = None,
    start: dict[str, float] | None = None,
    log: Callable[[str], None] = print,
) -> StageResult:
    """Fit one stage; ``start`` holds values fitted by earlier stages (applied to every scenario)."""
    from scipy.optimize import least_squares, minimize

    t0 = time.perf_counter()
    base_dir = base_dir or Path(sc.source).parent
    start = dict(start or {})
    items = [(_with_values(s, start), tg) for s, tg in _stage_problems(sc, stage, base_dir)]
    names = list(stage.parameters)
    lo = np.log([stage.parameters[k][0] for k in names])
    hi = np.log([stage.parameters[k][1] for k in names])
    pidx = {k: sc.model.parameter_names.index(k) for k in names}
    initial = {k: float(items[0][0].model.parameters[pidx[k]].value) for k in names}
    x0 = np.clip(np.log([initial[k] for k in names]), lo + 1e-9, hi - 1e-9)
    cache: dict[tuple, tuple[np.ndarray, list[TargetResult]]] = {}
    n_eval = [0]

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, list[TargetResult]]:
        key = tuple(np.round(x, 12))
        if key in cache:
            return cache[key]
        values = {k: float(math.exp(xi)) for k, xi in zip(names, x)}
        res, results = [], []
        for s, tg in items:
            try:
                rs = _simulate_targets(_with_values(s, values), tg, stage.subjects)
            except Il2simError as exc:  # e.g. values that break a model bound
                log(f"    evaluation failed at {values}: {exc}")
                rs = [TargetResult(t, np.zeros(0), math.nan, math.nan, math.nan, math.nan, 0) for t in tg]
            results += rs
            res += [math.sqrt(r.target.weight) * r.residual for r in rs]
        n_eval[0] += 1
        out = (np.asarray(res, dtype=float), results)
        cache[key] = out
        return out

    r0, res0 = evaluate(x0)
    cost0 = float(np.sum(r0**2))
    log(f"  stage {stage.name}: {len(names)} parameter(s), {len(r0)} target(s), cost {cost0:.4g} at start")
    def fit(xs: np.ndarray):
        if stage.method == "least_squares":
            sol = least_squares(lambda x: evaluate(x)[0], xs, bounds=(lo, hi), method="trf", diff_step=2e-3,
                                max_nfev=stage.max_evaluations, x_scale=1.0)
        else:
            sol = minimize(lambda x: float(np.sum(evaluate(x)[0] ** 2)), xs, method="Nelder-Mead",
                           bounds=list(zip(lo, hi)),
                           options={"maxfev": stage.max_evaluations, "xatol": 1e-3, "fatol": 1e-4,
                                    "initial_simplex": _simplex(xs, lo, hi)})
        return sol.x, bool(sol.success), str(sol.message)

    # The current values first, then ``starts`` Latin-hypercube points (a fixed seed, so a rerun
    # gives the same fit); the best end point wins. Local fits from the defaults alone can stop
    # at a compromise between targets that pull apart (e.g. low- and high-dose PK).
    runs = [fit(x0)]
    if stage.starts:
        from scipy.stats import qmc

        u = qmc.LatinHypercube(d=len(names), seed=12345).random(stage.starts)
        for k, xs in enumerate(lo + u * (hi - lo)):
            runs.append(fit(np.clip(xs, lo + 1e-9, hi - 1e-9)))
            log(f"    start {k + 1}/{stage.starts}: cost {float(np.sum(evaluate(runs[-1][0])[0] ** 2)):.4g} "
                f"({n_eval[0]} evaluations so far)")
    x_best, success, message = min(runs, key=lambda r: float(np.sum(evaluate(r[0])[0] ** 2)))
    if len(runs) > 1:
        message = f"best of {len(runs)} starts: {message}"
    # the best point seen (finite differences or a simplex may end elsewhere)
    best_key = min(cache, key=lambda k: float(np.sum(cache[k][0] ** 2)))
    if float(np.sum(cache[best_key][0] ** 2)) < float(np.sum(evaluate(x_best)[0] ** 2)):
        x_best = np.array(best_key)
    r1, res1 = evaluate(x_best)
    fitted = {k: float(f"{math.exp(xi):.4g}") for k, xi in zip(names, x_best)}
    r1, res1 = evaluate(np.log([fitted[k] for k in names]))  # the rounded values are what gets written
    cost1 = float(np.sum(r1**2))
    log(f"  stage {stage.name}: cost {cost0:.4g} -> {cost1:.4g} in {n_eval[0]} evaluations; "
        + ", ".join(f"{k} {initial[k]:.4g} -> {fitted[k]:.4g}" for k in names))
    ids = [f"{Path(r.target.config).stem}:{r.target.name}" for r in res1]
    data = sorted({s.source for s, _ in items})
    return StageResult(stage, initial, fitted, cost0, cost1, n_eval[0], success, message, res0, res1, ids, data,
                       time.perf_counter() - t0)


def _simplex(x0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Initial simplex: 30 % steps (in log units, 0.26) toward the wider side of each bound."""
    pts = [x0.copy()]
    for i in range(x0.size):
        x = x0.copy()
        step = 0.26 if hi[i] - x0[i] >= x0[i] - lo[i] else -0.26
        x[i] = np.clip(x0[i] + step, lo[i], hi[i])
        pts.append(x)
    return np.array(pts)


def calibrate(
    config: str | Path,
    *,
    stages: list[str] | None = None,
    output: str | Path | None = None,
    write_models: bool = False,
    log: Callable[[str], None] = print,
) -> CalibrationResult:
    """Run the config's calibration stages (all, or those named) and write the results.

    Returns the :class:`CalibrationResult`; writes the fitted-parameters TOML to ``output``
    (default: the config's ``calibration.output``, else ``<config stem>_fitted.toml`` beside
    it) and, with ``write_models``, the values into the model files.
    """
    config = Path(config)
    sc = load_scenario(config)
    if sc.calibration is None:
        raise ConfigError(f"{config}: no [calibration] table; nothing to fit")
    chosen = [s for s in sc.calibration.stages if stages is None or s.name in stages]
    if stages is not None:
        missing = sorted(set(stages) - {s.name for s in sc.calibration.stages})
        if missing:
            raise ConfigError(f"{config}: calibration: no stage named {', '.join(map(repr, missing))}; "
                              f"stages: {', '.join(s.name for s in sc.calibration.stages)}")
    result = CalibrationResult(str(config), date.today().isoformat())
    out = Path(output) if output else (config.parent / sc.calibration.output if sc.calibration.output
                                       else config.with_name(config.stem + "_fitted.toml"))
    values: dict[str, float] = {}
    for stage in chosen:
        sr = run_stage(sc, stage, base_dir=config.parent, start=values, log=log)
        result.stages.append(sr)
        values.update(sr.fitted)
        write_fitted(result, out)  # after every stage, so a later failure keeps the finished fits
        log(f"  wrote {out}")
    if write_models:
        for path in write_to_models(result, sc.model):
            log(f"  updated {path}")
    return result


# ------------------------------------------------------------------------------- writing


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(type(v))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        tomllib.loads(text)  # never leave a file that does not parse
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fitted_toml(result: CalibrationResult) -> str:
    """The fitted-parameters TOML text (see :func:`write_fitted`)."""
    lines = [
        f"# Fitted by il2sim.calibrate from {result.config} on {result.date}.",
        "# [parameters]: fitted values (usable as a config's [parameters] table);",
        "# [provenance.<name>]: value before, bounds, stage, targets and data, cost.",
        "",
        "[calibration]",
        f"config = {_toml(result.config)}",
        f"date = {_toml(result.date)}",
        "",
    ]
    for s in result.stages:
        lines += [
            "[[calibration.stage]]",
            f"name = {_toml(s.stage.name)}",
            f"method = {_toml(s.stage.method)}",
            f"parameters = {_toml(list(s.fitted))}",
            f"targets = {_toml(s.target_ids)}",
            f"data = {_toml(s.data)}",
            f"cost_initial = {_toml(s.cost_initial)}",
            f"cost_final = {_toml(s.cost_final)}",
            f"evaluations = {s.evaluations}",
            f"seconds = {_toml(round(s.seconds, 1))}",
            f"converged = {_toml(s.success)}",
            f"message = {_toml(s.message)}",
            "",
        ]
    lines.append("[parameters]")
    for s in result.stages:
        for k, val in s.fitted.items():
            lines.append(f"{k} = {_toml(val)}")
    lines.append("")
    for s in result.stages:
        for k, val in s.fitted.items():
            lines += [
                f"[provenance.{k}]",
                f"value = {_toml(val)}",
                f"before = {_toml(s.initial[k])}",
                f"bounds = {_toml(list(s.stage.parameters[k]))}",
                f"stage = {_toml(s.stage.name)}",
                f"targets = {_toml(s.target_ids)}",
                f"data = {_toml(s.data)}",
                f"date = {_toml(result.date)}",
                f"cost = {_toml(s.cost_final)}",
                "",
            ]
    return "\n".join(lines)


def write_fitted(result: CalibrationResult, path: str | Path) -> Path:
    """Write the fitted-parameters TOML atomically (temporary file, parse check, rename)."""
    path = Path(path)
    _atomic_write(path, fitted_toml(result))
    return path


_CAL_NOTE = re.compile(r"\s*\[calibrated [^\]]*\]$")


def _edit_parameter_line(text: str, name: str, value: float, note: str, file: str) -> str:
    """Replace ``value`` and append ``note`` to ``source`` of parameter ``name`` (one-line inline table)."""
    pat = re.compile(rf"^(?P<head>{re.escape(name)}\s*=\s*\{{.*?\bvalue\s*=\s*)(?P<value>[^,}}]+)(?P<tail>.*)$", re.M)
    matches = list(pat.finditer(text))
    if len(matches) != 1:
        raise ConfigError(f"{file}: [parameters] {name}: expected one one-line inline table to update, found {len(matches)}")
    m = matches[0]
    tail = m.group("tail")
    src = re.search(r'source\s*=\s*"((?:[^"\\]|\\.)*)"', tail)
    if src is None:
        raise ConfigError(f"{file}: [parameters] {name}: no source text to record the calibration in")
    old_source = _CAL_NOTE.sub("", src.group(1))
    new_source = f"{old_source} [{note}]".replace('"', "'")
    tail = tail[: src.start(1)] + new_source + tail[src.end(1):]
    line = f"{m.group('head')}{value!r}{tail}"
    return text[: m.start()] + line + text[m.end():]


def write_to_models(result: CalibrationResult, model) -> list[Path]:
    """Write fitted values into the model files; each source text says calibrated (targets, date).

    Every file is edited in memory and checked (parses, the value reads back) before any is
    replaced, so a failure leaves all files as they were.
    """
    files = {p.name: p for p in model.parameters}
    paths = {m.file: m.path for m in model.modules}
    new_text: dict[Path, str] = {}
    for s in result.stages:
        targets = ", ".join(s.target_ids)
        for k, val in s.fitted.items():
            prm = files[k]
            path = paths[prm.file]
            text = new_text.get(path) or path.read_text(encoding="utf-8")
            note = (f"calibrated {result.date} by il2sim.calibrate ({result.config}, stage {s.stage.name}, "
                    f"cost {s.cost_final:.3g}) to {targets}; value before {s.initial[k]:.4g}")
            new_text[path] = _edit_parameter_line(text, k, val, note, prm.file)
    for path, text in new_text.items():
        data = tomllib.loads(text)
        for s in result.stages:
            for k, val in s.fitted.items():
                if k in data.get("parameters", {}) and data["parameters"][k]["value"] != val:
                    raise ConfigError(f"{path}: {k}: value did not read back after editing")
    for path, text in new_text.items():
        _atomic_write(path, text)
    return list(new_text)


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m il2sim.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    parser.add_argument("--output", help="fitted-parameters TOML (default: the config's calibration.output)")
    parser.add_argument("--write-models", action="store_true", help="also write the fitted values into the model files")
    args = parser.parse_args(argv)
    try:
        calibrate(args.config, stages=args.stage, output=args.output, write_models=args.write_models)
    except Il2simError as exc:
        print(f"il2sim calibrate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
