"""SBML export and import: il2sim models as SBML Level 3 Version 2, for COPASI, tellurium, libRoadRunner.

Export (:func:`to_sbml`, :func:`write_sbml`)
--------------------------------------------
A composed :class:`~il2sim.model.Model` becomes one SBML model without compartments, species
or reactions, in which **the SBML ids are the il2sim names**:

============================ ===================================================================
il2sim                       SBML
============================ ===================================================================
parameter ``p``              ``<parameter id="p" constant="true" value=…>``
state ``y`` with ODE ``f``   ``<parameter id="y" constant="false" value=…>`` and ``<rateRule
                             variable="y">`` with ``f``; an initial value that is an expression of
                             parameters is an ``<initialAssignment symbol="y">`` as well (the
                             ``value`` attribute then holds its default)
output ``o = e``             ``<parameter id="o" constant="false">`` and ``<assignmentRule
                             variable="o">`` with ``e``
time ``t`` (h)               the ``time`` csymbol; the model's ``timeUnits`` is the hour
``hill``, ``min``, ``max``   function definitions ``hill``, ``min2``, ``max2``, ``min3``, … (one per
                             number of arguments; ``min2`` is a MathML ``piecewise``)
``where(c, a, b)``           ``piecewise(a, c, b)`` (``c != 0`` when ``c`` is not a comparison);
                             a comparison used as a number is ``piecewise(1.0, c, 0.0)``
``log``, ``log10``, ``sqrt`` ``ln``, ``log`` (base 10), ``root`` (degree 2)
============================ ===================================================================

Exceptions to "ids are names": an il2sim name that SBML tools read as a constant or keyword
(``pi``, ``e``, ``exponentiale``, ``avogadro``, ``inf``, ``nan``, ``true``, ``false``, …) gets
a trailing ``_`` (more if that is taken), and a function definition id that would clash with
a name gets one too. :func:`sbml_ids` gives the mapping; the model annotation records it and
:func:`from_sbml` undoes it.

Units: each il2sim unit string (``"1/h"``, ``"pM"``, ``"cells/uL"``, ``"pM/(IU/mL)"``) becomes a
``<unitDefinition>`` whose ``name`` is the il2sim string; ``"1"`` is ``dimensionless``. Cells
are ``item``; international units (``IU``, ``MIU``) are potency, which SBML cannot express, so
they are written as dimensionless (the element's annotation keeps the il2sim unit). A unit
string that cannot be read this way is left off the element (annotation only). Unit
*consistency* is not claimed: il2sim equations carry conversion factors such as ``/ 24``
explicitly.

Notes and annotations: the model notes list the modules, the il2sim version and the model's
``text_hash``; each parameter's notes hold its description and source; states and outputs
their description. An ``il2sim:`` annotation on every element keeps what SBML has no place
for (unit string, bounds, module, description, source), and on dosed states the
**bioavailability and lag**: in il2sim doses are events that the caller's regimen applies
(times, amounts, F, lag); they are not part of the model, so the SBML file has no events.
Apply doses in the other tool by setting the dosed state (e.g. ``Asc += F * amount`` at
``time + lag``), or pass one subject's bolus doses to ``to_sbml(model, doses=...)``, which
writes them as SBML events with exactly that effect.

Import (:func:`from_sbml`)
--------------------------
A plain SBML model (any level; rate rules, assignment rules, initial assignments, reactions
with kinetic laws, constant compartments, function definitions) becomes the text of one il2sim
model module. See :func:`from_sbml` for the mapping and what is refused.

MathML is never turned into text that is evaluated: the importer walks libsbml's AST and
writes il2sim expression text, which il2sim's safe parser then checks like any model file.
(libsbml's ``formulaToL3String`` output is not used because its syntax — ``^``, ``&&``,
``piecewise``, ``log`` meaning log10 — is not il2sim's, and rewriting it as a string would be
fragile.)

This module needs ``python-libsbml`` (the ``sbml`` extra: ``pip install il2sim[sbml]``).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from xml.sax.saxutils import escape, quoteattr

from ._expr import BinOp, Call, Compare, Name, Neg, Num, evaluate, parse_expr_checked
from ._files import write_text
from .errors import ExpressionError, Il2simError, ModelSpecError
from .model import NONMEM_WORDS, RESERVED_NAMES, Model

__all__ = ["to_sbml", "write_sbml", "sbml_ids", "from_sbml", "parse_unit", "ANNOTATION_NS"]

#: XML namespace of il2sim's SBML annotations.
ANNOTATION_NS = "https://il2sim.invalid/sbml/1"
_PREFIX = "il2sim"
_XHTML = "http://www.w3.org/1999/xhtml"

#: Names that SBML tools read as constants or keywords (L3 infix syntax, MathML): an il2sim
#: name among these gets another id.
SBML_RESERVED = frozenset(
    {"time", "pi", "e", "exponentiale", "avogadro", "true", "false", "inf", "INF", "infinity",
     "nan", "NaN", "notanumber", "delay", "rateOf"}
)


def _libsbml():
    try:
        import libsbml
    except ImportError:  # pragma: no cover - depends on the installation
        raise Il2simError(
            "SBML export/import needs python-libsbml: pip install 'il2sim[sbml]' (or pip install python-libsbml)"
        ) from None
    return libsbml


# ---------------------------------------------------------------------------------------------
# Units


# SBML base unit kind -> (factor, exponent) per il2sim unit atom; factors are exact decimals.
_ATOMS: dict[str, tuple[float, dict[str, float]]] = {
    "1": (1.0, {}),
    "s": (1.0, {"second": 1}),
    "min": (60.0, {"second": 1}),
    "h": (3600.0, {"second": 1}),
    "d": (86400.0, {"second": 1}),
    "wk": (604800.0, {"second": 1}),
    "L": (1.0, {"litre": 1}),
    "l": (1.0, {"litre": 1}),
    "mol": (1.0, {"mole": 1}),
    "M": (1.0, {"mole": 1, "litre": -1}),  # molar
    "g": (1.0, {"gram": 1}),
    "Da": (1.0, {"gram": 1, "mole": -1}),
    "m": (1.0, {"metre": 1}),
    "cells": (1.0, {"item": 1}),
    "cell": (1.0, {"item": 1}),
    "item": (1.0, {"item": 1}),
    "IU": (1.0, {}),  # potency: no SBML dimension (see the module docstring)
}
_PREFIXES = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
             "k": 1e3, "M": 1e6, "G": 1e9}
_NO_PREFIX = {"1", "min", "h", "d", "wk", "cells", "cell", "item", "s"}
_UNIT_TOKEN = re.compile(r"\s*(?:(?P<num>1)(?![0-9A-Za-z])|(?P<atom>[A-Za-z]+)(?:\^?(?P<exp>-?[0-9]+))?|(?P<op>[*/()]))")


@dataclass(frozen=True)
class _Unit:
    factor: float
    kinds: tuple[tuple[str, float], ...]  # (SBML kind, exponent), exponents non-zero


def _atom(name: str) -> tuple[float, dict[str, float]] | None:
    if name in _ATOMS:
        return _ATOMS[name]
    if len(name) > 1 and name[0] in _PREFIXES and name[1:] in _ATOMS and name[1:] not in _NO_PREFIX:
        f, kinds = _atom(name[1:])  # type: ignore[misc]
        return _PREFIXES[name[0]] * f, kinds
    return None


def parse_unit(text: str) -> _Unit | None:
    """Read an il2sim unit string (``"1/h"``, ``"pM/(IU/mL)"``, ``"m2"``) as SBML base units.

    Returns ``None`` for a string it cannot read (the unit is then only annotated).
    ``a/b/c`` is ``a/(b*c)``; an exponent follows its atom (``m2``, ``m^2``, ``s-1``).
    """
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _UNIT_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return None
        pos = m.end()
        if m.group("num"):
            tokens.append(("atom", "1", 1))
        elif m.group("atom"):
            tokens.append(("atom", m.group("atom"), int(m.group("exp") or 1)))
        else:
            tokens.append(("op", m.group("op"), 0))
    if not tokens:
        return None
    result = _UnitParser(tokens).parse()
    if result is None:
        return None
    factor, kinds = result
    return _Unit(factor, tuple((k, e) for k, e in kinds.items() if e != 0))


class _UnitParser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.i = 0

    def parse(self):
        try:
            out = self.product()
        except (ValueError, IndexError):
            return None
        return out if self.i == len(self.tokens) else None

    def product(self):
        factor, kinds = self.factor()
        while self.i < len(self.tokens) and self.tokens[self.i][1] in ("*", "/"):
            op = self.tokens[self.i][1]
            self.i += 1
            f, k = self.factor()
            sign = 1 if op == "*" else -1
            factor *= f**sign
            for kind, e in k.items():
                kinds[kind] = kinds.get(kind, 0) + sign * e
        return factor, kinds

    def factor(self):
        kind, value, exp = self.tokens[self.i]
        self.i += 1
        if kind == "op" and value == "(":
            out = self.product()
            if self.tokens[self.i][1] != ")":
                raise ValueError
            self.i += 1
            return out
        if kind != "atom":
            raise ValueError
        atom = _atom(value)
        if atom is None:
            raise ValueError
        f, kinds = atom
        return f**exp, {k: e * exp for k, e in kinds.items()}


def _unit_id(text: str, taken: set[str]) -> str:
    base = text.replace("/", "_per_").replace("*", "_").replace("^", "")
    base = re.sub(r"[^A-Za-z0-9_]", "_", base)
    base = re.sub(r"_+", "_", "u_" + base).rstrip("_")
    uid, k = base, 2
    while uid in taken:
        uid, k = f"{base}_{k}", k + 1
    taken.add(uid)
    return uid


def _add_unit_definition(libsbml, model, uid: str, text: str, unit: _Unit) -> None:
    ud = model.createUnitDefinition()
    _ok(ud.setId(uid), uid)
    _ok(ud.setName(text), uid)
    kinds = list(unit.kinds) or [("dimensionless", 1.0)]
    # the scale factor goes on one unit: prefer one with exponent +-1 (multiplier**exponent)
    carrier = next((i for i, (_, e) in enumerate(kinds) if abs(e) == 1), 0)
    for i, (kind, exponent) in enumerate(kinds):
        u = ud.createUnit()
        _ok(u.setKind(libsbml.UnitKind_forName(kind)), uid)
        _ok(u.setExponent(float(exponent)), uid)
        scale, multiplier = 0, 1.0
        if i == carrier and unit.factor != 1.0:
            m = unit.factor ** (1.0 / exponent)
            k = round(math.log10(m))
            if abs(m / 10.0**k - 1.0) < 1e-12:
                scale = k
            else:
                multiplier = m
        _ok(u.setScale(scale), uid)
        _ok(u.setMultiplier(multiplier), uid)


# ---------------------------------------------------------------------------------------------
# Export


def sbml_ids(model: Model) -> dict[str, str]:
    """il2sim name -> SBML id for every parameter, state and output (equal except for
    names in :data:`SBML_RESERVED`)."""
    names = [*model.parameter_names, *model.state_names, *model.output_names]
    taken = set(names)
    out: dict[str, str] = {}
    for n in names:
        sid = n
        if n in SBML_RESERVED:
            sid = n + "_"
            while sid in taken or sid in SBML_RESERVED:
                sid += "_"
            taken.add(sid)
        out[n] = sid
    return out


def _ok(code: int, what: str) -> None:
    """libsbml setters return 0 on success; anything else is a bug in this module."""
    if code != 0:  # LIBSBML_OPERATION_SUCCESS
        import libsbml

        raise RuntimeError(f"SBML export: {what}: libsbml: {libsbml.OperationReturnValue_toString(code)}")


def _notes(*paragraphs: str) -> str:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs if p)
    return f'<body xmlns="{_XHTML}">{body}</body>'


def _annotation(tag: str, attrs: Mapping[str, object], children: str = "") -> str:
    text = " ".join(f"{k}={quoteattr(_attr(v))}" for k, v in attrs.items() if v is not None)
    inner = f">{children}</{_PREFIX}:{tag}>" if children else "/>"
    return f'<{_PREFIX}:{tag} xmlns:{_PREFIX}="{ANNOTATION_NS}" {text}{inner}'


def _attr(v: object) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


class _MathBuilder:
    """il2sim expression tree -> libsbml ASTNode (never through text)."""

    def __init__(self, libsbml, ids: Mapping[str, str], functions: Mapping[tuple[str, int], str]):
        self.L = libsbml
        self.ids = ids
        self.functions = functions  # ("hill"|"min"|"max", number of arguments) -> function definition id
        self.exact: dict[str, str] = {}  # placeholder name -> repr of a float (see _exact_numbers)

    def node(self, kind, *children):
        n = self.L.ASTNode(kind)
        for c in children:
            _ok(n.addChild(c), "MathML")
        return n

    def number(self, value: float | int):
        if isinstance(value, int):
            n = self.L.ASTNode(self.L.AST_INTEGER)
            _ok(n.setValue(int(value)), "MathML")
        elif _short(float(value)) == float(value):
            n = self.L.ASTNode(self.L.AST_REAL)
            _ok(n.setValue(float(value)), "MathML")
        else:  # libsbml would write only 15 digits: a placeholder, replaced in the text
            name = f"{_EXACT}{len(self.exact)}"
            self.exact[name] = repr(float(value))
            n = self.L.ASTNode(self.L.AST_NAME)
            _ok(n.setName(name), "MathML")
        return n

    def call(self, name: str, *args):
        n = self.node(self.L.AST_FUNCTION, *args)
        _ok(n.setName(name), "MathML")
        return n

    def relation(self, c: Compare):
        kind = {"<": self.L.AST_RELATIONAL_LT, "<=": self.L.AST_RELATIONAL_LEQ,
                ">": self.L.AST_RELATIONAL_GT, ">=": self.L.AST_RELATIONAL_GEQ,
                "==": self.L.AST_RELATIONAL_EQ, "!=": self.L.AST_RELATIONAL_NEQ}[c.op]
        return self.node(kind, self.build(c.left), self.build(c.right))

    def condition(self, node):
        if isinstance(node, Compare):
            return self.relation(node)
        return self.node(self.L.AST_RELATIONAL_NEQ, self.build(node), self.number(0))

    def build(self, node):
        L = self.L
        if isinstance(node, Num):
            return self.number(node.value)
        if isinstance(node, Name):
            if node.id == "t":
                n = L.ASTNode(L.AST_NAME_TIME)
                _ok(n.setName("time"), "MathML")
                return n
            n = L.ASTNode(L.AST_NAME)
            _ok(n.setName(self.ids[node.id]), "MathML")
            return n
        if isinstance(node, Neg):
            return self.node(L.AST_MINUS, self.build(node.operand))
        if isinstance(node, BinOp):
            # left spines (long sums) iteratively, as il2sim._expr does
            spine = []
            while isinstance(node, BinOp) and node.op != "**":
                spine.append(node)
                node = node.left
            if isinstance(node, BinOp):
                acc = self.node(L.AST_POWER, self.build(node.left), self.build(node.right))
            else:
                acc = self.build(node)
            kinds = {"+": L.AST_PLUS, "-": L.AST_MINUS, "*": L.AST_TIMES, "/": L.AST_DIVIDE}
            for link in reversed(spine):
                acc = self.node(kinds[link.op], acc, self.build(link.right))
            return acc
        if isinstance(node, Compare):
            return self.node(L.AST_FUNCTION_PIECEWISE, self.number(1.0), self.relation(node), self.number(0.0))
        assert isinstance(node, Call)
        f, args = node.func, node.args
        if f == "where":
            return self.node(L.AST_FUNCTION_PIECEWISE, self.build(args[1]), self.condition(args[0]),
                             self.build(args[2]))
        if f in ("min", "max", "hill"):
            return self.call(self.functions[(f, len(args))], *(self.build(a) for a in args))
        if f == "log10":  # <log/> with <logbase> 10
            return self.node(L.AST_FUNCTION_LOG, self.number(10), self.build(args[0]))
        if f == "sqrt":  # <root/> with <degree> 2
            return self.node(L.AST_FUNCTION_ROOT, self.number(2), self.build(args[0]))
        kind = {"exp": L.AST_FUNCTION_EXP, "log": L.AST_FUNCTION_LN, "abs": L.AST_FUNCTION_ABS}[f]
        return self.node(kind, self.build(args[0]))


def _function_body(f: str, n: int, ids: Mapping[tuple[str, int], str]) -> str:
    """Lambda of il2sim function ``f`` with ``n`` arguments, in L3 infix syntax.

    ``min``/``max`` of two arguments are a ``piecewise``; of ``n > 2`` they call the
    ``n - 1`` and 2 argument ones, so that every arity has its own definition and
    :func:`from_sbml` gives back the same call.
    """
    if f == "hill":
        return "lambda(xx, kk, nn, xx^nn / (kk^nn + xx^nn))"
    if n == 2:
        return f"lambda(a1, a2, piecewise(a1, a1 {'<=' if f == 'min' else '>='} a2, a2))"
    args = ", ".join(f"a{i}" for i in range(1, n + 1))
    head = ", ".join(f"a{i}" for i in range(1, n))
    return f"lambda({args}, {ids[(f, 2)]}({ids[(f, n - 1)]}({head}), a{n}))"


def _document(model: Model, doses=None):
    libsbml = _libsbml()
    import il2sim

    doc = libsbml.SBMLDocument(3, 2)
    m = doc.createModel()
    _ok(m.setId(_sid(model.name)), "model id")
    _ok(m.setName(model.name), "model name")
    _ok(m.setMetaId("il2sim_model"), "model metaid")
    ids = sbml_ids(model)
    taken = set(ids.values()) | SBML_RESERVED

    # units
    unit_ids: dict[str, str | None] = {"1": "dimensionless"}
    unit_taken: set[str] = set()

    def unit_of(text: str) -> str | None:
        if text not in unit_ids:
            parsed = parse_unit(text)
            if parsed is None:
                unit_ids[text] = None
            else:
                uid = _unit_id(text, unit_taken)
                _add_unit_definition(libsbml, m, uid, text, parsed)
                unit_ids[text] = uid
        return unit_ids[text]

    _ok(m.setTimeUnits(unit_of("h")), "timeUnits")

    # function definitions for what MathML lacks (only those used)
    used = set()
    for e in _all_exprs(model):
        used |= _functions_used(e.root)
    needed = sorted({("hill", 3)} & used | {(f, k) for f, n in used if f in ("min", "max")
                                             for k in range(2, n + 1)})
    functions: dict[tuple[str, int], str] = {}
    for f, n in needed:
        fid = "hill" if f == "hill" else f"{f}{n}"
        while fid in taken:
            fid += "_"
        taken.add(fid)
        functions[(f, n)] = fid
        fd = m.createFunctionDefinition()
        _ok(fd.setId(fid), fid)
        math_ = libsbml.parseL3Formula(_function_body(f, n, functions))
        if math_ is None:  # pragma: no cover - a fixed formula
            raise RuntimeError(f"SBML export: {fid}: {libsbml.getLastParseL3Error()}")
        _ok(fd.setMath(math_), fid)
        _ok(fd.setMetaId(f"il2sim_fn_{fid}"), fid)
        _ok(fd.setAnnotation(_annotation("function", {"name": f})), fid)
    builder = _MathBuilder(libsbml, ids, functions)
    build = builder.build
    written: dict[str, float] = {}  # SBML id -> value attribute

    def element(p, meta: str, unit: str, attrs: dict, notes: list[str]):
        _ok(p.setMetaId(meta), meta)
        uid = unit_of(unit)
        if uid is not None:
            _ok(p.setUnits(uid), meta)
        _ok(p.setNotes(_notes(*notes)), meta)
        _ok(p.setAnnotation(_annotation(attrs.pop("_tag"), {"unit": unit, **attrs})), meta)

    values = {p.name: p.value for p in model.parameters}
    for prm in model.parameters:
        p = m.createParameter()
        sid = ids[prm.name]
        _ok(p.setId(sid), sid)
        _ok(p.setName(prm.name), sid)
        _ok(p.setConstant(True), sid)
        _ok(p.setValue(prm.value), sid)
        written[sid] = prm.value
        element(p, f"il2sim_p_{sid}", prm.unit,
                {"_tag": "parameter", "description": prm.description, "source": prm.source,
                 "lower": prm.lower, "upper": prm.upper, "module": prm.file},
                [f"{prm.description} [{prm.unit}]", f"Source: {prm.source}"])
    for st in model.states:
        p = m.createParameter()
        sid = ids[st.name]
        _ok(p.setId(sid), sid)
        _ok(p.setName(st.name), sid)
        _ok(p.setConstant(False), sid)
        written[sid] = evaluate(st.initial, values)
        _ok(p.setValue(written[sid]), sid)
        notes = [f"{st.description} [{st.unit}]"]
        dosing = {}
        if st.bioavailability is not None or st.lag is not None:
            f = st.bioavailability.text if st.bioavailability is not None else "1"
            lag = st.lag.text if st.lag is not None else "0"
            dosing = {"bioavailability": st.bioavailability and st.bioavailability.text,
                      "lag": st.lag and st.lag.text}
            notes.append(
                f"Dosed state: in il2sim a dose of amount A at time T adds {f} * A to {sid} at "
                f"T + {lag} (bioavailability and lag); doses are not part of this SBML model."
            )
        element(p, f"il2sim_s_{sid}", st.unit,
                {"_tag": "state", "description": st.description, "lower": st.lower,
                 "initial": st.initial.text, **dosing, "module": st.file}, notes)
        if st.initial.constant is None:
            ia = m.createInitialAssignment()
            _ok(ia.setSymbol(sid), sid)
            _ok(ia.setMath(build(st.initial.root)), sid)
        rr = m.createRateRule()
        _ok(rr.setVariable(sid), sid)
        _ok(rr.setMath(build(model.odes[st.name].root)), sid)
    for out in model.outputs:
        p = m.createParameter()
        sid = ids[out.name]
        _ok(p.setId(sid), sid)
        _ok(p.setName(out.name), sid)
        _ok(p.setConstant(False), sid)
        element(p, f"il2sim_o_{sid}", out.unit,
                {"_tag": "output", "description": out.description, "module": out.file},
                [f"{out.description} [{out.unit}]"])
        ar = m.createAssignmentRule()
        _ok(ar.setVariable(sid), sid)
        _ok(ar.setMath(build(out.expr.root)), sid)

    modules = "".join(
        f"<{_PREFIX}:module name={quoteattr(mi.name)} description={quoteattr(mi.description)} "
        f"file={quoteattr(mi.file)}/>" for mi in model.modules
    )
    renames = "".join(f"<{_PREFIX}:rename il2sim={quoteattr(k)} sbml={quoteattr(v)}/>"
                      for k, v in ids.items() if k != v)
    _ok(m.setAnnotation(_annotation("model", {"name": model.name, "version": il2sim.__version__,
                                              "text_hash": model.text_hash, "time_unit": "h"},
                                    modules + renames)), "model annotation")
    lines = [f"il2sim model {model.name}, exported by il2sim {il2sim.__version__}; "
             f"model hash (text_hash) {model.text_hash}."]
    lines += [f"Module {mi.name} ({mi.file}): {mi.description}" for mi in model.modules]
    lines.append("Time is in hours. Every il2sim state is a parameter with a rate rule, every output "
                 "a parameter with an assignment rule; SBML ids are the il2sim names.")
    lines.append("Doses are not part of the model: il2sim applies them as events from a regimen. "
                 "Dosed states carry their bioavailability and lag in their notes and annotation.")
    if any(k != v for k, v in ids.items()):
        lines.append("Renamed (il2sim -> SBML): " + ", ".join(f"{k} -> {v}" for k, v in ids.items() if k != v))
    if doses is not None:
        n = _add_dose_events(libsbml, m, model, doses, ids, taken, builder)
        lines.append(f"This file also holds {n} bolus doses as SBML events (il2sim:dose annotations): "
                     f"one subject's regimen, with the dosed state's bioavailability and lag applied.")
    _ok(m.setNotes(_notes(*lines)), "model notes")
    return doc, builder.exact, written


def _add_dose_events(libsbml, m, model: Model, doses, ids, taken: set[str], builder: "_MathBuilder") -> int:
    """One SBML event per bolus: at ``time + lag``, ``state += F * amt`` (F, lag as expressions)."""
    from .dosing import Dose, EventType, expand_addl
    from .errors import RegimenError

    doses = list(doses)
    bad = [d for d in doses if not isinstance(d, Dose)]
    if bad:
        raise RegimenError(f"to_sbml: doses: expected il2sim.Dose objects, got {type(bad[0]).__name__} {bad[0]!r}")
    n = 0
    for k, d in enumerate(expand_addl(doses)):
        where = f"to_sbml: dose {k + 1} (t = {d.time:g} h, cmt {d.cmt!r})"
        if d.evid != EventType.DOSE or d.rate is not None or d.duration is not None:
            raise RegimenError(f"{where}: only bolus doses become SBML events (no infusions or resets); "
                               f"export without doses= and apply these in the other tool")
        if d.cmt not in model.state_names:
            raise RegimenError(f"{where}: {d.cmt!r} is not a state of {model.name}")
        st = model.states[model.state_index(d.cmt)]
        at = Num(d.time) if st.lag is None else BinOp("+", Num(d.time), st.lag.root)
        amount = Num(d.amt) if st.bioavailability is None else BinOp("*", st.bioavailability.root, Num(d.amt))
        eid = f"dose_{n + 1}"
        while eid in taken:
            eid += "_"
        taken.add(eid)
        ev = m.createEvent()
        _ok(ev.setId(eid), eid)
        _ok(ev.setUseValuesFromTriggerTime(True), eid)
        trigger = ev.createTrigger()
        _ok(trigger.setInitialValue(False), eid)  # a dose at t = 0 fires at t = 0
        _ok(trigger.setPersistent(True), eid)
        time = libsbml.ASTNode(libsbml.AST_NAME_TIME)
        _ok(time.setName("time"), eid)
        _ok(trigger.setMath(builder.node(libsbml.AST_RELATIONAL_GEQ, time, builder.build(at))), eid)
        ea = ev.createEventAssignment()
        sid = ids[d.cmt]
        _ok(ea.setVariable(sid), eid)
        _ok(ea.setMath(builder.build(BinOp("+", Name(d.cmt), amount))), eid)
        _ok(ev.setMetaId(f"il2sim_{eid}"), eid)
        _ok(ev.setAnnotation(_annotation("dose", {"time": d.time, "amt": d.amt, "cmt": d.cmt})), eid)
        n += 1
    return n


_EXACT = "il2sim_exact_number_"


def _short(v: float) -> float:
    """``v`` as libsbml writes it: 15 significant digits."""
    return float(f"{v:.15g}")


def _exact_numbers(text: str, numbers: Mapping[str, str], values: Mapping[str, float]) -> str:
    """Put back the digits libsbml drops: it writes doubles with 15 significant digits, which
    changes e.g. 1/3 or a computed initial value in the last bits. MathML numbers were written
    as placeholder names; parameter values are rewritten in their element."""
    def number(m: re.Match) -> str:
        return f"<cn> {numbers[m.group(1)]} </cn>"

    text, n = re.subn(rf"<ci>\s*({_EXACT}\d+)\s*</ci>", number, text)
    if n != len(numbers):  # pragma: no cover - a change in libsbml's output
        raise RuntimeError(f"SBML export: {len(numbers)} exact numbers, {n} placeholders found")
    for sid, v in values.items():
        if _short(v) == v:
            continue
        pattern = re.compile(rf'(<parameter\b[^>]*\bid="{re.escape(sid)}"[^>]*\bvalue=")([^"]*)(")')
        text, n = pattern.subn(lambda m: m.group(1) + repr(v) + m.group(3), text)
        if n != 1:  # pragma: no cover - a change in libsbml's output
            raise RuntimeError(f"SBML export: value of {sid!r} not found in libsbml's output")
    return text


def _sid(text: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return sid if re.match(r"[A-Za-z_]", sid) else "m_" + sid


def _all_exprs(model: Model):
    for st in model.states:
        yield st.initial
    yield from model.odes.values()
    for o in model.outputs:
        yield o.expr


def _functions_used(root) -> set[tuple[str, int]]:
    """(function, number of arguments) of every call in the tree."""
    out: set[tuple[str, int]] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (BinOp, Compare)):
            stack += (node.left, node.right)
        elif isinstance(node, Neg):
            stack.append(node.operand)
        elif isinstance(node, Call):
            out.add((node.func, len(node.args)))
            stack += node.args
    return out


def to_sbml(model: Model, *, doses=None) -> str:
    """SBML Level 3 Version 2 text of ``model`` (see the module docstring for the mapping).

    SBML ids are the il2sim names (:func:`sbml_ids` lists the rare exceptions). Every state is a
    non-constant ``parameter`` with a ``rateRule``, every parameter a constant ``parameter``
    with its default value, every output a non-constant ``parameter`` with an
    ``assignmentRule``. Doses are not part of the model: they are events of the caller's
    regimen; a dosed state's bioavailability and lag are in its notes and annotation.

    Parameters
    ----------
    model
        A composed model (:func:`il2sim.load_model`, or ``load_scenario(...).model``).
    doses
        Optional: one subject's bolus doses (:class:`il2sim.Dose`, e.g. from
        ``Regimen.doses(bsa=..., drug=...)``), written as SBML events: at ``time + lag`` the
        dosed state gets ``F * amt`` (``F`` and ``lag`` are the state's expressions). Infusions
        and resets raise :class:`~il2sim.errors.RegimenError`. :func:`from_sbml` leaves these
        events out again.

    Examples
    --------
    >>> import libsbml
    >>> from il2sim.model import load_model
    >>> text = to_sbml(load_model("models/bench/il2_pkpd12.toml"))
    >>> doc = libsbml.readSBMLFromString(text)  # keep the document: its model lives in it
    >>> doc.getModel().getRateRuleByVariable("Ac") is not None
    True
    """
    libsbml = _libsbml()
    doc, exact, values = _document(model, doses)
    text = libsbml.writeSBMLToString(doc)
    if not text:  # pragma: no cover
        raise RuntimeError(f"SBML export of {model.name}: libsbml wrote nothing")
    return _exact_numbers(text, exact, values)


def write_sbml(model: Model, path: str | os.PathLike, *, doses=None) -> Path:
    """Write :func:`to_sbml` of ``model`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    text = to_sbml(model, doses=doses)
    write_text(path, text)
    return path


# ---------------------------------------------------------------------------------------------
# Import

_IL2SIM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
# prec: 0 comparison, 1 + -, 2 * /, 3 unary minus, 4 power, 5 atom (a name, a number >= 0, a call)
_ATOM = 5


class _Unsupported(Exception):
    """A construct with no il2sim equivalent; the message says which."""


class _Infix:
    """libsbml ASTNode -> il2sim expression text (checked afterwards by il2sim's parser).

    Parentheses are written only where il2sim's grammar needs them, so a tree exported by
    :func:`to_sbml` comes back as the same il2sim tree.
    """

    def __init__(self, libsbml, names: Mapping[str, str], functions: Mapping[str, tuple],
                 time_factor: float):
        self.L = libsbml
        self.names = names  # SBML id -> il2sim text (a name, or a reaction's rate output)
        self.functions = functions  # id -> (bvar names, body AST, il2sim builtin or None)
        self.time_factor = time_factor

    def text(self, node, env: Mapping[str, str] | None = None) -> str:
        """Il2sim text of ``node``; ``env`` maps ids to il2sim names ahead of the model's
        (a reaction's local parameters)."""
        return self.emit(node, {k: (v, _ATOM) for k, v in (env or {}).items()})[0]

    @staticmethod
    def wrap(item: tuple[str, int], need: int) -> str:
        text, prec = item
        return f"({text})" if prec < need else text

    def number(self, value: float) -> tuple[str, int]:
        if not math.isfinite(value):
            raise _Unsupported(f"the number {value!r} is not supported (il2sim numbers are finite)")
        text = repr(float(value))
        return (text, 3) if value < 0 or text.startswith("-") else (text, _ATOM)

    def nary(self, kids, env, op: str, prec: int, empty: str) -> tuple[str, int]:
        """An n-ary sum or product (left-associative, precedence ``prec``); ``empty`` for none."""
        if not kids:
            return empty, _ATOM
        parts = [self.emit(k, env) for k in kids]
        text = self.wrap(parts[0], prec)
        for p in parts[1:]:
            text += op + self.wrap(p, prec + 1)
        return text, prec if len(parts) > 1 else parts[0][1]

    def emit(self, node, env: Mapping[str, tuple[str, int]]) -> tuple[str, int]:
        L = self.L
        t = node.getType()
        kids = [node.getChild(i) for i in range(node.getNumChildren())]
        if t == L.AST_INTEGER:
            v = node.getInteger()
            return (str(v), _ATOM) if v >= 0 else (str(v), 3)
        if t in (L.AST_REAL, L.AST_REAL_E):
            return self.number(node.getValue())
        if t == L.AST_RATIONAL:
            return f"{node.getNumerator()} / {node.getDenominator()}", 2
        if t == L.AST_CONSTANT_PI:
            return self.number(math.pi)
        if t == L.AST_CONSTANT_E:
            return self.number(math.e)
        if t == L.AST_CONSTANT_TRUE:
            return "1", _ATOM
        if t == L.AST_CONSTANT_FALSE:
            return "0", _ATOM
        if t == L.AST_NAME_AVOGADRO:
            return self.number(6.02214076e23)
        if t == L.AST_NAME_TIME:
            return ("t", _ATOM) if self.time_factor == 1.0 else (f"t * {self.time_factor!r}", 2)
        if t == L.AST_NAME:
            name = node.getName()
            if name in env:
                return env[name]
            if name not in self.names:
                raise _Unsupported(f"the symbol {name!r} is not defined in the model")
            return self.names[name], _ATOM
        if t == L.AST_PLUS:
            return self.nary(kids, env, " + ", 1, "0")
        if t == L.AST_TIMES:
            return self.nary(kids, env, " * ", 2, "1")
        if t == L.AST_MINUS:
            if len(kids) == 1:
                return "-" + self.wrap(self.emit(kids[0], env), 3), 3
            a, b = (self.emit(k, env) for k in kids)
            return f"{self.wrap(a, 1)} - {self.wrap(b, 2)}", 1
        if t == L.AST_DIVIDE:
            a, b = (self.emit(k, env) for k in kids)
            return f"{self.wrap(a, 2)} / {self.wrap(b, 3)}", 2
        if t in (L.AST_POWER, L.AST_FUNCTION_POWER):
            a, b = (self.emit(k, env) for k in kids)
            return f"{self.wrap(a, _ATOM)} ** {self.wrap(b, 3)}", 4
        if t == L.AST_FUNCTION_EXP:
            return f"exp({self.emit(kids[0], env)[0]})", _ATOM
        if t == L.AST_FUNCTION_LN:
            return f"log({self.emit(kids[0], env)[0]})", _ATOM
        if t == L.AST_FUNCTION_LOG:
            if len(kids) == 1:
                return f"log10({self.emit(kids[0], env)[0]})", _ATOM
            base, x = (self.emit(k, env)[0] for k in kids)
            if base in ("10", "10.0"):
                return f"log10({x})", _ATOM
            return f"log({x}) / log({base})", 2
        if t == L.AST_FUNCTION_ROOT:
            if len(kids) == 1:
                return f"sqrt({self.emit(kids[0], env)[0]})", _ATOM
            degree, x = (self.emit(k, env) for k in kids)
            if degree[0] in ("2", "2.0"):
                return f"sqrt({x[0]})", _ATOM
            return f"{self.wrap(x, _ATOM)} ** (1 / {self.wrap(degree, 3)})", 4
        if t == L.AST_FUNCTION_ABS:
            return f"abs({self.emit(kids[0], env)[0]})", _ATOM
        if t in (L.AST_FUNCTION_MIN, L.AST_FUNCTION_MAX):
            f = "min" if t == L.AST_FUNCTION_MIN else "max"
            args = [self.emit(k, env)[0] for k in kids]
            if len(args) == 1:
                return self.emit(kids[0], env)
            return f"{f}({', '.join(args)})", _ATOM
        if t in _relations(L):
            if len(kids) != 2:
                raise _Unsupported("a comparison with other than 2 arguments is not supported")
            a, b = (self.emit(k, env) for k in kids)
            return f"{self.wrap(a, 1)} {_relations(L)[t]} {self.wrap(b, 1)}", 0
        if t in (L.AST_LOGICAL_AND, L.AST_LOGICAL_OR, L.AST_LOGICAL_NOT, L.AST_LOGICAL_XOR):
            return self.logical(t, kids, env), _ATOM
        if t == L.AST_FUNCTION_PIECEWISE:
            return self.piecewise(kids, env), _ATOM
        if t == L.AST_FUNCTION:
            return self.user_function(node, kids, env)
        if t == L.AST_FUNCTION_DELAY:
            raise _Unsupported("delay() is not supported (il2sim has no delay differential equations)")
        if t == L.AST_FUNCTION_RATE_OF:
            raise _Unsupported("rateOf() is not supported")
        name = node.getName() or L.formulaToL3String(node)
        raise _Unsupported(f"the MathML function or operator {name or t!r} is not supported (il2sim expressions "
                           f"have + - * / ^, comparisons, and, or, not, piecewise, exp, ln, log, root, abs, "
                           f"min, max and function definitions)")

    def condition(self, node, env) -> str:
        """Condition of il2sim's where(): a comparison, or a number (true when non-zero)."""
        L = self.L
        if node.getType() == L.AST_RELATIONAL_NEQ and node.getNumChildren() == 2:
            zero = node.getChild(1)
            if zero.getType() == L.AST_INTEGER and zero.getInteger() == 0:
                return self.emit(node.getChild(0), env)[0]  # as to_sbml writes where(x, a, b)
        text, _ = self.emit(node, env)
        return text

    def logical(self, t, kids, env) -> str:
        L = self.L
        flags = [self.condition(k, env) for k in kids]
        if t == L.AST_LOGICAL_NOT:
            return f"where({flags[0]}, 0, 1)"
        acc = flags[-1]
        acc = f"where({acc}, 1, 0)"
        for f in reversed(flags[:-1]):
            if t == L.AST_LOGICAL_AND:
                acc = f"where({f}, {acc}, 0)"
            elif t == L.AST_LOGICAL_OR:
                acc = f"where({f}, 1, {acc})"
            else:  # xor
                acc = f"where({f}, 1 - {acc}, {acc})"
        return acc

    def piecewise(self, kids, env) -> str:
        L = self.L
        pieces = [(kids[i], kids[i + 1]) for i in range(0, len(kids) - 1, 2)]
        if len(kids) % 2 == 0:
            raise _Unsupported("a piecewise() without an otherwise value is not supported")
        otherwise = kids[-1]
        # piecewise(1.0, c, 0.0) is how to_sbml writes a comparison used as a number
        if (len(pieces) == 1 and _real(L, pieces[0][0], 1.0) and _real(L, otherwise, 0.0)
                and pieces[0][1].getType() in _relations(L)):
            return f"({self.emit(pieces[0][1], env)[0]})"
        acc = self.emit(otherwise, env)[0]
        for value, cond in reversed(pieces):
            acc = f"where({self.condition(cond, env)}, {self.emit(value, env)[0]}, {acc})"
        return acc

    def user_function(self, node, kids, env) -> tuple[str, int]:
        fid = node.getName()
        if fid not in self.functions:
            raise _Unsupported(f"the function {fid!r} is not defined in the model")
        bvars, body, builtin = self.functions[fid]
        args = [self.emit(k, env) for k in kids]
        if len(args) != len(bvars):
            raise _Unsupported(f"{fid}() is called with {len(args)} arguments, but its definition takes {len(bvars)}")
        if builtin is not None:  # il2sim's own hill/min/max, as to_sbml wrote them
            return f"{builtin}({', '.join(a[0] for a in args)})", _ATOM
        inner = {b: (f"({a[0]})" if a[1] < _ATOM else a[0], _ATOM) for b, a in zip(bvars, args)}
        text, _prec = self.emit(body, inner)
        return f"({text})", _ATOM


def _relations(L) -> dict:
    return {L.AST_RELATIONAL_LT: "<", L.AST_RELATIONAL_LEQ: "<=", L.AST_RELATIONAL_GT: ">",
            L.AST_RELATIONAL_GEQ: ">=", L.AST_RELATIONAL_EQ: "==", L.AST_RELATIONAL_NEQ: "!="}


def _real(L, node, value: float) -> bool:
    return node.getType() == L.AST_REAL and node.getValue() == value


@dataclass
class _Item:
    """One entry of the module being written."""

    kind: str  # parameter, state, output
    name: str
    unit: str
    description: str
    source: str = ""
    value: float | None = None  # parameter
    initial: str | float | None = None  # state
    expr: str | None = None  # output, or the state's ODE
    lower: float | None = None
    upper: float | None = None
    bioavailability: str | None = None
    lag: str | None = None


def from_sbml(source: str | os.PathLike, *, name: str | None = None) -> str:
    """Convert a plain SBML model into the text of one il2sim model module (TOML).

    Parameters
    ----------
    source
        A path to an SBML file, or SBML text (a string starting with ``<``).
    name
        Module name; default: the name :func:`to_sbml` recorded, else the SBML model id.

    Notes
    -----
    - a ``rateRule`` target → a state with that ODE;
    - a species changed by reactions → a state whose ODE is the sum of stoichiometry × kinetic
      law (divided by its constant compartment size unless ``hasOnlySubstanceUnits``); each
      reaction becomes an output with its kinetic law (local parameters become parameters
      named ``<reaction>_<parameter>``);
    - an ``assignmentRule`` target → an output;
    - every other parameter, species and compartment → a parameter with its (initial) value;
      an ``initialAssignment`` of a state that uses parameters only stays an expression,
      anything else is evaluated to its default number;
    - function definitions are inlined (``hill``, ``min2``, ``max3``… written by :func:`to_sbml`
      become il2sim's ``hill``, ``min``, ``max``); ``piecewise`` becomes ``where``;
    - time: il2sim's is in hours; a model whose ``timeUnits`` are another time unit (e.g.
      seconds) gets its ODEs and ``time`` rescaled; undeclared time units are taken as hours.
    - An il2sim annotation (files written by :func:`to_sbml`) restores names, units, bounds,
      descriptions, sources, bioavailability and lag exactly.

    SBML ids that are not valid il2sim names (or are reserved: ``t``, NONMEM words, function
    names) are renamed; the module's header comment lists the renames.

    Raises
    ------
    ModelSpecError
        Naming the file and the element for: SBML read errors, events, algebraic rules,
        ``delay``/``rateOf``, compartments whose size varies, fast reactions, variable
        stoichiometry, functions il2sim lacks, or a module that fails il2sim's own checks.
    """
    libsbml = _libsbml()
    text, label = _read_source(source)
    doc = libsbml.readSBMLFromString(text)
    problems = [f"{label}: line {e.getLine()}: {e.getMessage().strip()}"
                for e in (doc.getError(i) for i in range(doc.getNumErrors()))
                if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    if problems or doc.getModel() is None:
        raise ModelSpecError(problems or [f"{label}: no <model> element"], header=f"{label}: not valid SBML")
    if doc.getLevel() < 3:
        doc.setLevelAndVersion(3, 2, False)
    return _Importer(libsbml, doc.getModel(), label, name).run()


def _read_source(source: str | os.PathLike) -> tuple[str, str]:
    if isinstance(source, str) and source.lstrip().startswith("<"):
        return source, "<SBML text>"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise ModelSpecError([f"{path}: file not found"], header="cannot import SBML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSpecError([f"{path}: cannot read the file ({exc})"], header="cannot import SBML") from None


def _il2sim_annotation(libsbml, element) -> dict[str, str]:
    """Attributes of the il2sim annotation element (empty if there is none)."""
    ann = element.getAnnotation()
    if ann is None:
        return {}
    for i in range(ann.getNumChildren()):
        child = ann.getChild(i)
        if child.getURI() == ANNOTATION_NS:
            return {child.getAttrName(k): child.getAttrValue(k) for k in range(child.getAttributesLength())}
    return {}


def _model_annotation(libsbml, model) -> tuple[dict[str, str], dict[str, str]]:
    """(attributes of il2sim:model, SBML id -> il2sim name from its renames)."""
    ann = model.getAnnotation()
    attrs: dict[str, str] = {}
    renames: dict[str, str] = {}
    if ann is None:
        return attrs, renames
    for i in range(ann.getNumChildren()):
        child = ann.getChild(i)
        if child.getURI() != ANNOTATION_NS:
            continue
        attrs = {child.getAttrName(k): child.getAttrValue(k) for k in range(child.getAttributesLength())}
        for j in range(child.getNumChildren()):
            c = child.getChild(j)
            if c.getName() == "rename":
                renames[c.getAttrValue("sbml")] = c.getAttrValue("il2sim")
    return attrs, renames


def _float(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


class _Importer:
    def __init__(self, libsbml, model, label: str, name: str | None):
        self.L = libsbml
        self.m = model
        self.label = label
        self.name = name
        self.problems: list[str] = []
        self.notes: list[str] = []

    def fail(self, what: str, msg: str) -> None:
        self.problems.append(f"{self.label}: {what}: {msg}")

    # -- checks of what il2sim cannot represent ------------------------------------------------
    def refuse_unsupported(self) -> None:
        m, L = self.m, self.L
        doses = [m.getEvent(i) for i in range(m.getNumEvents())
                 if _il2sim_annotation(L, m.getEvent(i)).get("cmt") is not None]
        if doses:
            self.notes.append(f"{len(doses)} il2sim dose events left out: in il2sim doses are a regimen")
        for i in range(m.getNumEvents()):
            ev = m.getEvent(i)
            if any(ev is d or ev.getId() == d.getId() for d in doses):
                continue
            self.fail(f"event {ev.getId() or f'#{i + 1}'!r}",
                      "events are not supported: an il2sim model has no events, doses are a regimen "
                      "applied by the caller; remove the event and give the doses as an il2sim regimen")
        for i in range(m.getNumRules()):
            r = m.getRule(i)
            if r.isAlgebraic():
                formula = L.formulaToL3String(r.getMath()) if r.getMath() is not None else ""
                rid = f" {r.getId()!r}" if r.isSetId() else ""
                self.fail(f"algebraic rule{rid} #{i + 1} (0 = {formula})",
                          "algebraic rules are not supported (il2sim models are ODEs); "
                          "rewrite it as an assignment rule or a rate rule")
        for i in range(m.getNumCompartments()):
            c = m.getCompartment(i)
            if not c.getConstant() or m.getRule(c.getId()) is not None:
                self.fail(f"compartment {c.getId()!r}", "a compartment whose size varies is not supported; "
                          "expected constant=\"true\" and no rule for it")
        for i in range(m.getNumReactions()):
            r = m.getReaction(i)
            if r.isSetFast() and r.getFast():
                self.fail(f"reaction {r.getId()!r}", "fast reactions are not supported (expected fast=\"false\")")
            if not r.isSetKineticLaw() or r.getKineticLaw().getMath() is None:
                self.fail(f"reaction {r.getId()!r}", "a reaction without a kinetic law cannot be simulated; expected <kineticLaw>")
            for sr in [*(r.getReactant(k) for k in range(r.getNumReactants())),
                       *(r.getProduct(k) for k in range(r.getNumProducts()))]:
                sid = sr.getId() if sr.isSetId() else ""
                if sid and (m.getRule(sid) is not None or m.getInitialAssignment(sid) is not None) or (
                        sr.isSetConstant() and not sr.getConstant()):
                    self.fail(f"reaction {r.getId()!r} species {sr.getSpecies()!r}",
                              "variable stoichiometry is not supported; expected a constant number")
        if m.getNumConstraints():
            self.notes.append(f"{m.getNumConstraints()} SBML constraint(s) ignored (they do not change the dynamics)")

    def time_factor(self) -> float:
        """Hours -> the model's time unit: t_sbml = factor * t_h, and d/dt_h = factor * d/dt_sbml."""
        units = self.m.getTimeUnits() if self.m.isSetTimeUnits() else ""
        if not units:
            self.notes.append("the SBML model declares no time unit: taken as hours")
            return 1.0
        seconds = {"second": 1.0}.get(units)
        if seconds is None:
            ud = self.m.getUnitDefinition(units)
            if ud is not None and ud.getNumUnits() == 1:
                u = ud.getUnit(0)
                if self.L.UnitKind_toString(u.getKind()) == "second" and u.getExponent() == 1:
                    seconds = u.getMultiplier() * 10.0 ** u.getScale()
        if seconds is None:
            self.fail("model timeUnits", f"{units!r} is not a unit of time (expected seconds times a factor)")
            return 1.0
        factor = 3600.0 / seconds
        if abs(factor - 1.0) < 1e-12:
            return 1.0
        self.notes.append(f"the SBML time unit is {seconds:g} s: every ODE is multiplied by {factor!r} "
                          f"and SBML time is t * {factor!r} (il2sim time t is in hours)")
        return factor

    # -- names ---------------------------------------------------------------------------------
    def make_names(self, sids: list[str], renames: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        used: set[str] = set()
        for sid in sids:
            want = renames.get(sid, sid)
            name = want
            if not _IL2SIM_NAME.match(name) or name in RESERVED_NAMES or name.lower() in NONMEM_WORDS:
                name = re.sub(r"[^A-Za-z0-9_]", "_", name)
                name = name if re.match(r"[A-Za-z]", name) else "x" + name
                name = name[:60]
                if name in RESERVED_NAMES or name.lower() in NONMEM_WORDS:
                    name += "_"
            base, k = name, 2
            while name in used:
                name, k = f"{base[:60]}_{k}", k + 1
            used.add(name)
            out[sid] = name
            if name != want:
                self.notes.append(f"SBML id {sid!r} is il2sim name {name!r}")
        return out

    # -- units and texts -----------------------------------------------------------------------
    def unit_text(self, element, ann: Mapping[str, str], fallback: str = "unspecified") -> str:
        if ann.get("unit"):
            return ann["unit"]
        units = element.getUnits() if hasattr(element, "getUnits") and element.isSetUnits() else ""
        if not units:
            return fallback
        if units == "dimensionless":
            return "1"
        ud = self.m.getUnitDefinition(units)
        if ud is None:
            return {"second": "s", "litre": "L", "mole": "mol", "gram": "g", "item": "item",
                    "metre": "m", "kilogram": "kg"}.get(units, units)
        if ud.isSetName() and ud.getName().strip():
            return ud.getName().strip()
        return self.L.UnitDefinition.printUnits(ud, True) or units

    def description(self, element, ann: Mapping[str, str], kind: str, where: str = "") -> str:
        if ann.get("description"):
            return ann["description"]
        if element.isSetName() and element.getName().strip() and element.getName() != element.getId():
            return element.getName().strip()
        if element.isSetNotes():
            plain = re.sub(r"<[^>]+>", " ", element.getNotesString())
            plain = " ".join(plain.split())
            if plain:
                return plain[:500]
        return f"SBML {kind} {element.getId()!r}{where}"

    # -- the conversion ------------------------------------------------------------------------
    def run(self) -> str:
        L, m = self.L, self.m
        self.refuse_unsupported()
        attrs, renames = _model_annotation(L, m)
        time_factor = self.time_factor()
        if self.problems:
            raise ModelSpecError(self.problems, header=f"{self.label}: cannot import SBML")

        compartments = [m.getCompartment(i) for i in range(m.getNumCompartments())]
        species = [m.getSpecies(i) for i in range(m.getNumSpecies())]
        parameters = [m.getParameter(i) for i in range(m.getNumParameters())]
        reactions = [m.getReaction(i) for i in range(m.getNumReactions())]
        local: list[tuple[str, object, object]] = []  # (global sid, reaction, local parameter)
        taken = {e.getId() for e in (*compartments, *species, *parameters, *reactions)}
        for r in reactions:
            kl = r.getKineticLaw()
            if kl is None:
                continue
            for k in range(kl.getNumLocalParameters() if m.getLevel() == 3 else kl.getNumParameters()):
                lp = kl.getLocalParameter(k) if m.getLevel() == 3 else kl.getParameter(k)
                sid = f"{r.getId()}_{lp.getId()}"
                while sid in taken:
                    sid += "_"
                taken.add(sid)
                local.append((sid, r, lp))
        # a species reference with an id is a symbol: its (constant) stoichiometry
        stoich_refs = [(sr, r) for r in reactions
                       for sr in [*(r.getReactant(k) for k in range(r.getNumReactants())),
                                  *(r.getProduct(k) for k in range(r.getNumProducts()))]
                       if sr.isSetId() and sr.getId()]
        sids = [e.getId() for e in (*compartments, *species, *parameters)] + [s for s, _, _ in local] + \
            [sr.getId() for sr, _ in stoich_refs] + [r.getId() for r in reactions]
        names = self.make_names(sids, renames)
        functions = {}
        for i in range(m.getNumFunctionDefinitions()):
            fd = m.getFunctionDefinition(i)
            lam = fd.getMath()
            if lam is None:
                continue
            bvars = [lam.getChild(k).getName() for k in range(lam.getNumBvars())]
            builtin = _il2sim_annotation(L, fd).get("name")
            functions[fd.getId()] = (bvars, fd.getBody(), builtin if builtin in ("hill", "min", "max") else None)
        infix = _Infix(L, names, functions, time_factor)

        def expr(math_node, what: str, env: Mapping[str, str] | None = None) -> str | None:
            if math_node is None:
                self.fail(what, "has no <math>")
                return None
            try:
                text = infix.text(math_node, env)
                parse_expr_checked(text, where=f"{self.label}: {what}")
            except _Unsupported as exc:
                self.fail(what, str(exc))
                return None
            except ExpressionError as exc:
                self.problems.extend(exc.problems)
                return None
            return text

        rate_rules, assignment_rules = {}, {}
        for i in range(m.getNumRules()):
            r = m.getRule(i)
            if r.isRate():
                rate_rules[r.getVariable()] = r
            elif r.isAssignment():
                assignment_rules[r.getVariable()] = r
        initial_assignments = {m.getInitialAssignment(i).getSymbol(): m.getInitialAssignment(i)
                               for i in range(m.getNumInitialAssignments())}

        # reaction fluxes per species: [(stoichiometry, reaction id)]
        flux: dict[str, list[tuple[float, str]]] = {}
        for r in reactions:
            for sign, getn, get in ((-1.0, r.getNumReactants, r.getReactant), (1.0, r.getNumProducts, r.getProduct)):
                for k in range(getn()):
                    sr = get(k)
                    stoich = sr.getStoichiometry() if sr.isSetStoichiometry() else math.nan
                    if not math.isfinite(stoich):
                        self.fail(f"reaction {r.getId()!r} species {sr.getSpecies()!r}",
                                  "stoichiometry is not set; expected a number")
                        continue
                    flux.setdefault(sr.getSpecies(), []).append((sign * stoich, r.getId()))

        # numeric values of everything at t = 0 (for parameters and evaluated initial values)
        values: dict[str, float] = {}
        pending: dict[str, str] = {}
        for c in compartments:
            if c.isSetSize():
                values[names[c.getId()]] = c.getSize()
            elif c.getId() not in initial_assignments:
                values[names[c.getId()]] = 1.0
                self.notes.append(f"compartment {c.getId()!r} has no size: taken as 1")
        for p in parameters:
            if p.isSetValue():
                values[names[p.getId()]] = p.getValue()
        for sid, r, lp in local:
            values[names[sid]] = lp.getValue()
        for sr, _ in stoich_refs:
            values[names[sr.getId()]] = sr.getStoichiometry()
        species_initial: dict[str, str | float] = {}
        for s in species:
            sid, comp = s.getId(), s.getCompartment()
            vname = names.get(comp, comp)
            if s.isSetInitialAmount():
                a = s.getInitialAmount()
                species_initial[sid] = a if s.getHasOnlySubstanceUnits() else f"{a!r} / {vname}"
            elif s.isSetInitialConcentration():
                c = s.getInitialConcentration()
                species_initial[sid] = f"{c!r} * {vname}" if s.getHasOnlySubstanceUnits() else c
            elif sid not in initial_assignments and sid not in assignment_rules:
                self.fail(f"species {sid!r}", "has no initial amount, concentration or initial assignment")
        for sid, ia in initial_assignments.items():
            if ia.getMath() is not None:
                text = expr(ia.getMath(), f"initialAssignment {sid!r}")
                if text is not None:
                    pending[sid] = text
        for sid, v in species_initial.items():
            if isinstance(v, float):
                values[names[sid]] = v
            elif sid not in pending:
                pending[sid] = v
        # assignment rules hold at t = 0 too
        rule_text = {sid: expr(r.getMath(), f"assignmentRule {sid!r}") for sid, r in assignment_rules.items()}
        todo = {sid: text for sid, text in {**rule_text, **pending}.items() if text is not None and sid in names}
        while todo:  # in dependency order: evaluate whatever has all its values
            done = []
            for sid, text in todo.items():
                try:
                    values[names[sid]] = evaluate(parse_expr_checked(text, where=sid), values)
                except KeyError:
                    continue
                done.append(sid)
            if not done:
                break  # reported below as a missing value
            for sid in done:
                del todo[sid]

        items: list[_Item] = []
        state_sids: list[str] = []
        for s in species:
            sid = s.getId()
            if sid in rate_rules:
                state_sids.append(sid)
            elif sid in flux and not s.getBoundaryCondition() and not s.getConstant() and sid not in assignment_rules:
                state_sids.append(sid)
        for p in (*compartments, *parameters):
            if p.getId() in rate_rules:
                state_sids.append(p.getId())
        order = {e.getId(): i for i, e in enumerate((*parameters, *species, *compartments))}
        state_sids.sort(key=lambda s: order[s])  # files from to_sbml: the il2sim state order

        element_of = {e.getId(): e for e in (*compartments, *species, *parameters)}
        kind_of = {**{c.getId(): "compartment" for c in compartments}, **{s.getId(): "species" for s in species},
                   **{p.getId(): "parameter" for p in parameters}}
        param_names = set()
        for sid in [e.getId() for e in (*compartments, *species, *parameters)]:
            if sid in state_sids or sid in assignment_rules:
                continue
            el = element_of[sid]
            ann = _il2sim_annotation(L, el)
            v = values.get(names[sid])
            if v is None:
                self.fail(f"{kind_of[sid]} {sid!r}", "has no value (expected a value or an initial assignment)")
                continue
            src = ann.get("source") or f"SBML import of {self.label}: {kind_of[sid]} {sid!r}"
            if sid in initial_assignments:
                src += f" (initial assignment {pending.get(sid, '?')!r} evaluated with the default values)"
            items.append(_Item("parameter", names[sid], self.unit_text(el, ann),
                               self.description(el, ann, kind_of[sid]), src, value=v,
                               lower=_float(ann.get("lower")) if ann else (-math.inf if v < 0 else None),
                               upper=_float(ann.get("upper"))))
            param_names.add(names[sid])
        for sid, r, lp in local:
            ann = _il2sim_annotation(L, lp)
            v = lp.getValue()
            items.append(_Item("parameter", names[sid], self.unit_text(lp, ann),
                               self.description(lp, ann, "local parameter", f" of reaction {r.getId()!r}"),
                               f"SBML import of {self.label}: local parameter {lp.getId()!r} of reaction {r.getId()!r}",
                               value=v, lower=-math.inf if v < 0 else None))
            param_names.add(names[sid])
        for sr, r in stoich_refs:
            v = sr.getStoichiometry()
            items.append(_Item("parameter", names[sr.getId()], "1",
                               f"stoichiometry of species {sr.getSpecies()!r} in reaction {r.getId()!r}",
                               f"SBML import of {self.label}: species reference {sr.getId()!r}", value=v,
                               lower=-math.inf if v < 0 else None))
            param_names.add(names[sr.getId()])

        for sid in state_sids:
            el = element_of[sid]
            ann = _il2sim_annotation(L, el)
            what = f"{kind_of[sid]} {sid!r}"
            if sid in rate_rules:
                rhs = expr(rate_rules[sid].getMath(), f"rateRule {sid!r}")
            else:
                terms = []
                for stoich, rid in flux[sid]:
                    rn = names[rid]
                    terms.append(rn if stoich == 1 else f"-{rn}" if stoich == -1 else f"{stoich!r} * {rn}")
                rhs = " + ".join(terms).replace("+ -", "- ")
                conv = el.getConversionFactor() if el.isSetConversionFactor() else (
                    m.getConversionFactor() if m.isSetConversionFactor() else "")
                if conv:
                    rhs = f"{names[conv]} * ({rhs})"
                if not el.getHasOnlySubstanceUnits():
                    rhs = f"({rhs}) / {names[el.getCompartment()]}"
            if rhs is not None and time_factor != 1.0:
                rhs = f"{time_factor!r} * ({rhs})"
            # initial value: an expression of parameters stays one; anything else is evaluated
            initial: str | float | None = None
            text = pending.get(sid) if sid in initial_assignments or not isinstance(species_initial.get(sid), float) else None
            if text is not None:
                used = parse_expr_checked(text, where=what).symbols
                initial = text if used <= param_names else values.get(names[sid])
            elif kind_of[sid] == "species":
                initial = species_initial.get(sid)
            else:
                initial = el.getSize() if kind_of[sid] == "compartment" else (el.getValue() if el.isSetValue() else None)
            if initial is None:
                self.fail(what, "has no initial value")
                continue
            v0 = values.get(names[sid], 0.0)
            lower = _float(ann.get("lower")) if ann else (-math.inf if v0 < 0 else None)
            items.append(_Item("state", names[sid], self.unit_text(el, ann), self.description(el, ann, kind_of[sid]),
                               initial=initial, expr=rhs, lower=lower,
                               bioavailability=ann.get("bioavailability"), lag=ann.get("lag")))
        for sid, r in assignment_rules.items():
            el = element_of.get(sid)
            if el is None:
                self.fail(f"assignmentRule {sid!r}", "sets a species reference or an unknown symbol; not supported")
                continue
            ann = _il2sim_annotation(L, el)
            text = rule_text[sid]
            items.append(_Item("output", names[sid], self.unit_text(el, ann), self.description(el, ann, kind_of[sid]),
                               expr=text))
        for r in reactions:
            env = {lp.getId(): names[sid] for sid, rr, lp in local if rr is r}
            text = expr(r.getKineticLaw().getMath(), f"reaction {r.getId()!r} kineticLaw", env)
            items.append(_Item("output", names[r.getId()], "unspecified",
                               self.description(r, {}, "reaction") + " (its rate: extent per SBML time unit)",
                               expr=text))
        if self.problems:
            raise ModelSpecError(self.problems, header=f"{self.label}: cannot import SBML")
        module_name = self.name or attrs.get("name") or m.getId() or Path(self.label).stem
        description = (m.getName() if m.isSetName() and m.getName() != m.getId() else "") or \
            f"imported from SBML {Path(self.label).name}"
        if attrs.get("name"):
            description = f"il2sim model {attrs['name']} (text_hash {attrs.get('text_hash', '?')}) round-tripped through SBML"
        toml = _module_toml(module_name, description, self.label, items, self.notes)
        self.check(toml)
        return toml

    def check(self, toml: str) -> None:
        """The module must pass il2sim's own checks; otherwise the import failed."""
        from .model import check_module

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "imported.toml"
            path.write_text(toml, encoding="utf-8")
            try:
                check_module(path)
            except ModelSpecError as exc:
                raise ModelSpecError([p.replace(str(path), "the imported module") for p in exc.problems],
                                     header=f"{self.label}: cannot import SBML: the module fails il2sim's checks") from None


def _toml_str(v: str) -> str:
    text = v.replace("\\", "\\\\").replace('"', '\\"')
    text = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
    return '"' + text + '"'


def _toml_num(v: float) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _module_toml(name: str, description: str, label: str, items: list[_Item], notes: list[str]) -> str:
    import il2sim

    lines = [f"# Imported from SBML ({label}) by il2sim {il2sim.__version__} (il2sim sbml import).",
             "# Time is in hours."]
    lines += [f"# Note: {n}" for n in notes]
    lines += ["", "[model]", f"name = {_toml_str(name)}", f"description = {_toml_str(description)}",
              'time_unit = "h"', "", "[parameters]"]
    for it in items:
        if it.kind == "parameter":
            fields = [f"value = {_toml_num(it.value)}"]
            if it.lower is not None and it.lower != 0.0:
                fields.append(f"lower = {_toml_num(it.lower)}")
            if it.upper is not None and it.upper != math.inf:
                fields.append(f"upper = {_toml_num(it.upper)}")
            fields += [f"unit = {_toml_str(it.unit)}", f"description = {_toml_str(it.description)}",
                       f"source = {_toml_str(it.source)}"]
            lines.append(f"{it.name} = {{ {', '.join(fields)} }}")
    lines += ["", "[states]"]
    for it in items:
        if it.kind == "state":
            init = _toml_str(it.initial) if isinstance(it.initial, str) else _toml_num(it.initial)
            fields = [f"initial = {init}", f"unit = {_toml_str(it.unit)}", f"description = {_toml_str(it.description)}"]
            if it.lower is not None and it.lower != 0.0:
                fields.append(f"lower = {_toml_num(it.lower)}")
            if it.bioavailability:
                fields.append(f"bioavailability = {_toml_str(it.bioavailability)}")
            if it.lag:
                fields.append(f"lag = {_toml_str(it.lag)}")
            lines.append(f"{it.name} = {{ {', '.join(fields)} }}")
    lines += ["", "[outputs]"]
    for it in items:
        if it.kind == "output":
            lines.append(f"{it.name} = {{ expr = {_toml_str(it.expr or '0')}, unit = {_toml_str(it.unit)}, "
                         f"description = {_toml_str(it.description)} }}")
    lines += ["", "[odes]"]
    for it in items:
        if it.kind == "state":
            lines.append(f"{it.name} = {_toml_str(it.expr or '0')}")
    return "\n".join(lines) + "\n"
