"""Reproduction report: folder with report.md and PNG figures; CLI ``il2sim report``."""

from __future__ import annotations

from pathlib import Path

import pytest

from il2sim.cli import main
from il2sim.report import target_table, write_report

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "configs" / "mm_low_dose_1995.toml"
DILT = ROOT / "configs" / "validation" / "dilt1d_2016_single_0p1.toml"
PNG = b"\x89PNG\r\n\x1a\n"


def test_trial_report_has_every_figure_and_the_target_table(tmp_path):
    path = write_report(TRIAL, tmp_path / "trial", subjects=4)
    assert path == tmp_path / "trial" / "report.md"
    for name in ("pk.png", "cells.png", "waterfall.png", "swimmer.png"):
        data = (tmp_path / "trial" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
        assert f"]({name})" in path.read_text()
    text = path.read_text()
    assert "# mm_low_dose_1995: reproduction report" in text
    assert "| target | variable, statistic | reported | simulated | median (range) over cohort | band | pass | source |" in text
    for name in ("eos_peak_fold", "nk_expansion", "tumour_reduction", "mean_days_on_therapy"):
        assert f"| {name}" in text
    assert "## Outcomes" in text and "Best response:" in text
    assert text.count("**pass**") + text.count("**FAIL**") == 14
    assert not list(tmp_path.glob(".trial.*"))  # no temporary folder left behind


def test_validation_report_without_tumour_figures_and_replacing_an_old_folder(tmp_path):
    out = tmp_path / "dilt"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    write_report(DILT, out, subjects=2)
    assert sorted(p.name for p in out.iterdir()) == ["cells.png", "pk.png", "report.md"]
    assert "treg_max_increase_7d" in (out / "report.md").read_text()


def test_cli_report_writes_one_folder_per_config(tmp_path, capsys):
    rc = main(["report", str(DILT), str(DILT.with_name("koreth_2011_daily_1miu.toml")), "--out", str(tmp_path), "--subjects", "2"])
    assert rc == 0
    assert (tmp_path / "dilt1d_2016_single_0p1" / "report.md").is_file()
    assert (tmp_path / "koreth_2011_daily_1miu" / "pk.png").is_file()
    assert capsys.readouterr().out.count("wrote") == 2


def test_cli_report_errors_are_one_paragraph(tmp_path, capsys):
    rc = main(["report", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("il2sim report: error: ") and "missing.toml: file not found" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_target_table_marks_report_only_rows():
    from il2sim.scenario import load_scenario
    from il2sim.simulate import simulate
    from il2sim.targets import evaluate_targets

    sc = load_scenario(DILT)
    table = target_table(evaluate_targets(simulate(sc, subjects=2), sc.targets))
    assert "| cmax_0p1 (report only) |" in table
    assert table.splitlines()[1] == "|---|---|---|---|---|---|---|---|"


@pytest.mark.parametrize("bad", ["report"])
def test_report_needs_a_config(bad, capsys):
    with pytest.raises(SystemExit):
        main([bad])
