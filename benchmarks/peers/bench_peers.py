"""il2sim against other ODE engines on the same IL-2 cohort problem (issue 7).

The workload (default ``benchmarks/configs/bench12.toml``: the 12-state model over the seed
regimen, 84 days, 6-hourly output, log-normal IIV) is built once by ``common.prepare``: every
engine gets the same parameters, initial states, output grid and per-subject kernel dose events
(``il2sim.simulate.cohort_events``: BSA-scaled amounts, bioavailability and lag already
applied). Every engine applies them the same way: it integrates from dose to dose, restarting
at each dose with the state incremented, and records the 6-hourly grid (a grid point at a dose
time records the state after the dose). Tolerances are rtol 1e-6 and atol 1e-9 for every state.

    python benchmarks/peers/bench_peers.py                      # N = 100, 1000, 10000
    python benchmarks/peers/bench_peers.py --quick              # small N, for development
    python benchmarks/peers/bench_peers.py --n 100 1000 --peers il2sim numbalsoda
    python benchmarks/peers/bench_peers.py --config configs/mm_low_dose_1995.toml

Engines (each runs in its own process, so its peak RSS is its own; an engine that does not
import is listed with the reason):

- il2sim: Rodas5P (stiff) and Tsit5 (explicit), ``solve_cohort`` at 1 and 2 numba threads,
  the whole cohort; JIT/cache loading is timed apart (compile/setup column);
- numbalsoda: LSODA with the model's generated ``rhs`` wrapped in a numba ``cfunc``, driven
  from an ``@njit`` loop over subjects and dose intervals;
- libRoadRunner: CVODE on the model exported by ``il2sim.sbml.to_sbml``, doses applied between
  ``simulate()`` calls, absolute tolerance set per state (a scalar atol is rescaled by each
  state's initial value in roadrunner 2.x, so atol would not be 1e-9 for the cell states);
- scipy ``solve_ivp``: LSODA, BDF and Radau with the generated analytic Jacobian;
- diffrax on jax CPU (float64): Tsit5 and Kvaerno5 with a PID controller, ``vmap`` over
  subjects, ``lax.scan`` over dose intervals in one jitted function (compile time apart).

Engines other than il2sim solve the first subjects only (at most ``--subset`` for scipy and
diffrax, and never past ``--budget`` seconds per method); their time for N subjects is then
their time per subject times N, marked "k/N" in the table. Errors: max over time and over the
first ``--ref-subjects`` subjects of |y - y_ref| / max_t |y_ref| for C (serum IL-2, an output),
NK, Eos and M (tumour; "—" where the model has none), against scipy Radau at rtol 1e-10 /
atol 1e-12 (cached on disk).

Ratio = engine seconds / il2sim Rodas5P 1-thread seconds at the same N (> 1: il2sim faster).
At equal tolerances il2sim's Rodas5P is several times more accurate than LSODA or CVODE, so a
"rodas5p*" row repeats it at ``--matched-rtol`` (default 2e-6), about their accuracy.
The il2sim "solver overhead" line is its solve time over the time the same number of RHS and
Jacobian evaluations take alone, minus 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
from common import banner, first_events, max_rel_error, prepare, scipy_subject, subject_events  # noqa: E402

PEERS = ("il2sim", "numbalsoda", "roadrunner", "scipy", "diffrax")
CHECK = ("C", "NK", "Eos", "M")
REF_RTOL = 1e-10
REF_ATOL = 1e-12
# What each engine's "not installed" line suggests.
INSTALL_HINT = {
    "numbalsoda": "pip install numbalsoda (builds from source: needs gfortran, cmake, a C++ compiler)",
    "roadrunner": "pip install libroadrunner; the SBML export needs python-libsbml",
    "diffrax": "pip install jax diffrax",
    "scipy": "pip install scipy",
    "il2sim": "pip install -e .",
}
VERSIONS = ("libroadrunner", "python-libsbml", "numbalsoda", "jax", "jaxlib", "diffrax", "equinox")


# ---------------------------------------------------------------------------------------------
# Parent: workload, reference, one child process per engine, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(BENCH / "configs" / "bench12.toml"))
    ap.add_argument("--days", type=float, default=84.0, help="horizon in days (cuts the config's output grid; default 84)")
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1_000, 10_000], help="cohort sizes")
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    ap.add_argument("--subset", type=int, default=100, help="at most this many subjects for scipy and diffrax")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="seconds per engine and method: stop measuring more subjects past this (il2sim excepted)")
    ap.add_argument("--ref-subjects", type=int, default=4, help="subjects checked against the Radau reference")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--matched-rtol", type=float, default=2e-6, metavar="RTOL",
                    help="also run il2sim rodas5p (1 thread) at this rtol, a row at about LSODA's accuracy at 1e-6 "
                         "(see the error columns); 0: no such row (default 2e-6)")
    ap.add_argument("--quick", action="store_true", help="N = 20 and 50, subset 10, budget 5 s, 2 reference subjects")
    ap.add_argument("--keep", metavar="DIR", default=None, help="keep the work folder (workload, trajectories, results) here")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")
    ap.add_argument("--child", metavar="JOB", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(Path(args.child))
    if args.quick:
        args.n, args.subset, args.budget, args.ref_subjects = [20, 50], 10, 5.0, 2
    args.n = sorted(set(args.n))
    nmax = max(args.n)
    nref = min(args.ref_subjects, min(args.n))

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    print(banner())
    print("peers: " + ", ".join(f"{p} {_version(p)}" for p in VERSIONS))
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    sc, mod, P, Y0, t_out, events = prepare(Path(args.config), nmax, args.days)
    model = sc.model
    ns = len(model.state_names)
    ev_per = np.diff(events[0])
    print(f"model: {model.name} ({ns} states, {len(model.parameter_names)} parameters); "
          f"{int(ev_per.min())}-{int(ev_per.max())} dose events per subject over {t_out[-1] / 24:g} d; "
          f"output every {t_out[1] - t_out[0]:g} h ({t_out.size} points); rtol {args.rtol:g}, atol {args.atol:g} (every state)")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_peers_"))
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "workload.npz", P=P, Y0=Y0, t_out=t_out, ev_ptr=events[0], ev_time=events[1],
             ev_kind=events[2], ev_state=events[3], ev_value=events[4])
    sbml_error = None
    if "roadrunner" in args.peers:
        try:
            from il2sim.sbml import sbml_ids, to_sbml

            (work / "model.xml").write_text(to_sbml(model))
            (work / "sbml_ids.json").write_text(json.dumps(sbml_ids(model)))
        except Exception as e:  # noqa: BLE001 - reported in the table
            sbml_error = f"SBML export failed: {type(e).__name__}: {e}"

    t0 = time.perf_counter()
    Yref, cached = reference(model, mod, P[:nref], Y0[:nref], t_out, first_events(events, nref))
    print(f"reference: scipy Radau rtol {REF_RTOL:g} atol {REF_ATOL:g} on {nref} subjects "
          f"({'cached' if cached else f'{time.perf_counter() - t0:.1f} s'})")

    results = []
    for peer in args.peers:
        if peer == "roadrunner" and sbml_error:
            results.append({"peer": peer, "available": False, "reason": sbml_error})
            continue
        # il2sim runs once per N, so its peak RSS is that of N subjects; the others solve the
        # first subjects once and serve every N from their cumulative times
        for ns_ in ([[n] for n in args.n] if peer == "il2sim" else [args.n]):
            job = {"peer": peer, "config": str(args.config), "days": args.days, "n": ns_, "nref": nref,
                   "subset": args.subset, "budget": args.budget, "rtol": args.rtol, "atol": args.atol,
                   "matched_rtol": args.matched_rtol,
                   "work": str(work)}
            results.append(run_child(job, work))
            r = results[-1]
            status = f"{r.get('wall', 0):.0f} s" if r.get("available") else r.get("reason", "")[:100]
            print(f"  {peer} N={','.join(map(str, ns_))}: {status}", flush=True)

    rows = table_rows(results, model, mod, P[:nref], t_out, Yref, work)
    print()
    print_table(rows, results)
    load1 = os.getloadavg()
    print(f"\nload average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; total wall {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"banner": banner(), "rows": rows, "results": results}, indent=1, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def reference(model, mod, P, Y0, t_out, events):
    """scipy Radau at rtol 1e-10 / atol 1e-12 (every state) on these subjects, cached on disk
    under a key of everything the trajectories depend on."""
    from il2sim._codegen import default_cache_dir

    h = hashlib.sha256()
    for a in (P, Y0, t_out, *events):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"{model.code_hash} {REF_RTOL} {REF_ATOL}".encode())
    path = default_cache_dir() / "bench_reference" / f"{h.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path), True
    n, ns = Y0.shape
    Yref = np.empty((n, t_out.size, ns))
    for i in range(n):
        Yref[i], _, _ = scipy_subject(mod, "Radau", P[i], Y0[i], t_out, *subject_events(events, i), REF_RTOL,
                                      np.full(ns, REF_ATOL))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, Yref)
    tmp.replace(path)
    return Yref, False


def run_child(job: dict, work: Path) -> dict:
    tag = f"{job['peer']}_{'_'.join(map(str, job['n']))}"
    job["tag"] = tag
    jpath = work / f"job_{tag}.json"
    jpath.write_text(json.dumps(job))
    env = dict(os.environ)
    if job["peer"] != "il2sim":
        # single-threaded engines: no BLAS or XLA thread pools behind their back
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                   XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                              " intra_op_parallelism_threads=1").strip())
    n_methods = {"scipy": 3, "diffrax": 2, "il2sim": 4}.get(job["peer"], 1)
    timeout = 600 + 3 * n_methods * job["budget"] + (0.1 * max(job["n"]) if job["peer"] == "il2sim" else 0)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(jpath)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"peer": job["peer"], "available": False, "reason": f"failed: timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    rpath = work / f"result_{tag}.json"
    if rpath.exists():
        res = json.loads(rpath.read_text())
        res["wall"] = wall
        if proc.returncode != 0 and res.get("available", True):
            res["error"] = res.get("error") or _tail(proc.stderr)
        return res
    return {"peer": job["peer"], "available": False, "reason": f"failed (exit {proc.returncode}): {_tail(proc.stderr)}"}


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-400:]


def table_rows(results, model, mod, Pref, t_out, Yref, work: Path) -> list[dict]:
    rows = []
    for res in results:
        if not res.get("available"):
            rows.append({"peer": res["peer"], "unavailable": res.get("reason", "?")})
            continue
        for run in res["runs"]:
            err = None
            if run.get("yref"):
                Y = np.load(work / run["yref"])
                err = max_rel_error(model, mod, t_out, Y, Yref, Pref, CHECK)
            for n_str, (sec, k) in run["times"].items():
                rows.append({"peer": res["peer"], "method": run["method"], "threads": run["threads"], "n": int(n_str),
                             "seconds": sec, "measured": k, "err": err, "rss_mib": res["maxrss_mib"],
                             "setup_s": run.get("setup_s"), "failed": run.get("failed", 0), "note": run.get("note", "")})
    # ratio to il2sim Rodas5P on one thread at the same N
    base = {r["n"]: r["seconds"] for r in rows if r.get("peer") == "il2sim" and r["method"] == "rodas5p" and r["threads"] == 1}
    for r in rows:
        if "n" in r:
            r["ratio"] = r["seconds"] / base[r["n"]] if r["n"] in base else None
    order = {p: i for i, p in enumerate(PEERS)}
    rows.sort(key=lambda r: (r.get("n", 0), order[r["peer"]]))
    return rows


def _fmt_err(e):
    return "—" if e is None else ("inf" if e == float("inf") else f"{e:.1e}")


def print_table(rows, results) -> None:
    hdr = (f"{'peer':<11} {'method':<9} {'thr':>3} {'N':>6} {'seconds':>9} {'subj/s':>9} {'x il2sim':>9} "
           f"{'err C':>8} {'err NK':>8} {'err Eos':>8} {'err M':>8} {'RSS MiB':>8} {'setup s':>8}  measured / notes")
    print(hdr)
    print("-" * len(hdr))
    last_n = None
    for r in rows:
        if "unavailable" in r:
            continue
        if last_n is not None and r["n"] != last_n:
            print()
        last_n = r["n"]
        e = r["err"] or {}
        meas = "all" if r["measured"] >= r["n"] else f"{r['measured']} of {r['n']} measured, time x N/{r['measured']}"
        notes = [meas]
        if r["failed"]:
            notes.append(f"{r['failed']} failed")
        if r["note"]:
            notes.append(r["note"])
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        setup = "—" if r["setup_s"] is None else f"{r['setup_s']:.2f}"
        print(f"{r['peer']:<11} {r['method']:<9} {r['threads']:>3} {r['n']:>6} {r['seconds']:9.3f} {r['n'] / r['seconds']:9.1f} "
              f"{ratio:>9} {_fmt_err(e.get('C')):>8} {_fmt_err(e.get('NK')):>8} {_fmt_err(e.get('Eos')):>8} "
              f"{_fmt_err(e.get('M')):>8} {r['rss_mib']:8.0f} {setup:>8}  {'; '.join(notes)}")
    for r in rows:
        if "unavailable" in r:
            print(f"{r['peer']:<11} {r['unavailable']}")
    for res in results:
        if res.get("error"):
            print(f"{res['peer']}: stopped after the rows above: {res['error']}")
    print_targets(rows, results)


def print_targets(rows, results) -> None:
    """The issue's targets for il2sim on one core, at the largest N where both sides ran."""
    def sec(peer, methods, threads, n):
        """The fastest of ``methods`` (libRoadRunner: doses between calls or as SBML events)."""
        got = [(r["seconds"], r["method"]) for r in rows if r.get("peer") == peer and r.get("method") in methods
               and r.get("threads") == threads and r.get("n") == n]
        return min(got) if got else (None, None)

    ns = sorted({r["n"] for r in rows if "n" in r})
    lines = []
    for peer, methods, want in (("numbalsoda", ("LSODA",), 3.0), ("roadrunner", ("CVODE", "CVODE-ev"), 13.0),
                                ("scipy", ("LSODA",), 250.0)):
        for n in reversed(ns):
            (a, _), (b, method) = sec("il2sim", ("rodas5p",), 1, n), sec(peer, methods, 1, n)
            if a and b:
                lines.append(f"  il2sim rodas5p (1 thread) vs {peer} {method}: {b / a:.1f}x at N={n} "
                             f"(target >= {want:g}x: {'met' if b / a >= want else 'NOT met'})")
                break
    for method in ("rodas5p", "tsit5"):
        for n in reversed(ns):
            a, b = sec("il2sim", (method,), 1, n)[0], sec("il2sim", (method,), 2, n)[0]
            if a and b:
                lines.append(f"  il2sim {method} 2 threads vs 1: {a / b:.2f}x at N={n} (target >= 1.8x: {'met' if a / b >= 1.8 else 'NOT met'})")
                break
    overheads = [res["overhead"] for res in results if res.get("overhead")]
    for ov in overheads[-1:]:  # the largest N
        if ov:
            lines.append(f"  il2sim solver overhead (N={ov['n']}, {ov['method']}, 1 thread): solve {ov['solve_s']:.3f} s, "
                         f"{ov['n_rhs']} RHS calls alone {ov['rhs_s']:.3f} s + {ov['n_jac']} Jacobians alone {ov['jac_s']:.3f} s "
                         f"-> overhead {ov['overhead']:.2f} x (RHS+Jacobian time) "
                         f"[{ov['rhs_per_call_ns']:.1f} ns/RHS, {ov['jac_per_call_ns']:.1f} ns/Jacobian, {ov['n_lu']} LU"
                         + (f"; timed as the cohort path calls them, {ov['lanes']} subjects per call]" if ov.get("lanes", 1) > 1 else "]"))
    if lines:
        print("\ntargets (issue 7):")
        print("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Child: one engine, every method, timings for every N, trajectories of the reference subjects


def child_main(jpath: Path) -> None:
    job = json.loads(jpath.read_text())
    work = Path(job["work"])
    out = {"peer": job["peer"], "available": True, "runs": []}
    try:
        w = np.load(work / "workload.npz")
        wl = {k: w[k] for k in w.files}
        wl["events"] = (wl["ev_ptr"], wl["ev_time"], wl["ev_kind"], wl["ev_state"], wl["ev_value"])
        fn = {"il2sim": child_il2sim, "numbalsoda": child_numbalsoda, "roadrunner": child_roadrunner,
              "scipy": child_scipy, "diffrax": child_diffrax}[job["peer"]]
        fn(job, wl, out, work)
    except _Unavailable as e:
        out = {"peer": job["peer"], "available": False, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - the parent reports it in the table
        traceback.print_exc()
        msg = f"failed: {type(e).__name__}: {e}"[:400]
        if out.get("runs"):  # keep the methods that finished
            out["error"] = msg
        else:
            out = {"peer": job["peer"], "available": False, "reason": msg}
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    (work / f"result_{job['tag']}.json").write_text(json.dumps(out))


class _Unavailable(Exception):
    pass


def _import(peer: str, names):
    import importlib

    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except Exception as e:  # noqa: BLE001 - ImportError, or a broken build failing at import
            raise _Unavailable(f"not installed: {type(e).__name__}: {e} ({INSTALL_HINT[peer]})") from None
    return mods


def _model(job):
    from il2sim._codegen import compile_model
    from il2sim.scenario import load_scenario

    model = load_scenario(Path(job["config"])).model
    return model, compile_model(model).module


def _times_for(job, cum: list[float], k: int) -> dict:
    """Seconds for each N from the cumulative times of the first k subjects: the measured time
    where N <= k, else the time per subject times N. ``cum[i]`` = time of subjects 0..i."""
    out = {}
    for n in job["n"]:
        out[str(n)] = (cum[n - 1], n) if n <= k else (cum[k - 1] / k * n, k)
    return out


def _save_ref(work: Path, job, method: str, Y: np.ndarray) -> str:
    name = f"yref_{job['tag']}_{method}.npy"
    np.save(work / name, Y[: job["nref"]])
    return name


def child_il2sim(job, wl, out, work):
    import numba

    from common import il2sim_run

    model, mod = _model(job)
    (n,) = job["n"]
    P, Y0, t_out = wl["P"][:n], wl["Y0"][:n], wl["t_out"]
    ev = first_events(wl["events"], n)
    ns = Y0.shape[1]
    atol = np.full(ns, job["atol"])
    threads = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]
    for method in ("rodas5p", "tsit5"):
        # first call loads the compiled kernels from numba's cache (or compiles them): setup.
        # As many subjects as make solve_cohort take the path the timed runs take (fewer than
        # _FEW go one at a time, without the lane code)
        numba.set_num_threads(1)
        k = min(n, getattr(mod, "_FEW", 1))
        t0 = time.perf_counter()
        il2sim_run(mod, method, P[:k], Y0[:k], t_out, first_events(ev, k), job["rtol"], atol)
        setup = time.perf_counter() - t0
        for th in threads:
            numba.set_num_threads(th)
            sec, Y, st, ct = il2sim_run(mod, method, P, Y0, t_out, ev, job["rtol"], atol)
            fail = int((st != 0).sum())
            note = f"{int(ct[:, 3].mean())} RHS, {int(ct[:, 4].mean())} Jac, {int(ct[:, 1].mean())} steps/subject"
            out["runs"].append({"method": method, "threads": th, "times": {str(n): (sec, n)}, "setup_s": setup,
                                "failed": fail, "yref": _save_ref(work, job, f"{method}_{th}", Y), "note": note})
            if method == "rodas5p" and th == 1:
                out["overhead"] = _overhead(mod, method, P, Y0, t_out, ev, job, atol)
            del Y
    if job.get("matched_rtol"):
        numba.set_num_threads(1)
        rt = job["matched_rtol"]
        sec, Y, st, ct = il2sim_run(mod, "rodas5p", P, Y0, t_out, ev, rt, atol)
        out["runs"].append({"method": "rodas5p*", "threads": 1, "times": {str(n): (sec, n)}, "setup_s": None,
                            "failed": int((st != 0).sum()), "yref": _save_ref(work, job, "rodas5p_matched", Y),
                            "note": f"* rtol {rt:g} (about the peers' accuracy); {int(ct[:, 1].mean())} steps/subject"})
        del Y
    numba.set_num_threads(threads[-1])


def _overhead(mod, method, P, Y0, t_out, ev, job, atol):
    """il2sim's solve time on up to 200 subjects over the time their counted RHS and Jacobian
    evaluations take alone (called in a numba loop on states from their own trajectories)."""
    import numba

    from common import il2sim_run

    m = min(P.shape[0], 200)
    sec = min(il2sim_run(mod, method, P[:m], Y0[:m], t_out, first_events(ev, m), job["rtol"], atol)[0] for _ in range(2))
    _, Y, _, ct = il2sim_run(mod, method, P[:m], Y0[:m], t_out, first_events(ev, m), job["rtol"], atol)
    n_rhs, n_jac = ct[:, 3].copy(), ct[:, 4].copy()
    sparse = bool(getattr(mod, "HAS_SPARSE_LU", False))
    buf = np.empty(mod.JAC_NNZ) if sparse else np.empty((mod.N_STATES, mod.N_STATES))
    # the functions the kernels call: with parameter-only subexpressions computed once per
    # subject (derive), the _k versions over the extended parameter vector
    if getattr(mod, "HAS_DERIVED", False):
        Pk = np.zeros((m, mod.N_PARAMS + mod.N_DERIVED))
        Pk[:, : mod.N_PARAMS] = P[:m]
        for s in range(m):
            mod.derive(Pk[s])
        rfun, jfun = mod.rhs_k, (mod.jac_nz_k if sparse else mod.jac_k)
    else:
        Pk = np.ascontiguousarray(P[:m])
        rfun, jfun = mod.rhs, (mod.jac_nz if sparse else mod.jac)

    @numba.njit(cache=False)
    def calls(f, Y, P, t_out, counts, buf):
        acc = 0.0
        for s in range(Y.shape[0]):
            n_t = Y.shape[1]
            for k in range(counts[s]):
                j = k % n_t
                f(t_out[j], Y[s, j], P[s], buf)
                acc += buf.flat[0]
        return acc

    @numba.njit(cache=False)
    def lane_calls(f, YL, PL, tL, n_calls, buf):
        """n_calls calls of a lane function, cycling over the lane groups and the output times."""
        acc = 0.0
        g_n, n_t = YL.shape[0], YL.shape[1]
        for k in range(n_calls):
            f(tL, YL[k % g_n, (k // g_n) % n_t], PL[k % g_n], buf)
            acc += buf[0]
        return acc

    dy = np.empty(mod.N_STATES)
    times = []
    ptr, _, kind, state, value = first_events(ev, m)
    lanes = (method == "rodas5p" and getattr(mod, "_LANES_OK", False) and m >= mod.LANES
             and mod._lane_exponents_ok(np.ascontiguousarray(P[:m]), ptr, kind, state, value))
    if lanes:
        # the cohort path evaluates LANES subjects per call of rhs_L / jac_nz_L: time those calls,
        # on LANES subjects' own trajectories side by side, each call counting LANES evaluations
        L, g_n = mod.LANES, m // mod.LANES
        YL = np.ascontiguousarray(Y[: g_n * L].reshape(g_n, L, Y.shape[1], -1).transpose(0, 2, 3, 1).reshape(g_n, Y.shape[1], -1))
        PL = np.ascontiguousarray(Pk[: g_n * L].reshape(g_n, L, -1).transpose(0, 2, 1).reshape(g_n, -1))
        for f, counts, b in ((mod.rhs_L, n_rhs, np.empty(mod.N_STATES * L)), (mod.jac_nz_L, n_jac, np.empty(mod.JAC_NNZ * L))):
            lane_calls(f, YL, PL, np.zeros(L), 1, b)  # compile
            times.append(min(_timed(lane_calls, f, YL, PL, np.zeros(L), int(counts.sum()) // L, b) for _ in range(2)))
    else:
        for f, counts, b in ((rfun, n_rhs, dy), (jfun, n_jac, buf)):
            calls(f, Y[:1], Pk[:1], t_out, np.ones(1, np.int64), b)  # compile
            times.append(min(_timed(calls, f, Y, Pk, t_out, counts, b) for _ in range(2)))
    rhs_s, jac_s = times
    return {"n": m, "method": method, "solve_s": sec, "rhs_s": rhs_s, "jac_s": jac_s, "n_rhs": int(n_rhs.sum()),
            "n_jac": int(n_jac.sum()), "n_lu": int(ct[:, 5].sum()), "overhead": sec / (rhs_s + jac_s) - 1.0,
            "rhs_per_call_ns": rhs_s / max(1, n_rhs.sum()) * 1e9, "jac_per_call_ns": jac_s / max(1, n_jac.sum()) * 1e9,
            "lanes": mod.LANES if lanes else 1}


def _timed(fn, *a):
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


def _limit(job, subset: bool) -> int:
    k = max(job["n"])
    return max(job["nref"], min(k, job["subset"])) if subset else k


def _measure(job, limit: int, solve_chunk, chunk: int = 10):
    """Solve subjects [0, limit) in chunks, stopping after the chunk that passes the budget (but
    not before the reference subjects). Returns cumulative times per subject and the count."""
    cum, total, i = [], 0.0, 0
    while i < limit:
        j = min(limit, i + chunk)
        t0 = time.perf_counter()
        solve_chunk(i, j)
        dt = time.perf_counter() - t0
        cum += [total + dt * (q + 1) / (j - i) for q in range(j - i)]  # within a chunk: pro rata
        total += dt
        i = j
        if total > job["budget"] and i >= job["nref"]:
            break
    return cum, i


def _keep(Yref, i0, Y):
    """Copy the rows of subjects i0, i0+1, ... that are reference subjects into Yref."""
    m = min(Yref.shape[0] - i0, Y.shape[0])
    if m > 0:
        Yref[i0:i0 + m] = Y[:m]


def child_scipy(job, wl, out, work):
    (scipy,) = _import("scipy", ["scipy"])
    model, mod = _model(job)
    P, Y0, t_out, ev = wl["P"], wl["Y0"], wl["t_out"], wl["events"]
    atol = np.full(Y0.shape[1], job["atol"])
    limit = _limit(job, True)
    for method in ("LSODA", "BDF", "Radau"):
        Y = np.full((limit, t_out.size, Y0.shape[1]), np.nan)
        fail = [0]

        def chunk(i, j):
            for s in range(i, j):
                Y[s], _, _ = scipy_subject(mod, method, P[s], Y0[s], t_out, *subject_events(ev, s), job["rtol"], atol)
                fail[0] += int(np.isnan(Y[s]).any())

        cum, k = _measure(job, limit, chunk, chunk=1)
        out["runs"].append({"method": method, "threads": 1, "times": _times_for(job, cum, k), "setup_s": None,
                            "failed": fail[0], "yref": _save_ref(work, job, method, Y), "note": "analytic Jacobian"})
    out["version"] = scipy.__version__


def child_numbalsoda(job, wl, out, work):
    (numbalsoda,) = _import("numbalsoda", ["numbalsoda"])
    from numba import carray, cfunc, njit

    model, mod = _model(job)
    P, Y0, t_out, ev = wl["P"], wl["Y0"], wl["t_out"], wl["events"]
    NS, NP = mod.N_STATES, mod.N_PARAMS
    rhs = mod.rhs
    if (ev[2] > 1).any():
        raise _Unavailable("failed: reset/parameter-change events are not implemented in this driver")

    t_setup = time.perf_counter()

    @cfunc(numbalsoda.lsoda_sig)
    def f(t, u, du, data):  # numbalsoda's RHS signature; data = [parameters, zero-order rates]
        y = carray(u, (NS,))
        d = carray(du, (NS,))
        q = carray(data, (NP + NS,))
        rhs(t, y, q[:NP], d)
        for i in range(NS):
            d[i] += q[NP + i]

    lsoda = numbalsoda.lsoda

    @njit
    def solve(fptr, Y0, P, t_out, ev_ptr, ev_t, ev_k, ev_s, ev_v, i0, i1, rtol, atol, Y, ok):
        n_out = t_out.shape[0]
        t_end = t_out[n_out - 1]
        for s in range(i0, i1):
            data = np.zeros(NP + NS)
            data[:NP] = P[s]
            y = Y0[s].copy()
            a, b = ev_ptr[s], ev_ptr[s + 1]
            ie, io, t = a, 0, 0.0
            ok[s] = True
            while True:
                while ie < b and ev_t[ie] <= t:  # doses due now, before integrating on from t
                    if ev_k[ie] == 0:
                        y[ev_s[ie]] += ev_v[ie]
                    else:
                        data[NP + ev_s[ie]] += ev_v[ie]
                    ie += 1
                stop = ev_t[ie] if (ie < b and ev_t[ie] < t_end) else t_end
                last = stop >= t_end
                while io < n_out and t_out[io] <= t:  # grid point at a dose time: after the dose
                    Y[s - i0, io] = y
                    io += 1
                j = io
                while j < n_out and (t_out[j] < stop or (last and t_out[j] <= stop)):
                    j += 1
                m = j - io
                end_on_grid = m > 0 and t_out[j - 1] == stop
                te = np.empty(m + (1 if end_on_grid else 2))  # [t, grid points in (t, stop), stop]
                te[0] = t
                te[1:m + 1] = t_out[io:j]
                te[te.shape[0] - 1] = stop
                usol, success = lsoda(fptr, y, te, data, rtol, atol, 1_000_000)
                if not success:
                    ok[s] = False
                    Y[s - i0, io:] = np.nan
                    break
                Y[s - i0, io:j] = usol[1:m + 1]
                io = j
                y = usol[usol.shape[0] - 1].copy()
                if last:
                    break
                t = stop

    limit = _limit(job, False)
    Yref = np.full((job["nref"], t_out.size, NS), np.nan)
    ok = np.zeros(limit, np.bool_)
    args = (Y0, P, t_out, *ev)
    solve(f.address, *args, 0, 1, job["rtol"], job["atol"], np.empty((1, t_out.size, NS)), ok)  # compile
    setup = time.perf_counter() - t_setup

    def chunk(i, j):
        Y = np.empty((j - i, t_out.size, NS))  # per chunk: peak RSS does not grow with the subjects measured
        solve(f.address, *args, i, j, job["rtol"], job["atol"], Y, ok)
        _keep(Yref, i, Y)

    cum, k = _measure(job, limit, chunk, chunk=10)
    out["runs"].append({"method": "LSODA", "threads": 1, "times": _times_for(job, cum, k), "setup_s": setup,
                        "failed": int((~ok[:k]).sum()), "yref": _save_ref(work, job, "LSODA", Yref), "note": ""})
    out["version"] = metadata.version("numbalsoda")


def child_roadrunner(job, wl, out, work):
    (roadrunner,) = _import("roadrunner", ["roadrunner"])
    model, mod = _model(job)
    P, Y0, t_out, ev = wl["P"], wl["Y0"], wl["t_out"], wl["events"]
    ids = json.loads((work / "sbml_ids.json").read_text())
    sids = [ids[s] for s in model.state_names]
    pids = [ids[p] for p in model.parameter_names]
    if (ev[2] > 0).any():
        raise _Unavailable("failed: only bolus doses are implemented in this driver")
    sbml = (work / "model.xml").read_text()
    limit = _limit(job, False)
    t_end = float(t_out[-1])

    def load(text):
        t0 = time.perf_counter()
        rr = roadrunner.RoadRunner(text)  # LLVM JIT of the model
        rr.setIntegrator("cvode")
        it = rr.integrator
        it.relative_tolerance = job["rtol"]
        for sid in sids:  # per state: a scalar would be rescaled by each state's initial value
            it.setIndividualTolerance(sid, job["atol"])
        it.maximum_num_steps = 1_000_000
        gp = list(rr.model.getGlobalParameterIds())
        rr.timeCourseSelections = ["time"] + sids
        return rr, gp, time.perf_counter() - t0

    def run(method, rr, setup, one, note):
        Yref = np.full((job["nref"], t_out.size, len(sids)), np.nan)
        Ys = np.empty((t_out.size, len(sids)))
        fail = [0]

        def chunk(i, j):
            for s in range(i, j):
                Ys[:] = np.nan
                try:
                    one(s, Ys)
                except RuntimeError:  # CVODE failure
                    fail[0] += 1
                    Ys[:] = np.nan
                _keep(Yref, s, Ys[None])

        cum, k = _measure(job, limit, chunk, chunk=10)
        atol_vec = np.asarray(rr.integrator.getAbsoluteToleranceVector())  # after the runs: reset() keeps it
        if not np.allclose(atol_vec, job["atol"]):
            note += f"; atol vector {atol_vec.min():.1e}..{atol_vec.max():.1e}"
        out["runs"].append({"method": method, "threads": 1, "times": _times_for(job, cum, k), "setup_s": setup,
                            "failed": fail[0], "yref": _save_ref(work, job, method, Yref), "note": note})

    # 1. doses between simulate() calls: CVODE restarts at every dose, as in every other engine
    rr, gp, setup = load(sbml)
    ip = np.array([gp.index(p) for p in pids], np.int32)
    iy = np.array([gp.index(s) for s in sids], np.int32)
    setp = rr.model.setGlobalParameterValues

    def between(s, Ys):
        et, ek, es, evv = subject_events(ev, s)
        rr.reset()
        setp(ip, P[s])
        setp(iy, Y0[s])
        ie, t = 0, 0.0
        for b in sorted({float(x) for x in et if 0.0 < x < t_end} | {t_end}):
            while ie < len(et) and et[ie] <= t:
                sid = sids[es[ie]]
                rr[sid] = rr[sid] + evv[ie]
                ie += 1
            last = b >= t_end
            mask = (t_out >= t) & ((t_out <= b) if last else (t_out < b))
            te = t_out[mask]
            times = np.unique(np.concatenate(([t], te, [b])))
            res = np.asarray(rr.simulate(times=times))
            Ys[mask] = res[np.searchsorted(times, te), 1:]
            t = b

    run("CVODE", rr, setup, between, "doses between simulate() calls")
    del rr

    # 2. doses as SBML events (one simulate() call per subject): possible when every subject
    # has its doses into the same states in the same order (times and amounts are parameters)
    ptr = ev[0][: limit + 1]
    counts = np.diff(ptr)
    pattern = ev[3][ptr[0]:ptr[1]]
    if not (counts == counts[0]).all() or any((ev[3][ptr[s]:ptr[s + 1]] != pattern).any() for s in range(limit)):
        return
    text, t_ids, a_ids = _with_dose_events(sbml, [sids[i] for i in pattern])
    rr, gp, setup = load(text)
    ip = np.array([gp.index(p) for p in pids], np.int32)
    iy = np.array([gp.index(s) for s in sids], np.int32)
    it_ = np.array([gp.index(x) for x in t_ids], np.int32)
    ia_ = np.array([gp.index(x) for x in a_ids], np.int32)
    setp = rr.model.setGlobalParameterValues

    def events(s, Ys):
        et, ek, es, evv = subject_events(ev, s)
        rr.reset()
        setp(ip, P[s])
        setp(iy, Y0[s])
        setp(it_, np.ascontiguousarray(et, dtype=float))
        setp(ia_, np.ascontiguousarray(evv, dtype=float))
        Ys[:] = np.asarray(rr.simulate(times=t_out))[:, 1:]

    run("CVODE-ev", rr, setup, events, f"{counts[0]} doses as SBML events, one simulate() call")


def _with_dose_events(sbml: str, targets: list[str]):
    """The model with one time-triggered event per dose (``target += dose_a_k`` when
    ``time >= dose_t_k``); times and amounts are parameters, set per subject."""
    import libsbml

    doc = libsbml.readSBMLFromString(sbml)
    m = doc.getModel()
    t_ids, a_ids = [], []
    for k, target in enumerate(targets):
        tid, aid = f"dose_t_{k}", f"dose_a_{k}"
        for pid in (tid, aid):
            p = m.createParameter()
            p.setId(pid)
            p.setConstant(True)
            p.setValue(0.0)
        e = m.createEvent()
        e.setId(f"dose_{k}")
        e.setUseValuesFromTriggerTime(True)
        trig = e.createTrigger()
        trig.setInitialValue(False)
        trig.setPersistent(True)
        trig.setMath(libsbml.parseL3Formula(f"time >= {tid}"))
        a = e.createEventAssignment()
        a.setVariable(target)
        a.setMath(libsbml.parseL3Formula(f"{target} + {aid}"))
        t_ids.append(tid)
        a_ids.append(aid)
    return libsbml.writeSBMLToString(doc), t_ids, a_ids


def child_diffrax(job, wl, out, work):
    jax, _ = _import("diffrax", ["jax", "diffrax"])
    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp
    import sympy

    from il2sim._expr_sympy import Hill
    from il2sim._generate import _Generator

    model, mod = _model(job)
    P, Y0, t_out, ev = wl["P"], wl["Y0"], wl["t_out"], wl["events"]
    NS = Y0.shape[1]
    B = _limit(job, True)
    ptr, et, ek, es, evv = first_events(ev, B)
    if (ek > 1).any():
        raise _Unavailable("failed: reset/parameter-change events are not implemented in this driver")

    # RHS in jax from the model's sympy form (outputs substituted, hill written out)
    t_setup = time.perf_counter()
    gen = _Generator(model)
    sub = {}
    for k, e in enumerate(gen.output_exprs):
        sub[gen.o[k]] = e.xreplace(sub)
    odes = [e.xreplace(sub).replace(Hill, lambda x, c, n: x**n / (c**n + x**n)) for e in gen.ode_exprs]
    f = sympy.lambdify((gen.t, gen.y, gen.p), odes, modules="jax")

    def vf(t, y, args):
        p, rate = args
        return jnp.stack([jnp.asarray(v, dtype=jnp.float64) for v in f(t, y, p)]) + rate

    # dose intervals: the union of the batch's event times (per-subject amounts, zero where a
    # subject has no dose then); the grid points inside each interval, padded with its end
    t_end = float(t_out[-1])
    inner = np.unique(et[(et > 0.0) & (et < t_end)])
    breaks = np.concatenate(([0.0], inner, [t_end]))
    n_int = breaks.size - 1
    bol = np.zeros((n_int, B, NS))
    rinc = np.zeros((n_int, B, NS))
    for s in range(B):
        for q in range(ptr[s], ptr[s + 1]):
            if et[q] >= t_end:
                continue
            i = int(np.searchsorted(breaks, et[q], side="right")) - 1 if et[q] > 0 else 0
            (bol if ek[q] == 0 else rinc)[i, s, es[q]] += evv[q]
    grid_of = []
    for i in range(n_int):
        last = i == n_int - 1
        grid_of.append(np.nonzero((t_out >= breaks[i]) & ((t_out <= breaks[i + 1]) if last else (t_out < breaks[i + 1])))[0])
    K = max(g.size for g in grid_of)
    ts = np.empty((n_int, K + 1))
    for i, g in enumerate(grid_of):
        ts[i, : g.size] = t_out[g]
        ts[i, g.size:] = breaks[i + 1]

    term = diffrax.ODETerm(vf)
    ctrl = diffrax.PIDController(rtol=job["rtol"], atol=job["atol"])
    setup = time.perf_counter() - t_setup

    for name, solver in (("Tsit5", diffrax.Tsit5()), ("Kvaerno5", diffrax.Kvaerno5())):
        def solve_one(y0, p, rate, t0, t1, tsi, solver=solver):
            sol = diffrax.diffeqsolve(term, solver, t0, t1, None, y0, args=(p, rate), saveat=diffrax.SaveAt(ts=tsi),
                                      stepsize_controller=ctrl, max_steps=100_000, throw=False)
            return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]

        def run(y0, p, bol, rinc, t0s, t1s, ts):
            def body(carry, xs):
                y, rate = carry
                t0, t1, tsi, b, r = xs
                y = y + b
                rate = rate + r
                ys, ok, steps = jax.vmap(solve_one, in_axes=(0, 0, 0, None, None, None))(y, p, rate, t0, t1, tsi)
                return (ys[:, -1], rate), (ys, ok, steps)

            _, (ys, ok, steps) = jax.lax.scan(body, (y0, jnp.zeros_like(y0)), (t0s, t1s, ts, bol, rinc))
            return ys, ok, steps

        a = (jnp.asarray(Y0[:B]), jnp.asarray(P[:B]), jnp.asarray(bol), jnp.asarray(rinc),
             jnp.asarray(breaks[:-1]), jnp.asarray(breaks[1:]), jnp.asarray(ts))
        t0 = time.perf_counter()
        compiled = jax.jit(run).lower(*a).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ys, ok, steps = jax.block_until_ready(compiled(*a))
        sec = time.perf_counter() - t0
        ys, ok, steps = np.asarray(ys), np.asarray(ok), np.asarray(steps)
        Y = np.full((B, t_out.size, NS), np.nan)
        for i, g in enumerate(grid_of):
            Y[:, g] = ys[i, :, : g.size]
        good = ok.all(axis=0)
        Y[~good] = np.nan
        times = {str(n): ((sec, n) if n <= B else (sec / B * n, B)) for n in job["n"]}
        out["runs"].append({"method": name, "threads": 1, "times": times, "setup_s": compile_s + setup,
                            "failed": int((~good).sum()), "yref": _save_ref(work, job, name, Y),
                            "note": f"vmap over {B}, {int(steps.sum(axis=0).mean())} steps/subject; setup = jit compile {compile_s:.1f} s"})


if __name__ == "__main__":
    main()
