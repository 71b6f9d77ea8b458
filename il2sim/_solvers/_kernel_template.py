"""Solver kernels: model-independent source, compiled inside every generated model module.

This file is valid Python so that it can be read, linted and diffed, but it is never imported
to run: ``build.module_source`` copies the text between the markers into each generated model
module, where ``rhs``, ``jac``, ``outputs``, ``initial``, ``N_STATES`` and the decorators
``kernel``/``kernel_inline``/``kernel_alloc`` are real definitions. The
placeholders below only document them.

Entry points (all over flat arrays; see their docstrings): ``solve_subject`` (one subject),
``solve_cohort`` (every subject: adaptive Rodas5P LANES subjects side by side in
``_lanes_run``, anything else ``solve_subject`` per subject on threads), ``eval_outputs``,
``eval_initial``. Inside, the method steps (``_rodas_step``, ``_tsit5_step``; the lane
attempt ``_lane_attempt``), the step-size controller (``_step_factor``), dense output and
event handling are separate functions; ``_integrate`` is the loop that ties them together,
and ``_lane_to_attempt`` (one lane; ``_lane_plan``: its common case for every lane at once)
and ``_lane_update`` (every lane) are the same loop split at the step attempt.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401

N_STATES = 1
N_PARAMS = 1
N_OUTPUTS = 0


def kernel(f):  # generated module: numba.njit(cache=True, _nrt=False, ...): allocates nothing
    return f


def kernel_inline(f):  # generated module: as kernel, inlined into its callers (numba IR)
    return f


def kernel_alloc(f):  # generated module: numba.njit(cache=True, ...): may allocate (entry points)
    return f


def rhs(t, y, p, dy):  # dy[i] = f_i(t, y, p)
    raise NotImplementedError


def jac(t, y, p, J):  # J[i, j] = df_i/dy_j, every entry written
    raise NotImplementedError


def outputs(t, y, p, o):  # o[k] = output k
    raise NotImplementedError


def initial(p, y0):  # y0[i] = initial value of state i
    raise NotImplementedError


# Optional in a model module: a model whose rhs never reads ``t`` may set this to False; the
# stiff method then skips its finite-difference time derivative (saves 2 rhs calls per step).
RHS_DEPENDS_ON_TIME = True

# Optional in a model module (the code generator writes them; hand-written modules may leave
# them out): HAS_SPARSE_LU = True together with
#   JAC_NNZ, jac_nz(t, y, p, Jv)    the structural non-zeros of the Jacobian, Jv[JAC_NNZ];
#   LU_NNZ, lu_factor_nz(Jv, c, Wv) W = c*I - J factorised without pivoting into Wv[LU_NNZ];
#                                   0, or 1 if a pivot is unsafe (then nothing is promised);
#   lu_solve_nz(Wv, b)              solve W x = b in place in b;
#   w_dense_nz(Jv, c, W)            the dense W = c*I - J, for the pivoted fallback.
# Without them the stiff method uses jac and the dense pivoted LU every step.
HAS_SPARSE_LU = False

# Optional in a model module (the code generator writes them): HAS_DERIVED = True together with
#   N_DERIVED, derive(p)            p[N_PARAMS + k] = the k-th parameter-only subexpression;
#   rhs_k, jac_k, jac_nz_k          rhs, jac, jac_nz reading those derived values.
# The kernels call only the _k versions, with a parameter vector of N_PARAMS + N_DERIVED.
HAS_DERIVED = False


# --- BEGIN KERNELS ---
# The text between the markers is copied verbatim into every generated model module.
# Rules for everything here (so it can later compile with numba.cuda.jit(device=True), one
# subject per thread): plain functions over fixed-size float64/int64 arrays, no allocation
# outside ``solve_subject``'s prologue, no Python objects, no exceptions (integer codes).
# ``@kernel`` functions compile without numba's runtime, which enforces "no allocation";
# only entry points that allocate their work arrays are ``@kernel_alloc``.
from il2sim._solvers.tableaus import (
    RODAS5P_C,
    RODAS5P_D,
    RODAS5P_ERR_ORDER,
    RODAS5P_GAMMA,
    RODAS5P_H,
    RODAS5P_STAGES,
    TSIT5_C,
    TSIT5_DENSE,
    TSIT5_ERR_ORDER,
    TSIT5_STAGES,
)

# Mirrored in il2sim/_solvers/status.py (a test checks that they agree).
METHOD_RODAS = 0
METHOD_TSIT5 = 1
OK = 0
MAX_STEPS = 1
STEP_TOO_SMALL = 2
NON_FINITE = 3
EV_BOLUS = 0
EV_RATE = 1
EV_RESET = 2
EV_PARAM = 3

# stats columns
_S_STEPS = 0
_S_ACCEPTED = 1
_S_REJECTED = 2
_S_RHS = 3
_S_JAC = 4
_S_LU = 5
_S_LU_FALLBACK = 6  # optional 7th column: sparse factorisations refused (dense LU instead)

# Step-size controllers: 0.9 err^(-beta1/k) err_prev^(beta2/k) (HNW II §IV.8), exponents
# divided by the error-estimator order k = embedded order + 1.
_LOG2_SAFETY = -0.15200309344504997  # log2(0.9), the safety factor on the step size
_QMIN = 0.2  # largest decrease per step
_QMAX = 10.0  # largest increase per step
# Rodas5P (_rodas_factor): I control (beta1 = 1, beta2 = 0, k = 5), as Hairer's RODAS, and at
# every restart (events) the step the controller chose after the first full step it accepted
# after the previous restart (or the start): doses repeat, and so does what follows them (the
# first full step itself took 3-5% more attempts on bench12, as many on the library). On the
# IL-2 models it reaches a given global error with 1.2-1.6x fewer step attempts than the PI
# controller below with the step carried across doses (benchmarks/bench_controller.py): after
# each dose the PI controller's memory held the error norm at 0.03-0.08 while the step grew 5%
# per step for ~30 steps, and the carried step was rejected 2-3 times. (A new starting-step
# estimate at each restart took as few attempts, but its two right-hand sides cost the lane
# path 12%: they run for all 32 lanes.)
# Tsit5 (_step_factor): PI control (Gustafsson), beta1 = 0.7, beta2 = 0.4, the step carried
# across restarts: it damps the step-size oscillation of an explicit method at its stability
# limit (where Tsit5 runs on these stiff models).
_BETA1 = 0.7
_BETA2 = 0.4
_LOG2_ERR_PREV_MIN = -13.287712379549449  # log2(1e-4): floor of the remembered error (PI memory)
_EPS = 2.220446049250313e-16
_HMIN_FLOOR = 1e-300  # absolute floor under 16*eps*|t|
_MAX_NONFINITE_REJECTS = 40  # consecutive NaN/inf steps (h shrunk by 0.2**40) before NON_FINITE
_FINAL_STRETCH = 1.01  # a step that would leave < 1% of h before a stop is stretched onto it

try:  # the model may declare that its rhs never reads t (generated code knows this)
    _RHS_USES_T = bool(RHS_DEPENDS_ON_TIME)  # noqa: F821
except NameError:
    _RHS_USES_T = True

try:  # generated models bring a sparse Jacobian and a straight-line LU of W = c*I - J
    _SPARSE_LU = bool(HAS_SPARSE_LU)  # noqa: F821
except NameError:
    _SPARSE_LU = False
try:  # generated models bring kernel versions of rhs/jac over p extended by derived values
    _DERIVED = bool(HAS_DERIVED)  # noqa: F821
except NameError:
    _DERIVED = False
if not _DERIVED:
    # A model module without them (hand-written): the kernels call its own functions, and
    # the parameter vector carries nothing extra.
    N_DERIVED = 0
    rhs_k = rhs
    jac_k = jac
    try:
        jac_nz_k = jac_nz  # noqa: F821
    except NameError:
        pass

    @kernel
    def derive(p):
        return

if not _SPARSE_LU:
    # Placeholders with the same types, never called (the branches that would call them are
    # folded away at compile time: _SPARSE_LU is a global constant).
    JAC_NNZ = 1
    LU_NNZ = 1

    @kernel
    def jac_nz(t, y, p, Jv):
        return

    jac_nz_k = jac_nz

    @kernel
    def lu_factor_nz(Jv, c, Wv):
        return 1

    @kernel
    def lu_solve_nz(Wv, b):
        return

    @kernel
    def w_dense_nz(Jv, c, W):
        return

try:  # generated models with the sparse LU bring lane versions of their functions
    _LANES_OK = bool(HAS_LANES) and _SPARSE_LU and not _RHS_USES_T  # noqa: F821
except NameError:
    _LANES_OK = False
if not _LANES_OK:
    # Placeholders, never called (solve_cohort takes the lane path only when _LANES_OK).
    try:
        LANES  # noqa: B018, F821
    except NameError:
        LANES = 1
    LANE_POW_EXPONENTS = ()

    @kernel
    def rhs_L(t, y, p, dy):
        return

    @kernel
    def jac_nz_L(t, y, p, Jv):
        return

    @kernel
    def lu_factor_L(Jv, c, Wv, code):
        return

    @kernel
    def lu_solve_L(Wv, b):
        return

    rhs_Lp = rhs_L
    jac_nz_Lp = jac_nz_L

_LANE_BLOCK = 4 * LANES  # most subjects per thread task of the lane path


# --- small linear algebra (dense LU with partial pivoting, in place) ----------------------


@kernel
def _lu_factor(A, piv):
    """Factor ``A`` in place (``P A = L U``, unit L below the diagonal). 0 ok, 1 singular."""
    n = A.shape[0]
    for k in range(n):
        p = k
        amax = abs(A[k, k])
        for i in range(k + 1, n):
            v = abs(A[i, k])
            if v > amax:
                amax = v
                p = i
        piv[k] = p
        if not (amax > 0.0) or amax == math.inf:  # zero pivot, NaN or inf
            return 1
        if p != k:
            for j in range(n):
                tmp = A[k, j]
                A[k, j] = A[p, j]
                A[p, j] = tmp
        inv = 1.0 / A[k, k]
        for i in range(k + 1, n):
            lik = A[i, k] * inv
            A[i, k] = lik
            if lik != 0.0:
                for j in range(k + 1, n):
                    A[i, j] -= lik * A[k, j]
    return 0


@kernel
def _lu_solve(A, piv, b):
    """Solve ``A x = b`` in place in ``b`` with the factors from ``_lu_factor``."""
    n = A.shape[0]
    for k in range(n):
        p = piv[k]
        if p != k:
            tmp = b[k]
            b[k] = b[p]
            b[p] = tmp
    for i in range(n):
        s = b[i]
        for j in range(i):
            s -= A[i, j] * b[j]
        b[i] = s
    for i in range(n - 1, -1, -1):
        s = b[i]
        for j in range(i + 1, n):
            s -= A[i, j] * b[j]
        b[i] = s / A[i, i]


@kernel
def _w_factor(c, J, Jv, W, Wv, piv, stats):
    """Factorise the Rosenbrock matrix ``W = c*I - J``.

    With a sparse model (``_SPARSE_LU``) ``Jv`` holds the Jacobian's non-zeros and the
    straight-line factorisation is tried first; if it refuses a pivot, the dense ``W`` is
    built and factorised with partial pivoting (counted in ``stats[_S_LU_FALLBACK]`` when
    ``stats`` has that column). Otherwise ``J`` is the dense Jacobian.

    Returns 0 (sparse factors in ``Wv``), 1 (dense factors in ``W``, ``piv``) or 2 (singular).
    """
    stats[_S_LU] += 1
    if _SPARSE_LU:
        if lu_factor_nz(Jv, c, Wv) == 0:
            return 0
        if stats.shape[0] > _S_LU_FALLBACK:
            stats[_S_LU_FALLBACK] += 1
        w_dense_nz(Jv, c, W)
    else:
        n = N_STATES
        for i in range(n):
            for j in range(n):
                W[i, j] = -J[i, j]
            W[i, i] += c
    if _lu_factor(W, piv) != 0:
        return 2
    return 1


@kernel
def _w_solve(mode, W, Wv, piv, b):
    """Solve ``W x = b`` in place with the factors of ``_w_factor`` (``mode`` its result)."""
    if _SPARSE_LU and mode == 0:
        lu_solve_nz(Wv, b)
    else:
        _lu_solve(W, piv, b)


# --- model evaluation with the zero-order input added ------------------------------------


@kernel
def _f(t, y, p, rate, out, stats):
    """``out = rhs(t, y, p) + rate``; counts one rhs evaluation. ``p`` is the subject's
    extended parameter vector (``derive`` has filled its last ``N_DERIVED`` entries).
    ``rate`` has N_STATES + 1 entries: the last is 1.0 while any input rate is non-zero
    (``_apply_events`` keeps it), so the usual case skips the addition (10% of a step)."""
    rhs_k(t, y, p, out)
    if rate[N_STATES] != 0.0:  # some zero-order input is on (most of the time none is)
        for i in range(N_STATES):
            out[i] += rate[i]
    stats[_S_RHS] += 1


# --- error norm and step-size controller (independent of the method) ---------------------


@kernel
def _error_norm(err, y, ynew, atol, rtol):
    """RMS of err_i / (atol_i + rtol*max(|y_i|, |ynew_i|)); inf if anything is not finite.
    _lane_error_norms computes the same for every lane, to the bit."""
    s = 0.0
    for i in range(N_STATES):
        ay = abs(y[i])
        an = abs(ynew[i])
        sc = atol[i] + rtol * (an if an > ay else ay)  # (not max(): as _lane_error_norms)
        r = err[i] / sc
        s += r * r
    s = math.sqrt(s / max(N_STATES, 1))
    if not (s <= 1.7976931348623157e308):  # NaN or inf (also from a non-finite ynew)
        return math.inf
    for i in range(N_STATES):
        if not (abs(ynew[i]) <= 1.7976931348623157e308):
            return math.inf
    return s


@kernel
def _lane_error_norms(err, y, ynew, atol, rtol, out):
    """out[l] = _error_norm of lane l, for every lane: the same operations in the same order
    for each lane, with the loop over the lanes innermost, so that it runs in SIMD vectors."""
    for l in range(LANES):
        out[l] = 0.0
    for i in range(N_STATES):
        a = atol[i]
        for l in range(LANES):
            k = i * LANES + l
            ay = abs(y[k])
            an = abs(ynew[k])
            sc = a + rtol * (an if an > ay else ay)  # (max() compiles to branches here)
            r = err[k] / sc
            out[l] += r * r
    for l in range(LANES):
        s = math.sqrt(out[l] / max(N_STATES, 1))
        out[l] = s if s <= 1.7976931348623157e308 else math.inf
    for i in range(N_STATES):
        for l in range(LANES):
            bad = not (abs(ynew[i * LANES + l]) <= 1.7976931348623157e308)
            out[l] = math.inf if bad else out[l]


@kernel_inline
def _log2(x):
    """log2(x), clamped to [-64, 64] (0 and inf included): the step factors are clamped to
    [_QMIN, _QMAX] well inside that."""
    return math.log2(min(max(x, 5.421010862427522e-20), 1.8446744073709552e+19))  # 2**-64, 2**64


@kernel_inline
def _exp2(y):
    """2**y for y clamped to [-4, 4] (the step factors are clamped to [_QMIN, _QMAX] within
    that), as exp(y ln 2)."""
    return math.exp(min(max(y, -4.0), 4.0) * 0.6931471805599453)


@kernel_inline
def _step_factor(err, le, le_prev, k, after_reject):
    """Tsit5's step-size factor after an attempt with error norm ``err``; ``le`` =
    _log2(err), ``le_prev`` = that of the previous accepted step, floored at
    _LOG2_ERR_PREV_MIN (0 after a restart: an error norm of 1).

    Accepted (err <= 1): PI control, 0.9 * err^(-beta1/k) * err_prev^(beta2/k), no growth
    after a rejection (it settles at an error norm of 0.9^(k/(beta1 - beta2)) = 0.17 for
    k = 5, as OrdinaryDiffEq's PI controller does).
    Rejected: I control, 0.9 * err^(-1/k), a decrease; _QMIN for a non-finite err (inf from
    _error_norm). Computed as 2^(log2 0.9 + ...) with _log2 and _exp2: one log and one exp
    per step (the logarithm is remembered for the next step), where the usual form takes two
    pow calls.
    """
    # err = 0 or inf: le is clamped to -64 or 64, and the factor then to _QMAX or _QMIN
    if err <= 1.0:
        x = _LOG2_SAFETY + ((_BETA2 / k) * le_prev - (_BETA1 / k) * le)
        fac = min(_QMAX, max(_QMIN, _exp2(x)))
        if after_reject:
            fac = min(fac, 1.0)
    else:
        fac = min(1.0, max(_QMIN, _exp2(_LOG2_SAFETY - le / k)))
    return fac


# x^(-1/5) on [1/2, 1]: least-squares cubic (relative error < 2.6e-4), Newton's start
_ROOT5_C3 = -0.23858327489959688
_ROOT5_C2 = 0.7762903813472111
_ROOT5_C1 = -1.044097519640924
_ROOT5_C0 = 1.5062000357155716


@kernel_inline
def _rodas_factor(err, after_reject):
    """Rodas5P's step-size factor after an attempt with error norm ``err`` (k = 5; I control,
    as Hairer's RODAS): 0.9 err^(-1/5) within [_QMIN, _QMAX], at most 1 after a rejection and
    for a rejected step (err > 1); _QMIN for err = inf.

    err^(-1/5) by arithmetic and selects only, so that the lanes' loops over it run in SIMD
    vectors (libm's log and exp were 12% of the lane path's time): _root5_scale, then
    _root5_factor (_lane_step_factors runs each over all lanes in turn).
    """
    x, q = _root5_scale(err)
    return _root5_factor(err, x, q, after_reject)


@kernel_inline
def _root5_scale(err):
    """(x, q) with err^(-1/5) = q x^(-1/5) and x in [1/2, 1]: err clamped to [2^-20, 2^15]
    (the factor's clamps lie inside) and scaled by powers of two (the root of each power a
    constant)."""
    x = min(max(err, 9.5367431640625e-07), 32768.0) * 3.0517578125e-05  # in [2^-35, 1]
    q = 0.125  # (2^15)^(-1/5)
    c = x < 9.5367431640625e-07  # 2^-20
    x = x * 1048576.0 if c else x
    q = q * 16.0 if c else q
    c = x < 0.0009765625  # 2^-10
    x = x * 1024.0 if c else x
    q = q * 4.0 if c else q
    c = x < 0.03125  # 2^-5
    x = x * 32.0 if c else x
    q = q * 2.0 if c else q
    c = x < 0.0625  # 2^-4
    x = x * 16.0 if c else x
    q = q * 1.7411011265922482 if c else q  # 2^(4/5)
    c = x < 0.25
    x = x * 4.0 if c else x
    q = q * 1.3195079107728942 if c else q  # 2^(2/5)
    c = x < 0.5
    x = x * 2.0 if c else x
    q = q * 1.148698354997035 if c else q  # 2^(1/5)
    return x, q


@kernel_inline
def _root5_factor(err, x, q, after_reject):
    """_rodas_factor from _root5_scale(err) = (x, q): two Newton steps z <- z (6 - x z^5) / 5
    for x^(-1/5) from a cubic start (within 2e-13 of pow(err, -0.2)), then the clamps."""
    z = ((_ROOT5_C3 * x + _ROOT5_C2) * x + _ROOT5_C1) * x + _ROOT5_C0
    z2 = z * z
    z = z * (6.0 - x * (z2 * z2 * z)) * 0.2
    z2 = z * z
    z = z * (6.0 - x * (z2 * z2 * z)) * 0.2
    hi = _QMAX if (err <= 1.0) & (not after_reject) else 1.0
    return min(hi, max(_QMIN, 0.9 * (q * z)))


@kernel
def _initial_step(t, y, rate, p, f0, f1, u, atol, rtol, k, hmax, stats):
    """Hairer's starting step (HNW I, §II.4). ``f0`` is left holding f(t, y) + rate.
    (_lane_initial_step: the same for a lane.)"""
    _f(t, y, p, rate, f0, stats)
    h, d1 = _initial_guess(y, f0, atol, rtol, hmax)
    for i in range(N_STATES):
        u[i] = y[i] + h * f0[i]
    _f(t + h, u, p, rate, f1, stats)
    return _initial_refine(h, d1, y, f0, f1, atol, rtol, k, hmax)


@kernel_inline
def _initial_guess(y, f0, atol, rtol, hmax):
    """The first trial step h of _initial_step from the sizes of y and f0 = f(t, y), and
    d1 = RMS of f0 / scale."""
    d0 = 0.0
    d1 = 0.0
    for i in range(N_STATES):
        sc = atol[i] + rtol * abs(y[i])
        d0 += (y[i] / sc) ** 2
        d1 += (f0[i] / sc) ** 2
    nn = max(N_STATES, 1)
    d0 = math.sqrt(d0 / nn)
    d1 = math.sqrt(d1 / nn)
    if d0 < 1e-5 or d1 < 1e-5:
        h = 1e-6
    else:
        h = 0.01 * d0 / d1
    return min(h, hmax), d1


@kernel_inline
def _initial_refine(h, d1, y, f0, f1, atol, rtol, k, hmax):
    """_initial_step's result from the trial step h and f1 = f(t + h, y + h f0)."""
    nn = max(N_STATES, 1)
    d2 = 0.0
    for i in range(N_STATES):
        sc = atol[i] + rtol * abs(y[i])
        d2 += ((f1[i] - f0[i]) / sc) ** 2
    d2 = math.sqrt(d2 / nn) / h
    dm = max(d1, d2)
    if dm <= 1e-15:
        h1 = max(1e-6, h * 1e-3)
    else:
        h1 = (0.01 / dm) ** (1.0 / k)
    return min(100.0 * h, h1, hmax)


# --- Rodas5P (stiff, Rosenbrock with the analytic Jacobian) ------------------------------


@kernel
def _rodas_prepare(t, y, p, rate, J, Jv, dT, f0, scratch, stats):
    """Per-point work, reused by every attempt from (t, y): f0 = f(t, y) + rate, the
    Jacobian (its non-zeros ``Jv`` with a sparse model, else the dense ``J``), and the time
    derivative f_t (forward difference; zero if the rhs ignores t)."""
    _f(t, y, p, rate, f0, stats)
    if _SPARSE_LU:
        jac_nz_k(t, y, p, Jv)
    else:
        jac_k(t, y, p, J)
    stats[_S_JAC] += 1
    if _RHS_USES_T:
        dt = math.sqrt(_EPS) * max(1e-5, abs(t))
        _f(t + dt, y, p, rate, scratch, stats)
        for i in range(N_STATES):
            dT[i] = (scratch[i] - f0[i]) / dt
    else:
        for i in range(N_STATES):
            dT[i] = 0.0


@kernel
def _rodas_step(t, h, y, p, rate, f0, J, Jv, dT, W, Wv, piv, K, u, fu, ynew, err, stats):
    """One Rodas5P step of size h from (t, y). Fills ynew, err and the stage increments K.

    ``f0``, ``J``/``Jv`` and ``dT`` come from ``_rodas_prepare`` at (t, y).

    Returns 0, or 1 if ``I/(h gamma) - J`` could not be factorised.
    """
    n = N_STATES
    mode = _w_factor(1.0 / (h * RODAS5P_GAMMA), J, Jv, W, Wv, piv, stats)
    if mode == 2:
        return 1
    inv_h = 1.0 / h
    for s in range(RODAS5P_STAGES):
        # The stage sums are straight-line code generated from the tableau
        # (build.stage_source: _rodas_u, _rodas_k), one register sum per state.
        Ks = K[s]
        if s == 0:
            for i in range(n):
                Ks[i] = f0[i]
        else:
            _rodas_u(s, y, K, u)
            _f(t + RODAS5P_C[s] * h, u, p, rate, fu, stats)
            _rodas_k(s, inv_h, fu, K)
        if _RHS_USES_T:
            hd = h * RODAS5P_D[s]
            for i in range(n):
                Ks[i] += hd * dT[i]
        _w_solve(mode, W, Wv, piv, Ks)
    last = RODAS5P_STAGES - 1
    for i in range(n):
        ynew[i] = u[i] + K[last, i]
        err[i] = K[last, i]
    return 0


@kernel
def _rodas_dense_prepare(K, dense):
    """Dense-output vectors h_r = sum_j H[r, j] k_j of an accepted step."""
    for r in range(3):
        for i in range(N_STATES):
            acc = 0.0
            for j in range(RODAS5P_STAGES):
                acc += RODAS5P_H[r, j] * K[j, i]
            dense[r, i] = acc
    return


@kernel
def _rodas_dense(theta, y0, y1, dense, out):
    th1 = 1.0 - theta
    for i in range(N_STATES):
        out[i] = th1 * y0[i] + theta * (
            y1[i] + th1 * (dense[0, i] + theta * (dense[1, i] + theta * dense[2, i]))
        )


# --- Tsit5 (explicit, FSAL) ----------------------------------------------------------------


@kernel
def _tsit5_step(t, h, y, p, rate, K, u, ynew, err, stats):
    """One Tsit5 step. ``K[0]`` must hold f(t, y) + rate; leaves K[last] = f(t+h, ynew)."""
    n = N_STATES
    for s in range(1, TSIT5_STAGES):
        _tsit5_u(s, h, y, K, u)  # generated from the tableau (build.stage_source)
        _f(t + TSIT5_C[s] * h, u, p, rate, K[s], stats)
    for i in range(n):
        ynew[i] = u[i]  # last stage is evaluated at y1 (FSAL)
    _tsit5_err(h, K, err)
    return 0


@kernel
def _tsit5_dense(theta, h, y0, K, out):
    for i in range(N_STATES):
        acc = 0.0
        for j in range(TSIT5_STAGES):
            bj = theta * (
                TSIT5_DENSE[j, 0]
                + theta * (TSIT5_DENSE[j, 1] + theta * (TSIT5_DENSE[j, 2] + theta * TSIT5_DENSE[j, 3]))
            )
            acc += bj * K[j, i]
        out[i] = y0[i] + h * acc


# --- events and output recording ----------------------------------------------------------


@kernel
def _apply_events(t, ie, ev_time, ev_kind, ev_state, ev_value, y, rate, y0, p):
    """Apply events ie, ie+1, ... with time <= t in array order; return the next index.

    ``p`` is the subject's working copy of its parameters, extended by ``N_DERIVED`` derived
    values (EV_PARAM sets a parameter from here on, and the derived values are recomputed).
    """
    n_ev = ev_time.shape[0]
    while ie < n_ev and ev_time[ie] <= t:
        kind = ev_kind[ie]
        s = ev_state[ie]
        if kind == EV_BOLUS:
            if 0 <= s < N_STATES:
                y[s] += ev_value[ie]
        elif kind == EV_RATE:
            if 0 <= s < N_STATES:
                rate[s] += ev_value[ie]
                on = 0.0
                for i in range(N_STATES):
                    if rate[i] != 0.0:
                        on = 1.0
                rate[N_STATES] = on
        elif kind == EV_RESET:
            for i in range(N_STATES):
                y[i] = y0[i]
                rate[i] = 0.0
            rate[N_STATES] = 0.0
        elif kind == EV_PARAM:
            if 0 <= s < p.shape[0] - N_DERIVED:
                p[s] = ev_value[ie]
                derive(p)
        ie += 1
    return ie


@kernel
def _record_upto(t, io, t_out, y, y_out):
    """Copy y into every output row with t_out <= t; return the next output index."""
    n_out = t_out.shape[0]
    while io < n_out and t_out[io] <= t:
        for i in range(N_STATES):
            y_out[io, i] = y[i]
        io += 1
    return io


# --- the integration loop ------------------------------------------------------------------


@kernel
def _integrate(method, adaptive, t0, y0, p, t_out, ev_time, ev_kind, ev_state, ev_value,
               rtol, atol, h0, hmax, max_steps, y_out, stats, fstats,
               y, ynew, rate, K, u, fu, f0, err, dT, J, Jv, W, Wv, piv, dense):
    """Integration loop over preallocated work arrays (see ``solve_subject``)."""
    n = N_STATES
    n_out = t_out.shape[0]
    n_ev = ev_time.shape[0]
    for i in range(min(stats.shape[0], _S_LU_FALLBACK + 1)):
        stats[i] = 0
    fstats[0] = t0
    fstats[1] = 0.0
    for i in range(n):
        y[i] = y0[i]
        rate[i] = 0.0
    rate[n] = 0.0  # no input on
    if n_out == 0:
        return OK
    t_end = t_out[n_out - 1]
    if method == METHOD_RODAS:
        k_err = float(RODAS5P_ERR_ORDER)
    else:
        k_err = float(TSIT5_ERR_ORDER)
    h_max = hmax if hmax > 0.0 else math.inf
    stretch = _FINAL_STRETCH if adaptive != 0 else 1.0 + 1e-9

    t = t0
    ie = _apply_events(t, 0, ev_time, ev_kind, ev_state, ev_value, y, rate, y0, p)
    io = _record_upto(t, 0, t_out, y, y_out)

    status = OK
    need_h = adaptive != 0  # the step is chosen at the start (and at Rodas5P's restarts)
    h = min(h0 if h0 > 0.0 else 0.0, h_max)  # fixed steps
    if adaptive == 0 and not (h0 > 0.0):
        status = STEP_TOO_SMALL
    le_prev = 0.0  # log2 of the previous accepted step's error norm (1 at a start)
    h_first = 0.0  # Rodas5P: the step chosen after the first full step accepted after the
    # latest restart (0: none yet), the step at the next restart
    first = True  # no full step accepted since the latest restart yet
    after_reject = False
    have_fsal = False  # Tsit5: K[0] = f(t, y) + rate is valid (FSAL)
    have_jac = False  # Rodas: J, dT valid at (t, y)
    n_nonfinite = 0

    while status == OK and io < n_out:
        t_stop = t_end
        if ie < n_ev and ev_time[ie] < t_stop:
            t_stop = ev_time[ie]
        while t < t_stop:
            hmin = max(16.0 * _EPS * abs(t), _HMIN_FLOOR)
            if need_h:  # h0, the step remembered from the previous restart, or Hairer's
                need_h = False
                if h0 > 0.0:
                    h = min(h0, h_max)
                elif h_first > 0.0:
                    h = h_first
                else:
                    h = _initial_step(t, y, rate, p, K[0], fu, u, atol, rtol, k_err, h_max, stats)
                    have_fsal = True
                    if not (h <= 1.7976931348623157e308):
                        status = NON_FINITE
                        break
            h_try = h
            clipped = False
            if t + stretch * h_try >= t_stop:
                h_try = t_stop - t
                clipped = True
                if h_try <= hmin:  # stop closer than floating point can resolve: jump onto it
                    t = t_stop
                    break
            if h_try < hmin:
                status = STEP_TOO_SMALL
                break
            if stats[_S_STEPS] >= max_steps:
                status = MAX_STEPS
                break
            stats[_S_STEPS] += 1

            if method == METHOD_RODAS:
                if not have_jac:
                    _rodas_prepare(t, y, p, rate, J, Jv, dT, f0, fu, stats)
                    have_jac = True
                code = _rodas_step(t, h_try, y, p, rate, f0, J, Jv, dT, W, Wv, piv, K, u, fu,
                                   ynew, err, stats)
            else:
                if not have_fsal:
                    _f(t, y, p, rate, K[0], stats)
                    have_fsal = True
                code = _tsit5_step(t, h_try, y, p, rate, K, u, ynew, err, stats)
            if code != 0:
                err_norm = math.inf
            else:
                err_norm = _error_norm(err, y, ynew, atol, rtol)

            if adaptive != 0:
                if method == METHOD_RODAS:
                    le = 0.0  # (no memory)
                    fac = _rodas_factor(err_norm, after_reject)
                else:
                    le = _log2(err_norm)
                    fac = _step_factor(err_norm, le, le_prev, k_err, after_reject)
                if not (err_norm <= 1.0):
                    stats[_S_REJECTED] += 1
                    if err_norm == math.inf:
                        n_nonfinite += 1
                    else:
                        n_nonfinite = 0
                    h = h_try * fac
                    after_reject = True
                    if n_nonfinite >= _MAX_NONFINITE_REJECTS:
                        status = NON_FINITE
                        break
                    if h < hmin:
                        status = NON_FINITE if n_nonfinite > 0 else STEP_TOO_SMALL
                        break
                    continue
                h_next = h_try * fac
                if clipped and fac >= 1.0:
                    h_next = max(h_next, h)  # a step shortened to hit a stop says little
                le_prev = max(le, _LOG2_ERR_PREV_MIN)
                after_reject = False
                n_nonfinite = 0
                if first and not clipped:
                    h_first = min(h_next, h_max)
                    first = False
            else:
                if err_norm == math.inf:
                    status = NON_FINITE
                    break
                h_next = h

            # accepted step [t, t_new]
            stats[_S_ACCEPTED] += 1
            t_new = t_stop if clipped else t + h_try
            if io < n_out and t_out[io] < t_new:
                if method == METHOD_RODAS:
                    _rodas_dense_prepare(K, dense)
                while io < n_out and t_out[io] < t_new:
                    theta = (t_out[io] - t) / h_try
                    if method == METHOD_RODAS:
                        _rodas_dense(theta, y, ynew, dense, y_out[io])
                    else:
                        _tsit5_dense(theta, h_try, y, K, y_out[io])
                    io += 1
            for i in range(n):
                y[i] = ynew[i]
            if method == METHOD_TSIT5:
                last = TSIT5_STAGES - 1
                for i in range(n):
                    K[0, i] = K[last, i]
            have_jac = False
            t = t_new
            fstats[1] = h_try
            h = min(h_next, h_max)

        if status != OK:
            break
        # at a stop: apply the events due now, restart the method (caches invalid)
        if ie < n_ev and ev_time[ie] <= t:
            ie = _apply_events(t, ie, ev_time, ev_kind, ev_state, ev_value, y, rate, y0, p)
            have_fsal = False
            have_jac = False
            after_reject = False
            le_prev = 0.0
            first = True
            if method == METHOD_RODAS and adaptive != 0:  # Rodas5P: the step chosen anew
                need_h = True
        io = _record_upto(t, io, t_out, y, y_out)
        if t >= t_end:  # only reachable with NaN or decreasing t_out (the caller validates)
            break

    fstats[0] = t
    for r in range(io, n_out):  # rows never reached (failure, or invalid output times)
        for i in range(n):
            y_out[r, i] = math.nan
    return status


@kernel_alloc
def solve_subject(method, adaptive, t0, y0, p, t_out, ev_time, ev_kind, ev_state, ev_value,
                  rtol, atol, h0, hmax, max_steps, y_out, stats, fstats):
    """Integrate one subject from t0 to t_out[-1]; return a status code (OK, MAX_STEPS, ...).

    method: METHOD_RODAS (Rodas5P, stiff) or METHOD_TSIT5 (explicit). adaptive: 0 -> fixed
    steps of h0 (still shortened to land on every stop). The derivative is
    rhs(t, y, p) + rate, where rate (zero at t0) is changed by EV_RATE events.

    Events (sorted by time; equal times in array order) are applied exactly at their times:
    a step never crosses one; the method restarts there, Rodas5P with h0 (if > 0) or the
    step it chose after the first full step it accepted after its previous restart (or t0),
    Tsit5 with its last step size.
    Events at or before t0 are applied at t0; events after t_out[-1] are ignored.
    Outputs come from each method's dense output; an output at an event time records the
    state after the event. Error control: RMS over states of
    err_i / (atol_i + rtol*max(|y_i|, |ynew_i|)) <= 1; h0 = 0 picks the first step
    automatically; hmax = 0 means no limit; max_steps bounds attempted steps.

    Fills y_out[n_out, N_STATES] (rows not reached are NaN), stats = [attempted, accepted,
    rejected, rhs evaluations, Jacobian evaluations, LU factorisations] (a 7th entry, if
    stats has one, counts sparse factorisations that fell back to the dense pivoted LU),
    fstats = [time reached, last accepted step]. y0 is not modified.
    """
    n = N_STATES
    # Work arrays: allocated once per subject, never inside the step loop. (A GPU port
    # replaces this prologue with cuda.local.array of the same fixed shapes.)
    y = np.empty(n)
    ynew = np.empty(n)
    rate = np.empty(n + 1)  # input rates, and a last entry saying whether any is on
    K = np.zeros((max(RODAS5P_STAGES, TSIT5_STAGES), n))
    u = np.empty(n)
    fu = np.empty(n)
    f0 = np.empty(n)
    err = np.empty(n)
    dT = np.zeros(n)
    J = np.empty((n, n))
    Jv = np.empty(JAC_NNZ)
    W = np.empty((n, n))
    Wv = np.empty(LU_NNZ)
    piv = np.empty(n, dtype=np.int64)
    dense = np.empty((3, n))
    # Working copy of the parameters (EV_PARAM events change it, never the caller's p), followed
    # by the parameter-only subexpressions of rhs/jac, computed once here instead of every call.
    pw = np.empty(p.shape[0] + N_DERIVED)
    for i in range(p.shape[0]):
        pw[i] = p[i]
    derive(pw)
    return _integrate(method, adaptive, t0, y0, pw, t_out, ev_time, ev_kind, ev_state, ev_value,
                      rtol, atol, h0, hmax, max_steps, y_out, stats, fstats,
                      y, ynew, rate, K, u, fu, f0, err, dT, J, Jv, W, Wv, piv, dense)


# --- Rodas5P over LANES subjects at once (the CPU cohort path) ------------------------------
#
# A cohort solve runs LANES subjects side by side: every array holds state i of lane l at
# [i*LANES + l], and the generated lane functions (rhs_L, jac_nz_L, lu_factor_L, lu_solve_L,
# _rodas_u_L, _rodas_k_L) do the arithmetic of one Rodas5P attempt for all lanes in one
# unrolled pass. Each lane keeps its own time, step size, events, outputs and status, and runs
# the control logic of _integrate unchanged (below, split at the step attempt), so a subject's
# result does not depend on which lane or which other subjects it ran with (bit for bit), and
# it takes solve_subject's steps with solve_subject's trajectory, to the bit (nothing is
# compiled with contraction into fused multiply-adds; build.HEADER_CPU); tests/test_lanes.py
# checks both.
# Each lane function is one loop over the lanes, which LLVM turns into SIMD vectors (it does so
# for 16 or more iterations; hence 32 lanes, _generate.lanes_for): 3.0-4.1x the throughput of
# one subject at a time on one core (benchmarks/bench_lanes.py). Used for cohorts of at least
# _FEW subjects with adaptive Rodas5P, the generated sparse LU and a right-hand side that does
# not read t (then f_t = 0); a cohort with run-time exponents other than 0..4
# (_lane_exponents_ok) runs the copy over the lane functions that call pow (_lanes_run_p,
# build.pow_lane_source); anything else goes through solve_subject.

# per-lane float state
_LF_T = 0
_LF_H = 1
_LF_HTRY = 2
_LF_TSTOP = 3
_LF_HMIN = 4
_LF_HLAST = 5  # the last accepted step (fstats[s, 1] when the subject finishes)
_LF_HFIRST = 6  # the step at the next restart (h_first of _integrate)
_LF_N = 7
# per-lane integer state
_LI_SUBJ = 0
_LI_IE = 1
_LI_IO = 2
_LI_STATUS = 3
_LI_NEEDH = 4
_LI_AFTERREJ = 5
_LI_HAVEJAC = 6
_LI_CLIPPED = 7
_LI_INNER = 8
_LI_NONFIN = 9
_LI_ACTIVE = 10
_LI_FIRST = 11  # no full step accepted since the latest restart yet (first of _integrate)
_LI_CNT = 12  # rows _LI_CNT + _S_*: the subject's counters, added to stats[s] when it finishes
_LI_N = _LI_CNT + _S_LU_FALLBACK + 1
# what _lane_to_attempt found
_LANE_ATTEMPT = 1
_LANE_DONE = 0
_LANE_NEEDH = 2  # the lane needs its first step size (_lane_initial_step)


@kernel
def _lane_get(l, a, out):
    """out[i] = a[i*LANES + l] for the N_STATES entries of lane l."""
    for i in range(N_STATES):
        out[i] = a[i * LANES + l]


@kernel
def _lane_put(l, v, a):
    """a[i*LANES + l] = v[i]."""
    for i in range(N_STATES):
        a[i * LANES + l] = v[i]


@kernel
def _lane_add_rate(out, rateL, on):
    """out += rate for the lanes whose input rates are on (``_f`` for lanes)."""
    for l in range(LANES):
        if on[l] != 0.0:
            for i in range(N_STATES):
                out[i * LANES + l] += rateL[i * LANES + l]


@kernel
def _lane_dense_factor(l, JvL, c, Jvs, W, piv):
    """Lane l's W = c*I - J, dense, factorised with partial pivoting (as _w_factor does after
    the sparse LU refuses a pivot). Returns 2, or 3 if W is singular."""
    for k in range(Jvs.shape[0]):
        Jvs[k] = JvL[k * LANES + l]
    w_dense_nz(Jvs, c, W)
    return 3 if _lu_factor(W, piv) != 0 else 2


@kernel
def _lane_w_solve(WvL, b, codeL, Wd, pivd, bd):
    """W x = b in place for every lane when some lanes' sparse LU refused a pivot
    (codeL[l] == 2): the sparse factors, and the dense ones for those lanes."""
    for l in range(LANES):
        if codeL[l] == 2:
            for i in range(N_STATES):
                bd[l, i] = b[i * LANES + l]
    lu_solve_L(WvL, b)
    for l in range(LANES):
        if codeL[l] == 2:
            _lu_solve(Wd[l], pivd[l], bd[l])
            for i in range(N_STATES):
                b[i * LANES + l] = bd[l, i]


@kernel_inline
def _lane_solve(WvL, b, n_dense, codeL, Wd, pivd, bd):
    """W x = b in place for every lane: the sparse solve called directly, or _lane_w_solve when
    n_dense lanes took the dense LU (its many arguments cost 50 pushes a call)."""
    if n_dense > 0:
        _lane_w_solve(WvL, b, codeL, Wd, pivd, bd)
    else:
        lu_solve_L(WvL, b)


@kernel
def _lane_initial_step(l, t, tL, yL, pL, rateL, ron, uL, fuL, ys, f0s, f1s, atol, rtol, k, hmax,
                       stats):
    """_initial_step for lane l, with f from the lane function (rhs_L over every lane, lane l
    taken: rhs_k's arithmetic, so the same bits), so that the lane path compiles no scalar
    right-hand side. Uses tL, uL and fuL as scratch (free between attempts)."""
    tL[l] = t
    rhs_L(tL, yL, pL, fuL)
    _lane_add_rate(fuL, rateL, ron)
    _lane_get(l, fuL, f0s)
    _lane_get(l, yL, ys)
    stats[_S_RHS] += 1
    h, d1 = _initial_guess(ys, f0s, atol, rtol, hmax)
    for i in range(N_STATES):
        uL[i * LANES + l] = ys[i] + h * f0s[i]
    tL[l] = t + h
    rhs_L(tL, uL, pL, fuL)
    _lane_add_rate(fuL, rateL, ron)
    _lane_get(l, fuL, f1s)
    stats[_S_RHS] += 1
    return _initial_refine(h, d1, ys, f0s, f1s, atol, rtol, k, hmax)


@kernel
def _lane_attempt(tL, hL, act, yL, pL, rateL, ron, any_on, KL, uL, fuL, JvL, WvL, cL, ihL,
                  codeL, ynewL, errL, Jvs, Wd, pivd, bd):
    """One Rodas5P attempt of size hL[l] from (tL[l], yL) in every lane: f and the Jacobian
    at the start point, W = I/(h gamma) - J factorised, the stages, ynewL and errL. codeL[l]:
    0 the sparse LU; 2 where it refused a pivot in an attempting lane (act[l] != 0), which then
    takes the dense pivoted LU, as solve_subject does; 3 if that W is singular (the lane's
    numbers are then meaningless)."""
    nl = N_STATES * LANES
    for l in range(LANES):
        cL[l] = 1.0 / (hL[l] * RODAS5P_GAMMA)
        ihL[l] = 1.0 / hL[l]
    rhs_L(tL, yL, pL, KL[0:nl])
    if any_on:
        _lane_add_rate(KL[0:nl], rateL, ron)
    jac_nz_L(tL, yL, pL, JvL)
    lu_factor_L(JvL, cL, WvL, codeL)
    n_dense = 0
    for l in range(LANES):
        if codeL[l] != 0:
            if act[l] != 0:
                codeL[l] = _lane_dense_factor(l, JvL, cL[l], Jvs, Wd[l], pivd[l])
                n_dense += 1
            else:
                codeL[l] = 0  # an idle lane: its numbers are not used
    _lane_solve(WvL, KL[0:nl], n_dense, codeL, Wd, pivd, bd)
    for s in range(1, RODAS5P_STAGES):
        _rodas_u_L(s, yL, KL, uL)
        rhs_L(tL, uL, pL, fuL)
        if any_on:
            _lane_add_rate(fuL, rateL, ron)
        _rodas_k_L(s, ihL, fuL, KL)
        _lane_solve(WvL, KL[s * nl:(s + 1) * nl], n_dense, codeL, Wd, pivd, bd)
    last = (RODAS5P_STAGES - 1) * nl
    for k in range(nl):
        ynewL[k] = uL[k] + KL[last + k]
        errL[k] = KL[last + k]


@kernel
def _lane_events(l, t, li, ev_time, ev_kind, ev_state, ev_value, yL, rateL, ron, y0, pl, pL, ys, rates):
    """_apply_events for lane l (on gathered copies); updates the lane's state, input rates
    and parameters (``pl`` its contiguous copy, mirrored into ``pL``)."""
    _lane_get(l, yL, ys)
    _lane_get(l, rateL, rates)
    rates[N_STATES] = ron[l]
    li[_LI_IE, l] = _apply_events(t, li[_LI_IE, l], ev_time, ev_kind, ev_state, ev_value, ys, rates, y0, pl)
    _lane_put(l, ys, yL)
    _lane_put(l, rates, rateL)
    ron[l] = rates[N_STATES]
    for k in range(pl.shape[0]):
        pL[k * LANES + l] = pl[k]


@kernel
def _lane_record(l, t, li, t_out, yL, ys, y_out):
    _lane_get(l, yL, ys)
    li[_LI_IO, l] = _record_upto(t, li[_LI_IO, l], t_out, ys, y_out)


@kernel_inline
def _lane_to_attempt(l, lf, li, t_out, ev_time, ev_kind, ev_state, ev_value, a, b, Y0, max_steps,
                     yL, rateL, ron, Pl, pL, Y_out, ys, rates):
    """Run lane l's control logic (that of _integrate) up to its next step attempt.

    Its subject s = li[_LI_SUBJ, l] has the events ev_*[a:b]. The arrays are the cohort's
    (``Y0``, ``Y_out``) and the block's (``Pl``): they are sliced only where an
    event or an output needs it, not on every step (slices of nine arrays were a third of
    this loop's time). Returns _LANE_ATTEMPT with lf[_LF_HTRY, l] set and the attempt
    counted, _LANE_NEEDH where _integrate chooses its step size (at the start and after
    events; the caller does: h0, the lane's step chosen after its first full step since its
    previous restart, or _lane_initial_step; and calls again), or _LANE_DONE when the subject
    has finished (status in li[_LI_STATUS, l]).
    """
    s = li[_LI_SUBJ, l]
    n_out = t_out.shape[0]
    n_ev = b - a
    t_end = t_out[n_out - 1]
    while True:
        if li[_LI_STATUS, l] != OK:  # a rejection ended the subject (_integrate's break)
            return _LANE_DONE
        if li[_LI_INNER, l] == 0:  # top of the outer loop
            if li[_LI_STATUS, l] != OK or li[_LI_IO, l] >= n_out:
                return _LANE_DONE
            t_stop = t_end
            ie = li[_LI_IE, l]
            if ie < n_ev and ev_time[a + ie] < t_stop:
                t_stop = ev_time[a + ie]
            lf[_LF_TSTOP, l] = t_stop
            li[_LI_INNER, l] = 1
        t = lf[_LF_T, l]
        t_stop = lf[_LF_TSTOP, l]
        leave = False  # leave the inner loop (to the stop handling, or finish on a status)
        if not (t < t_stop):
            leave = True
        else:
            hmin = max(16.0 * _EPS * abs(t), _HMIN_FLOOR)
            lf[_LF_HMIN, l] = hmin
            if li[_LI_NEEDH, l] != 0:  # the caller computes the first step, and calls again
                return _LANE_NEEDH
            if not leave:
                h = lf[_LF_H, l]
                h_try = h
                li[_LI_CLIPPED, l] = 0
                if t + _FINAL_STRETCH * h_try >= t_stop:
                    h_try = t_stop - t
                    li[_LI_CLIPPED, l] = 1
                    if h_try <= hmin:
                        lf[_LF_T, l] = t_stop
                        leave = True
                if not leave:
                    if h_try < hmin:
                        li[_LI_STATUS, l] = STEP_TOO_SMALL
                        leave = True
                    elif li[_LI_CNT + _S_STEPS, l] >= max_steps:
                        li[_LI_STATUS, l] = MAX_STEPS
                        leave = True
                    else:
                        li[_LI_CNT + _S_STEPS, l] += 1
                        lf[_LF_HTRY, l] = h_try
                        return _LANE_ATTEMPT
        # the inner loop is left
        li[_LI_INNER, l] = 0
        if li[_LI_STATUS, l] != OK:
            return _LANE_DONE
        t = lf[_LF_T, l]
        ie = li[_LI_IE, l]
        if ie < n_ev and ev_time[a + ie] <= t:
            _lane_events(l, t, li, ev_time[a:b], ev_kind[a:b], ev_state[a:b], ev_value[a:b], yL,
                         rateL, ron, Y0[s], Pl[l], pL, ys, rates)
            li[_LI_HAVEJAC, l] = 0
            li[_LI_AFTERREJ, l] = 0
            li[_LI_NEEDH, l] = 1  # the step chosen anew (the caller), as _integrate does
            li[_LI_FIRST, l] = 1
        _lane_record(l, t, li, t_out, yL, ys, Y_out[s])
        if t >= t_end:
            return _LANE_DONE


@kernel
def _lane_plan(lf, li, max_steps, act, tL, hL):
    """The common case of _lane_to_attempt for every lane in one pass: a lane inside a
    stretch between stops, with its step size known, whose next step neither reaches the
    stop nor is too small nor over max_steps, attempts h (act[l] = 1, counted). Every other
    lane (act[l] = 0) goes through _lane_to_attempt. Selects only, no branch per lane (the
    scalar logic mispredicts; too many arrays for LLVM to vectorise it: 50 ns for 32 lanes)."""
    for l in range(LANES):
        t = lf[_LF_T, l]
        h = lf[_LF_H, l]
        hmin = max(16.0 * _EPS * abs(t), _HMIN_FLOOR)
        go = ((li[_LI_ACTIVE, l] != 0) & (li[_LI_INNER, l] != 0) & (li[_LI_STATUS, l] == OK)
              & (li[_LI_NEEDH, l] == 0) & (t + _FINAL_STRETCH * h < lf[_LF_TSTOP, l])
              & (h >= hmin) & (li[_LI_CNT + _S_STEPS, l] < max_steps))
        act[l] = 1 if go else 0
        lf[_LF_HMIN, l] = hmin if go else lf[_LF_HMIN, l]
        lf[_LF_HTRY, l] = h if go else lf[_LF_HTRY, l]
        li[_LI_CLIPPED, l] = 0 if go else li[_LI_CLIPPED, l]
        li[_LI_CNT + _S_STEPS, l] += 1 if go else 0
        hL[l] = h if go else hL[l]
        tL[l] = t if go else tL[l]


@kernel
def _lane_update(act, code, en, fac, lf, li, t_out, h_max, acc):
    """_integrate's accept/reject logic after an attempt, for every lane in one pass, and the
    counters of every attempt (as _rodas_prepare, _w_factor and _rodas_step count them), with
    the step factors of _lane_step_factors. acc[l] = 1 where the step is accepted (the caller
    then moves ynewL into yL, _lane_accept), and act[l] = 2 where it also passes output times
    (the caller records them, _lane_outputs, from the attempt's start tL[l]). Selects only,
    no branch per lane (the scalar logic mispredicts; too many arrays for LLVM to vectorise
    it: about 130 ns for 32 lanes)."""
    n_out = t_out.shape[0]
    for l in range(LANES):
        a = act[l] != 0
        c = code[l]
        first = a & (li[_LI_HAVEJAC, l] == 0)  # f and the Jacobian at a new point
        li[_LI_CNT + _S_RHS, l] += (1 if first else 0) + (RODAS5P_STAGES - 1 if a & (c != 3) else 0)
        li[_LI_CNT + _S_JAC, l] += 1 if first else 0
        li[_LI_CNT + _S_LU, l] += 1 if a else 0
        li[_LI_CNT + _S_LU_FALLBACK, l] += 1 if a & (c != 0) else 0
        e = en[l]
        f = fac[l]
        h_try = lf[_LF_HTRY, l]
        h = lf[_LF_H, l]
        hf = h_try * f
        take = a & (e <= 1.0)
        drop = a & (~(e <= 1.0))
        # accepted: the next step, the new time, whether output times lie inside the step
        clipped = li[_LI_CLIPPED, l] != 0
        h_next = max(hf, h) if clipped & (f >= 1.0) else hf  # a clipped step says little
        t_new = lf[_LF_TSTOP, l] if clipped else lf[_LF_T, l] + h_try
        io = li[_LI_IO, l]
        due = (io < n_out) & (t_out[min(max(io, 0), n_out - 1)] < t_new)
        # rejected: consecutive non-finite errors, and a status if the subject must stop
        nonfin = li[_LI_NONFIN, l] + 1 if e == math.inf else 0
        status = li[_LI_STATUS, l]
        if hf < lf[_LF_HMIN, l]:
            status = NON_FINITE if nonfin > 0 else STEP_TOO_SMALL
        if nonfin >= _MAX_NONFINITE_REJECTS:
            status = NON_FINITE
        lf[_LF_H, l] = min(h_next, h_max) if take else (hf if drop else h)
        lf[_LF_T, l] = t_new if take else lf[_LF_T, l]
        lf[_LF_HLAST, l] = h_try if take else lf[_LF_HLAST, l]
        rec = take & (li[_LI_FIRST, l] != 0) & (li[_LI_CLIPPED, l] == 0)
        lf[_LF_HFIRST, l] = min(h_next, h_max) if rec else lf[_LF_HFIRST, l]
        li[_LI_FIRST, l] = 0 if rec else li[_LI_FIRST, l]
        li[_LI_STATUS, l] = status if drop else li[_LI_STATUS, l]
        li[_LI_AFTERREJ, l] = 0 if take else (1 if drop else li[_LI_AFTERREJ, l])
        li[_LI_NONFIN, l] = 0 if take else (nonfin if drop else li[_LI_NONFIN, l])
        li[_LI_HAVEJAC, l] = 0 if take else (1 if a else li[_LI_HAVEJAC, l])
        li[_LI_CNT + _S_ACCEPTED, l] += 1 if take else 0
        li[_LI_CNT + _S_REJECTED, l] += 1 if drop else 0
        acc[l] = 1 if take else 0
        act[l] = 2 if take & due else act[l]


@kernel
def _lane_step_factors(en, code, li, fac, xs):
    """fac[l] = _rodas_factor of lane l, for every lane: the same arithmetic as solve_subject's,
    so the same bits, in two passes (_root5_scale, then _root5_factor; ``xs`` scratch) that run
    in SIMD vectors: one pass over both took 4 times as long (180 ns for 32 lanes). An attempt
    whose W was singular (code 3) gets en = inf."""
    for l in range(LANES):
        e = math.inf if code[l] == 3 else en[l]
        en[l] = e
        x, q = _root5_scale(e)
        xs[l] = x
        fac[l] = q
    for l in range(LANES):
        fac[l] = _root5_factor(en[l], xs[l], fac[l], li[_LI_AFTERREJ, l] != 0)


@kernel
def _lane_outputs(l, t, li, t_out, yL, ynewL, KL, h_try, t_new, y_out, ys, ynews, Ks, dense):
    """Record lane l's output times inside its accepted step [t, t_new] (Rodas5P's dense
    output, as _integrate does), before ynewL moves into yL."""
    nl = N_STATES * LANES
    for j in range(RODAS5P_STAGES):
        for i in range(N_STATES):
            Ks[j, i] = KL[j * nl + i * LANES + l]
    _rodas_dense_prepare(Ks, dense)
    _lane_get(l, yL, ys)
    _lane_get(l, ynewL, ynews)
    n_out = t_out.shape[0]
    io = li[_LI_IO, l]
    while io < n_out and t_out[io] < t_new:
        theta = (t_out[io] - t) / h_try
        _rodas_dense(theta, ys, ynews, dense, y_out[io])
        io += 1
    li[_LI_IO, l] = io


@kernel
def _lane_accept(acc, yL, ynewL):
    """yL = ynewL in the lanes whose step was accepted (acc[l] != 0). (Lane by lane: 32 ns
    for 12 states; a loop over the lanes inside one over the states, with a select or a
    conditional store, is unrolled into 32 branches per state and takes 90 ns.)"""
    for l in range(LANES):
        if acc[l] != 0:
            for i in range(N_STATES):
                yL[i * LANES + l] = ynewL[i * LANES + l]


@kernel
def _lane_start(l, s, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state, ev_value, lf, li,
                yL, rateL, ron, Pl, pL, Y_out, stats, fstats, ys, rates):
    """Put subject s into lane l: initial state, parameters (with derived values), the events
    at t0 and the outputs up to t0, as _integrate begins."""
    li[_LI_SUBJ, l] = s
    li[_LI_ACTIVE, l] = 1
    st = stats[s]
    for i in range(min(st.shape[0], _S_LU_FALLBACK + 1)):
        st[i] = 0
    fstats[s, 0] = t0
    fstats[s, 1] = 0.0
    for i in range(N_STATES):
        yL[i * LANES + l] = Y0[s, i]
        rateL[i * LANES + l] = 0.0
    ron[l] = 0.0
    pl = Pl[l]
    for k in range(P.shape[1]):
        pl[k] = P[s, k]
    derive(pl)
    for k in range(pl.shape[0]):
        pL[k * LANES + l] = pl[k]
    for i in range(_S_LU_FALLBACK + 1):
        li[_LI_CNT + i, l] = 0
    lf[_LF_HLAST, l] = 0.0
    lf[_LF_HFIRST, l] = 0.0
    li[_LI_FIRST, l] = 1
    lf[_LF_T, l] = t0
    li[_LI_STATUS, l] = OK
    li[_LI_INNER, l] = 0
    li[_LI_AFTERREJ, l] = 0
    li[_LI_HAVEJAC, l] = 0
    li[_LI_NONFIN, l] = 0
    li[_LI_IE, l] = 0
    li[_LI_IO, l] = 0
    li[_LI_NEEDH, l] = 1  # _lanes_run chooses the first step, as _integrate does
    lf[_LF_H, l] = 0.0
    if t_out.shape[0] == 0:  # nothing to record: _lanes_run finishes the subject at once
        return
    a = ev_ptr[s]
    b = ev_ptr[s + 1]
    _lane_events(l, t0, li, ev_time[a:b], ev_kind[a:b], ev_state[a:b], ev_value[a:b], yL, rateL,
                 ron, Y0[s], pl, pL, ys, rates)
    _lane_record(l, t0, li, t_out, yL, ys, Y_out[s])


@kernel
def _lane_finish(l, lf, li, Y_out, stats, fstats, status):
    """Close lane l's subject as _integrate ends: time reached, last step, counters, rows not
    reached are NaN."""
    s = li[_LI_SUBJ, l]
    fstats[s, 0] = lf[_LF_T, l]
    fstats[s, 1] = lf[_LF_HLAST, l]
    for i in range(min(stats.shape[1], _S_LU_FALLBACK + 1)):
        stats[s, i] += li[_LI_CNT + i, l]
    n_out = Y_out.shape[1]
    for r in range(li[_LI_IO, l], n_out):
        for i in range(N_STATES):
            Y_out[s, r, i] = math.nan
    status[s] = li[_LI_STATUS, l] if n_out > 0 else OK
    li[_LI_ACTIVE, l] = 0


_FEW = 32  # cohorts of fewer subjects go one subject at a time (_solve_each)


def solve_cohort(method, adaptive, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state,
                 ev_value, rtol, atol, h0, hmax, max_steps, Y_out, status, stats, fstats):
    """solve_subject for every subject in parallel; subject i's events are ev_*[ev_ptr[i]:ev_ptr[i+1]].

    Adaptive Rodas5P runs LANES subjects at a time where the model allows (``_LANES_OK``),
    in blocks of up to ``_LANE_BLOCK`` subjects per thread, with the results of solve_subject to
    the bit. Everything else goes one subject at a time (_solve_each), and so do cohorts of
    fewer than ``_FEW`` subjects while this process has not compiled (or loaded) the lane
    driver: a lane group costs as much as 7-8 subjects one at a time, so the lanes would save
    such a cohort milliseconds, and their driver is most of a model's cold compile; once it is
    there (a large cohort's last chunk, the few of its subjects that progressed), it spares
    compiling solve_subject as well. A plain Python switch, so that only the path used is
    compiled.
    """
    if _LANES_OK and method == METHOD_RODAS and adaptive != 0:
        general = not _lane_exponents_ok(P, ev_ptr, ev_kind, ev_state, ev_value)
        if Y0.shape[0] >= _FEW or _lanes_ready(general):
            _solve_cohort_lanes(t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state, ev_value,
                                rtol, atol, h0, hmax, max_steps, Y_out, status, stats, fstats,
                                general)
            return
    _solve_each(method, adaptive, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state,
                ev_value, rtol, atol, h0, hmax, max_steps, Y_out, status, stats, fstats)


def _lanes_ready(general):
    """Whether this process has compiled (or loaded from numba's cache) the lane driver a
    cohort with run-time exponents ``general`` would run."""
    return len((_lanes_run_p if general else _lanes_run).signatures) > 0  # noqa: F821


def _on_threads(task, n_tasks):
    """task(k) for k in range(n_tasks) on numba's thread count (``numba.get_num_threads()``)
    of Python threads; the tasks run compiled code without the GIL. (Plain threads instead of
    prange loops: numba's parallel machinery added seconds of compile time to every model, for
    no gain on independent tasks.)"""
    from concurrent.futures import ThreadPoolExecutor

    from numba import get_num_threads

    threads = min(get_num_threads(), n_tasks)
    if threads <= 1:
        for k in range(n_tasks):
            task(k)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(task, range(n_tasks)):
            pass


def _solve_each(method, adaptive, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state,
                ev_value, rtol, atol, h0, hmax, max_steps, Y_out, status, stats, fstats):
    """solve_cohort one subject at a time: blocks of subjects (_solve_block, up to 32, at
    least 4 blocks per thread) on numba's thread count. One compiled loop per block, not a
    Python call per subject: per-subject calls contend for the GIL, and 2 threads ran them
    1.3-1.75x as fast as one, blocks 1.94-2.0x (Tsit5, bench12, 400 subjects)."""
    from numba import get_num_threads

    n_subj = Y0.shape[0]
    per = max(1, min(32, n_subj // (4 * get_num_threads())))

    def block(k):
        _solve_block(method, adaptive, t0, k * per, min(n_subj, (k + 1) * per), Y0, P, t_out,
                     ev_ptr, ev_time, ev_kind, ev_state, ev_value, rtol, atol, h0, hmax,
                     max_steps, Y_out, status, stats, fstats)

    _on_threads(block, -(-n_subj // per))


@kernel_alloc
def _solve_block(method, adaptive, t0, s_begin, s_end, Y0, P, t_out, ev_ptr, ev_time, ev_kind,
                 ev_state, ev_value, rtol, atol, h0, hmax, max_steps, Y_out, status, stats,
                 fstats):
    """solve_subject for subjects s_begin..s_end-1 (a thread task of _solve_each)."""
    for s in range(s_begin, s_end):
        a = ev_ptr[s]
        b = ev_ptr[s + 1]
        status[s] = solve_subject(method, adaptive, t0, Y0[s], P[s], t_out, ev_time[a:b],
                                  ev_kind[a:b], ev_state[a:b], ev_value[a:b], rtol, atol, h0,
                                  hmax, max_steps, Y_out[s], stats[s], fstats[s])


def _lane_exponents_ok(P, ev_ptr, ev_kind, ev_state, ev_value):
    """Whether every run-time exponent the lane functions raise to (LANE_POW_EXPONENTS: Hill
    coefficients, or derived values such as n - 1) is 0, 1, 2, 3 or 4 for every subject, from
    its parameters and after each of its parameter events: the lane functions compute those
    powers as products (_powi). Other cohorts take the lane functions that call pow."""
    if len(LANE_POW_EXPONENTS) == 0:
        return True
    idx = np.array(LANE_POW_EXPONENTS)
    n_par = P.shape[1]
    q = np.zeros(n_par + N_DERIVED)
    ok = np.array([0.0, 1.0, 2.0, 3.0, 4.0])

    def small(q):
        return bool(np.isin(q[idx], ok).all())

    for s in range(P.shape[0]):
        q[:n_par] = P[s]
        if _DERIVED:
            derive(q)
        if not small(q):
            return False
        for e in range(ev_ptr[s], ev_ptr[s + 1]):
            if ev_kind[e] == EV_PARAM:
                q[ev_state[e]] = ev_value[e]
                if _DERIVED:
                    derive(q)
                if not small(q):
                    return False
    return True


def _zeros64(shape, dtype=np.float64):
    """np.zeros starting on a 64-byte boundary (a cache line, an AVX-512 vector): the lane
    functions' vector loads and stores then never straddle two lines. numpy's arrays start on
    16 bytes; aligned, the lane path runs 12-20% faster (bench12, 2,000 subjects, 1 and 2
    threads)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _solve_cohort_lanes(t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state, ev_value, rtol,
                        atol, h0, hmax, max_steps, Y_out, status, stats, fstats, general=False):
    """The lane path of solve_cohort: blocks of up to _LANE_BLOCK subjects (fewer when that
    leaves a thread without a block) on numba's thread count (_on_threads). A subject's
    results do not depend on the blocks. ``general``: the cohort has run-time exponents other
    than 0..4, so the lane functions that call pow run (_lanes_run_p, generated by
    build.pow_lane_source)."""
    from numba import get_num_threads

    run = _lanes_run_p if general else _lanes_run  # noqa: F821 (_lanes_run_p: build.pow_lane_source)
    n_subj = Y0.shape[0]
    per_block = max(LANES, min(_LANE_BLOCK, -(-n_subj // get_num_threads())))
    n_blocks = (n_subj + per_block - 1) // per_block
    h_max = hmax if hmax > 0.0 else math.inf

    def block(bk):
        n, nl = N_STATES, N_STATES * LANES
        npx = P.shape[1] + N_DERIVED
        zeros = _zeros64
        ctl = zeros(1, dtype=np.int64)  # next subject of the block
        lf = zeros((_LF_N, LANES))  # [quantity, lane]: a quantity of every lane is contiguous
        li = zeros((_LI_N, LANES), dtype=np.int64)
        f1 = [zeros(nl) for _ in range(6)]  # yL, ynewL, rateL, uL, fuL, errL
        KL = zeros(RODAS5P_STAGES * nl)
        JvL, WvL = zeros(JAC_NNZ * LANES), zeros(LU_NNZ * LANES)
        pL, Pl = zeros(npx * LANES), zeros((LANES, npx))
        ron, tL, hL, cL, ihL, enL, facL, xsL = (zeros(LANES) for _ in range(8))
        codeL = zeros(LANES, dtype=np.int64)
        ys, ynews, f0s, fus = (zeros(n) for _ in range(4))
        rates = zeros(n + 1)
        Ks = zeros((max(RODAS5P_STAGES, TSIT5_STAGES), n))
        dense = zeros((3, n))
        yL, ynewL, rateL, uL, fuL, errL = f1
        act, acc = zeros(LANES, dtype=np.int64), zeros(LANES, dtype=np.int64)
        # the dense pivoted LU of lanes whose sparse LU refuses a pivot
        Jvs, Wd, pivd, bd = (zeros(JAC_NNZ), zeros((LANES, n, n)),
                             zeros((LANES, n), dtype=np.int64), zeros((LANES, n)))
        run(bk * per_block, min(n_subj, (bk + 1) * per_block), t0, Y0, P, t_out, ev_ptr, ev_time,
            ev_kind, ev_state, ev_value, rtol, atol, h0, h_max, max_steps, Y_out, status, stats,
            fstats, ctl, lf, li, yL, ynewL, rateL, ron, KL, uL, fuL, errL, JvL, WvL, pL, Pl, tL,
            hL, cL, ihL, enL, facL, xsL, codeL, act, acc, Jvs, Wd, pivd, bd, ys, ynews, rates, f0s,
            fus, Ks, dense)

    _on_threads(block, n_blocks)


@kernel
def _lanes_run(s_begin, s_end, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state, ev_value,
               rtol, atol, h0, h_max, max_steps, Y_out, status, stats, fstats, ctl, lf, li, yL,
               ynewL, rateL, ron, KL, uL, fuL, errL, JvL, WvL, pL, Pl, tL, hL, cL, ihL, enL,
               facL, xsL, codeL, act, acc, Jvs, Wd, pivd, bd, ys, ynews, rates, f0s, fus, Ks,
               dense):
    """Subjects s_begin..s_end-1 with adaptive Rodas5P, LANES at a time, over the block's work
    arrays (compiled without numba's runtime, so the many array views cost no reference
    counting)."""
    k_err = float(RODAS5P_ERR_ORDER)
    nxt = s_begin
    for l in range(LANES):
        if nxt < s_end:
            _lane_start(l, nxt, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state,
                        ev_value, lf, li, yL, rateL, ron, Pl, pL, Y_out, stats, fstats, ys,
                        rates)
            nxt += 1
    ctl[0] = nxt
    while True:
        _lane_plan(lf, li, max_steps, act, tL, hL)
        n_active = 0
        n_on = 0  # lanes with an input rate on (a bool flag here would be typed as a literal
        # False first, and _lane_attempt compiled twice)
        for l in range(LANES):
            while act[l] == 0 and li[_LI_ACTIVE, l] != 0:
                s = li[_LI_SUBJ, l]
                r = _lane_to_attempt(l, lf, li, t_out, ev_time, ev_kind, ev_state, ev_value,
                                     ev_ptr[s], ev_ptr[s + 1], Y0, max_steps, yL, rateL, ron, Pl,
                                     pL, Y_out, ys, rates)
                if r == _LANE_ATTEMPT:
                    act[l] = 1
                    hL[l] = lf[_LF_HTRY, l]
                    tL[l] = lf[_LF_T, l]
                    break
                if r == _LANE_NEEDH:
                    if h0 > 0.0:
                        h = min(h0, h_max)
                    elif lf[_LF_HFIRST, l] > 0.0:
                        h = lf[_LF_HFIRST, l]
                    else:
                        h = _lane_initial_step(l, lf[_LF_T, l], tL, yL, pL, rateL, ron, uL, fuL,
                                               ys, f0s, fus, atol, rtol, k_err, h_max, stats[s])
                    lf[_LF_H, l] = h
                    li[_LI_NEEDH, l] = 0
                    if not (h <= 1.7976931348623157e308):
                        li[_LI_STATUS, l] = NON_FINITE
                    continue
                _lane_finish(l, lf, li, Y_out, stats, fstats, status)
                if ctl[0] < s_end:
                    _lane_start(l, ctl[0], t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind,
                                ev_state, ev_value, lf, li, yL, rateL, ron, Pl, pL, Y_out,
                                stats, fstats, ys, rates)
                    ctl[0] += 1
            if act[l] != 0:
                n_active += 1
                if ron[l] != 0.0:
                    n_on += 1
        if n_active == 0:
            return
        _lane_attempt(tL, hL, act, yL, pL, rateL, ron, n_on > 0, KL, uL, fuL, JvL, WvL, cL, ihL,
                      codeL, ynewL, errL, Jvs, Wd, pivd, bd)
        _lane_error_norms(errL, yL, ynewL, atol, rtol, enL)
        _lane_step_factors(enL, codeL, li, facL, xsL)
        _lane_update(act, codeL, enL, facL, lf, li, t_out, h_max, acc)
        for l in range(LANES):
            if act[l] == 2:
                _lane_outputs(l, tL[l], li, t_out, yL, ynewL, KL, lf[_LF_HTRY, l], lf[_LF_T, l],
                              Y_out[li[_LI_SUBJ, l]], ys, ynews, Ks, dense)
        _lane_accept(acc, yL, ynewL)


@kernel_alloc
def solve_w(J, Jv, c, b, stats):
    """Solve ``(c*I - J) x = b`` in place in ``b`` as a Rodas step does (for tests); returns
    ``_w_factor``'s code: 0 sparse, 1 dense pivoted fallback (or a model without sparse LU),
    2 singular. ``J`` is dense; ``Jv`` its non-zeros (used instead with a sparse model)."""
    n = N_STATES
    W = np.empty((n, n))
    Wv = np.empty(LU_NNZ)
    piv = np.empty(n, dtype=np.int64)
    mode = _w_factor(c, J, Jv, W, Wv, piv, stats)
    if mode != 2:
        _w_solve(mode, W, Wv, piv, b)
    return mode


_EVAL_BLOCK = 256  # subjects per thread task of eval_outputs


def eval_outputs(t_out, Y_out, P, O_out):
    """O_out[s, j] = outputs(t_out[j], Y_out[s, j], P[s]), blocks of subjects on numba's
    thread count (_on_threads; a prange loop cost 0.5 s of compile time)."""

    def block(k):
        a, b = k * _EVAL_BLOCK, min((k + 1) * _EVAL_BLOCK, Y_out.shape[0])
        _eval_outputs(t_out, Y_out[a:b], P[a:b], O_out[a:b])

    _on_threads(block, -(-Y_out.shape[0] // _EVAL_BLOCK))


@kernel
def _eval_outputs(t_out, Y_out, P, O_out):
    """eval_outputs over one block of subjects."""
    n_subj = Y_out.shape[0]
    n_out = t_out.shape[0]
    for s in range(n_subj):
        for j in range(n_out):
            outputs(t_out[j], Y_out[s, j], P[s], O_out[s, j])


@kernel
def eval_initial(P, Y0):
    """Y0[s] = initial(P[s]) for every subject (tiny work: one thread)."""
    for s in range(P.shape[0]):
        initial(P[s], Y0[s])


# --- END KERNELS ---
