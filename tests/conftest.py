"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

import il2sim
from il2sim._codegen import compile_model
from il2sim.model import load_model

BENCH = Path(il2sim.__file__).resolve().parents[1] / "models" / "bench" / "il2_pkpd12.toml"


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """The 12-state benchmark model (models/bench/il2_pkpd12.toml), compiled once per session."""
    return compile_model(load_model(BENCH), cache_dir=tmp_path_factory.mktemp("bench12"))
