"""il2sim against scipy's solve_ivp on the 12-state IL-2 PK/PD model over the seed regimen.

Same model functions (il2sim's generated rhs and analytic Jacobian), same dose events, same
output grid (84 days, 6-hourly), same tolerances. Both are checked against a tight scipy Radau
reference (rtol 1e-10) on a few subjects. Times are per subject on ONE core (numba threads = 1;
scipy is single-threaded); il2sim at 2 threads is listed too.

    python benchmarks/bench_scipy.py [--n 100 1000] [--scipy-subjects 40] [--ref-subjects 4]

scipy runs on the first ``--scipy-subjects`` subjects of each cohort (it is ~10^3 times slower;
its time per subject does not depend on the cohort size); il2sim runs the whole cohort.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import banner, first_events as _first, il2sim_run, max_rel_error, prepare, scipy_subject  # noqa: E402

HERE = Path(__file__).resolve().parent
CHECK = ("C", "Treg", "NK", "Eos")  # variables whose error is reported


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(HERE / "configs" / "bench12.toml"))
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--scipy-subjects", type=int, default=40)
    ap.add_argument("--ref-subjects", type=int, default=4)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--matched-rtol", type=float, default=None,
                    help="also run il2sim rodas5p at this looser rtol, to compare at equal accuracy (see the error columns)")
    args = ap.parse_args()

    print(banner())
    sc, mod, P, Y0, t_out, events = prepare(Path(args.config), max(args.n))
    model = sc.model
    ns = len(model.state_names)
    atol = np.full(ns, args.atol)
    print(f"model: {', '.join(sc.models)} ({ns} states); {events[0][1]} dose events per subject over "
          f"{t_out[-1] / 24:g} d; output every {t_out[1] - t_out[0]:g} h; rtol {args.rtol:g}, atol {args.atol:g}")

    # reference: scipy Radau at rtol 1e-10 on the first few subjects
    nref = min(args.ref_subjects, P.shape[0])
    ptr, et, ek, es, ev = events
    Yref = np.empty((nref, t_out.size, ns))
    for i in range(nref):
        sl = slice(ptr[i], ptr[i + 1])
        Yref[i], _, _ = scipy_subject(mod, "Radau", P[i], Y0[i], t_out, et[sl], ek[sl], es[sl], ev[sl], 1e-10, atol * 1e-3)

    rows = []
    for method in ("rodas5p", "tsit5"):
        il2sim_run(mod, method, P[:2], Y0[:2], t_out, tuple(a for a in _first(events, 2)), args.rtol, atol)  # compile/warm
    for n in args.n:
        Pn, Y0n, evn = P[:n], Y0[:n], _first(events, n)
        for method in ("rodas5p", "tsit5"):
            for threads in (1, 2):
                numba.set_num_threads(threads)
                sec, Y, st, ct = il2sim_run(mod, method, Pn, Y0n, t_out, evn, args.rtol, atol)
                err = max_rel_error(model, mod, t_out, Y[:nref], Yref, P[:nref], CHECK)
                rows.append((n, f"il2sim {method}", threads, sec, sec / n, err, int(ct[:, 3].mean()), int((st != 0).sum())))
        numba.set_num_threads(1)
        if args.matched_rtol:
            sec, Y, st, ct = il2sim_run(mod, "rodas5p", Pn, Y0n, t_out, evn, args.matched_rtol, atol)
            err = max_rel_error(model, mod, t_out, Y[:nref], Yref, P[:nref], CHECK)
            rows.append((n, f"il2sim rodas5p rtol {args.matched_rtol:g}", 1, sec, sec / n, err, int(ct[:, 3].mean()), int((st != 0).sum())))
        ns_sp = min(n, args.scipy_subjects)
        for method in ("LSODA", "BDF"):
            t0 = time.perf_counter()
            Ys = np.empty((ns_sp, t_out.size, ns))
            nfev = 0
            for i in range(ns_sp):
                sl = slice(ptr[i], ptr[i + 1])
                Ys[i], nf, _ = scipy_subject(mod, method, P[i], Y0[i], t_out, et[sl], ek[sl], es[sl], ev[sl], args.rtol, atol)
                nfev += nf
            sec = time.perf_counter() - t0
            err = max_rel_error(model, mod, t_out, Ys[:nref], Yref, P[:nref], CHECK)
            rows.append((n, f"scipy {method} (first {ns_sp})", 1, sec, sec / ns_sp, err, nfev // ns_sp, 0))

    print()
    print(f"{'N':>6} {'solver':<26} {'thr':>3} {'total s':>9} {'ms/subject':>11} {'subj/s':>9} {'x scipy LSODA':>14} "
          f"{'rhs/subj':>9} {'failed':>6}  max rel error vs Radau 1e-10 ({', '.join(CHECK)})")
    for n in args.n:
        lsoda = next(r[4] for r in rows if r[0] == n and r[1].startswith("scipy LSODA"))
        for r in (r for r in rows if r[0] == n):
            errs = " ".join(f"{r[5][k]:.1e}" for k in CHECK)
            print(f"{r[0]:>6} {r[1]:<26} {r[2]:>3} {r[3]:9.2f} {r[4] * 1e3:11.3f} {1 / r[4]:9.1f} {lsoda / r[4]:14.1f} "
                  f"{r[6]:>9} {r[7]:>6}  {errs}")


if __name__ == "__main__":
    main()
