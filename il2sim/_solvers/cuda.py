"""GPU drivers: launch a generated CUDA model module's kernels over host arrays, in chunks.

A CUDA model module (written by :func:`il2sim._cuda.compile_cuda`) is the CPU module's text with
another header (``build.HEADER_CUDA``: ``kernel = cuda.jit(device=True)``) and a trailer of
global kernels (``_cuda_template.py``): the right-hand side, Jacobian, sparse LU, Rodas5P/Tsit5
steps, controller, events and dense output are the *same source* as on the CPU. Like the rest
of the solver layer, this module knows arrays and compiled modules only (no model, config or
xarray).

Drivers (host side, one subject per GPU thread, subject-last layouts on the device):

- :func:`solve_cohort_cuda`: drop-in for the CPU module's ``solve_cohort`` + ``eval_outputs``
  over host arrays in the CPU layouts; used by :func:`il2sim.simulate` with ``backend="cuda"``,
  so every feature of the CPU path (stop rules, inter-occasion variability, observations,
  zarr/netCDF streaming through :mod:`il2sim.cohort`) runs on the GPU unchanged.
- :func:`run_device_cohort`: the high-throughput path. Per chunk of subjects (sized from free
  GPU memory) it solves, evaluates outputs, reduces endpoints on the device (max, time of max,
  min, trapezoidal AUC, peak fold change) and copies back only those and the trajectories
  thinned to the rows and variables asked for, handing each chunk to a ``sink`` as it
  arrives (:func:`il2sim._cuda.zarr_sink` writes them into a zarr store).

``numba.cuda`` is imported lazily and only here: without numba-cuda or a GPU, nothing else in
il2sim changes. ``NUMBA_ENABLE_CUDASIM=1`` (set before the first import) runs every kernel
on the CPU in numba's CUDA simulator, which is how the tests check the GPU code everywhere.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

__all__ = [
    "DeviceCohortResult",
    "chunk_subjects",
    "cuda_unavailable_reason",
    "import_cuda",
    "run_device_cohort",
    "simulator_enabled",
    "solve_cohort_cuda",
]

THREADS_PER_BLOCK = 128  # one subject per thread; local memory per thread ~ 3 kB for 12 states
_N_STATS = 7


def import_cuda():
    """``numba.cuda``, imported once. Raises ImportError if numba-cuda is not installed.

    numba-cuda releases that still refer to ``numpy.row_stack`` (removed from numpy 2.5)
    fail to import; ``numpy.vstack`` is the same function, so it is put back first.
    """
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    from numba import cuda

    return cuda


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    try:
        from numba import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:  # pragma: no cover
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_unavailable_reason() -> str | None:
    """None if kernels can run (a CUDA GPU, or the simulator), else why not, in words."""
    try:
        cuda = import_cuda()
    except ImportError as exc:
        return f"numba-cuda is not installed ({exc}); pip install 'il2sim[cuda]'"
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # a broken driver install raises instead of returning False
        return f"no CUDA GPU found (numba.cuda.is_available() raised {type(exc).__name__}: {exc})"
    return "no CUDA GPU found (numba.cuda.is_available() is False)"


# ---------------------------------------------------------------------------------------------
# Device memory and chunking


def _free_device_bytes(cuda) -> int | None:
    try:
        free, _total = cuda.current_context().get_memory_info()
        return int(free)
    except Exception:  # the simulator, or a driver that does not say
        return None


def chunk_subjects(n: int, bytes_per_subject: int, *, free_bytes: int | None, fraction: float = 0.5,
                   requested: int | None = None) -> int:
    """Subjects per device chunk: ``requested``, else what fits in ``fraction`` of free memory
    (whole blocks of threads), at least one block, at most ``n``."""
    if requested is not None:
        return max(1, min(n, int(requested)))
    if free_bytes is None:
        return n
    fit = int(fraction * free_bytes) // max(1, int(bytes_per_subject))
    fit = max(THREADS_PER_BLOCK, fit // THREADS_PER_BLOCK * THREADS_PER_BLOCK)
    return max(1, min(n, fit))


def _events_to_device(cuda, ev, lo: int, hi: int):
    ev_ptr, ev_time, ev_kind, ev_state, ev_value = ev
    a, b = int(ev_ptr[lo]), int(ev_ptr[hi])
    ptr = np.ascontiguousarray(np.asarray(ev_ptr[lo:hi + 1], dtype=np.int64) - a)
    arrays = [np.asarray(ev_time[a:b], np.float64), np.asarray(ev_kind[a:b], np.int64),
              np.asarray(ev_state[a:b], np.int64), np.asarray(ev_value[a:b], np.float64)]
    if b == a:  # no events in this chunk: one unused element (a zero-size device array is not portable)
        arrays = [np.zeros(1, x.dtype) for x in arrays]
    return [cuda.to_device(ptr)] + [cuda.to_device(np.ascontiguousarray(x)) for x in arrays]


def _grid(n: int) -> tuple[int, int]:
    return (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, THREADS_PER_BLOCK


class _Timer:
    """Device time of kernels and of copies: CUDA events on a GPU, wall clock in the simulator."""

    def __init__(self, cuda):
        self.cuda = cuda
        self.events = not simulator_enabled()
        self.kernel = 0.0
        self.transfer = 0.0

    def start(self):
        if self.events:
            ev = self.cuda.event()
            ev.record()
            return ev
        return time.perf_counter()

    def stop(self, start, what: str) -> None:
        if self.events:
            ev = self.cuda.event()
            ev.record()
            ev.synchronize()
            dt = self.cuda.event_elapsed_time(start, ev) / 1000.0
        else:
            dt = time.perf_counter() - start
        setattr(self, what, getattr(self, what) + dt)


# ---------------------------------------------------------------------------------------------
# Drop-in for the CPU kernels (simulate(backend="cuda"))


def solve_cohort_cuda(mod: ModuleType, method: int, adaptive: int, t0: float, Y0: np.ndarray, P: np.ndarray,
                      t_out: np.ndarray, ev_ptr, ev_time, ev_kind, ev_state, ev_value, rtol: float,
                      atol: np.ndarray, h0: float, hmax: float, max_steps: int, Y_out: np.ndarray,
                      status: np.ndarray, stats: np.ndarray, fstats: np.ndarray, *,
                      P_out: np.ndarray | None = None, O_out: np.ndarray | None = None,
                      chunk: int | None = None) -> dict:
    """The CPU module's ``solve_cohort`` (same arguments, host arrays in the CPU layouts
    ``Y0[subject, state]``, ``Y_out[subject, time, state]``, ...) run on the GPU in chunks.

    With ``O_out`` (subject, time, output) the outputs are evaluated on the device too, with
    the parameters ``P_out`` (default ``P``). Returns the device timings
    ``{"kernel_s", "transfer_s", "chunk", "n_chunks"}``.
    """
    cuda = import_cuda()
    n, nt = P.shape[0], t_out.shape[0]
    ns, no = int(mod.N_STATES), int(mod.N_OUTPUTS)
    want_o = O_out is not None and no > 0
    per_subject = 8 * (nt * (ns + (no if want_o else 0)) + 2 * P.shape[1] + ns + 12)
    per_subject += 32 * int(np.diff(ev_ptr).max(initial=0))
    step = chunk_subjects(n, per_subject, free_bytes=_free_device_bytes(cuda), requested=chunk)
    timer = _Timer(cuda)
    d_t = cuda.to_device(np.ascontiguousarray(t_out, dtype=np.float64))
    d_atol = cuda.to_device(np.ascontiguousarray(atol, dtype=np.float64))
    n_chunks = 0
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        m = hi - lo
        n_chunks += 1
        t = timer.start()
        d_P = cuda.to_device(np.ascontiguousarray(P[lo:hi].T))
        d_Y0 = cuda.to_device(np.ascontiguousarray(Y0[lo:hi].T))
        d_ev = _events_to_device(cuda, (ev_ptr, ev_time, ev_kind, ev_state, ev_value), lo, hi)
        timer.stop(t, "transfer")
        d_Y = cuda.device_array((nt, ns, m))
        d_status = cuda.device_array(m, dtype=np.int64)
        d_stats = cuda.device_array((_N_STATS, m), dtype=np.int64)
        d_fstats = cuda.device_array((2, m))
        t = timer.start()
        mod.cuda_solve_cohort[_grid(m)](method, adaptive, t0, d_Y0, d_P, d_t, *d_ev, rtol, d_atol, h0, hmax,
                                        max_steps, d_Y, d_status, d_stats, d_fstats)
        if want_o:
            d_Po = d_P if P_out is None else cuda.to_device(np.ascontiguousarray(P_out[lo:hi].T))
            d_O = cuda.device_array((nt, no, m))
            mod.cuda_eval_outputs[_grid(m)](d_t, d_Y, d_Po, d_O)
        timer.stop(t, "kernel")
        t = timer.start()
        Y_out[lo:hi] = d_Y.copy_to_host().transpose(2, 0, 1)
        if want_o:
            O_out[lo:hi] = d_O.copy_to_host().transpose(2, 0, 1)
        status[lo:hi] = d_status.copy_to_host()
        ncol = min(stats.shape[1], _N_STATS)
        stats[lo:hi, :ncol] = d_stats.copy_to_host().T[:, :ncol]
        fstats[lo:hi] = d_fstats.copy_to_host().T
        timer.stop(t, "transfer")
    return {"kernel_s": timer.kernel, "transfer_s": timer.transfer, "chunk": step, "n_chunks": n_chunks}


# ---------------------------------------------------------------------------------------------
# High-throughput path: endpoints reduced on the device, thinned trajectories streamed


@dataclass
class DeviceCohortResult:
    """What :func:`run_device_cohort` brings back to the host, per subject.

    ``endpoints[name][stat]`` is a (subject,) array for stat in ``max``, ``tmax``, ``min``,
    ``auc``, ``fold`` (peak over the baseline row); ``trajectories[name]`` is (subject, kept
    time) on ``t_kept``.
    """

    t_kept: np.ndarray
    status: np.ndarray
    stats: np.ndarray
    endpoints: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    trajectories: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def run_device_cohort(mod: ModuleType, *, variables: dict[str, tuple[int, int]], method: int, t_out: np.ndarray, Y0: np.ndarray, P: np.ndarray, ev,
                      rtol: float, atol: np.ndarray, h0: float = 0.0, hmax: float = 0.0,
                      max_steps: int = 1_000_000, reduce: tuple[str, ...] = (),
                      window: tuple[int, int] | None = None, baseline_row: int = 0,
                      keep: tuple[str, ...] = (), keep_rows: np.ndarray | None = None,
                      chunk: int | None = None, sink=None) -> DeviceCohortResult:
    """Solve a cohort on the GPU and bring back only endpoints and thinned trajectories.

    ``variables`` maps a name to ``(0, state index)`` or ``(1, output index)``. ``reduce``:
    names whose endpoints are computed on the device over grid rows ``window`` (default all). ``keep`` / ``keep_rows``: the trajectories (names, rows of
    ``t_out``) copied back. ``sink(lo, hi, part)``, if given, receives each chunk's
    :class:`DeviceCohortResult` as soon as it is on the host (e.g. to write it to a zarr
    store) and the returned result then holds no per-subject arrays, so host memory stays
    bounded; otherwise the chunks are concatenated.
    """
    cuda = import_cuda()
    n, nt = P.shape[0], t_out.shape[0]
    ns, no = int(mod.N_STATES), int(mod.N_OUTPUTS)
    for v in (*reduce, *keep):
        if v not in variables:
            raise KeyError(f"run_device_cohort: unknown variable {v!r}; known: {', '.join(variables)}")
    red = [tuple(variables[v]) for v in reduce]
    kept = [tuple(variables[v]) for v in keep]
    need_o = no > 0 and any(k == 1 for k, _ in red + kept)
    rows = np.arange(nt) if keep_rows is None else np.asarray(keep_rows, dtype=np.int64)
    i0, i1 = (0, nt) if window is None else (int(window[0]), int(window[1]))
    per_subject = 8 * (nt * (ns + (no if need_o else 0)) + rows.size * len(kept) + 5 * len(red)
                       + 2 * P.shape[1] + ns + 12) + 32 * int(np.diff(ev[0]).max(initial=0))
    step = chunk_subjects(n, per_subject, free_bytes=_free_device_bytes(cuda), requested=chunk)
    timer = _Timer(cuda)
    wall0 = time.perf_counter()
    d_t = cuda.to_device(np.ascontiguousarray(t_out, dtype=np.float64))
    d_atol = cuda.to_device(np.ascontiguousarray(atol, dtype=np.float64))
    d_rows = cuda.to_device(rows)
    sel = {k: np.array([j for kk, j in kept if kk == k] or [0], np.int64) for k in (0, 1)}
    sel_r = {k: np.array([j for kk, j in red if kk == k] or [0], np.int64) for k in (0, 1)}
    d_sel = {k: cuda.to_device(v) for k, v in sel.items()}
    d_sel_r = {k: cuda.to_device(v) for k, v in sel_r.items()}
    parts = []
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        m = hi - lo
        t = timer.start()
        d_P = cuda.to_device(np.ascontiguousarray(P[lo:hi].T))
        d_Y0 = cuda.to_device(np.ascontiguousarray(Y0[lo:hi].T))
        d_ev = _events_to_device(cuda, ev, lo, hi)
        timer.stop(t, "transfer")
        d_Y = cuda.device_array((nt, ns, m))
        d_status = cuda.device_array(m, dtype=np.int64)
        d_stats = cuda.device_array((_N_STATS, m), dtype=np.int64)
        d_fstats = cuda.device_array((2, m))
        g = _grid(m)
        t = timer.start()
        mod.cuda_solve_cohort[g](method, 1, 0.0, d_Y0, d_P, d_t, *d_ev, rtol, d_atol, h0, hmax, max_steps,
                                 d_Y, d_status, d_stats, d_fstats)
        arrays = {0: d_Y}
        if need_o:
            arrays[1] = cuda.device_array((nt, no, m))
            mod.cuda_eval_outputs[g](d_t, d_Y, d_P, arrays[1])
        d_red, d_keep = {}, {}
        for k in arrays:
            if any(kk == k for kk, _ in red):
                outs = [cuda.device_array((sel_r[k].size, m)) for _ in range(5)]
                mod.cuda_reduce[g](d_t, arrays[k], d_sel_r[k], i0, i1, baseline_row, *outs)
                d_red[k] = outs
            if any(kk == k for kk, _ in kept):
                d_keep[k] = cuda.device_array((rows.size, sel[k].size, m))
                mod.cuda_gather[g](arrays[k], d_rows, d_sel[k], d_keep[k])
        timer.stop(t, "kernel")
        t = timer.start()
        part = DeviceCohortResult(t_kept=t_out[rows], status=d_status.copy_to_host(),
                                  stats=d_stats.copy_to_host().T)
        host_red = {k: [a.copy_to_host() for a in v] for k, v in d_red.items()}
        host_keep = {k: v.copy_to_host() for k, v in d_keep.items()}
        timer.stop(t, "transfer")
        for name, (k, j) in zip(reduce, red):
            b = int(np.flatnonzero(sel_r[k] == j)[0])
            part.endpoints[name] = {stat: host_red[k][q][b] for q, stat in enumerate(("max", "tmax", "min", "auc", "fold"))}
        for name, (k, j) in zip(keep, kept):
            b = int(np.flatnonzero(sel[k] == j)[0])
            part.trajectories[name] = host_keep[k][:, b, :].T
        if sink is not None:
            sink(lo, hi, part)
        else:
            parts.append(part)
        del d_Y, arrays, d_red, d_keep
    timings = {"kernel_s": timer.kernel, "transfer_s": timer.transfer, "wall_s": time.perf_counter() - wall0,
               "chunk": step, "n_chunks": (n + step - 1) // step}
    if sink is not None:
        return DeviceCohortResult(t_kept=t_out[rows], status=np.zeros(0, np.int64),
                                  stats=np.zeros((0, _N_STATS), np.int64), timings=timings)
    out = DeviceCohortResult(
        t_kept=t_out[rows], status=np.concatenate([p.status for p in parts]),
        stats=np.concatenate([p.stats for p in parts]), timings=timings,
        endpoints={v: {s: np.concatenate([p.endpoints[v][s] for p in parts]) for s in parts[0].endpoints[v]}
                   for v in reduce},
        trajectories={v: np.concatenate([p.trajectories[v] for p in parts]) for v in keep},
    )
    return out
