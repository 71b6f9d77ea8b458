"""The sympy form of a parsed expression (:mod:`il2sim._expr`), for the code generator.

Kept apart from the parser so that loading models and configs, and running a model whose
generated code is cached, never imports sympy (a quarter of a second of every start).
"""

from __future__ import annotations

import math
from typing import Mapping

import sympy

from ._expr import MAX_EXPONENT, BinOp, Compare, Expr, Name, Neg, Node, Num
from .errors import ExpressionError

__all__ = ["to_sympy", "Hill"]


def to_sympy(expr: Expr, symbols: Mapping[str, sympy.Expr]) -> sympy.Expr:
    """Build the sympy form of ``expr``; ``symbols`` maps every name it uses to a sympy object.

    ``where`` becomes ``Piecewise``, ``min``/``max`` become ``Min``/``Max``, a comparison used
    as a value becomes ``Piecewise((1.0, rel), (0.0, True))`` and ``hill`` is expanded.
    """
    return _Sympy(expr, symbols).build(expr.root)


_REL = {
    "<": sympy.StrictLessThan,
    "<=": sympy.LessThan,
    ">": sympy.StrictGreaterThan,
    ">=": sympy.GreaterThan,
    "==": sympy.Eq,
    "!=": sympy.Ne,
}


class _Sympy:
    def __init__(self, expr: Expr, symbols: Mapping[str, sympy.Expr]):
        self.expr = expr
        self.symbols = symbols

    def power(self, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
        if exponent.is_Number and abs(float(exponent)) > MAX_EXPONENT:
            # Only reachable through arithmetic on literals, e.g. x**(2*40).
            raise ExpressionError(
                f"{self.expr.where}: exponent {float(exponent):g} is too large "
                f"(|exponent| must be <= {MAX_EXPONENT})"
            )
        if base.is_Number and exponent.is_Number:
            try:
                value = math.pow(float(base), float(exponent))
            except (OverflowError, ValueError, ZeroDivisionError):
                value = math.nan
            if not math.isfinite(value):
                raise ExpressionError(
                    f"{self.expr.where}: constant {base}**{exponent} is not a finite real number"
                )
        return sympy.Pow(base, exponent)

    def condition(self, node: Node) -> sympy.Basic:
        try:
            if isinstance(node, Compare):
                return _REL[node.op](self.build(node.left), self.build(node.right))
            return sympy.Ne(self.build(node), 0)
        except TypeError:  # e.g. log(0) < 1: sympy cannot order zoo/nan
            raise self.not_finite() from None

    def piecewise(self, *pairs) -> sympy.Expr:
        try:
            return sympy.Piecewise(*pairs)
        except TypeError:  # folding a condition met nan, e.g. 0 < hill(0, (0 < x), 1): for
            # x <= 0 the Hill term is 0/0, and sympy cannot order nan
            raise self.not_finite() from None

    def not_finite(self) -> ExpressionError:
        return ExpressionError(
            f"{self.expr.where}: comparison with a constant that is not a finite real number"
        )

    def build(self, node: Node) -> sympy.Expr:
        if isinstance(node, Num):
            return sympy.Integer(node.value) if isinstance(node.value, int) else sympy.Float(node.value)
        if isinstance(node, Name):
            try:
                return self.symbols[node.id]
            except KeyError:
                raise ExpressionError(
                    f"{self.expr.where}: unknown symbol {node.id!r}"
                ) from None
        if isinstance(node, Neg):
            return -self.build(node.operand)
        if isinstance(node, BinOp):
            # Fold the left spine iteratively (see _Checker.check): long sums are not deep.
            spine: list[BinOp] = []
            while isinstance(node, BinOp) and node.op != "**":
                spine.append(node)
                node = node.left
            if isinstance(node, BinOp):
                acc = self.power(self.build(node.left), self.build(node.right))
            else:
                acc = self.build(node)
            for link in reversed(spine):
                b = self.build(link.right)
                if link.op == "+":
                    acc = acc + b
                elif link.op == "-":
                    acc = acc - b
                elif link.op == "*":
                    acc = acc * b
                else:
                    if b.is_zero:
                        raise ExpressionError(f"{self.expr.where}: division by zero")
                    acc = acc / b
            return acc
        if isinstance(node, Compare):
            return self.piecewise((sympy.Float(1.0), self.condition(node)), (sympy.Float(0.0), True))
        f, args = node.func, node.args
        if f == "where":
            return self.piecewise(
                (self.build(args[1]), self.condition(args[0])), (self.build(args[2]), True)
            )
        built = [self.build(a) for a in args]
        if f == "exp":
            return sympy.exp(built[0])
        if f == "log":
            return sympy.log(built[0])
        if f == "log10":
            return sympy.log(built[0]) / sympy.log(10)
        if f == "sqrt":
            return sympy.sqrt(built[0])
        if f == "abs":
            return sympy.Abs(built[0])
        if f in ("min", "max"):
            try:
                return (sympy.Min if f == "min" else sympy.Max)(*built)
            except (ValueError, TypeError):  # e.g. min(log(0), 1): sympy cannot order zoo/nan
                raise ExpressionError(
                    f"{self.expr.where}: {f}() of a constant that is not a finite real number"
                ) from None
        x, ec50, n = built  # hill
        self.power(x, n), self.power(ec50, n)  # bounds checks only
        return Hill(x, ec50, n)


class Hill(sympy.Function):
    """``Hill(x, ec50, n) = x**n / (ec50**n + x**n)``, kept whole so its derivatives are clean.

    sympy would differentiate the expanded form ``x**n`` as ``n*x**n/x``, which is ``0/0`` at
    ``x = 0`` (drug-free start) even where the derivative is finite. The hand-written
    derivatives below use ``x**(n - 1)`` instead. ``sympy.expand_func`` gives the plain form.
    """

    nargs = 3

    def _numeric(cls, x, ec50, n):  # sympy's evaluation hook (bound below as ``eval``)
        if x.is_Number and ec50.is_Number and n.is_Number:
            return x**n / (ec50**n + x**n)
        return None

    eval = classmethod(_numeric)

    def _eval_expand_func(self, **hints):
        x, ec50, n = self.args
        return x**n / (ec50**n + x**n)

    def fdiff(self, argindex=1):
        x, e, n = self.args
        den = (e**n + x**n) ** 2
        if argindex == 1:
            return n * x ** (n - 1) * e**n / den
        if argindex == 2:
            return -n * e ** (n - 1) * x**n / den
        if argindex == 3:
            return x**n * e**n * (sympy.log(x) - sympy.log(e)) / den
        raise sympy.core.function.ArgumentIndexError(self, argindex)
