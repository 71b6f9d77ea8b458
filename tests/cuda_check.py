"""Run the CUDA backend against the CPU path on a tiny cohort; print one JSON line of results.

Run in a child process by tests/test_cuda.py: numba's CUDA simulator must be switched on
(``NUMBA_ENABLE_CUDASIM=1``) before ``numba.cuda`` is first imported, which a pytest process
that already imported it cannot do. On a machine with a GPU the same script runs the real
kernels (``--device``). Sizes stay tiny: in the simulator every GPU thread is Python.

usage: python tests/cuda_check.py CACHE_DIR OUT_DIR [--device]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "configs" / "bench12.toml"
DAYS = 3.0  # two days of twice-daily 9 MIU/m2 doses, then 0.9 MIU/m2: 6 doses


def rel_err(a: np.ndarray, b: np.ndarray, floor: float = 1e-12) -> float:
    """Largest |a - b| / max(|b|, floor) over finite entries; inf if NaNs differ."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    ok = ~np.isnan(b)
    if not ok.any():
        return 0.0
    a, b = a[ok], b[ok]
    with np.errstate(invalid="ignore"):
        err = np.where(a == b, 0.0, np.abs(a - b) / np.maximum(np.abs(b), floor))  # equal infinities: 0
    return float(np.max(err)) if err.size else 0.0


def kernels(sc, out: dict) -> None:
    """The global kernel against the CPU module's solve_cohort, both methods, chunks of 2."""
    from il2sim._codegen import compile_model
    from il2sim._cuda import compile_cuda, run_device_cohort
    from il2sim._solvers.cuda import solve_cohort_cuda
    from il2sim.population import sample_cohort
    from il2sim.simulate import cohort_events

    m = sc.model
    cpu = compile_model(m).module
    gpu = compile_cuda(m)
    n = 3
    coh = sample_cohort(replace(sc.population, subjects=n), m.parameter_names, m.default_parameters(), 7)
    P = coh.parameters
    t_out = np.arange(0.0, DAYS * 24.0 + 1e-9, 6.0)
    ev = cohort_events(sc, cpu, coh.covariates, P, float(t_out[-1]), coh.subject)
    ns, no = len(m.state_names), len(m.output_names)
    Y0 = np.empty((n, ns))
    cpu.eval_initial(P, Y0)
    Y0g = np.empty((n, ns))
    d_cuda = __import__("il2sim._solvers.cuda", fromlist=["import_cuda"]).import_cuda()
    d_Y0 = d_cuda.device_array((ns, n))
    gpu.module.cuda_eval_initial[1, 32](d_cuda.to_device(np.ascontiguousarray(P.T)), d_Y0)
    Y0g[:] = d_Y0.copy_to_host().T
    out["initial_max_rel"] = rel_err(Y0g, Y0)
    atol = sc.solver.atol_vector(m.state_names)
    for name, code in (("rodas5p", 0), ("tsit5", 1)):
        Yc = np.empty((n, t_out.size, ns))
        Oc = np.empty((n, t_out.size, no))
        st, ct, ft = np.zeros(n, np.int64), np.zeros((n, 7), np.int64), np.zeros((n, 2))
        cpu.solve_cohort(code, 1, 0.0, Y0, P, t_out, *ev, 1e-6, atol, 0.0, 0.0, 100_000, Yc, st, ct, ft)
        cpu.eval_outputs(t_out, Yc, P, Oc)
        Yg, Og = np.empty_like(Yc), np.empty_like(Oc)
        sg, cg, fg = np.zeros(n, np.int64), np.zeros((n, 7), np.int64), np.zeros((n, 2))
        solve_cohort_cuda(gpu.module, code, 1, 0.0, Y0, P, t_out, *ev, 1e-6, atol, 0.0, 0.0, 100_000, Yg, sg, cg, fg,
                          O_out=Og, chunk=2)
        out[name] = {
            "status_cpu": st.tolist(), "status_gpu": sg.tolist(),
            "stats_equal": bool(np.array_equal(ct, cg)), "steps": ct[:, 0].tolist(),
            "y_max_rel": rel_err(Yg, Yc), "o_max_rel": rel_err(Og, Oc), "t_reached_equal": bool(np.array_equal(ft[:, 0], fg[:, 0])),
        }
    # device endpoints and thinning against numpy on the CPU trajectories (Rodas5P)
    Yc = np.empty((n, t_out.size, ns))
    Oc = np.empty((n, t_out.size, no))
    st, ct, ft = np.zeros(n, np.int64), np.zeros((n, 7), np.int64), np.zeros((n, 2))
    cpu.solve_cohort(0, 1, 0.0, Y0, P, t_out, *ev, 1e-6, atol, 0.0, 0.0, 100_000, Yc, st, ct, ft)
    cpu.eval_outputs(t_out, Yc, P, Oc)
    i_c = list(m.output_names).index("C")
    i_nk = list(m.state_names).index("NK")
    rows = np.arange(0, t_out.size, 2)
    res = run_device_cohort(gpu, method=0, t_out=t_out, Y0=Y0, P=P, ev=ev, rtol=1e-6, atol=atol,
                            reduce=("C", "NK"), keep=("C", "NK"), keep_rows=rows, chunk=2)
    C, NK = Oc[:, :, i_c], Yc[:, :, i_nk]
    # the CPU definitions (il2sim.endpoints), whole grid as the window
    from il2sim.endpoints import window_statistic

    window = (float(t_out[0]), float(t_out[-1]))
    host = {}
    for name, x in (("C", C), ("NK", NK)):
        peak = window_statistic(t_out, x, "peak", window)
        with np.errstate(divide="ignore", invalid="ignore"):
            fold = peak / x[:, 0]
        host[name] = {"max": peak, "tmax": window_statistic(t_out, x, "tmax", window),
                      "min": window_statistic(t_out, x, "trough", window),
                      "auc": window_statistic(t_out, x, "auc", window), "fold": fold}
    out["endpoints_max_rel"] = {f"{v}.{s}": rel_err(res.endpoints[v][s], host[v][s]) for v in host for s in host[v]}
    out["thinned_max_rel"] = max(rel_err(res.trajectories["C"], C[:, rows]), rel_err(res.trajectories["NK"], NK[:, rows]))
    out["thinned_shape"] = list(res.trajectories["C"].shape)
    out["endpoint_status"] = res.status.tolist()


def device_zarr(sc, out_dir: Path, out: dict) -> None:
    """run_device_cohort streamed into zarr in chunks of 2 over 5 subjects vs one chunk in memory."""
    import xarray as xr

    from il2sim._codegen import compile_model
    from il2sim._cuda import compile_cuda, device_dataset, run_device_cohort, zarr_sink
    from il2sim.population import sample_cohort
    from il2sim.simulate import cohort_events

    m = sc.model
    cpu = compile_model(m).module
    gpu = compile_cuda(m)
    n = 5
    coh = sample_cohort(replace(sc.population, subjects=n), m.parameter_names, m.default_parameters(), 7)
    P = coh.parameters
    t_out = np.arange(0.0, 24.0 + 1e-9, 6.0)
    ev = cohort_events(sc, cpu, coh.covariates, P, float(t_out[-1]), coh.subject)
    Y0 = np.empty((n, len(m.state_names)))
    cpu.eval_initial(P, Y0)
    kw = dict(method=0, t_out=t_out, Y0=Y0, P=P, ev=ev, rtol=1e-6, atol=sc.solver.atol_vector(m.state_names),
              reduce=("C", "Eos"), keep=("C", "Treg"), keep_rows=np.array([0, 2, 4]))
    whole = device_dataset(run_device_cohort(gpu, chunk=n, **kw), m, np.arange(n))
    streamed = run_device_cohort(gpu, chunk=2, sink=zarr_sink(out_dir / "device.zarr", m), **kw)
    z = xr.open_zarr(out_dir / "device.zarr", consolidated=True, chunks=None).load()
    out["device_zarr_chunks"] = streamed.timings["n_chunks"]
    out["device_zarr_vars"] = sorted(z.data_vars)
    out["device_zarr_identical"] = bool(z.drop_attrs().identical(whole.drop_attrs()))
    out["device_zarr_units"] = [z["C_auc"].attrs.get("units"), z["Eos_peak_fold"].attrs.get("units")]


def cohort(sc, out_dir: Path, out: dict) -> None:
    """il2sim.cohort.run_cohort with backend cuda (chunks of 2 over 5 subjects) vs the CPU."""
    import xarray as xr

    from il2sim.cohort import run_cohort

    res = {}
    for backend in ("cpu", "cuda"):
        s = replace(sc, solver=replace(sc.solver, backend=backend))
        run = run_cohort(s, out_dir / f"{backend}.zarr", subjects=5, chunk_size=2, progress=False)
        res[backend] = xr.open_zarr(run.out, consolidated=True, chunks=None).load()
    a, b = res["cuda"], res["cpu"]
    out["cohort_backend_attr"] = [a.attrs.get("backend"), b.attrs.get("backend")]
    out["cohort_status_equal"] = bool((a["status"].values == b["status"].values).all())
    out["cohort_vars"] = sorted(v for v in b.data_vars if b[v].dims == ("subject", "time"))
    out["cohort_max_rel"] = max(rel_err(a[v].values, b[v].values) for v in out["cohort_vars"])


def cli(out_dir: Path, out: dict) -> None:
    """il2sim run --backend cuda end to end (netCDF out, summary line)."""
    import contextlib
    import io

    import xarray as xr

    from il2sim.cli import main as il2sim_main

    nc = out_dir / "cli.nc"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = il2sim_main(["run", str(CONFIG), "--backend", "cuda", "--subjects", "2", "--out", str(nc),
                          "--no-figures", "--set", "output.end_day=1"])
    out["cli_rc"] = rc
    out["cli_says_cuda"] = "backend cuda" in buf.getvalue()
    with xr.open_dataset(nc, engine="h5netcdf") as ds:
        out["cli_nc_backend"] = ds.attrs.get("backend")
        out["cli_nc_status"] = [str(x) for x in ds["status"].values]


def main() -> None:
    from il2sim._solvers.cuda import import_cuda, simulator_enabled
    from il2sim.scenario import load_scenario

    out_dir = Path(sys.argv[2])
    cuda = import_cuda()
    out: dict = {"simulator": simulator_enabled(), "available": bool(cuda.is_available())}
    sc = load_scenario(CONFIG, overrides={"output.end_day": DAYS})
    kernels(sc, out)
    device_zarr(sc, out_dir, out)
    cohort(sc, out_dir, out)
    cli(out_dir, out)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
