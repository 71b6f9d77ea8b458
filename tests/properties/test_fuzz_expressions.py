"""Fuzzing the safe expression grammar (_expr): valid trees evaluate like a reference, and
anything else raises ExpressionError naming the field, never another exception or a hang."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from il2sim._expr import MAX_TEXT_LENGTH, evaluate, parse_expr_checked
from il2sim._expr_sympy import to_sympy
from il2sim.errors import ExpressionError, Il2simError

from _fuzz import fuzz, same_float

import sympy

WHERE = "fuzz/model.toml: [odes] Ac"
NAMES = ["x", "y", "ka", "Vc", "t"]
VALUES = {"x": 0.7, "y": 1.9, "ka": 0.25, "Vc": 3.0, "t": 12.5}

# ---------------------------------------------------------------------------------------------
# Valid trees: each node is (text, reference evaluator). The reference is computed from the
# generated tree with Python floats, independently of il2sim's parser and evaluator.


def _safe(f, *args):
    try:
        r = f(*args)
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError):
        return math.nan
    return math.nan if isinstance(r, complex) else float(r)


def _div(a, b):
    if b == 0.0:
        return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _pow(a, b):
    try:
        r = a**b
    except (OverflowError, ZeroDivisionError):
        return math.inf
    return math.nan if isinstance(r, complex) else float(r)


numbers = st.one_of(
    st.integers(0, 1000),
    st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, 1e-3, 2.5e2, 1.0]),
)


def _leaf():
    num = numbers.map(lambda v: (repr(v), lambda env, v=v: float(v), frozenset()))
    name = st.sampled_from(NAMES).map(lambda n: (n, lambda env, n=n: env[n], frozenset([n])))
    return st.one_of(num, name)


def _extend(children):
    binop = st.tuples(st.sampled_from(["+", "-", "*", "/"]), children, children).map(_binop)
    power = st.tuples(children, st.integers(-3, 4)).map(
        lambda p: (f"({p[0][0]}) ** {p[1]}", lambda env, a=p[0][1], k=p[1]: _pow(a(env), float(k)), p[0][2])
    )
    neg = children.map(lambda c: (f"-({c[0]})", lambda env, f=c[1]: -f(env), c[2]))
    unary = st.tuples(st.sampled_from(["exp", "log", "log10", "sqrt", "abs"]), children).map(_func1)
    minmax = st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=4)).map(_minmax)
    hill = st.tuples(children, children, children).map(_hill)
    cmp = st.tuples(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), children, children).map(_cmp)
    where = st.tuples(st.sampled_from(["<", ">=", "!="]), children, children, children, children).map(_where)
    return st.one_of(binop, power, neg, unary, minmax, hill, cmp, where)


_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": _div}
_CMP = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__,
        "==": float.__eq__, "!=": float.__ne__}
_F1 = {"exp": math.exp, "log": math.log, "log10": math.log10, "sqrt": math.sqrt, "abs": abs}


def _binop(p):
    op, (ta, fa, sa), (tb, fb, sb) = p
    return f"({ta}) {op} ({tb})", lambda env: _OPS[op](fa(env), fb(env)), sa | sb


def _func1(p):
    name, (ta, fa, sa) = p

    def ref(env):
        x = fa(env)
        if name in ("log", "log10") and x == 0.0:
            return -math.inf
        return _safe(_F1[name], x)

    return f"{name}({ta})", ref, sa


def _minmax(p):
    name, kids = p
    f = min if name == "min" else max
    return (f"{name}({', '.join(k[0] for k in kids)})", lambda env: f(k[1](env) for k in kids),
            frozenset().union(*(k[2] for k in kids)))


def _hill(p):
    (tx, fx, sx), (te, fe, se), (tn, fn, sn) = p

    def ref(env):
        xn = _pow(fx(env), fn(env))
        return _div(xn, _pow(fe(env), fn(env)) + xn)

    return f"hill({tx}, {te}, {tn})", ref, sx | se | sn


def _cmp(p):
    op, (ta, fa, sa), (tb, fb, sb) = p
    return f"({ta}) {op} ({tb})", lambda env: 1.0 if _CMP[op](fa(env), fb(env)) else 0.0, sa | sb


def _where(p):
    op, (ta, fa, sa), (tb, fb, sb), (tc, fc, sc), (td, fd, sd) = p

    def ref(env):
        return fc(env) if _CMP[op](fa(env), fb(env)) else fd(env)

    return f"where(({ta}) {op} ({tb}), {tc}, {td})", ref, sa | sb | sc | sd


trees = st.recursive(_leaf(), _extend, max_leaves=25)


@fuzz(150, 4000)
@given(trees, st.fixed_dictionaries({n: st.floats(-50, 50, allow_nan=False) for n in NAMES}))
def test_valid_trees_evaluate_like_the_reference(tree, env):
    text, ref, names = tree
    try:
        expr = parse_expr_checked(text, where=WHERE)
    except ExpressionError as exc:
        # the only limits a grammatical tree can hit: literal exponents folded past 64, size
        assert WHERE in str(exc)
        assert "exponent" in str(exc) or "characters long" in str(exc) or "nodes" in str(exc), str(exc)
        return
    assert expr.symbols == names
    assert same_float(evaluate(expr, env), ref(env)), (text, evaluate(expr, env), ref(env))


@fuzz(40, 800)
@given(trees)
def test_valid_trees_convert_to_sympy_or_raise_expression_error(tree):
    text, _, names = tree
    try:
        expr = parse_expr_checked(text, where=WHERE)
        to_sympy(expr, {n: sympy.Symbol(n) for n in names})
    except ExpressionError as exc:
        assert WHERE in str(exc)


# ---------------------------------------------------------------------------------------------
# Hostile input

HOSTILE = [
    "x.__class__", "().__class__.__bases__[0].__subclasses__()", "__import__('os').system('ls')",
    "__builtins__", "x.real", "x[0]", "lambda: 1", "(lambda x: x)(1)", "[i for i in range(9)]",
    "{i: i for i in x}", "{i for i in x}", "sum(i for i in x)", "x if y else 1", "x and y", "not x",
    "x or y", "(y := 2)", "*x", "f'{x}'", "'abc'", "b'abc'", "1j", "None", "True", "...",
    "open('f')", "eval('1')", "exec('1')", "getattr(x, 'y')", "exp(x=1)", "exp()", "exp(1, 2)",
    "min(1)", "hill(1, 2)", "where(1, 2)", "exp", "x ^ 2", "x // 2", "x % 2", "x @ y", "x & y",
    "x | y", "x << 2", "x >> 2", "~x", "1 < x < 2", "x in y", "x is y", "x is not y",
    "2 ** 99999999", "x ** (2 ** 64)", "x ** 65", "x ** -65", "x ** (8 * 9)", "2 ** 2 ** 2 ** 2 ** 2",
    "10 ** 400", "1e400", "9" * 4400, "(" * 200 + "x" + ")" * 200, "-" * 4000 + "x",
    "exp(" * 100 + "x" + ")" * 100, "x" + " + x" * 1500, "+".join(["x"] * 1999),
    "x" * (MAX_TEXT_LENGTH + 1), "", "   ", "\n", "x\x00", "ka\u200b", "\u0445",  # Cyrillic x
    "k\u0430", "\uff58", "\U0001d431", "x\u2212y", "\ufeffx", "x;y", "x\ny", "import os",
    "yield x", "await x", "x = 1", "def f(): pass", "0x10", "1_000", "1e-400", "0/0", "1/0",
    "log(0)", "sqrt(-1)", "exp(1000)", "where(x, 1, 2)", "x == y", "__x", "x__", "_x",
]


def _check_rejected_or_ok(text):
    try:
        parse_expr_checked(text, where=WHERE)
    except ExpressionError as exc:
        assert isinstance(exc, Il2simError)
        assert WHERE in str(exc), str(exc)


def test_hostile_catalogue():
    for text in HOSTILE:
        _check_rejected_or_ok(text)


def _fragments():
    atoms = st.sampled_from(
        ["x", "ka", "1", "2.5", "1e308", "9" * 30, "__class__", "__dict__", ".", ",", "(", ")", "[",
         "]", "{", "}", ":", "lambda", "for", "in", "if", "else", "**", "*", "+", "-", "/", "<",
         "==", "exp", "min", "where", "hill", "'s'", "\u0430", "\u00e9", "\t", " ", "j", "not",
         "and", "@", "^", "~", "%", "yield", "await", ";", "=", ":=", "!", "#", "\\", "\x00"]
    )
    return st.lists(atoms, max_size=40).map("".join)


@fuzz(120, 3000)
@given(st.one_of(_fragments(), st.text(max_size=200),
                 st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.sampled_from(HOSTILE)))
def test_random_text_is_accepted_or_rejected_cleanly(text):
    _check_rejected_or_ok(text)


@fuzz(60, 1000)
@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.binary(max_size=5),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_non_string_values_are_numbers_or_rejected(value):
    try:
        expr = parse_expr_checked(value, where=WHERE)
    except ExpressionError as exc:
        assert WHERE in str(exc)
        return
    assert isinstance(value, (int, float)) and not isinstance(value, bool)
    assert expr.constant == float(value)


@fuzz(40, 600)
@given(st.integers(1, 3000), st.sampled_from(["(", "-(", "exp(", "abs(", "min(1, ", "where(x, 1, "]))
def test_deep_nesting_is_bounded(depth, opener):
    text = opener * depth + "x" + ")" * (depth if opener != "-(" else depth)
    _check_rejected_or_ok(text)
