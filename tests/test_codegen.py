"""Generated numba module: rhs/outputs/initial against a hand-written reference, analytic
Jacobian against finite differences and sympy, and the on-disk cache (warm start in a fresh
process, new key for a changed model, corrupted files regenerated)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import sympy

from il2sim._codegen import cache_key, compile_model, default_cache_dir
from il2sim._expr_sympy import to_sympy
from il2sim._generate import generate_source
from il2sim.errors import ModelSpecError
from il2sim.model import available_models, load_model

# A small nonlinear model exercising every construct: output chains, hill, where, min/max,
# abs/sqrt/exp/log, comparisons as values, time dependence, dosing modifiers.
MODEL = """\
[model]
name = "nonlinear"
description = "codegen test model"
time_unit = "h"

[parameters]
k1   = { value = 0.3, unit = "1/h", description = "d", source = "test" }
k2   = { value = 0.7, unit = "1/h", description = "d", source = "test" }
k3   = { value = 0.2, unit = "1/h", description = "d", source = "test" }
k4   = { value = 0.4, unit = "1/h", description = "d", source = "test" }
k5   = { value = 0.05, unit = "1/h", description = "d", source = "test" }
V    = { value = 200.0, unit = "L", description = "d", source = "test" }
Vmax = { value = 0.9, unit = "nmol/h", description = "d", source = "test" }
Km   = { value = 3.0, unit = "pM", description = "d", source = "test" }
EC50 = { value = 4.0, unit = "pM", description = "d", source = "test" }
n    = { value = 1.5, unit = "1", description = "d", source = "test" }
A0   = { value = 0.0, unit = "nmol", description = "d", source = "test" }
Fd   = { value = 0.6, unit = "1", description = "d", source = "test" }
tlag = { value = 0.25, unit = "h", description = "d", source = "test" }

[states]
A = { initial = "A0", unit = "nmol", description = "amount" }
B = { initial = "1 + k3 / k4", unit = "1", description = "response" }
X = { initial = -0.5, lower = -10, unit = "1", description = "signed state" }
D = { initial = 0, unit = "nmol", description = "depot", bioavailability = "Fd", lag = "2 * tlag" }

[outputs]
G = { expr = "where(C > 5, S * B, min(B, X) ** 2) + max(C, B, 1)", unit = "1", description = "uses later-listed outputs" }
C = { expr = "1000 * A / V", unit = "pM", description = "concentration" }
S = { expr = "hill(C, EC50, n)", unit = "1", description = "signal" }
H = { expr = "sqrt(abs(X) + 1) * exp(-t / 50) + log(1 + S) + (X < 0)", unit = "1", description = "mixed" }

[odes]
A = "-k1 * A + k2 * D - Vmax * C / (Km + C)"
B = "k3 * (1 + G) - k4 * B * S"
X = "-k5 * X ** 3 + H - where(t > 2, 1, 0) * X"
D = "-k2 * D"
"""


def reference(t, y, p):
    """The test model written by hand in plain Python: (dy, outputs)."""
    k1, k2, k3, k4, k5, V, Vmax, Km, EC50, n, A0, Fd, tlag = p
    A, B, X, D = y
    C = 1000 * A / V
    S = C**n / (EC50**n + C**n)
    G = (S * B if C > 5 else min(B, X) ** 2) + max(C, B, 1)
    H = math.sqrt(abs(X) + 1) * math.exp(-t / 50) + math.log(1 + S) + (1.0 if X < 0 else 0.0)
    dy = [
        -k1 * A + k2 * D - Vmax * C / (Km + C),
        k3 * (1 + G) - k4 * B * S,
        -k5 * X**3 + H - (1.0 if t > 2 else 0.0) * X,
        -k2 * D,
    ]
    return np.array(dy), {"G": G, "C": C, "S": S, "H": H}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codegen")
    path = folder / "nonlinear.toml"
    path.write_text(MODEL)
    model = load_model(path)
    return compile_model(model, cache_dir=folder / "cache")


def random_points(model, count, seed):
    """Random (t, y) away from the kinks of where/min/max/abs, where derivatives jump."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < count:
        t = rng.uniform(0, 5)
        y = np.array([rng.uniform(0.05, 3), rng.uniform(0.3, 2.5), rng.uniform(-2, 2), rng.uniform(0, 2)])
        C = 1000 * y[0] / 200.0
        kinks = [t - 2, C - 5, y[1] - y[2], y[2], C - y[1], C - 1, y[1] - 1]
        if min(abs(k) for k in kinks) > 0.1:
            points.append((t, y))
    return points


def test_constants_and_source(compiled):
    m = compiled.module
    assert (m.N_STATES, m.N_PARAMS, m.N_OUTPUTS, m.RHS_DEPENDS_ON_TIME) == (4, 13, 4, True)
    # outputs are topologically ordered: G comes after C and S
    assert compiled.model.output_names == ("C", "S", "G", "H")
    src = compiled.path.read_text()
    assert "@kernel\ndef rhs(t, y, p, dy):" in src and "@kernel\ndef jac(t, y, p, J):" in src
    assert "import numba" not in src.split("# --- model functions ---")[1].split("# --- solver kernels")[0]


def test_rhs_outputs_initial_and_dose_modifiers_match_reference(compiled):
    m, model = compiled.module, compiled.model
    p = model.default_parameters()
    for t, y in random_points(model, 20, seed=1):
        dy = np.full(4, np.nan)
        m.rhs(t, y, p, dy)
        ref_dy, ref_out = reference(t, y, p)
        np.testing.assert_allclose(dy, ref_dy, rtol=1e-13, atol=1e-15)
        o = np.full(4, np.nan)
        m.outputs(t, y, p, o)
        np.testing.assert_allclose(o, [ref_out[k] for k in model.output_names], rtol=1e-13)
    # both branches of every where/comparison are exercised
    for t, y in [(1.0, np.array([2.0, 1.0, -0.5, 0.1])), (3.0, np.array([0.4, 1.5, 0.5, 0.0]))]:
        dy = np.empty(4)
        m.rhs(t, y, p, dy)
        np.testing.assert_allclose(dy, reference(t, y, p)[0], rtol=1e-13)
    y0 = np.full(4, np.nan)
    m.initial(p, y0)
    np.testing.assert_array_equal(y0, [0.0, 1.5, -0.5, 0.0])
    f, lag = np.full(4, np.nan), np.full(4, np.nan)
    m.dose_modifiers(p, f, lag)
    np.testing.assert_array_equal(f, [1.0, 1.0, 1.0, 0.6])
    np.testing.assert_array_equal(lag, [0.0, 0.0, 0.0, 0.5])


def central_differences(m, t, y, p):
    n = y.size
    J = np.empty((n, n))
    up, down = np.empty(n), np.empty(n)
    for j in range(n):
        h = 1e-6 * max(1.0, abs(y[j]))
        a, b = y.copy(), y.copy()
        a[j] += h
        b[j] -= h
        m.rhs(t, a, p, up)
        m.rhs(t, b, p, down)
        J[:, j] = (up - down) / (2 * h)
    return J


def test_jacobian_matches_finite_differences(compiled):
    m, model = compiled.module, compiled.model
    p = model.default_parameters()
    for t, y in random_points(model, 25, seed=2):
        J = np.full((4, 4), np.nan)
        m.jac(t, y, p, J)
        np.testing.assert_allclose(J, central_differences(m, t, y, p), rtol=1e-6, atol=1e-8)


def test_jacobian_matches_sympy(compiled):
    """sympy's own Jacobian of the fully substituted system (outputs inlined, hill expanded)."""
    m, model = compiled.module, compiled.model
    t = sympy.Symbol("t", real=True)
    ys = sympy.symbols("A B X D", real=True)
    env = {"t": t, **dict(zip(model.state_names, ys))}
    env.update({name: sympy.Float(v) for name, v in zip(model.parameter_names, model.default_parameters())})
    for o in model.outputs:  # topological order: every output's inputs are already in env
        env[o.name] = sympy.expand_func(to_sympy(o.expr, env))
    f = sympy.Matrix([sympy.expand_func(to_sympy(model.odes[s], env)) for s in model.state_names])
    jac = f.jacobian(ys)
    p = model.default_parameters()
    for tv, y in random_points(model, 4, seed=3):
        J = np.empty((4, 4))
        m.jac(tv, y, p, J)
        point = {t: tv, **dict(zip(ys, y))}
        expected = np.array(jac.subs(point).evalf(), dtype=float)
        np.testing.assert_allclose(J, expected, rtol=1e-10, atol=1e-12)


def test_jacobian_writes_every_entry_and_is_finite_at_a_drug_free_start(compiled):
    m, model = compiled.module, compiled.model
    p = model.default_parameters()
    y0 = np.empty(4)
    m.initial(p, y0)  # A = 0: C = 0, where x**n would give 0/0 after naive differentiation
    J = np.full((4, 4), 12345.0)
    m.jac(0.0, y0, p, J)
    assert np.isfinite(J).all()
    assert not (J == 12345.0).any()
    assert J[3, 0] == 0.0 and J[3, 3] == -0.7


def extended(m, p):
    """The kernels' parameter vector: p followed by the derived values ``derive`` fills."""
    q = np.full(p.size + m.N_DERIVED, np.nan)
    q[: p.size] = p
    m.derive(q)
    return q


def check_kernel_functions(m, points, p):
    """rhs_k/jac_k/jac_nz_k over the extended vector equal rhs/jac/jac_nz over plain p (the
    hoisted parameter-only parts change only the rounding)."""
    q = extended(m, p)
    assert np.isfinite(q).all()
    n = m.N_STATES
    for t, y in points:
        a, b = np.empty(n), np.empty(n)
        m.rhs(t, y, p, a)
        m.rhs_k(t, y, q, b)
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-300)
        Ja, Jb = np.empty((n, n)), np.full((n, n), np.nan)
        m.jac(t, y, p, Ja)
        m.jac_k(t, y, q, Jb)
        np.testing.assert_allclose(Jb, Ja, rtol=1e-13, atol=1e-300)
        va, vb = np.empty(m.JAC_NNZ), np.full(m.JAC_NNZ, np.nan)
        m.jac_nz(t, y, p, va)
        m.jac_nz_k(t, y, q, vb)
        np.testing.assert_allclose(vb, va, rtol=1e-13, atol=1e-300)


def test_kernel_functions_with_derived_parameters_match_the_public_ones(compiled):
    m, model = compiled.module, compiled.model
    p = model.default_parameters()
    assert m.HAS_DERIVED and m.N_DERIVED > 0
    src = compiled.path.read_text()
    # the Hill power of two parameters is computed once, not at every call
    assert "p[8]**p[9]" in src.split("def derive(p):")[1].split("def rhs_k")[0]
    assert "p[8]**p[9]" not in src.split("def rhs_k(")[1].split("def jac_k")[0]
    check_kernel_functions(m, random_points(model, 10, seed=5), p)
    rng = np.random.default_rng(6)
    for _ in range(5):  # other parameter values: derive is a function of p, nothing cached
        check_kernel_functions(m, random_points(model, 2, seed=7), p * rng.uniform(0.5, 2.0, p.size))


def test_run_time_exponents_go_through_powp(compiled):
    """A Hill coefficient is a parameter: the kernel functions raise to it with ``_powp``
    (products for n = 1..4, pow otherwise), the public functions with ``**``; both agree."""
    m, model = compiled.module, compiled.model
    src = compiled.path.read_text()
    rhs_k = src.split("def rhs_k(")[1].split("def jac_k")[0]
    assert "_powp(" in rhs_k and "**p[9]" not in rhs_k
    assert "**p[9]" in src.split("def rhs(")[1].split("def jac(")[0]
    x = np.array([0.0, -0.0, 1e-300, 3e-8, 0.37, 1.0, 2.5, 7.3e5, 1e300, -1.7, np.inf, np.nan])
    for n in (1.0, 2.0):  # one rounding or none: exactly pow's correctly rounded result
        got = np.array([m._powp(v, n) for v in x])
        with np.errstate(over="ignore"):  # 1e300**2 is inf on both sides
            np.testing.assert_array_equal(got, x**n)
    for n in (3.0, 4.0):  # two roundings: within 2 ulp of pow
        got = np.array([m._powp(v, n) for v in x[3:8]])
        ref = x[3:8] ** n
        assert np.all(np.abs(got - ref) <= 2 * np.spacing(np.abs(ref)))
        assert m._powp(1e300, n) == math.inf and m._powp(0.0, n) == 0.0
    pow_ = numba.njit(lambda a, b: a**b)
    for n in (0.5, 2.5, -1.0, 1.0000000001):  # anything else is pow itself
        got = np.array([m._powp(v, n) for v in x])
        np.testing.assert_array_equal(got, [pow_(v, n) for v in x])
    assert math.isnan(m._powp(-1.7, 2.5)) and m._powp(-2.0, 3.0) == -8.0
    p = model.default_parameters()
    i_n = model.parameter_names.index("n")
    for n in (1.0, 2.0, 3.0, 4.0, 2.5):
        q = p.copy()
        q[i_n] = n
        check_kernel_functions(m, random_points(model, 4, seed=int(n * 10)), q)


def test_lane_functions_raise_to_small_integer_exponents_without_pow(tmp_path):
    """rhs_L and jac_nz_L compute run-time powers with ``_powi`` (products, no pow: in a loop
    over lanes pow would run for every lane), which is _powp to the bit for exponents 0..4;
    LANE_POW_EXPONENTS names the parameters (and derived values) they raise to, and
    _lane_exponents_ok lets a cohort into the lane path only if all are 0..4, also after its
    parameter events. Each lane gets the scalar functions' numbers. (The test model without its
    dependence on t, which keeps a model out of the lane path.)"""
    path = tmp_path / "autonomous.toml"
    path.write_text(MODEL.replace("exp(-t / 50)", "exp(-B / 50)").replace("where(t > 2, 1, 0)", "0.5"))
    compiled = compile_model(load_model(path), cache_dir=tmp_path / "cache")
    m, model = compiled.module, compiled.model
    assert m._LANES_OK
    src = compiled.path.read_text()
    for fn in ("rhs_L", "jac_nz_L"):
        body = src.split(f"def {fn}(")[1].split("@kernel")[0]
        assert "_powi(" in body and "_powp(" not in body
    i_n = model.parameter_names.index("n")
    assert i_n in m.LANE_POW_EXPONENTS and len(m.LANE_POW_EXPONENTS) == 2  # n and n - 1
    x = np.array([0.0, -0.0, 1e-300, 3e-8, 0.37, 1.0, 2.5, 7.3e5, 1e300, -1.7, np.inf, np.nan])
    for n in (0.0, 1.0, 2.0, 3.0, 4.0):
        assert m._powi_ok(n)
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal([m._powi(v, n) for v in x], [m._powp(v, n) for v in x])
    assert not any(m._powi_ok(n) for n in (-1.0, 0.5, 2.5, 5.0, 1.0000000001, np.nan))

    L, n_states = m.LANES, m.N_STATES
    points = random_points(model, L, seed=21)
    tL = np.array([t for t, _ in points])
    yL = np.ascontiguousarray(np.array([y for _, y in points]).T.ravel())
    p = model.default_parameters()
    Q = []
    for l in range(L):
        q = p.copy()
        q[i_n] = 1.0 + l % 4
        Q.append(extended(m, q))
    Q = np.array(Q)
    dyL, JvL = np.full(n_states * L, np.nan), np.full(m.JAC_NNZ * L, np.nan)
    m.rhs_L(tL, yL, np.ascontiguousarray(Q.T.ravel()), dyL)
    m.jac_nz_L(tL, yL, np.ascontiguousarray(Q.T.ravel()), JvL)
    for l, (t, y) in enumerate(points):
        a, v = np.empty(n_states), np.empty(m.JAC_NNZ)
        m.rhs_k(t, y, Q[l], a)
        m.jac_nz_k(t, y, Q[l], v)
        np.testing.assert_allclose(dyL.reshape(n_states, L)[:, l], a, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(JvL.reshape(-1, L)[:, l], v, rtol=1e-13, atol=1e-300)

    P = np.array([p] * 3)
    P[:, i_n] = [1.0, 2.0, 4.0]
    no_events = (np.zeros(4, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    assert m._lane_exponents_ok(P, *no_events)
    P[1, i_n] = 2.5
    assert not m._lane_exponents_ok(P, *no_events)
    P[1, i_n] = 2.0
    for value, ok in ((3.0, True), (1.5, False)):  # subject 2 changes n on the way
        events = (np.array([0, 0, 0, 1]), np.array([m.EV_PARAM]), np.array([i_n]), np.array([value]))
        assert m._lane_exponents_ok(P, *events) is ok


def test_negative_integer_powers_divide_instead_of_raising():
    """x**-k prints as 1/x**k: numba raises ZeroDivisionError for 0.0**-2 under any error
    model (and the raise keeps a loop over lanes from being vectorised); the division gives
    inf, the same number elsewhere."""
    import sympy

    from il2sim._generate import _Printer

    x, a, b = sympy.symbols("x a b")
    pr = _Printer({"x": "y[0]", "a": "p[1]", "b": "p[2]"})
    assert pr.doprint(x**-2) == "1/y[0]**2"
    assert pr.doprint((a + b) ** -3) == "1/(p[1] + p[2])**3"
    assert pr.doprint(x**-1) == "1/y[0]"
    pow_m2 = numba.njit(error_model="numpy")(lambda v: v**-2)
    div = numba.njit(error_model="numpy")(lambda v: 1 / v**2)
    with pytest.raises(ZeroDivisionError):
        pow_m2(0.0)
    with np.errstate(divide="ignore"):
        assert div(0.0) == math.inf
    for v in (3e-8, 0.37, 2.5, 7.3e5):
        assert div(v) == pow_m2(v)


def test_shipped_library_jacobian(tmp_path):
    """The whole shipped model library composes, generates and has a correct Jacobian."""
    import il2sim

    repo_models = Path(il2sim.__file__).resolve().parents[1] / "models"
    names = sorted(available_models([repo_models]))
    model = load_model(names, search_path=[repo_models])
    start = time.perf_counter()
    c = compile_model(model, cache_dir=tmp_path)
    m = c.module
    p = model.default_parameters()
    y = np.empty(m.N_STATES)
    m.initial(p, y)
    J = np.empty((y.size, y.size))
    m.jac(0.0, y, p, J)
    print(f"\nlibrary {model!r}: codegen {c.codegen_seconds:.2f} s, numba rhs+jac "
          f"{time.perf_counter() - start - c.codegen_seconds:.2f} s")
    assert np.isfinite(J).all()
    rng = np.random.default_rng(4)
    for _ in range(3):
        yr = y * rng.uniform(0.7, 1.3, y.size) + rng.uniform(0.01, 1.0, y.size)
        m.jac(24.0, yr, p, J)
        np.testing.assert_allclose(J, central_differences(m, 24.0, yr, p), rtol=2e-5, atol=1e-7)
    check_kernel_functions(m, [(24.0, y * rng.uniform(0.7, 1.3, y.size) + 0.1) for _ in range(3)], p)
    assert "**(-" not in c.path.read_text()  # its Jacobian has (EC50**n + C**n)**-2 terms


# --- the cache ------------------------------------------------------------------------------


def test_same_model_reuses_the_file_and_a_changed_model_gets_a_new_key(compiled, tmp_path):
    model = compiled.model
    again = compile_model(model, cache_dir=compiled.path.parents[1])
    assert (again.cold, again.key, again.path) == (False, compiled.key, compiled.path)
    assert again.module is compiled.module
    assert compiled.path.name == f"il2sim_model_{compiled.key[:20]}.py"
    # a changed default value does not change the generated code ...
    assert cache_key(model.with_parameters({"k1": 0.9})) == compiled.key
    # ... a changed equation does
    changed = tmp_path / "changed.toml"
    changed.write_text(MODEL.replace('D = "-k2 * D"', 'D = "-k2 * D * D"'))
    other = compile_model(load_model(changed), cache_dir=tmp_path / "cache")
    assert other.cold and other.key != compiled.key and other.path != compiled.path
    y, dy = np.array([1.0, 1.0, 1.0, 2.0]), np.empty(4)
    other.module.rhs(0.0, y, model.default_parameters(), dy)
    assert dy[3] == -0.7 * 4


def test_key_line_holds_the_full_key(compiled):
    text = compiled.path.read_text()
    model_part = text.split("# --- model functions ---\n", 1)[1]
    first = model_part.splitlines()[0]
    assert first.startswith(f"# il2sim-model-key: {compiled.key} sha256=")


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    start = time.perf_counter()
    from il2sim.model import load_model
    from il2sim._codegen import compile_model
    c = compile_model(load_model(sys.argv[1]), cache_dir=sys.argv[2])
    m = c.module
    t0 = time.perf_counter()
    p = c.model.default_parameters()
    y = np.empty(m.N_STATES); m.initial(p, y)
    dy = np.empty(m.N_STATES); m.rhs(0.0, y, p, dy)
    J = np.empty((m.N_STATES, m.N_STATES)); m.jac(0.0, y, p, J)
    o = np.empty(m.N_OUTPUTS); m.outputs(0.0, y, p, o)
    print(json.dumps({"cold": c.cold, "codegen": c.codegen_seconds, "numba": time.perf_counter() - t0,
                      "path": str(c.path), "dy": dy.tolist(), "sympy": "sympy" in sys.modules}))
    """
)


def run_child(model_path, cache_dir):
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)  # numba's cache must sit next to the generated file
    out = subprocess.run([sys.executable, "-c", CHILD, str(model_path), str(cache_dir)],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_starts_warm(tmp_path):
    """The second process reuses the generated file and numba's cache, and never imports sympy
    (only the generator needs it: a quarter of a second of every start)."""
    model_path = tmp_path / "nonlinear.toml"
    model_path.write_text(MODEL)
    first = run_child(model_path, tmp_path / "cache")
    second = run_child(model_path, tmp_path / "cache")
    print(f"\ncold: codegen {first['codegen']:.3f} s + numba {first['numba']:.3f} s; "
          f"warm: codegen {second['codegen']:.3f} s + numba {second['numba']:.3f} s")
    assert first["cold"] is True and second["cold"] is False
    assert first["sympy"] is True and second["sympy"] is False
    assert first["path"] == second["path"] and first["dy"] == second["dy"]
    assert second["codegen"] < 1.0
    assert list((tmp_path / "cache" / "models" / "__pycache__").glob("*.nbi"))  # numba's cache


@pytest.mark.parametrize("damage", ["truncate", "edit", "empty", "binary", "other key"])
def test_corrupted_cache_file_is_regenerated(compiled, tmp_path, damage):
    cache = tmp_path / "cache"
    first = compile_model(compiled.model, cache_dir=cache)
    good = first.path.read_text()
    if damage == "truncate":
        first.path.write_text(good[: len(good) // 2])
    elif damage == "edit":
        first.path.write_text(good.replace("dy[3] = ", "dy[3] = 2*", 1))
        assert first.path.read_text() != good
    elif damage == "empty":
        first.path.write_text("")
    elif damage == "binary":
        first.path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        first.path.write_text(good.replace(first.key, "0" * 64))
    again = compile_model(compiled.model, cache_dir=cache)
    assert again.cold is True
    assert again.path.read_text() == good


def test_free_text_cannot_inject_code(tmp_path):
    text = MODEL.replace('unit = "pM", description = "concentration"',
                         'unit = "pM\\nraise SystemExit(3)\\n#", description = "concentration"')
    text = text.replace('name = "nonlinear"', 'name = "x\\nimport os"')
    path = tmp_path / "evil.toml"
    path.write_text(text)
    c = compile_model(load_model(path), cache_dir=tmp_path / "cache")
    lines = c.path.read_text().splitlines()
    assert not any(line.startswith(("raise SystemExit", "import os")) for line in lines)
    assert c.module.N_STATES == 4


def test_non_finite_constant_in_an_equation(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MODEL.replace('D = "-k2 * D"', 'D = "-k2 * D + log(0)"'))
    with pytest.raises(ModelSpecError, match=r"m\.toml: \[odes\] D: '-k2 \* D \+ log\(0\)' has a part that is not a finite real number"):
        compile_model(load_model(path), cache_dir=tmp_path / "cache")


def test_generation_is_deterministic(compiled):
    assert generate_source(compiled.model) == generate_source(compiled.model)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IL2SIM_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("IL2SIM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "il2sim"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "il2sim"


ORAL = """\
[model]
name = "oral_cl_v"
description = "one compartment, first-order absorption, clearance and volume"
time_unit = "h"

[parameters]
ka = { value = 0.8, unit = "1/h", description = "absorption", source = "test" }
CL = { value = 0.2, unit = "L/h", description = "clearance", source = "test" }
V  = { value = 2.0, unit = "L", description = "volume", source = "test" }

[states]
Ad = { initial = 0, unit = "mg", description = "depot" }
Ac = { initial = 0, unit = "mg", description = "central" }

[odes]
Ad = "-ka * Ad"
Ac = "ka * Ad - CL / V * Ac"
"""


@pytest.mark.parametrize("method", [0, 1])
def test_parameter_event_recomputes_derived_values(tmp_path, method):
    """CL/V is computed once per subject by ``derive``; an EV_PARAM event that doubles CL at
    t = 30 h must reach the rhs through it (exact piecewise solution)."""
    path = tmp_path / "oral.toml"
    path.write_text(ORAL)
    m = compile_model(load_model(path), cache_dir=tmp_path / "cache").module
    derive = Path(m.__file__).read_text().split("def derive(p):")[1].split("def rhs_k")[0]
    assert m.N_DERIVED == 1 and "p[3] = -p[1]/p[2]" in derive  # -CL/V, hoisted out of the rhs
    ka, CL, V = 0.8, 0.2, 2.0
    ke = CL / V
    t_out = np.linspace(0.0, 60.0, 121)
    ev_time = np.array([0.0, 30.0])
    ev_kind = np.array([m.EV_BOLUS, m.EV_PARAM], dtype=np.int64)
    ev_state = np.array([0, 1], dtype=np.int64)
    ev_value = np.array([100.0, 2 * CL])
    p = np.array([ka, CL, V])
    y_out = np.full((t_out.size, 2), np.nan)
    stats, fstats = np.zeros(7, np.int64), np.zeros(2)
    code = m.solve_subject(method, 1, 0.0, np.zeros(2), p, t_out, ev_time, ev_kind, ev_state, ev_value,
                           1e-10, np.full(2, 1e-12), 0.0, 0.0, 10**6, y_out, stats, fstats)
    assert code == m.OK
    np.testing.assert_array_equal(p, [ka, CL, V])  # the caller's vector is not extended or changed

    def central(t, k, a0, c0):
        return a0 * ka / (k - ka) * (np.exp(-ka * t) - np.exp(-k * t)) + c0 * np.exp(-k * t)

    c = central(t_out, ke, 100.0, 0.0)
    late = t_out > 30.0
    c[late] = central(t_out[late] - 30.0, 2 * ke, 100.0 * np.exp(-ka * 30.0), central(30.0, ke, 100.0, 0.0))
    np.testing.assert_allclose(y_out[:, 1], c, rtol=1e-8, atol=1e-10)
