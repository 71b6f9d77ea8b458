"""Results as an ``xarray.Dataset`` (dims ``subject``, ``time``) and atomic netCDF output."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

from il2sim.errors import ConfigError

__all__ = ["STATUS_NAMES", "build_dataset", "write_netcdf"]

# Kernel status code -> short name stored per subject (messages live in il2sim._solvers.status).
STATUS_NAMES = ("ok", "max_steps", "step_too_small", "non_finite", "negative_state")
STAT_DESCRIPTIONS = {
    "n_steps": "solver counter: steps attempted",
    "n_accepted": "solver counter: steps accepted",
    "n_rejected": "solver counter: steps rejected by the error test",
    "n_rhs": "solver counter: right-hand-side evaluations",
    "n_jac": "solver counter: Jacobian evaluations",
    "n_lu": "solver counter: LU factorisations",
    "n_lu_fallback": "solver counter: sparse LU factorisations refused for a small pivot (dense pivoted LU used instead)",
}
STAT_FIELDS = ("n_steps", "n_accepted", "n_rejected", "n_rhs", "n_jac", "n_lu", "n_lu_fallback")


def build_dataset(
    *,
    model,
    t_out: np.ndarray,
    Y: np.ndarray,
    O: np.ndarray,
    P: np.ndarray,
    covariates: dict[str, np.ndarray],
    covariate_units: dict[str, str],
    subject: np.ndarray,
    status: np.ndarray,
    stats: np.ndarray,
    fstats: np.ndarray,
    variables: tuple[str, ...] | None,
    attrs: dict,
    messages: np.ndarray | None = None,
) -> xr.Dataset:
    """Assemble the result Dataset; every variable carries ``units`` and ``description``.

    ``messages`` (one per subject, optional) replaces the generic message of each failed
    subject's status, e.g. with the time and the state concerned.
    """
    keep = set(variables) if variables else None
    data_vars = {}
    for i, s in enumerate(model.states):
        if keep is None or s.name in keep:
            data_vars[s.name] = (("subject", "time"), Y[:, :, i], {"units": s.unit, "description": s.description, "kind": "state"})
    for k, o in enumerate(model.outputs):
        if keep is None or o.name in keep:
            data_vars[o.name] = (("subject", "time"), O[:, :, k], {"units": o.unit, "description": o.description, "kind": "output"})
    codes = np.asarray(status, dtype=np.int64)
    data_vars["status"] = (
        ("subject",),
        np.array([STATUS_NAMES[c] if 0 <= c < len(STATUS_NAMES) else f"code_{c}" for c in codes], dtype=object),
        {"description": "solver outcome per subject: ok, max_steps, step_too_small, non_finite or negative_state"},
    )
    from il2sim._solvers.status import Status

    text = [
        "" if c == 0 else (str(messages[i]) if messages is not None and messages[i] else Status(int(c)).message)
        for i, c in enumerate(codes)
    ]
    data_vars["status_message"] = (
        ("subject",),
        np.array(text, dtype=object),
        {"description": "why the solver stopped (when, and for negative_state which state), for subjects whose status is not ok"},
    )
    data_vars["t_reached"] = (("subject",), fstats[:, 0], {"units": "h", "description": (
        "time integration reached; when status is not ok, the failure time (for negative_state, the first "
        "solve time at which a state was below its lower bound; the trajectory is kept whole)")})
    for j, name in enumerate(STAT_FIELDS):
        data_vars[name] = (("subject",), stats[:, j], {"description": STAT_DESCRIPTIONS[name]})
    coords = {
        "subject": ("subject", np.asarray(subject, dtype=np.int64), {"description": "subject index (its random stream)"}),
        "time": ("time", np.asarray(t_out, dtype=float), {"units": "h", "description": "time since midnight of day 1"}),
    }
    for j, prm in enumerate(model.parameters):
        coords[prm.name] = ("subject", P[:, j], {"units": prm.unit, "description": prm.description})
    for name, values in covariates.items():
        if name in coords:
            continue
        coords[name] = ("subject", np.asarray(values), {"units": covariate_units.get(name, ""), "description": f"covariate {name}"})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(attrs)
    ds.attrs.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``ds`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    An interrupted write leaves either the old file or nothing, never a truncated file.
    """
    from il2sim._files import refuse_existing, replacing

    path = Path(path)
    refuse_existing([path], overwrite=overwrite, hint="pass --overwrite to replace it")
    out = ds.copy()
    for name in list(out.variables):
        if out[name].dtype == object:
            out[name] = out[name].astype(str)
    attrs = {k: (v if isinstance(v, (str, int, float, np.number, np.ndarray)) else str(v)) for k, v in out.attrs.items()}
    out.attrs = attrs
    with replacing(path) as tmp:
        out.to_netcdf(tmp, engine="h5netcdf")
    return path
