"""Model files: every validation rule with its exact message, all problems reported at once,
name lookup, and composition of modules by shared symbols."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from il2sim.errors import ModelSpecError
from il2sim.model import Model, available_models, load_model

PK = """\
[model]
name = "pk"
description = "s.c. depot -> central"
time_unit = "h"

[parameters]
ka = { value = 0.25, unit = "1/h", description = "absorption rate", source = "test" }
F  = { value = 0.35, unit = "1", description = "bioavailability", source = "test", upper = 1 }
Vc = { value = 5.0, unit = "L", description = "volume", source = "test" }
CL = { value = 1.0, unit = "L/h", description = "clearance", source = "test" }

[states]
Asc = { initial = 0.0, unit = "nmol", description = "depot", bioavailability = "F", lag = 0.5 }
Ac  = { initial = 0.0, unit = "nmol", description = "central" }

[outputs]
C = { expr = "1000 * Ac / Vc", unit = "pM", description = "serum IL-2" }

[odes]
Asc = "-ka * Asc"
Ac  = "ka * Asc - CL / Vc * Ac"
"""

NK = """\
[model]
name = "nk"
description = "NK cells driven by C"
time_unit = "h"

[parameters]
NK0  = { value = 200.0, unit = "cells/uL", description = "baseline", source = "test" }
kout = { value = 0.01, unit = "1/h", description = "turnover", source = "test" }
Emax = { value = 3.0, unit = "1", description = "max stimulation", source = "test" }
EC50 = { value = 20.0, unit = "pM", description = "potency", source = "test" }

[states]
NK = { initial = "NK0", unit = "cells/uL", description = "NK cells" }

[outputs]
NK_rel = { expr = "NK / NK0", unit = "1", description = "fold change" }
Stim   = { expr = "Emax * hill(C, EC50, 1)", unit = "1", description = "stimulation" }

[odes]
NK = "kout * NK0 * (1 + Stim) - kout * NK"
"""

TUMOUR = """\
[model]
name = "tumour"
description = "tumour killed by NK"
time_unit = "h"

[parameters]
kg = { value = 0.001, unit = "1/h", description = "growth", source = "test" }
kk = { value = 0.002, unit = "1/h", description = "kill", source = "test" }

[states]
Tum = { initial = 1.0, unit = "1", description = "tumour burden" }

[outputs]
Kill = { expr = "kk * NK_rel", unit = "1/h", description = "kill rate" }

[odes]
Tum = "(kg - Kill) * Tum"
"""


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work inside tmp_path so that files are named relative to it in messages."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(*texts: tuple[str, str], folder: Path) -> list[str]:
    paths = [write(folder, name, text) for name, text in texts]
    with pytest.raises(ModelSpecError) as info:
        load_model(paths)
    return info.value.problems


def one_problem(folder: Path, text: str, name: str = "m.toml", *others: tuple[str, str]) -> str:
    found = problems_of(*others, (name, text), folder=folder)
    assert len(found) == 1, found
    return found[0]


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# --- a valid composition --------------------------------------------------------------------


def test_three_modules_compose_by_shared_symbols(here):
    paths = [write(here, "pk.toml", PK), write(here, "nk.toml", NK), write(here, "tumour.toml", TUMOUR)]
    m = load_model(paths)
    assert isinstance(m, Model)
    assert m.name == "pk+nk+tumour"
    assert m.parameter_names == ("ka", "F", "Vc", "CL", "NK0", "kout", "Emax", "EC50", "kg", "kk")
    assert m.state_names == ("Asc", "Ac", "NK", "Tum")
    assert m.output_names == ("C", "NK_rel", "Stim", "Kill")
    assert list(m.odes) == list(m.state_names)
    assert m.files == tuple(paths)
    assert [mod.name for mod in m.modules] == ["pk", "nk", "tumour"]
    np.testing.assert_array_equal(m.default_parameters(), [0.25, 0.35, 5, 1, 200, 0.01, 3, 20, 0.001, 0.002])
    assert m.default_parameters().dtype == np.float64
    assert (m.parameter_index("EC50"), m.state_index("NK"), m.output_index("Kill")) == (7, 2, 3)
    nk = m.states[2]
    assert (nk.initial.text, nk.unit, nk.description, nk.lower, nk.file) == ("NK0", "cells/uL", "NK cells", 0.0, "nk.toml")
    asc = m.states[0]
    assert (asc.bioavailability.text, asc.lag.constant, m.states[1].bioavailability) == ("F", 0.5, None)
    f = m.parameters[1]
    assert (f.value, f.unit, f.source, f.lower, f.upper, f.file) == (0.35, "1", "test", 0.0, 1.0, "pk.toml")
    assert m.outputs[0].expr.symbols == {"Ac", "Vc"}


def test_outputs_are_ordered_by_dependency_across_modules(here):
    # Kill (tumour) uses NK_rel (nk), listed first here.
    m = load_model([write(here, "tumour.toml", TUMOUR), write(here, "nk.toml", NK), write(here, "pk.toml", PK)])
    names = m.output_names
    assert names.index("NK_rel") < names.index("Kill")
    assert names.index("C") < names.index("Stim")
    assert m.state_names == ("Tum", "NK", "Asc", "Ac")


def test_index_lookup_suggests(here):
    m = load_model(write(here, "pk.toml", PK))
    with pytest.raises(KeyError, match=r"model pk: unknown parameter 'kaa' \(did you mean 'ka'\?\)"):
        m.parameter_index("kaa")


def test_with_parameters(here):
    m = load_model([write(here, "pk.toml", PK), write(here, "nk.toml", NK)])
    m2 = m.with_parameters({"ka": 0.5, "NK0": 100})
    assert m2.default_parameters()[[0, 4]].tolist() == [0.5, 100.0]
    assert m.default_parameters()[0] == 0.25  # the original is unchanged
    assert m2.text_hash != m.text_hash  # provenance follows the values
    assert m2.code_hash == m.code_hash  # the generated code does not
    with pytest.raises(ModelSpecError) as info:
        m.with_parameters({"kaa": 1.0, "F": 1.5, "Vc": "big", "CL": -1.0, "EC50": math.inf})
    assert info.value.problems == [
        "with_parameters: kaa: unknown parameter (did you mean 'ka'?)",
        "with_parameters: F: value 1.5 is above the upper bound 1.0",
        "with_parameters: Vc: expected a number, got str 'big'",
        "with_parameters: CL: value -1.0 is below the lower bound 0.0",
        "with_parameters: EC50: value inf is not finite",
    ]
    assert str(info.value).startswith("model pk+nk: invalid parameter values: 5 problem(s)\n")


def test_with_parameters_rechecks_dependent_initial_values(here):
    text = edit(NK, 'NK0  = { value = 200.0,', 'NK0  = { value = 200.0, lower = -inf,')
    m = load_model([write(here, "pk.toml", PK), write(here, "nk.toml", text)])
    with pytest.raises(ModelSpecError, match=re.escape(
        "nk.toml: [states] NK.initial: initial 'NK0' = -5.0 is below the lower bound 0.0"
    )):
        m.with_parameters({"NK0": -5.0})


def test_hashes_ignore_formatting_but_not_content(here):
    a = load_model(write(here, "a.toml", PK))
    spaced = PK.replace("ka * Asc - CL / Vc * Ac", "(ka*Asc)   -   (CL/Vc)*Ac").replace("[odes]", "# comment\n[odes]")
    b = load_model(write(here, "b.toml", spaced))
    assert (a.text_hash, a.code_hash) == (b.text_hash, b.code_hash)
    c = load_model(write(here, "c.toml", edit(PK, "CL / Vc * Ac", "CL / Vc * Ac * 2")))
    assert c.code_hash != a.code_hash and c.text_hash != a.text_hash
    d = load_model(write(here, "d.toml", edit(PK, 'unit = "L/h", description = "clearance"', 'unit = "L/h", description = "CL"')))
    assert d.code_hash == a.code_hash and d.text_hash != a.text_hash
    assert len(a.text_hash) == 64


# --- name lookup ----------------------------------------------------------------------------


def test_bare_names_use_the_search_path(here, monkeypatch):
    lib, extra = here / "lib", here / "extra"
    lib.mkdir()
    extra.mkdir()
    write(lib, "pk.toml", PK)
    write(lib, "nk.toml", NK)
    write(extra, "pk.toml", edit(PK, 'name = "pk"', 'name = "pk_extra"'))
    assert load_model(["pk", "nk"], search_path=[lib]).name == "pk+nk"
    assert load_model("pk", search_path=[extra, lib]).name == "pk_extra"  # first folder wins
    assert set(available_models([lib])) == {"pk", "nk"}
    monkeypatch.setenv("IL2SIM_MODEL_PATH", f"{extra}{__import__('os').pathsep}{lib}")
    assert load_model(["pk", "nk"]).name == "pk_extra+nk"
    assert {"pk", "nk"} <= set(available_models())


def test_unknown_name_lists_available(here):
    lib = here / "lib"
    lib.mkdir()
    write(lib, "pk.toml", PK)
    write(lib, "nk.toml", NK)
    with pytest.raises(ModelSpecError) as info:
        load_model(["pkk", "nk"], search_path=[lib])
    assert info.value.problems == [
        f"model 'pkk' not found in the search path ({lib}) (did you mean 'pk'?); available: nk, pk"
    ]


def test_default_search_path_has_the_repository_models():
    import il2sim

    repo_models = Path(il2sim.__file__).resolve().parents[1] / "models"
    found = available_models()
    assert all(p.parent == repo_models for p in found.values() if p.parent.name == "models")


def test_missing_and_repeated_files(here):
    write(here, "pk.toml", PK)
    with pytest.raises(ModelSpecError) as info:
        load_model(["pk.toml", "./pk.toml", "none.toml"])
    assert info.value.problems == ["pk.toml: listed twice (also as pk.toml)", "none.toml: file not found"]


# --- one rule, one message ------------------------------------------------------------------


def test_unknown_symbol_with_suggestion(here):
    nk = edit(NK, 'NK = "kout * NK0', 'NK = "kout * Cc * NK0')
    found = problems_of(("pk.toml", PK), ("nk.toml", nk), folder=here)
    assert found == ["nk.toml: [odes] NK: unknown symbol 'Cc' (did you mean 'C'?)"]


def test_unknown_symbol_in_output_and_several_suggestions(here):
    text = edit(PK, '"1000 * Ac / Vc"', '"1000 * Acc / Vc + zzz"')
    found = problems_of(("pk.toml", text), folder=here)
    assert found == [
        "pk.toml: [outputs] C.expr: unknown symbol 'Acc' (did you mean 'Ac' or 'Asc'?)",
        "pk.toml: [outputs] C.expr: unknown symbol 'zzz'",
    ]


def test_composition_missing_a_module_names_each_use(here):
    # nk alone does not define C: every place that uses it is reported.
    assert problems_of(("nk.toml", NK), folder=here) == [
        "nk.toml: [outputs] Stim.expr: unknown symbol 'C'"
    ]


def test_state_without_equation(here):
    text = edit(PK, 'Ac  = "ka * Asc - CL / Vc * Ac"\n', "")
    assert one_problem(here, text) == "m.toml: [states] Ac: state has no equation in [odes]"


def test_equation_without_state(here):
    text = PK + 'Acc = "0"\nka = "1"\n'
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [odes] Acc: equation for 'Acc', which is not a state (did you mean 'Ac' or 'Asc'?)",
        "m.toml: [odes] ka: equation for 'ka', which is a parameter, not a state",
    ]


def test_second_equation_in_another_module(here):
    other = 'Ac = "0"\n'
    text = NK + other
    found = problems_of(("pk.toml", PK), ("nk.toml", text), folder=here)
    assert found == ["nk.toml: [odes] Ac: second equation for 'Ac' (the first is in pk.toml)"]


def test_duplicate_symbol_names_both_files(here):
    nk = edit(NK, "[parameters]\n", '[parameters]\nka = { value = 1.0, unit = "1/h", description = "d", source = "s" }\n')
    found = problems_of(("pk.toml", PK), ("nk.toml", nk), folder=here)
    assert found == [
        "nk.toml: [parameters] ka: 'ka' is defined twice: in pk.toml [parameters] and in nk.toml [parameters]"
    ]


def test_duplicate_symbol_across_sections_of_one_file(here):
    text = edit(PK, "[outputs]\n", '[outputs]\nka = { expr = "1", unit = "1", description = "d" }\n')
    assert one_problem(here, text) == (
        "m.toml: [outputs] ka: 'ka' is defined twice: in m.toml [parameters] and in m.toml [outputs]"
    )


def test_duplicate_module_name(here):
    found = problems_of(("a.toml", NK), ("b.toml", edit(NK, "[parameters]\n", "[parameters]\nX = 1\n").replace("NK0 ", "NK0b").replace("[states]\nNK", "[states]\nNKb")), folder=here)
    assert "b.toml: [model] name: module name 'nk' is also used by a.toml" in found


@pytest.mark.parametrize("name", ["t", "time", "TIME", "amt", "AMT", "Cmt", "evid", "ii", "addl", "ss", "SS", "rate",
                                  "dur", "id", "ID", "mdv", "dv", "exp", "hill", "where", "min", "lambda", "None", "if"])
def test_reserved_names(here, name):
    text = edit(PK, "[parameters]\n", f'[parameters]\n{name} = {{ value = 1.0, unit = "1", description = "d", source = "s" }}\n')
    assert one_problem(here, text) == (
        f"m.toml: [parameters] {name}: {name!r} is a reserved name (reserved: t, addl, amt, cmt, dur, dv, evid, "
        "id, ii, mdv, rate, ss, time in any case, the function names and Python keywords)"
    )


def test_names_that_look_reserved_but_are_not(here):
    text = edit(PK, "[parameters]\n", '[parameters]\nT = { value = 1.0, unit = "1", description = "d", source = "s" }\n'
                'rate_in = { value = 1.0, unit = "1", description = "d", source = "s" }\n')
    assert load_model(write(here, "m.toml", text)).parameter_names[:2] == ("T", "rate_in")


@pytest.mark.parametrize("name", ["1x", "_x", "a-b", "a b", "x" * 65, "\u0430"])
def test_bad_identifiers(here, name):
    text = edit(PK, "[states]\n", f'[states]\n"{name}" = {{ initial = 0, unit = "1", description = "d" }}\n') + f'"{name}" = "0"\n'
    assert one_problem(here, text) == (
        f"m.toml: [states] {name}: {name!r} is not a valid name (ASCII letter first, then letters, digits "
        "or '_', at most 64 characters)"
    )


def test_missing_unit_source_description(here):
    text = edit(PK, 'ka = { value = 0.25, unit = "1/h", description = "absorption rate", source = "test" }',
                "ka = { value = 0.25 }")
    text = edit(text, 'unit = "nmol", description = "central"', 'unit = "", description = " "')
    text = edit(text, 'unit = "pM", description = "serum IL-2"', 'unit = "pM"')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [parameters] ka: missing 'unit'",
        "m.toml: [parameters] ka: missing 'description'",
        "m.toml: [parameters] ka: missing 'source'",
        "m.toml: [states] Ac.unit: is empty (use \"1\" for dimensionless)",
        "m.toml: [states] Ac.description: is empty",
        "m.toml: [outputs] C: missing 'description'",
    ]


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('value = 5.0, unit = "L"', 'value = inf, unit = "L"', "m.toml: [parameters] Vc.value: value inf is not finite"),
        ('value = 5.0, unit = "L"', 'value = nan, unit = "L"', "m.toml: [parameters] Vc.value: value nan is not finite"),
        ('initial = 0.0, unit = "nmol", description = "central"', 'initial = nan, unit = "nmol", description = "central"',
         "m.toml: [states] Ac.initial: value nan is not finite"),
        ('initial = 0.0, unit = "nmol", description = "central"', 'initial = "1 / (Vc - 5)", unit = "nmol", description = "central"',
         "m.toml: [states] Ac.initial: initial '1 / (Vc - 5)' = inf is not finite"),
    ],
)
def test_non_finite_values(here, old, new, message):
    assert one_problem(here, edit(PK, old, new)) == message


def test_negative_values_need_a_declared_lower_bound(here):
    text = edit(PK, 'value = 1.0, unit = "L/h"', 'value = -1.0, unit = "L/h"')
    text = edit(text, 'initial = 0.0, unit = "nmol", description = "central"', 'initial = -2, unit = "nmol", description = "central"')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [parameters] CL.value: value -1.0 is below the lower bound 0.0 "
        "(negative values need an explicit lower bound, e.g. lower = -inf)",
        "m.toml: [states] Ac.initial: initial -2.0 is below the lower bound 0.0 "
        "(negative initial values need an explicit lower bound, e.g. lower = -inf)",
    ]
    allowed = edit(text, 'value = -1.0, unit = "L/h"', 'value = -1.0, lower = -inf, unit = "L/h"')
    allowed = edit(allowed, 'initial = -2, unit', 'initial = -2, lower = -10, unit')
    m = load_model(write(here, "ok.toml", allowed))
    assert (m.parameters[3].lower, m.states[1].lower) == (-math.inf, -10.0)


def test_values_outside_bounds(here):
    text = edit(PK, 'value = 0.35, unit = "1", description = "bioavailability", source = "test", upper = 1',
                'value = 1.35, unit = "1", description = "bioavailability", source = "test", upper = 1')
    text = edit(text, 'value = 5.0, unit = "L"', 'value = 5.0, lower = 10, unit = "L"')
    text = edit(text, 'value = 1.0, unit = "L/h"', 'value = 1.0, lower = 3, upper = 2, unit = "L/h"')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [parameters] F.value: value 1.35 is above the upper bound 1.0",
        "m.toml: [parameters] Vc.value: value 5.0 is below the lower bound 10.0",
        "m.toml: [parameters] CL: bounds [3.0, 2.0] are not an interval (need lower <= upper)",
    ]


def test_initial_value_expression_is_checked_with_default_parameters(here):
    text = edit(NK, 'initial = "NK0"', 'initial = "NK0 - 300"')
    found = problems_of(("pk.toml", PK), ("nk.toml", text), folder=here)
    assert found == [
        "nk.toml: [states] NK.initial: initial 'NK0 - 300' = -100.0 is below the lower bound 0.0 "
        "(negative initial values need an explicit lower bound, e.g. lower = -inf)"
    ]


def test_initial_bioavailability_lag_use_parameters_only(here):
    text = edit(PK, 'bioavailability = "F", lag = 0.5', 'bioavailability = "C", lag = "t + Ac + Vcc"')
    text = edit(text, 'initial = 0.0, unit = "nmol", description = "central"', 'initial = "Asc", unit = "nmol", description = "central"')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [states] Asc.bioavailability: 'C' is an output; bioavailability may use parameters only",
        "m.toml: [states] Asc.lag: 'Ac' is a state; lag may use parameters only",
        "m.toml: [states] Asc.lag: unknown symbol 'Vcc' (did you mean 'Vc'?)",
        "m.toml: [states] Asc.lag: 't' is the time; lag may use parameters only",
        "m.toml: [states] Ac.initial: 'Asc' is a state; initial may use parameters only",
    ]


def test_bioavailability_and_lag_bounds(here):
    text = edit(PK, 'bioavailability = "F", lag = 0.5', 'bioavailability = "F - 1", lag = -0.5')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [states] Asc.bioavailability: bioavailability 'F - 1' = -0.65 is below the lower bound 0.0",
        "m.toml: [states] Asc.lag: lag -0.5 is below the lower bound 0.0",
    ]


def test_cycle_among_outputs(here):
    text = edit(PK, "[outputs]\n", '[outputs]\nA = { expr = "B + C", unit = "1", description = "a" }\n'
                'B = { expr = "2 * A", unit = "1", description = "b" }\nS = { expr = "S", unit = "1", description = "s" }\n')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [outputs] cycle among outputs: A -> B -> A",
        "m.toml: [outputs] cycle among outputs: S -> S",
    ]


def test_cycle_across_modules_names_both_files(here):
    pk = edit(PK, '"1000 * Ac / Vc"', '"1000 * Ac / Vc * Stim"')
    found = problems_of(("pk.toml", pk), ("nk.toml", NK), folder=here)
    assert found == ["nk.toml, pk.toml: [outputs] cycle among outputs: C -> Stim -> C"]


def test_unknown_keys_list_valid_keys(here):
    text = edit(PK, 'time_unit = "h"', 'time_unit = "h"\nversion = 2')
    text = edit(text, 'source = "test" }', 'source = "test", sd = 0.1 }')
    text = edit(text, 'description = "central" }', 'description = "central", upper = 3 }')
    text = edit(text, 'description = "serum IL-2" }', 'description = "serum IL-2", expression = "x" }')
    text += "\n[covariates]\nWT = 70\n"
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: unknown table(s) 'covariates' (valid tables: model, parameters, states, outputs, odes)",
        "m.toml: [model]: unknown key(s) 'version' (valid keys: name, description, time_unit)",
        "m.toml: [parameters] ka: unknown key(s) 'sd' (valid keys: value, unit, description, source, lower, upper)",
        "m.toml: [states] Ac: unknown key(s) 'upper' (valid keys: initial, unit, description, lower, bioavailability, lag)",
        "m.toml: [outputs] C: unknown key(s) 'expression' (valid keys: expr, unit, description)",
    ]


def test_wrong_types(here):
    text = edit(PK, 'Vc = { value = 5.0, unit = "L", description = "volume", source = "test" }', "Vc = 5.0")
    text = edit(text, 'ka = { value = 0.25, unit = "1/h"', 'ka = { value = "0.25", unit = 1')
    text = edit(text, 'initial = 0.0, unit = "nmol", description = "central"', 'initial = true, unit = "nmol", description = "central"')
    text = edit(text, 'Asc = "-ka * Asc"', "Asc = [1]")
    text = edit(text, "[outputs]\n", "[outputs]\nD = { expr = 3, unit = \"1\", description = \"d\" }\n"
                "E = { expr = false, unit = \"1\", description = \"e\" }\n")
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [parameters] ka.unit: expected a string, got int 1",
        "m.toml: [parameters] ka.value: expected a number, got string '0.25'",
        "m.toml: [parameters] Vc: expected a table like { value = 1.0, unit = \"1/h\", description = \"...\", "
        "source = \"...\" }, got float 5.0",
        "m.toml: [states] Ac.initial: expected a number or an expression over parameters, got boolean True",
        "m.toml: [outputs] E.expr: expected an expression string, got boolean False",
        "m.toml: [odes] Asc: expected an expression string, got array [1]",
        "m.toml: [outputs] C.expr: unknown symbol 'Vc'",
        "m.toml: [odes] Ac: unknown symbol 'Vc'",
    ]


def test_invalid_toml_names_file_and_line(here):
    text = PK.replace('ka = { value = 0.25', 'ka = { value = 0.25,,')
    found = one_problem(here, text)
    assert re.fullmatch(r"m\.toml: invalid TOML: .*\(at line 7, column \d+\)", found), found


def test_time_unit_and_missing_model_table(here):
    text = edit(PK, 'time_unit = "h"', 'time_unit = "min"')
    assert one_problem(here, text) == (
        "m.toml: [model] time_unit: 'min' is not supported (expected \"h\"; il2sim time is in hours)"
    )
    text = PK.split("[parameters]")[1]
    assert one_problem(here, "[parameters]" + text, "n.toml") == (
        'n.toml: missing table [model] (with name, description, time_unit = "h")'
    )


def test_expression_errors_name_file_and_field(here):
    text = edit(PK, '"-ka * Asc"', '"-ka * Asc.real"')
    text = edit(text, '"1000 * Ac / Vc"', '"__import__(1)"')
    assert problems_of(("m.toml", text), folder=here) == [
        "m.toml: [outputs] C.expr: call to '__import__' is not allowed (column 1); allowed functions: "
        "exp, log, log10, sqrt, abs, min, max, hill, where",
        "m.toml: [odes] Asc: attribute access '.real' is not allowed (column 7)",
    ]


def test_many_problems_reported_at_once(here):
    nk = """\
[model]
name = "nk"
description = "broken on purpose"
time_unit = "min"
extra = 1

[parameters]
kp   = { value = -0.1, unit = "1/h", description = "p" }
amt  = { value = 1, unit = "", description = "p", source = "s", colour = "red" }
ka   = { value = "x", unit = "1", description = "d", source = "s" }
NK0  = { value = 1e3, unit = "cells/uL", description = "d", source = "s", lower = 10, upper = 5 }

[states]
NK  = { initial = "NK0", unit = "cells/uL", description = "nk" }
NKd = { initial = "C", unit = "cells/uL", description = "nk", lag = "kp" }
Lonely = { initial = 0, unit = "1", description = "no equation" }

[outputs]
A = { expr = "B + 1", unit = "1", description = "a" }
B = { expr = "A * 2", unit = "1", description = "b" }

[odes]
NK  = "kp * NK * hill(C, 10, 1)"
NKd = "kp * Cc"
Foo = "1"
"""
    found = problems_of(("pk.toml", PK), ("nk.toml", nk), folder=here)
    assert found == [
        "nk.toml: [model]: unknown key(s) 'extra' (valid keys: name, description, time_unit)",
        "nk.toml: [model] time_unit: 'min' is not supported (expected \"h\"; il2sim time is in hours)",
        "nk.toml: [parameters] kp: missing 'source'",
        "nk.toml: [parameters] kp.value: value -0.1 is below the lower bound 0.0 "
        "(negative values need an explicit lower bound, e.g. lower = -inf)",
        "nk.toml: [parameters] amt: 'amt' is a reserved name (reserved: t, addl, amt, cmt, dur, dv, evid, id, ii, "
        "mdv, rate, ss, time in any case, the function names and Python keywords)",
        "nk.toml: [parameters] amt: unknown key(s) 'colour' (valid keys: value, unit, description, source, lower, upper)",
        "nk.toml: [parameters] amt.unit: is empty (use \"1\" for dimensionless)",
        "nk.toml: [parameters] ka.value: expected a number, got string 'x'",
        "nk.toml: [parameters] NK0: bounds [10.0, 5.0] are not an interval (need lower <= upper)",
        "nk.toml: [parameters] ka: 'ka' is defined twice: in pk.toml [parameters] and in nk.toml [parameters]",
        "nk.toml: [odes] Foo: equation for 'Foo', which is not a state",
        "nk.toml: [states] Lonely: state has no equation in [odes]",
        "nk.toml: [states] NKd.initial: 'C' is an output; initial may use parameters only",
        "nk.toml: [odes] NKd: unknown symbol 'Cc' (did you mean 'C'?)",
        "nk.toml: [outputs] cycle among outputs: A -> B -> A",
        "nk.toml: [states] NKd.lag: lag 'kp' = -0.1 is below the lower bound 0.0",
    ]
    with pytest.raises(ModelSpecError, match=r"^invalid model: 16 problem\(s\)\n  - nk\.toml: \[model\]"):
        load_model(["pk.toml", "nk.toml"])


def test_broken_file_does_not_hide_problems_in_other_files(here):
    found = problems_of(("bad.toml", "x = = 1"), ("nk.toml", edit(NK, 'value = 0.01', 'value = -0.01')), folder=here)
    assert len(found) == 2
    assert found[0].startswith("bad.toml: invalid TOML: ")
    assert found[1].startswith("nk.toml: [parameters] kout.value: value -0.01 is below the lower bound 0.0")


def test_model_pickles_and_hashes(here):
    """Models travel to worker processes (dask) and serve as cache keys."""
    import pickle

    m = load_model([write(here, "pk.toml", PK), write(here, "nk.toml", NK)])
    copy = pickle.loads(pickle.dumps(m))
    assert copy == m and hash(copy) == hash(m) and copy.text_hash == m.text_hash
    assert dict(copy.odes) == dict(m.odes) and copy.odes["NK"].symbols == {"kout", "NK0", "Stim", "NK"}
    with pytest.raises(TypeError):
        m.odes["NK"] = m.odes["Ac"]  # read-only
