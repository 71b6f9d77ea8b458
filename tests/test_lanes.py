"""The cohort path of the stiff solver: Rodas5P over LANES subjects side by side
(``_lanes_run`` in the kernel template, the lane functions from the code generator).

Each subject must get what ``solve_subject`` gives it (same status, same steps, the same
trajectory, to the bit) and exactly the same numbers whatever subjects share its lane
group, in whatever order, on any thread count, with failing neighbours, dose/infusion/reset/
parameter events and a sparse LU that refuses pivots."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import solver_harness as H
from il2sim._codegen import compile_model
from il2sim._generate import lanes_for
from il2sim.model import load_model

# Two states whose W = c*I - J has a pivot far below the entry under it at ordinary step
# sizes (|J[1, 0]| = 1e4 against c + 1), so the generated sparse LU refuses it and the step
# falls back to the dense pivoted LU. Stable: eigenvalues -1 -+ sqrt(0.1).
STIFF_PIVOT = """\
[model]
name = "pivot"
description = "sparse-LU fallback test"
time_unit = "h"

[parameters]
a = { value = 1.0, unit = "1/h", description = "d", source = "test" }
B = { value = 1e4, unit = "1/h", description = "d", source = "test" }
b = { value = 1e-5, unit = "1/h", description = "d", source = "test" }

[states]
x = { initial = 1.0, unit = "1", description = "d" }
z = { initial = 0.0, unit = "1", description = "d" }

[odes]
x = "-a * x + b * z"
z = "B * x - a * z"
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lanes")


def _cohort(m, model, n, days, seed=3):
    """n subjects of the bench model with varied parameters and twice-daily doses (from 0.4 h)
    into the depot; subject 5 also gets an infusion into Ac, a change of CL_lin and a reset."""
    rng = np.random.default_rng(seed)
    p0 = model.default_parameters()
    P = p0 * rng.lognormal(0.0, 0.3, (n, p0.size))
    names = model.parameter_names
    for k in ("w_RM_Treg", "F", "Dred", "DredT"):  # fractions stay fractions
        P[:, names.index(k)] = np.minimum(P[:, names.index(k)], 0.95)
    P[:, names.index("n_eo")] = rng.choice([1.0, 2.0, 3.0, 4.0], n)  # the lane path's exponents
    Y0 = np.empty((n, m.N_STATES))
    m.eval_initial(P, Y0)
    evs = []
    for s in range(n):
        ev = [(12.0 * i + 0.4, m.EV_BOLUS, 0, rng.uniform(1.0, 6.0)) for i in range(2 * days)]
        if s == 5:
            ev += [(30.0, m.EV_RATE, 2, 0.05), (33.5, m.EV_RATE, 2, -0.05),
                   (50.0, m.EV_PARAM, names.index("CL_lin"), 4.0), (80.0, m.EV_RESET, 0, 0.0),
                   (90.0, m.EV_RATE, 2, 0.02)]
        evs.append(H.events(*ev))
    t_out = np.linspace(0.0, days * 24.0, days * 4 + 1)
    return P, Y0, evs, t_out


def _solve_cohort(m, P, Y0, evs, t_out, rtol=1e-6, atol=1e-9, max_steps=100_000, method="rodas5p"):
    """solve_cohort on the lane path for any number of subjects (it sends fewer than _FEW one
    at a time; these tests use a few as well)."""
    few, m._FEW = m._FEW, 0
    try:
        return H.solve_cohort(m, method, t_out, P, evs, Y0=Y0, rtol=rtol, atol=atol, max_steps=max_steps)
    finally:
        m._FEW = few


def _assert_like_solve_subject(m, P, Y0, evs, t_out, Y, st, ct, ft, **kw):
    """Per subject: what solve_subject gives it, to the bit: status, counters, time reached,
    last step and trajectory (the lane arithmetic is the scalar's, statement for statement,
    and nothing is compiled with contraction into fused multiply-adds)."""
    for s in range(P.shape[0]):
        sol = H.solve(m, "rodas5p", t_out, P[s], y0=Y0[s], ev=evs[s], **kw)
        assert st[s] == sol.status, s
        np.testing.assert_array_equal(ct[s], sol.stats, err_msg=str(s))
        np.testing.assert_array_equal(ft[s], sol.fstats, err_msg=str(s))
        np.testing.assert_array_equal(Y[s], sol.y, err_msg=str(s))


def test_bench_model_runs_in_lanes(bench):
    m = bench.module
    assert m._LANES_OK and m.LANES == lanes_for(m.N_STATES, m.JAC_NNZ, m.LU_NNZ) == 32
    assert lanes_for(24, 73, 80) == 32 and lanes_for(2, 3, 3) == 32 and lanes_for(400, 2000, 5000) == 16


def test_lane_cohort_matches_solve_subject(bench):
    """37 subjects (more than LANES: lanes are refilled as subjects finish) over 10 days with
    events of every kind in subject 5."""
    m, model = bench.module, bench.model
    P, Y0, evs, t_out = _cohort(m, model, 37, 10)
    Y, st, ct, ft = _solve_cohort(m, P, Y0, evs, t_out)
    assert (st == 0).all()
    assert (Y != -1.0).all()  # every row written (the harness fills -1)
    _assert_like_solve_subject(m, P, Y0, evs, t_out, Y, st, ct, ft)


def test_cohorts_of_fewer_than_a_lane_group_go_one_subject_at_a_time(bench, monkeypatch):
    """solve_cohort sends fewer than _FEW (= LANES) subjects through solve_subject one at a
    time while the process has not compiled the lane driver, and through the lanes once it
    has (or when there are _FEW or more): the same bits either way."""
    m, model = bench.module, bench.model
    assert m._FEW == m.LANES == 32
    P, Y0, evs, t_out = _cohort(m, model, 32, 2)
    lanes = _solve_cohort(m, P, Y0, evs, t_out)
    assert m._lanes_ready(False)  # the driver ran just now
    calls = []
    for name in ("_lanes_run", "_solve_each"):
        real = getattr(m, name)
        monkeypatch.setattr(m, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    for ready in (False, True):
        monkeypatch.setattr(m, "_lanes_ready", lambda general, ready=ready: ready)
        for n in (31, 1, 32):
            calls.clear()
            got = H.solve_cohort(m, "rodas5p", t_out, P[:n], evs[:n], Y0=Y0[:n])
            assert calls == (["_lanes_run"] if n == 32 or ready else ["_solve_each"]), (n, ready)
            for a, b in zip(got, lanes):
                np.testing.assert_array_equal(a, b[:n])


def test_lane_results_do_not_depend_on_companions_order_or_threads(bench):
    m, model = bench.module, bench.model
    P, Y0, evs, t_out = _cohort(m, model, 37, 6)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        ref = _solve_cohort(m, P, Y0, evs, t_out)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _solve_cohort(m, P, Y0, evs, t_out)
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(ref, two):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(11)
    for sel in (np.arange(37)[::-1], np.arange(37)[::3], rng.permutation(37)[:21], np.array([5])):
        got = _solve_cohort(m, P[sel], Y0[sel], [evs[i] for i in sel], t_out)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b[sel])


def test_failing_subjects_in_a_lane_group_leave_the_others_alone(bench):
    """A NaN parameter (non_finite), a Treg population growing without bound (its steps shrink
    to nothing: step_too_small or non_finite) and, with max_steps = 600 over 6 days, the subjects that need
    more steps than that, beside healthy ones: each fails as in solve_subject, where it
    stopped; the others are bit-identical to a run without the failing ones."""
    m, model = bench.module, bench.model
    P, Y0, evs, t_out = _cohort(m, model, 20, 6)
    names = model.parameter_names
    P[3, names.index("ktr")] = np.nan
    P[7, names.index("kdT")] = -500.0
    Y, st, ct, ft = _solve_cohort(m, P, Y0, evs, t_out, max_steps=600)
    assert st[3] == m.NON_FINITE and st[7] in (m.NON_FINITE, m.STEP_TOO_SMALL)
    out_of_steps = np.flatnonzero(st == m.MAX_STEPS)
    ok = np.flatnonzero(st == m.OK)
    assert 3 <= len(out_of_steps) <= 15 and len(ok) + len(out_of_steps) == 18
    bad = np.flatnonzero(st != m.OK)
    assert (ft[bad, 0] < t_out[-1]).all() and np.isnan(Y[bad, -1]).all()
    assert (ct[out_of_steps, 0] == 600).all()
    _assert_like_solve_subject(m, P, Y0, evs, t_out, Y, st, ct, ft, max_steps=600)
    Y2, st2, ct2, ft2 = _solve_cohort(m, P[ok], Y0[ok], [evs[s] for s in ok], t_out, max_steps=600)
    np.testing.assert_array_equal(Y2, Y[ok])
    np.testing.assert_array_equal(st2, st[ok])
    np.testing.assert_array_equal(ct2, ct[ok])


def test_refused_pivots_fall_back_per_lane(cache):
    """A model whose sparse LU refuses the pivot at ordinary step sizes: the lanes that need it
    take the dense pivoted step (counted), the results match solve_subject and the exact
    solution."""
    path = cache / "pivot.toml"
    path.write_text(STIFF_PIVOT)
    c = compile_model(load_model(path), cache_dir=cache)
    m = c.module
    assert m._LANES_OK and m.LU_ORDER == (0, 1)
    n = 11
    P = np.tile(c.model.default_parameters(), (n, 1))
    P[:, 0] = np.linspace(0.5, 1.5, n)
    Y0 = np.empty((n, 2))
    m.eval_initial(P, Y0)
    evs = [H.events((5.0, m.EV_BOLUS, 0, 0.5)) for _ in range(n)]
    t_out = np.linspace(0.0, 10.0, 41)
    Y, st, ct, ft = _solve_cohort(m, P, Y0, evs, t_out, rtol=1e-8, atol=1e-12)
    assert (st == 0).all() and (ct[:, 6] > 0).all()
    _assert_like_solve_subject(m, P, Y0, evs, t_out, Y, st, ct, ft, rtol=1e-8, atol=1e-12)
    for s in range(n):  # x, z from the 2x2 matrix exponential, the bolus at t = 5 added to x
        a, B, b = P[s]
        A = np.array([[-a, b], [B, -a]])
        w, V = np.linalg.eig(A)
        Vi = np.linalg.inv(V)
        for j, t in enumerate(t_out):
            x0 = np.array([1.0, 0.0])
            if t >= 5.0:
                x0 = (V @ np.diag(np.exp(w * 5.0)) @ Vi @ x0).real + [0.5, 0.0]
                t = t - 5.0
            ref = (V @ np.diag(np.exp(w * t)) @ Vi @ x0).real
            np.testing.assert_allclose(Y[s, j], ref, rtol=2e-6, atol=1e-9)


def test_other_paths_still_go_one_subject_at_a_time(bench):
    """Tsit5 uses solve_subject: bit-identical to it."""
    m, model = bench.module, bench.model
    P, Y0, evs, t_out = _cohort(m, model, 9, 2)
    Y, st, ct, ft = _solve_cohort(m, P, Y0, evs, t_out, method="tsit5")
    for s in range(9):
        sol = H.solve(m, "tsit5", t_out, P[s], y0=Y0[s], ev=evs[s])
        assert sol.status == st[s]
        np.testing.assert_array_equal(sol.y, Y[s])


def test_hill_coefficients_outside_0_to_4_take_the_lane_functions_with_pow(bench, monkeypatch):
    """The lane functions compute run-time powers as products (exponents 0..4); a cohort with a
    Hill coefficient of 2.5 from the start, or set to 1.5 by a parameter event, runs the lane
    driver over the versions that call pow (_lanes_run_p), with solve_subject's results."""
    m, model = bench.module, bench.model
    calls = []
    for name in ("_lanes_run", "_lanes_run_p"):
        real = getattr(m, name)
        monkeypatch.setattr(m, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    P, Y0, evs, t_out = _cohort(m, model, 9, 2)
    i_n = model.parameter_names.index("n_eo")
    _solve_cohort(m, P, Y0, evs, t_out)
    assert calls == ["_lanes_run"]
    P_half = P.copy()
    P_half[4, i_n] = 2.5
    evs_half = list(evs)
    evs_half[6] = H.events(*[(3.0, m.EV_PARAM, i_n, 1.5)])
    for P_run, evs_run in ((P_half, evs), (P, evs_half)):
        calls.clear()
        Y, st, ct, ft = _solve_cohort(m, P_run, Y0, evs_run, t_out)
        assert calls == ["_lanes_run_p"] and (st == 0).all()
        _assert_like_solve_subject(m, P_run, Y0, evs_run, t_out, Y, st, ct, ft)


# --- the step-size controller and error norm: one pass over every lane, solve_subject's bits ---


def _controller_inputs(rng):
    """Error norms of every kind the controller meets (accepted, rejected, 0, exactly 1, inf,
    tiny, huge), remembered log2 errors (0 after a restart, the floor, in between) and
    after-rejection flags, LANES at a time."""
    edge = np.array([0.0, 1.0, np.nextafter(1.0, 2.0), np.inf, 1e-300, 5e-10, 1e300, 1e-4, 0.17])
    for _ in range(200):
        en = np.exp(rng.uniform(np.log(1e-12), np.log(1e4), 32))
        en[rng.integers(0, 32, 4)] = rng.choice(edge, 4)
        le_prev = np.where(rng.random(32) < 0.2, 0.0, rng.uniform(np.log2(1e-4), 0.0, 32))
        yield en, le_prev, rng.random(32) < 0.3


def test_lane_step_factors_are_solve_subjects_bit_for_bit_and_rodas_i_control(bench):
    """_lane_step_factors (every lane in one pass) gives every lane the bits of _rodas_factor
    (what solve_subject calls for Rodas5P), and that is Hairer's RODAS controller: 0.9 err^(-1/5)
    after an accepted step (at most 1 after a rejection) and after a rejected one, within
    [0.2, 10] (0.2 for inf), to 1e-12 of pow (it is computed without libm)."""
    m = bench.module
    assert m.LANES == 32 and m.RODAS5P_ERR_ORDER == 5
    li = np.zeros((m._LI_N, 32), dtype=np.int64)
    fac, code = np.empty(32), np.zeros(32, dtype=np.int64)
    for en, _, after in _controller_inputs(np.random.default_rng(5)):
        li[m._LI_AFTERREJ] = after
        e = en.copy()
        m._lane_step_factors(e, code, li, fac, np.empty(32))
        for l in range(32):
            f = m._rodas_factor(en[l], bool(after[l]))
            assert f == fac[l], (en[l], after[l])
            if en[l] <= 1.0:
                want = 10.0 if en[l] == 0.0 else min(10.0, max(0.2, 0.9 * en[l] ** -0.2))
                want = min(want, 1.0) if after[l] else want
            else:
                want = 0.2 if en[l] == np.inf else min(1.0, max(0.2, 0.9 * en[l] ** -0.2))
            assert f == pytest.approx(want, rel=1e-12, abs=0.0), (en[l], after[l])
    # every power-of-two scaling of the root, and the ends of its clamps
    for x in np.r_[2.0 ** np.arange(-21, 17), 3.0 * 2.0 ** np.arange(-21, 16)]:
        for after in (False, True):
            want = min(10.0 if x <= 1.0 and not after else 1.0, max(0.2, 0.9 * x ** -0.2))
            assert m._rodas_factor(x, after) == pytest.approx(want, rel=1e-12, abs=0.0), (x, after)
    # a singular W (code 3) is an infinite error: the largest decrease
    code[:] = 3
    e = np.full(32, 0.5)
    m._lane_step_factors(e, code, li, fac, np.empty(32))
    assert (e == np.inf).all() and (fac == 0.2).all()


def test_tsit5_step_factor_is_the_pi_controller(bench):
    """Tsit5's factor (solve_subject only) is Gustafsson's PI controller: 0.9 err^(-0.7/k)
    err_prev^(0.4/k) after an accepted step (at most 1 after a rejection), 0.9 err^(-1/k) after
    a rejected one, within [0.2, 10] (0.2 for inf)."""
    m = bench.module
    k = float(m.TSIT5_ERR_ORDER)
    for en, le_prev, after in _controller_inputs(np.random.default_rng(6)):
        for l in range(32):
            f = m._step_factor(en[l], m._log2(en[l]), le_prev[l], k, bool(after[l]))
            if en[l] <= 1.0:
                want = 10.0 if en[l] == 0.0 else 0.9 * en[l] ** (-0.7 / k) * (2.0 ** le_prev[l]) ** (0.4 / k)
                want = min(10.0, max(0.2, want))
                want = min(want, 1.0) if after[l] else want
            else:
                want = 0.2 if en[l] == np.inf else min(1.0, max(0.2, 0.9 * en[l] ** (-1.0 / k)))
            assert f == pytest.approx(want, rel=1e-12), (en[l], le_prev[l], after[l])


def test_log2_and_exp2_of_the_controller_clamp_where_the_factors_do(bench):
    """The controller's log2 and 2**y: the library's values inside [2**-64, 2**64] and [-4, 4],
    clamped outside (an error norm of 0 or inf, or an exponent past the factors' own clamps)."""
    m = bench.module
    x = np.exp(np.random.default_rng(2).uniform(np.log(2.0**-64), np.log(2.0**64), 2000))
    np.testing.assert_allclose([m._log2(v) for v in x], np.log2(x), rtol=0.0, atol=1e-13)
    assert [m._log2(v) for v in (0.0, 1e-300, 2.0**-70, 2.0**70, np.inf)] == [-64.0, -64.0, -64.0, 64.0, 64.0]
    y = np.random.default_rng(3).uniform(-4.0, 4.0, 2000)
    np.testing.assert_allclose([m._exp2(v) for v in y], np.exp2(y), rtol=5e-15, atol=0.0)
    assert (m._exp2(-7.0), m._exp2(9.0)) == (m._exp2(-4.0), m._exp2(4.0))
    assert (m._exp2(-4.0), m._exp2(4.0)) == pytest.approx((1 / 16, 16.0), rel=5e-15)


def test_lane_error_norms_are_solve_subjects_bit_for_bit(bench):
    """_lane_error_norms (every lane in one SIMD pass) gives each lane _error_norm's bits, inf
    for a non-finite new state, on errors from 1e-15 to 1e3 of the tolerance."""
    m = bench.module
    n, rng = m.N_STATES, np.random.default_rng(8)
    atol = 10.0 ** rng.uniform(-12, -6, n)
    out = np.empty(32)
    for _ in range(100):
        y = rng.normal(0.0, 1.0, (n, 32)) * 10.0 ** rng.uniform(-9, 3, (n, 32))
        ynew = y * (1.0 + rng.normal(0.0, 1e-3, (n, 32)))
        scale = atol[:, None] + 1e-6 * np.abs(y)
        err = rng.normal(0.0, 1.0, (n, 32)) * 10.0 ** rng.uniform(-15, 3, (n, 32)) * scale
        ynew[rng.integers(0, n), rng.integers(0, 32)] = rng.choice([np.nan, np.inf, 1.0])
        m._lane_error_norms(err.ravel(), y.ravel(), ynew.ravel(), atol, 1e-6, out)
        for l in range(32):
            assert out[l] == m._error_norm(err[:, l].copy(), y[:, l].copy(), ynew[:, l].copy(), atol, 1e-6), l


CHILD = """
import hashlib, json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import solver_harness as H
from il2sim._codegen import compile_model
from il2sim.model import load_model
c = compile_model(load_model(sys.argv[1]), cache_dir=sys.argv[2])
m = c.module
n = 40
p0 = c.model.default_parameters()
P = np.tile(p0, (n, 1)) * np.random.default_rng(1).lognormal(0.0, 0.2, (n, p0.size))
P[:, list(c.model.parameter_names).index("n_eo")] = 2.0
Y0 = np.empty((n, m.N_STATES)); m.eval_initial(P, Y0)
ev = H.events(*[(12.0 * i + 0.4, m.EV_BOLUS, 0, 3.0) for i in range(12)])
t_out = np.linspace(0.0, 144.0, 25)
Y = H.solve_cohort(m, "rodas5p", t_out, P, [ev] * n, Y0=Y0)[0]
one = [H.solve(m, method, t_out, P[0], y0=Y0[0], ev=ev).y for method in ("rodas5p", "tsit5")]
digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
print(json.dumps({"cold": c.cold, "lanes": digest(Y), "one": [digest(y) for y in one]}))
"""


def test_results_do_not_depend_on_where_the_code_was_compiled(tmp_path):
    """The same numbers from a process that compiled the model and from one that loaded it
    from numba's cache. (They once differed in the 10th digit: polynomials whose multiply-adds
    the compiler was free to fuse came out fused differently in the two.)"""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import BENCH

    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)
    tests = str(Path(__file__).resolve().parent)

    def child():
        out = subprocess.run([sys.executable, "-c", CHILD, str(BENCH), str(tmp_path / "cache"), tests],
                             capture_output=True, text=True, env=env, timeout=600, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = child(), child()
    assert first.pop("cold") is True and second.pop("cold") is False
    assert first == second
