"""Tableau identities and order conditions for every registered method (STYLE item 3, 15a)."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from il2sim._solvers import tableaus
from il2sim._solvers.status import METHODS
from il2sim._solvers.tableaus import TABLEAUS, ExplicitRKTableau, RosenbrockTableau


def test_every_public_method_has_a_tableau():
    assert set(METHODS) == set(TABLEAUS)


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_identities(name):
    tab = TABLEAUS[name]
    if isinstance(tab, ExplicitRKTableau):
        assert tab.b.sum() == pytest.approx(1.0, abs=1e-14)
        assert tab.b_err.sum() == pytest.approx(0.0, abs=1e-14)
        np.testing.assert_allclose(tab.a.sum(axis=1), tab.c, rtol=0, atol=1e-14)
        np.testing.assert_allclose(tab.dense_weights(1.0), tab.b, rtol=0, atol=1e-14)
        np.testing.assert_allclose(tab.dense_weights(0.0), 0.0, atol=0)
    else:
        assert tab.b.sum() == pytest.approx(1.0, abs=1e-13)
        assert tab.b_hat.sum() == pytest.approx(1.0, abs=1e-13)
        np.testing.assert_allclose(tab.alpha.sum(axis=1), tab.c, rtol=0, atol=1e-13)
        np.testing.assert_allclose(tab.Gamma.sum(axis=1), tab.d, rtol=0, atol=1e-13)
        np.testing.assert_allclose(np.diag(tab.Gamma), tab.gamma, rtol=1e-14)
    assert all(not arr.flags.writeable for arr in _arrays(tab))


def _arrays(tab):
    values = (getattr(tab, f.name) for f in dataclasses.fields(tab))
    return [v for v in values if isinstance(v, np.ndarray)]


def test_post_init_rejects_a_broken_tableau():
    tab = tableaus.TSIT5
    bad_c = tab.c.copy()
    bad_c[2] += 1e-6
    with pytest.raises(ValueError, match="row sums of a"):
        dataclasses.replace(tab, c=bad_c)
    bad_b = tab.b.copy()
    bad_b[0] += 1e-6
    with pytest.raises(ValueError, match=r"sum\(b\)"):
        dataclasses.replace(tab, b=bad_b)
    r = tableaus.RODAS5P
    bad_d = r.d.copy()
    bad_d[1] += 1e-6
    with pytest.raises(ValueError, match="row sums of Gamma"):
        dataclasses.replace(r, d=bad_d)


# --- explicit RK order conditions via rooted trees ------------------------------------------


def _trees(order):
    """All rooted trees with ``order`` nodes, as sorted tuples of child trees."""
    if order == 1:
        return [()]
    out = set()

    def forests(n, max_tree=None):
        # multisets of trees with n nodes in total, children in non-increasing order
        if n == 0:
            yield ()
            return
        for k in range(n, 0, -1):
            for t in _trees(k):
                if max_tree is not None and (k, t) > max_tree:
                    continue
                for rest in forests(n - k, (k, t)):
                    yield ((k, t),) + rest

    for f in forests(order - 1):
        out.add(tuple(sorted((t for _, t in f), key=repr)))
    return sorted(out, key=repr)


def _size(t):
    return 1 + sum(_size(c) for c in t)


def _density(t):
    return _size(t) * math.prod(_density(c) for c in t)


def _weights(tab, t):
    """Elementwise product over children of A @ weights(child); ones for a leaf."""
    g = np.ones(tab.stages)
    for child in t:
        g = g * (tab.a @ _weights(tab, child))
    return g


def test_tree_count():
    assert [len(_trees(k)) for k in range(1, 6)] == [1, 1, 2, 4, 9]


@pytest.mark.parametrize(
    "name", sorted(n for n, t in TABLEAUS.items() if isinstance(t, ExplicitRKTableau))
)
def test_explicit_order_conditions(name):
    tab = TABLEAUS[name]
    for k in range(1, tab.order + 1):
        for t in _trees(k):
            assert tab.b @ _weights(tab, t) == pytest.approx(1 / _density(t), abs=1e-13), t
    for k in range(1, tab.embedded_order + 1):
        for t in _trees(k):
            assert tab.b_hat @ _weights(tab, t) == pytest.approx(1 / _density(t), abs=1e-13)
    # the embedded solution is genuinely of lower order (otherwise the estimate is useless)
    residual = max(
        abs(tab.b_hat @ _weights(tab, t) - 1 / _density(t)) for t in _trees(tab.order)
    )
    assert residual > 1e-6
    # continuous extension: order 4 for every theta
    for theta in (0.2, 0.5, 0.9):
        bt = tab.dense_weights(theta)
        for k in range(1, 5):
            for t in _trees(k):
                expected = theta ** _size(t) / _density(t)
                assert bt @ _weights(tab, t) == pytest.approx(expected, abs=1e-13)


# --- Rosenbrock order conditions (Hairer & Wanner II, Table IV.7.1), up to order 4 ----------


@pytest.mark.parametrize(
    "name", sorted(n for n, t in TABLEAUS.items() if isinstance(t, RosenbrockTableau))
)
@pytest.mark.parametrize("embedded", [False, True])
def test_rosenbrock_order_conditions(name, embedded):
    tab = TABLEAUS[name]
    g = tab.gamma
    b = tab.b_hat if embedded else tab.b
    alpha = tab.alpha
    beta = alpha + tab.Gamma - np.diag(np.diag(tab.Gamma))  # strictly lower alpha + gamma
    a_ = alpha.sum(axis=1)  # alpha_i
    bp = beta.sum(axis=1)  # beta'_i
    conditions = [
        (b.sum(), 1.0),
        (b @ bp, 0.5 - g),
        (b @ a_**2, Fraction(1, 3)),
        (b @ beta @ bp, Fraction(1, 6) - g + g * g),
        (b @ a_**3, Fraction(1, 4)),
        (b @ (a_ * (alpha @ bp)), Fraction(1, 8) - g / 3),
        (b @ beta @ a_**2, Fraction(1, 12) - g / 3),
        (b @ beta @ beta @ bp, Fraction(1, 24) - g / 2 + 1.5 * g * g - g**3),
    ]
    for value, expected in conditions:
        assert value == pytest.approx(float(expected), abs=1e-12)


def test_rodas5p_stage_points_reused_where_the_rows_allow():
    """The kernel forms the points of stages 7 and 8 as the previous point plus k_{s-1}; that
    is only the same sum if the a-row repeats the previous one and adds exactly 1 * k_{s-1}."""
    from il2sim._solvers.tableaus import RODAS5P_A, RODAS5P_U_FROM_PREV

    assert RODAS5P_U_FROM_PREV.tolist() == [False] * 6 + [True, True]
    for s in np.flatnonzero(RODAS5P_U_FROM_PREV):
        np.testing.assert_array_equal(RODAS5P_A[s, : s - 1], RODAS5P_A[s - 1, : s - 1])
        assert RODAS5P_A[s, s - 1] == 1.0 and not RODAS5P_A[s, s:].any()
    rng = np.random.default_rng(0)  # sequential sums: the shortcut is bit-identical
    K, y = rng.normal(size=(8, 5)), rng.normal(size=5)
    u = y.copy()
    for s in range(1, 8):
        if RODAS5P_U_FROM_PREV[s]:
            u = u + K[s - 1]
        else:
            u = y.copy()
            for j in range(s):
                u = u + RODAS5P_A[s, j] * K[j]
        full = y.copy()
        for j in range(s):
            full = full + RODAS5P_A[s, j] * K[j]
        np.testing.assert_array_equal(u, full)
