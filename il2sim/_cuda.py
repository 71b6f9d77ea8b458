"""GPU backend at the model level: CUDA model modules, backend choice, device results as Datasets.

:func:`compile_cuda` writes (or reuses) a model's CUDA module: the CPU module's generated model
functions and the shared solver kernels with ``build.HEADER_CUDA`` (``kernel =
cuda.jit(device=True)``) and the CUDA trailer's global kernels, cached next to the CPU module
under a key that adds the CUDA header, trailer and numba-cuda version to the model's key.
:func:`resolve_backend` turns ``solver.backend`` into the backend used (and why). The array
drivers are in :mod:`il2sim._solvers.cuda`; :func:`run_device_cohort` here calls them by
variable name and :func:`zarr_sink` streams their chunks into a zarr store.

``numba.cuda`` is imported lazily: without numba-cuda or a GPU nothing else in il2sim changes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from il2sim._solvers import build
from il2sim._solvers.cuda import DeviceCohortResult, cuda_unavailable_reason, import_cuda
from il2sim._solvers.cuda import run_device_cohort as _run_device_cohort
from il2sim.errors import ConfigError

__all__ = ["BACKENDS", "CudaModel", "compile_cuda", "device_dataset", "resolve_backend", "run_device_cohort", "zarr_sink"]

BACKENDS = ("cpu", "cuda", "auto")


def resolve_backend(backend: str, source: str = "solver.backend") -> tuple[str, str | None]:
    """``(backend to use, note or None)`` for a requested ``"cpu"``, ``"cuda"`` or ``"auto"``.

    ``"cuda"`` without a usable GPU is a ConfigError; ``"auto"`` then falls back to the CPU and
    the note says why.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"{source}: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}") from None
    if backend == "cpu":
        return "cpu", None
    reason = cuda_unavailable_reason()
    if reason is None:
        return "cuda", None
    if backend == "cuda":
        raise ConfigError(f"backend 'cuda': {reason}; use backend = 'cpu' or 'auto'")
    return "cpu", f"backend 'auto': {reason}; running on the CPU"


@dataclass(frozen=True)
class CudaModel:
    """A model's generated CUDA module (device functions + global kernels)."""

    model: object
    module: ModuleType
    key: str
    path: Path
    cold: bool
    seconds: float


def cuda_cache_key(model) -> str:
    """The CPU module's key plus everything only the CUDA module depends on."""
    from il2sim._codegen import cache_key

    try:
        from importlib.metadata import version

        nc = version("numba-cuda")
    except Exception:  # pragma: no cover - numba's bundled cuda target
        nc = "bundled"
    parts = ["il2sim-cuda-model/1", cache_key(model), build.cuda_template_hash(), nc]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compile_cuda(model, *, cache_dir: str | os.PathLike | None = None) -> CudaModel:
    """Generate (or reuse) and import the CUDA module for ``model``.

    The kernels themselves are compiled by numba-cuda on first launch (and cached by it on
    disk next to the module).
    """
    from il2sim._codegen import generated_module

    start = time.perf_counter()
    import_cuda()
    key = cuda_cache_key(model)
    module, path, cold = generated_module(model, key, "il2sim_cuda", cache_dir, header=build.HEADER_CUDA,
                                          trailer=build.cuda_trailer_source())
    return CudaModel(model, module, key, path, cold, time.perf_counter() - start)


def run_device_cohort(cm: CudaModel, **kwargs) -> DeviceCohortResult:
    """:func:`il2sim._solvers.cuda.run_device_cohort` for ``cm``'s model, variables by name
    (``reduce=("C", "Eos")``, ``keep=("C",)``; states and outputs)."""
    model = cm.model
    variables = {s: (0, i) for i, s in enumerate(model.state_names)}
    variables.update({o: (1, k) for k, o in enumerate(model.output_names)})
    for v in (*kwargs.get("reduce", ()), *kwargs.get("keep", ())):
        if v not in variables:
            raise ConfigError(f"run_device_cohort: unknown variable {v!r}; expected a state or output of the model")
    return _run_device_cohort(cm.module, variables=variables, **kwargs)



_STATS = {  # device statistic -> (suffix of the Dataset variable, unit pattern, description)
    "max": ("max", "{u}", "maximum of {v} over the output grid"),
    "tmax": ("tmax", "h", "time of the first maximum of {v}, from the start of the grid"),
    "min": ("min", "{u}", "minimum of {v} over the output grid"),
    "auc": ("auc", "{u}*h", "AUC of {v} over the output grid (trapezoid)"),
    "fold": ("peak_fold", "1", "maximum of {v} / value at t = 0"),
}


def device_dataset(part: DeviceCohortResult, model, subject: np.ndarray):
    """An ``xarray.Dataset`` (dims ``subject``, ``time``) of a :class:`DeviceCohortResult`:
    ``status`` and solver counters, ``<var>_max``/``_tmax``/``_min``/``_auc``/``_peak_fold`` per
    reduced variable, and the thinned trajectories, with units as in :func:`il2sim.simulate`'s
    results."""
    import xarray as xr

    from il2sim.results import STAT_FIELDS, STATUS_NAMES

    meta = {s.name: s for s in model.states} | {o.name: o for o in model.outputs}
    data = {"status": ("subject", np.array([STATUS_NAMES[int(c)] if 0 <= c < len(STATUS_NAMES) else str(c)
                                             for c in part.status]), {"description": "solver status"})}
    for j, name in enumerate(STAT_FIELDS[: part.stats.shape[1]]):
        data[name] = ("subject", part.stats[:, j], {"description": "solver counter"})
    for v, stats in part.endpoints.items():
        for stat, values in stats.items():
            suffix, unit, desc = _STATS[stat]
            data[f"{v}_{suffix}"] = ("subject", values, {"units": unit.format(u=meta[v].unit), "description": desc.format(v=v)})
    for v, values in part.trajectories.items():
        data[v] = (("subject", "time"), values, {"units": meta[v].unit, "description": meta[v].description})
    coords = {"subject": ("subject", np.asarray(subject, dtype=np.int64)),
              "time": ("time", part.t_kept, {"units": "h"})}
    return xr.Dataset(data, coords=coords, attrs={"backend": "cuda", "model_hash": getattr(model, "text_hash", "")})


def zarr_sink(path: str | os.PathLike, model, subject: np.ndarray | None = None):
    """A ``sink`` for :func:`run_device_cohort` that appends each chunk to a zarr store.

    The store (zarr format 2 with consolidated metadata, as :mod:`il2sim.store`) is written chunk by chunk (``xarray.Dataset.to_zarr``, appended along
    ``subject``), so host memory holds one chunk at a time; open it with
    ``xarray.open_zarr``. ``subject`` maps row ``i`` of the run to its subject index (default
    ``i``).
    """
    path = Path(path)
    state = {"first": True}

    def sink(lo: int, hi: int, part: DeviceCohortResult) -> None:
        ids = np.arange(lo, hi) if subject is None else np.asarray(subject)[lo:hi]
        ds = device_dataset(part, model, ids)
        if state["first"]:
            ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
            state["first"] = False
        else:
            ds.to_zarr(path, append_dim="subject", zarr_format=2, consolidated=True)

    return sink
