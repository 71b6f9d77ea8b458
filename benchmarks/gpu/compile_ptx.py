"""Compile the generated CUDA kernels of bench12 to PTX without a GPU (NVVM only).

The simulator runs the kernels as Python, so it cannot catch what only the CUDA compiler
rejects (an unsupported construct, an allocation, a type that does not unify). This script
type-checks and compiles every global kernel for a chosen compute capability through NVVM,
which needs CUDA's NVVM library (pip install 'numba-cuda[cu13]', or a CUDA toolkit) but no
driver and no device, and reports PTX size, local memory per thread and FMA count.

    python benchmarks/gpu/compile_ptx.py [--cc 9.0]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cc", default="9.0", help="compute capability, e.g. 9.0 (H100/H200)")
    args = ap.parse_args()
    cc = tuple(int(x) for x in args.cc.split("."))

    from numba import types as T

    from il2sim._cuda import compile_cuda
    from il2sim._solvers.cuda import import_cuda
    from il2sim.scenario import load_scenario

    cuda = import_cuda()
    import numba.cuda.dispatcher as dispatcher

    class _Device:  # device functions compile for "the current device": pretend one with cc
        compute_capability = cc

    dispatcher.get_current_device = lambda: _Device()
    sc = load_scenario(ROOT / "benchmarks" / "configs" / "bench12.toml")
    mod = compile_cuda(sc.model).module
    f1, f2, f3 = (T.Array(T.float64, d, "C") for d in (1, 2, 3))
    i1, i2 = T.Array(T.int64, 1, "C"), T.Array(T.int64, 2, "C")
    i64, f64 = T.int64, T.float64
    kernels = {
        "cuda_solve_cohort": (i64, i64, f64, f2, f2, f1, i1, f1, i1, i1, f1, f64, f1, f64, f64, i64, f3, i1, i2, f2),
        "cuda_eval_outputs": (f1, f3, f2, f3),
        "cuda_eval_initial": (f2, f2),
        "cuda_gather": (f3, i1, i1, f3),
        "cuda_reduce": (f1, f3, i1, i64, i64, i64, f2, f2, f2, f2, f2),
    }
    for name, sig in kernels.items():
        t0 = time.perf_counter()
        ptx, _ = cuda.compile_ptx(getattr(mod, name).py_func, sig, cc=cc)
        local = max((int(x) for x in re.findall(r"__local_depot\d+\[(\d+)\]", ptx)), default=0)
        print(f"{name}: sm_{cc[0]}{cc[1]} PTX {len(ptx) / 1024:.0f} kB, local memory {local} B/thread, "
              f"{ptx.count('fma.rn.f64')} FMA, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
