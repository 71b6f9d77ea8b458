"""Fuzzing scenario configs and regimens: mutations of tests/configs/onecmt.toml (wrong types,
unknown keys, bad numbers, broken regimen blocks, clocks and weekdays) either raise
ConfigError/RegimenError naming the file and the field, or give a scenario that simulates."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from il2sim.errors import ConfigError, Il2simError, RegimenError
from il2sim.regimen import WEEKDAYS, Regimen
from il2sim.scenario import scenario_from_dict
from il2sim.simulate import simulate

from _fuzz import fuzz

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = tomllib.loads((CONFIGS / "onecmt.toml").read_text())
SOURCE = "fuzz/onecmt.toml"

BAD = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=10),
    st.lists(st.one_of(st.integers(-3, 30), st.text(max_size=5), st.floats()), max_size=3),
    st.builds(dict), st.fixed_dictionaries({"zzz": st.just(1)}),
    st.sampled_from([0, -1, 1e308, math.nan, math.inf, -math.inf, "", "25:00", "8:00", "08:60",
                     "Mon", "funday", ["Mon", "Mon"], [0, 1], [2, 1], [1, 10**9], 10**12]),
)


def _paths(node, prefix=()):
    """Every (path, key) in nested dicts/lists; a path step is a key or a list index."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _named(path) -> str:
    """The last dict key on the path: what a message about this field must mention."""
    return next(str(k) for k in reversed(path) if isinstance(k, str))


@st.composite
def mutated(draw, base=BASE, regimen_only=False):
    d = copy.deepcopy(base)
    root = d["regimen"] if regimen_only else d
    paths = list(_paths(root))
    kind = draw(st.sampled_from(["replace", "delete", "unknown"]))
    path = draw(st.sampled_from(paths))
    parent = root
    for k in path[:-1]:
        parent = parent[k]
    if kind == "replace":
        parent[path[-1]] = draw(BAD)
    elif kind == "delete":
        del parent[path[-1]]
    else:
        if not isinstance(parent, dict):
            return d, path, "replace"
        key = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in parent))
        parent[key] = draw(BAD)
        path = path[:-1] + (key,)
    return d, path, kind


def _check_message(exc, path, kind):
    msg = str(exc)
    assert SOURCE in msg, msg
    if kind != "delete":
        assert _named(path) in msg, (path, msg)


def _simulate_one(sc):
    try:
        ds = simulate(sc, subjects=1)
    except Il2simError:
        return  # e.g. a grid too large for memory: refused with an il2sim error
    assert ds.sizes["time"] > 0


@fuzz(100, 3000, deadline=None)
@given(mutated())
def test_mutated_configs_raise_config_error_or_simulate(case):
    data, path, kind = case
    try:
        sc = scenario_from_dict(data, source=SOURCE, base_dir=CONFIGS)
    except ConfigError as exc:
        _check_message(exc, path, kind)
        return
    out = sc.output
    if out.end_h / max(out.dt_h, 1e-9) < 1e5:
        _simulate_one(sc)


@fuzz(100, 3000)
@given(mutated(regimen_only=True))
def test_mutated_regimens_raise_regimen_error_or_round_trip(case):
    data, path, kind = case
    try:
        reg = Regimen.from_dict(data["regimen"], source=SOURCE)
    except RegimenError as exc:
        _check_message(exc, path, kind)
        return
    assert Regimen.from_dict(tomllib.loads(reg.to_toml())["regimen"], source=SOURCE) == reg


@st.composite
def valid_regimens(draw):
    cycle = draw(st.integers(1, 14))
    blocks = []
    for i in range(draw(st.integers(1, 3))):
        first = draw(st.integers(1, cycle))
        blk = {"days": [first, draw(st.integers(first, cycle))],
               "clock": [f"{draw(st.integers(0, 23)):02d}:{i * 10 + draw(st.integers(0, 9)):02d}"],
               "amount": draw(st.floats(0.01, 5.0))}
        if draw(st.booleans()):
            blk["duration_h"] = draw(st.floats(0.1, 4.0))
        blocks.append(blk)
    return {"target": draw(st.sampled_from(["Ad", "Ac"])), "amount_unit": draw(st.sampled_from(["MIU", "MIU/m2", "nmol"])),
            "cycle_days": cycle, "max_cycles": draw(st.integers(1, 2)),
            "start_weekday": draw(st.sampled_from(WEEKDAYS)), "block": blocks}


@fuzz(15, 300, deadline=None)
@given(valid_regimens(), st.integers(0, 2**31))
def test_valid_configs_simulate(regimen, seed):
    data = copy.deepcopy(BASE)
    data["regimen"] = regimen
    data["scenario"]["seed"] = seed
    sc = scenario_from_dict(data, source=SOURCE, base_dir=CONFIGS)
    ds = simulate(sc, subjects=1)
    for name in ds.data_vars:
        if np.issubdtype(ds[name].dtype, np.floating):
            assert not np.isnan(ds[name].values).all(), name
