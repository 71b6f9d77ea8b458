"""Sobol indices: analytic references (linear model, Ishigami) inside their bootstrap intervals,
intervals that shrink with N, a model-based run that ranks the dominant parameter first, config
parsing and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from il2sim.cli import main
from il2sim.errors import ConfigError
from il2sim.scenario import load_scenario
from il2sim.sensitivity import SensitivitySpec, parse_sensitivity, sensitivity, sobol_analyze, sobol_sample

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "onecmt.toml"
ROOT = HERE.parent

A_LIN = np.array([1.0, 2.0, 0.5, 0.0])


def _linear(X):
    return 3.0 + X @ A_LIN


def _ishigami(X, a=7.0, b=0.1):
    return np.sin(X[:, 0]) + a * np.sin(X[:, 1]) ** 2 + b * X[:, 2] ** 4 * np.sin(X[:, 0])


def _ishigami_reference(a=7.0, b=0.1):
    """Closed-form indices (Ishigami & Homma 1990; Sobol' & Levitan 1999)."""
    pi = np.pi
    V1 = 0.5 * (1 + b * pi**4 / 5) ** 2
    V2 = a**2 / 8
    V13 = b**2 * pi**8 * (1 / 18 - 1 / 50)
    V = V1 + V2 + V13
    return np.array([V1, V2, 0.0]) / V, np.array([V1 + V13, V2, V13]) / V


def test_saltelli_sample_shapes_ranges_and_ab_columns():
    A, B, AB = sobol_sample([[0, 1], [10, 20], [1, 100]], 64, seed=2, scales=["linear", "linear", "log"])
    assert A.shape == B.shape == (64, 3) and AB.shape == (3, 64, 3)
    for X in (A, B):
        assert np.all((X[:, 1] >= 10) & (X[:, 1] < 20)) and np.all((X[:, 2] >= 1) & (X[:, 2] < 100))
    for i in range(3):
        np.testing.assert_array_equal(AB[i][:, i], B[:, i])
        np.testing.assert_array_equal(np.delete(AB[i], i, axis=1), np.delete(A, i, axis=1))
    # log scale: log10(x) uniform over [0, 2): one point per 1/64 stratum (Sobol' net)
    u = np.log10(A[:, 2]) / 2
    assert sorted(np.floor(u * 64).astype(int)) == list(range(64))


def test_linear_model_indices_within_their_intervals():
    truth = A_LIN**2 / np.sum(A_LIN**2)  # additive: S1 = ST = a_i² / Σa² for U(0,1) inputs
    t = sobol_analyze(_linear, [[0, 1]] * 4, 1024, seed=5, bootstrap=400)
    for key in ("S1", "ST"):
        assert np.all(t[f"{key}_low"] <= truth + 1e-12) and np.all(truth <= t[f"{key}_high"] + 1e-12), key
        np.testing.assert_allclose(t[key], truth, atol=0.03)
    assert t["ST"].iloc[3] == 0.0  # a parameter that does nothing has no total effect at all


def test_ishigami_indices_within_their_intervals():
    S1, ST = _ishigami_reference()
    t = sobol_analyze(_ishigami, [[-np.pi, np.pi]] * 3, 4096, seed=1, bootstrap=400)
    assert np.all(t["S1_low"] <= S1) and np.all(S1 <= t["S1_high"])
    assert np.all(t["ST_low"] <= ST) and np.all(ST <= t["ST_high"])
    np.testing.assert_allclose(t["ST"], ST, atol=0.03)


def test_intervals_shrink_with_n():
    widths = []
    for N in (128, 512, 2048):
        t = sobol_analyze(_ishigami, [[-np.pi, np.pi]] * 3, N, seed=3, bootstrap=300)
        widths.append(np.r_[t["S1_high"] - t["S1_low"], t["ST_high"] - t["ST_low"]])
    assert np.all(widths[1] < widths[0]) and np.all(widths[2] < widths[1])
    # Monte Carlo rate: ×16 samples roughly quarters the width
    assert np.median(widths[2] / widths[0]) < 0.4


def test_model_based_sobol_ranks_the_dominant_parameter_first():
    spec = {"parameters": {"ka": [0.2, 0.4], "ke": {"range": [0.02, 0.2], "scale": "log"}, "F": [0.3, 0.33]},
            "endpoints": ["auc(C)", "cmax"], "N": 16, "bootstrap": 200, "seed": 2}
    table, ds = sensitivity(CONFIG, spec=spec)
    assert list(table.columns) == ["endpoint", "parameter", "S1", "S1_low", "S1_high", "ST", "ST_low", "ST_high", "rank"]
    for endpoint in ("auc(C)", "cmax"):
        rows = table[table.endpoint == endpoint].set_index("parameter")
        assert rows["rank"].idxmin() == "ke"
        assert rows.loc["ke", "ST_low"] > rows.loc["ka", "ST_high"]
        assert rows.loc["ke", "ST"] > 0.8
    assert ds["S1"].dims == ("endpoint", "parameter") and ds.sizes["run"] == 16 * (3 + 2)
    # runs A and B: the sampled values are the factor values given to the model
    np.testing.assert_array_equal(ds["X"].sel(parameter="ke").values[:16] > 0, True)


def test_sensitivity_table_in_a_config_and_its_errors(tmp_path):
    text = CONFIG.read_text().replace("../models/onecmt_oral.toml", str((HERE / "models" / "onecmt_oral.toml").resolve()))
    good = text + '\n[sensitivity]\nendpoints = ["peak(C)"]\nN = 8\nbootstrap = 50\n[sensitivity.parameters]\nka = [0.2, 0.4]\nke = [0.05, 0.1]\n'
    path = tmp_path / "s.toml"
    path.write_text(good)
    sc = load_scenario(path)
    assert isinstance(sc.sensitivity, SensitivitySpec) and sc.sensitivity.N == 8
    table, _ = sensitivity(path)
    assert set(table.parameter) == {"ka", "ke"}
    out = tmp_path / "sobol.csv"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    assert out.read_text().startswith("endpoint,parameter,S1,S1_low,S1_high,ST,ST_low,ST_high,rank")
    bad = text + '\n[sensitivity]\nendpoints = ["peak(C)"]\n[sensitivity.parameters]\nkee = [0.2, 0.4]\nke = [0.05, 0.1]\n'
    path.write_text(bad)
    with pytest.raises(ConfigError, match="unknown model parameter.*kee"):
        sensitivity(path)


@pytest.mark.parametrize("table, message", [
    ({"parameters": {"ka": [0.1, 1]}, "endpoints": ["peak(C)"]}, "need at least two parameters"),
    ({"parameters": {"ka": [1, 0.1], "ke": [0.1, 0.2]}, "endpoints": ["peak(C)"]}, r"sensitivity.parameters.ka: expected \[low, high\]"),
    ({"parameters": {"ka": {"range": [0, 1], "scale": "log"}, "ke": [0.1, 0.2]}, "endpoints": ["peak(C)"]}, "a log scale needs low > 0"),
    ({"parameters": {"ka": [0.1, 1], "ke": [0.1, 0.2]}, "endpoints": ["top(C)"]}, "endpoint 'top\\(C\\)': expected one of eos_peak_fold"),
    ({"parameters": {"ka": [0.1, 1], "ke": [0.1, 0.2]}}, "sensitivity.endpoints: expected a list"),
    ({"parameters": {"ka": [0.1, 1], "ke": [0.1, 0.2]}, "endpoints": ["peak(C)"], "N": 1}, "sensitivity.N: expected an integer >= 2"),
    ({"parameters": {"ka": [0.1, 1], "ke": [0.1, 0.2]}, "endpoints": ["peak(C)"], "sample": 3}, "sensitivity.sample: unknown key"),
])
def test_bad_sensitivity_tables_are_reported(table, message):
    spec, problems = parse_sensitivity(table, "x.toml")
    assert spec is None
    assert any(__import__("re").search(message, p) for p in problems), problems


def test_shipped_sobol_config_validates():
    sc = load_scenario(ROOT / "configs" / "sobol_eos_nk.toml")
    assert set(sc.sensitivity.endpoints) >= {"eos_peak_fold", "nk_peak_fold"}
    assert len(sc.sensitivity.parameters) >= 5
