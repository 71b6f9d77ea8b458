"""Write and import a generated model module: header + model functions + solver kernels.

The solver kernels live once, as source, in ``_kernel_template.py``. Numba cannot cache a
function that receives another jitted function as an argument, so the kernels cannot take
``rhs``/``jac`` as parameters and still start warm. Instead each generated model module holds
its own copy of the kernel source, where ``rhs``, ``jac``, ``outputs`` and ``initial`` are
plain module globals; numba then compiles and caches the whole module like hand-written code.
The header binds the decorators (``kernel``, ``kernel_inline``, ``kernel_alloc``), so the
same kernel source can later be compiled for another target (e.g.
``numba.cuda.jit(device=True)``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

_TEMPLATE = Path(__file__).with_name("_kernel_template.py")
_BEGIN = "# --- BEGIN KERNELS ---"
_END = "# --- END KERNELS ---"

HEADER_CPU = '''\
import math
import numpy as np
from numba import njit

# Compiled once per model and cached on disk next to this file (numba's cache).
# kernel: the model functions and the step code. Allocation-free by contract, so compiled
# without numba's runtime (NRT): no atomic reference counting of every array argument at
# every call (a third of the step time with it), and an allocation fails to compile.
# kernel_alloc: entry points that allocate their work arrays once (needs the NRT).
# No fastmath, not even contraction into fused multiply-adds: LLVM fuses a*b + c only within
# a basic block, so what fuses depends on what was inlined or hoisted where, and the numbers
# with it. With contraction, a process that compiled the model and one that loaded it from
# numba's cache gave cohorts that differed in the 13th digit (the lane driver links its
# callees differently in the two), and a subject's lane differed from solve_subject's. Without,
# both are bit for bit the same, at no measured cost (benchmarks/bench_lanes.py).
kernel = njit(cache=True, fastmath=False, error_model="numpy", nogil=True, _nrt=False)
kernel_inline = njit(cache=True, fastmath=False, error_model="numpy", nogil=True, _nrt=False, inline="always")
kernel_alloc = njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
'''


# The same kernel source for a GPU: every ``@kernel`` function becomes a CUDA device function.
# The CPU entry points (``kernel_alloc``: ``solve_subject`` allocates its work arrays with numpy)
# stay plain, uncompiled Python in the CUDA module and are never called there; the global kernels that replace them come from the CUDA trailer
# (``_cuda_template.py``), which gives each thread its work arrays as ``cuda.local.array``.
# NVVM contracts a*b+c into FMA by default (the CPU header does not): results equal the CPU's
# to rounding.
HEADER_CUDA = '''\
import math
import numpy as np
from numba import cuda

kernel = cuda.jit(device=True, cache=True)
kernel_inline = kernel  # NVVM inlines device functions itself


def kernel_alloc(f):  # CPU-only entry point: never compiled or called in the CUDA module
    return f

'''

_CUDA_TEMPLATE = Path(__file__).with_name("_cuda_template.py")
_CUDA_BEGIN = "# --- BEGIN CUDA ---"
_CUDA_END = "# --- END CUDA ---"


def _between(path: Path, begin: str, end: str) -> str:
    text = path.read_text(encoding="utf-8")
    try:
        start = text.index(begin) + len(begin)
        stop = text.index(end)
    except ValueError:  # pragma: no cover - a broken install, not user input
        raise RuntimeError(f"{path}: markers {begin!r} / {end!r} missing") from None
    return text[start:stop]


def cuda_trailer_source() -> str:
    """CUDA global kernels between the markers of ``_cuda_template.py`` (appended after the kernels)."""
    return _between(_CUDA_TEMPLATE, _CUDA_BEGIN, _CUDA_END)


def cuda_template_hash() -> str:
    """SHA-256 of everything a generated CUDA module depends on besides the model."""
    return hashlib.sha256((template_hash() + HEADER_CUDA + cuda_trailer_source()).encode()).hexdigest()


def template_source() -> str:
    """Kernel source between the BEGIN/END markers of ``_kernel_template.py``."""
    return _between(_TEMPLATE, _BEGIN, _END)


def _sum(terms: list[tuple[float, str]]) -> str:
    """``c0 * x0 + c1 * x1 + ...`` left to right (the order of the textbook sum), zeros left out."""
    parts = [f"{float(c)!r} * {x}" for c, x in terms if c != 0.0]
    return " + ".join(parts) if parts else "0.0"


def stage_source() -> str:
    """The stage sums of both methods as straight-line code, one branch per stage.

    ``_rodas_u(s, y, K, u)``: stage point u = y + sum_j a[s, j] k_j;
    ``_rodas_k(s, inv_h, fu, K)``: k_s = f(u) + (sum_j C[s, j] k_j) / h (before the solve);
    ``_tsit5_u(s, h, y, K, u)``: u = y + h sum_j a[s, j] K[j];
    ``_tsit5_err(h, K, err)``: err = h sum_j b_err[j] K[j].
    The coefficients are literals from :mod:`tableaus` (zeros left out), and each state is
    summed in a register in one pass, instead of one pass over the states per earlier stage
    with the coefficients loaded from arrays. The additions are those of the loops they
    replace, in the same order, so results are unchanged.
    """
    from .tableaus import RODAS5P_A, RODAS5P_CM, RODAS5P_STAGES, RODAS5P_U_FROM_PREV
    from .tableaus import TSIT5_A, TSIT5_B_ERR, TSIT5_STAGES

    out = ["# Generated from il2sim/_solvers/tableaus.py by build.stage_source().", ""]

    def branches(name: str, args: str, doc: str, stages: range, body, loops=("for i in range(N_STATES):",),
                 prelude=(), inner=()) -> None:
        out.extend(["@kernel_inline", f"def {name}({args}):", f'    """{doc}"""'])
        out.extend(f"    {line}" for line in prelude)
        for q, st in enumerate(stages):
            out.append(f"    {'if' if q == 0 else 'elif'} s == {st}:")
            out.extend("    " * (d + 2) + loop for d, loop in enumerate(loops))
            out.extend("    " * (len(loops) + 2) + line for line in (*inner, body(st)))
        out.extend(["", ""])

    def rodas_u(st: int, kj) -> str:  # kj(j): the text of k_j's entry for the current state
        if RODAS5P_U_FROM_PREV[st]:  # the previous stage point plus k_{s-1}
            return f"u[i] += {kj(st - 1)}"
        terms = _sum([(RODAS5P_A[st, j], kj(j)) for j in range(st)])
        return f"u[i] = y[i] + {terms}" if terms != "0.0" else "u[i] = y[i]"

    def rodas_k(st: int, kj, x: str, inv_h: str) -> str:
        return f"{kj(st)} = fu[{x}] + ({_sum([(RODAS5P_CM[st, j], kj(j)) for j in range(st)])}) * {inv_h}"

    def tsit5_u(st: int) -> str:
        return f"u[i] = y[i] + h * ({_sum([(TSIT5_A[st, j], f'K[{j}, i]') for j in range(st)])})"

    def k_scalar(j: int) -> str:
        return f"K[{j}, i]"

    rodas = range(1, RODAS5P_STAGES)
    branches("_rodas_u", "s, y, K, u", "Rodas5P stage point u = y + sum_j a[s, j] k_j (s >= 1).",
             rodas, lambda st: rodas_u(st, k_scalar))
    branches("_rodas_k", "s, inv_h, fu, K", "Rodas5P k_s = f(u) + sum_j C[s, j] k_j / h (s >= 1).",
             rodas, lambda st: rodas_k(st, k_scalar, "i", "inv_h"))
    branches("_tsit5_u", "s, h, y, K, u", "Tsit5 stage point u = y + h sum_j a[s, j] K[j] (s >= 1).",
             range(1, TSIT5_STAGES), tsit5_u)
    # the same Rodas5P sums over LANES subjects, state i of lane l at [i*LANES + l], stage j
    # at offset j*N_STATES*LANES (the cohort path, see _lanes_run in the kernel template)
    branches("_rodas_u_L", "s, y, K, u", "_rodas_u for every lane.", rodas,
             lambda st: rodas_u(st, lambda j: f"K[{j} * nl + i]"), ("for i in range(nl):",),
             ("nl = N_STATES * LANES",))
    branches("_rodas_k_L", "s, inv_h, fu, K", "_rodas_k for every lane (inv_h[l] per lane).", rodas,
             lambda st: rodas_k(st, lambda j: f"K[{j} * nl + k]", "k", "inv_h[l]"),
             ("for i in range(N_STATES):", "for l in range(LANES):"), ("nl = N_STATES * LANES",),
             ("k = i * LANES + l",))
    out.extend(["@kernel", "def _tsit5_err(h, K, err):", '    """Tsit5 error estimate h sum_j b_err[j] K[j]."""',
                "    for i in range(N_STATES):",
                f"        err[i] = h * ({_sum([(TSIT5_B_ERR[j], f'K[{j}, i]') for j in range(TSIT5_STAGES)])})",
                "", ""])
    return "\n".join(out)


# The lane driver once more, over the lane functions that call pow (rhs_Lp, jac_nz_Lp), for
# cohorts with run-time exponents other than 0..4 (the kernel template's _lane_exponents_ok).
# Numba compiles a function at its first call, so the copy costs compile time only when such a
# cohort runs. (name, name of the copy, replacements in its text)
_POW_LANE_COPIES = (
    ("_lane_attempt", "_lane_attempt_p", (("rhs_L(", "rhs_Lp("), ("jac_nz_L(", "jac_nz_Lp("))),
    ("_lane_initial_step", "_lane_initial_step_p", (("rhs_L(", "rhs_Lp("),)),
    ("_lanes_run", "_lanes_run_p", (("_lane_attempt(", "_lane_attempt_p("),
                                    ("_lane_initial_step(", "_lane_initial_step_p("))),
)


def pow_lane_source() -> str:
    """``_lane_attempt_p``, ``_lane_initial_step_p`` and ``_lanes_run_p``: the template's
    functions with the renames of
    ``_POW_LANE_COPIES``."""
    text = template_source()
    out = ["# Generated from the kernel template by build.pow_lane_source().", ""]
    for name, copy, renames in _POW_LANE_COPIES:
        start = text.rindex("\n@", 0, text.index(f"\ndef {name}(")) + 1  # from its decorator
        body = text[start:text.index("\n\n\n", start)].replace(f"def {name}(", f"def {copy}(", 1)
        for old, new in renames:
            if old not in body:  # pragma: no cover - the template changed under the copy
                raise RuntimeError(f"kernel template: {name} no longer calls {old[:-1]}")
            body = body.replace(old, new)
        out += [body, "", ""]
    return "\n".join(out)


def template_hash() -> str:
    """SHA-256 of the header, the kernel source, the tableaus it imports and the stage code.

    Part of every model cache key: numba freezes the imported coefficients into the compiled
    code, so a changed coefficient must invalidate cached models too.
    """
    tableaus = Path(__file__).with_name("tableaus.py").read_text(encoding="utf-8")
    return hashlib.sha256((HEADER_CPU + template_source() + tableaus + stage_source()
                           + pow_lane_source()).encode()).hexdigest()


def module_source(model_source: str, header: str = HEADER_CPU, trailer: str = "") -> str:
    """Full text of a generated module: header, model functions, kernels (and a trailer)."""
    return (
        "# Generated by il2sim. Do not edit: regenerated whenever the model changes.\n"
        + header
        + "\n# --- model functions ---\n"
        + model_source
        + "\n# --- solver kernels (il2sim/_solvers/_kernel_template.py) ---\n"
        + template_source()
        + "\n# --- stage sums of the methods (il2sim/_solvers/build.py: stage_source) ---\n"
        + stage_source()
        + "\n# --- the lane driver over the lane functions with pow (build.pow_lane_source) ---\n"
        + pow_lane_source()
        + (("\n# --- target-specific entry points ---\n" + trailer) if trailer else "")
    )


def write_module(path: Path, model_source: str, header: str = HEADER_CPU, trailer: str = "") -> None:
    """Write the generated module atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = module_source(model_source, header, trailer)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_module(path: Path) -> ModuleType:
    """Import a generated module from ``path`` under a name derived from its file stem."""
    path = Path(path)
    name = f"il2sim_generated.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise ImportError(f"cannot import generated module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
