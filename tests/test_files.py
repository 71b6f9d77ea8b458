"""Outputs on disk (issue 6): written under a temporary name and renamed, never clobbered
without --overwrite, and a ``kill -9`` at any moment leaves the old file, the new complete file
or a store that resumes to the same result as an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from il2sim._files import refuse_existing, replacing
from il2sim.cli import main
from il2sim.errors import ConfigError

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"
CHEAP = ["--set", "solver.rtol=1e-6", "--set", "solver.atol=1e-8", "--set", "output.dt_h=6"]
PNG_END = b"IEND\xaeB`\x82"


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# --- the helper ------------------------------------------------------------------------------


def test_replacing_renames_only_a_complete_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer died"):
        with replacing(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.csv.") and tmp.name.endswith(".tmp")
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.csv"]
    with replacing(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing under the output's name until the block ends
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.csv"]


def test_refuse_existing_names_the_file_and_the_flag(tmp_path):
    (tmp_path / "b.svg").write_text("x")
    refuse_existing([tmp_path / "a.png"], overwrite=False)
    refuse_existing([tmp_path / "b.svg"], overwrite=True)
    with pytest.raises(ConfigError, match=r"b\.svg: exists; pass --overwrite to replace it, or choose another --out$"):
        refuse_existing([tmp_path / "a.png", tmp_path / "b.svg"], overwrite=False)


# --- no clobbering without --overwrite ---------------------------------------------------------


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "one.nc"
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "2", "--no-figures", "--quiet", *CHEAP]) == 0
    return out


def test_run_refuses_existing_figures_before_solving(tmp_path, capsys):
    out = tmp_path / "r.nc"
    fig = tmp_path / "r_trajectories.svg"
    fig.write_text("mine")
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "1", *CHEAP]) == 2
    err = capsys.readouterr().err
    assert f"{fig}: exists; pass --overwrite to replace it, --no-figures, or choose another --out" in err
    assert fig.read_text() == "mine" and not out.exists()
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "1", "--no-figures", *CHEAP]) == 0
    assert fig.read_text() == "mine"
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "1", "--overwrite", *CHEAP]) == 0
    assert fig.read_text().rstrip().endswith("</svg>")
    assert visible(tmp_path) == ["r.nc", "r_trajectories.png", "r_trajectories.svg"]


def test_plot_refuses_existing_figures_without_overwrite(run_file, tmp_path, capsys):
    out = tmp_path / "f.png"
    out.write_bytes(b"not mine to replace")
    assert main(["plot", str(run_file), "--var", "C", "--out", str(out)]) == 2
    assert f"{out}: exists; pass --overwrite to replace it, or choose another --out" in capsys.readouterr().err
    assert out.read_bytes() == b"not mine to replace" and not out.with_suffix(".svg").exists()
    assert main(["plot", str(run_file), "--var", "C", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes().endswith(PNG_END)
    assert sorted(os.listdir(tmp_path)) == visible(tmp_path) == ["f.png", "f.svg"]  # no temporaries
    assert main(["plot", str(tmp_path / "missing.nc"), "--out", str(out)]) == 2  # the input is checked first
    assert "missing.nc: file not found" in capsys.readouterr().err


def test_report_refuses_an_existing_folder_without_overwrite(tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    assert main(["report", str(CONFIG), "--out", str(out), "--subjects", "1"]) == 2
    assert f"{out}: exists; pass --overwrite to replace the report folder, or choose another --out" in capsys.readouterr().err
    assert visible(out) == ["notes.md"]


def test_sweep_store_is_replaced_only_whole(tmp_path):
    from il2sim.scenario import load_scenario
    from il2sim.sweep import sweep

    text = CONFIG.read_text().replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"')
    text += '\n[sweep]\ndesign = "grid"\n[[sweep.factor]]\npath = "regimen.block[0].amount"\nvalues = [1.0, 2.0]\n'
    cfg = tmp_path / "s.toml"
    cfg.write_text(text)
    out = tmp_path / "s.zarr"
    first = sweep(cfg, subjects=1, out=out)
    first.close()
    with pytest.raises(ConfigError, match=r"s\.zarr: exists; pass overwrite=True \(--overwrite\) to replace it"):
        sweep(cfg, subjects=1, out=out)
    again = sweep(cfg, subjects=2, out=out, overwrite=True)
    assert again.sizes["subject"] == 2
    again.close()
    assert sorted(os.listdir(tmp_path)) == ["s.toml", "s.zarr"]  # no .partial, no .old left
    assert load_scenario  # (imported for the config's validation path)


# --- kill -9 ------------------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "il2sim.cli", *args]


def _same_results(path: Path, ref: xr.Dataset) -> bool:
    with xr.open_dataset(path, engine="h5netcdf") as got:
        got = got.load()
    for name in ("C", "Ad", "Ac", "ka", "BSA", "t_reached"):
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)
    assert list(got.status.values) == list(ref.status.values)
    return True


@pytest.mark.parametrize("subjects, chunk", [(3, 3), (12, 3)], ids=["one-file", "store-then-file"])
def test_kill_9_leaves_old_file_new_file_or_a_resumable_store(tmp_path, subjects, chunk):
    """Kill ``il2sim run --overwrite`` at many moments of its life; every time the target is
    the old file or the new complete one, the figures are whole or absent, and a store left
    behind resumes to exactly the uninterrupted result."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    common = ["--subjects", str(subjects), "--chunk-size", str(chunk), *CHEAP]
    ref_path = tmp_path / "ref" / "r.nc"
    start = time.monotonic()
    subprocess.run(_cli("run", str(CONFIG), "--out", str(ref_path), "--seed", "5", "--quiet", *common),
                   env=env, check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - start
    with xr.open_dataset(ref_path, engine="h5netcdf") as ds:
        ref = ds.load()
    old_path = tmp_path / "old.nc"
    assert main(["run", str(CONFIG), "--out", str(old_path), "--seed", "4", "--no-figures", "--quiet", *common]) == 0
    old = old_path.read_bytes()

    # Kill moments: fractions of the run's duration (mostly start-up and solve), and the first
    # sight of each writer at work (a temporary netCDF or figure, the store, chunk markers).
    def seen(pattern):
        return lambda folder: any(folder.glob(pattern))

    moments = [0.3, 0.9, seen(".r.nc.*.tmp"), seen(".r_trajectories.png.*.tmp"), seen(".r_trajectories.svg.*.tmp")]
    if subjects > chunk:
        moments += [seen("r.nc.zarr"), seen("r.nc.zarr/.il2sim/done/00000001.json")]
    outcomes = []
    for k, moment in enumerate(moments):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        target = folder / "r.nc"
        target.write_bytes(old)
        proc = subprocess.Popen(_cli("run", str(CONFIG), "--out", str(target), "--seed", "5", "--overwrite", "--quiet", *common),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if callable(moment):
            deadline = time.monotonic() + 300
            while proc.poll() is None and not moment(folder) and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            time.sleep(moment * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        data = target.read_bytes()
        if data == old:
            outcome = "old"
        else:
            assert _same_results(target, ref)
            outcome = "new"
        for fig in folder.glob("r_*.png"):
            assert fig.read_bytes().endswith(PNG_END), fig  # a figure is whole or absent
        for fig in folder.glob("r_*.svg"):
            assert fig.read_text().rstrip().endswith("</svg>"), fig
        store = folder / "r.nc.zarr"
        if store.exists():  # the chunked path: finish the run where it stopped
            res = subprocess.run(_cli("run", str(CONFIG), "--out", str(target), "--seed", "5", "--resume", "--quiet",
                                      "--no-figures", *common), env=env, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr
            assert _same_results(target, ref) and not store.exists()
            outcome += "+resumed"
        assert all(p.name.startswith(".") or p.name.startswith("r") for p in folder.iterdir())
        outcomes.append(outcome)
    print("kill -9 outcomes:", outcomes)
    assert set(outcomes) <= {"old", "new", "old+resumed", "new+resumed"}, outcomes
    shutil.rmtree(tmp_path / "ref")


# --- code-generation cache ------------------------------------------------------------------
# The generated .py file (truncated, edited, empty, binary, another key; a changed model gets a
# new key) is covered in test_codegen.py::test_corrupted_cache_file_is_regenerated and
# ::test_same_model_reuses_the_file_and_a_changed_model_gets_a_new_key. Here: numba's cache.


def _fake_cache(folder: Path, stem: str, function: str, index: bytes, code: bytes) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.{function}.py311.nbi", folder / f"{stem}.{function}.py311.1.nbc"]
    paths[0].write_bytes(index)
    paths[1].write_bytes(code)
    return paths


def test_damaged_numba_cache_files_are_dropped_per_function(tmp_path):
    import pickle

    from il2sim._numba_cache import _count_pickles, drop_broken_numba_cache

    index = pickle.dumps("0.68.1") + pickle.dumps(((1.0, 2), {"sig": "1"}))
    code = pickle.dumps((b"\x7fELF" + bytes(500), "name"))
    assert (_count_pickles(index), _count_pickles(code), _count_pickles(code[:-40]), _count_pickles(b"garbage\n")) == (2, 1, None, None)
    module = tmp_path / "models" / "il2sim_model_abc.py"
    module.parent.mkdir()
    module.write_text("# generated")
    cache = module.parent / "__pycache__"
    good = _fake_cache(cache, module.stem, "rhs-10", index, code)
    truncated = _fake_cache(cache, module.stem, "jac-20", index, code[: len(code) // 2])
    garbled = _fake_cache(cache, module.stem, "solve-30", b"garbage\n", code)
    other = _fake_cache(cache, "il2sim_model_other", "rhs-10", b"", b"")  # another module's: not ours to judge
    assert drop_broken_numba_cache(module) == [truncated[1], garbled[0]]
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in good + other)
    truncated[1].write_bytes(b"")
    assert drop_broken_numba_cache(module) == []  # checked once per process ...
    assert drop_broken_numba_cache(module, force=True) == [truncated[1]]  # ... unless asked


CACHE_CHILD = """
import sys
import il2sim
ds = il2sim.simulate(sys.argv[1], subjects=2)
print(repr(ds.C.values.tolist()), ds.attrs["codegen_cold"])
"""


def test_a_damaged_numba_cache_is_rebuilt_not_a_traceback(tmp_path):
    """Truncate one kernel's cached code and garble another's index: the next process rebuilds
    them and gives the same numbers (before: UnpicklingError / ValueError from inside numba)."""
    from il2sim._codegen import compile_model, default_cache_dir
    from il2sim._numba_cache import _count_pickles
    from il2sim.scenario import load_scenario

    import il2sim

    sc = load_scenario(CONFIG)
    il2sim.simulate(sc, subjects=1)  # the session's cache is warm for this model
    src = compile_model(sc.model, cache_dir=default_cache_dir()).path
    dst = tmp_path / "cache" / "models"
    (dst / "__pycache__").mkdir(parents=True)
    shutil.copy2(src, dst / src.name)
    for p in (src.parent / "__pycache__").glob(f"{src.stem}.*"):
        shutil.copy2(p, dst / "__pycache__" / p.name)  # numba checks the source's mtime and size: keep them
    env = {**os.environ, "IL2SIM_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("NUMBA_CACHE_DIR", None)

    def child():
        res = subprocess.run([sys.executable, "-c", CACHE_CHILD, str(CONFIG)], env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.split("\n")[-2]

    before = child()
    assert before.endswith(" 0")  # the generated file was reused
    cache = dst / "__pycache__"
    code = sorted(cache.glob(f"{src.stem}.eval_initial-*.nbc"))
    index = sorted(cache.glob(f"{src.stem}.dose_modifiers-*.nbi"))
    assert code and index
    code[0].write_bytes(code[0].read_bytes()[:100])
    index[0].write_bytes(b"garbage\n")
    assert child() == before
    rebuilt = sorted(cache.glob(f"{src.stem}.eval_initial-*.nbc")) + sorted(cache.glob(f"{src.stem}.dose_modifiers-*.nbi"))
    assert [_count_pickles(p.read_bytes()) for p in rebuilt] == [1] * (len(rebuilt) - 1) + [2]
