"""GPU backend (issue 8): the CUDA kernels against the CPU path, config and graceful absence.

The kernels run everywhere in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) in a child
process (tests/cuda_check.py): the simulator must be on before ``numba.cuda`` is imported.
On a machine with a GPU the same check also runs on the real device. Cohorts are tiny (3-5
subjects, 3 days): in the simulator each GPU thread is Python.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from il2sim.errors import ConfigError
from il2sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
BENCH12 = ROOT / "benchmarks" / "configs" / "bench12.toml"
HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
# In CI numba-cuda comes with the test extra: its absence there is a failure, not a skip.
needs_numba_cuda = pytest.mark.skipif(
    not HAVE_NUMBA_CUDA and not os.environ.get("CI"),
    reason="numba-cuda is not installed (pip install -e '.[test]' brings it)",
)


def _gpu_present() -> bool:
    """A real GPU, asked in a child process (this one must not initialise CUDA itself)."""
    if not HAVE_NUMBA_CUDA:
        return False
    code = "from il2sim._solvers.cuda import import_cuda; print(import_cuda().is_available())"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    return res.stdout.strip().endswith("True")


def _run_check(tmp_path: Path, simulator: bool) -> dict:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1" if simulator else "0", "PYTHONPATH": str(ROOT),
           "IL2SIM_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_check.py"), str(tmp_path / "cache"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _assert_matches_cpu(r: dict, tol: float) -> None:
    # Same source, same arithmetic in the same order: only rounding (FMA contraction on the
    # CPU and on the GPU, none in the simulator's Python) separates the two, so every step
    # size decision is the same and the differences stay at a few ulps of the state.
    assert r["initial_max_rel"] <= tol
    for method in ("rodas5p", "tsit5"):
        m = r[method]
        assert m["status_cpu"] == [0, 0, 0] and m["status_gpu"] == m["status_cpu"]
        assert m["stats_equal"], f"{method}: step counts differ between CPU and GPU"
        assert m["t_reached_equal"]
        assert min(m["steps"]) > 20  # a real integration with several doses, not a trivial one
        assert m["y_max_rel"] <= tol and m["o_max_rel"] <= tol, m
    for name, err in r["endpoints_max_rel"].items():
        assert err <= tol, (name, err)
    assert r["thinned_max_rel"] <= tol
    assert r["thinned_shape"] == [3, 7]
    assert r["endpoint_status"] == [0, 0, 0]
    assert r["device_zarr_chunks"] == 3 and r["device_zarr_identical"], "streamed chunks differ from one chunk"
    assert {"C", "Treg", "C_max", "C_auc", "C_peak_fold", "Eos_tmax", "status", "n_steps"} <= set(r["device_zarr_vars"])
    assert r["device_zarr_units"] == ["pM*h", "1"]
    assert r["cohort_backend_attr"] == ["cuda", "cpu"]
    assert r["cohort_status_equal"]
    assert {"C", "NK", "Asc"} <= set(r["cohort_vars"])
    assert r["cohort_max_rel"] <= tol
    assert r["cli_rc"] == 0 and r["cli_says_cuda"] and r["cli_nc_backend"] == "cuda"
    assert r["cli_nc_status"] == ["ok", "ok"]


@needs_numba_cuda
def test_cuda_kernels_match_cpu_in_simulator(tmp_path):
    r = _run_check(tmp_path, simulator=True)
    assert r["simulator"] is True
    _assert_matches_cpu(r, tol=1e-11)


@needs_numba_cuda
def test_cuda_kernels_match_cpu_on_gpu(tmp_path):
    if not _gpu_present():
        pytest.skip("no CUDA GPU on this machine (numba.cuda.is_available() is False)")
    r = _run_check(tmp_path, simulator=False)
    assert r["simulator"] is False and r["available"] is True
    _assert_matches_cpu(r, tol=1e-9)


def test_solver_backend_is_validated(tmp_path):
    bad = tmp_path / "bad.toml"
    text = BENCH12.read_text().replace('models = ["../../models/', f'models = ["{ROOT}/models/')
    bad.write_text(text.replace('method = "rodas5p"', 'method = "rodas5p"\nbackend = "gpu"'))
    with pytest.raises(ConfigError, match=r"solver\.backend: expected one of 'cpu', 'cuda', 'auto', got 'gpu'"):
        load_scenario(bad)
    ok = load_scenario(BENCH12, overrides={"solver.backend": "auto"})
    assert ok.solver.backend == "auto"
    assert load_scenario(BENCH12).solver.backend == "cpu"


def _no_gpu_env() -> dict:
    return {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(ROOT)}


@needs_numba_cuda
def test_backend_cuda_without_gpu_is_a_clear_error(tmp_path):
    if _gpu_present():
        pytest.skip("a CUDA GPU is present: the no-GPU message cannot be shown here")
    out = tmp_path / "x.nc"
    res = subprocess.run([sys.executable, "-m", "il2sim.cli", "run", str(BENCH12), "--backend", "cuda",
                          "--subjects", "2", "--out", str(out), "--no-figures"],
                         capture_output=True, text=True, env={**_no_gpu_env(), "IL2SIM_CACHE_DIR": str(tmp_path / "c")},
                         timeout=600)
    assert res.returncode == 2
    assert ("backend 'cuda': no CUDA GPU found (numba.cuda.is_available() is False); "
            "use backend = 'cpu' or 'auto'") in res.stderr
    assert not out.exists() and not list(tmp_path.glob("x*"))


@needs_numba_cuda
def test_backend_auto_without_gpu_falls_back_to_cpu_with_a_note(tmp_path):
    if _gpu_present():
        pytest.skip("a CUDA GPU is present: auto picks it")
    out = tmp_path / "x.nc"
    res = subprocess.run([sys.executable, "-m", "il2sim.cli", "run", str(BENCH12), "--backend", "auto",
                          "--subjects", "2", "--out", str(out), "--no-figures", "--set", "output.end_day=2"],
                         capture_output=True, text=True, env={**_no_gpu_env(), "IL2SIM_CACHE_DIR": str(tmp_path / "c")},
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert "backend cpu" in res.stdout
    assert "note: backend 'auto': no CUDA GPU found" in res.stdout and "running on the CPU" in res.stdout
    import xarray as xr

    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.attrs["backend"] == "cpu"
        assert "no CUDA GPU found" in ds.attrs["backend_note"]


def test_chunk_subjects_from_free_memory():
    from il2sim._solvers.cuda import THREADS_PER_BLOCK, chunk_subjects

    assert chunk_subjects(10, 100, free_bytes=None) == 10
    assert chunk_subjects(10, 100, free_bytes=None, requested=3) == 3
    # half of 1 GB at 10 kB a subject: 50,000 subjects, rounded down to whole blocks
    got = chunk_subjects(10**6, 10_000, free_bytes=10**9)
    assert got == 50_000 // THREADS_PER_BLOCK * THREADS_PER_BLOCK
    assert chunk_subjects(10**6, 10**9, free_bytes=10**9) == THREADS_PER_BLOCK  # at least one block
    assert chunk_subjects(5, 10**9, free_bytes=10**9) == 5


def test_cuda_module_source_shares_the_kernel_template():
    """The CUDA module is the CPU module's text with another header and a trailer: no second copy."""
    from il2sim._solvers import build

    body = "N_STATES = 1\n"
    cpu = build.module_source(body)
    gpu = build.module_source(body, build.HEADER_CUDA, build.cuda_trailer_source())
    assert build.template_source() in cpu and build.template_source() in gpu
    assert "cuda.jit(device=True" in gpu and "def cuda_solve_cohort(" in gpu
    assert "_integrate(" in build.cuda_trailer_source()
    assert "def _rodas_step" not in build.cuda_trailer_source()
