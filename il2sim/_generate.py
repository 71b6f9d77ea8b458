"""The model section of a generated numba module: model functions with an analytic Jacobian.

The generated model functions have fixed signatures over flat float64 arrays, so one compiled
module serves every parameter set (no closures, no recompiles per subject):

- ``rhs(t, y, p, dy)``: ``dy[i] = f_i(t, y, p)``;
- ``jac(t, y, p, J)``: ``J[i, j] = df_i/dy_j``, every entry written (zeros first);
- ``jac_nz(t, y, p, Jv)``: the structural non-zeros only, ``Jv[k] = J[JAC_ROWS[k], JAC_COLS[k]]``;
- ``lu_factor_nz(Jv, c, Wv)`` and ``lu_solve_nz(Wv, b)``: the Rosenbrock matrix
  ``W = c*I - J`` factorised without pivoting, in a fill-reducing order (``LU_ORDER``) found
  at generation time, as straight-line scalar code over the non-zeros of L and U
  (``LU_NNZ`` values in ``Wv``); the factorisation returns 1 instead of using a pivot that is
  not finite, zero or below ``LU_PIVOT_THRESHOLD`` times the largest entry under it, and the
  solver then falls back to its dense pivoted LU; ``w_dense_nz(Jv, c, W)`` writes that dense
  ``W``. Generated only while the factorisation stays small (``HAS_SPARSE_LU``);
- ``outputs(t, y, p, o)``: ``o[k]`` = output ``k`` (``model.outputs`` order);
- ``initial(p, y0)``: initial state from the parameters;
- ``dose_modifiers(p, f, lag)``: per state, bioavailability (1 if not declared) and lag time
  (0 if not declared) applied to doses into that state;
- constants ``N_STATES``, ``N_PARAMS``, ``N_OUTPUTS``, ``RHS_DEPENDS_ON_TIME``,
  ``HAS_SPARSE_LU``, ``JAC_NNZ``, ``JAC_ROWS``, ``JAC_COLS``, ``LU_ORDER``, ``LU_NNZ``.

Outputs are not substituted into the equations: each function first computes the outputs it
needs as locals, in dependency order, and the Jacobian applies the chain rule through them
(``df/dy + df/do . do/dy``), so deep output chains do not blow up expression size. Common
subexpressions are shared with ``sympy.cse``. The code is plain scalar arithmetic with
``math.*`` calls and conditional expressions; nothing is allocated.

The module around this section (header, solver kernels, cache key and file) is
:mod:`il2sim._codegen`'s.
"""

from __future__ import annotations

import re

import sympy
from sympy.printing.precedence import precedence
from sympy.printing.pycode import PythonCodePrinter

from ._expr import Expr
from ._expr_sympy import Hill, to_sympy
from .errors import ModelSpecError
from .model import Model

__all__ = ["generate_source", "lanes_for"]


class _Printer(PythonCodePrinter):
    """Python/numba printer: symbols map to ``p[i]``/``y[i]``/locals; floats round-trip."""

    def __init__(self, names: dict[str, str]):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self._names = names
        # In the solver's kernel functions a power with a run-time exponent (a Hill
        # coefficient) goes through ``_powp``, which multiplies for n = 1..4 instead of
        # calling pow (about half the cost of a right-hand side with one Hill term).
        self.fast_pow = False

    def _power(self, x: str, n: sympy.Expr, n_text: str) -> str:
        if self.fast_pow and not n.is_Number:
            return f"_powp({x}, {n_text})"
        return f"{x}**{n_text}"

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        if self.fast_pow and not expr.exp.is_Number:
            return f"_powp({self._print(expr.base)}, {self._print(expr.exp)})"
        if expr.exp.is_Integer and expr.exp < -1:
            # 1/x**k, not x**-k: numba raises ZeroDivisionError for 0.0**-k whatever the error
            # model (inf is what the solver's checks expect), and the raise keeps a loop over
            # lanes from being vectorised. Same number: numba computes x**-k as 1/x**k.
            return "1/" + self._print(sympy.Pow(expr.base, -expr.exp, evaluate=False))
        return super()._print_Pow(expr, rational=rational)

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return self._names.get(expr.name, expr.name)

    def _print_Float(self, expr: sympy.Float) -> str:
        return repr(float(expr))

    def _print_Hill(self, expr: Hill) -> str:
        x, e, n = (self.parenthesize(a, precedence(sympy.Pow(a, 2, evaluate=False)) + 1) for a in expr.args)
        xn, en = self._power(x, expr.args[2], n), self._power(e, expr.args[2], n)
        return f"({xn}/({en} + {xn}))"


class HillPow(sympy.Function):
    """``Hill(x, ec50, n)`` with ``ec50**n`` given (a hoisted parameter-only value), in the
    kernel functions only (never differentiated); ``kernel_body`` writes it out as
    ``x**n/(en + x**n)`` (_expand_hill_pow), the same arithmetic as ``Hill`` once ``en`` is
    computed, before anything is printed."""

    nargs = 3


def _expand_hill_pow(e: sympy.Basic) -> sympy.Basic:
    """``HillPow(x, en, n)`` written out as ``x**n / (en + x**n)``, so that common subexpression
    elimination computes ``x**n`` once."""
    return e.replace(HillPow, lambda x, en, n: x**n / (en + x**n)) if e.has(HillPow) else e


class _Generator:
    def __init__(self, model: Model, *, sparse_lu: bool = True):
        self.model = model
        self.sparse_lu = sparse_lu
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
        self._pset = set(self.p)
        self.derived: dict[sympy.Expr, sympy.Symbol] = {}  # parameter-only expr -> _q<k>

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

    def output_lines(self, ks: list[int], exprs: list[sympy.Expr] | None = None) -> list[str]:
        exprs = self.output_exprs if exprs is None else exprs
        return [f"_o{k} = {self.pr(exprs[k])}  # {self.model.outputs[k].name}" for k in ks]

    # --- parameter-only subexpressions, computed once per subject ---------------------------

    def hoist(self, e: sympy.Basic) -> sympy.Basic:
        """``e`` with every compound parameter-only part replaced by a derived symbol ``_q<k>``.

        The solver calls the right-hand side and Jacobian thousands of times per subject
        with the same parameters; divisions, powers and functions of parameters alone (such
        as ``Q/V1`` or ``EC50**n`` in a Hill term) are computed once by ``derive`` instead.
        In a sum or product only the parameter-only factors are grouped (``p5*y2/p3`` ->
        ``_q*y2``); conditions of piecewise expressions are left alone.
        """
        pset = self._pset
        if e.is_Atom or not isinstance(e, sympy.Basic):
            return e
        if isinstance(e, sympy.Expr) and e.free_symbols and e.free_symbols <= pset:
            return self._derived_symbol(e) if _costly(e) else e
        if isinstance(e, Hill):
            x, ec50, n = e.args
            if ec50.free_symbols <= pset and n.free_symbols <= pset:
                en = ec50**n
                en = self._derived_symbol(en) if en.free_symbols and _costly(en) else en
                return HillPow(self.hoist(x), en, n)
        if e.is_Add or e.is_Mul:
            fixed = [a for a in e.args if a.free_symbols <= pset]
            rest = [self.hoist(a) for a in e.args if not a.free_symbols <= pset]
            group = e.func(*fixed) if fixed else None
            if group is not None and group.free_symbols and _costly(group):
                return e.func(self._derived_symbol(group), *rest)
            return e.func(*fixed, *rest)
        return e.func(*[self.hoist(a) for a in e.args])

    def _derived_symbol(self, e: sympy.Expr) -> sympy.Symbol:
        sym = self.derived.get(e)
        if sym is None:
            k = len(self.derived)
            sym = sympy.Symbol(f"_q{k}", real=True)
            self.derived[e] = sym
            self.printer._names[sym.name] = f"p[{len(self.p) + k}]"
        return sym

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
        jac_lines = self.output_lines(self.needed_outputs(entries)) + self.assignments(
            [f"Jv[{k}]" for k in range(len(targets))], entries
        )
        sla, lanes = _sparse_linear_algebra(n, [_entry_position(tgt) for tgt in targets], jac_lines,
                                            self.sparse_lu)
        lines += sla
        lines += self.kernel_functions(rhs_needed, targets, entries, lanes)
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

    def kernel_functions(self, rhs_needed: list[int], targets: list[str],
                         entries: list[sympy.Expr], lanes: int = 0) -> list[str]:
        """``derive``, ``rhs_k``, ``jac_k``, ``jac_nz_k``: what the solver kernels call.

        The same functions as ``rhs``/``jac``/``jac_nz``, over the parameter vector extended by
        ``N_DERIVED`` values that ``derive(p)`` fills (``p[N_PARAMS + k]``) from the
        parameters alone; the public functions keep plain parameter vectors.
        """
        jac_needed = self.needed_outputs(entries)
        outs = list(self.output_exprs)
        for k in sorted(set(rhs_needed) | set(jac_needed)):
            outs[k] = self.hoist(outs[k])
        odes = [self.hoist(e) for e in self.ode_exprs]
        jac_entries = [self.hoist(e) for e in entries]
        derived = list(self.derived)
        npar = len(self.p)
        lines = ["HAS_DERIVED = True", f"N_DERIVED = {len(derived)}", ""]
        lines += _POWP
        lines += self.function(
            "derive(p)", self.assignments([f"p[{npar + k}]" for k in range(len(derived))], derived)
        )
        self.printer.fast_pow = True
        rhs_body = self.kernel_body(rhs_needed, outs, [f"dy[{i}]" for i in range(len(self.y))], odes)
        lines += self.function("rhs_k(t, y, p, dy)", rhs_body)
        lines += self.function(
            "jac_k(t, y, p, J)",
            ["for _i in range(N_STATES):", "    for _j in range(N_STATES):", "        J[_i, _j] = 0.0"]
            + self.kernel_body(jac_needed, outs, targets, jac_entries),
        )
        jac_nz_body = self.kernel_body(jac_needed, outs, [f"Jv[{k}]" for k in range(len(targets))],
                                       jac_entries)
        lines += self.function("jac_nz_k(t, y, p, Jv)", jac_nz_body)
        if lanes:
            # In a loop over lanes LLVM turns _powp's branches into selects and calls the scalar
            # pow for every lane (most of rhs_L's time). Where every run-time exponent is a
            # parameter, the lane functions use _powi (no pow; exact for exponents 0..4) and
            # LANE_POW_EXPONENTS lists those parameters: solve_cohort takes these lane functions
            # for cohorts whose values there are all 0..4 (_lane_exponents_ok).
            # Other cohorts take rhs_Lp/jac_nz_Lp (with _powp) through a second copy of the lane
            # driver (build.pow_lane_source), compiled only when such a cohort first runs.
            exponents = sorted(set(_powp_exponents(rhs_body + jac_nz_body)))
            plain = all(re.fullmatch(r"p\[\d+\]", e) for e in exponents)
            powf = "_powi" if plain else "_powp"
            lines += _lane_version("rhs_L(t, y, p, dy)", rhs_body, lanes, ("y", "p", "dy"), ("t",), powf=powf)
            lines += _lane_version("jac_nz_L(t, y, p, Jv)", jac_nz_body, lanes, ("y", "p", "Jv"), ("t",),
                                   powf=powf)
            if exponents and plain:
                lines += _lane_version("rhs_Lp(t, y, p, dy)", rhs_body, lanes, ("y", "p", "dy"), ("t",))
                lines += _lane_version("jac_nz_Lp(t, y, p, Jv)", jac_nz_body, lanes, ("y", "p", "Jv"), ("t",))
            else:
                lines += ["rhs_Lp = rhs_L", "jac_nz_Lp = jac_nz_L"]
            indices = tuple(sorted(int(e[2:-1]) for e in exponents)) if plain else ()
            lines += [f"LANE_POW_EXPONENTS = {indices!r}", "", ""]
        self.printer.fast_pow = False
        return lines

    def kernel_body(self, needed: list[int], outs: list[sympy.Expr], targets: list[str],
                    exprs: list[sympy.Expr]) -> list[str]:
        """The outputs ``needed`` (``_o<k>`` from ``outs``), then ``target = expr`` lines, with
        the common subexpressions of all of them shared (``sympy.cse`` over outputs and
        targets together, each shared value computed just before its first use) and every
        Hill term's ``x**n`` computed once: in the library's right-hand side the same power
        of the free IL-2 concentration fed six Hill terms twice each, and each costs a copy of
        ``_powp`` inlined (numba's compile time grows with the code)."""
        names = [f"_o{k}" for k in needed] + list(targets)
        notes = [f"  # {self.model.outputs[k].name}" for k in needed] + [""] * len(targets)
        full = [_expand_hill_pow(outs[k]) for k in needed] + [_expand_hill_pow(e) for e in exprs]
        subs, reduced = sympy.cse(full, symbols=sympy.numbered_symbols("_x"), order="none")
        value = dict(subs)
        rank = {sym: i for i, (sym, _) in enumerate(subs)}
        defined = set(self.o) - {self.o[k] for k in needed}  # outputs this body does not compute
        lines = []
        for name, e, note in zip(names, reduced, notes):
            todo, stack = set(), [x for x in e.free_symbols if x in value]
            while stack:  # the shared values this line needs, and the ones they need
                x = stack.pop()
                if x not in todo and x not in defined:
                    todo.add(x)
                    stack.extend(d for d in value[x].free_symbols if d in value)
            for x in sorted(todo, key=rank.__getitem__):
                if any(o in value[x].free_symbols and o not in defined for o in self.o):
                    raise RuntimeError(f"code generator: {x} = {value[x]} needs an output not yet computed")
                lines.append(f"{x} = {self.pr(value[x])}")
                defined.add(x)
            lines.append(f"{name} = {self.pr(e)}{note}")
            if name.startswith("_o"):
                defined.add(self.o[int(name[2:])])
        return lines

    @staticmethod
    def function(signature: str, body: list[str]) -> list[str]:
        return ["@kernel", f"def {signature}:"] + [f"    {b}" for b in body or ["pass"]] + ["", ""]


# x**n for a run-time exponent n (a Hill coefficient, fixed per subject, so the branch is always
# predicted): products for n = 1, 2, 3, 4, the exponents models use, 1 for n = 0 (the
# Jacobian's x**(n - 1) at n = 1), else pow. x*x is the correctly rounded square, as pow's;
# x*x*x and (x*x)**2 are within 2 ulp of it; pow(x, 0) is 1 for every x, NaN included.
# _powi is _powp for n in 0..4 only, without the pow, for the lane functions (see
# LANE_POW_EXPONENTS); _powi_ok(n) says whether n is such an exponent.
_POWP = [
    "@kernel",
    "def _powp(x, n):",
    "    if n == 2.0:",
    "        return x * x",
    "    if n == 1.0:",
    "        return x",
    "    if n == 3.0:",
    "        return x * x * x",
    "    if n == 4.0:",
    "        x2 = x * x",
    "        return x2 * x2",
    "    if n == 0.0:",
    "        return 1.0",
    "    return x**n",
    "",
    "",
    "@kernel_inline",
    "def _powi(x, n):",
    "    x2 = x * x",
    "    if n == 2.0:",
    "        return x2",
    "    if n == 1.0:",
    "        return x",
    "    if n == 3.0:",
    "        return x2 * x",
    "    if n == 4.0:",
    "        return x2 * x2",
    "    return 1.0",
    "",
    "",
    "@kernel_inline",
    "def _powi_ok(n):",
    "    return n == 0.0 or n == 1.0 or n == 2.0 or n == 3.0 or n == 4.0",
    "",
    "",
]


# ---------------------------------------------------------------------------------------------
# Sparse linear algebra for the Rosenbrock matrix W = c*I - J

# Threshold pivoting (as in UMFPACK/MA48): a pivot is used only if it is at least this share of
# the largest entry below it in its column, so every multiplier is at most 1/threshold and the
# growth of the factors stays bounded; otherwise the step falls back to dense partial pivoting.
# A pivot whose row has nothing right of it is exempt: its multipliers update no entry, so
# they cannot grow the factors (|L||U| keeps the size of the original entries there).
# 0.01 is within the range sparse direct solvers use (Kundert's Sparse 1.3: default 0.001, 0.01
# to 0.1 for matrices without a large diagonal; W = c*I - J has one at all but large steps).
# At 0.1 the seed-trial library refused about 50 pivots per subject (of 61,000 steps), each a
# dense fallback, and that fallback cost 6 s of compile time; at 0.01 it refused none, with the
# same steps (32 subjects). It still refuses some at very long steps: after progression, with
# no more doses, half the seed trial's subjects refuse 29-35 of about 1,800 factorisations
# (the Ac pivot at steps of hundreds of hours), so the lane path keeps its dense fallback.
LU_PIVOT_THRESHOLD = 0.01
# Straight-line code grows with the factorisation; past this many multiply-adds (a large, dense
# Jacobian) the generated module keeps only the dense LU (HAS_SPARSE_LU = False).
_MAX_SPARSE_LU_OPS = 20_000
_DBL_MAX = "1.7976931348623157e308"


def _entry_position(target: str) -> tuple[int, int]:
    i, j = re.fullmatch(r"J\[(\d+), (\d+)\]", target).groups()
    return int(i), int(j)


def _symbolic_lu(n: int, pattern: set[tuple[int, int]], order: list[int]):
    """Elimination on the pattern in ``order`` (diagonal pivots): per pivot, the rows below
    and the columns right of it (in pivot order), and the count of multiply-adds (it stops
    early once that passes ``_MAX_SPARSE_LU_OPS``)."""
    pos = {k: q for q, k in enumerate(order)}
    in_row: dict[int, set[int]] = {i: {i} for i in range(n)}  # row i: its columns
    in_col: dict[int, set[int]] = {j: {j} for j in range(n)}  # column j: its rows
    for i, j in pattern:
        in_row[i].add(j)
        in_col[j].add(i)
    steps, ops = [], 0
    for k in order:
        rows = sorted((i for i in in_col[k] if pos[i] > pos[k]), key=pos.get)
        cols = sorted((j for j in in_row[k] if pos[j] > pos[k]), key=pos.get)
        steps.append((k, rows, cols))
        for i in rows:
            in_row[i].update(cols)
            for j in cols:
                in_col[j].add(i)
        ops += len(rows) * (len(cols) + 1)
        if ops > _MAX_SPARSE_LU_OPS:
            break
    return steps, ops


def _markowitz_order(n: int, pattern: set[tuple[int, int]]) -> list[int]:
    """Greedy diagonal-pivot order: at each step the remaining state whose elimination costs
    the fewest multiply-adds (Markowitz count (r - 1)(c - 1)), ties to the lowest index."""
    struct = set(pattern) | {(i, i) for i in range(n)}
    rows: dict[int, set[int]] = {i: set() for i in range(n)}  # row i: its columns
    cols: dict[int, set[int]] = {j: set() for j in range(n)}  # column j: its rows
    for i, j in struct:
        rows[i].add(j)
        cols[j].add(i)
    remaining, order = set(range(n)), []
    while remaining:
        k = min(remaining, key=lambda k: ((len(rows[k]) - 1) * (len(cols[k]) - 1), k))
        order.append(k)
        remaining.discard(k)
        below = [i for i in cols[k] if i != k]
        right = [j for j in rows[k] if j != k]
        for i in below:
            rows[i].discard(k)
            rows[i].update(right)
            for j in right:
                cols[j].add(i)
        for j in right:
            cols[j].discard(k)
    return order


def _sparse_linear_algebra(n: int, positions: list[tuple[int, int]], jac_lines: list[str],
                           enabled: bool = True) -> list[str]:
    """``jac_nz``, ``lu_factor_nz``, ``lu_solve_nz``, ``w_dense_nz`` and their constants.

    The pivot order is the Markowitz order if it needs fewer operations than the natural one.
    Every value lives in a local ``w<i>_<j>`` (original state indices) while factorising, so
    the factor is one pass of register arithmetic; ``Wv`` receives, pivot by pivot, the
    reciprocal pivot, the multipliers of L in its column and its row of U.
    """
    pattern = set(positions)
    order = list(range(n))
    steps, ops = _symbolic_lu(n, pattern, order)
    markowitz = _markowitz_order(n, pattern)
    m_steps, m_ops = _symbolic_lu(n, pattern, markowitz)
    if m_ops < ops:
        order, steps, ops = markowitz, m_steps, m_ops
    lines = [
        f"JAC_NNZ = {max(len(positions), 1)}",
        f"JAC_ROWS = {tuple(i for i, _ in positions)!r}",
        f"JAC_COLS = {tuple(j for _, j in positions)!r}",
    ]
    lines += _Generator.function("jac_nz(t, y, p, Jv)", jac_lines)
    if not enabled or n == 0 or ops > _MAX_SPARSE_LU_OPS:
        return lines + ["HAS_SPARSE_LU = False", "", ""], 0

    def w(i: int, j: int) -> str:
        return f"w{i}_{j}"

    slot: dict[str, int] = {}

    def store(name: str) -> str:
        slot.setdefault(name, len(slot))
        return f"Wv[{slot[name]}]"

    jac_index = {ij: k for k, ij in enumerate(positions)}
    factor = []
    for i, j in sorted(set(pattern) | {(i, i) for i in range(n)}):
        k = jac_index.get((i, j))
        if i == j:
            factor.append(f"{w(i, j)} = c - Jv[{k}]" if k is not None else f"{w(i, j)} = c")
        else:
            factor.append(f"{w(i, j)} = -Jv[{k}]")
    have = set(pattern) | {(i, i) for i in range(n)}
    stores = []
    for k, rows, cols in steps:
        d = w(k, k)
        guard = f"0.0 < abs({d}) <= {_DBL_MAX}"
        if rows and cols:  # without a row right of the pivot, multipliers update nothing
            factor.append(f"m = abs({w(rows[0], k)})")
            factor += [f"m = max(m, abs({w(i, k)}))" for i in rows[1:]]
            guard += f" and abs({d}) >= {LU_PIVOT_THRESHOLD!r} * m"
        factor.append(f"if not ({guard}):")
        factor.append("    return 1")
        factor.append(f"r{k} = 1.0 / {d}")
        stores.append(f"{store(f'r{k}')} = r{k}")
        for i in rows:
            factor.append(f"{w(i, k)} = {w(i, k)} * r{k}")
            stores.append(f"{store(w(i, k))} = {w(i, k)}")
            for j in cols:
                if (i, j) in have:
                    factor.append(f"{w(i, j)} = {w(i, j)} - {w(i, k)} * {w(k, j)}")
                else:
                    factor.append(f"{w(i, j)} = -({w(i, k)} * {w(k, j)})")
                    have.add((i, j))
        stores += [f"{store(w(k, j))} = {w(k, j)}" for j in cols]
    factor += stores + ["return 0"]
    lines += ["HAS_SPARSE_LU = True", f"LU_ORDER = {tuple(order)!r}", f"LU_NNZ = {len(slot)}",
              f"LU_PIVOT_THRESHOLD = {LU_PIVOT_THRESHOLD!r}", ""]
    lines += _Generator.function("lu_factor_nz(Jv, c, Wv)", factor)

    # solve: forward with unit L in pivot order, backward with U, then write back
    lower: dict[int, list[int]] = {i: [] for i in range(n)}  # row i: pivots k with l_ik
    for k, rows, _ in steps:
        for i in rows:
            lower[i].append(k)
    solve = []
    for k, _, _ in steps:
        terms = "".join(f" - {store(w(k, j))} * x{j}" for j in lower[k])
        solve.append(f"x{k} = b[{k}]{terms}")
    for k, _, cols in reversed(steps):
        terms = "".join(f" - {store(w(k, j))} * x{j}" for j in cols)
        solve.append(f"x{k} = (x{k}{terms}) * {store(f'r{k}')}" if terms else f"x{k} = x{k} * {store(f'r{k}')}")
    solve += [f"b[{k}] = x{k}" for k in range(n)]
    lines += _Generator.function("lu_solve_nz(Wv, b)", solve)
    lanes = lanes_for(n, len(positions), len(slot))
    lines += _lane_version("lu_factor_L(Jv, c, Wv, code)", factor, lanes, ("Jv", "Wv"), ("c",), fail=True)
    lines += _lane_version("lu_solve_L(Wv, b)", solve, lanes, ("Wv", "b"))
    lines += ["HAS_LANES = True", f"LANES = {lanes}", "", ""]

    dense = ["for _i in range(N_STATES):", "    for _j in range(N_STATES):", "        W[_i, _j] = 0.0"]
    if positions:  # a loop over the constant index tuples: numba compiles 73 stores in 0.7 s
        dense += ["for _k in range(len(JAC_ROWS)):", "    W[JAC_ROWS[_k], JAC_COLS[_k]] = -Jv[_k]"]
    dense += ["for _i in range(N_STATES):", "    W[_i, _i] += c"]
    lines += _Generator.function("w_dense_nz(Jv, c, W)", dense)
    return lines, lanes


def lanes_for(n: int, jac_nnz: int, lu_nnz: int) -> int:
    """Subjects side by side in the cohort path (the kernel template's ``_lanes_run``).

    The lane functions are loops over the lanes that LLVM turns into SIMD vectors, and it does
    so only for loops of at least 16 iterations (below that the run-time alias checks do not
    pay). 32 lanes fill the pipelines best while a lane group's work arrays stay in L2: on one
    core of the project's machine (AMD EPYC, AVX-512) the 12-state benchmark model (size
    states + Jacobian non-zeros + LU non-zeros = 69) ran at 0.94 / 0.79 / 0.84 ms per subject
    with 16 / 32 / 64 lanes, the 24-state library (size 177) at 29 / 24 / 24 ms (4 lanes, not
    vectorised: 39 ms). Models much larger than these (size > 400) take 16, an estimate: a
    lane's work arrays hold (8 + 6) * states + Jacobian and LU non-zeros values, and half the
    lanes keep a larger model's group near the same footprint."""
    size = max(n + jac_nnz + lu_nnz, 1)
    return 32 if size <= 400 else 16


def _lane_version(signature: str, body: list[str], lanes: int, arrays: tuple[str, ...],
                  scalars: tuple[str, ...] = (), fail: bool = False, powf: str = "_powp") -> list[str]:
    """The generated function ``body`` for ``lanes`` subjects at once: entry k of each array in
    ``arrays`` becomes ``[k*LANES + _l]``, each name in ``scalars`` an array ``[_l]``, inside
    one loop over the lanes. The arithmetic of each lane is the scalar function's, statement
    for statement, with run-time powers through ``powf``. ``fail``: the factorisation's
    ``return 1`` (a refused pivot) sets ``code[_l] = 1`` instead, and ``return 0`` sets 0, so
    the other lanes carry on."""
    out = ["for _l in range(LANES):"] + (["    _fail = 0"] if fail else [])
    for line in body:
        for a in arrays:
            line = re.sub(rf"\b{a}\[(\d+)\]", lambda m, a=a: f"{a}[{int(m.group(1)) * lanes} + _l]", line)
        for name in scalars:
            line = re.sub(rf"\b{name}\b(?!\[)", f"{name}[_l]", line)
        if fail:
            line = line.replace("return 1", "_fail = 1").replace("return 0", "code[_l] = _fail")
        out.append("    " + line.replace("_powp(", f"{powf}("))
    return _Generator.function(signature, out)


def _powp_exponents(lines: list[str]) -> list[str]:
    """The exponent (last argument) of every ``_powp(...)`` call in ``lines``, as text."""
    found = []
    for line in lines:
        start = line.find("_powp(")
        while start >= 0:
            depth, i, last = 0, start + len("_powp("), start + len("_powp(")
            while True:
                c = line[i]
                if c == "(":
                    depth += 1
                elif c == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif c == "," and depth == 0:
                    last = i + 1
                i += 1
            found.append(line[last:i].strip())
            start = line.find("_powp(", i)
    return found


def _costly(e: sympy.Expr) -> bool:
    """Worth computing once: more than a symbol, a number or a number times a symbol."""
    if e.is_Symbol or e.is_Number:
        return False
    if e.is_Mul and len(e.args) == 2 and e.args[0].is_Number and e.args[1].is_Symbol:
        return False
    return True


def _diff(e: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    """``de/dx``, with ``n*x**n/x`` folded to ``n*x**(n - 1)`` (finite at ``x = 0``)."""
    d = sympy.diff(e, x)
    if any(not p.exp.is_Number for p in d.atoms(sympy.Pow)):
        d = sympy.powsimp(d, combine="exp")
    return d


def generate_source(model: Model, *, sparse_lu: bool = True) -> str:
    """The model section of the generated module (without the key line).

    ``sparse_lu=False`` leaves out the straight-line LU (``HAS_SPARSE_LU = False``), so the
    stiff solver factorises the dense ``W`` with pivoting every step (a reference in tests).
    """
    return _Generator(model, sparse_lu=sparse_lu).source()
