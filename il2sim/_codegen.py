"""Model -> generated numba module with an analytic Jacobian, cached on disk by content hash.

The generated model functions have fixed signatures over flat float64 arrays, so one compiled
module serves every parameter set (no closures, no recompiles per subject):

- ``rhs(t, y, p, dy)``: ``dy[i] = f_i(t, y, p)``;
- ``jac(t, y, p, J)``: ``J[i, j] = df_i/dy_j``, every entry written (zeros first);
- ``outputs(t, y, p, o)``: ``o[k]`` = output ``k`` (``model.outputs`` order);
- ``initial(p, y0)``: initial state from the parameters;
- ``dose_modifiers(p, f, lag)``: per state, bioavailability (1 if not declared) and lag time
  (0 if not declared) applied to doses into that state;
- constants ``N_STATES``, ``N_PARAMS``, ``N_OUTPUTS`` and ``RHS_DEPENDS_ON_TIME``.

Outputs are not substituted into the equations: each function first computes the outputs it
needs as locals, in dependency order, and the Jacobian applies the chain rule through them
(``df/dy + df/do . do/dy``), so deep output chains do not blow up expression size. Common
subexpressions are shared with ``sympy.cse``. The code is plain scalar arithmetic with
``math.*`` calls and conditional expressions; nothing is allocated.

The module text (header and solver kernels from :mod:`il2sim._solvers.build`) is written to
``<cache_dir>/models/il2sim_model_<key[:20]>.py``. Its model section starts with the line
``# il2sim-model-key: <key> sha256=<digest>``: the full key, and the digest of the rest of
the file, so a truncated or edited file is detected and regenerated. The key hashes what the
code depends on (:attr:`il2sim.model.Model.code_hash`: names, order and equations, not
default values), the il2sim, numba and kernel-template versions, and this generator's source.
numba's own cache sits next to the file in ``__pycache__``, so a second process starts warm.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numba
import sympy
from sympy.printing.precedence import precedence
from sympy.printing.pycode import PythonCodePrinter

import il2sim

from ._expr import Expr, Hill, to_sympy
from ._solvers import build
from .errors import ModelSpecError
from .model import Model

__all__ = ["CompiledModel", "compile_model", "default_cache_dir", "cache_key", "generate_source"]

_KEY_PREFIX = "# il2sim-model-key: "
_KEY_LINE = re.compile(r"^# il2sim-model-key: ([0-9a-f]{64}) sha256=([0-9a-f]{64})\n", re.M)
# Changing the generator (or the expression grammar) must invalidate cached modules.
_GENERATOR_HASH = hashlib.sha256(
    Path(__file__).read_bytes() + Path(__file__).with_name("_expr.py").read_bytes()
).hexdigest()


@dataclass(frozen=True)
class CompiledModel:
    """A model with its generated, imported numba module.

    Attributes
    ----------
    model
        The :class:`~il2sim.model.Model` it was generated from.
    module
        The imported module: model functions (``rhs``, ``jac``, ``outputs``, ``initial``,
        ``dose_modifiers``), the ``N_*`` constants and the solver kernels.
    key
        Cache key (hex SHA-256).
    path
        The generated ``.py`` file.
    cold
        True when the source was generated now, False when a cached file was reused.
    codegen_seconds
        Time spent producing (or checking) the file and importing it; numba compiles lazily,
        on the first call of each function, and that time is not included.
    """

    model: Model
    module: ModuleType
    key: str
    path: Path
    cold: bool
    codegen_seconds: float


def default_cache_dir() -> Path:
    """``IL2SIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/il2sim``, else ``~/.cache/il2sim``."""
    env = os.environ.get("IL2SIM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "il2sim"


def cache_key(model: Model) -> str:
    """Hex SHA-256 of everything the generated module depends on."""
    parts = [
        "il2sim-model/1",
        model.code_hash,
        il2sim.__version__,
        numba.__version__,
        build.template_hash(),
        _GENERATOR_HASH,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compile_model(model: Model, *, cache_dir: str | os.PathLike | None = None) -> CompiledModel:
    """Generate (or reuse) and import the numba module for ``model``.

    Parameters
    ----------
    model
        A validated model from :func:`il2sim.model.load_model`.
    cache_dir
        Where ``models/il2sim_model_<key>.py`` lives; default :func:`default_cache_dir`.

    Raises
    ------
    ModelSpecError
        An equation has a constant part that is not a finite real number (e.g. ``log(0)``).
    """
    start = time.perf_counter()
    key = cache_key(model)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "models" / f"il2sim_model_{key[:20]}.py"
    cold = not _cached_file_ok(path, key)
    if cold:
        body = generate_source(model)
        digest = hashlib.sha256(build.module_source(body).encode()).hexdigest()
        build.write_module(path, f"{_KEY_PREFIX}{key} sha256={digest}\n" + body)
    module = build.import_module(path)
    return CompiledModel(model, module, key, path, cold, time.perf_counter() - start)


def _cached_file_ok(path: Path, key: str) -> bool:
    """True if ``path`` holds a complete module generated for ``key``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    match = _KEY_LINE.search(text)
    if match is None or match.group(1) != key:
        return False
    rest = text[: match.start()] + text[match.end():]
    return hashlib.sha256(rest.encode()).hexdigest() == match.group(2)


# ---------------------------------------------------------------------------------------------
# Source generation


class _Printer(PythonCodePrinter):
    """Python/numba printer: symbols map to ``p[i]``/``y[i]``/locals; floats round-trip."""

    def __init__(self, names: dict[str, str]):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self._names = names

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return self._names.get(expr.name, expr.name)

    def _print_Float(self, expr: sympy.Float) -> str:
        return repr(float(expr))

    def _print_Hill(self, expr: Hill) -> str:
        x, e, n = (self.parenthesize(a, precedence(sympy.Pow(a, 2, evaluate=False)) + 1) for a in expr.args)
        return f"({x}**{n}/({e}**{n} + {x}**{n}))"


class _Generator:
    def __init__(self, model: Model):
        self.model = model
        self.t = sympy.Symbol("t", real=True)
        self.p = [sympy.Symbol(f"_p{i}", real=True) for i in range(len(model.parameters))]
        self.y = [sympy.Symbol(f"_y{i}", real=True) for i in range(len(model.states))]
        self.o = [sympy.Symbol(f"_o{k}", real=True) for k in range(len(model.outputs))]
        self.symbols: dict[str, sympy.Symbol] = {"t": self.t}
        self.symbols.update(zip(model.parameter_names, self.p))
        self.symbols.update(zip(model.state_names, self.y))
        self.symbols.update(zip(model.output_names, self.o))
        names = {s.name: f"p[{i}]" for i, s in enumerate(self.p)}
        names.update({s.name: f"y[{i}]" for i, s in enumerate(self.y)})
        self.printer = _Printer(names)
        self.output_exprs = [self.convert(o.expr) for o in model.outputs]
        self.ode_exprs = [self.convert(model.odes[s]) for s in model.state_names]
        self.o_index = {s: k for k, s in enumerate(self.o)}

    def convert(self, expr: Expr) -> sympy.Expr:
        e = to_sympy(expr, self.symbols)
        if e.has(sympy.zoo, sympy.nan, sympy.oo, sympy.I):
            raise ModelSpecError([f"{expr.where}: {expr.text!r} has a part that is not a finite real number"])
        return e

    def pr(self, e: sympy.Expr) -> str:
        return self.printer.doprint(e)

    def needed_outputs(self, exprs: list[sympy.Expr]) -> list[int]:
        """Indices of outputs that ``exprs`` use, directly or through other outputs, in order."""
        need: set[int] = set()
        stack = [s for e in exprs for s in e.free_symbols if s in self.o_index]
        while stack:
            k = self.o_index[stack.pop()]
            if k not in need:
                need.add(k)
                stack += [s for s in self.output_exprs[k].free_symbols if s in self.o_index]
        return sorted(need)  # model.outputs is topologically ordered

    def output_lines(self, ks: list[int]) -> list[str]:
        return [f"_o{k} = {self.pr(self.output_exprs[k])}  # {self.model.outputs[k].name}" for k in ks]

    def assignments(self, targets: list[str], exprs: list[sympy.Expr]) -> list[str]:
        """``target = expr`` lines after common subexpression elimination."""
        if not exprs:
            return []
        subs, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("_x"), order="none")
        lines = [f"{s} = {self.pr(v)}" for s, v in subs]
        lines += [f"{tgt} = {self.pr(e)}" for tgt, e in zip(targets, reduced)]
        return lines

    def jacobian(self) -> tuple[list[str], list[sympy.Expr]]:
        """Non-zero entries of df/dy by the chain rule through the outputs."""
        ys = set(self.y)
        dout: dict[int, dict[int, sympy.Expr]] = {}  # output k -> {state j: do_k/dy_j}
        for k in self.needed_outputs(self.ode_exprs):
            dout[k] = self._total_derivatives(self.output_exprs[k], ys, dout)
        targets, entries = [], []
        for i, f in enumerate(self.ode_exprs):
            for j, d in sorted(self._total_derivatives(f, ys, dout).items()):
                targets.append(f"J[{i}, {j}]")
                entries.append(d)
        return targets, entries

    def _total_derivatives(self, e: sympy.Expr, ys: set, dout: dict) -> dict[int, sympy.Expr]:
        free = e.free_symbols
        out: dict[int, sympy.Expr] = {}
        for j, yj in enumerate(self.y):
            if yj in free:
                out[j] = _diff(e, yj)
        for s in free:
            k = self.o_index.get(s)
            if k is None or not dout.get(k):
                continue
            de = _diff(e, s)
            for j, dk in dout[k].items():
                out[j] = out.get(j, sympy.S.Zero) + de * dk
        return {j: d for j, d in out.items() if d != 0}

    def source(self) -> str:
        m = self.model
        n, npar, nout = len(m.states), len(m.parameters), len(m.outputs)
        # Free text from the files (model name, units) goes into comments through ascii(),
        # which escapes newlines, so it can never become code.
        lines = [f"# model {ascii(m.name)}: {n} states, {npar} parameters, {nout} outputs"]
        lines += [f"#   y[{i}] {s.name} {ascii(s.unit)}" for i, s in enumerate(m.states)]
        lines += [f"#   p[{i}] {p.name} {ascii(p.unit)}" for i, p in enumerate(m.parameters)]
        lines += [f"#   o[{k}] {o.name} {ascii(o.unit)}" for k, o in enumerate(m.outputs)]
        uses_t = any(self.t in e.free_symbols for e in self.ode_exprs) or any(
            self.t in self.output_exprs[k].free_symbols for k in self.needed_outputs(self.ode_exprs)
        )
        lines += [
            f"N_STATES = {n}",
            f"N_PARAMS = {npar}",
            f"N_OUTPUTS = {nout}",
            f"RHS_DEPENDS_ON_TIME = {uses_t}",
            "",
        ]
        rhs_needed = self.needed_outputs(self.ode_exprs)
        lines += self.function(
            "rhs(t, y, p, dy)",
            self.output_lines(rhs_needed)
            + self.assignments([f"dy[{i}]" for i in range(n)], self.ode_exprs),
        )
        targets, entries = self.jacobian()
        lines += self.function(
            "jac(t, y, p, J)",
            ["for _i in range(N_STATES):", "    for _j in range(N_STATES):", "        J[_i, _j] = 0.0"]
            + self.output_lines(self.needed_outputs(entries))
            + self.assignments(targets, entries),
        )
        lines += self.function(
            "outputs(t, y, p, o)",
            self.output_lines(list(range(nout))) + [f"o[{k}] = _o{k}" for k in range(nout)],
        )
        initial = [self.convert(s.initial) for s in m.states]
        lines += self.function("initial(p, y0)", self.assignments([f"y0[{i}]" for i in range(n)], initial))
        mods = []
        for i, s in enumerate(m.states):
            mods.append(f"f[{i}] = {self.pr(self.convert(s.bioavailability)) if s.bioavailability else '1.0'}")
            mods.append(f"lag[{i}] = {self.pr(self.convert(s.lag)) if s.lag else '0.0'}")
        lines += self.function("dose_modifiers(p, f, lag)", mods)
        return "\n".join(lines) + "\n"

    @staticmethod
    def function(signature: str, body: list[str]) -> list[str]:
        return ["@kernel", f"def {signature}:"] + [f"    {b}" for b in body or ["pass"]] + ["", ""]


def _diff(e: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    """``de/dx``, with ``n*x**n/x`` folded to ``n*x**(n - 1)`` (finite at ``x = 0``)."""
    d = sympy.diff(e, x)
    if any(not p.exp.is_Number for p in d.atoms(sympy.Pow)):
        d = sympy.powsimp(d, combine="exp")
    return d


def generate_source(model: Model) -> str:
    """The model section of the generated module (without the key line)."""
    return _Generator(model).source()
