"""Reproduction report: simulate a config's cohort and compare it with the config's targets.

``write_report(config, out)`` writes a folder with ``report.md`` and PNG figures:

- ``pk.png``: serum IL-2 after the first doses (days 1-4, log scale) and in
  days 29-31 (when the simulation goes on that long), median and 5-95 % band;
- ``cells.png``: Treg, CD4, CD8, CD4/CD8, NK, eosinophils and sIL-2R over the first cycle;
- ``waterfall.png`` and ``swimmer.png`` (when the regimen stops at progression): best M-protein
  change per subject and days on therapy, coloured by response class;
- a table, target by target: reported value, simulated summary (median and range over the
  cohort), the band declared in the config, pass/fail and source.

The folder is written to a temporary sibling and renamed into place, so an interrupted run never
leaves a half-written report.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import il2sim
from il2sim.errors import ConfigError
from il2sim.plot import RESPONSE_COLOURS, swimmer, waterfall
from il2sim.targets import TargetResult, evaluate_targets

__all__ = ["write_report", "target_table", "RESPONSE_COLOURS"]

CELL_VARIABLES = ("Treg", "CD4", "CD8", "CD4_CD8", "NK", "Eos", "sIL2R")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "—" if x is None or math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-2):
        return f"{x:.3g}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def target_table(results: list[TargetResult]) -> str:
    """Markdown table, one row per target."""
    rows = ["| target | variable, statistic | reported | simulated | median (range) over cohort | band | pass | source |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.target
        stat = f"`{t.variable}` {t.statistic}" + (f" ({t.where()})" if t.where() else "")
        if t.statistic == "fraction":
            k = int(round(float(np.sum(r.per_subject))))
            sim = f"{_fmt(r.simulated)} ({k}/{r.n} {'+'.join(t.classes)})"
            spread = "—"
        else:
            sim = f"{_fmt(r.simulated)} ({t.summary})" if t.summary != "median" else _fmt(r.simulated)
            spread = f"{_fmt(r.median)} ({_fmt(r.low)}–{_fmt(r.high)})" if r.n > 1 else _fmt(r.median)
        unit = f" {t.unit}" if t.unit else ""
        band = f"[{_fmt(t.band[0])}, {_fmt(t.band[1])}]{unit}"
        flag = "**pass**" if r.passed else "**FAIL**"
        note = " (report only)" if t.weight == 0 else ""
        rows.append(f"| {t.name}{note} | {_md(stat)} | {_md(t.reported_text)}{unit if t.reported is not None else ''} | {sim} | {spread} | {band} | {flag} | {_md(t.source)} |")
    return "\n".join(rows)


def _pk_grid(sc) -> tuple[np.ndarray, list[tuple[float, float]]]:
    end = sc.output.end_h
    windows = [(0.0, min(96.0, end))]
    if end >= 31 * 24:
        windows.append((28 * 24.0, 31 * 24.0))
    t = np.unique(np.concatenate([np.arange(a, b + 1e-9, 0.1) for a, b in windows]))
    return t, windows


def _figure_pk(ds, windows, path: Path) -> Path | None:
    if "C" not in ds:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(windows), figsize=(5.5 * len(windows), 3.6), squeeze=False, constrained_layout=True)
    t = ds["time"].values
    y = ds["C"].values
    ok = ds["status"].values.astype(str) == "ok"
    titles = ["first doses (days 1–4, log scale)", "days 29–31 (00:00 of day 29 = 672 h)"]
    for k, (ax, (a, b), title) in enumerate(zip(axes[0], windows, titles)):
        sel = (t >= a) & (t <= b)
        lo, med, hi = np.nanpercentile(y[ok][:, sel], [5, 50, 95], axis=0)
        ax.fill_between(t[sel], lo, hi, alpha=0.3, lw=0, label="5–95 %")
        ax.plot(t[sel], med, lw=1.5, label="median")
        ax.axhline(10.0, color="0.5", ls=":", lw=1, label="10 pM")
        if k == 0 and np.nanmax(hi) > 0:
            ax.set_yscale("log")
            ax.set_ylim(max(np.nanmax(hi) * 1e-4, 0.01), np.nanmax(hi) * 2)
        ax.set_xlabel("time (h)")
        ax.set_ylabel("serum IL-2 C (pM)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{ds.attrs.get('scenario', '')}: serum IL-2, {int(ok.sum())} subjects", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _figure_cells(ds, cycle_h: float, path: Path) -> Path | None:
    from il2sim.plot import trajectories

    wanted = [v for v in CELL_VARIABLES if v in ds]
    if not wanted:
        return None
    sub = ds.sel(time=ds["time"] <= cycle_h)
    fig = trajectories(sub, wanted, None, title=f"{ds.attrs.get('scenario', '')}: first {cycle_h / 24:g} days, median and 5–95 %")
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _save_png(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def write_report(config: str | Path, out: str | Path | None = None, *, subjects: int | None = None,
                 seed: int | None = None, overwrite: bool = True) -> Path:
    """Simulate ``config`` and write the report folder; return the path of ``report.md``.

    ``out`` defaults to ``reports/<scenario name>``; an existing folder is replaced when
    ``overwrite`` (the CLI asks for ``--overwrite``), else refused. The folder is built beside
    ``out`` under a temporary name and renamed into place; replacing moves the old one to
    ``.<name>.old`` first (a kill between the two renames leaves it there, complete).
    """
    from il2sim.scenario import load_scenario
    from il2sim.simulate import simulate, status_summary

    sc = load_scenario(config)
    out = Path(out) if out is not None else Path("reports") / sc.name
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; pass --overwrite to replace the report folder, or choose another --out")
    ds = simulate(sc, subjects=subjects, seed=seed)
    results = evaluate_targets(ds, sc.targets) if sc.targets else []
    t_pk, windows = _pk_grid(sc)
    ds_pk = simulate(sc, subjects=subjects, seed=seed, t_out=t_pk, variables=["C"])
    cycle_h = (sc.regimen.cycle_days * 24.0) if sc.regimen is not None else sc.output.end_h
    cycle_h = min(cycle_h, float(ds["time"].values[-1]))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        figures = {
            "pk": _figure_pk(ds_pk, windows, tmp / "pk.png"),
            "cells": _figure_cells(ds, cycle_h, tmp / "cells.png"),
        }
        if "response" in ds:
            figures["waterfall"] = _save_png(waterfall(ds, criteria=sc.response), tmp / "waterfall.png")
            figures["swimmer"] = _save_png(swimmer(ds), tmp / "swimmer.png")
        (tmp / "report.md").write_text(_markdown(sc, ds, results, figures, status_summary(ds)), encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "report.md"


def _markdown(sc, ds, results, figures, status: str) -> str:
    n = ds.sizes["subject"]
    passed = sum(r.passed for r in results)
    lines = [
        f"# {sc.name}: reproduction report",
        "",
        sc.description,
        "",
        f"- config: `{sc.source}`; models: {', '.join(sc.models)} (model hash `{sc.model.text_hash[:12]}`)",
        f"- cohort: {n} virtual subjects, seed {ds.attrs.get('seed')}; solver {ds.attrs.get('solver_method')}, rtol {ds.attrs.get('rtol')}, atol {ds.attrs.get('atol')}; status: {status}",
        f"- simulated {float(ds['time'][0]) / 24:g}–{float(ds['time'][-1]) / 24:g} d; il2sim {il2sim.__version__}; "
        f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
    ]
    if results:
        lines += [
            f"## Targets: {passed} of {len(results)} within the band declared before fitting",
            "",
            "Simulated = the target's summary over the cohort (median unless stated); the range is "
            "over the subjects counted. Bands were fixed in the config before calibration. "
            "Text in *reported* marks a bound or a qualitative finding, counted as met inside the band.",
            "",
            target_table(results),
            "",
        ]
    if "response" in ds:
        resp = ds["response"].values.astype(str)
        counts = ", ".join(f"{c} {int(np.sum(resp == c))}" for c in ("PR", "MR", "SD", "PD"))
        days = ds["days_on_therapy"].values
        lines += [
            "## Outcomes",
            "",
            f"Best response: {counts} (of {n}). Days on therapy: mean {np.mean(days):.0f}, "
            f"median {np.median(days):.0f}, range {np.min(days):.0f}–{np.max(days):.0f}.",
            "",
            "| subject | BSA (m²) | response | best M change (%) | days on therapy | progression day |",
            "|---|---|---|---|---|---|",
        ]
        bsa = ds["BSA"].values if "BSA" in ds.coords else np.full(n, np.nan)
        for i in range(n):
            pday = ds["progression_day"].values[i]
            lines.append(f"| {int(ds['subject'].values[i])} | {bsa[i]:.2f} | {resp[i]} | {ds['best_M_change'].values[i]:.1f} | "
                         f"{days[i]:.0f} | {'—' if np.isnan(pday) else f'{pday:.0f}'} |")
        lines.append("")
    captions = {
        "pk": "Serum IL-2 (pM) over days 1–4 (first doses) and days 29–31; dotted line 10 pM.",
        "cells": "Cell counts, CD4/CD8 and sIL-2R over the first cycle: median and 5–95 % band.",
        "waterfall": "Best sustained M-protein change per subject (dashed −50 %: PR, dotted −25 %: MR).",
        "swimmer": "Days on therapy per subject, coloured by best response.",
    }
    lines += ["## Figures", ""]
    for key, path in figures.items():
        if path is not None:
            lines += [f"![{key}]({path.name})", "", captions[key], ""]
    return "\n".join(lines)
