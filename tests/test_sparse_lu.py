"""Generated sparse linear algebra of the stiff solver: ``jac_nz`` against the dense ``jac``,
the straight-line LU of ``W = c*I - J`` against ``numpy.linalg.solve``, the pivoted dense
fallback on a matrix that needs pivoting, and whole solves against the dense-LU build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import il2sim
import solver_harness as H
from il2sim._codegen import compile_model
from il2sim._generate import (
    _entry_position,
    _Generator,
    _markowitz_order,
    _symbolic_lu,
    generate_source,
)
from il2sim._solvers import build
from il2sim._solvers.tableaus import RODAS5P_GAMMA
from il2sim.model import available_models, load_model

REPO_MODELS = Path(il2sim.__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sparse_lu")


@pytest.fixture(scope="module")
def library(cache):
    names = sorted(available_models([REPO_MODELS]))
    return compile_model(load_model(names, search_path=[REPO_MODELS]), cache_dir=cache)


@pytest.fixture(scope="module")
def bench_dense(cache, bench):
    """The bench model generated with ``sparse_lu=False``: dense pivoted LU every step."""
    path = cache / "dense" / "il2_pkpd12_dense.py"
    build.write_module(path, generate_source(bench.model, sparse_lu=False))
    return build.import_module(path)


def _states(m, p, rng, count):
    """Random states near the drug-free steady state, with some drug on board."""
    y = np.empty(m.N_STATES)
    m.initial(p, y)
    return [y * rng.uniform(0.8, 1.25, y.size) + rng.uniform(0.0, 5.0, y.size) for _ in range(count)]


def _dense(m, Jv):
    J = np.zeros((m.N_STATES, m.N_STATES))
    J[list(m.JAC_ROWS), list(m.JAC_COLS)] = Jv
    return J


def _solve_w(m, J, Jv, c, b):
    x = b.copy()
    stats = np.zeros(7, dtype=np.int64)
    mode = m.solve_w(J, Jv, c, x, stats)
    return mode, x, stats


@pytest.mark.parametrize("which", ["bench", "library"])
def test_jac_nz_is_the_dense_jacobian(request, which):
    c = request.getfixturevalue(which)
    m, p = c.module, c.model.default_parameters()
    assert m.HAS_SPARSE_LU and m.JAC_NNZ == len(m.JAC_ROWS) == len(m.JAC_COLS)
    assert len(set(zip(m.JAC_ROWS, m.JAC_COLS))) == m.JAC_NNZ
    for y in _states(m, p, np.random.default_rng(1), 3):
        J = np.full((m.N_STATES, m.N_STATES), np.nan)
        m.jac(24.0, y, p, J)
        Jv = np.full(m.JAC_NNZ, np.nan)
        m.jac_nz(24.0, y, p, Jv)
        np.testing.assert_array_equal(_dense(m, Jv), J)


@pytest.mark.parametrize("which", ["bench", "library"])
def test_sparse_lu_solves_w_like_numpy(request, which):
    """Model Jacobians at random states and random ones on the same pattern, step sizes from
    1e-4 h to 1e3 h: the straight-line LU is taken and agrees with numpy to round-off."""
    c = request.getfixturevalue(which)
    m, p = c.module, c.model.default_parameters()
    n = m.N_STATES
    rng = np.random.default_rng(2)
    jacobians = []
    for y in _states(m, p, rng, 4):
        Jv = np.empty(m.JAC_NNZ)
        m.jac_nz(24.0, y, p, Jv)
        jacobians.append(Jv)
    jacobians += [rng.uniform(-1.0, 1.0, m.JAC_NNZ) for _ in range(4)]
    modes = []
    for Jv in jacobians:
        J = _dense(m, Jv)
        for h in [1e-4, 1e-2, 1.0, 1e2, 1e3]:
            cw = 1.0 / (h * RODAS5P_GAMMA)
            W = cw * np.eye(n) - J
            if np.linalg.cond(W) > 1e8:
                continue
            b = rng.standard_normal(n)
            mode, x, stats = _solve_w(m, J, Jv, cw, b)
            ref = np.linalg.solve(W, b)
            assert mode in (0, 1)
            assert stats[6] == mode and stats[5] == 1
            np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
            modes.append(mode)
    assert modes.count(0) >= 0.75 * len(modes)
    # the model's own Jacobians do not need the fallback at step sizes up to 10 h
    for Jv in jacobians[:4]:
        for h in [1e-4, 1e-2, 1.0, 10.0]:
            assert _solve_w(m, _dense(m, Jv), Jv, 1.0 / (h * RODAS5P_GAMMA), np.ones(n))[0] == 0


def _pivot_at(m, W, q):
    """Value of the q-th pivot of the unpivoted LU of W in the order LU_ORDER."""
    order = list(m.LU_ORDER)
    A = W[np.ix_(order, order)]
    S = A[q:, q:] - A[q:, :q] @ np.linalg.solve(A[:q, :q], A[:q, q:]) if q else A
    return S[0, 0]


@pytest.mark.parametrize("which", ["bench", "library"])
def test_unsafe_pivot_falls_back_to_dense_pivoting(request, which):
    """A pivot made tiny next to the entries below it: the sparse factorisation refuses it,
    the dense pivoted LU solves the system, and the fallback is counted."""
    c = request.getfixturevalue(which)
    m = c.module
    n = m.N_STATES
    rng = np.random.default_rng(3)
    order = list(m.LU_ORDER)
    rows, cols = np.array(m.JAC_ROWS), np.array(m.JAC_COLS)
    # a pivot with entries below it in its column (in pivot order) and to its right in its row
    pos = {k: q for q, k in enumerate(order)}
    q = next(q for q, k in enumerate(order)
             if any(pos[i] > q for i in rows[(cols == k) & (rows != k)])
             and any(pos[j] > q for j in cols[(rows == k) & (cols != k)]))
    k = order[q]
    Jv = rng.uniform(0.5, 1.0, m.JAC_NNZ) * rng.choice([-1.0, 1.0], m.JAC_NNZ)
    diag = [i for i in range(m.JAC_NNZ) if rows[i] == cols[i] == k]
    assert diag, "the chosen pivot has a Jacobian entry on the diagonal"
    cw = 2.0
    J = _dense(m, Jv)
    # shift J[k, k] so that the q-th pivot becomes 1e-6 (the column below holds ~1)
    Jv[diag[0]] += _pivot_at(m, cw * np.eye(n) - J, q) - 1e-6
    J = _dense(m, Jv)
    W = cw * np.eye(n) - J
    assert abs(_pivot_at(m, W, q)) < 1e-5 and np.linalg.cond(W) < 1e9
    b = rng.standard_normal(n)
    mode, x, stats = _solve_w(m, J, Jv, cw, b)
    assert mode == 1 and stats[6] == 1
    ref = np.linalg.solve(W, b)
    np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    # NaN in the Jacobian: the sparse factorisation refuses it, no exception
    Jv[diag[0]] = np.nan
    assert _solve_w(m, _dense(m, Jv), Jv, cw, b)[0] in (1, 2)


def test_fill_reducing_order_beats_natural_on_the_library():
    names = sorted(available_models([REPO_MODELS]))
    model = load_model(names, search_path=[REPO_MODELS])
    targets, _ = _Generator(model).jacobian()
    pattern = {_entry_position(t) for t in targets}
    n = len(model.state_names)
    order = _markowitz_order(n, pattern)
    assert sorted(order) == list(range(n))
    assert _symbolic_lu(n, pattern, order)[1] < _symbolic_lu(n, pattern, list(range(n)))[1]


def test_dense_build_has_no_sparse_lu(bench, bench_dense):
    assert bench_dense.HAS_SPARSE_LU is False and bench.module.HAS_SPARSE_LU is True
    assert "def lu_factor_nz(" not in generate_source(bench.model, sparse_lu=False)
    assert "def lu_factor_nz(" in generate_source(bench.model)
    J = np.diag(np.arange(1.0, 13.0))
    x = np.ones(12)
    assert bench_dense.solve_w(J, np.zeros(1), 0.0, x, np.zeros(7, dtype=np.int64)) == 1
    np.testing.assert_allclose(x, -1.0 / np.arange(1.0, 13.0), rtol=1e-15)


def _twice_daily(m, p, days):
    f, lag = np.empty(m.N_STATES), np.empty(m.N_STATES)
    m.dose_modifiers(p, f, lag)
    return H.events(*[(12.0 * i + lag[0], H.EV_BOLUS, 0, 350.0 * f[0]) for i in range(2 * days)])


@pytest.mark.parametrize("adaptive, rtol, tol", [(False, 1e-6, 1e-12), (True, 1e-10, 1e-10),
                                                  (True, 1e-6, 1e-6)])
def test_solution_matches_dense_lu(bench, bench_dense, adaptive, rtol, tol):
    """The bench model over 2 weeks of twice-daily doses, sparse vs dense LU. Fixed steps:
    the same steps, so only round-off differs. Adaptive: round-off can flip an accept/reject
    decision, after which the two runs take different (equally valid) steps, so they agree
    to the tolerance, not to round-off."""
    m, p = bench.module, bench.model.default_parameters()
    ev = _twice_daily(m, p, 14)
    t_out = np.linspace(0.0, 14 * 24.0, 14 * 24 + 1)
    kw = dict(ev=ev, rtol=rtol, atol=1e-9 * rtol / 1e-6, adaptive=adaptive, h0=0.0 if adaptive else 0.02)
    sparse = H.solve(m, "rodas5p", t_out, p, **kw)
    dense = H.solve(bench_dense, "rodas5p", t_out, p, **kw)
    assert sparse.status == dense.status == 0
    assert sparse.stats[6] == 0  # no fallback on the model's own matrices
    scale = np.abs(dense.y).max(axis=0)
    assert np.max(np.abs(sparse.y - dense.y) / scale) < tol
    if adaptive:
        assert abs(int(sparse.stats[0]) - int(dense.stats[0])) <= 0.02 * dense.stats[0]
    else:
        np.testing.assert_array_equal(sparse.stats[:6], dense.stats[:6])
