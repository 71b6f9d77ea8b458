"""The command line end to end: run, validate, models; bad input gives one paragraph and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from il2sim.cli import main

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"


def test_run_writes_results_and_figures(tmp_path, capsys):
    out = tmp_path / "res" / "one.nc"
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "3", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "il2sim onecmt: 3 subjects, 337 time points (0–14 d), method rodas5p, rtol 1e-08" in text
    assert "status: 3 ok" in text
    assert f"wrote {out}" in text
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.sizes == {"subject": 3, "time": 337}
    assert ds.attrs["seed"] == 5
    ds.close()
    png = out.with_name("one_trajectories.png")
    assert png.exists() and png.with_suffix(".svg").exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_refuses_to_clobber_without_overwrite(tmp_path, capsys):
    out = tmp_path / "one.nc"
    out.write_text("keep me")
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "1"]) == 2
    err = capsys.readouterr().err
    assert f"il2sim run: error: {out}: exists; pass --overwrite to replace it, or choose another --out" in err
    assert out.read_text() == "keep me"
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "1", "--overwrite", "--no-figures"]) == 0
    assert xr.open_dataset(out, engine="h5netcdf").sizes["subject"] == 1


def test_set_overrides_config_fields(tmp_path, capsys):
    out = tmp_path / "a.nc"
    # an override goes through the same validation as the file
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "2", "--no-figures",
                 "--set", "regimen.block[1].amount=0"]) == 2
    assert "regimen.block[1].amount" in capsys.readouterr().err
    assert not out.exists()
    assert main(["run", str(CONFIG), "--out", str(out), "--subjects", "2", "--no-figures",
                 "--set", "solver.method=tsit5", "--set", "regimen.block[1].amount=0.25"]) == 0
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.attrs["solver_method"] == "tsit5"
    ds.close()


def test_bad_config_is_one_paragraph_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.read_text().replace('"../models/onecmt_oral.toml"', f'"{HERE / "models" / "onecmt_oral.toml"}"').replace("rtol = 1e-8", "rtol = -1"))
    res = subprocess.run([sys.executable, "-m", "il2sim.cli", "run", str(bad), "--out", str(tmp_path / "x.nc")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "solver.rtol: expected a number >= 1e-14, got -1" in res.stderr
    assert not (tmp_path / "x.nc").exists()
    res = subprocess.run([sys.executable, "-m", "il2sim.cli", "--debug", "run", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_bad_set_syntax(capsys):
    assert main(["run", str(CONFIG), "--set", "solver.rtol"]) == 2
    assert "--set 'solver.rtol': expected KEY=VALUE, e.g. --set solver.rtol=1e-8" in capsys.readouterr().err


def test_validate_and_models(capsys):
    assert main(["validate", str(CONFIG)]) == 0
    assert "ok — 2 states, 5 parameters, 1 outputs" in capsys.readouterr().out
    assert main(["models", "il2_pk_sc", "--parameters"]) == 0
    out = capsys.readouterr().out
    assert "il2_pk_sc" in out and "state  Asc" in out and "output C " in out
    assert "param  CL_lin" in out and "[L/h]" in out and "source:" in out
    assert main(["models", "nope"]) == 2
    assert "unknown model(s) nope; available: " in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "il2sim run configs/mm_low_dose_1995.toml --subjects 1000" in capsys.readouterr().out


def test_set_values_that_are_not_literals_stay_text():
    # --set goes through ast.literal_eval; nothing it can raise (or warn) may escape as a
    # traceback: the text is kept and the config validator names the field and the type.
    import warnings

    from il2sim.cli import _parse_set

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _parse_set(["a={[1]: 2}", "b=" + "[" * 100_000, r'c="\d"', "d=1e-8", "e=true", "f=" + "9" * 5000])
    assert [str(w.message) for w in caught] == []
    assert got == {"a": "{[1]: 2}", "b": "[" * 100_000, "c": "\\d", "d": 1e-8, "e": True, "f": "9" * 5000}


def test_set_with_a_non_literal_is_a_clear_error(capsys):
    assert main(["validate", str(CONFIG), "--set", "solver.rtol={[1]: 2}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "solver.rtol: expected a number" in err
