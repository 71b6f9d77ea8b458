"""Cohort throughput and peak memory against cohort size: time must grow linearly, memory stay flat.

Each N runs in a fresh process (so peak RSS is that run's own): the model is loaded from the
warm cache and one subject is solved first (numba's JIT loading, not counted), then
``run_cohort`` streams N subjects in chunks into a zarr store with every trajectory kept.

    python benchmarks/bench_cohort.py                      # N = 1e2, 1e3, 1e4, 1e5
    python benchmarks/bench_cohort.py --n 100 10000 --chunk-size 1024 [--workers 2] [CONFIG]

Columns: wall = run_cohort's wall time (store creation, solves, writes, finalising);
solve = the kernels' share, summed over chunks; subj/s = N / wall; peak RSS = the process's
``VmHWM`` (high-water mark of resident memory) at the end and after the first chunk, and
``after load`` its RSS before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import banner  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "configs" / "bench12.toml"

CHILD = """
import json, sys, time
import numpy as np
import il2sim
from il2sim.cohort import run_cohort

def vm(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MiB
    return float("nan")

config, out, n, chunk, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
il2sim.simulate(config, subjects=1)  # load the compiled model and JIT caches: not part of the run
rss_loaded = vm("VmRSS")
t0 = time.perf_counter()
hwm = []  # high-water mark after each chunk: shows where memory grows, if it does
run = run_cohort(config, out, subjects=n, chunk_size=chunk, progress=False,
                 workers=None if workers == "0" else int(workers), on_chunk=lambda info: hwm.append(vm("VmHWM")))
wall = time.perf_counter() - t0
import xarray as xr
with xr.open_zarr(out, chunks=None) as ds:
    solve = float(ds.attrs["solve_seconds"]); n_times = ds.sizes["time"]; n_vars = sum(1 for v in ds.data_vars if ds[v].dims == ("subject", "time"))
print(json.dumps({"n": n, "wall": wall, "solve": solve, "chunks": run.n_chunks, "failed": run.n_failed,
                  "rss_loaded": rss_loaded, "hwm": vm("VmHWM"), "hwm_first": hwm[0], "hwm_growth_at": [i for i in range(1, len(hwm)) if hwm[i] > hwm[i - 1] + 8],
                  "n_times": n_times, "n_vars": n_vars}))
"""


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=str(DEFAULT))
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=0, help="local dask workers (0: in-process)")
    ap.add_argument("--keep", action="store_true", help="keep the stores (default: delete after measuring)")
    args = ap.parse_args()

    print(banner())
    print(f"config: {args.config}; chunk size {args.chunk_size}; "
          f"{'in-process, numba threads ' + os.environ.get('NUMBA_NUM_THREADS', str(os.cpu_count())) if not args.workers else f'{args.workers} dask workers'}")
    print(f"{'N':>8} {'chunks':>7} {'wall (s)':>9} {'solve (s)':>10} {'subj/s':>8} {'ms/subj':>8} "
          f"{'after load (MiB)':>17} {'peak, 1st chunk':>16} {'peak RSS (MiB)':>15} {'store (MiB)':>12} {'failed':>7}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    try:
        for n in args.n:
            out = root / f"n{n}.zarr"
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CHILD, args.config, str(out), str(n), str(args.chunk_size), str(args.workers)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"N={n}: child failed ({res.returncode})")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            size = du(out) / 2**20
            print(f"{n:8d} {r['chunks']:7d} {r['wall']:9.2f} {r['solve']:10.2f} {n / r['wall']:8.1f} {1000 * r['wall'] / n:8.2f} "
                  f"{r['rss_loaded']:17.0f} {r['hwm_first']:16.0f} {r['hwm']:15.0f} {size:12.0f} {r['failed']:7d}"
                  f"   ({r['n_vars']} trajectories x {r['n_times']} times; process {time.perf_counter() - t0:.0f} s"
                  + (f"; peak grew > 8 MiB after chunks {r['hwm_growth_at'][:8]}" if r['hwm_growth_at'] else "") + ")", flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
