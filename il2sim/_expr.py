"""Safe expressions for model and config files: parse, check, evaluate (their sympy form, for
the code generator, is :mod:`il2sim._expr_sympy`).

A model file is data, not code. An expression string is parsed with ``ast.parse(text,
mode="eval")`` only; the resulting tree is walked against a whitelist and rebuilt into
il2sim's own small, immutable tree (:class:`Num`, :class:`Name`, :class:`BinOp`, :class:`Neg`,
:class:`Compare`, :class:`Call`). Nothing from the text is ever evaluated, and sympy
expressions are built node by node from the checked tree (never from a string).

Grammar
-------
- finite numbers (``1``, ``2.5``, ``1e-3``), names (ASCII identifiers; ``t`` is time in h);
- binary ``+ - * / **``, unary ``-`` and ``+``, parentheses;
- one comparison ``< <= > >= == !=`` (value 1.0 when true, else 0.0; mostly for ``where``);
- calls to ``exp log log10 sqrt abs`` (1 argument), ``min max`` (2 or more),
  ``hill(x, ec50, n) = x**n / (ec50**n + x**n)`` and ``where(cond, a, b)``.

Everything else (attributes, subscripts, strings, lambdas, comprehensions, keyword arguments,
``and``/``or``/``not``, chained comparisons, other calls, dunder or non-ASCII names) is rejected
with a message that names the file and field (the ``where`` argument) and the construct.
The work is bounded: text length, node count, nesting depth and literal exponents are capped,
so hostile input cannot make parsing, sympy or numba hang.
"""

from __future__ import annotations

import ast
import math
import unicodedata
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping, Union

from .errors import ExpressionError

__all__ = [
    "FUNCTIONS",
    "MAX_TEXT_LENGTH",
    "MAX_NODES",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "Expr",
    "parse_expr_checked",
    "evaluate",
]

#: Allowed functions and their arity (``None``: two or more arguments).
FUNCTIONS: dict[str, int | None] = {
    "exp": 1,
    "log": 1,
    "log10": 1,
    "sqrt": 1,
    "abs": 1,
    "min": None,
    "max": None,
    "hill": 3,
    "where": 3,
}

MAX_TEXT_LENGTH = 5000
MAX_NODES = 2000
MAX_DEPTH = 64
#: Largest magnitude of a numeric exponent (``x**64`` is fine, ``x**65`` is not).
MAX_EXPONENT = 64
#: Integers beyond this magnitude are stored as floats (exact in float64 up to 2**53).
_MAX_EXACT_INT = 2**53

# ---------------------------------------------------------------------------------------------
# The checked tree


@dataclass(frozen=True, slots=True)
class Num:
    value: float | int


@dataclass(frozen=True, slots=True)
class Name:
    id: str


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # one of + - * / **
    left: "Node"
    right: "Node"


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Node"


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # one of < <= > >= == !=
    left: "Node"
    right: "Node"


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple["Node", ...]


Node = Union[Num, Name, BinOp, Neg, Compare, Call]

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_REJECTED_BINOPS = {
    ast.BitXor: "'^' (bitwise xor; use ** for powers)",
    ast.FloorDiv: "'//' (floor division)",
    ast.Mod: "'%' (modulo)",
    ast.MatMult: "'@' (matrix product)",
    ast.BitAnd: "'&' (bitwise and)",
    ast.BitOr: "'|' (bitwise or)",
    ast.LShift: "'<<' (shift)",
    ast.RShift: "'>>' (shift)",
}
# Friendly names for the constructs people (or attackers) most often try.
_CONSTRUCTS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.BoolOp: "'and'/'or' (use where(...) and comparisons)",
    ast.IfExp: "'x if c else y' (use where(c, x, y))",
    ast.NamedExpr: "assignment expression ':='",
    ast.Starred: "starred argument",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.JoinedStr: "f-string",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


class Expr:
    """A checked expression: its source text, where it came from, and its tree.

    Build one with :func:`parse_expr_checked`. ``symbols`` is the set of names it uses
    (``t`` included, function names excluded).
    """

    def __init__(self, text: str, where: str, root: Node):
        self.text = text
        self.where = where
        self.root = root

    @cached_property
    def symbols(self) -> frozenset[str]:
        out: set[str] = set()
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Name):
                out.add(node.id)
            elif isinstance(node, (BinOp, Compare)):
                stack += (node.left, node.right)
            elif isinstance(node, Neg):
                stack.append(node.operand)
            elif isinstance(node, Call):
                stack += node.args
        return frozenset(out)

    @property
    def constant(self) -> float | None:
        """The value if the expression is a plain (signed) number, else ``None``."""
        node, sign = self.root, 1.0
        while isinstance(node, Neg):
            node, sign = node.operand, -sign
        return sign * float(node.value) if isinstance(node, Num) else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def __str__(self) -> str:
        return self.text


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_expr_checked(text: str | int | float, *, where: str) -> Expr:
    """Parse ``text`` into a checked :class:`Expr`; never evaluates it.

    Parameters
    ----------
    text
        The expression, e.g. ``"ka * Asc - CL / Vc * Ac"``. A plain int or float (as TOML
        gives for numbers) is accepted and must be finite.
    where
        Location used in messages, e.g. ``"models/pk.toml: [odes] Ac"``.

    Raises
    ------
    ExpressionError
        The text is not in the grammar; the message names ``where`` and the construct.
    """
    if isinstance(text, bool):
        raise ExpressionError(f"{where}: expected an expression or a number, got a boolean")
    if isinstance(text, (int, float)):
        if not math.isfinite(text):
            raise ExpressionError(f"{where}: value {text!r} is not finite")
        return Expr(repr(text), where, _number(text, where))
    if not isinstance(text, str):
        raise ExpressionError(
            f"{where}: expected an expression string or a number, got {type(text).__name__}"
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise ExpressionError(
            f"{where}: expression is {len(text)} characters long (limit {MAX_TEXT_LENGTH})"
        )
    if not text.isascii():
        # Python folds look-alike letters (NFKC) before we could see them: reject up front.
        pos, ch = next((i, c) for i, c in enumerate(text) if not c.isascii())
        raise ExpressionError(
            f"{where}: non-ASCII character {ch!r} ({unicodedata.name(ch, 'unnamed')}) at "
            f"column {pos + 1}; names and operators must be plain ASCII"
        )
    if not text.strip():
        raise ExpressionError(f"{where}: expression is empty")
    try:
        with warnings.catch_warnings():
            # The tokenizer warns about things like an invalid escape "\d" in a string (a
            # DeprecationWarning or SyntaxWarning, or a SyntaxError under -W error). Such a
            # construct is rejected below anyway; the warning must not leak to the user.
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        if "Exceeds the limit" in str(exc.msg):
            raise ExpressionError(f"{where}: number literal has too many digits") from None
        col = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(
            f"{where}: invalid syntax{col}: {exc.msg} in {_clip(text)}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"{where}: expression cannot be parsed ({exc})") from None
    root = _Checker(where).check(tree.body)
    return Expr(text, where, root)


def _clip(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _number(value: int | float, where: str) -> Num:
    if isinstance(value, int) and abs(value) > _MAX_EXACT_INT:
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(f"{where}: number {value!r} is not finite")
    return Num(value)


def _const_value(node: Node) -> float | None:
    """Float value of a subtree made only of numbers and + - * / ** (else ``None``).

    Used to bound exponents such as ``2**(2**64)`` before sympy would try to expand them;
    float arithmetic overflows to ``inf`` instead of building huge integers.
    """
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Neg):
        v = _const_value(node.operand)
        return None if v is None else -v
    if isinstance(node, BinOp):
        a, b = _const_value(node.left), _const_value(node.right)
        if a is None or b is None:
            return None
        try:
            if node.op == "+":
                return a + b
            if node.op == "-":
                return a - b
            if node.op == "*":
                return a * b
            if node.op == "/":
                return a / b
            return math.pow(a, b)
        except (OverflowError, ZeroDivisionError, ValueError):
            return math.inf
    return None


class _Checker:
    def __init__(self, where: str):
        self.where = where
        self.nodes = 0

    def fail(self, node: ast.AST, what: str, hint: str = "") -> ExpressionError:
        col = getattr(node, "col_offset", None)
        at = f" (column {col + 1})" if col is not None else ""
        hint = f"; {hint}" if hint else ""
        return ExpressionError(f"{self.where}: {what} is not allowed{at}{hint}")

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"{self.where}: expression has more than {MAX_NODES} nodes")

    def power(self, node: ast.BinOp, d: int) -> BinOp:
        base, exponent = self.check(node.left, d), self.check(node.right, d)
        n = _const_value(exponent)
        if n is not None and not abs(n) <= MAX_EXPONENT:
            raise self.fail(node, f"exponent {n:g}", f"|exponent| must be <= {MAX_EXPONENT}")
        return BinOp("**", base, exponent)

    def check(self, node: ast.AST, depth: int = 0) -> Node:
        self.count()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"{self.where}: expression nests deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or value is None or value is Ellipsis:
                raise self.fail(node, f"constant {value!r}")
            if isinstance(value, str):
                raise self.fail(node, f"string {value!r}")
            if isinstance(value, (bytes, complex)):
                raise self.fail(node, f"{type(value).__name__} constant {value!r}")
            if isinstance(value, (int, float)):
                return _number(value, self.where)
            raise self.fail(node, f"constant {value!r}")  # pragma: no cover
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__") or name.endswith("__"):
                raise self.fail(node, f"dunder name {name!r}")
            if name in FUNCTIONS:
                raise self.fail(node, f"function {name!r} used as a value")
            return Name(name)
        if isinstance(node, ast.BinOp):
            # Walk the left spine of a chain like a + b - c * d iteratively: a long sum is
            # wide, not deep, and must not exhaust Python's recursion limit.
            spine: list[tuple[str, ast.BinOp]] = []
            while isinstance(node, ast.BinOp):
                op = _BINOPS.get(type(node.op))
                if op is None:
                    raise self.fail(node, "operator " + _REJECTED_BINOPS.get(type(node.op), "?"))
                spine.append((op, node))
                if op == "**":
                    break
                node = node.left
                self.count()
            if spine[-1][0] == "**":
                op, pow_node = spine.pop()
                acc = self.power(pow_node, d)
            else:
                acc = self.check(node, d)
            for op, bin_node in reversed(spine):
                acc = BinOp(op, acc, self.check(bin_node.right, d))
            return acc
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return Neg(self.check(node.operand, d))
            if isinstance(node.op, ast.UAdd):
                return self.check(node.operand, d)
            if isinstance(node.op, ast.Not):
                raise self.fail(node, "'not' (use where(...) and comparisons)")
            raise self.fail(node, "operator '~' (bitwise not)")
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise self.fail(node, "chained comparison (write one comparison per where())")
            op = _CMPOPS.get(type(node.ops[0]))
            if op is None:
                raise self.fail(node, "'in'/'is' comparison")
            return Compare(op, self.check(node.left, d), self.check(node.comparators[0], d))
        if isinstance(node, ast.Call):
            return self.call(node, d)
        what = _CONSTRUCTS.get(type(node), type(node).__name__)
        if isinstance(node, ast.Attribute):
            what = f"attribute access '.{node.attr}'"
        raise self.fail(node, what)

    def call(self, node: ast.Call, d: int) -> Call:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "call of a computed function (only named functions)")
        name = node.func.id
        if name not in FUNCTIONS:
            allowed = ", ".join(FUNCTIONS)
            raise self.fail(node, f"call to {name!r}", f"allowed functions: {allowed}")
        if node.keywords:
            raise self.fail(node, f"keyword argument in {name}(...)")
        args = tuple(self.check(a, d) for a in node.args)
        arity = FUNCTIONS[name]
        n = len(args)
        if arity is None and n < 2:
            raise ExpressionError(f"{self.where}: {name}() needs at least 2 arguments, got {n}")
        if arity is not None and n != arity:
            raise ExpressionError(f"{self.where}: {name}() takes {arity} argument(s), got {n}")
        return Call(name, args)


# ---------------------------------------------------------------------------------------------
# Numbers


def evaluate(expr: Expr, values: Mapping[str, float]) -> float:
    """Evaluate ``expr`` in float arithmetic with ``values`` for its names (no sympy).

    Used to check initial values, bioavailability and lag against their bounds with the
    default parameters. Domain errors and overflow give ``nan``/``inf`` instead of raising,
    like the generated numba code (``error_model="numpy"``). A missing name raises KeyError.
    """
    return _evaluate(expr.root, values)


def _evaluate(node: Node, values: Mapping[str, float]) -> float:
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Name):
        return float(values[node.id])
    if isinstance(node, Neg):
        return -_evaluate(node.operand, values)
    if isinstance(node, BinOp):
        spine: list[BinOp] = []
        while isinstance(node, BinOp) and node.op != "**":
            spine.append(node)
            node = node.left
        if isinstance(node, BinOp):  # a power at the bottom of the spine
            acc = _apply("**", _evaluate(node.left, values), _evaluate(node.right, values))
        else:
            acc = _evaluate(node, values)
        for link in reversed(spine):
            acc = _apply(link.op, acc, _evaluate(link.right, values))
        return acc
    if isinstance(node, Compare):
        a, b = _evaluate(node.left, values), _evaluate(node.right, values)
        return 1.0 if _COMPARE[node.op](a, b) else 0.0
    if node.func == "where":
        cond = node.args[0]
        if isinstance(cond, Compare):
            true = _COMPARE[cond.op](_evaluate(cond.left, values), _evaluate(cond.right, values))
        else:
            true = _evaluate(cond, values) != 0.0
        return _evaluate(node.args[1] if true else node.args[2], values)
    args = [_evaluate(a, values) for a in node.args]
    if node.func == "min":
        return min(args)
    if node.func == "max":
        return max(args)
    if node.func == "abs":
        return abs(args[0])
    if node.func == "exp":
        return _guard(math.exp, args[0])
    if node.func == "hill":
        x, ec50, n = args
        xn = _apply("**", x, n)
        return _apply("/", xn, _apply("**", ec50, n) + xn)
    func = {"log": math.log, "log10": math.log10, "sqrt": math.sqrt}[node.func]
    return _guard(func, args[0])


_COMPARE = {
    "<": float.__lt__,
    "<=": float.__le__,
    ">": float.__gt__,
    ">=": float.__ge__,
    "==": float.__eq__,
    "!=": float.__ne__,
}


def _guard(func, x: float) -> float:
    try:
        return func(x)
    except OverflowError:
        return math.inf
    except ValueError:
        return -math.inf if x == 0.0 and func in (math.log, math.log10) else math.nan


def _apply(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0.0:  # IEEE semantics, as numpy and the generated code give
            return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    try:
        r = a**b
    except (OverflowError, ZeroDivisionError):
        return math.inf
    return math.nan if isinstance(r, complex) else float(r)
