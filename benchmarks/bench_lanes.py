"""Subjects side by side vs one at a time: the two CPU cohort paths of the same build, one core.

    python benchmarks/bench_lanes.py [CONFIG ...] [--n N] [--repeats R]

For each config (default: the 12-state benchmark model and the seed-trial library) it solves
the same N subjects with adaptive Rodas5P (rtol 1e-6, atol 1e-9 for every state) through the
generated module's ``_solve_each`` (``solve_subject`` per subject) and
``_solve_cohort_lanes`` (LANES subjects side by side), alternating the two R times in one
process on one thread, and prints the best thread-CPU time per subject of each, their ratio,
and the largest difference between the two trajectories relative to each state's scale (rounding,
or a step decision that rounding flipped: then of the order of the tolerance).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import banner, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [ROOT / "benchmarks" / "configs" / "bench12.toml", ROOT / "configs" / "mm_low_dose_1995.toml"]


def _run(mod, lanes: bool, P, Y0, t_out, events):
    n = P.shape[0]
    Y = np.empty((n, t_out.size, Y0.shape[1]))
    st, ct, ft = np.zeros(n, np.int64), np.zeros((n, 7), np.int64), np.zeros((n, 2))
    atol = np.full(Y0.shape[1], 1e-9)
    t0 = time.thread_time()
    if lanes:
        ptr, _, kind, state, value = events
        general = not mod._lane_exponents_ok(P, ptr, kind, state, value)  # as solve_cohort decides
        mod._solve_cohort_lanes(0.0, Y0, P, t_out, *events, 1e-6, atol, 0.0, 0.0, 10_000_000, Y, st, ct, ft,
                                general)
    else:
        mod._solve_each(0, 1, 0.0, Y0, P, t_out, *events, 1e-6, atol, 0.0, 0.0, 10_000_000, Y, st,
                        ct, ft)
    return time.thread_time() - t0, Y, ct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=[str(c) for c in DEFAULT])
    ap.add_argument("--n", type=int, default=128, help="subjects (default 128)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    args = ap.parse_args()
    numba.set_num_threads(1)
    print(banner())
    print(f"{'scenario':18s} {'states':>6s} {'lanes':>5s} {'N':>6s} {'one at a time':>14s} {'side by side':>13s} "
          f"{'ratio':>6s} {'steps/subj':>10s} {'max diff':>9s}")
    for config in args.configs:
        sc, mod, P, Y0, t_out, events = prepare(config, args.n)
        if not mod._LANES_OK:
            print(f"{sc.name[:18]:18s} no lane path (no sparse LU, or a right-hand side that reads t)")
            continue
        k = min(args.n, 2)  # compile both paths outside the timing
        e = events[0][k]
        small = (events[0][: k + 1], *(a[:e] for a in events[1:]))
        _run(mod, False, P[:k], Y0[:k], t_out, small)
        _run(mod, True, P[:k], Y0[:k], t_out, small)
        each, lanes = [], []
        for _ in range(args.repeats):
            t1, Y1, ct = _run(mod, False, P, Y0, t_out, events)
            t2, Y2, _ = _run(mod, True, P, Y0, t_out, events)
            each.append(t1)
            lanes.append(t2)
        scale = np.max(np.abs(Y1), axis=1, keepdims=True) + 1e-300
        diff = float(np.max(np.abs(Y2 - Y1) / scale))
        a, b = min(each) / args.n * 1e3, min(lanes) / args.n * 1e3
        print(f"{sc.name[:18]:18s} {mod.N_STATES:6d} {mod.LANES:5d} {args.n:6d} {a:11.3f} ms {b:10.3f} ms "
              f"{a / b:6.2f} {ct[:, 0].mean():10.0f} {diff:9.1e}")


if __name__ == "__main__":
    main()
