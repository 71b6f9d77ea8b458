"""Rodas5P's step-size controller: step attempts against global error, this build's beside the
one it replaced, on the same compiled steps.

    python benchmarks/bench_controller.py [CONFIG ...] [--n N] [--rtols R ...]

Both controllers drive the generated module's own Rodas5P pieces (``_rodas_prepare``,
``_rodas_step``, ``_error_norm``, ``_step_factor``, ``_initial_step``, ``_apply_events``, the
dense output) from a Python copy of ``_integrate``'s loop:

- ``I, h restart``: I control, 0.9 err^(-1/5) (``_rodas_factor``, Hairer's RODAS); after every
  event the step is the one chosen after the first full step accepted after the previous event
  (Hairer's starting step at t0): what ``solve_subject`` and the lane path run. The copy is checked against
  ``solve_subject`` (counters and trajectory to the bit), so the loop is the kernel's;
- ``PI, h carried``: the PI controller 0.9 err^(-0.7/5) err_prev^(0.4/5) (as OrdinaryDiffEq's,
  and Tsit5's ``_step_factor``) with the step size carried across events: the kernel's Rodas5P
  controller before.

For each rtol (atol 1e-9 for every state) it prints the step attempts per subject (accepted +
rejected), the right-hand-side evaluations per subject, and the largest relative error of C,
NK, Eos and M (|y - y_ref| / max_t |y_ref|, as ``peers/bench_peers.py`` measures it) against
``solve_subject`` at rtol 1e-10 / atol 1e-13; then, for each error the PI controller reached,
how many more attempts it took than the I controller would at that error (each curve
interpolated log-log between its rtols).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import banner, max_rel_error, prepare, subject_events  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [ROOT / "benchmarks" / "configs" / "bench12.toml", ROOT / "configs" / "mm_low_dose_1995.toml"]
CHECK = ("C", "NK", "Eos", "M")
CONTROLLERS = {"I, h restart": True, "PI, h carried": False}


def _solve(mod, p_row, y0, t_out, ev, rtol, atol, shipped):
    """One subject with adaptive Rodas5P, _integrate's loop with the given controller.
    Returns (trajectory (n_out, n_states), attempts, RHS evaluations)."""
    n = mod.N_STATES
    ev_time, ev_kind, ev_state, ev_value = ev
    p = np.empty(p_row.size + mod.N_DERIVED)
    p[: p_row.size] = p_row
    mod.derive(p)
    y, ynew, rate = y0.copy(), np.empty(n), np.zeros(n + 1)
    K, u, fu, f0 = np.zeros((mod.RODAS5P_STAGES, n)), np.empty(n), np.empty(n), np.empty(n)
    err, dT, dense = np.empty(n), np.empty(n), np.empty((3, n))
    J, Jv, W, Wv = np.empty((n, n)), np.empty(mod.JAC_NNZ), np.empty((n, n)), np.empty(mod.LU_NNZ)
    piv, stats = np.empty(n, np.int64), np.zeros(7, np.int64)
    Y = np.full((t_out.size, n), np.nan)
    k = float(mod.RODAS5P_ERR_ORDER)
    t, t_end = 0.0, float(t_out[-1])
    ie = mod._apply_events(t, 0, ev_time, ev_kind, ev_state, ev_value, y, rate, y0, p)
    io = mod._record_upto(t, 0, t_out, y, Y)
    h, need_h, le_prev, after, have_jac = 0.0, True, 0.0, False, False
    h_first, first = 0.0, True
    while io < t_out.size:
        t_stop = min(t_end, ev_time[ie]) if ie < ev_time.size else t_end
        while t < t_stop:
            if need_h:
                h = mod._initial_step(t, y, rate, p, K[0], fu, u, atol, rtol, k, math.inf, stats)
                need_h = False
            h_try, clipped = h, False
            if t + mod._FINAL_STRETCH * h_try >= t_stop:
                h_try, clipped = t_stop - t, True
                if h_try <= max(16.0 * mod._EPS * abs(t), mod._HMIN_FLOOR):
                    t = t_stop
                    break
            stats[mod._S_STEPS] += 1
            if not have_jac:
                mod._rodas_prepare(t, y, p, rate, J, Jv, dT, f0, fu, stats)
                have_jac = True
            code = mod._rodas_step(t, h_try, y, p, rate, f0, J, Jv, dT, W, Wv, piv, K, u, fu, ynew, err, stats)
            en = math.inf if code != 0 else mod._error_norm(err, y, ynew, atol, rtol)
            le = mod._log2(en)
            if shipped:
                fac = mod._rodas_factor(en, after)
            else:  # Tsit5's PI controller, with Rodas5P's k
                fac = mod._step_factor(en, le, le_prev, k, after)
            if not en <= 1.0:
                h, after = h_try * fac, True
                if not h > 0.0:
                    raise RuntimeError("step size underflow")
                continue
            h_next = max(h_try * fac, h) if clipped and fac >= 1.0 else h_try * fac
            le_prev, after = max(le, mod._LOG2_ERR_PREV_MIN), False
            if first and not clipped:
                h_first, first = h_next, False  # (h_max is inf here)
            t_new = t_stop if clipped else t + h_try
            if io < t_out.size and t_out[io] < t_new:
                mod._rodas_dense_prepare(K, dense)
                while io < t_out.size and t_out[io] < t_new:
                    mod._rodas_dense((t_out[io] - t) / h_try, y, ynew, dense, Y[io])
                    io += 1
            y[:] = ynew
            have_jac = False
            t, h = t_new, h_next
        if ie < ev_time.size and ev_time[ie] <= t:
            ie = mod._apply_events(t, ie, ev_time, ev_kind, ev_state, ev_value, y, rate, y0, p)
            have_jac, after, le_prev, first = False, False, 0.0, True
            if shipped:
                h, need_h = (h_first, need_h) if h_first > 0.0 else (h, True)
        io = mod._record_upto(t, io, t_out, y, Y)
        if t >= t_end:
            break
    return Y, int(stats[mod._S_STEPS]), int(stats[mod._S_RHS])


def _solve_subject(mod, p_row, y0, t_out, ev, rtol, atol):
    from il2sim._solvers.status import METHODS

    Y = np.empty((t_out.size, mod.N_STATES))
    st, fs = np.zeros(7, np.int64), np.zeros(2)
    code = mod.solve_subject(METHODS["rodas5p"], 1, 0.0, y0, p_row, t_out, *ev, rtol, atol, 0.0, 0.0,
                             100_000_000, Y, st, fs)
    if code != 0:
        raise RuntimeError(f"solve_subject status {code}")
    return Y, st


def _attempts_at(curve, err):
    """Attempts a curve [(attempts, error), ...] needs for ``err`` (log-log interpolation;
    extrapolated from the nearest two points outside it)."""
    pts = sorted(curve, key=lambda c: c[1])
    le = np.log([p[1] for p in pts])
    la = np.log([p[0] for p in pts])
    x = math.log(err)
    i = int(np.clip(np.searchsorted(le, x), 1, len(pts) - 1))
    w = (x - le[i - 1]) / (le[i] - le[i - 1])
    return float(np.exp(la[i - 1] + w * (la[i] - la[i - 1])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=[str(c) for c in DEFAULT])
    ap.add_argument("--n", type=int, default=16, help="subjects (default 16)")
    ap.add_argument("--rtols", type=float, nargs="+", default=[2e-6, 1e-6, 5e-7, 2.5e-7])
    args = ap.parse_args()
    if len(set(args.rtols)) < 2:
        ap.error("--rtols: at least two different tolerances (the ratio interpolates between them)")
    print(banner())
    for config in args.configs:
        sc, mod, P, Y0, t_out, events = prepare(config, args.n)
        n = mod.N_STATES
        evs = [subject_events(events, s) for s in range(args.n)]
        ref = np.stack([_solve_subject(mod, P[s], Y0[s], t_out, evs[s], 1e-10, np.full(n, 1e-13))[0]
                        for s in range(args.n)])
        print(f"\n{sc.name}: {args.n} subjects, {t_out[-1] / 24:.0f} days, {mod.N_STATES} states")
        print(f"{'controller':14s} {'rtol':>7s} {'attempts':>9s} {'RHS':>8s}  " + " ".join(f"{c:>8s}" for c in CHECK))
        curves = {}
        for name, shipped in CONTROLLERS.items():
            for rtol in args.rtols:
                atol = np.full(n, 1e-9)
                Y, att, rhs = np.empty_like(ref), 0, 0
                for s in range(args.n):
                    Y[s], a, r = _solve(mod, P[s], Y0[s], t_out, evs[s], rtol, atol, shipped)
                    att, rhs = att + a, rhs + r
                    if shipped:  # the copy of the loop is the kernel's
                        Ys, st = _solve_subject(mod, P[s], Y0[s], t_out, evs[s], rtol, atol)
                        if not (np.array_equal(Ys, Y[s]) and st[0] == a and st[3] == r):
                            raise RuntimeError(f"{sc.name} subject {s}: the Python loop is not solve_subject's")
                errs = max_rel_error(sc.model, mod, t_out, Y, ref, P, CHECK)
                worst = max(e for e in errs.values() if e is not None)
                curves.setdefault(name, []).append((att / args.n, worst))
                print(f"{name:14s} {rtol:7.1e} {att / args.n:9.0f} {rhs / args.n:8.0f}  "
                      + " ".join("       —" if e is None else f"{e:8.1e}" for e in errs.values()))
        new, old = curves["I, h restart"], curves["PI, h carried"]
        print("PI attempts / I attempts at the PI controller's error: "
              + ", ".join(f"{a / _attempts_at(new, e):.2f} (error {e:.1e})" for a, e in old))


if __name__ == "__main__":
    main()
