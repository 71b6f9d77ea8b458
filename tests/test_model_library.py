"""Every shipped module loads alone (check_module) and all compose (load_model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from il2sim.errors import ModelSpecError
from il2sim.model import available_models, check_module, load_model

MODELS = Path(__file__).resolve().parents[1] / "models"
LIBRARY = ["il2_pk_sc", "il2_signal", "lymphocytes", "nk", "eosinophils", "sil2r", "myeloma"]

# What each module reads from the others (models/README.md, "Reads from").
EXPECTS = {
    "il2_pk_sc": {"Treg_rel", "CD4a_rel", "NK_rel", "sIL2R"},
    "il2_signal": {"C_free"},
    "lymphocytes": {"S_CD4act", "S_Treg_d", "S_CD8"},
    "nk": {"S_NKbright", "S_NKdim"},
    "eosinophils": {"CD25_rel"},
    "sil2r": {"Treg_rel", "CD4a_rel", "NKbr_rel"},
    "myeloma": {"NK_activity", "CD8_eff"},
}


def test_the_library_is_the_seven_documented_modules():
    assert sorted(available_models([MODELS])) == sorted(LIBRARY)


@pytest.mark.parametrize("name", LIBRARY)
def test_each_module_passes_the_single_module_check(name):
    check = check_module(MODELS / f"{name}.toml")
    assert check.name == name
    assert set(check.expects) == EXPECTS[name]
    assert not check.self_contained
    for sym, where in check.expects.items():
        assert where and all(w.startswith(("[outputs]", "[odes]", "[states]")) for w in where)


def test_bare_names_resolve_like_load_model():
    assert check_module("nk", search_path=[MODELS]).states == ("NKp1", "NKp2", "NKp3", "NKbr", "NKdim", "NKa")
    with pytest.raises(ModelSpecError, match=r"model 'nkk' not found in the search path \(did you mean 'nk'\?\)"):
        check_module("nkk", search_path=[MODELS])


def test_a_module_alone_does_not_compose_which_is_why_check_module_exists():
    with pytest.raises(ModelSpecError, match=r"unknown symbol 'Treg_rel'"):
        load_model([MODELS / "il2_pk_sc.toml"])


def test_all_modules_compose_and_every_expected_symbol_is_provided_once():
    model = load_model([MODELS / f"{n}.toml" for n in LIBRARY])
    assert len(model.state_names) == 24
    provided = {}
    for name in LIBRARY:
        for sym in check_module(MODELS / f"{name}.toml").provides:
            assert sym not in provided, f"{sym} defined in {provided.get(sym)} and {name}"
            provided[sym] = name
    for name, expected in EXPECTS.items():
        for sym in expected:
            assert provided[sym] != name


def test_every_parameter_has_unit_description_and_source():
    model = load_model([MODELS / f"{n}.toml" for n in LIBRARY])
    for p in model.parameters:
        assert p.unit.strip() and p.description.strip() and p.source.strip(), p.name


def test_the_bench_model_is_self_contained():
    check = check_module(MODELS / "bench" / "il2_pkpd12.toml")
    assert check.self_contained
    assert len(check.states) == 12


def test_problems_in_one_file_are_all_reported(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[model]\nname = "bad"\ndescription = "x"\ntime_unit = "h"\n'
        '[parameters]\nk = { value = 1.0, unit = "1/h", description = "rate", source = "" }\n'
        '[states]\nA = { initial = "B", unit = "nmol", description = "a" }\n'
        'B = { initial = 0.0, unit = "nmol", description = "b" }\n'
        '[outputs]\nx = { expr = "y + 1", unit = "1", description = "x" }\ny = { expr = "x * k", unit = "1", description = "y" }\n'
        '[odes]\nA = "-k * A + Cext"\n',
        encoding="utf-8",
    )
    with pytest.raises(ModelSpecError) as err:
        check_module(bad)
    text = str(err.value)
    assert "[parameters] k.source: is empty" in text
    assert "[states] B: state has no equation in [odes]" in text
    assert "cycle among outputs" in text
    assert "[states] A.initial: 'B' is a state; initial may use parameters only" in text
    assert "Cext" not in text  # an external symbol is expected, not an error
