"""Figures: cohort trajectories as median and 5–95 % band, labelled with units."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["trajectories"]


def trajectories(
    ds: xr.Dataset,
    variables: list[str] | tuple[str, ...],
    path: str | Path | None = None,
    *,
    time_unit: str = "d",
    band: tuple[float, float] = (5.0, 95.0),
    title: str | None = None,
    log: tuple[str, ...] = ("C", "C_IU"),
):
    """Plot median and ``band`` percentiles over subjects of each variable against time.

    Variables named in ``log`` (serum IL-2 by default: pulses of 100s of pM next to a few pM)
    get a logarithmic axis. Returns the matplotlib Figure; writes PNG (and SVG beside it) when
    ``path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variables = [v for v in variables if v in ds.data_vars]
    ncol = min(3, max(1, len(variables)))
    nrow = max(1, math.ceil(len(variables) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False, constrained_layout=True)
    scale = {"h": 1.0, "d": 24.0, "wk": 168.0}[time_unit]
    t = ds["time"].values / scale
    ok = ds["status"].values.astype(str) == "ok" if "status" in ds else np.ones(ds.sizes["subject"], bool)
    for ax, name in zip(axes.flat, variables):
        y = ds[name].values[ok]
        if y.size:
            lo, med, hi = np.nanpercentile(y, [band[0], 50.0, band[1]], axis=0)
            ax.fill_between(t, lo, hi, alpha=0.3, color="C0", lw=0, label=f"{band[0]:g}–{band[1]:g} %")
            ax.plot(t, med, color="C0", lw=1.5, label="median")
        unit = ds[name].attrs.get("units", "")
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_title(ds[name].attrs.get("description", name), fontsize=9)
        ax.grid(alpha=0.3)
        if name in log and y.size and np.nanmax(y) > 0:
            ax.set_yscale("log")
            ax.set_ylim(bottom=max(np.nanpercentile(y[y > 0], 1) if (y > 0).any() else 1e-3, np.nanmax(y) * 1e-4))
    for ax in list(axes.flat)[len(variables):]:
        ax.set_visible(False)
    if variables:
        axes.flat[0].legend(fontsize=8, frameon=False)
    n_ok = int(ok.sum())
    fig.suptitle(title or f"{ds.attrs.get('scenario', '')}: {n_ok} subjects", fontsize=11)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path.with_suffix(".png"), dpi=120)
        fig.savefig(path.with_suffix(".svg"))
        plt.close(fig)
    return fig
