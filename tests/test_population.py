"""Virtual subjects: one random stream per subject index, truncation, declared IIV."""

from __future__ import annotations

import numpy as np
import pytest

from il2sim.population import sample_cohort, subject_rng
from il2sim.scenario import CovariateSpec, PopulationSpec

NAMES = ("CL", "V", "ka")
BASE = np.array([10.0, 3.0, 0.5])
HEIGHT = CovariateSpec("height", "normal", {"mean": 170.0, "sd": 10.0}, 160.0, 175.0, "cm")
WEIGHT = CovariateSpec("weight", "lognormal", {"median": 70.0, "sd_log": 0.2}, 40.0, 130.0, "kg")
SEX = CovariateSpec("male", "bernoulli", {"p": 0.55})


def spec(n, iiv=None):
    return PopulationSpec(n, (HEIGHT, WEIGHT, SEX), iiv if iiv is not None else {"CL": 0.3, "ka": 0.5})


def test_subject_does_not_depend_on_cohort_size_or_order():
    small = sample_cohort(spec(5), NAMES, BASE, seed=3)
    big = sample_cohort(spec(200), NAMES, BASE, seed=3)
    picked = sample_cohort(spec(3), NAMES, BASE, seed=3, subjects=np.array([150, 4, 0]))
    np.testing.assert_array_equal(small.parameters, big.parameters[:5])
    np.testing.assert_array_equal(picked.parameters, big.parameters[[150, 4, 0]])
    for k in ("height", "weight", "male", "BSA"):
        np.testing.assert_array_equal(small.covariates[k], big.covariates[k][:5])


def test_subject_stream_is_the_spawned_child():
    child = np.random.SeedSequence(9).spawn(8)[7]
    assert subject_rng(9, 7).random() == np.random.default_rng(child).random()


def test_truncation_bounds_hold_and_bsa_is_mosteller():
    c = sample_cohort(spec(2000), NAMES, BASE, seed=1)
    assert c.covariates["height"].min() >= 160.0 and c.covariates["height"].max() <= 175.0
    assert set(np.unique(c.covariates["male"])) == {0.0, 1.0}
    np.testing.assert_allclose(c.covariates["BSA"], np.sqrt(c.covariates["height"] * c.covariates["weight"] / 3600.0))
    assert c.covariate_units["BSA"] == "m2"


def test_iiv_has_the_declared_log_normal_spread():
    n = 20000
    c = sample_cohort(spec(n), NAMES, BASE, seed=5)
    eta = np.log(c.parameters / BASE)
    sd = eta.std(axis=0, ddof=1)
    # sampling SE of an SD is sd / sqrt(2(n-1)): allow 4 SE
    for j, omega in enumerate((0.3, 0.0, 0.5)):
        assert sd[j] == pytest.approx(omega, abs=4 * omega / np.sqrt(2 * (n - 1)) + 1e-15)
        assert abs(eta[:, j].mean()) < 4 * omega / np.sqrt(n) + 1e-15
    assert abs(np.corrcoef(eta[:, 0], eta[:, 2])[0, 1]) < 4 / np.sqrt(n)
    np.testing.assert_array_equal(c.parameters[:, 1], 3.0)  # no IIV declared on V


def test_no_iiv_gives_base_parameters():
    c = sample_cohort(spec(4, iiv={}), NAMES, BASE, seed=0)
    np.testing.assert_array_equal(c.parameters, np.tile(BASE, (4, 1)))
