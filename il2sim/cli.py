"""Command line: ``il2sim run | validate | models | report | sweep | plot | sbml``.

Errors in the user's input are printed as one paragraph and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import warnings
from pathlib import Path

from il2sim.errors import Il2simError

EPILOG_RUN = """examples:
  il2sim run configs/mm_low_dose_1995.toml
  il2sim run configs/mm_low_dose_1995.toml --subjects 1000 --seed 7 --out results/big.nc
  il2sim run configs/mm_low_dose_1995.toml --set solver.method=tsit5 --set regimen.block[1].amount=0.5
  il2sim run configs/mm_low_dose_1995.toml --subjects 1000000 --out results/big.zarr --chunk-size 2048
  il2sim run configs/mm_low_dose_1995.toml --subjects 1000000 --out results/big.zarr --resume   # after a crash
  il2sim run configs/mm_low_dose_1995.toml --subjects 100000 --out results/big.zarr --workers 4
  il2sim run configs/mm_low_dose_1995.toml --subjects 1000000 --out /shared/big.zarr --scheduler tcp://head:8786
"""


#: trajectories drawn in the run's figure (the first subjects): a million curves add nothing
FIGURE_SUBJECTS = 1000


def _parse_set(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs; values are TOML-like literals (numbers, strings, lists, true/false)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise Il2simError(f"--set {item!r}: expected KEY=VALUE, e.g. --set solver.rtol=1e-8")
        key, raw = item.split("=", 1)
        text = raw.strip()
        lowered = {"true": "True", "false": "False"}.get(text, text)
        try:
            with warnings.catch_warnings():  # e.g. an invalid escape "\d": the text stays a string
                warnings.simplefilter("ignore")
                value = ast.literal_eval(lowered)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            # not a literal ({[1]: 2} is a TypeError, [[[[...]]]] too deep): keep the text; the
            # config validator then says which type the field expects
            value = text
        out[key.strip()] = value
    return out


def _cmd_run(args) -> int:
    """Cohorts of any size go through il2sim.cohort: chunks streamed to a zarr store (or netCDF)."""
    import xarray as xr

    from il2sim._cuda import resolve_backend
    from il2sim.cohort import run_cohort
    from il2sim.plot import trajectories
    from il2sim.scenario import load_scenario

    t0 = time.perf_counter()
    overrides = _parse_set(args.set)
    if args.backend:
        overrides["solver.backend"] = args.backend
    sc = load_scenario(args.config, overrides=overrides)
    # before anything is written: --backend cuda without a GPU stops here with the reason
    backend_used, backend_note = resolve_backend(sc.solver.backend, f"{sc.source}: solver.backend")
    out = Path(args.out) if args.out else Path("results") / f"{sc.name}.nc"
    if not args.no_figures and not args.resume:
        # the run's figures are outputs too: refuse before solving anything, as for --out itself
        from il2sim._files import refuse_existing

        refuse_existing([out.with_name(out.stem + f"{k}{x}") for k in ("_trajectories", "_M") for x in (".png", ".svg")],
                        overwrite=args.overwrite, hint="pass --overwrite to replace it, --no-figures, or choose another --out")
    run = run_cohort(sc, out, subjects=args.subjects, seed=args.seed, chunk_size=args.chunk_size,
                     workers=args.workers, scheduler=args.scheduler, resume=args.resume, overwrite=args.overwrite,
                     progress=False if args.quiet else None, overrides=overrides)
    ds = xr.open_zarr(run.out, consolidated=True, chunks=None) if run.out.suffix == ".zarr" else xr.open_dataset(run.out, engine="h5netcdf")
    try:
        figures = []
        if not args.no_figures:
            wanted = [v for v in ("C", "Treg", "CD4", "CD8", "CD4_CD8", "NK", "Eos", "sIL2R", "M") if v in ds]
            if not wanted:
                wanted = [v for v in ds.data_vars if ds[v].dims == ("subject", "time")][:6]
            shown = ds[[*wanted, "status"]].isel(subject=slice(0, FIGURE_SUBJECTS)).load()
            fig_path = out.with_name(out.stem + "_trajectories.png")
            # the response over the first cycle; the tumour over the whole horizon
            cycle_h = sc.regimen.cycle_days * 24.0 if sc.regimen is not None else float(ds.time[-1])
            first = [v for v in wanted if v != "M"] or wanted
            n_shown = shown.sizes["subject"]
            span = "first cycle" if cycle_h < float(ds.time[-1]) else f"{cycle_h / 24:g} days"
            trajectories(shown.sel(time=slice(0.0, cycle_h)), first, fig_path,
                         title=f"{sc.name}: {span}, median and 5–95 % of {n_shown} subjects")
            figures = [fig_path, fig_path.with_suffix(".svg")]
            if "M" in wanted and cycle_h < float(ds.time[-1]):
                m_path = out.with_name(out.stem + "_M.png")
                trajectories(shown, ["M"], m_path, title=f"{sc.name}: serum M-protein, {n_shown} subjects")
                figures += [m_path, m_path.with_suffix(".svg")]
        if not args.quiet:
            a = ds.attrs
            compile_s = a.get("compile_seconds", a.get("codegen_seconds", 0.0))
            print(f"il2sim {sc.name}: {run.subjects} subjects, {ds.sizes['time']} time points "
                  f"({float(ds.time[0]) / 24:g}–{float(ds.time[-1]) / 24:g} d), method {a['solver_method']}, rtol {a['rtol']:g}, "
                  f"backend {backend_used}")
            if backend_note:
                print(f"  note: {backend_note}")
            print(f"  status: {_status_line(run.status)}")
            for line in _failure_lines(run.status):
                print(f"  {line}")
            chunks = f", {run.n_chunks} chunks of {run.chunk_size}" + (f" ({run.skipped} done before --resume)" if run.skipped else "")
            print(f"  compile {compile_s:.2f} s ({'cold' if a.get('codegen_cold') else 'warm'}), "
                  f"solve {a['solve_seconds']:.2f} s, total {time.perf_counter() - t0:.2f} s{chunks if run.store or run.n_chunks > 1 else ''}")
            if run.note:
                print(f"  note: {run.note}")
            print(f"  wrote {run.out}" + "".join(f"\n  wrote {f}" for f in figures))
    finally:
        ds.close()
    return 0



def _status_line(counts: dict[str, int]) -> str:
    """``"998 ok, 2 max_steps"``, in the order of il2sim.results.STATUS_NAMES."""
    from il2sim.simulate import format_status_counts

    return format_status_counts(counts)


def _failure_lines(counts: dict[str, int]) -> list[str]:
    """One line per failure reason: how many subjects, what it means, where to look."""
    from il2sim._solvers.status import Status
    from il2sim.results import STATUS_NAMES

    lines = []
    for code, name in enumerate(STATUS_NAMES):
        if code and counts.get(name):
            lines.append(f"{name}: {counts[name]} subject(s). {Status(code).message}")
    if lines:
        lines.append("failed subjects are kept: see status, status_message and t_reached (when) in the results")
    return lines


def _cmd_validate(args) -> int:
    from il2sim.scenario import load_scenario

    sc = load_scenario(args.config, overrides=_parse_set(args.set))
    m = sc.model
    print(f"{args.config}: ok — {len(m.state_names)} states, {len(m.parameter_names)} parameters, "
          f"{len(m.output_names)} outputs from {', '.join(sc.models)}")
    return 0


def _cmd_models(args) -> int:
    """Modules share symbols, so they are composed together and listed file by file."""
    from il2sim.model import available_models, load_model

    found = available_models()
    names = args.names or list(found)
    unknown = [n for n in names if n not in found and not n.endswith(".toml")]
    if unknown:
        raise Il2simError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(found)}")
    model = load_model(list(found) + [n for n in names if n not in found])
    for name in names:
        path = str(found.get(name, name))
        entries = lambda items: [x for x in items if str(x.file) == path or Path(str(x.file)).resolve() == Path(path).resolve()]  # noqa: E731
        print(f"{name}  ({path})")
        for s in entries(model.states):
            print(f"  state  {s.name:<12} [{s.unit}]  {s.description}")
        for o in entries(model.outputs):
            print(f"  output {o.name:<12} [{o.unit}]  {o.description}")
        if args.parameters:
            for p in entries(model.parameters):
                print(f"  param  {p.name:<12} = {p.value:g} [{p.unit}]  {p.description} — source: {p.source}")
    return 0


def _cmd_report(args) -> int:
    """One report folder per config: DIR itself for one config, DIR/<scenario> for several."""
    from il2sim.report import write_report

    for config in args.configs:
        out = None
        if args.out:
            out = Path(args.out) if len(args.configs) == 1 else Path(args.out) / Path(config).stem
        t0 = time.perf_counter()
        path = write_report(config, out, subjects=args.subjects, seed=args.seed, overwrite=args.overwrite)
        print(f"il2sim report {config}: wrote {path} and figures ({time.perf_counter() - t0:.1f} s)")
    return 0


EPILOG_SWEEP = """examples:
  il2sim sweep configs/sweep_maintenance_dose.toml
  il2sim sweep configs/sweep_schedule.toml --subjects 20 --seed 3 --out results/schedule.zarr
  il2sim sweep configs/sweep_dose_loading_2d.toml --set sweep.factor[0].levels=3
  il2sim sweep configs/sobol_eos_nk.toml --set sensitivity.N=32   # a [sensitivity] config: Sobol indices

A [sweep] config runs every design point on the same virtual patients and writes a .zarr store
(or .nc) with a scenario dimension; a [sensitivity] config (and no [sweep]) writes Sobol indices
as a CSV table (first-order S1, total ST and their bootstrap intervals) and prints them.
"""


def _cmd_sweep(args) -> int:
    """A [sweep] config: scenarios into a store, one summary line each; a [sensitivity] config: Sobol indices."""
    import tomllib

    overrides = _parse_set(args.set)
    try:
        data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Il2simError(f"{args.config}: cannot read as TOML: {exc}") from None
    has_sweep = "sweep" in data or any(k.startswith("sweep.") for k in overrides)
    if not has_sweep and "sensitivity" in data:
        return _cmd_sensitivity(args, overrides)
    from il2sim.sensitivity import endpoint_values
    from il2sim.sweep import sweep

    t0 = time.perf_counter()
    name = data.get("scenario", {}).get("name", Path(args.config).stem)
    out = Path(args.out) if args.out else Path("results") / f"{name}.zarr"
    if out.exists() and not args.overwrite:
        raise Il2simError(f"{out}: exists; pass --overwrite to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    zarr_out = out.suffix == ".zarr"
    ds = sweep(args.config, subjects=args.subjects, seed=args.seed, overrides=overrides,
               out=out if zarr_out else None, overwrite=args.overwrite, progress=False if args.quiet else None)
    if not zarr_out:
        from il2sim.results import write_netcdf

        write_netcdf(ds, out, overwrite=args.overwrite)
    factors = [f.strip() for f in ds.attrs["sweep_factors"].split(",")]
    folds = [v for v in ("Treg", "NK", "Eos") if v in ds]
    if not args.quiet:
        print(f"il2sim sweep {name}: {ds.sizes['scenario']} scenarios ({ds.attrs['sweep_design']}) x "
              f"{ds.sizes['subject']} subjects, {time.perf_counter() - t0:.1f} s")
        med = {v: endpoint_values(ds, f"peak_fold({v})", summary="median").values for v in folds}
        ok = (ds["status"] == "ok").sum("subject").values
        head = "  " + "  ".join(f"{f:>14}" for f in factors) + "".join(f"  {v + ' peak':>10}" for v in folds) + "    ok"
        print(head + ("   (median peak fold over subjects)" if folds else ""))
        for i in range(ds.sizes["scenario"]):
            vals = "  ".join(f"{_fmt(ds[f].values[i]):>14}" for f in factors)
            print(f"  {vals}" + "".join(f"  {med[v][i]:>10.3g}" for v in folds) + f"  {int(ok[i]):>4}")
        print(f"  wrote {out}")
    ds.close()
    return 0


def _fmt(x) -> str:
    """A factor value for a table: numbers to 4 significant digits, anything else as text."""
    import numpy as np

    return f"{x:.4g}" if isinstance(x, (float, np.floating)) else str(x)


def _cmd_sensitivity(args, overrides: dict) -> int:
    from il2sim.sensitivity import sensitivity

    t0 = time.perf_counter()
    table, ds = sensitivity(args.config, subjects=args.subjects, seed=args.seed, overrides=overrides,
                            progress=False if args.quiet else None)
    out = Path(args.out) if args.out else Path("results") / f"{Path(args.config).stem}_sobol.csv"
    if out.exists() and not args.overwrite:
        raise Il2simError(f"{out}: exists; pass --overwrite to replace it, or choose another --out")
    from il2sim._files import replacing

    with replacing(out) as tmp:
        if out.suffix == ".nc":
            ds.to_netcdf(tmp, engine="h5netcdf")
        else:
            table.to_csv(tmp, index=False)
    if not args.quiet:
        print(f"il2sim sweep {args.config}: Sobol indices, N = {ds.attrs['N']}, {ds.sizes['run']} runs, "
              f"{time.perf_counter() - t0:.1f} s ({ds.attrs['confidence']:.0%} bootstrap intervals)")
        for _, r in table.sort_values(["endpoint", "rank"]).iterrows():
            print(f"  {r.endpoint:<16} {r.parameter:<12} S1 {r.S1:6.3f} [{r.S1_low:6.3f}, {r.S1_high:6.3f}]   "
                  f"ST {r.ST:6.3f} [{r.ST_low:6.3f}, {r.ST_high:6.3f}]")
        print(f"  wrote {out}")
    return 0


EPILOG_SBML = """examples:
  il2sim sbml export configs/mm_low_dose_1995.toml -o mm.xml      # the config's model, with its parameter values
  il2sim sbml export models/bench/il2_pkpd12.toml -o pkpd12.xml   # model modules (names or files), composed
  il2sim sbml export il2_pk_sc il2_signal lymphocytes nk eosinophils sil2r myeloma > library.xml
  il2sim sbml import model.xml -o models/imported.toml

export: SBML Level 3 Version 2; SBML ids are the il2sim names, states are parameters with rate rules,
outputs parameters with assignment rules; doses are not part of the model (apply them in the other tool).
import: rate rules, assignment rules, initial assignments and reactions with kinetic laws; events,
algebraic rules and delays are refused with the element named. Without -o the text goes to stdout.
"""


def _cmd_sbml(args) -> int:
    """``sbml export`` writes a composed model as SBML; ``sbml import`` writes an il2sim module."""
    from il2sim import sbml

    out = Path(args.out) if args.out else None
    from il2sim._files import refuse_existing, write_text

    if out is not None:
        refuse_existing([out], overwrite=args.overwrite)
    if args.action == "export":
        model = _model_or_config(args.source)
        text = sbml.to_sbml(model)
        what = f"{model.name}: {len(model.state_names)} states, {len(model.parameter_names)} parameters, {len(model.output_names)} outputs"
    else:
        text = sbml.from_sbml(args.source, name=args.name)
        what = "il2sim model module"
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
        print(f"il2sim sbml {args.action}: wrote {out} ({what})")
    return 0


def _model_or_config(items: list[str]):
    """A scenario config (a .toml with a [scenario] table) gives its model; anything else is model modules."""
    import tomllib

    from il2sim.model import load_model
    from il2sim.scenario import load_scenario

    if len(items) == 1 and items[0].endswith(".toml") and Path(items[0]).is_file():
        try:
            data = tomllib.loads(Path(items[0]).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}  # load_model reports what is wrong with the file
        if "scenario" in data:
            return load_scenario(items[0]).model
    return load_model(items)


EPILOG_PLOT = """examples:
  il2sim plot results/run.nc                                     # median and 5–95 % of the standard variables
  il2sim plot results/run.nc --kind spaghetti --var C,M --out figs/run_spaghetti.png
  il2sim plot results/run.nc --kind waterfall                    # a run with regimen.stop = "progression"
  il2sim plot results/run.nc --kind swimmer
  il2sim plot results/sweep.nc --kind km                         # time to progression, one curve per scenario
  il2sim plot results/sweep.nc --kind dose-response --var days_on_therapy --x dose --logx
  il2sim plot results/sweep.nc --kind heatmap --var best_M_change --x dose --y doses_per_day
  il2sim plot results/sweep.zarr --kind heatmap --var Eos:max --x maintenance_dose --y loading_dose
  il2sim plot results/sweep.nc --kind waterfall --scenario 2     # one scenario of a sweep
  il2sim plot results/sobol.csv --kind sobol                     # the table il2sim sweep writes for [sensitivity] (S1_low/S1_high or S1_conf)
writes PATH.png and PATH.svg (default: RESULTS' folder, <stem>_<kind>.png)
"""

PLOT_KINDS = ("trajectories", "spaghetti", "dose-response", "heatmap", "waterfall", "swimmer", "km", "sobol")


def _open_results(path: Path):
    """A Dataset written by ``il2sim run``/``sweep`` (netCDF or zarr), or a CSV table."""
    import pandas as pd
    import xarray as xr

    from il2sim.errors import ConfigError

    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if path.suffix == ".zarr" or path.is_dir():
            return xr.open_zarr(path, chunks=None)
        return xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: cannot be read as results (netCDF, zarr or CSV): {exc}") from None


def _cmd_plot(args) -> int:
    """Each kind maps to one function of il2sim.plot; bad input is a ConfigError from there or here."""
    import pandas as pd

    from il2sim import plot
    from il2sim.errors import ConfigError

    path = Path(args.results)
    kind = args.kind
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}_{kind.replace('-', '_')}.png")
    from il2sim._files import refuse_existing

    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    refuse_existing([out.with_suffix(".png"), out.with_suffix(".svg")], overwrite=args.overwrite)
    data = _open_results(path)
    try:
        if kind == "sobol":
            table = data
            if not isinstance(data, pd.DataFrame):  # a Dataset of indices on (endpoint, parameter)
                names = [v for v in data.data_vars if set(data[v].dims) == {"endpoint", "parameter"}]
                if not names:
                    raise ConfigError(f"{path}: no Sobol indices (variables on endpoint x parameter); "
                                      f"write them with il2sim sweep on a [sensitivity] config")
                table = data[names].to_dataframe().reset_index()
            plot.sobol_bars(table, out, endpoints=args.var.split(",") if args.var else None)
        else:
            if isinstance(data, pd.DataFrame):
                if kind != "dose-response":
                    raise ConfigError(f"{path}: a CSV table can be drawn with --kind sobol or dose-response, not {kind}")
                plot.dose_response(data, _need(args.x, "--x", kind), out, var=_need(args.var, "--var", kind), logx=args.logx)
                print(f"il2sim plot: wrote {out.with_suffix('.png')} and {out.with_suffix('.svg')}")
                return 0
            ds = data
            if args.scenario is not None:
                if "scenario" not in ds.dims:
                    raise ConfigError(f"--scenario {args.scenario}: {path} has no scenario dimension (a run, not a sweep)")
                if not -ds.sizes["scenario"] <= args.scenario < ds.sizes["scenario"]:
                    raise ConfigError(f"--scenario {args.scenario}: {path} holds scenarios 0–{ds.sizes['scenario'] - 1}")
                ds = ds.isel(scenario=args.scenario)
            if kind in ("trajectories", "spaghetti"):
                if args.var:
                    names = [v.strip() for v in args.var.split(",") if v.strip()]
                else:
                    names = [v for v in ("C", "Treg", "CD4", "CD8", "CD4_CD8", "NK", "Eos", "sIL2R", "M") if v in ds]
                    names = names or [v for v in ds.data_vars if {"subject", "time"} <= set(ds[v].dims)][:6]
                plot._require(ds, names, kind, ("subject", "time"))
                keep = [*names, *(["status"] if "status" in ds else [])]
                shown = ds[keep].isel(subject=slice(0, FIGURE_SUBJECTS)).load()
                plot.trajectories(shown, names, out, mode="spaghetti" if kind == "spaghetti" else "band",
                                  time_unit=args.time_unit)
            elif kind == "dose-response":
                x = _need(args.x, "--x", kind, ds)
                ds, var = _endpoint(ds, args.var, kind)
                plot.dose_response(ds, x, out, var=var, logx=args.logx)
            elif kind == "heatmap":
                x, y = _need(args.x, "--x", kind, ds), _need(args.y, "--y", kind, ds)
                ds, var = _endpoint(ds, args.var, kind)
                plot.heatmap(ds, x, y, out, var=var)
            elif kind == "waterfall":
                plot.waterfall(ds, out)
            elif kind == "swimmer":
                plot.swimmer(ds, out)
            else:
                plot.kaplan_meier(ds, out)
    finally:
        if not isinstance(data, pd.DataFrame):
            data.close()
    print(f"il2sim plot: wrote {out.with_suffix('.png')} and {out.with_suffix('.svg')}")
    return 0


def _need(value, flag: str, kind: str, ds=None):
    from il2sim.errors import ConfigError

    if value:
        return value
    factors = ""
    if ds is not None:
        from il2sim.plot import _factors

        names = _factors(ds)
        factors = f"; swept factors in these results: {', '.join(names)}" if names else \
            "; these results have no scenario dimension (write a sweep with il2sim sweep)"
    raise ConfigError(f"--kind {kind} needs {flag}{' FACTOR' if flag in ('--x', '--y') else ' NAME'}{factors}")


#: ``--var NAME:STAT`` reduces a time-dependent variable to one value per subject
TIME_STATISTICS = ("max", "min", "mean", "last")


def _endpoint(ds, var: str | None, kind: str):
    """``(ds, name)`` of a per-subject endpoint: ``--var`` as given, ``NAME:STAT`` over time, or a default."""
    from il2sim.errors import ConfigError

    if var and ":" in var:
        name, stat = (s.strip() for s in var.split(":", 1))
        if stat not in TIME_STATISTICS:
            raise ConfigError(f"--var {var}: statistic {stat!r}; expected one of {', '.join(TIME_STATISTICS)} (over time)")
        if name not in ds or "time" not in ds[name].dims:
            timed = [str(v) for v in ds.data_vars if "time" in ds[v].dims]
            raise ConfigError(f"--var {var}: {name!r} is not a time-dependent variable of the results; "
                              f"available: {', '.join(timed) or 'none'}")
        da = ds[name]
        reduced = da.isel(time=-1) if stat == "last" else getattr(da, stat)("time")
        label = f"{name}_{stat}"
        reduced.attrs = {"units": da.attrs.get("units", ""), "description": f"{stat} over time of {name}"}
        return ds.assign({label: reduced.drop_vars("time", errors="ignore")}), label
    if var:
        return ds, var
    for name in ("days_on_therapy", "best_M_change"):
        if name in ds:
            return ds, name
    per_subject = [str(v) for v in ds.data_vars if "time" not in ds[v].dims and "subject" in ds[v].dims]
    timed = [str(v) for v in ds.data_vars if "time" in ds[v].dims][:3]
    raise ConfigError(f"--kind {kind} needs --var NAME, an endpoint with one value per subject "
                      f"({', '.join(per_subject) or 'none here'}), or NAME:STAT over time with STAT one of "
                      f"{', '.join(TIME_STATISTICS)} (e.g. {timed[0] if timed else 'C'}:max)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="il2sim", description="Simulate subcutaneous IL-2 therapy: PK, immune response, tumour.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a scenario's virtual cohort", epilog=EPILOG_RUN,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", help="scenario TOML file")
    run.add_argument("--out", help="results: PATH.nc (netCDF) or PATH.zarr (a zarr store, for cohorts of any size); "
                                    "default results/<scenario>.nc")
    run.add_argument("--subjects", type=int, help="number of virtual subjects")
    run.add_argument("--seed", type=int, help="random seed (subject i is the same patient for a given seed)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    run.add_argument("--no-figures", action="store_true", help="skip the trajectory figure")
    run.add_argument("--chunk-size", type=int, metavar="N",
                     help="subjects per chunk: memory grows with it, not with --subjects (default 1024)")
    run.add_argument("--workers", type=int, metavar="N", help="solve chunks on a local dask cluster of N worker processes")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="solve chunks on an existing dask cluster (e.g. tcp://10.0.0.5:8786); its workers must see --out")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from its completed chunks (same config, overrides, seed, subjects, chunk size)")
    run.add_argument("--backend", choices=("cpu", "cuda", "auto"),
                     help="solve on the CPU, on a CUDA GPU (numba-cuda), or on the GPU if there is one "
                          "(default: the config's solver.backend, else cpu)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary (errors are still printed)")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a config and every model it uses; print every problem",
                         epilog="example:\n  il2sim validate configs/mm_low_dose_1995.toml",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    val.add_argument("config")
    val.add_argument("--set", action="append", metavar="KEY=VALUE")
    val.set_defaults(func=_cmd_validate)

    mod = sub.add_parser("models", help="list model modules with their states and outputs",
                         epilog="examples:\n  il2sim models\n  il2sim models il2_pk_sc --parameters",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_argument("names", nargs="*")
    mod.add_argument("--parameters", action="store_true", help="also list parameters with units and sources")
    mod.set_defaults(func=_cmd_models)

    rep = sub.add_parser("report", help="simulate a config and write a Markdown report with figures and its target table",
                         epilog="examples:\n  il2sim report configs/mm_low_dose_1995.toml\n"
                                "  il2sim report configs/validation/*.toml --out reports/validation",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("configs", nargs="+", metavar="CONFIG", help="scenario TOML file(s)")
    rep.add_argument("--out", help="report folder (default reports/<scenario>); with several configs, one subfolder each")
    rep.add_argument("--subjects", type=int, help="number of virtual subjects (default: the config's)")
    rep.add_argument("--seed", type=int, help="random seed (default: the config's)")
    rep.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    rep.set_defaults(func=_cmd_report)

    plt_ = sub.add_parser("plot", help="draw a figure from results written by run or sweep (PNG and SVG)",
                          epilog=EPILOG_PLOT, formatter_class=argparse.RawDescriptionHelpFormatter)
    plt_.add_argument("results", metavar="RESULTS", help="results file: .nc or .zarr from il2sim run/sweep, or a .csv table")
    plt_.add_argument("--kind", choices=PLOT_KINDS, default="trajectories", help="figure to draw (default trajectories)")
    plt_.add_argument("--var", metavar="V", help="variable or endpoint; for trajectories a comma-separated list; "
                                                "for dose-response/heatmap NAME:STAT reduces over time "
                                                "(max, min, mean, last); for sobol, endpoints to show")
    plt_.add_argument("--x", metavar="FACTOR", help="swept factor on the x axis (dose-response, heatmap)")
    plt_.add_argument("--y", metavar="FACTOR", help="swept factor on the y axis (heatmap)")
    plt_.add_argument("--scenario", type=int, metavar="K", help="draw only scenario K (index) of a sweep")
    plt_.add_argument("--time-unit", choices=("h", "d", "wk"), default="d", help="time axis of trajectories (default d)")
    plt_.add_argument("--logx", action="store_true", help="logarithmic x axis (dose-response)")
    plt_.add_argument("--out", metavar="PATH", help="figure path; PATH.png and PATH.svg are written")
    plt_.add_argument("--overwrite", action="store_true", help="replace existing figure files")
    plt_.set_defaults(func=_cmd_plot)
    swp = sub.add_parser("sweep", help="run a config over a design of doses, schedules or parameters ([sweep]), "
                                       "or compute Sobol indices ([sensitivity])", epilog=EPILOG_SWEEP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    swp.add_argument("config", help="scenario TOML file with a [sweep] or [sensitivity] table")
    swp.add_argument("--out", help="sweep: PATH.zarr (streamed, default results/<scenario>.zarr) or PATH.nc; "
                                    "sensitivity: PATH.csv (default results/<config>_sobol.csv) or PATH.nc")
    swp.add_argument("--subjects", type=int, help="virtual subjects per scenario (the same patients in every scenario)")
    swp.add_argument("--seed", type=int, help="sweep: the patients' seed; sensitivity: the Sobol sample's seed")
    swp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    swp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    swp.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    swp.set_defaults(func=_cmd_sweep)

    sb = sub.add_parser("sbml", help="export a model as SBML (COPASI, tellurium, libRoadRunner) or import an SBML model",
                        epilog=EPILOG_SBML, formatter_class=argparse.RawDescriptionHelpFormatter)
    sb_sub = sb.add_subparsers(dest="action", required=True)
    sb_exp = sb_sub.add_parser("export", help="write a scenario's model, or composed model modules, as SBML L3V2",
                               epilog=EPILOG_SBML, formatter_class=argparse.RawDescriptionHelpFormatter)
    sb_exp.add_argument("source", nargs="+", metavar="MODEL_OR_CONFIG",
                        help="a scenario config (its model and parameter values), or model module names/files to compose")
    sb_imp = sb_sub.add_parser("import", help="convert an SBML model into an il2sim model module (TOML)",
                               epilog=EPILOG_SBML, formatter_class=argparse.RawDescriptionHelpFormatter)
    sb_imp.add_argument("source", metavar="SBML", help="SBML file")
    sb_imp.add_argument("--name", help="module name (default: the SBML model id)")
    for p in (sb_exp, sb_imp):
        p.add_argument("-o", "--out", metavar="PATH", help="output file (default: standard output)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
        p.set_defaults(func=_cmd_sbml)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Il2simError as exc:
        if args.debug:
            raise
        print(f"il2sim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `il2sim models | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("il2sim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
