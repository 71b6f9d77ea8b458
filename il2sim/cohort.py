"""Virtual cohorts of any size: chunks of subjects solved one after another (or as dask tasks)
and streamed into a zarr store, so memory does not grow with the number of subjects.

>>> run = run_cohort("configs/mm_low_dose_1995.toml", "results/big.zarr", subjects=1_000_000)  # doctest: +SKIP

How a run is split never changes its numbers: subject ``i`` is drawn from its own random
stream (il2sim.population), its solve does not depend on the other subjects in its kernel call,
and chunk ``c`` always holds subjects ``c*chunk_size .. (c+1)*chunk_size - 1``. A run on one
thread, on every core, or on a dask cluster of many machines writes the same store.

Main arguments of :func:`run_cohort`
-----------------------------------
- ``out``: a ``.zarr`` store (the scalable form), or ``.nc`` (any other name): a cohort of one chunk is written
  straight to netCDF; a larger one runs into ``<out>.zarr`` and is converted to netCDF at the end
  when it fits in memory (else the store is kept and the run says so).
- ``chunk_size``: subjects per task (and per zarr chunk). Memory is about
  ``chunk_size × time points × (states + outputs) × 8 bytes × 3``.
- ``workers`` / ``scheduler``: run the chunks on a local dask cluster of ``workers`` processes,
  or on an existing cluster at ``scheduler`` (``tcp://host:8786``), whose workers must see the
  store path (a shared file system) and have il2sim installed. Workers load the compiled model
  from the on-disk cache (or generate it once); compiled functions are never shipped.
- ``resume``: continue a killed run from its completed chunks (``.il2sim/done`` markers); the
  store's fingerprint must match this run. ``overwrite``: replace an existing output.

What is kept: every variable on the ``subject`` dimension (status, solver counters,
``days_on_therapy``, response, covariates, parameters, simulated observations) for every
subject; trajectories of ``output.variables`` (default all) thinned in time to every
``output.keep_every_h`` hours (default: the whole output grid). Thinning only drops grid
points: the kept values equal those of an unthinned run.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from il2sim.errors import ConfigError
from il2sim.scenario import Scenario, load_scenario
from il2sim.store import CohortStore, exists_message, run_fields, to_netcdf

__all__ = ["DEFAULT_CHUNK_SIZE", "ChunkTask", "CohortRun", "run_cohort", "run_chunk", "simulate_chunk"]

DEFAULT_CHUNK_SIZE = 1024
_SOLVE_LOCK = threading.Lock()  # one parallel numba solve per process (see run_chunk)


@dataclass(frozen=True)
class ChunkTask:
    """What a worker needs to solve and store any chunk of a run; small and picklable."""

    scenario: Scenario
    store: str
    subjects: int
    chunk_size: int
    seed: int
    variables: tuple[str, ...] | None
    stride: int  # keep every stride-th output time
    threads: int | None = None  # numba threads per chunk (None: numba's default)

    @property
    def n_chunks(self) -> int:
        return -(-self.subjects // self.chunk_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        lo = chunk * self.chunk_size
        return lo, min(self.subjects, lo + self.chunk_size)


@dataclass
class CohortRun:
    """What :func:`run_cohort` did."""

    out: Path  # the result: the .zarr store, or the .nc file
    store: Path | None  # the zarr store (None for a one-chunk run written straight to netCDF)
    subjects: int
    chunk_size: int
    n_chunks: int
    computed: int  # chunks solved by this call
    skipped: int  # chunks already done (resume)
    status: dict[str, int] = field(default_factory=dict)  # status name -> subjects
    seconds: float = 0.0
    n_times: int = 0
    note: str = ""  # e.g. why the netCDF file was not written

    @property
    def n_failed(self) -> int:
        return sum(c for s, c in self.status.items() if s != "ok")


def simulate_chunk(task: ChunkTask, chunk: int | None = None, subject_ids: np.ndarray | None = None) -> xr.Dataset:
    """The Dataset of one chunk (or of the given subjects), thinned as the run keeps it."""
    from il2sim.simulate import simulate

    if subject_ids is None:
        lo, hi = task.bounds(chunk)
        subject_ids = np.arange(lo, hi)
    ds = simulate(task.scenario, subject_ids=subject_ids, seed=task.seed, variables=task.variables,
                  chunk_size=max(1, len(subject_ids)))
    if task.stride > 1:
        ds = ds.isel(time=slice(None, None, task.stride))
    return ds


def run_chunk(task: ChunkTask, chunk: int) -> dict[str, Any]:
    """Solve chunk ``chunk`` and write it into the store; return its marker (status counts, timing).

    This is the unit of work both locally and on dask workers. A process solves one chunk at a
    time (a lock): each solve already uses ``task.threads`` numba threads (default: all cores),
    and numba's default workqueue threading layer aborts on launches from two threads at once.
    """
    import numba

    t0 = time.perf_counter()
    lo, hi = task.bounds(chunk)
    with _SOLVE_LOCK:
        previous = numba.get_num_threads()
        if task.threads:
            numba.set_num_threads(max(1, min(int(task.threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            ds = simulate_chunk(task, chunk)
        finally:
            numba.set_num_threads(previous)
    t_solved = time.perf_counter()
    counts = Counter(ds["status"].values.astype(str).tolist())
    info = {"status": dict(counts), "solve_seconds": round(t_solved - t0, 4),
            "compile_seconds": float(ds.attrs.get("compile_seconds", 0.0))}
    CohortStore(task.store).write_chunk(chunk, lo, hi, ds, info)
    info["write_seconds"] = round(time.perf_counter() - t_solved, 4)
    info["chunk"], info["subjects"] = chunk, [lo, hi]
    return info


def _progress_bar(total: int, initial: int, enabled: bool | None, desc: str):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(total=total, initial=initial, unit="subj", unit_scale=total >= 10_000, desc=desc, disable=not enabled,
                file=sys.stderr, smoothing=0.1, mininterval=0.5, dynamic_ncols=True)


def run_cohort(
    scenario: Scenario | str | Path,
    out: str | Path,
    *,
    subjects: int | None = None,
    seed: int | None = None,
    chunk_size: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    threads: int | None = None,
    variables: list[str] | tuple[str, ...] | None = None,
    keep_every_h: float | None = None,
    overrides: dict | None = None,
    on_chunk: Callable[[dict], None] | None = None,
    netcdf_max_bytes: int | None = None,
) -> CohortRun:
    """Simulate a scenario's virtual cohort chunk by chunk into ``out`` (``.zarr`` or ``.nc``).

    Main arguments
    --------------
    scenario : Scenario, or path of a scenario TOML file (``overrides`` as in ``--set``).
    out : result path; ``.zarr`` (any size) or ``.nc`` (see the module docstring).
    subjects, seed : as in ``il2sim.simulate``.
    chunk_size : subjects per chunk (default 1024, or the cohort when smaller).
    workers : run on a local dask cluster with this many worker processes.
    scheduler : address of an existing dask scheduler to run on instead.
    resume : continue an interrupted run in ``out`` (a missing store starts afresh).
    overwrite : replace an existing ``out``.
    progress : a progress bar on stderr (default: only when stderr is a terminal).

    Other arguments
    ---------------
    threads : numba threads per chunk (default: numba's, or cores / workers on a local cluster).
    variables, keep_every_h : trajectories kept (default ``output.variables`` and
        ``output.keep_every_h`` of the config).
    on_chunk : called in this process with each completed chunk's marker.
    netcdf_max_bytes : size limit for converting to ``.nc`` (default half the free memory).

    Raises
    ------
    ConfigError : bad arguments; ``out`` exists (without ``resume``/``overwrite``); ``resume``
        on a store made by a different run.
    """
    from il2sim._codegen import compile_model
    from il2sim.simulate import format_status_counts

    t_start = time.perf_counter()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, overrides=overrides)
    n = sc.population.subjects if subjects is None else int(subjects)
    if n < 1:
        raise ConfigError(f"run_cohort: subjects: expected an integer >= 1, got {n}")
    seed = sc.seed if seed is None else int(seed)
    cs = min(n, DEFAULT_CHUNK_SIZE) if chunk_size is None else int(chunk_size)
    if cs < 1:
        raise ConfigError(f"run_cohort: chunk_size: expected an integer >= 1, got {cs}")
    if resume and overwrite:
        raise ConfigError("run_cohort: give --resume (continue the run in the store) or --overwrite (start again), not both")
    if workers is not None and scheduler is not None:
        raise ConfigError("run_cohort: give --workers (a local dask cluster) or --scheduler (an existing one), not both")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"run_cohort: workers: expected an integer >= 1, got {workers}")
    out = Path(out)
    variables = tuple(variables) if variables else sc.output.variables
    keep = sc.output.keep_every_h if keep_every_h is None else float(keep_every_h)
    stride = 1
    if keep is not None:
        ratio = keep / sc.output.dt_h
        if keep <= 0 or abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio):
            raise ConfigError(f"run_cohort: keep_every_h: expected a positive multiple of output.dt_h ({sc.output.dt_h:g} h), got {keep!r}")
        stride = int(round(ratio))
    if workers is not None and threads is None:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
    t_out = sc.output.times()

    netcdf = out.suffix != ".zarr"  # .nc, or any other name: one netCDF file
    store_path = out.with_name(out.name + ".zarr") if netcdf else out
    replace_out = overwrite
    if netcdf and out.exists() and not overwrite:
        # --resume finishes a run that was started with --overwrite: its netCDF file may replace
        # the old one (the store records the run's --overwrite; a kill left the old file in place)
        started = (CohortStore(store_path).run_info() or {}).get("info", {}) if resume and store_path.exists() else {}
        if not started.get("overwrite"):
            raise ConfigError(f"{out}: exists; pass --overwrite to replace it, or choose another --out")
        replace_out = True
    task = ChunkTask(sc, str(store_path), n, cs, seed, variables, stride, threads)

    if netcdf and n <= cs and workers is None and scheduler is None and not store_path.exists():
        # One chunk: no store, no resume; straight to netCDF (atomically).
        from il2sim.results import write_netcdf

        ds = _chunk_locally(task, 0)
        write_netcdf(ds, out, overwrite=overwrite)
        status = dict(Counter(ds["status"].values.astype(str).tolist()))
        return CohortRun(out, None, n, cs, 1, 1, 0, status, time.perf_counter() - t_start, ds.sizes["time"])

    fields = run_fields(sc, subjects=n, seed=seed, chunk_size=cs, t_out=t_out, variables=variables, keep_every_h=keep)
    info = {"config": sc.source, "overrides": {k: repr(x) for k, x in (overrides or {}).items()}, "overwrite": bool(overwrite)}
    compiled = compile_model(sc.model)  # fills the disk cache that chunks and workers load from
    if resume and store_path.exists():
        store = CohortStore.open_for_resume(store_path, fields)
    else:
        if store_path.exists() and not overwrite:
            raise ConfigError(exists_message(store_path))
        template = simulate_chunk(task, subject_ids=np.array([0]))
        store = CohortStore.create(store_path, template, subjects=n, chunk_size=cs, fields=fields, info=info,
                                   overwrite=overwrite)
    done = store.done()
    todo = [c for c in range(task.n_chunks) if c not in done]
    already = sum(task.bounds(c)[1] - task.bounds(c)[0] for c in done if c < task.n_chunks)

    bar = _progress_bar(n, already, progress, sc.name)

    def report(info: dict) -> None:
        lo, hi = info["subjects"]
        bar.update(hi - lo)
        if on_chunk is not None:
            on_chunk(info)

    try:
        if workers is not None or scheduler is not None:
            _run_dask(task, todo, workers, scheduler, report)
        else:
            for c in todo:
                report(run_chunk(task, c))
    finally:
        bar.close()

    markers = store.done()
    missing = [c for c in range(task.n_chunks) if c not in markers]
    if missing:  # pragma: no cover - every chunk above either wrote its marker or raised
        raise RuntimeError(f"{store.path}: chunks {missing[:5]} have no completion marker")
    status: Counter = Counter()
    solve_seconds = 0.0
    for m in markers.values():
        status.update(m.get("status", {}))
        solve_seconds += float(m.get("solve_seconds", 0.0))
    store.finalise({
        "n_failed": int(sum(c for s, c in status.items() if s != "ok")),
        "status_summary": format_status_counts(dict(status)),
        "subjects_total": n,
        "solve_seconds": round(solve_seconds, 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "codegen_seconds": round(compiled.codegen_seconds, 3),
        "codegen_cold": int(compiled.cold),
        "chunks_resumed": len(done),
    })
    n_times = int(math.ceil(t_out.size / stride))
    run = CohortRun(store.path, store.path, n, cs, task.n_chunks, len(todo), len(done), dict(status),
                    time.perf_counter() - t_start, n_times)
    if netcdf:
        if to_netcdf(store, out, max_bytes=netcdf_max_bytes, overwrite=replace_out):
            import shutil

            shutil.rmtree(store.path, ignore_errors=True)
            run.out, run.store = out, None
        else:
            run.out = store.path
            run.note = (f"{out} not written: the cohort does not fit in memory for one netCDF file; "
                        f"the results are in {store.path} (xarray.open_zarr)")
    run.seconds = time.perf_counter() - t_start
    return run


def _chunk_locally(task: ChunkTask, chunk: int) -> xr.Dataset:
    import numba

    previous = numba.get_num_threads()
    if task.threads:
        numba.set_num_threads(max(1, min(int(task.threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        return simulate_chunk(task, chunk)
    finally:
        numba.set_num_threads(previous)


def _run_dask(task: ChunkTask, todo: list[int], workers: int | None, scheduler: str | None,
              report: Callable[[dict], None]) -> None:
    """Chunks as tasks on a dask cluster; results arrive in completion order."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("--workers/--scheduler need dask.distributed: pip install 'il2sim[dask]'") from None
    import logging

    cluster = None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect to a dask scheduler there ({exc})") from None
    else:
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        shared = client.scatter(task, broadcast=True)
        token = uuid.uuid4().hex[:8]
        futures = [client.submit(run_chunk, shared, c, key=f"il2sim-chunk-{token}-{c}", pure=False, retries=0) for c in todo]
        try:
            for fut in as_completed(futures):
                report(fut.result())
                fut.release()
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
