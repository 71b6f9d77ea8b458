"""Model modules (``models/*.toml``): read, validate, compose into one :class:`Model`.

A module is a TOML file with the tables ``[model]``, ``[parameters]``, ``[states]``,
``[outputs]`` and ``[odes]`` (see ``DESIGN.md``, "Model files")::

    [model]
    name = "il2_pk_sc"
    description = "s.c. depot -> central"
    time_unit = "h"

    [parameters]
    ka = { value = 0.25, unit = "1/h", description = "absorption rate", source = "..." }

    [states]
    Asc = { initial = 0.0, unit = "nmol", description = "s.c. depot", bioavailability = "F" }

    [outputs]
    C = { expr = "1000 * Ac / Vc", unit = "pM", description = "serum IL-2" }

    [odes]
    Asc = "-ka * Asc"

Several modules compose by shared names: a symbol used in one module and defined (parameter,
state or output) in another is the same symbol. :func:`load_model` checks the whole
composition and raises one :class:`~il2sim.errors.ModelSpecError` that lists every problem,
each prefixed with the file and the field, e.g.
``models/nk.toml: [odes] NKd: unknown symbol 'Cc' (did you mean 'C'?)``.

Bounds: parameter values and state initial values must lie in ``[lower, upper]``; ``lower``
defaults to 0 (concentrations, rates and cell counts are not negative), so a quantity that may
be negative declares e.g. ``lower = -inf``. Bioavailability and lag must be finite and >= 0.

This module knows nothing of regimens, configs or code generation.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import keyword
import math
import os
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from ._expr import FUNCTIONS, Expr, evaluate, parse_expr_checked
from .errors import ExpressionError, ModelSpecError

__all__ = [
    "Parameter",
    "State",
    "Output",
    "ModuleInfo",
    "Model",
    "load_model",
    "ModuleCheck",
    "check_module",
    "available_models",
    "default_search_path",
    "RESERVED_NAMES",
]

#: Names no parameter, state or output may take. ``t`` is time (h). The NONMEM data-item
#: words are reserved in any letter case, since event records use them as column names.
NONMEM_WORDS = frozenset(
    {"time", "amt", "cmt", "evid", "ii", "addl", "ss", "rate", "dur", "id", "mdv", "dv"}
)
RESERVED_NAMES = frozenset({"t"} | set(FUNCTIONS) | set(keyword.kwlist)) | NONMEM_WORDS
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")

_TABLES = ("model", "parameters", "states", "outputs", "odes")
# key -> required?
_MODEL_KEYS = {"name": True, "description": True, "time_unit": True}
_PARAMETER_KEYS = {
    "value": True,
    "unit": True,
    "description": True,
    "source": True,
    "lower": False,
    "upper": False,
}
_STATE_KEYS = {
    "initial": True,
    "unit": True,
    "description": True,
    "lower": False,
    "bioavailability": False,
    "lag": False,
}
_OUTPUT_KEYS = {"expr": True, "unit": True, "description": True}
_SECTION_KIND = {"parameters": "parameter", "states": "state", "outputs": "output"}


# ---------------------------------------------------------------------------------------------
# Composed model


@dataclass(frozen=True)
class Parameter:
    """A model parameter and its default value."""

    name: str
    value: float
    unit: str
    description: str
    source: str
    lower: float
    upper: float
    file: str


@dataclass(frozen=True)
class State:
    """A state variable; ``initial``, ``bioavailability`` and ``lag`` use parameters only.

    ``bioavailability`` and ``lag`` (``None`` when not declared: 1 and 0) apply to every dose
    into this state.
    """

    name: str
    initial: Expr
    unit: str
    description: str
    lower: float
    bioavailability: Expr | None
    lag: Expr | None
    file: str


@dataclass(frozen=True)
class Output:
    """An algebraic quantity of parameters, states, ``t`` and earlier outputs; it is recorded."""

    name: str
    expr: Expr
    unit: str
    description: str
    file: str


@dataclass(frozen=True)
class ModuleInfo:
    """One module of a composition: its ``[model]`` table and where it came from."""

    name: str
    description: str
    file: str  # as shown in messages
    path: Path


class Equations(Mapping[str, Expr]):
    """Read-only ``state name -> right-hand side`` mapping (picklable, unlike mappingproxy)."""

    __slots__ = ("_data",)

    def __init__(self, items: Iterable[tuple[str, Expr]]):
        self._data = dict(items)

    def __getitem__(self, key: str) -> Expr:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return f"Equations({self._data!r})"

    def __getstate__(self):
        return self._data

    def __setstate__(self, state):
        self._data = state


@dataclass(frozen=True)
class Model:
    """A validated composition of model modules.

    Attributes
    ----------
    parameters, states
        In module order, then file order; their index is the position in ``p`` and ``y``.
    outputs
        Topologically ordered: an output comes after every output it uses.
    odes
        ``state name -> right-hand side``, in state order.
    modules
        The composed modules, in the order given.
    """

    name: str
    modules: tuple[ModuleInfo, ...]
    parameters: tuple[Parameter, ...]
    states: tuple[State, ...]
    outputs: tuple[Output, ...]
    odes: Equations

    def __hash__(self) -> int:
        return hash(self.text_hash)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(m.path for m in self.modules)

    @cached_property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @cached_property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @cached_property
    def _index(self) -> dict[str, dict[str, int]]:
        return {
            "parameter": {n: i for i, n in enumerate(self.parameter_names)},
            "state": {n: i for i, n in enumerate(self.state_names)},
            "output": {n: i for i, n in enumerate(self.output_names)},
        }

    def _lookup(self, kind: str, name: str) -> int:
        table = self._index[kind]
        try:
            return table[name]
        except KeyError:
            raise KeyError(f"model {self.name}: unknown {kind} {name!r}{_suggest(name, table)}") from None

    def parameter_index(self, name: str) -> int:
        """Position of parameter ``name`` in ``p`` (KeyError with suggestions if unknown)."""
        return self._lookup("parameter", name)

    def state_index(self, name: str) -> int:
        """Position of state ``name`` in ``y``."""
        return self._lookup("state", name)

    def output_index(self, name: str) -> int:
        """Position of output ``name`` in the outputs vector."""
        return self._lookup("output", name)

    def default_parameters(self) -> np.ndarray:
        """Default parameter values as a new float64 array, in ``parameter_names`` order."""
        return np.array([p.value for p in self.parameters], dtype=np.float64)

    def with_parameters(self, overrides: Mapping[str, float]) -> "Model":
        """A copy with changed default values, checked against the bounds.

        Raises
        ------
        ModelSpecError
            Listing every unknown name, non-numeric or out-of-bounds value, and any initial
            value, bioavailability or lag that the new values push out of bounds.
        """
        problems: list[str] = []
        index = self._index["parameter"]
        params = list(self.parameters)
        for name, value in overrides.items():
            where = f"with_parameters: {name}"
            if name not in index:
                problems.append(f"{where}: unknown parameter{_suggest(name, index)}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                problems.append(f"{where}: expected a number, got {type(value).__name__} {value!r}")
                continue
            old = params[index[name]]
            problems += _check_bounds(f"{where}", float(value), old.lower, old.upper, default_lower=False)
            params[index[name]] = dataclasses.replace(old, value=float(value))
        if not problems:
            problems += _check_state_values(params, self.states)
        if problems:
            raise ModelSpecError(problems, header=f"model {self.name}: invalid parameter values")
        return dataclasses.replace(self, parameters=tuple(params))

    @cached_property
    def text_hash(self) -> str:
        """SHA-256 over the canonical content (names, values, units, texts) of the modules.

        Comments and formatting of the files do not count; changed default values do.
        """
        return _sha256(self._canonical(values=True))

    @cached_property
    def code_hash(self) -> str:
        """SHA-256 over what the generated code depends on: names, order and equation trees.

        Parameter values, units and descriptions are not part of it, so changing a default
        value (or overriding one) reuses the compiled module.
        """
        return _sha256(self._canonical(values=False))

    def _canonical(self, values: bool) -> object:
        def tree(e: Expr | None) -> str | None:
            return None if e is None else repr(e.root)

        if values:
            return {
                "modules": [[m.name, m.description] for m in self.modules],
                "parameters": [
                    [p.name, p.value, p.unit, p.description, p.source, p.lower, p.upper]
                    for p in self.parameters
                ],
                "states": [
                    [s.name, tree(s.initial), s.unit, s.description, s.lower,
                     tree(s.bioavailability), tree(s.lag)]
                    for s in self.states
                ],
                "outputs": [[o.name, tree(o.expr), o.unit, o.description] for o in self.outputs],
                "odes": [[k, tree(v)] for k, v in self.odes.items()],
            }
        return {
            "parameters": list(self.parameter_names),
            "states": [[s.name, tree(s.initial), tree(s.bioavailability), tree(s.lag)] for s in self.states],
            "outputs": [[o.name, tree(o.expr)] for o in self.outputs],
            "odes": [[k, tree(v)] for k, v in self.odes.items()],
        }

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}: {len(self.states)} states, {len(self.parameters)} parameters, "
            f"{len(self.outputs)} outputs)"
        )


def _sha256(obj: object) -> str:
    text = json.dumps(obj, sort_keys=False, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Finding model files


def default_search_path() -> list[Path]:
    """``IL2SIM_MODEL_PATH`` entries (``os.pathsep``-separated), then the repository's ``models/``."""
    env = os.environ.get("IL2SIM_MODEL_PATH", "")
    dirs = [Path(d) for d in env.split(os.pathsep) if d]
    import il2sim

    dirs.append(Path(il2sim.__file__).resolve().parents[1] / "models")
    return dirs


def available_models(search_path: Sequence[str | os.PathLike] | None = None) -> dict[str, Path]:
    """Model names (file stems) found on the search path -> their file; the first one wins."""
    found: dict[str, Path] = {}
    for d in _search_dirs(search_path):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def _search_dirs(search_path: Sequence[str | os.PathLike] | None) -> list[Path]:
    if search_path is None:
        return default_search_path()
    if isinstance(search_path, (str, os.PathLike)):
        search_path = [search_path]
    return [Path(d) for d in search_path]


def _label(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_path(item: str | os.PathLike) -> bool:
    if isinstance(item, os.PathLike):
        return True
    return item.endswith(".toml") or "/" in item or os.sep in item


def load_model(
    names_or_paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    search_path: Sequence[str | os.PathLike] | None = None,
) -> Model:
    """Read, validate and compose model modules.

    Parameters
    ----------
    names_or_paths
        One item or a list. An item is a path to a ``.toml`` file, or a bare name looked up
        as ``<dir>/<name>.toml`` in the search path.
    search_path
        Folders for bare names; default :func:`default_search_path`.

    Raises
    ------
    ModelSpecError
        With every problem in every module and in their composition, each naming the file
        and the field.
    """
    if isinstance(names_or_paths, (str, os.PathLike)):
        names_or_paths = [names_or_paths]
    items = list(names_or_paths)
    problems: list[str] = []
    if not items:
        raise ModelSpecError(["load_model: no model modules given"])
    paths: list[Path] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            problems.append(f"load_model: expected a model name or path, got {type(item).__name__} {item!r}")
            continue
        if _is_path(item):
            paths.append(Path(item))
            continue
        dirs = _search_dirs(search_path)
        hit = next((d / f"{item}.toml" for d in dirs if (d / f"{item}.toml").is_file()), None)
        if hit is None:
            avail = available_models(search_path)
            where = ", ".join(str(d) for d in dirs) or "(empty)"
            problems.append(
                f"model {item!r} not found in the search path ({where}){_suggest(item, avail)}; "
                f"available: {', '.join(sorted(avail)) or '(none)'}"
            )
        else:
            paths.append(hit)

    modules: list[_RawModule] = []
    seen: dict[Path, str] = {}
    complete = not problems
    for path in paths:
        label = _label(path)
        key = path.resolve()
        if key in seen:
            problems.append(f"{label}: listed twice (also as {seen[key]})")
            continue
        seen[key] = label
        module = _read_module(path, label, problems)
        if module is None:
            complete = False
        else:
            modules.append(module)
    model = _compose(modules, problems, check_symbols=complete)
    if problems:
        raise ModelSpecError(problems)
    assert model is not None
    return model


@dataclass(frozen=True)
class ModuleCheck:
    """What one module file defines and what it expects other modules to define.

    ``expects`` maps each symbol the file uses but does not define to the fields that use it,
    e.g. ``{"Treg_rel": ("[outputs] RM_rel.expr",)}``. A symbol used in a state's ``initial``,
    ``bioavailability`` or ``lag`` must be a parameter of some other module; the rest may be
    any parameter, state or output.
    """

    name: str
    file: str
    parameters: tuple[str, ...]
    states: tuple[str, ...]
    outputs: tuple[str, ...]
    expects: Mapping[str, tuple[str, ...]]

    @property
    def provides(self) -> tuple[str, ...]:
        return self.parameters + self.states + self.outputs

    @property
    def self_contained(self) -> bool:
        return not self.expects


def check_module(path: str | os.PathLike, *, search_path: Sequence[str | os.PathLike] | None = None) -> ModuleCheck:
    """Validate one module file on its own and list the symbols it expects from other modules.

    Modules share symbols (the PK module reads cell counts from the cell modules), so most
    cannot compose alone. This runs every check that needs only this file: TOML, tables and
    keys, names, units, descriptions and sources, bounds, expression grammar, duplicate
    definitions, one equation per state, cycles among its outputs, and initial values,
    bioavailability and lag that use only its own parameters. Symbols it does not define are
    listed in :attr:`ModuleCheck.expects` rather than reported; :func:`load_model` checks them
    against the composition.

    ``path`` may also be a bare module name, looked up like :func:`load_model` does.

    Raises
    ------
    ModelSpecError
        Listing every problem in the file.
    """
    problems: list[str] = []
    p = Path(path)
    if not _is_path(path):
        dirs = _search_dirs(search_path)
        hit = next((d / f"{path}.toml" for d in dirs if (d / f"{path}.toml").is_file()), None)
        if hit is None:
            avail = available_models(search_path)
            raise ModelSpecError([f"model {str(path)!r} not found in the search path{_suggest(str(path), avail)}; "
                                  f"available: {', '.join(sorted(avail)) or '(none)'}"])
        p = hit
    label = _label(p)
    mod = _read_module(p, label, problems)
    if mod is None:
        raise ModelSpecError(problems, header=f"{label}: invalid module")
    _compose([mod], problems, check_symbols=False)
    defined = {x.name for x in (*mod.parameters, *mod.states, *mod.outputs)}
    expects: dict[str, list[str]] = {}

    def note(e: Expr | None, where: str) -> None:
        if e is None:
            return
        for sym in sorted(e.symbols):
            if sym != "t" and sym not in defined:
                expects.setdefault(sym, []).append(where)

    for s in mod.states:
        for key in ("initial", "bioavailability", "lag"):
            e = getattr(s, key)
            if e is not None and e is not _INVALID:
                note(e, f"[states] {s.name}.{key}")
                for sym in sorted(e.symbols):
                    kind = next((k for k, items in (("state", mod.states), ("output", mod.outputs))
                                 if any(x.name == sym for x in items)), None)
                    if sym == "t" or kind is not None:
                        problems.append(f"{label}: [states] {s.name}.{key}: {sym!r} is "
                                        f"{'the time' if sym == 't' else _article(kind)}; {key} may use parameters only")
    for o in mod.outputs:
        note(o.expr, f"[outputs] {o.name}.expr")
    for name, e in mod.odes:
        note(e, f"[odes] {name}")
    if problems:
        raise ModelSpecError(problems, header=f"{label}: invalid module")
    return ModuleCheck(
        name=mod.name, file=label,
        parameters=tuple(x.name for x in mod.parameters), states=tuple(x.name for x in mod.states),
        outputs=tuple(x.name for x in mod.outputs),
        expects={k: tuple(v) for k, v in sorted(expects.items())},
    )


# ---------------------------------------------------------------------------------------------
# One module


@dataclass
class _RawModule:
    label: str
    path: Path
    name: str = ""
    description: str = ""
    parameters: list[Parameter] = dataclasses.field(default_factory=list)
    states: list[State] = dataclasses.field(default_factory=list)
    outputs: list[Output] = dataclasses.field(default_factory=list)
    odes: list[tuple[str, Expr | None]] = dataclasses.field(default_factory=list)


def _type_name(value: object) -> str:
    return {dict: "table", list: "array", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


def _check_keys(entry: dict, keys: Mapping[str, bool], where: str, problems: list[str]) -> None:
    unknown = [k for k in entry if k not in keys]
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        problems.append(f"{where}: unknown key(s) {listed} (valid keys: {', '.join(keys)})")
    for k, required in keys.items():
        if required and k not in entry:
            problems.append(f"{where}: missing {k!r}")


def _text(entry: dict, key: str, where: str, problems: list[str], *, empty_hint: str = "") -> str:
    value = entry.get(key)
    if value is None:
        return ""  # reported as missing by _check_keys
    if not isinstance(value, str):
        problems.append(f"{where}.{key}: expected a string, got {_type_name(value)} {value!r}")
        return ""
    if not value.strip():
        problems.append(f"{where}.{key}: is empty{empty_hint}")
    return value


def _number(entry: dict, key: str, where: str, problems: list[str], default: float | None) -> float | None:
    if key not in entry:
        return default
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{where}.{key}: expected a number, got {_type_name(value)} {value!r}")
        return None
    return float(value)


def _check_bounds(where: str, value: float, lower: float, upper: float, default_lower: bool) -> list[str]:
    if not math.isfinite(value):
        return [f"{where}: value {value!r} is not finite"]
    if value < lower:
        hint = " (negative values need an explicit lower bound, e.g. lower = -inf)" if default_lower else ""
        return [f"{where}: value {value!r} is below the lower bound {lower!r}{hint}"]
    if value > upper:
        return [f"{where}: value {value!r} is above the upper bound {upper!r}"]
    return []


def _check_name(name: str, where: str, problems: list[str]) -> None:
    if not _IDENTIFIER.match(name):
        problems.append(
            f"{where}: {name!r} is not a valid name (ASCII letter first, then letters, digits "
            f"or '_', at most 64 characters)"
        )
    elif name in RESERVED_NAMES or name.lower() in NONMEM_WORDS:
        problems.append(f"{where}: {name!r} is a reserved name (reserved: t, {', '.join(sorted(NONMEM_WORDS))} in any case, "
                        f"the function names and Python keywords)")


def _expression(value: object, where: str, problems: list[str]) -> Expr | None:
    try:
        return parse_expr_checked(value, where=where)  # type: ignore[arg-type]
    except ExpressionError as exc:
        problems.extend(exc.problems)
        return None


def _read_module(path: Path, label: str, problems: list[str]) -> _RawModule | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{label}: file not found")
        return None
    except UnicodeDecodeError as exc:
        problems.append(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{label}: invalid TOML: {exc}")
        return None
    except OSError as exc:
        problems.append(f"{label}: cannot read file ({exc.strerror})")
        return None

    mod = _RawModule(label=label, path=path)
    unknown = [k for k in data if k not in _TABLES]
    if unknown:
        problems.append(
            f"{label}: unknown table(s) {', '.join(repr(k) for k in unknown)} "
            f"(valid tables: {', '.join(_TABLES)})"
        )
    tables: dict[str, dict] = {}
    for name in _TABLES:
        table = data.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"{label}: [{name}] expected a table, got {_type_name(table)}")
            table = {}
        tables[name] = table
    if "model" not in data:
        problems.append(f"{label}: missing table [model] (with name, description, time_unit = \"h\")")
    else:
        _read_header(tables["model"], mod, problems)
    _read_parameters(tables["parameters"], mod, problems)
    _read_states(tables["states"], mod, problems)
    _read_outputs(tables["outputs"], mod, problems)
    for state, text in tables["odes"].items():
        where = f"{label}: [odes] {state}"
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            problems.append(f"{where}: expected an expression string, got {_type_name(text)} {text!r}")
            mod.odes.append((state, None))
        else:
            mod.odes.append((state, _expression(text, where, problems)))
    return mod


def _read_header(table: dict, mod: _RawModule, problems: list[str]) -> None:
    where = f"{mod.label}: [model]"
    _check_keys(table, _MODEL_KEYS, where, problems)
    mod.name = _text(table, "name", where, problems)
    mod.description = _text(table, "description", where, problems)
    unit = table.get("time_unit")
    if unit is not None and unit != "h":
        problems.append(f"{where} time_unit: {unit!r} is not supported (expected \"h\"; il2sim time is in hours)")


def _entries(table: dict, section: str, mod: _RawModule, example: str, problems: list[str]):
    for name, entry in table.items():
        where = f"{mod.label}: [{section}] {name}"
        _check_name(name, where, problems)
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a table like {example}, got {_type_name(entry)} {entry!r}")
            continue
        yield name, entry, where


def _read_parameters(table: dict, mod: _RawModule, problems: list[str]) -> None:
    example = '{ value = 1.0, unit = "1/h", description = "...", source = "..." }'
    for name, entry, where in _entries(table, "parameters", mod, example, problems):
        _check_keys(entry, _PARAMETER_KEYS, where, problems)
        unit = _text(entry, "unit", where, problems, empty_hint=' (use "1" for dimensionless)')
        description = _text(entry, "description", where, problems)
        source = _text(entry, "source", where, problems)
        value = _number(entry, "value", where, problems, None)
        lower = _number(entry, "lower", where, problems, 0.0)
        upper = _number(entry, "upper", where, problems, math.inf)
        if lower is None or upper is None:
            lower, upper = -math.inf, math.inf  # already reported; don't pile on
        elif math.isnan(lower) or math.isnan(upper) or lower > upper:
            problems.append(f"{where}: bounds [{lower!r}, {upper!r}] are not an interval (need lower <= upper)")
        elif value is not None:
            problems += _check_bounds(f"{where}.value", value, lower, upper, default_lower="lower" not in entry)
        mod.parameters.append(
            Parameter(name, math.nan if value is None else value, unit, description, source,
                      lower, upper, mod.label)
        )


def _read_states(table: dict, mod: _RawModule, problems: list[str]) -> None:
    example = '{ initial = 0.0, unit = "nmol", description = "..." }'
    for name, entry, where in _entries(table, "states", mod, example, problems):
        _check_keys(entry, _STATE_KEYS, where, problems)
        unit = _text(entry, "unit", where, problems, empty_hint=' (use "1" for dimensionless)')
        description = _text(entry, "description", where, problems)
        lower = _number(entry, "lower", where, problems, 0.0)
        if lower is not None and math.isnan(lower):
            problems.append(f"{where}.lower: is NaN")
            lower = None
        exprs: dict[str, Expr | None] = {}
        for key in ("initial", "bioavailability", "lag"):
            if key not in entry:
                continue
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                problems.append(
                    f"{where}.{key}: expected a number or an expression over parameters, "
                    f"got {_type_name(value)} {value!r}"
                )
                continue
            exprs[key] = _expression(value, f"{where}.{key}", problems)
        # Bounds of the initial value are checked once parameters are known (_check_state_values).
        mod.states.append(
            State(name, exprs.get("initial") or _INVALID, unit, description,
                  -math.inf if lower is None else lower,
                  exprs.get("bioavailability"), exprs.get("lag"), mod.label)
        )


def _read_outputs(table: dict, mod: _RawModule, problems: list[str]) -> None:
    example = '{ expr = "1000 * Ac / Vc", unit = "pM", description = "..." }'
    for name, entry, where in _entries(table, "outputs", mod, example, problems):
        _check_keys(entry, _OUTPUT_KEYS, where, problems)
        unit = _text(entry, "unit", where, problems, empty_hint=' (use "1" for dimensionless)')
        description = _text(entry, "description", where, problems)
        expr = None
        if "expr" in entry:
            value = entry["expr"]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                problems.append(f"{where}.expr: expected an expression string, got {_type_name(value)} {value!r}")
            else:
                expr = _expression(value, f"{where}.expr", problems)
        mod.outputs.append(Output(name, expr if expr is not None else _INVALID, unit, description, mod.label))


# Placeholder for an expression that failed to parse (already reported); it uses no symbols.
_INVALID = parse_expr_checked(0.0, where="(invalid)")


# ---------------------------------------------------------------------------------------------
# Composition


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _compose(modules: list[_RawModule], problems: list[str], check_symbols: bool) -> Model | None:
    # 1. definitions and duplicates
    defined: dict[str, tuple[str, str]] = {}  # name -> (kind, "file [section]")
    module_names: dict[str, str] = {}
    for mod in modules:
        if mod.name:
            if mod.name in module_names:
                problems.append(
                    f"{mod.label}: [model] name: module name {mod.name!r} is also used by {module_names[mod.name]}"
                )
            else:
                module_names[mod.name] = mod.label
        for section, items in (("parameters", mod.parameters), ("states", mod.states), ("outputs", mod.outputs)):
            for item in items:
                here = f"{mod.label} [{section}]"
                if item.name in defined:
                    problems.append(
                        f"{mod.label}: [{section}] {item.name}: {item.name!r} is defined twice: "
                        f"in {defined[item.name][1]} and in {here}"
                    )
                else:
                    defined[item.name] = (_SECTION_KIND[section], here)

    parameters = [p for m in modules for p in m.parameters]
    states = [s for m in modules for s in m.states]
    outputs = [o for m in modules for o in m.outputs]
    kinds = {name: kind for name, (kind, _) in defined.items()}
    state_names = [s.name for s in states]

    # 2. equations: one per state
    odes: dict[str, Expr | None] = {}
    ode_file: dict[str, str] = {}
    for mod in modules:
        for name, expr in mod.odes:
            where = f"{mod.label}: [odes] {name}"
            if name in ode_file:
                problems.append(f"{where}: second equation for {name!r} (the first is in {ode_file[name]})")
                continue
            ode_file[name] = mod.label
            if kinds.get(name) != "state":
                if name in kinds:
                    problems.append(f"{where}: equation for {name!r}, which is {_article(kinds[name])}, not a state")
                else:
                    problems.append(
                        f"{where}: equation for {name!r}, which is not a state{_suggest(name, state_names)}"
                    )
                continue
            odes[name] = expr
    for s in states:
        if s.name not in ode_file:
            problems.append(f"{s.file}: [states] {s.name}: state has no equation in [odes]")

    # 3. symbols in every expression
    if check_symbols:
        every = list(kinds) + ["t"]
        for s in states:
            where = f"{s.file}: [states] {s.name}"
            for key in ("initial", "bioavailability", "lag"):
                e = getattr(s, key)
                if e is None:
                    continue
                for sym in sorted(e.symbols):
                    kind = "time" if sym == "t" else kinds.get(sym)
                    if kind is None:
                        problems.append(f"{where}.{key}: unknown symbol {sym!r}{_suggest(sym, every)}")
                    elif kind != "parameter":
                        problems.append(
                            f"{where}.{key}: {sym!r} is {'the time' if sym == 't' else _article(kind)}; "
                            f"{key} may use parameters only"
                        )
        for o in outputs:
            _check_symbols(o.expr, f"{o.file}: [outputs] {o.name}.expr", kinds, every, problems)
        for mod in modules:
            for name, e in mod.odes:
                if e is not None:
                    _check_symbols(e, f"{mod.label}: [odes] {name}", kinds, every, problems)

    # 4. outputs in dependency order; cycles named
    ordered = _order_outputs(outputs, problems)

    # 5. values that depend on other parameters: initial values, bioavailability, lag
    problems += _check_state_values(parameters, states)
    if problems:
        return None
    return Model(
        name="+".join(m.name for m in modules),
        modules=tuple(ModuleInfo(m.name, m.description, m.label, m.path) for m in modules),
        parameters=tuple(parameters),
        states=tuple(states),
        outputs=tuple(ordered),
        odes=Equations((s.name, odes[s.name]) for s in states),
    )


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _check_symbols(e: Expr, where: str, kinds: Mapping[str, str], every: list[str], problems: list[str]) -> None:
    for sym in sorted(e.symbols):
        if sym != "t" and sym not in kinds:
            problems.append(f"{where}: unknown symbol {sym!r}{_suggest(sym, every)}")


def _order_outputs(outputs: list[Output], problems: list[str]) -> list[Output]:
    """Outputs sorted so each comes after the outputs it uses (stable); cycles reported."""
    by_name = {o.name: o for o in outputs}
    deps = {o.name: [d for d in sorted(o.expr.symbols) if d in by_name] for o in outputs}
    order: list[Output] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    reported: set[frozenset[str]] = set()
    for root in by_name:
        if state.get(root):
            continue
        # iterative DFS with an explicit path, so long chains cannot hit the recursion limit
        path = [root]
        iters = [iter(deps[root])]
        state[root] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                done = path.pop()
                iters.pop()
                state[done] = 2
                order.append(by_name[done])
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    files = sorted({by_name[n].file for n in cycle})
                    problems.append(
                        f"{', '.join(files)}: [outputs] cycle among outputs: {' -> '.join(cycle)}"
                    )
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(deps[nxt]))
    return order


def _check_state_values(parameters: Sequence[Parameter], states: Sequence[State]) -> list[str]:
    """Initial values, bioavailability and lag evaluated with the parameter values."""
    problems: list[str] = []
    # Invalid parameter values were reported already; expressions using them are skipped.
    values = {p.name: p.value for p in parameters if math.isfinite(p.value)}
    for s in states:
        where = f"{s.file}: [states] {s.name}"
        checks = [("initial", s.initial, s.lower), ("bioavailability", s.bioavailability, 0.0), ("lag", s.lag, 0.0)]
        for key, e, lower in checks:
            if e is None or e is _INVALID:
                continue
            try:
                v = evaluate(e, values)
            except KeyError:  # a symbol or value problem, reported elsewhere
                continue
            shown = f"{key} {e.text!r} = {v!r}" if e.constant is None else f"{key} {v!r}"
            if not math.isfinite(v):
                problems.append(f"{where}.{key}: {shown} is not finite")
            elif v < lower:
                hint = " (negative initial values need an explicit lower bound, e.g. lower = -inf)" if (
                    key == "initial" and lower == 0.0) else ""
                problems.append(f"{where}.{key}: {shown} is below the lower bound {lower!r}{hint}")
    return problems
