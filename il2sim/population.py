"""Virtual subjects: covariates and log-normal inter-individual variability.

Randomness is keyed by subject index: subject ``i`` draws from
``SeedSequence(seed, spawn_key=(i,))`` (the ``i``-th child of ``SeedSequence(seed).spawn``),
always in the same order (covariates as declared, then one standard normal per IIV
parameter, in declared order). A subject is therefore the same patient whatever the cohort
size, the chunking or the number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from il2sim.scenario import CovariateSpec, PopulationSpec
from il2sim.units import bsa_dubois, bsa_mosteller

__all__ = ["Cohort", "subject_rng", "sample_cohort"]


@dataclass(frozen=True)
class Cohort:
    """Per-subject covariates (name -> array) and parameter matrix (subject × parameter)."""

    subject: np.ndarray
    covariates: dict[str, np.ndarray]
    covariate_units: dict[str, str]
    parameters: np.ndarray


def subject_rng(seed: int, subject: int) -> np.random.Generator:
    """The random stream of one subject, independent of every other subject."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(subject),)))


def _draw(spec: CovariateSpec, u: float) -> float:
    """Inverse-CDF draw from the truncated distribution, so one uniform gives one value."""
    p = spec.params
    lo, hi = spec.lower, spec.upper
    if spec.dist == "fixed":
        return p["value"]
    if spec.dist == "bernoulli":
        return 1.0 if u < p["p"] else 0.0
    if spec.dist == "uniform":
        a, b = max(p["low"], lo), min(p["high"], hi)
        return a + u * (b - a)
    if spec.dist == "normal":
        mu, sd = p["mean"], p["sd"]
        to_x = lambda z: mu + sd * z  # noqa: E731
        to_z = lambda x: (x - mu) / sd if sd > 0 else 0.0  # noqa: E731
    else:  # lognormal
        mu, sd = np.log(p["median"]), p["sd_log"]
        to_x = lambda z: float(np.exp(mu + sd * z))  # noqa: E731
        to_z = lambda x: ((np.log(x) - mu) / sd if sd > 0 else 0.0) if x > 0 else -np.inf  # noqa: E731
    if sd == 0:
        return float(min(max(to_x(0.0), lo), hi))
    c_lo = special.ndtr(to_z(lo)) if np.isfinite(lo) else 0.0
    c_hi = special.ndtr(to_z(hi)) if np.isfinite(hi) else 1.0
    return float(to_x(special.ndtri(c_lo + u * (c_hi - c_lo))))


def sample_cohort(
    spec: PopulationSpec,
    parameter_names: list[str] | tuple[str, ...],
    base_parameters: np.ndarray,
    seed: int,
    subjects: np.ndarray | None = None,
) -> Cohort:
    """Draw covariates and parameters for the given subject indices (default 0..n-1)."""
    subjects = np.arange(spec.subjects) if subjects is None else np.asarray(subjects, dtype=np.int64)
    n = subjects.size
    names = list(parameter_names)
    iiv_idx = [names.index(k) for k in spec.iiv]
    omegas = np.array([spec.iiv[k] for k in spec.iiv])
    cov = {c.name: np.empty(n) for c in spec.covariates}
    eta = np.zeros((n, len(iiv_idx)))
    for row, sid in enumerate(subjects):
        rng = subject_rng(seed, sid)
        u = rng.random(len(spec.covariates))
        for k, c in enumerate(spec.covariates):
            cov[c.name][row] = _draw(c, u[k])
        if iiv_idx:
            eta[row] = rng.standard_normal(len(iiv_idx))
    P = np.tile(np.asarray(base_parameters, dtype=float), (n, 1))
    if iiv_idx:
        P[:, iiv_idx] *= np.exp(eta * omegas)
    units = {c.name: c.unit for c in spec.covariates}
    if "height" in cov and "weight" in cov:
        f = bsa_dubois if spec.bsa_formula == "dubois" else bsa_mosteller
        cov["BSA"] = f(cov["height"], cov["weight"])
        units["BSA"] = "m2"
    return Cohort(subjects, cov, units, P)
