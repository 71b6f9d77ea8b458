"""Shared pieces of the benchmarks: machine/version banner, the cohort workload, il2sim's
kernel driver, the error measure and a scipy reference driver.

The scipy driver uses the same compiled model functions (``rhs``, ``jac``) and the same dose
events as il2sim: it integrates from event to event and applies each dose between calls, so
both sides solve exactly the same problem. ``bench_scipy.py`` and ``peers/bench_peers.py``
build their workload with the same :func:`prepare`, so their numbers are for the same subjects.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp


def banner() -> str:
    """Machine and library versions, printed with every benchmark table."""
    import numba
    import scipy

    import il2sim

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = "?"
    return (
        f"machine: {cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}\n"
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"numba {numba.__version__}, il2sim {il2sim.__version__} ({commit})"
    )


def scipy_subject(mod, method, p, y0, t_out, ev_t, ev_k, ev_s, ev_v, rtol, atol, use_jac=True):
    """Solve one subject with ``scipy.integrate.solve_ivp``, stopping at every event.

    Returns (y_out [n_out, n_states], n_rhs, n_jac). Output at an event time is post-event,
    as in il2sim.
    """
    ns = y0.size
    rate = np.zeros(ns)
    nfev = [0, 0]

    def f(t, y):
        dy = np.empty(ns)
        mod.rhs(t, y, p, dy)
        nfev[0] += 1
        return dy + rate

    def jac(t, y):
        J = np.empty((ns, ns))
        mod.jac(t, y, p, J)
        nfev[1] += 1
        return J

    p = np.array(p, dtype=float)  # EV_PARAM events change this copy, never the caller's
    y = y0.copy()
    out = np.full((t_out.size, ns), np.nan)
    t_end = float(t_out[-1])
    n_ev = len(ev_t)
    i_ev = 0
    t = 0.0
    breaks = sorted({float(x) for x in ev_t if 0.0 < x <= t_end} | {t_end})
    for b in breaks:
        while i_ev < n_ev and ev_t[i_ev] <= t:  # events at t, before integrating on from t
            k, s, v = ev_k[i_ev], ev_s[i_ev], ev_v[i_ev]
            if k == 0:
                y[s] += v
            elif k == 1:
                rate[s] += v
            elif k == 2:
                y[:] = y0
                rate[:] = 0.0
            else:  # EV_PARAM: p[s] = v from here on
                p[s] = v
            i_ev += 1
        last = b >= t_end
        mask = (t_out >= t) & ((t_out <= b) if last else (t_out < b))
        te = t_out[mask]
        if b > t:
            te_full = te if (te.size and te[-1] == b) else np.append(te, b)
            kw = {"jac": jac} if (use_jac and method in ("BDF", "Radau", "LSODA")) else {}
            sol = solve_ivp(f, (t, b), y, method=method, rtol=rtol, atol=atol, t_eval=te_full, **kw)
            out[mask] = sol.y[:, : te.size].T
            y = sol.y[:, -1].copy()
        elif te.size:
            out[mask] = y
        t = b
    return out, nfev[0], nfev[1]


# ---------------------------------------------------------------------------------------------
# The cohort workload shared by bench_scipy.py and peers/bench_peers.py


def prepare(config, n: int, days: float | None = None):
    """Scenario, compiled module, parameters P (n, n_params), initial states Y0 (n, n_states),
    output grid and kernel dose events ``(ev_ptr, time, kind, state, value)`` of ``n`` subjects.

    Subject i's covariates and parameters do not depend on ``n`` (``sample_cohort`` draws per
    subject index), so the first k subjects of a larger cohort are the cohort of size k.
    ``days`` cuts the output grid (and so the doses) at that many days.
    """
    from il2sim._codegen import compile_model
    from il2sim.population import sample_cohort
    from il2sim.scenario import load_scenario
    from il2sim.simulate import cohort_events

    sc = load_scenario(Path(config))
    model = sc.model
    mod = compile_model(model).module
    spec = dataclasses.replace(sc.population, subjects=n)
    cohort = sample_cohort(spec, model.parameter_names, model.default_parameters(), sc.seed)
    P = np.ascontiguousarray(cohort.parameters)
    t_out = sc.output.times()
    if days is not None:
        t_out = np.ascontiguousarray(t_out[t_out <= days * 24.0 + 1e-9])
    events = cohort_events(sc, mod, cohort.covariates, P, float(t_out[-1]))
    Y0 = np.empty((n, len(model.state_names)))
    mod.eval_initial(P, Y0)
    return sc, mod, P, Y0, t_out, events


def first_events(events, n: int):
    """The kernel events of the first ``n`` subjects."""
    ptr, t, k, s, v = events
    e = ptr[n]
    return ptr[: n + 1].copy(), t[:e], k[:e], s[:e], v[:e]


def subject_events(events, i: int):
    """Subject i's events as ``(time, kind, state, value)`` arrays."""
    ptr, t, k, s, v = events
    sl = slice(ptr[i], ptr[i + 1])
    return t[sl], k[sl], s[sl], v[sl]


def il2sim_run(mod, method, P, Y0, t_out, events, rtol, atol, rows=None):
    """Time ``mod.solve_cohort`` (at the current numba thread count) on every subject, or on
    ``rows``. Returns (seconds, Y (n, n_out, n_states), status, stats)."""
    from il2sim._solvers.status import METHODS

    n = P.shape[0] if rows is None else len(rows)
    sel = slice(None) if rows is None else rows
    if rows is not None:
        from il2sim.dosing import cohort_kernel_events

        events = cohort_kernel_events([subject_events(events, r) for r in rows])
    ns = Y0.shape[1]
    Y = np.empty((n, t_out.size, ns))
    st, ct, ft = np.zeros(n, np.int64), np.zeros((n, 6), np.int64), np.zeros((n, 2))
    t0 = time.perf_counter()
    mod.solve_cohort(METHODS[method], 1, 0.0, np.ascontiguousarray(Y0[sel]), np.ascontiguousarray(P[sel]), t_out, *events,
                     rtol, atol, 0.0, 0.0, 10_000_000, Y, st, ct, ft)
    return time.perf_counter() - t0, Y, st, ct


def outputs_of(mod, t_out, Y, P):
    O = np.empty((Y.shape[0], t_out.size, mod.N_OUTPUTS))
    mod.eval_outputs(t_out, Y, np.ascontiguousarray(P), O)
    return O


def max_rel_error(model, mod, t_out, Y, Yref, P, check=("C", "Treg", "NK", "Eos")):
    """Max over subjects and time of |y - y_ref| / max|y_ref| (per variable, over time).

    A variable of ``check`` that is neither a state nor an output of the model gets None; a
    trajectory with NaN (a failed solve) gets inf.
    """
    O, Oref = outputs_of(mod, t_out, Y, P), outputs_of(mod, t_out, Yref, P)
    errs = {}
    for name in check:
        if name in model.state_names:
            i = model.state_names.index(name)
            a, b = Y[..., i], Yref[..., i]
        elif name in model.output_names:
            i = model.output_names.index(name)
            a, b = O[..., i], Oref[..., i]
        else:
            errs[name] = None
            continue
        scale = np.max(np.abs(b), axis=1, keepdims=True)
        e = np.abs(a - b) / np.where(scale > 0, scale, 1.0)
        errs[name] = float("inf") if np.isnan(e).any() else float(np.max(e))
    return errs
