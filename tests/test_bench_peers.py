"""The peer benchmark runs end to end on a tiny cohort, and engines that solve the same problem
agree: il2sim and scipy (installed with il2sim) against the script's Radau reference. Engines
that are not installed must be listed as such, not crash the table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_peers_tiny(tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peers" / "bench_peers.py"), "--days", "7", "--n", "3",
         "--peers", "il2sim", "scipy", "numbalsoda", "--ref-subjects", "2", "--subset", "2", "--budget", "1",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    runs = {(r["peer"], r["method"], r["threads"]): r for r in rows if "n" in r}
    for key in [("il2sim", "rodas5p", 1), ("il2sim", "tsit5", 1), ("scipy", "LSODA", 1), ("scipy", "Radau", 1)]:
        r = runs[key]
        assert r["n"] == 3 and r["seconds"] > 0 and r["failed"] == 0
        assert r["err"]["M"] is None  # the 12-state model has no tumour
        for var in ("C", "NK", "Eos"):
            assert r["err"][var] < 1e-4, (key, var, r["err"])
    assert runs[("scipy", "LSODA", 1)]["measured"] == 2  # --subset 2 of N = 3
    nb = [r for r in rows if r["peer"] == "numbalsoda"]
    assert nb and all(("unavailable" in r) or r["err"]["C"] < 1e-4 for r in nb)
    assert "targets (issue 7)" in proc.stdout
