"""SBML export and import (issue 7): every shipped model reads back in libsbml without errors,
simulates in libRoadRunner to il2sim's trajectory, and round-trips through il2sim's importer.

The libRoadRunner comparisons are guarded by ``pytest.importorskip``; libroadrunner is in the
``test`` extra, so CI runs them.
"""

from __future__ import annotations

import html
import math
import tomllib
from pathlib import Path

import libsbml
import numpy as np
import pytest

from il2sim._codegen import compile_model
from il2sim.cli import main
from il2sim.dosing import Dose, to_kernel_events
from il2sim.errors import ModelSpecError, RegimenError
from il2sim.model import load_model
from il2sim.sbml import from_sbml, parse_unit, sbml_ids, to_sbml, write_sbml
from solver_harness import solve

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "configs" / "mm_low_dose_1995.toml"


def _seed_library():
    names = tomllib.loads(SEED_CONFIG.read_text(encoding="utf-8"))["scenario"]["models"]
    return load_model([ROOT / "models" / f"{n}.toml" for n in names])


SHIPPED = {
    "seed_library": _seed_library,
    "il2_pkpd12": lambda: load_model(ROOT / "models" / "bench" / "il2_pkpd12.toml"),
}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    model = SHIPPED[request.param]()
    return model, to_sbml(model)


def _read(text: str):
    """Read SBML text, run every libsbml consistency check; fail listing the errors."""
    doc = libsbml.readSBMLFromString(text)
    doc.checkConsistency()
    errors = [doc.getError(i) for i in range(doc.getNumErrors())]
    serious = [f"{e.getErrorId()} line {e.getLine()}: {e.getMessage().strip()}"
               for e in errors if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    assert not serious, "\n".join(serious)
    return doc


# ---------------------------------------------------------------------------------------------
# Export


def test_export_of_each_shipped_model_reads_back_without_errors(shipped):
    model, text = shipped
    doc = _read(text)
    assert (doc.getLevel(), doc.getVersion()) == (3, 2)
    m = doc.getModel()
    assert m.getNumEvents() == 0 and m.getNumReactions() == 0 and m.getNumSpecies() == 0
    assert m.getNumParameters() == len(model.parameters) + len(model.states) + len(model.outputs)


def test_every_parameter_state_and_output_is_there_under_its_il2sim_name(shipped):
    model, text = shipped
    doc = _read(text)  # libsbml objects live only as long as their document
    m = doc.getModel()
    assert sbml_ids(model) == {n: n for n in (*model.parameter_names, *model.state_names, *model.output_names)}
    for prm in model.parameters:
        p = m.getParameter(prm.name)
        assert p is not None and p.getConstant() and p.getValue() == prm.value
        assert m.getRule(prm.name) is None and m.getInitialAssignment(prm.name) is None
        assert prm.source in html.unescape(p.getNotesString())
    defaults = {p.name: p.value for p in model.parameters}
    for st in model.states:
        p = m.getParameter(st.name)
        assert p is not None and not p.getConstant()
        assert m.getRateRule(st.name) is not None
        ia = m.getInitialAssignment(st.name)
        if st.initial.constant is not None:
            assert ia is None and p.getValue() == st.initial.constant
        else:
            assert ia is not None
            from il2sim._expr import evaluate

            assert p.getValue() == evaluate(st.initial, defaults)
    for out in model.outputs:
        p = m.getParameter(out.name)
        assert p is not None and not p.getConstant()
        assert m.getAssignmentRule(out.name) is not None


def test_dosed_state_keeps_bioavailability_and_lag_in_notes_and_annotation(shipped):
    model, text = shipped
    doc = libsbml.readSBMLFromString(text)
    m = doc.getModel()
    asc = m.getParameter("Asc")
    st = model.states[model.state_index("Asc")]
    assert st.bioavailability is not None
    assert f'bioavailability="{st.bioavailability.text}"' in asc.getAnnotationString()
    assert f'lag="{st.lag.text}"' in asc.getAnnotationString()
    assert "doses are not part of this SBML model" in asc.getNotesString()
    assert model.text_hash in m.getNotesString()


def test_units_and_time_unit(shipped):
    model, text = shipped
    doc = libsbml.readSBMLFromString(text)
    m = doc.getModel()
    hour = m.getUnitDefinition(m.getTimeUnits())
    assert hour.getNumUnits() == 1
    u = hour.getUnit(0)
    assert libsbml.UnitKind_toString(u.getKind()) == "second" and u.getExponent() == 1
    assert u.getMultiplier() * 10.0 ** u.getScale() == pytest.approx(3600.0, rel=1e-15)
    for prm in model.parameters:
        p = m.getParameter(prm.name)
        if prm.unit == "1":
            assert p.getUnits() == "dimensionless"
        else:
            assert m.getUnitDefinition(p.getUnits()).getName() == prm.unit


@pytest.mark.parametrize("text, factor, kinds", [
    ("1", 1.0, ()),
    ("1/h", 1 / 3600, (("second", -1),)),
    ("1/d", 1 / 86400, (("second", -1),)),
    ("pM", 1e-12, (("mole", 1), ("litre", -1))),
    ("nmol", 1e-9, (("mole", 1),)),
    ("cells/uL", 1e6, (("item", 1), ("litre", -1))),
    ("L/h", 1 / 3600, (("litre", 1), ("second", -1))),
    ("kDa", 1e3, (("gram", 1), ("mole", -1))),
    ("pM/(IU/mL)", 1e-15, (("mole", 1),)),  # IU: potency, dimensionless in SBML
    ("MIU/m2", 1e6, (("metre", -2),)),
])
def test_unit_strings_become_sbml_base_units(text, factor, kinds):
    unit = parse_unit(text)
    assert unit.kinds == kinds
    assert unit.factor == pytest.approx(factor, rel=1e-14)


@pytest.mark.parametrize("text", ["furlong", "1/", "(L", "L)", "L**2"])
def test_unit_strings_that_cannot_be_read_give_none(text):
    assert parse_unit(text) is None


def test_write_sbml_replaces_the_file_atomically(tmp_path):
    model = SHIPPED["il2_pkpd12"]()
    path = tmp_path / "out" / "m.xml"
    assert write_sbml(model, path) == path
    path.write_text("old")
    write_sbml(model, path)
    assert path.read_text(encoding="utf-8") == to_sbml(model)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.xml"]


# ---------------------------------------------------------------------------------------------
# Every expression form, names SBML tools read as constants, time


FORMS = """
[model]
name = "forms"
description = "every expression form of il2sim"
time_unit = "h"

[parameters]
k    = { value = 0.5, unit = "1/h", description = "rate", source = "test" }
pi   = { value = 3.0, unit = "1", description = "named like the constant pi", source = "test" }
min2 = { value = 2.0, unit = "1", description = "named like the exported min function", source = "test" }
e    = { value = -1.5, lower = -inf, unit = "1", description = "named like Euler's number", source = "test" }

[states]
x = { initial = "2 * pi", unit = "1", description = "x", lower = -inf }
y = { initial = 1.0, unit = "nmol", description = "dosed", bioavailability = "0.5", lag = "pi / 10" }

[outputs]
a = { expr = "where(x > 1, log10(x + 1), sqrt(abs(x)))", unit = "1", description = "where, log10, sqrt, abs" }
b = { expr = "min(x, y, min2) + max(x, 1) + hill(y, 2, 3) + max(x, y, e, 0.5)", unit = "1", description = "min, max, hill" }
c = { expr = "(x < y) + where(y, 1, 2) + exp(-k * t) - log(y + 1) + x ** -1 - (x - y) ** 2 / (1 + x) ** 0.5", unit = "1", description = "comparison as a number, exp, log, powers, time" }
d = { expr = "t / 24 + e * pi - -e + (x >= 6) * (y != 1) + (x == x)", unit = "d", description = "time and renamed names" }

[odes]
x = "-k * x + 0.01 * a"
y = "-k * y + 0.1 * b - 1e-3 * c + 1e-4 * d"
"""


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    path = tmp_path_factory.mktemp("forms") / "forms.toml"
    path.write_text(FORMS, encoding="utf-8")
    model = load_model(path)
    return model, to_sbml(model)


def test_names_sbml_reads_as_constants_are_renamed_and_recorded(forms):
    model, text = forms
    ids = sbml_ids(model)
    assert ids["pi"] == "pi_" and ids["e"] == "e_" and ids["min2"] == "min2" and ids["x"] == "x"
    doc = _read(text)  # libsbml objects live only as long as their document
    m = doc.getModel()
    assert m.getParameter("pi_").getValue() == 3.0 and m.getParameter("pi") is None
    # the exported min function steps aside for the parameter named min2
    assert m.getFunctionDefinition("min2_") is not None and m.getFunctionDefinition("min3") is not None
    assert 'il2sim="pi" sbml="pi_"' in m.getAnnotationString()


def test_time_is_the_sbml_time_csymbol(forms):
    _, text = forms
    doc = libsbml.readSBMLFromString(text)
    d = doc.getModel().getAssignmentRule("d")
    assert libsbml.writeMathMLToString(d.getMath()).count('definitionURL="http://www.sbml.org/sbml/symbols/time"') == 1


def _same_definitions(a, b):
    assert a.parameter_names == b.parameter_names and a.state_names == b.state_names
    assert a.output_names == b.output_names
    for p, q in zip(a.parameters, b.parameters):
        assert (p.value, p.unit, p.description, p.source, p.lower, p.upper) == (
            q.value, q.unit, q.description, q.source, q.lower, q.upper), p.name
    for s, r in zip(a.states, b.states):
        assert (s.initial, s.unit, s.description, s.lower, s.bioavailability, s.lag) == (
            r.initial, r.unit, r.description, r.lower, r.bioavailability, r.lag), s.name
    for o, r in zip(a.outputs, b.outputs):
        assert (o.expr, o.unit, o.description) == (r.expr, r.unit, r.description), o.name
    assert dict(a.odes) == dict(b.odes)
    # the generated code depends on exactly this: the round trip reuses the compiled module
    assert a.code_hash == b.code_hash


def test_every_expression_form_round_trips_to_the_same_tree(forms, tmp_path):
    model, text = forms
    path = tmp_path / "back.toml"
    path.write_text(from_sbml(text), encoding="utf-8")
    _same_definitions(model, load_model(path))


def test_every_expression_form_means_the_same_in_libroadrunner(forms):
    roadrunner = pytest.importorskip("roadrunner")
    model, text = forms
    _compare_with_roadrunner(model, text, roadrunner, t_end=10.0, n=11, perturb={})


# ---------------------------------------------------------------------------------------------
# libRoadRunner against il2sim's solver, and the round trip, for the shipped models

RTOL = 1e-10


def _atol(y0):
    return 1e-12 * np.maximum(np.abs(y0), 1.0)


def _compare_with_roadrunner(model, text, roadrunner, *, t_end, n, perturb):
    """Max over variables of max_t |y_rr - y_il2sim| / max_t |y_il2sim| (states and outputs)."""
    module = compile_model(model).module
    p = model.default_parameters()
    y0 = np.zeros(len(model.states))
    module.initial(p, y0)
    for name, amount in perturb.items():  # doses are outside the model: set the states
        y0[model.state_index(name)] += amount
    atol = _atol(y0)
    t_out = np.linspace(0.0, t_end, n)
    sol = solve(module, "rodas5p", t_out, p, y0=y0, rtol=RTOL, atol=atol, max_steps=1_000_000)
    assert sol.status == 0
    outputs = np.empty((1, n, module.N_OUTPUTS))
    module.eval_outputs(t_out, sol.y[None], p[None], outputs)

    rr = roadrunner.RoadRunner(text)
    rr.setIntegrator("cvode")
    rr.integrator.relative_tolerance = RTOL
    rr.integrator.maximum_num_steps = 1_000_000
    ids = sbml_ids(model)
    for name, value, tol in zip(model.state_names, y0, atol):
        rr[ids[name]] = value
        rr.integrator.setIndividualTolerance(ids[name], tol)
    selections = ["time"] + [ids[s] for s in model.state_names] + [ids[o] for o in model.output_names]
    got = rr.simulate(0.0, t_end, n, selections=selections)
    np.testing.assert_allclose(got[:, 0], t_out, rtol=1e-14)
    ours = np.hstack([sol.y, outputs[0]])
    theirs = np.asarray(got)[:, 1:]
    scale = np.maximum(np.abs(ours).max(axis=0), 1e-12)
    rel = np.abs(theirs - ours).max(axis=0) / scale
    worst = int(np.argmax(rel))
    names = [*model.state_names, *model.output_names]
    assert rel.max() <= 1e-6, f"{names[worst]}: relative difference {rel.max():.3g}"
    return float(rel.max())


def test_libroadrunner_simulates_each_shipped_model_to_il2sims_trajectory(shipped):
    roadrunner = pytest.importorskip("roadrunner")
    model, text = shipped
    # a 9 MIU/m2 s.c. dose (1.8 m2, 3.99 nmol/MIU) after bioavailability, and an IV bolus of 5 nmol
    f = model.parameters[model.parameter_index("F")].value
    _compare_with_roadrunner(model, text, roadrunner, t_end=21 * 24.0, n=85,
                             perturb={"Asc": f * 9.0 * 1.8 * 3.99, "Ac": 5.0})


def test_export_then_import_gives_the_same_model_and_trajectory(shipped, tmp_path):
    model, text = shipped
    path = tmp_path / "back.toml"
    path.write_text(from_sbml(text), encoding="utf-8")
    back = load_model(path)
    _same_definitions(model, back)
    t_out = np.linspace(0.0, 7 * 24.0, 29)
    runs = []
    for m in (model, back):
        module = compile_model(m).module
        p = m.default_parameters()
        y0 = np.zeros(len(m.states))
        module.initial(p, y0)
        y0[m.state_index("Asc")] += 30.0
        runs.append(solve(module, "rodas5p", t_out, p, y0=y0, rtol=1e-8, atol=1e-10).y)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_bolus_doses_become_sbml_events_that_libroadrunner_applies_like_il2sim(tmp_path):
    model = SHIPPED["il2_pkpd12"]()
    # 9 MIU/m2 (1.8 m2, 3.99 nmol/MIU) twice on day 1, then 0.9 MIU/m2 twice daily; one IV dose
    doses = [Dose(time=0.0, amt=64.638, cmt="Asc"), Dose(time=12.0, amt=64.638, cmt="Asc"),
             Dose(time=24.0, amt=6.4638, cmt="Asc", ii=12.0, addl=3), Dose(time=30.0, amt=2.0, cmt="Ac")]
    text = to_sbml(model, doses=doses)
    doc = _read(text)
    m = doc.getModel()
    assert m.getNumEvents() == 7
    assert libsbml.formulaToL3String(m.getEvent(0).getTrigger().getMath()) == "time >= (0 + tlag)"
    assert libsbml.formulaToL3String(m.getEvent(0).getEventAssignment(0).getMath()) == "Asc + F * 64.638"
    # the import leaves the doses out (they are a regimen in il2sim) and says so
    back = from_sbml(text)
    assert "# Note: 7 il2sim dose events left out: in il2sim doses are a regimen" in back
    with pytest.raises(RegimenError, match=r"dose 1 \(t = 0 h, cmt 'Asc'\): only bolus doses"):
        to_sbml(model, doses=[Dose(time=0.0, amt=1.0, cmt="Asc", duration=1.0)])
    with pytest.raises(RegimenError, match="'Nope' is not a state"):
        to_sbml(model, doses=[Dose(time=0.0, amt=1.0, cmt="Nope")])

    roadrunner = pytest.importorskip("roadrunner")
    module = compile_model(model).module
    p = model.default_parameters()
    f, lag = p[model.parameter_index("F")], p[model.parameter_index("tlag")]
    events = to_kernel_events(doses, state_index={s: i for i, s in enumerate(model.state_names)},
                              F={"Asc": f}, lag={"Asc": lag})
    t = np.linspace(0.0, 96.0, 97)
    y0 = np.zeros(len(model.states))
    module.initial(p, y0)
    atol = _atol(y0)
    ours = solve(module, "rodas5p", t, p, y0=y0, ev=events, rtol=RTOL, atol=atol, max_steps=1_000_000).y
    rr = roadrunner.RoadRunner(text)
    rr.setIntegrator("cvode")
    rr.integrator.relative_tolerance = RTOL
    for name, tol in zip(model.state_names, atol):
        rr.integrator.setIndividualTolerance(name, tol)
    theirs = np.asarray(rr.simulate(0.0, 96.0, 97, selections=["time", *model.state_names]))[:, 1:]
    rel = np.abs(theirs - ours).max(axis=0) / np.abs(ours).max(axis=0)
    assert rel.max() <= 1e-6, dict(zip(model.state_names, rel))


# ---------------------------------------------------------------------------------------------
# Import of plain SBML

DECAY = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="decay_chain" name="A to B in a cell" timeUnits="second">
    <listOfFunctionDefinitions>
      <functionDefinition id="mass_action">
        <math xmlns="http://www.w3.org/1998/Math/MathML">
          <lambda><bvar><ci>k</ci></bvar><bvar><ci>x</ci></bvar>
            <apply><times/><ci>k</ci><ci>x</ci></apply></lambda>
        </math>
      </functionDefinition>
    </listOfFunctionDefinitions>
    <listOfCompartments>
      <compartment id="cell" size="2" constant="true" spatialDimensions="3"/>
    </listOfCompartments>
    <listOfSpecies>
      <species id="A" compartment="cell" initialConcentration="10" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
      <species id="B" compartment="cell" initialAmount="0" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
    </listOfSpecies>
    <listOfParameters>
      <parameter id="kdeg" value="5e-05" constant="true"/>
      <parameter id="total" constant="false"/>
    </listOfParameters>
    <listOfRules>
      <assignmentRule variable="total">
        <math xmlns="http://www.w3.org/1998/Math/MathML">
          <apply><plus/><apply><times/><ci>A</ci><ci>cell</ci></apply><ci>B</ci></apply>
        </math>
      </assignmentRule>
    </listOfRules>
    <listOfReactions>
      <reaction id="R1" reversible="false">
        <listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants>
        <listOfProducts><speciesReference species="B" stoichiometry="1" constant="true"/></listOfProducts>
        <kineticLaw>
          <math xmlns="http://www.w3.org/1998/Math/MathML">
            <apply><times/><ci>cell</ci><apply><ci>mass_action</ci><ci>k1</ci><ci>A</ci></apply></apply>
          </math>
          <listOfLocalParameters><localParameter id="k1" value="0.0001"/></listOfLocalParameters>
        </kineticLaw>
      </reaction>
      <reaction id="R2" reversible="false">
        <listOfReactants><speciesReference species="B" stoichiometry="1" constant="true"/></listOfReactants>
        <kineticLaw>
          <math xmlns="http://www.w3.org/1998/Math/MathML">
            <apply><times/><ci>kdeg</ci><ci>B</ci></apply>
          </math>
        </kineticLaw>
      </reaction>
    </listOfReactions>
  </model>
</sbml>
"""


def test_import_of_reactions_species_local_parameters_and_seconds(tmp_path):
    src = tmp_path / "decay.xml"
    src.write_text(DECAY, encoding="utf-8")
    text = from_sbml(src)
    mod = tmp_path / "decay.toml"
    mod.write_text(text, encoding="utf-8")
    model = load_model(mod)
    assert model.state_names == ("A", "B")
    assert set(model.parameter_names) == {"cell", "kdeg", "R1_k1"}
    assert set(model.output_names) == {"total", "R1", "R2"}
    module = compile_model(model).module
    t = np.linspace(0.0, 24.0, 13)
    sol = solve(module, "rodas5p", t, model.default_parameters(), rtol=1e-10, atol=1e-12)
    # A (concentration) decays at k1 = 1e-4/s = 0.36/h; B (amount) gets A * cell and decays
    # at kdeg = 5e-5/s = 0.18/h: B = 40 (exp(-0.18 t) - exp(-0.36 t))
    a, b = 0.36, 0.18
    np.testing.assert_allclose(sol.y[:, 0], 10.0 * np.exp(-a * t), rtol=1e-7)
    np.testing.assert_allclose(sol.y[:, 1], 40.0 * (np.exp(-b * t) - np.exp(-a * t)), rtol=1e-7, atol=1e-9)


MIXED = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="mixed">
    <listOfCompartments><compartment id="V" size="2" constant="true"/></listOfCompartments>
    <listOfSpecies>
      <species id="S" compartment="V" initialConcentration="1" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
      <species id="Ext" compartment="V" initialConcentration="5" hasOnlySubstanceUnits="false" boundaryCondition="true" constant="false"/>
    </listOfSpecies>
    <listOfParameters>
      <parameter id="k" value="0.3" constant="true"/>
      <parameter id="r" constant="false"/>
    </listOfParameters>
    <listOfInitialAssignments>
      <initialAssignment symbol="r"><math xmlns="http://www.w3.org/1998/Math/MathML">
        <apply><times/><ci>k</ci><cn type="integer">2</cn></apply></math></initialAssignment>
    </listOfInitialAssignments>
    <listOfRules>
      <rateRule variable="r"><math xmlns="http://www.w3.org/1998/Math/MathML">
        <apply><minus/>
          <piecewise>
            <piece><cn>1</cn>
              <apply><or/>
                <apply><and/>
                  <apply><gt/><csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol><cn>2</cn></apply>
                  <apply><gt/><ci>S</ci><cn>1.5</cn></apply></apply>
                <apply><not/><apply><gt/><csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol><cn>1</cn></apply></apply></apply></piece>
            <otherwise><cn>0</cn></otherwise>
          </piecewise>
          <apply><times/><cn>0.5</cn><ci>r</ci></apply></apply></math></rateRule>
    </listOfRules>
    <listOfReactions>
      <reaction id="Rin" reversible="false">
        <listOfReactants><speciesReference id="nE" species="Ext" stoichiometry="2" constant="true"/></listOfReactants>
        <listOfProducts><speciesReference species="S" stoichiometry="1" constant="true"/></listOfProducts>
        <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML">
          <apply><divide/><apply><times/><ci>k</ci><ci>Ext</ci></apply><ci>nE</ci></apply></math></kineticLaw>
      </reaction>
      <reaction id="Rout" reversible="false">
        <listOfReactants><speciesReference species="S" stoichiometry="1" constant="true"/></listOfReactants>
        <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML">
          <apply><times/><ci>k</ci><ci>S</ci><ci>V</ci><apply><exp/><apply><minus/><ci>r</ci></apply></apply></apply>
        </math></kineticLaw>
      </reaction>
    </listOfReactions>
  </model>
</sbml>
"""


def test_import_of_logic_named_stoichiometry_boundary_species_and_initial_assignment(tmp_path):
    text = from_sbml(MIXED)
    assert '# Note: the SBML model declares no time unit: taken as hours' in text
    path = tmp_path / "mixed.toml"
    path.write_text(text, encoding="utf-8")
    model = load_model(path)
    assert model.state_names == ("r", "S")
    assert {"V", "Ext", "k", "nE"} <= set(model.parameter_names)
    assert model.states[0].initial.text == "k * 2"
    assert model.odes["S"].text == "(Rin - Rout) / V"
    roadrunner = pytest.importorskip("roadrunner")
    module = compile_model(model).module
    t = np.linspace(0.0, 6.0, 25)
    p = model.default_parameters()
    ours = solve(module, "rodas5p", t, p, rtol=RTOL, atol=1e-12).y
    rr = roadrunner.RoadRunner(MIXED)
    rr.setIntegrator("cvode")
    rr.integrator.relative_tolerance = RTOL
    rr.integrator.absolute_tolerance = 1e-12
    theirs = np.asarray(rr.simulate(0.0, 6.0, 25, selections=["time", "r", "[S]"]))[:, 1:]  # [S]: concentration
    # r rises (t <= 1), falls (1 < t, until t > 2 and S > 1.5), rises again: every branch is taken
    dr = np.diff(ours[:, 0])
    assert dr[:4].min() > 0 and dr[5:8].max() < 0 and dr[-1] > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def _with(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


EVENT = _with(DECAY, "</listOfReactions>", """</listOfReactions>
    <listOfEvents>
      <event id="dose" useValuesFromTriggerTime="true">
        <trigger initialValue="false" persistent="true">
          <math xmlns="http://www.w3.org/1998/Math/MathML"><apply><geq/>
            <csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol><cn>10</cn></apply></math>
        </trigger>
        <listOfEventAssignments><eventAssignment variable="B">
          <math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></eventAssignment></listOfEventAssignments>
      </event>
    </listOfEvents>""")

ALGEBRAIC = _with(
    _with(DECAY, '<parameter id="kdeg" value="5e-05" constant="true"/>',
          '<parameter id="kdeg" value="5e-05" constant="true"/><parameter id="z" constant="false"/>'),
    "</listOfRules>",
    '<algebraicRule><math xmlns="http://www.w3.org/1998/Math/MathML">'
    "<apply><minus/><ci>z</ci><ci>kdeg</ci></apply></math></algebraicRule></listOfRules>")


def test_import_refuses_an_event_naming_it(tmp_path):
    src = tmp_path / "event.xml"
    src.write_text(EVENT, encoding="utf-8")
    with pytest.raises(ModelSpecError) as err:
        from_sbml(src)
    assert err.value.problems == [
        f"{src}: event 'dose': events are not supported: an il2sim model has no events, doses are a "
        f"regimen applied by the caller; remove the event and give the doses as an il2sim regimen"
    ]
    assert str(err.value).startswith(f"{src}: cannot import SBML: 1 problem(s)")


def test_import_refuses_an_algebraic_rule_naming_it():
    with pytest.raises(ModelSpecError) as err:
        from_sbml(ALGEBRAIC)
    assert err.value.problems == [
        "<SBML text>: algebraic rule #2 (0 = z - kdeg): algebraic rules are not supported (il2sim "
        "models are ODEs); rewrite it as an assignment rule or a rate rule"
    ]


@pytest.mark.parametrize("old, new, message", [
    ('<compartment id="cell" size="2" constant="true"', '<compartment id="cell" size="2" constant="false"',
     "compartment 'cell': a compartment whose size varies is not supported"),
    ('<ci>kdeg</ci><ci>B</ci>', '<ci>kdeg</ci><apply><csymbol encoding="text" '
     'definitionURL="http://www.sbml.org/sbml/symbols/delay">delay</csymbol><ci>B</ci><cn>1</cn></apply>',
     "reaction 'R2' kineticLaw: delay() is not supported (il2sim has no delay differential equations)"),
    ('<ci>kdeg</ci><ci>B</ci>', '<ci>kdeg</ci><apply><sin/><ci>B</ci></apply>',
     "reaction 'R2' kineticLaw: the MathML function or operator 'sin' is not supported"),
    ('<ci>kdeg</ci><ci>B</ci>', '<ci>kdeg</ci><ci>nowhere</ci>',
     "reaction 'R2' kineticLaw: the symbol 'nowhere' is not defined in the model"),
    ('<species id="B" compartment="cell" initialAmount="0"', '<species id="B" compartment="cell"',
     "species 'B': has no initial amount, concentration or initial assignment"),
])
def test_import_names_the_element_it_cannot_convert(old, new, message):
    with pytest.raises(ModelSpecError) as err:
        from_sbml(_with(DECAY, old, new))
    assert any(p.startswith(f"<SBML text>: {message}") for p in err.value.problems), err.value.problems


def test_import_of_something_that_is_not_sbml():
    with pytest.raises(ModelSpecError, match="not valid SBML"):
        from_sbml("<sbml>")


def test_import_renames_ids_that_are_not_il2sim_names(tmp_path):
    text = _with(_with(DECAY, 'id="kdeg"', 'id="_rate"'), "<ci>kdeg</ci>", "<ci>_rate</ci>")
    text = _with(text, 'id="total"', 'id="time"').replace('variable="total"', 'variable="time"')
    out = from_sbml(text)
    assert "# Note: SBML id '_rate' is il2sim name 'x_rate'" in out
    assert "# Note: SBML id 'time' is il2sim name 'time_'" in out
    mod = tmp_path / "renamed.toml"
    mod.write_text(out, encoding="utf-8")
    model = load_model(mod)
    assert {"x_rate", "time_"} <= {*model.parameter_names, *model.output_names}


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_export_and_import(tmp_path, capsys):
    xml, toml = tmp_path / "m.xml", tmp_path / "m.toml"
    assert main(["sbml", "export", str(SEED_CONFIG), "-o", str(xml)]) == 0
    assert "24 states" in capsys.readouterr().out
    assert main(["sbml", "export", str(SEED_CONFIG), "-o", str(xml)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["sbml", "export", str(SEED_CONFIG), "-o", str(xml), "--overwrite"]) == 0
    assert main(["sbml", "import", str(xml), "-o", str(toml), "--name", "seed_again"]) == 0
    capsys.readouterr()
    assert load_model(toml).name == "seed_again"
    assert main(["sbml", "export", str(ROOT / "models" / "bench" / "il2_pkpd12.toml")]) == 0
    assert capsys.readouterr().out.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert main(["sbml", "import", str(tmp_path / "missing.xml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_cli_export_of_a_config_uses_its_parameter_values(tmp_path):
    from il2sim.scenario import load_scenario

    xml = tmp_path / "m.xml"
    assert main(["sbml", "export", str(SEED_CONFIG), "-o", str(xml)]) == 0
    model = load_scenario(SEED_CONFIG).model
    doc = libsbml.readSBMLFromFile(str(xml))
    m = doc.getModel()
    assert all(m.getParameter(p.name).getValue() == p.value for p in model.parameters)
    assert not math.isnan(m.getParameter("Asc").getValue())
