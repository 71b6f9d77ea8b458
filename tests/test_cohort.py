"""Chunked cohort runs: the same numbers however the work is split (cohort size, chunk size,
threads, dask workers, a kill and a resume), bounded memory, thinning and progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import xarray as xr

import il2sim
from il2sim.cli import _parse_set, main
from il2sim.cohort import run_cohort
from il2sim.errors import ConfigError
from il2sim.scenario import load_scenario
from il2sim.store import CohortStore

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"
# A cheap run: looser tolerances, a daily grid, one trajectory kept.
SETS = ["solver.rtol=1e-6", "solver.atol=1e-8", "output.dt_h=24", 'output.variables=["C"]']
OVERRIDES = _parse_set(SETS)
TIMING = ("created", "wall_seconds", "solve_seconds", "compile_seconds", "codegen_seconds", "codegen_cold", "chunks_resumed")


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(CONFIG, overrides=OVERRIDES)


def load(path) -> xr.Dataset:
    with xr.open_zarr(path, consolidated=True, chunks=None) as ds:
        return ds.load()


def assert_same_subjects(a: xr.Dataset, b: xr.Dataset):
    """Every variable (data and coordinates) equal bit for bit; strings compared as text."""
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        x, y = a[name].values, b[name].values
        if x.dtype.kind in "OTU" or y.dtype.kind in "OTU":
            x, y = x.astype(object), y.astype(object)
        np.testing.assert_array_equal(x, y, err_msg=name)


def run_attrs(ds):
    return {k: v for k, v in ds.attrs.items() if k not in TIMING}


def test_subject_is_the_same_in_cohorts_of_10_and_10000_and_chunks_of_1_and_1000(scenario, tmp_path):
    small = run_cohort(scenario, tmp_path / "small.zarr", subjects=10, chunk_size=1, progress=False)
    big = run_cohort(scenario, tmp_path / "big.zarr", subjects=10_000, chunk_size=1000, progress=False)
    assert (small.n_chunks, big.n_chunks) == (10, 10)
    assert big.status == {"ok": 10_000}
    a, b = load(small.out), load(big.out)
    assert b.sizes == {"subject": 10_000, "time": 15}
    np.testing.assert_array_equal(b.subject.values, np.arange(10_000))
    assert_same_subjects(a, b.isel(subject=slice(0, 10)))
    # and both equal the in-memory simulation
    ref = il2sim.simulate(scenario, subject_ids=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9_999]))
    ref = ref.drop_vars(["status", "status_message"]).assign(status=ref.status.astype(str), status_message=ref.status_message.astype(str))
    assert_same_subjects(a, ref.isel(subject=slice(0, 10)))
    assert_same_subjects(b.isel(subject=[9_999]), ref.isel(subject=[10]))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_threads_do_not_change_the_store(scenario, tmp_path):
    one = run_cohort(scenario, tmp_path / "t1.zarr", subjects=40, chunk_size=16, threads=1, progress=False)
    two = run_cohort(scenario, tmp_path / "t2.zarr", subjects=40, chunk_size=16, threads=2, progress=False)
    assert_same_subjects(load(one.out), load(two.out))


def test_dask_local_cluster_writes_the_same_store(scenario, tmp_path):
    pytest.importorskip("distributed")
    local = run_cohort(scenario, tmp_path / "local.zarr", subjects=24, chunk_size=6, progress=False)
    seen = []
    dask = run_cohort(scenario, tmp_path / "dask.zarr", subjects=24, chunk_size=6, workers=2, progress=False, on_chunk=seen.append)
    assert sorted(m["chunk"] for m in seen) == [0, 1, 2, 3]
    assert len({m["pid"] for m in CohortStore(dask.out).done().values()} - {os.getpid()}) >= 1  # solved in worker processes
    a, b = load(local.out), load(dask.out)
    assert_same_subjects(a, b)
    assert run_attrs(a) == run_attrs(b)


def test_existing_scheduler_with_two_threads_per_worker(scenario, tmp_path):
    """Chunks running in two threads of one worker process solve one at a time and agree."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        remote = run_cohort(scenario, tmp_path / "s.zarr", subjects=12, chunk_size=3, scheduler=cluster.scheduler_address,
                            progress=False)
    local = run_cohort(scenario, tmp_path / "l.zarr", subjects=12, chunk_size=3, progress=False)
    assert remote.computed == 4
    assert_same_subjects(load(remote.out), load(local.out))


CHILD = """
import sys, time
from il2sim.cli import _parse_set
from il2sim.cohort import run_cohort
run_cohort(sys.argv[1], sys.argv[2], subjects=60, chunk_size=2, overrides=_parse_set(sys.argv[3:]), progress=False,
           on_chunk=lambda info: time.sleep(0.15))
"""


def test_killed_run_resumes_without_recomputing_and_equals_an_uninterrupted_run(tmp_path, capsys):
    out = tmp_path / "killed.zarr"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    proc = subprocess.Popen([sys.executable, str(script), str(CONFIG), str(out), *SETS])
    done_dir = out / ".il2sim" / "done"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if done_dir.is_dir() and len([p for p in os.listdir(done_dir) if p.endswith(".json")]) >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = {p.name: p.read_bytes() for p in done_dir.glob("*.json")}
    assert 4 <= len(before) < 30
    assert json.loads((out / ".il2sim" / "run.json").read_text())["complete"] is False

    # without --resume an existing store is never touched
    args = ["run", str(CONFIG), "--out", str(out), "--subjects", "60", "--chunk-size", "2", "--no-figures",
            *[x for s in SETS for x in ("--set", s)]]
    assert main(args) == 2
    assert "exists; pass --resume to continue the run it holds, --overwrite to replace it" in capsys.readouterr().err

    assert main(args + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert f"30 chunks of 2 ({len(before)} done before --resume)" in text
    after = {p.name: p.read_bytes() for p in done_dir.glob("*.json")}
    assert len(after) == 30
    assert all(after[name] == data for name, data in before.items())  # completed chunks were not recomputed
    resumed = load(out)
    assert resumed.attrs["chunks_resumed"] == len(before) and resumed.attrs["complete"] == 1

    reference = run_cohort(CONFIG, tmp_path / "reference.zarr", subjects=60, chunk_size=2, overrides=OVERRIDES, progress=False)
    ref = load(reference.out)
    assert_same_subjects(resumed, ref)
    assert run_attrs(resumed) == run_attrs(ref)


def test_resume_refuses_a_store_from_a_different_run(scenario, tmp_path):
    out = tmp_path / "a.zarr"
    run_cohort(scenario, out, subjects=8, chunk_size=4, seed=1, progress=False)
    with pytest.raises(ConfigError, match=r"a.zarr: holds a different run, so --resume would mix two cohorts \(seed 1 -> 2\); "
                                          r"rerun with the same config, overrides, seed, subjects and chunk size"):
        run_cohort(scenario, out, subjects=8, chunk_size=4, seed=2, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"chunk_size 4 -> 2, subjects 8 -> 9"):
        run_cohort(scenario, out, subjects=9, chunk_size=2, seed=1, resume=True, progress=False)
    other = load_scenario(CONFIG, overrides={**OVERRIDES, "solver.rtol": 1e-7})
    with pytest.raises(ConfigError, match=r"settings_sha256 differs"):
        run_cohort(other, out, subjects=8, chunk_size=4, seed=1, resume=True, progress=False)
    # the same run resumes: nothing left to do
    again = run_cohort(scenario, out, subjects=8, chunk_size=4, seed=1, resume=True, progress=False)
    assert (again.computed, again.skipped) == (0, 2)
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(ConfigError, match=r"plain.zarr: not an il2sim cohort store \(no .il2sim/run.json\), so --resume cannot continue it"):
        run_cohort(scenario, tmp_path / "plain.zarr", subjects=8, chunk_size=4, resume=True, progress=False)


def test_existing_outputs_are_replaced_only_with_overwrite(scenario, tmp_path):
    out = tmp_path / "o.zarr"
    run_cohort(scenario, out, subjects=4, chunk_size=2, seed=1, progress=False)
    first = load(out)
    with pytest.raises(ConfigError, match=r"o.zarr: exists; pass --resume"):
        run_cohort(scenario, out, subjects=4, chunk_size=2, seed=2, progress=False)
    assert_same_subjects(load(out), first)
    run_cohort(scenario, out, subjects=4, chunk_size=2, seed=2, overwrite=True, progress=False)
    assert load(out).attrs["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["o.zarr"]  # no temporary folders left behind
    with pytest.raises(ConfigError, match=r"give --resume .* or --overwrite .*, not both"):
        run_cohort(scenario, out, subjects=4, resume=True, overwrite=True)


def test_thinned_trajectories_keep_every_subject_result(tmp_path):
    sc = load_scenario(CONFIG, overrides={**OVERRIDES, "output.dt_h": 12, "output.keep_every_h": 48})
    full = run_cohort(sc, tmp_path / "full.zarr", subjects=6, chunk_size=4, keep_every_h=12, progress=False)
    thin = run_cohort(sc, tmp_path / "thin.zarr", subjects=6, chunk_size=4, progress=False)
    a, b = load(full.out), load(thin.out)
    assert (a.sizes["time"], b.sizes["time"]) == (29, 8)
    np.testing.assert_array_equal(b.time.values, np.arange(0, 337, 48.0))
    assert_same_subjects(a.sel(time=b.time.values), b)  # kept points are the full run's values; all per-subject results kept


def test_netcdf_output_goes_through_a_store_when_chunked(scenario, tmp_path):
    out = tmp_path / "c.nc"
    run = run_cohort(scenario, out, subjects=9, chunk_size=4, progress=False)
    assert run.out == out and run.store is None and not (tmp_path / "c.nc.zarr").exists()
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        got = ds.load()
    ref = il2sim.simulate(scenario, subjects=9)
    for name in ("C", "ka", "BSA", "n_steps"):
        np.testing.assert_array_equal(got[name].values, ref[name].values)
    assert list(got.status.values) == ["ok"] * 9
    # too large for memory: the store is kept and the run says so
    big = run_cohort(scenario, tmp_path / "d.nc", subjects=9, chunk_size=4, progress=False, netcdf_max_bytes=1000)
    assert big.out == tmp_path / "d.nc.zarr" and not (tmp_path / "d.nc").exists()
    assert "d.nc not written: the cohort does not fit in memory for one netCDF file" in big.note


def test_progress_bar_only_on_request_or_a_terminal(scenario, tmp_path, capsys):
    run_cohort(scenario, tmp_path / "p.zarr", subjects=4, chunk_size=2, progress=None)
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest
    run_cohort(scenario, tmp_path / "q.zarr", subjects=4, chunk_size=2, progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err and "subj" in err and "onecmt" in err


RSS_CHILD = """
import resource, sys
from il2sim.cli import _parse_set
from il2sim.cohort import run_cohort
run_cohort(sys.argv[1], sys.argv[2], subjects=int(sys.argv[3]), chunk_size=500, progress=False,
           overrides=_parse_set(["solver.rtol=1e-5", "solver.atol=1e-7"]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's")
def test_peak_memory_does_not_grow_with_the_cohort(tmp_path):
    """10x the subjects (in memory ~ 80 MB more of trajectories) must not raise the peak RSS."""
    script = tmp_path / "rss.py"
    script.write_text(RSS_CHILD)
    rss = {}
    for n in (1_000, 10_000):
        res = subprocess.run([sys.executable, str(script), str(CONFIG), str(tmp_path / f"r{n}.zarr"), str(n)],
                             capture_output=True, text=True, timeout=300, check=True)
        rss[n] = int(res.stdout.split()[-1]) / 1024
    assert rss[10_000] - rss[1_000] < 25, rss  # MiB


def test_chunk_tasks_pickle_small_without_compiled_code(tmp_path):
    """What dask ships: the Scenario (with a covariate CSV and observations) and run settings."""
    import pickle

    from il2sim.cohort import ChunkTask, simulate_chunk

    (tmp_path / "patients.csv").write_text("weight,height\n60,160\n80,180\n")
    text = CONFIG.read_text().replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("height =", "weight =")))
    text = text.replace("[population]\nsubjects = 6\n", '[population]\nsubjects = 6\ncovariates_csv = "patients.csv"\n'
                        '[population.covariate_model]\nV = { covariate = "weight", reference = 70, exponent = 1 }\n')
    text += '\n[observations]\ntimes_h = [24, 48]\n[observations.variables]\nC = { error = "proportional", cv = 0.1 }\n'
    (tmp_path / "c.toml").write_text(text)
    sc = load_scenario(tmp_path / "c.toml", overrides=OVERRIDES)
    task = ChunkTask(sc, str(tmp_path / "x.zarr"), subjects=6, chunk_size=3, seed=5, variables=None, stride=1)
    blob = pickle.dumps(task)
    assert len(blob) < 100_000 and b"CPUDispatcher" not in blob and b"il2sim_model_" not in blob
    back = pickle.loads(blob)
    assert_same_subjects(simulate_chunk(back, 1), simulate_chunk(task, 1))


def test_every_source_of_variability_is_split_invariant(tmp_path):
    """IIV with correlation, IOV per cycle, a covariate model and residual error together: chunks
    of 1 and of 7 give the same subjects."""
    sets = {**OVERRIDES, "population.iov": {"ka": 0.2}, "population.correlation": {"ka:ke": 0.4},
            "population.covariate_model": {"V": {"covariate": "weight", "reference": 70, "exponent": 1.0}},
            "observations": {"times_day": [1, 9], "variables": {"C": {"error": "combined", "sd": 1.0, "cv": 0.1}}}}
    sc = load_scenario(CONFIG, overrides=sets)
    a = run_cohort(sc, tmp_path / "a.zarr", subjects=7, chunk_size=1, progress=False)
    b = run_cohort(sc, tmp_path / "b.zarr", subjects=7, chunk_size=7, progress=False)
    x, y = load(a.out), load(b.out)
    assert "C_obs" in x and x.sizes["obs_time"] == 2
    assert_same_subjects(x, y)
