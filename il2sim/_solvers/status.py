"""Python mirror of the integer codes used inside the solver kernels.

Kernels return plain integers (no exceptions inside numba); this module maps them to an
``IntEnum`` whose members carry the user-facing message, and names the methods and event
kinds. The same numbers are defined in ``_kernel_template.py``; a test checks they agree.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "Status",
    "EventKind",
    "METHODS",
    "METHOD_RODAS",
    "METHOD_TSIT5",
    "STATS_FIELDS",
    "FSTATS_FIELDS",
    "POST_SOLVE",
]

METHOD_RODAS = 0
METHOD_TSIT5 = 1

#: Public method name -> kernel method code (one name per method).
METHODS = {"rodas5p": METHOD_RODAS, "tsit5": METHOD_TSIT5}

#: Columns of the per-subject ``stats`` array (int64).
STATS_FIELDS = ("n_steps", "n_accepted", "n_rejected", "n_rhs", "n_jac", "n_lu")
#: Columns of the per-subject ``fstats`` array (float64).
FSTATS_FIELDS = ("t_reached", "last_step")


class Status(IntEnum):
    """Why the integration of one subject stopped."""

    OK = 0
    MAX_STEPS = 1
    STEP_TOO_SMALL = 2
    NON_FINITE = 3
    #: Set in Python after the solve (il2sim.simulate), never by a kernel: a state fell below
    #: its lower bound (``lower`` in the model file, 0 unless declared) by more than the
    #: solver's tolerance.
    NEGATIVE_STATE = 4

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def success(self) -> bool:
        return self is Status.OK


_MESSAGES = {
    Status.OK: "The integration reached the last output time.",
    Status.MAX_STEPS: (
        "The solver took the maximum number of steps before reaching the last output time. "
        "Try increasing solver.max_steps, or use the stiff method 'rodas5p' if the model is stiff."
    ),
    Status.STEP_TOO_SMALL: (
        "The step size fell below the resolution of floating point at the time reached; the "
        "solution probably blows up there (a finite-time singularity) or the model has a "
        "discontinuity the solver cannot step over. Check the model and its parameters."
    ),
    Status.NON_FINITE: (
        "The state or its derivative became NaN or infinite and smaller steps did not help. "
        "Check the model for division by zero, log of a non-positive value or overflow."
    ),
    Status.NEGATIVE_STATE: (
        "A state fell below its lower bound (0 unless the model file declares 'lower') by more "
        "than the solver tolerance: an amount or cell count went negative. Check the parameters "
        "(a negative rate, bioavailability or dose) or tighten solver.rtol/atol; a state that may "
        "be negative declares lower = -inf in its model file."
    ),
}

#: Statuses assigned in Python after the kernel returned (the kernels never produce them).
POST_SOLVE = frozenset({Status.NEGATIVE_STATE})


class EventKind(IntEnum):
    """Kind of a dose event passed to the kernels (``ev_kind``)."""

    BOLUS = 0  #: y[state] += value
    RATE = 1  #: rate[state] += value (zero-order input: +r to start, -r to stop)
    RESET = 2  #: y = y0 of the subject, every rate = 0 (state and value ignored)
    PARAM = 3  #: p[state] = value: a parameter changes from here on (inter-occasion variability)
