"""Test harness for the solver kernels: hand-written model modules and a thin Python caller.

Each model below is the "model source" part of a generated module (what the codegen writes):
``N_STATES``, ``N_PARAMS``, ``N_OUTPUTS`` and ``@kernel`` functions ``rhs``, ``jac``,
``outputs``, ``initial``. ``build(name)`` writes header + model + kernels with
``il2sim._solvers.build`` and imports it. Modules live in a temp folder keyed by a hash of the
source, the kernel template and the tableaus, so numba's on-disk cache makes re-runs fast.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from il2sim._solvers import build
from il2sim._solvers.status import METHODS

SOLVERS = tuple(METHODS)  # every registered method, for parametrisation

_TABLEAUS = Path(build.__file__).with_name("tableaus.py")

# --- model sources -------------------------------------------------------------------------

# One compartment with first-order absorption: depot -> central -> out. p = [ka, ke, V]
ONE_CPT_ORAL = """
N_STATES = 2
N_PARAMS = 3
N_OUTPUTS = 1
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    dy[0] = -p[0] * y[0]
    dy[1] = p[0] * y[0] - p[1] * y[1]

@kernel
def jac(t, y, p, J):
    J[0, 0] = -p[0]
    J[0, 1] = 0.0
    J[1, 0] = p[0]
    J[1, 1] = -p[1]

@kernel
def outputs(t, y, p, o):
    o[0] = y[1] / p[2]

@kernel
def initial(p, y0):
    y0[0] = 0.0
    y0[1] = 0.0
"""

# Two compartments, central (0) <-> peripheral (1), elimination from central.
# p = [k10, k12, k21]
TWO_CPT = """
N_STATES = 2
N_PARAMS = 3
N_OUTPUTS = 0
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    dy[0] = -(p[0] + p[1]) * y[0] + p[2] * y[1]
    dy[1] = p[1] * y[0] - p[2] * y[1]

@kernel
def jac(t, y, p, J):
    J[0, 0] = -(p[0] + p[1])
    J[0, 1] = p[2]
    J[1, 0] = p[1]
    J[1, 1] = -p[2]

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = 0.0
    y0[1] = 0.0
"""

# dy = M y with M = p.reshape(3, 3) (row-major); the reference is scipy.linalg.expm.
LINEAR3 = """
N_STATES = 3
N_PARAMS = 9
N_OUTPUTS = 0
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    for i in range(3):
        s = 0.0
        for j in range(3):
            s += p[3 * i + j] * y[j]
        dy[i] = s

@kernel
def jac(t, y, p, J):
    for i in range(3):
        for j in range(3):
            J[i, j] = p[3 * i + j]

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = 1.0
    y0[1] = 0.0
    y0[2] = 0.0
"""

# Non-autonomous scalar: y' = p0 * cos(t) * y, y = y0 exp(p0 sin t). Leaves
# RHS_DEPENDS_ON_TIME at its default (True), so Rodas uses its time-derivative term.
NONAUTONOMOUS = """
N_STATES = 1
N_PARAMS = 1
N_OUTPUTS = 0

@kernel
def rhs(t, y, p, dy):
    dy[0] = p[0] * math.cos(t) * y[0]

@kernel
def jac(t, y, p, J):
    J[0, 0] = p[0] * math.cos(t)

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = 1.0
"""

# Closed chain 0 -> 1 -> 2 -> 3 -> 0 with no elimination: the total amount is conserved.
# p = [k01, k12, k23, k30]
CHAIN4 = """
N_STATES = 4
N_PARAMS = 4
N_OUTPUTS = 1
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    f0 = p[0] * y[0]
    f1 = p[1] * y[1]
    f2 = p[2] * y[2]
    f3 = p[3] * y[3]
    dy[0] = f3 - f0
    dy[1] = f0 - f1
    dy[2] = f1 - f2
    dy[3] = f2 - f3

@kernel
def jac(t, y, p, J):
    for i in range(4):
        for j in range(4):
            J[i, j] = 0.0
    for i in range(4):
        J[i, i] = -p[i]
        J[(i + 1) % 4, i] = p[i]

@kernel
def outputs(t, y, p, o):
    o[0] = y[0] + y[1] + y[2] + y[3]

@kernel
def initial(p, y0):
    for i in range(4):
        y0[i] = 0.0
"""

# y' = y^2, y(0) = p0: finite-time blow-up at t = 1/p0.
BLOWUP = """
N_STATES = 1
N_PARAMS = 1
N_OUTPUTS = 0
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    dy[0] = y[0] * y[0]

@kernel
def jac(t, y, p, J):
    J[0, 0] = 2.0 * y[0]

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = p[0]
"""

# y' = -y until t = p0, NaN from then on (a model that breaks at a known time).
NAN_AFTER = """
N_STATES = 1
N_PARAMS = 1
N_OUTPUTS = 0

@kernel
def rhs(t, y, p, dy):
    dy[0] = -y[0] if t < p[0] else math.nan

@kernel
def jac(t, y, p, J):
    J[0, 0] = -1.0

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = 1.0
"""

# Robertson's chemical kinetics (Hairer & Wanner II, §IV.1), p = [0.04, 3e7, 1e4].
ROBERTSON = """
N_STATES = 3
N_PARAMS = 3
N_OUTPUTS = 0
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    r1 = p[0] * y[0]
    r2 = p[1] * y[1] * y[1]
    r3 = p[2] * y[1] * y[2]
    dy[0] = -r1 + r3
    dy[1] = r1 - r2 - r3
    dy[2] = r2

@kernel
def jac(t, y, p, J):
    J[0, 0] = -p[0]
    J[0, 1] = p[2] * y[2]
    J[0, 2] = p[2] * y[1]
    J[1, 0] = p[0]
    J[1, 1] = -2.0 * p[1] * y[1] - p[2] * y[2]
    J[1, 2] = -p[2] * y[1]
    J[2, 0] = 0.0
    J[2, 1] = 2.0 * p[1] * y[1]
    J[2, 2] = 0.0

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = 1.0
    y0[1] = 0.0
    y0[2] = 0.0
"""

# van der Pol oscillator, y1' = y2, y2' = mu((1 - y1^2) y2) - y1, p = [mu].
VAN_DER_POL = """
N_STATES = 2
N_PARAMS = 1
N_OUTPUTS = 0
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    dy[0] = y[1]
    dy[1] = p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]

@kernel
def jac(t, y, p, J):
    J[0, 0] = 0.0
    J[0, 1] = 1.0
    J[1, 0] = -2.0 * p[0] * y[0] * y[1] - 1.0
    J[1, 1] = p[0] * (1.0 - y[0] * y[0])

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    y0[0] = 2.0
    y0[1] = 0.0
"""

# HIRES (Schäfer 1975; Hairer & Wanner II, §IV.10): 8 states, plant physiology.
HIRES = """
N_STATES = 8
N_PARAMS = 1
N_OUTPUTS = 0
RHS_DEPENDS_ON_TIME = False

@kernel
def rhs(t, y, p, dy):
    dy[0] = -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007
    dy[1] = 1.71 * y[0] - 8.75 * y[1]
    dy[2] = -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4]
    dy[3] = 8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3]
    dy[4] = -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6]
    dy[5] = -280.0 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6]
    dy[6] = 280.0 * y[5] * y[7] - 1.81 * y[6]
    dy[7] = -dy[6]

@kernel
def jac(t, y, p, J):
    for i in range(8):
        for j in range(8):
            J[i, j] = 0.0
    J[0, 0] = -1.71
    J[0, 1] = 0.43
    J[0, 2] = 8.32
    J[1, 0] = 1.71
    J[1, 1] = -8.75
    J[2, 2] = -10.03
    J[2, 3] = 0.43
    J[2, 4] = 0.035
    J[3, 1] = 8.32
    J[3, 2] = 1.71
    J[3, 3] = -1.12
    J[4, 4] = -1.745
    J[4, 5] = 0.43
    J[4, 6] = 0.43
    J[5, 3] = 0.69
    J[5, 4] = 1.71
    J[5, 5] = -280.0 * y[7] - 0.43
    J[5, 6] = 0.69
    J[5, 7] = -280.0 * y[5]
    J[6, 5] = 280.0 * y[7]
    J[6, 6] = -1.81
    J[6, 7] = 280.0 * y[5]
    J[7, 5] = -280.0 * y[7]
    J[7, 6] = 1.81
    J[7, 7] = -280.0 * y[5]

@kernel
def outputs(t, y, p, o):
    pass

@kernel
def initial(p, y0):
    for i in range(8):
        y0[i] = 0.0
    y0[0] = 1.0
    y0[7] = 0.0057
"""

MODELS = {
    "one_cpt_oral": ONE_CPT_ORAL,
    "two_cpt": TWO_CPT,
    "linear3": LINEAR3,
    "nonautonomous": NONAUTONOMOUS,
    "chain4": CHAIN4,
    "blowup": BLOWUP,
    "nan_after": NAN_AFTER,
    "robertson": ROBERTSON,
    "van_der_pol": VAN_DER_POL,
    "hires": HIRES,
}

# --- building ------------------------------------------------------------------------------

_BUILT: dict[str, object] = {}


def _module_dir() -> Path:
    return Path(tempfile.gettempdir()) / "il2sim-test-models"


def build_model(name: str, source: str | None = None):
    """Build (or reuse) the generated module for a harness model."""
    if name in _BUILT:
        return _BUILT[name]
    if source is None:
        source = MODELS[name]
    key = hashlib.sha256(
        (source + build.template_hash() + _TABLEAUS.read_text(encoding="utf-8")).encode()
    ).hexdigest()[:16]
    path = _module_dir() / f"{name}_{key}.py"
    if not path.exists():
        build.write_module(path, source)
    module = build.import_module(path)
    _BUILT[name] = module
    return module


# --- a thin caller (what the real Python shell does, minus validation) ---------------------

EV_BOLUS, EV_RATE, EV_RESET, EV_PARAM = 0, 1, 2, 3


def events(*records):
    """Event arrays from (time, kind, state, value) tuples, sorted stably by time."""
    recs = sorted(records, key=lambda r: r[0])
    time = np.array([r[0] for r in recs], dtype=np.float64)
    kind = np.array([r[1] for r in recs], dtype=np.int64)
    state = np.array([r[2] for r in recs], dtype=np.int64)
    value = np.array([r[3] for r in recs], dtype=np.float64)
    return time, kind, state, value


NO_EVENTS = events()


class Solution:
    def __init__(self, y, status, stats, fstats):
        self.y = y
        self.status = int(status)
        self.stats = stats
        self.fstats = fstats

    @property
    def n_rhs(self):
        return int(self.stats[3])

    @property
    def n_jac(self):
        return int(self.stats[4])

    @property
    def n_lu_fallback(self):
        return int(self.stats[6])


def solve(module, method, t_out, p, *, y0=None, ev=NO_EVENTS, t0=0.0, rtol=1e-6, atol=1e-9,
          h0=0.0, hmax=0.0, max_steps=100_000, adaptive=True):
    """Call ``solve_subject`` with freshly allocated outputs."""
    n = module.N_STATES
    p = np.ascontiguousarray(p, dtype=np.float64)
    if y0 is None:
        y0 = np.zeros(n)
        module.initial(p, y0)
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    t_out = np.ascontiguousarray(t_out, dtype=np.float64)
    atol_arr = np.broadcast_to(np.asarray(atol, dtype=np.float64), (n,)).copy()
    y_out = np.full((t_out.shape[0], n), -1.0)
    stats = np.zeros(7, dtype=np.int64)  # the 7th (optional) column counts dense-LU fallbacks
    fstats = np.zeros(2)
    status = module.solve_subject(
        np.int64(METHODS[method]), np.int64(1 if adaptive else 0), float(t0), y0, p, t_out,
        *ev, float(rtol), atol_arr, float(h0), float(hmax), np.int64(max_steps), y_out,
        stats, fstats,
    )
    return Solution(y_out, status, stats, fstats)


def solve_cohort(module, method, t_out, P, evs, *, Y0=None, t0=0.0, rtol=1e-6, atol=1e-9,
                 h0=0.0, hmax=0.0, max_steps=100_000):
    """Call ``solve_cohort``; ``evs`` is one event tuple (from ``events``) per subject."""
    n = module.N_STATES
    P = np.ascontiguousarray(P, dtype=np.float64)
    n_subj = P.shape[0]
    if Y0 is None:
        Y0 = np.zeros((n_subj, n))
        module.eval_initial(P, Y0)
    t_out = np.ascontiguousarray(t_out, dtype=np.float64)
    counts = [len(e[0]) for e in evs]
    ev_ptr = np.zeros(n_subj + 1, dtype=np.int64)
    ev_ptr[1:] = np.cumsum(counts)
    cat = [np.concatenate([e[k] for e in evs]) if evs else np.zeros(0) for k in range(4)]
    ev_time = cat[0].astype(np.float64)
    ev_kind, ev_state = cat[1].astype(np.int64), cat[2].astype(np.int64)
    ev_value = cat[3].astype(np.float64)
    atol_arr = np.broadcast_to(np.asarray(atol, dtype=np.float64), (n,)).copy()
    Y_out = np.full((n_subj, t_out.shape[0], n), -1.0)
    status = np.zeros(n_subj, dtype=np.int64)
    stats = np.zeros((n_subj, 7), dtype=np.int64)
    fstats = np.zeros((n_subj, 2))
    module.solve_cohort(
        np.int64(METHODS[method]), np.int64(1), float(t0), Y0, P, t_out, ev_ptr, ev_time,
        ev_kind, ev_state, ev_value, float(rtol), atol_arr, float(h0), float(hmax),
        np.int64(max_steps), Y_out, status, stats, fstats,
    )
    return Y_out, status, stats, fstats


def tol_units(y, y_true, rtol, atol):
    """Error in tolerance units, |y - y_true| / (atol + rtol |y_true|)."""
    return np.abs(y - y_true) / (atol + rtol * np.abs(y_true))
