"""CUDA global kernels: appended after the shared solver kernels in a generated CUDA module.

Like ``_kernel_template.py`` this file is valid Python that is never imported to run:
``build.cuda_trailer_source`` copies the text between the markers to the end of a generated
module whose header is ``build.HEADER_CUDA``. There, every ``@kernel`` function of the model
and of the solver template is a CUDA device function, and the names below are real.

One subject per thread. Arrays that all threads touch at the same index are laid out with the
subject last (``[time, variable, subject]``, ``[parameter, subject]``, ...), so that a warp's 32
threads read and write 32 consecutive doubles: coalesced. A thread's view ``Y_out[:, :, s]``
is a strided 2-D array, which the shared ``_integrate`` writes as ``y_out[io, i]`` unchanged.
Work arrays are ``cuda.local.array`` of the module's compile-time sizes (registers and local
memory), the same shapes as ``solve_subject``'s prologue allocates on the CPU.
"""

import math  # noqa: F401

from numba import cuda  # noqa: F401

N_STATES = N_PARAMS = N_OUTPUTS = N_DERIVED = JAC_NNZ = LU_NNZ = 1
RODAS5P_STAGES = TSIT5_STAGES = 1
_S_LU_FALLBACK = 6


def kernel(f):  # generated module: cuda.jit(device=True)
    return f


def _integrate(*args):  # the shared integration loop (_kernel_template.py)
    raise NotImplementedError


derive = initial = outputs = _integrate


# --- BEGIN CUDA ---
# Compile-time sizes of the per-thread work arrays (numba reads module globals as constants).
from numba import float64 as _F64  # noqa: E402
from numba import int64 as _I64  # noqa: E402

_CU_NK = max(RODAS5P_STAGES, TSIT5_STAGES)
_CU_K_SHAPE = (_CU_NK, N_STATES)
_CU_NN_SHAPE = (N_STATES, N_STATES)
_CU_DENSE_SHAPE = (3, N_STATES)
_CU_NPW = max(N_PARAMS + N_DERIVED, 1)
_CU_NO = max(N_OUTPUTS, 1)
_CU_NSTATS = _S_LU_FALLBACK + 1


@cuda.jit(cache=True)
def cuda_solve_cohort(method, adaptive, t0, Y0, P, t_out, ev_ptr, ev_time, ev_kind, ev_state,
                      ev_value, rtol, atol, h0, hmax, max_steps, Y_out, status, stats, fstats):
    """``solve_cohort`` on the GPU, subject ``s`` in thread ``s``; subject-last layouts.

    Y0[state, subject], P[parameter, subject] (N_PARAMS rows), ev_ptr[subject + 1] and the
    flat event arrays as on the CPU, Y_out[time, state, subject], status[subject],
    stats[counter, subject] (7 counters), fstats[2, subject]. The same ``_integrate`` as
    ``solve_subject``, on the same numbers: a subject's result does not depend on the others.
    """
    s = cuda.grid(1)
    if s >= P.shape[1]:
        return
    y = cuda.local.array(N_STATES, _F64)
    ynew = cuda.local.array(N_STATES, _F64)
    rate = cuda.local.array(N_STATES + 1, _F64)  # rates, and whether any is on
    K = cuda.local.array(_CU_K_SHAPE, _F64)
    u = cuda.local.array(N_STATES, _F64)
    fu = cuda.local.array(N_STATES, _F64)
    f0 = cuda.local.array(N_STATES, _F64)
    err = cuda.local.array(N_STATES, _F64)
    dT = cuda.local.array(N_STATES, _F64)
    J = cuda.local.array(_CU_NN_SHAPE, _F64)
    Jv = cuda.local.array(JAC_NNZ, _F64)
    W = cuda.local.array(_CU_NN_SHAPE, _F64)
    Wv = cuda.local.array(LU_NNZ, _F64)
    piv = cuda.local.array(N_STATES, _I64)
    dense = cuda.local.array(_CU_DENSE_SHAPE, _F64)
    pw = cuda.local.array(_CU_NPW, _F64)
    y0 = cuda.local.array(N_STATES, _F64)
    st = cuda.local.array(_CU_NSTATS, _I64)
    fst = cuda.local.array(2, _F64)
    # as solve_subject: K and dT start at zero (np.zeros there)
    for i in range(N_STATES):
        dT[i] = 0.0
        y0[i] = Y0[i, s]
        for j in range(_CU_NK):
            K[j, i] = 0.0
    for i in range(N_PARAMS):
        pw[i] = P[i, s]
    derive(pw)
    a = ev_ptr[s]
    b = ev_ptr[s + 1]
    code = _integrate(method, adaptive, t0, y0, pw[:N_PARAMS + N_DERIVED], t_out, ev_time[a:b],
                      ev_kind[a:b], ev_state[a:b], ev_value[a:b], rtol, atol, h0, hmax,
                      max_steps, Y_out[:, :, s], st, fst,
                      y, ynew, rate, K, u, fu, f0, err, dT, J, Jv, W, Wv, piv, dense)
    status[s] = code
    for i in range(_CU_NSTATS):
        stats[i, s] = st[i]
    fstats[0, s] = fst[0]
    fstats[1, s] = fst[1]


@cuda.jit(cache=True)
def cuda_eval_outputs(t_out, Y, P, O_out):
    """O_out[j, k, s] = outputs(t_out[j], Y[j, :, s], P[:, s]) (subject-last layouts)."""
    s = cuda.grid(1)
    if s >= P.shape[1]:
        return
    pw = cuda.local.array(_CU_NPW, _F64)
    y = cuda.local.array(N_STATES, _F64)
    o = cuda.local.array(_CU_NO, _F64)
    for i in range(N_PARAMS):
        pw[i] = P[i, s]
    for j in range(t_out.shape[0]):
        for i in range(N_STATES):
            y[i] = Y[j, i, s]
        outputs(t_out[j], y, pw, o)
        for k in range(N_OUTPUTS):
            O_out[j, k, s] = o[k]


@cuda.jit(cache=True)
def cuda_eval_initial(P, Y0):
    """Y0[i, s] = initial(P[:, s])."""
    s = cuda.grid(1)
    if s >= P.shape[1]:
        return
    pw = cuda.local.array(_CU_NPW, _F64)
    y0 = cuda.local.array(N_STATES, _F64)
    for i in range(N_PARAMS):
        pw[i] = P[i, s]
    initial(pw, y0)
    for i in range(N_STATES):
        Y0[i, s] = y0[i]


@cuda.jit(cache=True)
def cuda_gather(X, rows, cols, out):
    """out[a, b, s] = X[rows[a], cols[b], s]: thin a [time, variable, subject] array on the device."""
    s = cuda.grid(1)
    if s >= X.shape[2]:
        return
    for a in range(rows.shape[0]):
        r = rows[a]
        for b in range(cols.shape[0]):
            out[a, b, s] = X[r, cols[b], s]


@cuda.jit(cache=True)
def cuda_reduce(t, X, cols, i0, i1, base, out_max, out_tmax, out_min, out_auc, out_fold):
    """Per subject, over the grid rows i0 .. i1-1 of each chosen variable X[:, cols[b], s], the
    definitions of ``il2sim.endpoints.window_statistic`` on a window that starts and ends on
    grid times: maximum and minimum (NaN values skipped; NaN if all are), time of the first
    maximum from the window start, trapezoidal AUC (NaN if any value is), and the peak fold
    change max / X[base] (the value at t = 0; x/0 gives +-inf, 0/0 NaN, as numpy does)."""
    s = cuda.grid(1)
    if s >= X.shape[2]:
        return
    for b in range(cols.shape[0]):
        c = cols[b]
        mx = -math.inf
        tmx = math.nan
        mn = math.inf
        auc = 0.0
        prev = 0.0
        seen = False
        for j in range(i0, i1):
            v = X[j, c, s]
            if v == v:
                if not seen or v > mx:
                    mx = v
                    tmx = t[j] - t[i0]
                if not seen or v < mn:
                    mn = v
                seen = True
            if j > i0:
                auc += (t[j] - t[j - 1]) * (v + prev) / 2.0
            prev = v
        if not seen:
            mx = math.nan
            tmx = math.nan
            mn = math.nan
        if i1 <= i0:
            auc = math.nan
        out_max[b, s] = mx
        out_tmax[b, s] = tmx
        out_min[b, s] = mn
        out_auc[b, s] = auc
        x0 = X[base, c, s]
        if x0 != 0.0:
            out_fold[b, s] = mx / x0
        elif mx > 0.0:
            out_fold[b, s] = math.inf
        elif mx < 0.0:
            out_fold[b, s] = -math.inf
        else:
            out_fold[b, s] = math.nan


# --- END CUDA ---
