"""Fuzzing model modules: random valid small models load; mutated ones (missing keys, wrong
types, unknown symbols, duplicates, bad numbers, output cycles, broken TOML) raise
ModelSpecError naming the file, from both load_model and check_module, never anything else."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from il2sim.errors import ModelSpecError
from il2sim.model import check_module, load_model

from _fuzz import fuzz, toml_document

from il2sim.model import RESERVED_NAMES, NONMEM_WORDS

IDENT = st.from_regex(r"[A-Z][a-z0-9]{0,5}", fullmatch=True).filter(
    lambda n: n not in RESERVED_NAMES and n.lower() not in NONMEM_WORDS and not n.startswith("Ocyc"))


@st.composite
def models(draw):
    names = draw(st.lists(IDENT, min_size=3, max_size=8, unique_by=str.lower))
    n_par = draw(st.integers(1, len(names) - 2))
    pars, rest = names[:n_par], names[n_par:]
    n_state = draw(st.integers(1, len(rest)))
    states, outs = rest[:n_state], rest[n_state:]
    parameters = {
        p: {"value": draw(st.floats(0.01, 100)), "unit": "1/h", "description": f"{p} rate", "source": "fuzz"}
        for p in pars
    }
    st_tab = {s: {"initial": draw(st.floats(0, 10)), "unit": "nmol", "description": f"{s} amount"} for s in states}
    odes = {}
    for s in states:
        p, other = draw(st.sampled_from(pars)), draw(st.sampled_from(states))
        odes[s] = f"-{p} * {s} + 0.1 * {other}"
    outputs = {}
    for i, o in enumerate(outs):
        ref = draw(st.sampled_from(states + outs[:i]))  # outputs may use earlier outputs: no cycle
        outputs[o] = {"expr": f"2 * {ref}", "unit": "nmol", "description": f"{o} output"}
    return {
        "model": {"name": "fuzz", "description": "generated", "time_unit": "h"},
        "parameters": parameters, "states": st_tab, "outputs": outputs, "odes": odes,
    }


BAD_VALUES = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=12),
    st.lists(st.integers(), max_size=2), st.builds(dict), st.fixed_dictionaries({"x": st.just(1)}),  # fresh dicts: no aliasing
    st.sampled_from(["x.__class__", "unknown_sym * 2", "exp(", "__import__('os')", "t ** 99", "-1", "nan"]),
)


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


@st.composite
def mutations(draw, base):
    d = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(d))
        kind = draw(st.sampled_from(["delete", "replace", "add", "duplicate", "cycle", "negative"]))
        if kind in ("delete", "replace") and paths:
            path = draw(st.sampled_from(paths))
            parent = d
            for k in path[:-1]:
                parent = parent[k]
            if kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(BAD_VALUES)
        elif kind == "add":
            section = draw(st.sampled_from(list(d) + ["extra"]))
            table = d.setdefault(section, {})
            if isinstance(table, dict):
                table[draw(st.text(min_size=1, max_size=8))] = draw(BAD_VALUES)
        elif kind == "duplicate" and isinstance(d.get("parameters"), dict) and isinstance(d.get("states"), dict) and d["states"]:
            s = draw(st.sampled_from(list(d["states"])))
            d["parameters"][s] = {"value": 1.0, "unit": "1", "description": "dup", "source": "fuzz"}
        elif kind == "cycle" and isinstance(d.get("outputs"), dict):
            d["outputs"]["Ocyc1"] = {"expr": "Ocyc2 + 1", "unit": "1", "description": "a"}
            d["outputs"]["Ocyc2"] = {"expr": "2 * Ocyc1", "unit": "1", "description": "b"}
        elif kind == "negative" and isinstance(d.get("parameters"), dict) and d["parameters"]:
            p = draw(st.sampled_from(list(d["parameters"])))
            if isinstance(d["parameters"][p], dict):
                d["parameters"][p]["value"] = draw(st.sampled_from([-1.0, math.nan, math.inf, -math.inf]))
    return d


def _load_both(text: str | bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz_module.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        outcomes = []
        for func in (load_model, check_module):
            try:
                func(path)
                outcomes.append(True)
            except ModelSpecError as exc:
                assert "fuzz_module.toml" in str(exc), str(exc)
                outcomes.append(False)
        return outcomes


@fuzz(25, 1000)
@given(models())
def test_generated_models_load(model):
    assert _load_both(toml_document(model)) == [True, True]


@fuzz(80, 3000)
@given(models().flatmap(mutations))
def test_mutated_models_load_or_raise_model_spec_error(model):
    _load_both(toml_document(model))


@fuzz(40, 1000)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 models().map(toml_document).flatmap(
                     lambda t: st.integers(0, len(t)).map(lambda i: t[:i] + "[[" + t[i:]))))
def test_broken_toml_raises_model_spec_error(text):
    _load_both(text)
