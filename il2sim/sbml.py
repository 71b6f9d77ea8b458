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
``hill``, ``min``, ``max``   ``<functionDefinition>`` s ``hill``, ``min2``, ``max2`` (MathML
                             ``piecewise``; ``min(a, b, c)`` is ``min2(min2(a, b), c)``)
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
``time + lag``).

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

    def __init__(self, libsbml, ids: Mapping[str, str], functions: Mapping[str, str]):
        self.L = libsbml
        self.ids = ids
        self.functions = functions  # "hill"/"min"/"max" -> function definition id

    def node(self, kind, *children):
        n = self.L.ASTNode(kind)
        for c in children:
            _ok(n.addChild(c), "MathML")
        return n

    def number(self, value: float | int):
        if isinstance(value, int):
            n = self.L.ASTNode(self.L.AST_INTEGER)
            _ok(n.setValue(int(value)), "MathML")
        else:
            n = self.L.ASTNode(self.L.AST_REAL)
            _ok(n.setValue(float(value)), "MathML")
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
        if f in ("min", "max"):
            acc = self.call(self.functions[f], self.build(args[0]), self.build(args[1]))
            for a in args[2:]:
                acc = self.call(self.functions[f], acc, self.build(a))
            return acc
        if f == "hill":
            return self.call(self.functions["hill"], *(self.build(a) for a in args))
        kind = {"exp": L.AST_FUNCTION_EXP, "log": L.AST_FUNCTION_LN, "log10": L.AST_FUNCTION_LOG,
                "sqrt": L.AST_FUNCTION_ROOT, "abs": L.AST_FUNCTION_ABS}[f]
        return self.node(kind, self.build(args[0]))


# il2sim function -> (preferred SBML id, lambda in L3 infix syntax with unambiguous names)
_FUNCTION_DEFS = {
    "hill": ("hill", "lambda(xx, kk, nn, xx^nn / (kk^nn + xx^nn))"),
    "min": ("min2", "lambda(aa, bb, piecewise(aa, aa <= bb, bb))"),
    "max": ("max2", "lambda(aa, bb, piecewise(aa, aa >= bb, bb))"),
}


def _document(model: Model):
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
    functions: dict[str, str] = {}
    for f in ("hill", "min", "max"):
        if f not in used:
            continue
        fid, body = _FUNCTION_DEFS[f]
        while fid in taken:
            fid += "_"
        taken.add(fid)
        functions[f] = fid
        fd = m.createFunctionDefinition()
        _ok(fd.setId(fid), fid)
        math_ = libsbml.parseL3Formula(body)
        if math_ is None:  # pragma: no cover - a fixed formula
            raise RuntimeError(f"SBML export: {fid}: {libsbml.getLastParseL3Error()}")
        _ok(fd.setMath(math_), fid)
        _ok(fd.setMetaId(f"il2sim_fn_{fid}"), fid)
        _ok(fd.setAnnotation(_annotation("function", {"name": f})), fid)
    build = _MathBuilder(libsbml, ids, functions).build

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
        _ok(p.setValue(evaluate(st.initial, values)), sid)
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
    _ok(m.setNotes(_notes(*lines)), "model notes")
    return doc


def _sid(text: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return sid if re.match(r"[A-Za-z_]", sid) else "m_" + sid


def _all_exprs(model: Model):
    for st in model.states:
        yield st.initial
    yield from model.odes.values()
    for o in model.outputs:
        yield o.expr


def _functions_used(root) -> set[str]:
    out: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (BinOp, Compare)):
            stack += (node.left, node.right)
        elif isinstance(node, Neg):
            stack.append(node.operand)
        elif isinstance(node, Call):
            out.add(node.func)
            stack += node.args
    return out


def to_sbml(model: Model) -> str:
    """SBML Level 3 Version 2 text of ``model`` (see the module docstring for the mapping).

    SBML ids are the il2sim names (:func:`sbml_ids` lists the rare exceptions). Every state is a
    non-constant ``parameter`` with a ``rateRule``, every parameter a constant ``parameter``
    with its default value, every output a non-constant ``parameter`` with an
    ``assignmentRule``. Doses are not exported: they are events of the caller's regimen; a
    dosed state's bioavailability and lag are in its notes and annotation.

    Examples
    --------
    >>> import libsbml
    >>> from il2sim.model import load_model
    >>> text = to_sbml(load_model("models/bench/il2_pkpd12.toml"))
    >>> libsbml.readSBMLFromString(text).getModel().getRateRuleByVariable("Ac") is not None
    True
    """
    libsbml = _libsbml()
    doc = _document(model)
    text = libsbml.writeSBMLToString(doc)
    if not text:  # pragma: no cover
        raise RuntimeError(f"SBML export of {model.name}: libsbml wrote nothing")
    return text


def write_sbml(model: Model, path: str | os.PathLike) -> Path:
    """Write :func:`to_sbml` of ``model`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    text = to_sbml(model)
    _write_atomic(path, text)
    return path


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
