"""GPU cohort benchmark (issue 8): 10^3 ... 10^6 virtual subjects of bench12 on one GPU.

Workload: benchmarks/configs/bench12.toml, the 12-state IL-2 PK/PD model over one 84-day cycle
of the seed regimen (80 s.c. doses), 6-hourly grid (337 points), Rodas5P (or --method tsit5).
Per cohort size it prints the device kernel time (CUDA events around the solve, output,
reduction and thinning kernels), the host<->device transfer time, wall time, subjects per
second of kernel time, and the largest relative difference from the CPU path over a sample of
subjects (endpoints: Cmax/tmax/AUC of C, peak fold of NK, Eos, Treg; daily C trajectory).
For scale: the CPU path (il2sim's numba kernels, all cores) on that sample, and diffrax (jax)
on the same GPU if it is installed.

One command on a GPU machine (stops starting new work after --time-limit seconds):

    PYTHONUNBUFFERED=1 python benchmarks/gpu/bench_gpu.py --time-limit 420

Without a GPU its code paths run in numba's CUDA simulator (minutes, not a measurement):

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu/bench_gpu.py --n 4 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# jax (diffrax) would otherwise reserve 75 % of the GPU's memory when first used
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "benchmarks" / "configs" / "bench12.toml"
REDUCE = ("C", "NK", "Eos", "Treg")
KEEP = ("C",)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def rel_err(a, b, floor=1e-12) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    both_nan = np.isnan(a) & np.isnan(b)
    if np.any(np.isnan(a) != np.isnan(b)):
        return float("inf")
    ok = ~both_nan
    if not ok.any():
        return 0.0
    a, b = a[ok], b[ok]
    with np.errstate(invalid="ignore"):
        err = np.where(a == b, 0.0, np.abs(a - b) / np.maximum(np.abs(b), floor))  # equal infinities: 0
    return float(np.max(err)) if err.size else 0.0


def versions(cuda) -> str:
    import numba

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}", f"numba {numba.__version__}"]
    for name in ("numba-cuda", "jax", "diffrax"):
        try:
            from importlib.metadata import version

            parts.append(f"{name} {version(name)}")
        except Exception:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def device_line(cuda, simulator: bool) -> str:
    if simulator:
        return "device: numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): times are not GPU times"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    free, total = cuda.current_context().get_memory_info()
    return (f"device: {name}, compute capability {dev.compute_capability}, "
            f"{dev.MULTIPROCESSOR_COUNT} SMs, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")


def build_cohort(sc, cpu, n: int, end_h: float):
    """Parameters, initial states and dose events of subjects 0..n-1 (the same patients for any n)."""
    from il2sim.population import sample_cohort
    from il2sim.simulate import cohort_events

    m = sc.model
    coh = sample_cohort(replace(sc.population, subjects=n), m.parameter_names, m.default_parameters(), sc.seed)
    P = np.ascontiguousarray(coh.parameters)
    ev = cohort_events(sc, cpu, coh.covariates, P, end_h, coh.subject)
    Y0 = np.empty((n, len(m.state_names)))
    cpu.eval_initial(P, Y0)
    return P, Y0, ev


def take_events(ev, rows):
    """Event arrays of the subjects ``rows`` (in that order)."""
    ptr, t, k, s, v = ev
    counts = ptr[rows + 1] - ptr[rows]
    new_ptr = np.zeros(rows.size + 1, np.int64)
    np.cumsum(counts, out=new_ptr[1:])
    idx = np.concatenate([np.arange(ptr[r], ptr[r + 1]) for r in rows]) if rows.size else np.zeros(0, np.int64)
    return new_ptr, t[idx], k[idx], s[idx], v[idx]


def cpu_reference(sc, cpu, method, t_out, Y0, P, ev, atol, rows, keep_rows):
    """The CPU path on subjects ``rows``: endpoints as the device computes them, and its time."""
    m = sc.model
    ns, no = len(m.state_names), len(m.output_names)
    n = rows.size
    Ys = np.empty((n, t_out.size, ns))
    Os = np.empty((n, t_out.size, no))
    st, ct, ft = np.zeros(n, np.int64), np.zeros((n, 7), np.int64), np.zeros((n, 2))
    evr = take_events(ev, rows)
    Pr, Y0r = np.ascontiguousarray(P[rows]), np.ascontiguousarray(Y0[rows])
    t0 = time.perf_counter()
    cpu.solve_cohort(method, 1, 0.0, Y0r, Pr, t_out, *evr, sc.solver.rtol, atol, 0.0, 0.0, sc.solver.max_steps,
                     Ys, st, ct, ft)
    cpu.eval_outputs(t_out, Ys, Pr, Os)
    secs = time.perf_counter() - t0
    states, outputs = list(m.state_names), list(m.output_names)

    def series(name):
        return Os[:, :, outputs.index(name)] if name in outputs else Ys[:, :, states.index(name)]

    from il2sim.endpoints import window_statistic  # the CPU definitions of the endpoints

    window = (float(t_out[0]), float(t_out[-1]))
    ends = {}
    for name in REDUCE:
        x = series(name)
        peak = window_statistic(t_out, x, "peak", window)
        with np.errstate(divide="ignore", invalid="ignore"):
            fold = peak / x[:, 0]
        ends[name] = {"max": peak, "tmax": window_statistic(t_out, x, "tmax", window),
                      "min": window_statistic(t_out, x, "trough", window),
                      "auc": window_statistic(t_out, x, "auc", window), "fold": fold}
    traj = {name: series(name)[:, keep_rows] for name in KEEP}
    return ends, traj, st, secs, Ys[:, -1, :]


# ---------------------------------------------------------------------------------------------
# diffrax (jax) on the same GPU: the generated rhs traced with jax.numpy, doses between solves


def diffrax_runner(cpu, sc, method: str):
    """A function (P_ext, Y0, dose_t, dose_v, dose_s) -> final states, or the reason it cannot run."""
    try:
        import inspect

        import diffrax
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
    except Exception as exc:  # not installed, or no usable jax
        return None, f"not installed ({type(exc).__name__}: {exc})"
    src = inspect.getsource(cpu.rhs_k.py_func)
    src = "\n".join(line for line in src.splitlines() if not line.startswith("@"))

    class _M:
        pass

    jmath = _M()
    for name in ("exp", "log", "sqrt", "log10", "tanh", "sin", "cos"):
        setattr(jmath, name, getattr(jnp, name))
    jmath.inf, jmath.pi = float("inf"), float(np.pi)
    ns = {"math": jmath, "max": jnp.maximum, "min": jnp.minimum, "abs": jnp.abs}
    exec(compile(src, "<rhs_k for jax>", "exec"), ns)  # the generated model code, traced by jax
    rhs_k = ns["rhs_k"]
    n = int(cpu.N_STATES)

    def f(t, y, p):
        dy = [None] * n
        rhs_k(t, y, p, dy)
        return jnp.stack([jnp.asarray(d, dtype=y.dtype) * jnp.ones_like(y[0]) for d in dy])

    solver = diffrax.Tsit5() if method == "tsit5" else diffrax.Kvaerno5()
    rtol = sc.solver.rtol
    atol = float(np.min(sc.solver.atol_vector(sc.model.state_names)))
    term = diffrax.ODETerm(f)
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)

    def one(p, y0, edges, dose_v, dose_s):
        def body(y, k):
            t0, t1 = edges[k], edges[k + 1]
            sol = diffrax.diffeqsolve(term, solver, t0, t1, None, y, args=p, stepsize_controller=ctrl,
                                      saveat=diffrax.SaveAt(t1=True), max_steps=100_000)
            y1 = sol.ys[-1]
            y1 = y1.at[dose_s[k + 1]].add(dose_v[k + 1])
            return y1, None

        y = y0.at[dose_s[0]].add(dose_v[0])
        y, _ = jax.lax.scan(body, y, jnp.arange(edges.shape[0] - 1))
        return y

    run = jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0, None)))
    return (run, jnp), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,10000,100000,1000000", help="cohort sizes, comma-separated")
    ap.add_argument("--method", default="rodas5p", choices=("rodas5p", "tsit5"))
    ap.add_argument("--quick", action="store_true", help="3 days instead of the 84-day cycle (code-path check)")
    ap.add_argument("--cpu-sample", type=int, default=256, help="subjects compared with (and timed on) the CPU path")
    ap.add_argument("--diffrax-n", default="1000,10000", help="cohort sizes for diffrax (0: skip)")
    ap.add_argument("--chunk", type=int, default=None, help="subjects per device chunk (default: from free memory)")
    ap.add_argument("--threads", type=int, default=None, help="threads per block (default: il2sim's, 128)")
    ap.add_argument("--time-limit", type=float, default=420.0, help="start no new cohort size after this many s")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    t_begin = time.perf_counter()

    from il2sim._codegen import compile_model
    from il2sim._cuda import compile_cuda, run_device_cohort
    from il2sim._solvers.cuda import import_cuda, simulator_enabled
    from il2sim._solvers.status import METHODS
    from il2sim.scenario import load_scenario

    cuda = import_cuda()
    sim = simulator_enabled()
    if args.threads:
        import il2sim._solvers.cuda as cuda_backend

        cuda_backend.THREADS_PER_BLOCK = int(args.threads)
    if not sim and not cuda.is_available():
        log("bench_gpu: no CUDA GPU (numba.cuda.is_available() is False); "
            "run with NUMBA_ENABLE_CUDASIM=1 --n 4 --quick to check the code paths")
        return 2
    overrides = {"output.end_day": 3} if args.quick else {}
    sc = load_scenario(CONFIG, overrides={**overrides, "solver.method": args.method})
    t_out = sc.output.times()
    method = METHODS[args.method]
    import il2sim._solvers.cuda as cuda_backend

    log(f"bench_gpu: {sc.name}, {len(sc.model.state_names)} states, {t_out[-1] / 24:g} days, "
        f"{t_out.size} output times, {args.method}, rtol {sc.solver.rtol:g}, atol {sc.solver.atol}, "
        f"{cuda_backend.THREADS_PER_BLOCK} threads/block")
    log(device_line(cuda, sim))
    log(versions(cuda))
    t0 = time.perf_counter()
    cpu = compile_model(sc.model).module
    gpu = compile_cuda(sc.model)
    log(f"codegen: CPU module {time.perf_counter() - t0:.2f} s ({gpu.path.name})")
    sizes = [int(float(x)) for x in args.n.split(",") if x.strip()]
    n_max = max(sizes)
    t0 = time.perf_counter()
    P, Y0, ev = build_cohort(sc, cpu, n_max, float(t_out[-1]))
    log(f"cohort: {n_max} subjects sampled with their dose events in {time.perf_counter() - t0:.1f} s (host)")
    atol = sc.solver.atol_vector(sc.model.state_names)
    keep_rows = np.arange(0, t_out.size, 4)  # daily
    common = dict(method=method, t_out=t_out, rtol=sc.solver.rtol, atol=atol, max_steps=sc.solver.max_steps,
                  reduce=REDUCE, keep=KEEP, keep_rows=keep_rows, chunk=args.chunk)

    # first launch compiles the kernels (numba-cuda caches them on disk for the next run)
    t0 = time.perf_counter()
    w = min(n_max, 128)
    run_device_cohort(gpu, Y0=Y0[:w], P=P[:w], ev=take_events(ev, np.arange(w)), **common)
    log(f"kernel compile + first launch ({w} subjects): {time.perf_counter() - t0:.1f} s")

    rng = np.random.default_rng(0)
    results = []
    diffrax_rows = []

    def save():  # after every size: a run cut short by a time limit still leaves its numbers
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "diffrax": diffrax_rows}, indent=1))

    log("")
    log(f"{'N':>9} {'kernel s':>9} {'transfer s':>10} {'wall s':>8} {'subj/s (kernel)':>16} {'chunks':>7} "
        f"{'failed':>6} {'max rel err vs CPU':>19} {'CPU s/subj':>11}")
    def too_long(n, done):  # predicted from the last size done, linear in n
        elapsed = time.perf_counter() - t_begin
        guess = done[-1][1] * n / done[-1][0] if done else 0.0
        if elapsed + guess > args.time_limit:
            log(f"{n:>9} skipped: {elapsed:.0f} s spent, about {guess:.0f} s more predicted, --time-limit {args.time_limit:g} s")
            return True
        return False

    done = []
    for n in sizes:
        if too_long(n, done):
            continue
        t_size = time.perf_counter()
        evn = ev if n == n_max else take_events(ev, np.arange(n))
        res = run_device_cohort(gpu, Y0=Y0[:n], P=P[:n], ev=evn, **common)
        tm = res.timings
        k = min(args.cpu_sample, n)
        rows = np.unique(np.concatenate([np.arange(min(k // 2, n)), rng.choice(n, size=k - min(k // 2, n), replace=False)]))
        ends, traj, st_cpu, cpu_s, _ = cpu_reference(sc, cpu, method, t_out, Y0, P, ev, atol, rows, keep_rows)
        err = max([rel_err(res.endpoints[v][s][rows], ends[v][s]) for v in REDUCE for s in ends[v]]
                  + [rel_err(res.trajectories[v][rows], traj[v]) for v in KEEP])
        status_equal = bool(np.array_equal(res.status[rows], st_cpu))
        row = {"n": n, "kernel_s": tm["kernel_s"], "transfer_s": tm["transfer_s"], "wall_s": tm["wall_s"],
               "subjects_per_s": n / tm["kernel_s"] if tm["kernel_s"] > 0 else float("inf"),
               "chunks": tm["n_chunks"], "chunk": tm["chunk"], "failed": int((res.status != 0).sum()),
               "max_rel_err": err, "status_equal_on_sample": status_equal, "cpu_sample": int(rows.size),
               "cpu_s_per_subject": cpu_s / rows.size}
        results.append(row)
        log(f"{n:>9} {row['kernel_s']:>9.3f} {row['transfer_s']:>10.3f} {row['wall_s']:>8.2f} "
            f"{row['subjects_per_s']:>16.4g} {row['chunks']:>7} {row['failed']:>6} {err:>19.3g} "
            f"{row['cpu_s_per_subject']:>11.3g}{'' if status_equal else '  (status differs on the sample!)'}")
        del res
        done.append((n, time.perf_counter() - t_size))
        save()

    # diffrax on the same device, for scale
    log("")
    d_sizes = [int(float(x)) for x in args.diffrax_n.split(",") if x.strip() and int(float(x)) > 0]
    if d_sizes:
        runner, why = diffrax_runner(cpu, sc, args.method)
        if runner is None:
            log(f"diffrax: {why}")
        else:
            run, jnp = runner
            import jax

            log(f"diffrax: {'Tsit5' if args.method == 'tsit5' else 'Kvaerno5 (no Rosenbrock in diffrax)'} "
                f"on {jax.devices()[0]}, vmap over subjects, one solve per dose interval")
            ptr, et, ek, es, evv = ev
            n_ev = int(ptr[1] - ptr[0])
            same = np.all(np.diff(ptr) == n_ev) and np.allclose(et.reshape(-1, n_ev), et[:n_ev])
            if not same:
                log("diffrax: skipped (dose times differ between subjects)")
                d_sizes = []
            d_done = []
            for n in d_sizes:
                n = min(n, n_max)
                if too_long(n, d_done):
                    continue
                t_size = time.perf_counter()
                Pe = np.zeros((n, int(cpu.N_PARAMS) + int(getattr(cpu, "N_DERIVED", 0))))
                Pe[:, : P.shape[1]] = P[:n]
                for i in range(n):
                    cpu.derive(Pe[i])
                edges = np.concatenate([et[:n_ev], [t_out[-1]]])
                dv = np.concatenate([evv.reshape(-1, n_ev)[:n], np.zeros((n, 1))], axis=1)
                dsidx = np.concatenate([es[:n_ev], [0]])
                args_j = (jnp.asarray(Pe), jnp.asarray(Y0[:n]), jnp.asarray(edges), jnp.asarray(dv), jnp.asarray(dsidx))
                t0 = time.perf_counter()
                run(*args_j).block_until_ready()
                t_first = time.perf_counter() - t0
                t0 = time.perf_counter()
                yend = np.asarray(run(*args_j).block_until_ready())
                secs = time.perf_counter() - t0
                k = min(n, args.cpu_sample)
                _, _, _, _, y_cpu_end = cpu_reference(sc, cpu, method, t_out, Y0, P, ev, atol, np.arange(k), keep_rows)
                err = rel_err(yend[:k], y_cpu_end, floor=1e-9)
                ours = next((r for r in results if r["n"] == n), None)
                ratio = (f", diffrax time / il2sim GPU kernel time = {secs / ours['kernel_s']:.3g}"
                         if ours and ours["kernel_s"] > 0 else "")
                log(f"diffrax {n:>8}: {secs:.3f} s ({n / secs:.4g} subjects/s; first call with jit {t_first:.1f} s), "
                    f"max rel err of the final state vs CPU {err:.2g}{ratio}")
                diffrax_rows.append({"n": n, "seconds": secs, "max_rel_err_final_state": err})
                d_done.append((n, time.perf_counter() - t_size))
                save()
    log(f"\ntotal {time.perf_counter() - t_begin:.1f} s")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
