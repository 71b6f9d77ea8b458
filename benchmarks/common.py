"""Shared pieces of the benchmarks: machine/version banner and a scipy reference driver.

The scipy driver uses the same compiled model functions (``rhs``, ``jac``) and the same dose
events as il2sim: it integrates from event to event and applies each dose between calls, so
both sides solve exactly the same problem.
"""

from __future__ import annotations

import os
import platform
import subprocess

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
            else:
                y[:] = y0
                rate[:] = 0.0
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
