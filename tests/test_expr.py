"""The safe expression grammar: accepted forms, rejected constructs with exact messages,
bounded work on hostile input, and the sympy/float forms."""

from __future__ import annotations

import ast
import math
import re
import warnings

import pytest
import sympy

from il2sim._expr import MAX_NODES, evaluate, parse_expr_checked
from il2sim._expr_sympy import Hill, to_sympy
from il2sim.errors import ExpressionError, ModelSpecError

W = "m.toml: [odes] X"


def parse(text):
    return parse_expr_checked(text, where=W)


def sym(e):
    return to_sympy(e, {n: sympy.Symbol(n, real=True) for n in e.symbols})


# --- accepted -------------------------------------------------------------------------------


def test_symbols_exclude_functions_and_include_time():
    e = parse("hill(C, EC50, n) * where(t > 3, max(A, 0, B), -A**2) + log10(x) - +y")
    assert e.symbols == {"C", "EC50", "n", "t", "A", "B", "x", "y"}
    assert str(e) == e.text


def test_numbers_and_constant():
    assert parse("-2.5").constant == -2.5
    assert parse(3).constant == 3.0
    assert parse("1e-3").constant == 1e-3
    assert parse("x + 1").constant is None


@pytest.mark.parametrize(
    "text, values, expected",
    [
        ("1 + 2 * 3 - 4 / 8", {}, 6.5),
        ("2 ** 3 ** 2", {}, 512.0),  # right-associative like Python
        ("-x ** 2", {"x": 3.0}, -9.0),  # unary minus binds looser than **
        ("hill(x, 2, 3)", {"x": 2.0}, 0.5),
        ("where(x > 1, 10, 20)", {"x": 2.0}, 10.0),
        ("where(x - 2, 10, 20)", {"x": 2.0}, 20.0),  # a non-comparison condition means != 0
        ("(x >= 2) + (x < 2) * 5", {"x": 2.0}, 1.0),
        ("min(x, 1, -3) + max(x, 7)", {"x": 2.0}, 4.0),
        ("exp(0) + log(1) + log10(100) + sqrt(16) + abs(-2)", {}, 9.0),
        ("x == 2", {"x": 2.0}, 1.0),
        ("x != 2", {"x": 2.0}, 0.0),
        ("a - b - c", {"a": 1.0, "b": 2.0, "c": 3.0}, -4.0),  # left-associative
    ],
)
def test_sympy_and_float_forms_agree(text, values, expected):
    e = parse(text)
    assert evaluate(e, values) == pytest.approx(expected)
    s = to_sympy(e, {k: sympy.Float(v) for k, v in values.items()})
    assert float(sympy.expand_func(s)) == pytest.approx(expected)


def test_sympy_mapping():
    x, y = sympy.symbols("x y", real=True)
    s = to_sympy(parse("where(x < y, min(x, y), max(x, y)) + (x <= 1) + hill(x, y, 2)"), {"x": x, "y": y})
    assert s.has(sympy.Piecewise) and s.has(sympy.Min) and s.has(sympy.Max) and s.has(Hill)
    assert s.atoms(sympy.Rel) == {x < y, x <= 1}
    assert sympy.expand_func(Hill(x, y, 2)) == x**2 / (y**2 + x**2)


def test_hill_derivative_is_finite_at_zero():
    x, e = sympy.symbols("x e", real=True)
    d = sympy.diff(Hill(x, e, 1), x)
    assert d.subs({x: 0, e: 2}) == sympy.Rational(1, 2)
    ref = sympy.diff(sympy.expand_func(Hill(x, e, sympy.Symbol("n"))), x)
    got = sympy.diff(Hill(x, e, sympy.Symbol("n")), x)
    pt = {x: 0.7, e: 1.3, sympy.Symbol("n"): 2.2}
    assert float(got.subs(pt)) == pytest.approx(float(ref.subs(pt)))


def test_long_sum_is_wide_not_deep():
    e = parse("+".join(f"x{i}" for i in range(900)))
    assert len(e.symbols) == 900
    assert evaluate(e, {f"x{i}": 1.0 for i in range(900)}) == 900.0
    assert len(sym(e).args) == 900


def test_float_semantics_of_evaluate():
    assert math.isinf(evaluate(parse("1 / x"), {"x": 0.0}))
    assert math.isnan(evaluate(parse("x / x"), {"x": 0.0}))
    assert math.isnan(evaluate(parse("sqrt(x)"), {"x": -1.0}))
    assert evaluate(parse("log(x)"), {"x": 0.0}) == -math.inf
    assert math.isinf(evaluate(parse("exp(x)"), {"x": 1e6}))


# --- rejected -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("x.real", r"attribute access '\.real' is not allowed \(column 1\)"),
        ("__import__('os')", r"call to '__import__' is not allowed \(column 1\); allowed functions: exp, log, log10, sqrt, abs, min, max, hill, where"),
        ("().__class__", r"attribute access '\.__class__' is not allowed"),
        ("__builtins__", r"dunder name '__builtins__' is not allowed"),
        ("lambda: 1", r"lambda is not allowed"),
        ("[a for a in b]", r"list comprehension is not allowed"),
        ("sum(a for a in b)", r"call to 'sum' is not allowed"),
        ("max(*a)", r"starred argument is not allowed"),
        ("{a: 1}", r"dict is not allowed"),
        ("'abc'", r"string 'abc' is not allowed"),
        ("f'{x}'", r"f-string is not allowed"),
        ("max(a, b=1)", r"keyword argument in max\(\.\.\.\) is not allowed"),
        ("foo(1)", r"call to 'foo' is not allowed"),
        ("x[0]", r"subscript is not allowed"),
        ("a and b", r"'and'/'or' \(use where\(\.\.\.\) and comparisons\) is not allowed"),
        ("not a", r"'not' \(use where\(\.\.\.\) and comparisons\) is not allowed"),
        ("a < b < c", r"chained comparison \(write one comparison per where\(\)\) is not allowed"),
        ("a in b", r"'in'/'is' comparison is not allowed"),
        ("x ^ 2", r"operator '\^' \(bitwise xor; use \*\* for powers\) is not allowed"),
        ("x // 2", r"operator '//' \(floor division\) is not allowed"),
        ("x if y else z", r"'x if c else y' \(use where\(c, x, y\)\) is not allowed"),
        ("(y := 2)", r"assignment expression ':=' is not allowed"),
        ("True", r"constant True is not allowed"),
        ("1j", r"complex constant 1j is not allowed"),
        ("exp", r"function 'exp' used as a value is not allowed"),
        ("hill(x, 1)", r"hill\(\) takes 3 argument\(s\), got 2"),
        ("min(x)", r"min\(\) needs at least 2 arguments, got 1"),
        ("x ** 100", r"exponent 100 is not allowed \(column 1\); \|exponent\| must be <= 64"),
        ("2 ** (2 ** 64)", r"exponent 1\.84467e\+19 is not allowed"),
        ("x ** -(8 * 9)", r"exponent -72 is not allowed"),
        ("1e400", r"number inf is not finite"),
        ("x +", r"invalid syntax.*: invalid syntax in 'x \+'"),
        ("exp.__call__(1)", r"call of a computed function"),
        ("", r"expression is empty"),
        ("import os", r"invalid syntax"),
        ("x = 1", r"invalid syntax"),
    ],
)
def test_rejected_with_message(text, message):
    with pytest.raises(ExpressionError, match=r"^invalid model: 1 problem\(s\)\n  - m\.toml: \[odes\] X: " + message):
        parse(text)


def test_expression_error_is_a_model_spec_error():
    with pytest.raises(ModelSpecError) as info:
        parse("x.y")
    assert info.value.problems == ["m.toml: [odes] X: attribute access '.y' is not allowed (column 1)"]


@pytest.mark.parametrize(
    "text, char",
    [
        ("\uff58 + 1", "'\uff58' (FULLWIDTH LATIN SMALL LETTER X)"),  # NFKC-folds to x
        ("\u0430lpha", "'\u0430' (CYRILLIC SMALL LETTER A)"),  # looks like 'a'
        ("x\u200b", "'\\u200b' (ZERO WIDTH SPACE)"),  # invisible: shown escaped
    ],
)
def test_non_ascii_rejected_before_parsing(text, char):
    with pytest.raises(ExpressionError, match=r"non-ASCII character " + re.escape(char)):
        parse(text)


def test_wrong_value_types():
    with pytest.raises(ExpressionError, match=r"m\.toml: \[odes\] X: expected an expression or a number, got a boolean"):
        parse(True)
    with pytest.raises(ExpressionError, match=r"expected an expression string or a number, got list"):
        parse([1])
    with pytest.raises(ExpressionError, match=r"value nan is not finite"):
        parse(float("nan"))


def test_hostile_input_is_bounded_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    attempts = [
        f"__import__('os').system('touch {marker}')",
        f"exp(__import__('pathlib').Path('{marker}').touch())",
        f"[__import__('os').system('touch {marker}') for _ in (1,)]",
        f"(lambda: __import__('os').system('touch {marker}'))()",
    ]
    for text in attempts:
        with pytest.raises(ExpressionError):
            parse(text)
    assert not marker.exists()

    slow = [
        "x" * 6000,  # too long
        "(" * 300 + "x" + ")" * 300,  # too deeply nested for Python's parser
        "-" * 70 + "x",  # deeper than MAX_DEPTH
        "-" * 4000 + "x",  # deeper than the parser's recursion limit
        "+".join(["x"] * (MAX_NODES // 2 + 10)),  # too many nodes
        "9" * 4500,  # integer literal beyond Python's digit limit
        "2 ** 64 ** 64 ** 64",  # would be a huge integer if evaluated
    ]
    messages = [
        r"expression is 6000 characters long \(limit 5000\)",
        r"too many nested parentheses",
        r"expression nests deeper than 64 levels",
        r"expression cannot be parsed",
        r"expression has more than 2000 nodes",
        r"number literal has too many digits",
        r"exponent 3\.9402e\+115 is not allowed",
    ]
    # Bounded work is asserted through the caps that bound it (no wall-clock assertions:
    # the CI machine is shared); each of these used to be, or would be, a hang or a crash.
    for text, message in zip(slow, messages):
        with pytest.raises(ExpressionError, match=message):
            parse(text)


@pytest.mark.parametrize(
    "text, message",
    [
        # right-associative: 10**(10**10); folding it would build a 10-billion-digit integer
        ("10**10**10", r"exponent 1e\+10 is not allowed \(column 1\); \|exponent\| must be <= 64"),
        ("2**99999999", r"exponent 1e\+08 is not allowed \(column 1\); \|exponent\| must be <= 64"),
        ("x ** 1e300 ** 2", r"exponent inf is not allowed"),
        ("(" * 10000, r"expression is 10000 characters long \(limit 5000\)"),
        ("(" * 2000 + "x" + ")" * 2000, r"invalid syntax at column 201: too many nested parentheses"),
        ("exp(" * 70 + "x" + ")" * 70, r"expression nests deeper than 64 levels"),
        ("x" + " * x" * 1200, r"expression has more than 2000 nodes"),
    ],
)
def test_huge_exponents_deep_and_enormous_expressions(text, message):
    with pytest.raises(ExpressionError, match=r"^invalid model: 1 problem\(s\)\n  - m\.toml: \[odes\] X: " + message):
        parse(text)


def test_largest_legal_expression_converts():
    # at the caps, not beyond: the exponent limit itself and a long (wide) sum go through sympy
    assert sym(parse("x ** 64")) == sympy.Symbol("x", real=True) ** 64
    wide = parse("+".join(f"x{i % 50}" for i in range(MAX_NODES // 2 - 1)))
    assert len(sym(wide).free_symbols) == 50


@pytest.mark.parametrize(
    "text, message",
    [
        (r'"\d" + x', r"string '\\\\d' is not allowed \(column 1\)"),  # invalid escape: the tokenizer warns
        ("1 is 1", r"'in'/'is' comparison is not allowed"),  # compile() would warn 'is with a literal'
        ("x is not None", r"'in'/'is' comparison is not allowed"),
    ],
)
def test_tokenizer_warnings_do_not_leak(text, message):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExpressionError, match=message):
            parse(text)
    assert [str(w.message) for w in caught] == []


def test_nothing_is_evaluated(monkeypatch):
    # Every route from a string to running code is closed while expressions are parsed and
    # converted: eval, exec, compile to bytecode, and sympy's string parser (sympify(str)).
    import builtins

    import sympy.parsing.sympy_parser as sympy_parser

    real_compile = builtins.compile

    def refuse(*args, **kwargs):
        raise AssertionError(f"code execution attempted: {args[:1]!r}")

    def ast_only(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            refuse(source)
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", ast_only)
    monkeypatch.setattr(sympy_parser, "parse_expr", refuse)
    for text in ("hill(C, ec50, n) * exp(-k * t) + where(x > 1, sqrt(x), log10(2))",
                 "min(a, b, 3) ** 2 - abs(-y) / max(1, z)"):
        e = parse(text)
        assert sym(e).free_symbols  # built node by node
    for text in ("__import__('os').system('true')", "x.__class__", "(lambda: 1)()", "eval('1')"):
        with pytest.raises(ExpressionError):
            parse(text)


def test_exponent_built_by_arithmetic_is_still_bounded():
    # Not a literal at parse time, but sympy would see 2**80 as a number: to_sympy refuses.
    e = parse("x ** (y * 0 + 80)")
    with pytest.raises(ExpressionError, match=r"exponent 80 is too large"):
        sym(e)
    with pytest.raises(ExpressionError, match=r"constant .*\*\*-40 is not a finite real number"):
        to_sympy(parse("a ** -40"), {"a": sympy.Float(1e-10)})


def test_unknown_symbol_in_to_sympy():
    with pytest.raises(ExpressionError, match=r"m\.toml: \[odes\] X: unknown symbol 'y'"):
        to_sympy(parse("x + y"), {"x": sympy.Symbol("x")})


def test_min_max_of_a_non_finite_constant_is_an_expression_error():
    # found by tests/properties/test_fuzz_expressions.py: sympy's Min/Max raised ValueError on zoo
    for text in ("min(log(0), 1)", "max(1, 1 / 0 * 0, x)"):
        e = parse_expr_checked(text, where="m.toml: [odes] A")
        with pytest.raises(ExpressionError, match=r"m\.toml: \[odes\] A: (min|max)\(\)|division by zero"):
            to_sympy(e, {"x": sympy.Symbol("x")})


def test_comparison_with_a_non_finite_constant_is_an_expression_error():
    # found by the long fuzz run: sympy raised TypeError "Invalid comparison of non-real zoo";
    # and by a CI fuzz run: folding the Piecewise of (0 < x) out of the Hill term made it 0/0
    for text in ("log(0) < 1", "where(exp(log(0)) >= 0, 1, 2)", "0 < hill(0, (0 < x), 1.0)",
                 "where(hill(0, (0 < x), 1.0) > 0, 1, 2)"):
        e = parse_expr_checked(text, where="m.toml: [odes] A")
        with pytest.raises(ExpressionError, match=r"m\.toml: \[odes\] A: comparison"):
            to_sympy(e, {"x": sympy.Symbol("x")})
