"""The zarr store of a cohort run: layout readable by plain xarray, atomic creation, chunk
markers written only after the data, and a fingerprint that tells runs apart."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import il2sim
from il2sim import store as store_mod
from il2sim.errors import ConfigError
from il2sim.scenario import load_scenario
from il2sim.store import CohortStore, fingerprint, run_fields

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"
OVERRIDES = {"solver.rtol": 1e-6, "solver.atol": 1e-8, "output.dt_h": 24}


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(CONFIG, overrides=OVERRIDES)


def fields_of(sc, **kw):
    args = dict(subjects=10, seed=sc.seed, chunk_size=4, t_out=sc.output.times(), variables=None, keep_every_h=None)
    args.update(kw)
    return run_fields(sc, **args)


def test_fingerprint_tells_runs_apart(scenario):
    base = fingerprint(fields_of(scenario))
    assert fingerprint(fields_of(scenario)) == base
    for kw in ({"subjects": 11}, {"seed": 1}, {"chunk_size": 5}, {"variables": ("C",)}, {"keep_every_h": 48.0},
               {"t_out": np.arange(0, 100.0)}):
        assert fingerprint(fields_of(scenario, **kw)) != base, kw
    for key, value in (("solver.rtol", 1e-7), ("population.iiv.ka", 0.31), ("regimen.block[0].amount", 2.5)):
        other = load_scenario(CONFIG, overrides={**OVERRIDES, key: value})
        assert fingerprint(fields_of(other)) != base, key
    # the same settings written differently are the same run; the cohort size is the run's own
    same = load_scenario(CONFIG, overrides={**OVERRIDES, "output.dt_h": 24.0, "population.subjects": 500})
    assert fingerprint(fields_of(same)) == base


def test_fingerprint_is_the_same_in_another_process(scenario):
    code = ("from il2sim.scenario import load_scenario; from il2sim.store import fingerprint, run_fields;"
            f"sc = load_scenario({str(CONFIG)!r}, overrides={OVERRIDES!r});"
            "print(fingerprint(run_fields(sc, subjects=10, seed=sc.seed, chunk_size=4, t_out=sc.output.times(), variables=None, keep_every_h=None)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert out == fingerprint(fields_of(scenario))


def make(tmp_path, scenario, n=10, cs=4, name="s.zarr"):
    template = il2sim.simulate(scenario, subject_ids=np.array([0]))
    return CohortStore.create(tmp_path / name, template, subjects=n, chunk_size=cs, fields=fields_of(scenario, subjects=n, chunk_size=cs),
                              info={"overrides": {"x": "1"}})


def test_layout_is_plain_xarray_zarr(tmp_path, scenario):
    st = make(tmp_path, scenario)
    for c, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 10))):
        st.write_chunk(c, lo, hi, il2sim.simulate(scenario, subject_ids=np.arange(lo, hi)), {"status": {"ok": hi - lo}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(st.path).load()  # no il2sim code needed to read it, and no warnings
    assert ds.sizes == {"subject": 10, "time": 15}
    assert ds.C.encoding["chunks"] == (4, 15) and ds.ka.encoding["chunks"] == (4,)
    np.testing.assert_array_equal(ds.subject.values, np.arange(10))
    ref = il2sim.simulate(scenario, subjects=10)
    np.testing.assert_array_equal(ds.C.values, ref.C.values)
    assert ds.C.attrs["units"] == "pM" and ds.time.attrs["units"] == "h"
    assert ds.attrs["fingerprint"] == fingerprint(fields_of(scenario)) and ds.attrs["chunk_size"] == 4
    assert "solve_seconds" not in ds.attrs  # per-chunk attrs are not the run's
    run = json.loads(st.run_file.read_text())
    assert run["n_chunks"] == 3 and run["info"] == {"overrides": {"x": "1"}} and run["complete"] is False
    assert sorted(st.done()) == [0, 1, 2] and st.done()[2]["subjects"] == [8, 10]


def test_marker_is_written_after_the_data(tmp_path, scenario, monkeypatch):
    st = make(tmp_path, scenario)
    seen = []
    real = store_mod._write_json_atomic

    def spy(path, data):
        seen.append(xr.open_zarr(st.path, chunks=None).C.isel(subject=slice(4, 8)).values.copy())
        real(path, data)

    monkeypatch.setattr(store_mod, "_write_json_atomic", spy)
    ds = il2sim.simulate(scenario, subject_ids=np.arange(4, 8))
    st.write_chunk(1, 4, 8, ds, {})
    np.testing.assert_array_equal(seen[0], ds.C.values)
    with pytest.raises(ValueError, match="chunk 2: expected subjects 8..9, got 4..7"):
        st.write_chunk(2, 8, 10, ds, {})
    assert sorted(st.done()) == [1]


def test_creation_is_atomic(tmp_path, scenario, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_write_json_atomic", boom)
    with pytest.raises(OSError, match="disk full"):
        make(tmp_path, scenario)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary folder
    monkeypatch.undo()
    make(tmp_path, scenario)
    with pytest.raises(ConfigError, match=r"s.zarr: exists; pass --resume to continue the run it holds, --overwrite to replace it"):
        make(tmp_path, scenario)


def test_an_unreadable_marker_means_the_chunk_is_redone(tmp_path, scenario):
    st = make(tmp_path, scenario)
    st.done_dir.joinpath("00000001.json").write_text("{trunc")
    st.done_dir.joinpath(".00000002.json.x.tmp").write_text("{}")
    assert st.done() == {}
