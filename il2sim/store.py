"""The on-disk results of a chunked cohort run: a zarr store, its manifest and its fingerprint.

Layout (zarr format 2, consolidated metadata, readable with ``xarray.open_zarr(path)``)::

    out.zarr/
      .zgroup .zattrs .zmetadata     the Dataset of il2sim.simulate: every variable, all subjects
      C/ Ac/ status/ ka/ ...         one zarr array per variable; chunks of ``chunk_size`` subjects
      .il2sim/run.json               the run's fingerprint and the fields it was made from
      .il2sim/done/00000042.json     chunk 42 is complete (written only after its data)

Every variable on the ``subject`` dimension is chunked along it with exactly the run's
``chunk_size``, so each cohort chunk owns whole zarr chunks: chunks may be written in any order,
by any process or machine that sees the store, with no locking. A chunk counts as done only
when its marker exists, and the marker is written (atomically: temporary file, then rename)
after the chunk's data, so a run killed at any moment loses at most the chunks in flight; a
resumed run recomputes exactly the chunks without a marker (subjects are deterministic, so a
rewrite gives the same numbers).

The store is created atomically too: the template (metadata, the ``subject`` and ``time``
coordinates and ``run.json``) is built in a temporary folder beside the target and renamed into
place, so a store either exists with its fingerprint or does not exist.

Format 2 rather than 3: consolidated metadata is part of the format-2 conventions that xarray,
dask and other zarr readers share, and its files let the run's own files sit in ``.il2sim/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from il2sim.errors import ConfigError

__all__ = ["CohortStore", "exists_message", "fingerprint", "run_fields", "PER_CHUNK_ATTRS", "memory_available", "to_netcdf"]

STORE_FORMAT = 1
RUN_DIR = ".il2sim"
#: attrs of a chunk's Dataset that describe that chunk only; the store's attrs describe the run
PER_CHUNK_ATTRS = ("compile_seconds", "solve_seconds", "codegen_cold", "n_failed", "status_summary", "created")


def exists_message(path: Path) -> str:
    """Why an existing output is not replaced, and what to do."""
    return f"{path}: exists; pass --resume to continue the run it holds, --overwrite to replace it, or choose another --out"


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


#: Scenario fields that do not change a run's numbers (the model counts by its hash)
_NOT_NUMBERS = ("name", "source", "description", "text", "model", "models", "targets", "calibration")


def run_fields(scenario, *, subjects: int, seed: int, chunk_size: int, t_out: np.ndarray,
               variables: tuple[str, ...] | None, keep_every_h: float | None) -> dict[str, Any]:
    """Everything that decides a run's numbers and layout, as plain JSON values.

    The config text is recorded by digest (any edit counts), and so are the settings parsed
    from it after ``--set`` overrides: population (a CSV of covariates by its content hash),
    regimen, dose records, parameters, output grid, solver, drug, observations, response
    criteria (every Scenario field but names, text, targets and calibration). Overrides
    therefore count by what they change (``dt_h=24`` and ``dt_h=24.0`` are the same run), and a
    Scenario built in Python is told apart too.
    """
    import il2sim

    from dataclasses import fields, replace

    sc = scenario
    # Every parsed setting (present or future) except those that do not change the numbers.
    parsed = {f.name: repr(getattr(sc, f.name)) for f in fields(sc) if f.name not in _NOT_NUMBERS}
    parsed["population"] = repr(replace(sc.population, subjects=0))  # the run's own count is ``subjects``
    return {
        "il2sim_version": il2sim.__version__,
        "model_hash": sc.model.text_hash,
        "config_sha256": _sha(sc.text or ""),
        "settings_sha256": _sha(json.dumps(parsed, sort_keys=True)),
        "seed": int(seed),
        "subjects": int(subjects),
        "chunk_size": int(chunk_size),
        "time_grid_sha256": _sha(np.ascontiguousarray(t_out, dtype=float).tobytes()),
        "variables": list(variables) if variables else None,
        "keep_every_h": keep_every_h,
    }


def fingerprint(fields: dict[str, Any]) -> str:
    """SHA-256 of the run fields (canonical JSON)."""
    return _sha(json.dumps(fields, sort_keys=True))


@contextlib.contextmanager
def _run_dir_is_known():
    """zarr warns about any folder it does not know when it lists a group; ``.il2sim`` is ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"Object at {RUN_DIR} is not recognized")
        yield


def _dims(arr) -> tuple[str, ...]:
    return tuple(arr.attrs.get("_ARRAY_DIMENSIONS", ()))


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CohortStore:
    """A cohort run's zarr store on a local or shared file system (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- files of the run ----------------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.path / RUN_DIR / "run.json"

    @property
    def done_dir(self) -> Path:
        return self.path / RUN_DIR / "done"

    def marker(self, chunk: int) -> Path:
        return self.done_dir / f"{chunk:08d}.json"

    def run_info(self) -> dict | None:
        """Contents of ``run.json``, or None if the folder is not an il2sim store."""
        try:
            return json.loads(self.run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def done(self) -> dict[int, dict]:
        """Completed chunks: chunk index -> its marker (subjects, status counts, timings)."""
        out = {}
        try:
            names = os.listdir(self.done_dir)
        except FileNotFoundError:
            return out
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                try:
                    out[int(name[:-5])] = json.loads((self.done_dir / name).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # unreadable marker: the chunk is computed again
        return out

    # -- create / open -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, template: xr.Dataset, *, subjects: int, chunk_size: int,
               fields: dict, info: dict | None = None, overwrite: bool = False) -> CohortStore:
        """Create the store for ``subjects`` subjects from a Dataset of the same run (any size).

        ``template`` fixes the variables, dtypes, attrs and non-subject coordinates; every array
        on ``subject`` is sized to ``subjects`` and chunked by ``chunk_size``. ``fields`` (see
        :func:`run_fields`) make the fingerprint; ``info`` (e.g. the config path and overrides as
        given) is recorded beside it. Refuses an existing path unless ``overwrite``.
        """
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise ConfigError(exists_message(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            ds = template.copy()
            for k in PER_CHUNK_ATTRS:
                ds.attrs.pop(k, None)
            ds.attrs["il2sim_store_format"] = STORE_FORMAT
            ds.attrs["fingerprint"] = fingerprint(fields)
            ds.attrs["chunk_size"] = int(chunk_size)
            ds.attrs["complete"] = 0
            encoding = {}
            for name, var in ds.variables.items():
                if "subject" in var.dims:
                    encoding[name] = {"chunks": tuple(chunk_size if d == "subject" else ds.sizes[d] for d in var.dims)}
            ds.to_zarr(tmp, mode="w-", zarr_format=2, consolidated=True, encoding=encoding)
            group = zarr.open_group(tmp, mode="r+", zarr_format=2, use_consolidated=False)  # metadata changes below
            for name in group.array_keys():
                arr = group[name]
                dims = _dims(arr)
                if "subject" in dims:
                    axis = dims.index("subject")
                    arr.resize(tuple(subjects if i == axis else s for i, s in enumerate(arr.shape)))
            sub = group["subject"]
            step = max(chunk_size, (1 << 20) // chunk_size * chunk_size)
            for lo in range(0, subjects, step):  # the subject coordinate is the run's, not the template's
                hi = min(subjects, lo + step)
                sub[lo:hi] = np.arange(lo, hi, dtype=sub.dtype)
            zarr.consolidate_metadata(str(tmp), zarr_format=2)
            store = cls(tmp)
            _write_json_atomic(store.run_file, {
                "fingerprint": fingerprint(fields), "fields": fields, "info": info or {}, "store_format": STORE_FORMAT,
                "n_chunks": -(-subjects // chunk_size), "complete": False,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
            store.done_dir.mkdir(parents=True, exist_ok=True)
            if path.exists():  # overwrite: move the old store aside first, then drop it
                old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
                os.replace(path, old)
                os.replace(tmp, path)
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path)

    @classmethod
    def open_for_resume(cls, path: str | Path, fields: dict) -> CohortStore:
        """Open an existing store to continue its run; refuse one made by a different run."""
        store = cls(path)
        info = store.run_info()
        if info is None:
            raise ConfigError(f"{store.path}: not an il2sim cohort store (no {RUN_DIR}/run.json), so --resume cannot "
                              "continue it; pass --overwrite to replace it, or choose another --out")
        if info.get("fingerprint") != fingerprint(fields):
            old = info.get("fields", {})
            diff = [k for k in sorted(set(old) | set(fields)) if old.get(k) != fields.get(k)]
            shown = ", ".join(f"{k} {old.get(k)!r} -> {fields.get(k)!r}" if k not in ("config_sha256", "settings_sha256", "time_grid_sha256")
                              else f"{k} differs" for k in diff)
            raise ConfigError(f"{store.path}: holds a different run, so --resume would mix two cohorts ({shown or 'fingerprint differs'}); "
                              "rerun with the same config, overrides, seed, subjects and chunk size, or pass --overwrite to start again")
        return store

    # -- chunks --------------------------------------------------------------------------------
    def write_chunk(self, chunk: int, lo: int, hi: int, ds: xr.Dataset, info: dict) -> None:
        """Write subjects ``lo:hi`` (chunk ``chunk``) into their region, then mark the chunk done."""
        # Only the subject-dimension arrays, without the subject coordinate (the template wrote it).
        part = ds.drop_vars([k for k, var in ds.variables.items() if "subject" not in var.dims or k == "subject"])
        got = np.asarray(ds["subject"].values)
        if got.size != hi - lo or got[0] != lo or got[-1] != hi - 1:
            raise ValueError(f"chunk {chunk}: expected subjects {lo}..{hi - 1}, got {got[0]}..{got[-1]}")
        part.attrs = {}
        with _run_dir_is_known():
            part.to_zarr(self.path, region={"subject": slice(lo, hi)}, mode="r+", zarr_format=2, consolidated=True)
        _write_json_atomic(self.marker(chunk), {
            **info, "chunk": int(chunk), "subjects": [int(lo), int(hi)],
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "host": socket.gethostname(), "pid": os.getpid(),
        })

    def finalise(self, attrs: dict) -> None:
        """Record run-level attrs (totals, timings) and mark the run complete."""
        import zarr

        group = zarr.open_group(str(self.path), mode="r+", zarr_format=2, use_consolidated=False)
        group.attrs.update({**attrs, "complete": 1})
        with _run_dir_is_known():
            zarr.consolidate_metadata(str(self.path), zarr_format=2)
        info = self.run_info() or {}
        info.update(complete=True, completed=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_json_atomic(self.run_file, info)

    def open(self, *, chunks=None) -> xr.Dataset:
        """The results as an ``xarray.Dataset`` (lazy; ``chunks`` as in ``xarray.open_zarr``)."""
        return xr.open_zarr(self.path, consolidated=True, chunks=chunks)


def memory_available() -> int:
    """Bytes of memory available to this process (``MemAvailable``; 2 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def to_netcdf(store: CohortStore, path: str | Path, *, max_bytes: int | None = None, overwrite: bool = False) -> bool:
    """Convert a complete store into one netCDF file (atomically) if it fits in ``max_bytes``.

    The Dataset is loaded whole, so the default budget is half the available memory. Returns
    False, writing nothing, when it does not fit; the zarr store then is the result.
    """
    from il2sim.results import write_netcdf

    ds = store.open()
    budget = memory_available() // 2 if max_bytes is None else int(max_bytes)
    if ds.nbytes > budget:
        return False
    ds = ds.load()
    for name in list(ds.variables):  # zarr gives strings as numpy StringDType; netCDF wants str
        if ds[name].dtype.kind == "T":
            ds[name] = ds[name].astype(object)
    write_netcdf(ds, path, overwrite=overwrite)
    return True
