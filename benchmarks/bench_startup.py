"""Cold and warm start: code generation + compilation vs. a second process on the same cache.

Cold: empty il2sim and numba caches; import, generate, compile, simulate N subjects (default 1).
Warm: the same command again in a new process (import + cached model + the same subjects).

    python benchmarks/bench_startup.py [CONFIG] [--subjects N]

Cohorts of fewer than 32 subjects run one subject at a time and compile that path only;
``--subjects 32`` or more compiles the lane path (subjects side by side) instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import banner  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "configs" / "bench12.toml"

SNIPPET = """
import time; t0 = time.perf_counter()
import il2sim
ds = il2sim.simulate({config!r}, subjects={subjects})
t1 = time.perf_counter()
print(f"{{t1 - t0:.3f}} {{ds.attrs['codegen_cold']}} {{ds.attrs['compile_seconds']:.3f}} {{ds.status.values[0]}}")
"""


def run_once(config: str, subjects: int, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", SNIPPET.format(config=config, subjects=subjects)], env=env,
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, res.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(DEFAULT))
    ap.add_argument("--subjects", type=int, default=1, help="subjects simulated (default 1)")
    args = ap.parse_args()
    config = args.config
    print(banner())
    print(f"config: {config}, {args.subjects} subject(s)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, IL2SIM_CACHE_DIR=cache, NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
        print(f"{'start':<6} {'process wall (s)':>17} {'in-process (s)':>15} {'codegen cold':>13} {'codegen (s)':>12}")
        for label in ("cold", "warm", "warm"):
            wall, out = run_once(config, args.subjects, env)
            inproc, cold, comp, status = out.split()
            print(f"{label:<6} {wall:17.2f} {float(inproc):15.2f} {cold:>13} {float(comp):12.2f}   status={status}")


if __name__ == "__main__":
    main()
