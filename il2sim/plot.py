"""Figures of simulated cohorts, sweeps and sensitivity analyses, in one style.

Every function takes results as il2sim writes them and returns a matplotlib
:class:`~matplotlib.figure.Figure`; given ``path`` it also writes ``PATH.png`` and ``PATH.svg``
(whatever suffix ``path`` has). Axes are labelled with the variables' ``units`` attributes, and
titles and legends say what is drawn, so a figure reads without a caption.

=================  ==========================================================================
function           draws
=================  ==========================================================================
trajectories       median and 5–95 % band (or every subject: ``mode="spaghetti"``) against
                   time; one colour per scenario when the Dataset has a ``scenario`` dim
dose_response      an endpoint (one value per subject) against a swept factor: median and
                   5–95 % band, one curve per combination of the other factors
heatmap            the median of an endpoint over two sweep factors, with a colour bar
waterfall          best M-protein change per subject, coloured by response, PR/MR thresholds
swimmer            days on therapy per subject, coloured by response, progression marked
kaplan_meier       time to progression by scenario (product-limit estimate, censor ticks)
sobol_bars         first-order and total Sobol indices with confidence intervals, per endpoint
=================  ==========================================================================

Inputs: a result Dataset (dims ``subject``, ``time`` in h) from :func:`il2sim.simulate`, or
a sweep's Dataset with a leading ``scenario`` dim and one coordinate along ``scenario`` per
swept factor; an endpoint may also be a DataArray (``scenario`` × ``subject``) or a tidy
:class:`pandas.DataFrame` (one row per subject, a column per factor; units in
``df.attrs["units"]``). Sobol indices are a table with columns ``endpoint``, ``parameter``,
``S1``, ``S1_conf``, ``ST``, ``ST_conf``. A missing variable, column or dimension raises
:class:`il2sim.errors.ConfigError` naming what is available.

Figures are built without pyplot (no global figure list, no backend switch), so they are safe
in scripts, notebooks and worker processes alike.
"""

from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from il2sim.errors import ConfigError

__all__ = [
    "trajectories", "dose_response", "heatmap", "waterfall", "swimmer", "kaplan_meier",
    "product_limit", "sobol_bars", "RESPONSE_COLOURS", "STYLE",
]

#: colour of each response class (ColorBrewer RdYlGn, colour-blind safe in this order)
RESPONSE_COLOURS = {"PR": "#1a9850", "MR": "#91cf60", "SD": "#fdae61", "PD": "#d73027"}

#: matplotlib rc settings shared by every figure; ``svg.fonttype = none`` keeps SVG text as text
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 8, "legend.frameon": False, "figure.titlesize": 11,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "svg.fonttype": "none", "savefig.dpi": 120,
}

#: hours per time unit on the time axis
TIME_UNITS = {"h": 1.0, "d": 24.0, "wk": 168.0}

_OTHER = "0.55"  # grey: unknown response class, reference lines


# -- shared helpers: style, saving, labels, scenarios -------------------------------------------

def _styled(func):
    """Run a figure function inside the shared rc settings (artists keep them once created)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def _figure(nrow: int = 1, ncol: int = 1, size: tuple[float, float] = (4.2, 3.0)):
    """A constrained-layout Figure with an (nrow, ncol) array of axes, each ``size`` inches."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncol, size[1] * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    return fig, axes


def _finish(fig, path: str | Path | None):
    """Write ``path`` as PNG and SVG (when given) and return the figure."""
    if path is not None:
        from il2sim._files import replacing

        path = Path(path)
        for suffix in (".png", ".svg"):  # each atomically: a killed run leaves no half-written figure
            with replacing(path.with_suffix(suffix)) as tmp:
                fig.savefig(tmp, format=suffix[1:])
    return fig


def _palette(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, then evenly spaced viridis."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.0, 0.95, n)]


def _label(name: str, attrs: dict | None = None, unit: str | None = None) -> str:
    """``"name (unit)"``; dimensionless quantities keep the bare name."""
    unit = unit if unit is not None else (attrs or {}).get("units", "")
    return f"{name} ({unit})" if unit and unit not in ("1", "-", "–") else name


def _fmt(x) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{x:.4g}"
    return str(x)


def _factors(obj) -> list[str]:
    """Swept factors: coordinates along ``scenario`` other than ``scenario`` itself."""
    if "scenario" not in obj.dims:
        return []
    return [str(c) for c in obj.coords if obj[c].dims == ("scenario",) and c != "scenario"]


def _scenario_label(obj, k: int, factors: list[str] | None = None) -> str:
    factors = _factors(obj) if factors is None else factors
    if factors:
        parts = []
        for f in factors:
            unit = obj[f].attrs.get("units", "")
            parts.append(f"{f} = {_fmt(obj[f].values[k])}" + (f" {unit}" if unit else ""))
        return ", ".join(parts)
    if "scenario" in obj.coords:
        return str(obj["scenario"].values[k])
    return f"scenario {k}"


def _groups(ds: xr.Dataset) -> list[tuple[str | None, xr.Dataset]]:
    """``[(label, dataset)]``: one per scenario, or ``[(None, ds)]`` without a scenario dim."""
    if "scenario" not in ds.dims:
        return [(None, ds)]
    return [(_scenario_label(ds, k), ds.isel(scenario=k)) for k in range(ds.sizes["scenario"])]


def _ok(ds: xr.Dataset) -> np.ndarray:
    """Subjects whose solve finished (``status == "ok"``); all when there is no status."""
    if "status" in ds:
        return ds["status"].values.astype(str) == "ok"
    return np.ones(ds.sizes["subject"], bool)


def _require(ds: xr.Dataset, names, kind: str, dims: tuple[str, ...] = ("subject",), hint: str = "") -> None:
    """ConfigError unless every name is a variable of ``ds`` with (at least) ``dims``."""
    for name in names:
        if name not in ds.variables:
            avail = [str(v) for v in ds.data_vars if set(dims) <= set(ds[v].dims)]
            raise ConfigError(f"{kind}: no variable {name!r} in the results{hint}; available: "
                              f"{', '.join(avail) or 'none'}")
        missing = [d for d in dims if d not in ds[name].dims]
        if missing:
            raise ConfigError(f"{kind}: {name!r} has dims ({', '.join(map(str, ds[name].dims))}) but needs "
                              f"{', '.join(missing)}{hint}")


def _no_scenario(ds: xr.Dataset, kind: str) -> None:
    if "scenario" in ds.dims:
        raise ConfigError(f"{kind}: the results hold {ds.sizes['scenario']} scenarios; draw one at a time "
                          f"(ds.isel(scenario=k), or --scenario K on the command line)")


# -- trajectories -------------------------------------------------------------------------------

@_styled
def trajectories(
    ds: xr.Dataset,
    variables: str | list[str] | tuple[str, ...],
    path: str | Path | None = None,
    *,
    mode: str = "band",
    time_unit: str = "d",
    band: tuple[float, float] = (5.0, 95.0),
    title: str | None = None,
    log: tuple[str, ...] = ("C", "C_IU"),
    max_subjects: int = 100,
):
    """Plot each variable against time over the cohort, one panel per variable.

    Parameters
    ----------
    ds : results with dims ``subject`` and ``time`` (h), optionally a leading ``scenario``.
    variables : names of time-dependent variables.
    path : write ``PATH.png`` and ``PATH.svg``.
    mode : ``"band"``: median and ``band`` percentiles over subjects whose solve finished;
        ``"spaghetti"``: the first ``max_subjects`` subjects as thin lines, median on top.
    time_unit : ``"h"``, ``"d"`` or ``"wk"``.
    log : variables drawn on a logarithmic axis (serum IL-2 by default: pulses of 100s of pM
        next to a few pM).

    With a ``scenario`` dim each scenario gets one colour, labelled with its factor values.
    """
    if isinstance(variables, str):
        variables = [variables]
    variables = list(variables)
    if mode not in ("band", "spaghetti"):
        raise ConfigError(f"trajectories: mode {mode!r}; expected 'band' or 'spaghetti'")
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"trajectories: time_unit {time_unit!r}; expected one of {', '.join(TIME_UNITS)}")
    if not variables:
        raise ConfigError("trajectories: no variables to draw")
    _require(ds, variables, "trajectories", ("subject", "time"))
    groups = _groups(ds)
    colours = _palette(len(groups)) if groups[0][0] is not None else ["C0"]
    ncol = min(3, len(variables))
    nrow = math.ceil(len(variables) / ncol)
    fig, axes = _figure(nrow, ncol)
    t = ds["time"].values / TIME_UNITS[time_unit]
    n_ok = 0
    for ax, name in zip(axes.flat, variables):
        positive = []
        for (label, sub), colour in zip(groups, colours):
            ok = _ok(sub)
            y = sub[name].transpose("subject", "time").values[ok]
            if ax is axes.flat[0]:
                n_ok += int(ok.sum())
            if not y.size:
                continue
            med = np.nanmedian(y, axis=0)
            if mode == "band":
                lo, hi = np.nanpercentile(y, band, axis=0)
                ax.fill_between(t, lo, hi, color=colour, alpha=0.25 if len(groups) <= 3 else 0.12, lw=0,
                                label=None if label else f"{band[0]:g}–{band[1]:g} %")
            else:
                shown = y[:max_subjects]
                for row in shown:
                    ax.plot(t, row, color=colour, lw=0.5, alpha=0.35, label="_subject")
                if label is None and len(shown):
                    ax.lines[-1].set_label(f"subjects ({len(shown)})")
            ax.plot(t, med, color=colour, lw=1.8, label=label or "median")
            positive.append(y[y > 0])
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_ylabel(_label(name, ds[name].attrs))
        ax.set_title(textwrap.fill(ds[name].attrs.get("description", name), 48))
        vals = np.concatenate(positive) if positive else np.array([])
        if name in log and vals.size:
            ax.set_yscale("log")
            ax.set_ylim(bottom=max(np.nanpercentile(vals, 1), np.nanmax(vals) * 1e-4))
    for ax in list(axes.flat)[len(variables):]:
        ax.set_visible(False)
    first = axes.flat[0]
    handles = first.get_legend_handles_labels()[0]
    what = f"median and {band[0]:g}–{band[1]:g} %" if mode == "band" else "individual subjects and median"
    if groups[0][0] is not None:  # beside the panels, so that many scenarios hide no data
        fig.legend(handles=handles, title=", ".join(_factors(ds)) or "scenario", loc="outside right upper")
        who = f"{n_ok} subjects in {len(groups)} scenarios"
    else:
        first.legend(handles=handles)
        who = f"{n_ok} subjects"
    fig.suptitle(title or f"{ds.attrs.get('scenario', '') or 'cohort'}: {what} of {who}")
    return _finish(fig, path)


# -- endpoints over sweep factors ---------------------------------------------------------------

def _tidy(data, var: str | None, factors: list[str], kind: str):
    """Endpoint values as a DataFrame (factor columns + ``value``) with its name and units.

    Returns ``(df, name, unit, factor_units, others)``; ``others`` are the remaining swept
    factors (columns of ``df`` too).
    """
    if isinstance(data, pd.DataFrame):
        if var is None:
            raise ConfigError(f"{kind}: a table needs var=<column of the endpoint>; columns: {', '.join(map(str, data.columns))}")
        missing = [c for c in [*factors, var] if c not in data.columns]
        if missing:
            raise ConfigError(f"{kind}: no column(s) {', '.join(map(repr, missing))} in the table; "
                              f"columns: {', '.join(map(str, data.columns))}")
        units = data.attrs.get("units", {})
        df = data[[*factors, var]].rename(columns={var: "value"})
        return df, var, units.get(var, ""), {f: units.get(f, "") for f in factors}, []
    if isinstance(data, xr.Dataset):
        if var is None:
            raise ConfigError(f"{kind}: name the endpoint (var=...); per-subject variables: "
                              f"{', '.join(str(v) for v in data.data_vars if data[v].dims == ('scenario', 'subject'))}")
        _require(data, [var], kind, ("scenario", "subject"))
        da = data[var]
        if "status" in data:
            da = da.where(data["status"].astype(str) == "ok")
    elif isinstance(data, xr.DataArray):
        da = data
        var = var or (str(da.name) if da.name is not None else "value")
    else:
        raise ConfigError(f"{kind}: expected an xarray Dataset/DataArray or a pandas DataFrame, got {type(data).__name__}")
    if set(da.dims) != {"scenario", "subject"}:
        extra = "; reduce over time first, e.g. ds['C'].max('time')" if "time" in da.dims else ""
        raise ConfigError(f"{kind}: {var!r} has dims ({', '.join(map(str, da.dims))}); expected (scenario, subject): "
                          f"one value per subject in each scenario of a sweep{extra}")
    available = _factors(da)
    missing = [f for f in factors if f not in available]
    if missing:
        raise ConfigError(f"{kind}: no swept factor {', '.join(map(repr, missing))}; factors of these results: "
                          f"{', '.join(available) or 'none'}")
    da = da.transpose("scenario", "subject")
    try:
        values = da.values.astype(float)
    except (TypeError, ValueError):
        raise ConfigError(f"{kind}: {var!r} is not numeric (dtype {da.dtype})") from None
    others = [f for f in available if f not in factors]
    n_sub = values.shape[1]
    cols = {f: np.repeat(da[f].values, n_sub) for f in [*factors, *others]}
    cols["value"] = values.ravel()
    df = pd.DataFrame(cols)
    return df, var, da.attrs.get("units", ""), {f: da[f].attrs.get("units", "") for f in factors}, others


def _numeric(values) -> bool:
    return np.issubdtype(np.asarray(values).dtype, np.number)


@_styled
def dose_response(
    data,
    x: str,
    path: str | Path | None = None,
    *,
    var: str | None = None,
    band: tuple[float, float] = (5.0, 95.0),
    logx: bool = False,
    title: str | None = None,
):
    """Plot an endpoint against a swept factor ``x``: median and ``band`` percentiles over subjects.

    ``data`` is a sweep Dataset (with ``var`` naming a per-subject endpoint, e.g.
    ``days_on_therapy``; subjects whose solve failed are left out), a DataArray with dims
    ``scenario`` × ``subject``, or a tidy DataFrame with columns ``x`` and ``var``. Each
    combination of the other swept factors gets its own curve and colour. ``logx`` draws ``x``
    on a logarithmic axis. A non-numeric ``x`` (e.g. regimen names) is drawn as categories.
    """
    df, name, unit, funits, others = _tidy(data, var, [x], "dose_response")
    keys = (df[others].apply(lambda row: ", ".join(f"{o} = {_fmt(v)}" for o, v in row.items()), axis=1)
            if others else pd.Series("median", index=df.index))
    labels = list(dict.fromkeys(keys))
    colours = _palette(len(labels)) if others else ["C0"]
    categorical = not _numeric(df[x])
    categories = list(dict.fromkeys(df[x])) if categorical else None
    fig, axes = _figure(1, 1, (5.2, 3.6))
    ax = axes[0, 0]
    for label, colour in zip(labels, colours):
        part = df[keys == label]
        xs = categories if categorical else np.sort(part[x].unique())
        stats = np.array([np.nanpercentile(part.loc[part[x] == v, "value"].to_numpy(float), [band[0], 50.0, band[1]])
                          for v in xs]).reshape(-1, 3)
        pos = np.arange(len(xs)) if categorical else np.asarray(xs, float)
        ax.fill_between(pos, stats[:, 0], stats[:, 2], color=colour, alpha=0.25, lw=0)
        ax.plot(pos, stats[:, 1], color=colour, marker="o", ms=3.5, lw=1.6, label=label)
    if categorical:
        ax.set_xticks(np.arange(len(categories)), [str(c) for c in categories])
    else:
        if logx:
            ax.set_xscale("log")
        levels = np.sort(df[x].unique())
        if levels.size <= 10:  # a tick at every swept value, written as the value
            ax.set_xticks(levels, [_fmt(v) for v in levels])
            ax.minorticks_off()
    ax.set_xlabel(_label(x, unit=funits[x]))
    ax.set_ylabel(_label(name, unit=unit))
    handles, _ = ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    handles.append(Patch(color="0.5", alpha=0.35, lw=0, label=f"{band[0]:g}–{band[1]:g} % of subjects"))
    ax.legend(handles=handles)
    ax.set_title(title or textwrap.fill(f"{name} by {x}: median and {band[0]:g}–{band[1]:g} % of subjects", 60))
    return _finish(fig, path)


@_styled
def heatmap(
    data,
    x: str,
    y: str,
    path: str | Path | None = None,
    *,
    var: str | None = None,
    stat: str = "median",
    cmap: str = "viridis",
    annotate: bool = True,
    title: str | None = None,
):
    """Draw ``stat`` (``"median"`` or ``"mean"``) of an endpoint over subjects on the grid of two swept factors.

    Cells are laid out by the sorted values of ``x`` (columns) and ``y`` (rows), equally
    spaced, labelled with the factor values; a combination that was not simulated is blank.
    Any other swept factor must be constant (select one value first). ``data`` as for
    :func:`dose_response`.
    """
    if stat not in ("median", "mean"):
        raise ConfigError(f"heatmap: stat {stat!r}; expected 'median' or 'mean'")
    if x == y:
        raise ConfigError(f"heatmap: x and y are both {x!r}; name two different swept factors")
    df, name, unit, funits, others = _tidy(data, var, [x, y], "heatmap")
    varying = [o for o in others if df[o].nunique() > 1]
    if varying:
        raise ConfigError(f"heatmap: factor(s) {', '.join(varying)} also vary; select one value of each first "
                          f"(e.g. ds.where(ds.{varying[0]} == v, drop=True))")
    xs = sorted(df[x].unique()) if _numeric(df[x]) else list(dict.fromkeys(df[x]))
    ys = sorted(df[y].unique()) if _numeric(df[y]) else list(dict.fromkeys(df[y]))
    agg = df.groupby([y, x], sort=False)["value"].agg(stat)
    Z = np.full((len(ys), len(xs)), np.nan)
    for (vy, vx), v in agg.items():
        Z[ys.index(vy), xs.index(vx)] = v
    fig, axes = _figure(1, 1, (5.4, 4.2))
    ax = axes[0, 0]
    ax.grid(False)
    image = ax.imshow(Z, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(np.arange(len(xs)), [_fmt(v) for v in xs])
    ax.set_yticks(np.arange(len(ys)), [_fmt(v) for v in ys])
    ax.set_xlabel(_label(x, unit=funits[x]))
    ax.set_ylabel(_label(y, unit=funits[y]))
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(_label(f"{stat} {name}", unit=unit))
    if annotate and Z.size <= 225:
        finite = Z[np.isfinite(Z)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(Z):
            if np.isfinite(v):
                text = f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="k" if v > mid else "w")
    ax.set_title(title or textwrap.fill(f"{stat} {name} over subjects, by {x} and {y}", 56))
    return _finish(fig, path)


# -- myeloma outcomes ---------------------------------------------------------------------------

_OUTCOME_HINT = " (written by a run whose regimen stops at progression: regimen.stop = \"progression\")"


def _response_patches(resp: np.ndarray):
    from matplotlib.patches import Patch

    return [Patch(color=c, label=f"{k} ({int(np.sum(resp == k))})") for k, c in RESPONSE_COLOURS.items()]


def _subject_ticks(ax, axis: str, ids: np.ndarray, limit: int = 60) -> None:
    positions = np.arange(ids.size)
    labels = [str(s) for s in ids] if ids.size <= limit else []
    if axis == "x":
        ax.set_xticks(positions if labels else [], labels, fontsize=7, rotation=90 if ids.size > 30 else 0)
    else:
        ax.set_yticks(positions if labels else [], labels, fontsize=7)


@_styled
def waterfall(ds: xr.Dataset, path: str | Path | None = None, *, criteria=None, title: str | None = None):
    """Bars of each subject's best sustained M-protein change, best first, coloured by response.

    Dashed lines mark the PR and MR thresholds of ``criteria`` (an
    :class:`il2sim.response.ResponseCriteria`; default −50 % and −25 %).
    """
    from il2sim.response import ResponseCriteria

    criteria = criteria or ResponseCriteria()
    _no_scenario(ds, "waterfall")
    _require(ds, ["best_M_change", "response"], "waterfall", ("subject",), _OUTCOME_HINT)
    best = ds["best_M_change"].values.astype(float)
    resp = ds["response"].values.astype(str)
    order = np.argsort(-np.nan_to_num(best, nan=-np.inf), kind="stable")
    fig, axes = _figure(1, 1, (7.0, 3.6))
    ax = axes[0, 0]
    ax.bar(np.arange(best.size), best[order], color=[RESPONSE_COLOURS.get(r, _OTHER) for r in resp[order]], width=0.8)
    lines = []
    for name, frac, ls in (("PR", criteria.pr_fall, "--"), ("MR", criteria.mr_fall, ":")):
        lines.append(ax.axhline(-100 * frac, color="0.3", ls=ls, lw=0.9, label=f"{name}: {-100 * frac:g} %"))
    ax.axhline(0.0, color="k", lw=0.6)
    _subject_ticks(ax, "x", ds["subject"].values[order])
    ax.set_xlabel("subject (ordered by change)")
    ax.set_ylabel(_label("best M-protein change", ds["best_M_change"].attrs, unit=ds["best_M_change"].attrs.get("units", "%")))
    ax.grid(axis="x", visible=False)
    ax.legend(handles=[*_response_patches(resp), *lines], ncol=3, loc="lower left")
    ax.set_title(title or f"{ds.attrs.get('scenario', '') or 'cohort'}: best sustained M-protein change from baseline, "
                          f"{best.size} subjects")
    return _finish(fig, path)


@_styled
def swimmer(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """One horizontal bar per subject: days on therapy, coloured by best response.

    ``|`` marks the visit at which progression stopped therapy, ``>`` a subject whose therapy
    ended without progression (last dose or end of follow-up).
    """
    _no_scenario(ds, "swimmer")
    _require(ds, ["days_on_therapy", "response", "progression_day"], "swimmer", ("subject",), _OUTCOME_HINT)
    days = ds["days_on_therapy"].values.astype(float)
    resp = ds["response"].values.astype(str)
    prog = ds["progression_day"].values.astype(float)
    order = np.argsort(days, kind="stable")
    k = np.arange(days.size)
    fig, axes = _figure(1, 1, (7.0, min(0.22 * days.size + 1.6, 12.0)))
    ax = axes[0, 0]
    ax.barh(k, days[order], color=[RESPONSE_COLOURS.get(r, _OTHER) for r in resp[order]], height=0.7)
    progressed = ~np.isnan(prog[order])
    unit = ds["days_on_therapy"].attrs.get("units", "d")
    ax.plot(days[order][progressed], k[progressed], ls="none", marker="|", color="k", ms=9, mew=1.5,
            label=f"progression ({int(progressed.sum())})")
    ax.plot(days[order][~progressed], k[~progressed], ls="none", marker=">", color="k", ms=4,
            label=f"ended without progression ({int((~progressed).sum())})")
    _subject_ticks(ax, "y", ds["subject"].values[order])
    ax.set_xlabel(_label("days on therapy", unit=unit))
    ax.set_ylabel("subject")
    ax.grid(axis="y", visible=False)
    ax.legend(handles=[*_response_patches(resp), *ax.get_lines()], loc="lower right", ncol=2)
    ax.set_title(title or f"{ds.attrs.get('scenario', '') or 'cohort'}: days on therapy by best response; "
                          f"mean {np.nanmean(days):.0f} {unit}")
    return _finish(fig, path)


def product_limit(durations, events) -> pd.DataFrame:
    """Kaplan–Meier (product-limit) estimate of the survival function.

    Parameters
    ----------
    durations : time of the event or of censoring, per subject.
    events : True where the event was observed, False where the subject was censored.

    Returns
    -------
    DataFrame with one row per distinct time: ``time``, ``at_risk`` (subjects with duration
    >= time), ``events``, ``censored`` and ``survival`` S(t) = Π (1 − d_i / n_i) over event
    times t_i <= t. A subject censored at an event time counts as at risk at that time.
    """
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape or t.ndim != 1:
        raise ConfigError(f"product_limit: durations and events must be 1-D of one length, got {t.shape} and {e.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise ConfigError("product_limit: durations must be finite and >= 0")
    times = np.unique(t)
    at_risk = np.array([(t >= s).sum() for s in times])
    d = np.array([(e & (t == s)).sum() for s in times])
    c = np.array([(~e & (t == s)).sum() for s in times])
    with np.errstate(divide="ignore", invalid="ignore"):
        survival = np.cumprod(np.where(at_risk > 0, 1.0 - d / at_risk, 1.0))
    return pd.DataFrame({"time": times, "at_risk": at_risk, "events": d, "censored": c, "survival": survival})


@_styled
def kaplan_meier(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """Kaplan–Meier curves of time to progression, one per scenario.

    A subject who progressed has its event at ``progression_day``; the others are censored at
    ``days_on_therapy`` (their last dose or the end of follow-up), drawn as ticks. Subjects
    whose solve failed are left out. The legend gives each curve's median time to progression.
    """
    _require(ds, ["progression_day", "days_on_therapy"], "kaplan_meier", ("subject",), _OUTCOME_HINT)
    groups = _groups(ds)
    colours = _palette(len(groups)) if groups[0][0] is not None else ["C0"]
    fig, axes = _figure(1, 1, (5.6, 3.8))
    ax = axes[0, 0]
    unit = ds["progression_day"].attrs.get("units", "d")
    n_total = 0
    for (label, sub), colour in zip(groups, colours):
        ok = _ok(sub)
        prog = sub["progression_day"].values.astype(float)[ok]
        on = sub["days_on_therapy"].values.astype(float)[ok]
        event = ~np.isnan(prog)
        table = product_limit(np.where(event, prog, on), event)
        n_total += int(ok.sum())
        below = table["survival"].to_numpy() <= 0.5
        median = f"median {table['time'].to_numpy()[below][0]:.0f} {unit}" if below.any() else "median not reached"
        text = f"{label + ': ' if label else ''}{median} (n = {int(ok.sum())}, {int(event.sum())} progressed)"
        ax.step(np.r_[0.0, table["time"]], np.r_[1.0, table["survival"]], where="post", color=colour, lw=1.6, label=text)
        cens = table[table["censored"] > 0]
        ax.plot(cens["time"], cens["survival"], ls="none", marker="|", ms=8, mew=1.2, color=colour, label="_censored")
    ax.plot([], [], ls="none", marker="|", ms=8, color="k", label="censored (no progression)")
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlim(left=0.0)
    ax.set_xlabel(_label("time since start of therapy", unit=unit))
    ax.set_ylabel("progression-free fraction")
    ax.legend(loc="lower left")
    ax.set_title(title or f"{ds.attrs.get('scenario', '') or 'cohort'}: time to progression (Kaplan–Meier), {n_total} subjects")
    return _finish(fig, path)


# -- sensitivity --------------------------------------------------------------------------------

def _interval(part: pd.DataFrame, index: str) -> np.ndarray | None:
    """Error bars of an index: ``(2, n)`` from ``_low``/``_high`` bounds, ``(n,)`` half-widths from ``_conf``."""
    if f"{index}_low" in part and f"{index}_high" in part:
        value = part[index].to_numpy(float)
        return np.clip(np.vstack([value - part[f"{index}_low"].to_numpy(float),
                                  part[f"{index}_high"].to_numpy(float) - value]), 0.0, None)
    if f"{index}_conf" in part:
        return part[f"{index}_conf"].to_numpy(float)
    return None


@_styled
def sobol_bars(table: pd.DataFrame, path: str | Path | None = None, *, endpoints: list[str] | None = None,
               title: str | None = None):
    """Bars of first-order (S1) and total (ST) Sobol indices per parameter, one panel per endpoint.

    ``table`` has columns ``endpoint``, ``parameter``, ``S1``, ``ST`` and optionally the
    confidence intervals drawn as error bars: ``S1_low``/``S1_high`` and ``ST_low``/``ST_high``
    (bounds, as :func:`il2sim.sensitivity` writes them) or ``S1_conf``/``ST_conf`` (half-widths).
    Parameters are sorted by ST within each panel.
    """
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"sobol_bars: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in ("endpoint", "parameter", "S1", "ST") if c not in table.columns]
    if missing:
        raise ConfigError(f"sobol_bars: the table has no column(s) {', '.join(missing)}; columns: "
                          f"{', '.join(map(str, table.columns))}")
    names = list(dict.fromkeys(table["endpoint"]))
    if endpoints is not None:
        unknown = [e for e in endpoints if e not in names]
        if unknown:
            raise ConfigError(f"sobol_bars: no endpoint {', '.join(map(repr, unknown))}; endpoints: {', '.join(map(str, names))}")
        names = list(endpoints)
    if not names:
        raise ConfigError("sobol_bars: the table is empty")
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    n_par = table["parameter"].nunique()
    fig, axes = _figure(nrow, ncol, (max(3.6, 0.45 * n_par + 1.6), 3.2))
    width = 0.38
    for ax, name in zip(axes.flat, names):
        part = table[table["endpoint"] == name].sort_values("ST", ascending=False, kind="stable")
        pos = np.arange(len(part))
        for offset, index, colour in ((-width / 2, "S1", "C0"), (width / 2, "ST", "C1")):
            conf = _interval(part, index)
            ax.bar(pos + offset, part[index].to_numpy(float), width, yerr=conf, color=colour, capsize=2,
                   error_kw={"lw": 0.8}, label={"S1": "first order S1", "ST": "total ST"}[index])
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xticks(pos, list(part["parameter"].astype(str)), rotation=45 if len(part) > 6 else 0, ha="right" if len(part) > 6 else "center")
        ax.set_xlabel("parameter")
        ax.set_ylabel("Sobol index (fraction of variance)")
        ax.set_title(str(name))
        ax.grid(axis="x", visible=False)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    has_ci = any(_interval(table, i) is not None for i in ("S1", "ST"))
    axes.flat[0].legend(title="error bars: confidence interval" if has_ci else None)
    fig.suptitle(title or "Sobol sensitivity indices per endpoint")
    return _finish(fig, path)
