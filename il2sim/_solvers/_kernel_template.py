"""Solver kernels: model-independent source, compiled inside every generated model module.

This file is valid Python so that it can be read, linted and diffed, but it is never imported
to run: ``build.module_source`` copies the text between the markers into each generated model
module, where ``rhs``, ``jac``, ``outputs``, ``initial``, ``N_STATES`` and the decorators
``kernel``/``kernel_parallel`` are real definitions. The placeholders below only document them.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401

prange = range
N_STATES = 1
N_PARAMS = 1
N_OUTPUTS = 0


def kernel(f):  # generated module: numba.njit(cache=True, ...)
    return f


def kernel_parallel(f):  # generated module: numba.njit(cache=True, parallel=True, ...)
    return f


def rhs(t, y, p, dy):  # dy[i] = f_i(t, y, p)
    raise NotImplementedError


def jac(t, y, p, J):  # J[i, j] = df_i/dy_j, every entry written
    raise NotImplementedError


def outputs(t, y, p, o):  # o[k] = output k
    raise NotImplementedError


def initial(p, y0):  # y0[i] = initial value of state i
    raise NotImplementedError


# --- BEGIN KERNELS ---
# (kernels are written by the solver work; see docstring above)
# --- END KERNELS ---
