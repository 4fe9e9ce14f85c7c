"""The validity gate (engine/gate.py): many small syntax cases."""

import pytest

from lsp_server.engine import gate
from lsp_server.engine.gate import check, close_text, prepare, prepare_for, scan, trim

BODY = "import os\n\n\ndef f(a, b):\n    x = 1\n    "
NEXT = "\n    return x\n"


def ok(prefix, suffix, text, language="python"):
    return check(prepare(prefix, suffix, language), text)


@pytest.mark.parametrize(
    "text",
    [
        "y = a + b",
        "y = os.path.join(a, b)",
        "if a:",  # opens a block: the user goes on
        "for i in range(b):",
        "return a",
        "y = foo(a,",  # unfinished, not wrong
        "y = 'abc",  # an open string at the end
        "y = a +",  # an unfinished expression
        "y = [i for i in a]  # a comment (with a paren",
        'y = """doc',
        "y = 1\n    z = 2",
        "with open(a) as fh:\n        data = fh.read()",
    ],
)
def test_valid_python(text):
    assert ok(BODY, NEXT, text)


@pytest.mark.parametrize(
    "text",
    [
        "y = = a",
        "y = foo(a))",
        "y = a b c",
        "else:",  # no if before it
        "def (x):",
        "y = 1\n  z = 2",  # an unindent that matches no level
        'print "hi"',
        "y = [1, 2)",
        "return a,, b",
    ],
)
def test_invalid_python(text):
    assert not ok(BODY, NEXT, text)


def test_brackets_the_suffix_closes_are_not_errors():
    assert ok("def f():\n    x = foo(", ")\n", "a, b")
    assert ok("def f():\n    x = foo(a, ", "c)\n", "b, ")
    # ... but closing them in the suggestion too adds an unmatched closer
    assert not ok("def f():\n    x = foo(", ")\n", "a, b)")


def test_a_bracket_closed_on_a_later_line_of_the_suffix():
    assert ok("items = [\n    ", "\n    3]\n", "1, 2,")
    assert not ok("items = [\n    ", "\n    3]\n", "1, 2]")


def test_the_incomplete_line_the_user_is_typing_is_not_an_error():
    assert ok("def f():\n    x = a +", "\n", " b")
    assert ok("def f():\n    x = foo(a +", "\n", " b")
    assert ok("def f():\n    if x ==", "\n", " 3:")
    # the incomplete line stays incomplete with a suggestion that does not finish it
    assert ok("def f():\n    x = foo(", "\n", "a, ")


def test_a_decorator_waits_for_what_it_decorates():
    # Held-out jinja2 lines `    @internalcode` (before a `def` below) were dropped.
    cls = "class Loader:\n    def a(self):\n        pass\n\n    @"
    assert ok(cls, "\n    def load(self):\n        pass\n", "internalcode")
    assert ok(cls, "\n    def load(self):\n        pass\n", "property")
    assert ok("import functools\n\n@", "\ndef f():\n    pass\n", "functools.cache")
    assert not ok(cls, "\n    def load(self):\n        pass\n", "internalcode)")
    assert not ok(cls, "\n    def load(self):\n        pass\n", "internal code")


def test_an_error_before_the_cursor_is_not_the_suggestions():
    broken = "def f(:\n    pass\n\n\ndef g():\n    "
    assert ok(broken, "\n", "x = 1")
    assert not ok(broken, "\n", "x = = 1")


def test_an_error_in_the_rest_of_the_line_that_was_there_before():
    assert ok("def f():\n    x = ", " )(\n", "1")


def test_trim_to_the_longest_valid_prefix():
    ctx = prepare(BODY, NEXT, "python")
    assert trim(ctx, "y = a\nz = = 1") == "y = a"
    # token boundaries: "y = foo(a))" cut after "foo(a)"
    assert trim(ctx, "y = foo(a))", [1, 3, 7, 9, 10, 11]) == "y = foo(a)"
    assert trim(ctx, "y = a + b", [1, 3]) == "y = a + b"  # valid: unchanged
    assert trim(ctx, "= = =", [1, 3]) == ""  # nothing valid: dropped


def test_unknown_language_has_no_gate():
    assert prepare("x", "", None) is None
    assert check(None, "anything ) at all")
    assert trim(None, "x ) y") == "x ) y"
    assert gate.prepare_for("x = ", "", "notes.txt") is None


@pytest.mark.parametrize(
    ("prefix", "suffix", "text", "expected"),
    [
        ("function f(a) {\n  const x = ", "\n}\n", "a + 1;", True),
        ("function f(a) {\n  const x = ", "\n}\n", "a + + ) 1;", False),
        ("function f(a) {\n  if (a) {\n    ", "\n}\n", "return 1;", True),
        ("function f(a) {\n  return g(", ");\n}\n", "a, 2", True),
        ("function f(a) {\n  return g(", ");\n}\n", "a, 2)", False),
    ],
)
def test_javascript_through_tree_sitter(prefix, suffix, text, expected):
    assert ok(prefix, suffix, text, "javascript") is expected


def test_go_through_tree_sitter():
    prefix = "package main\n\nfunc f(a int) int {\n\tx := "
    assert ok(prefix, "\n}\n", "a * 2", "go")
    assert not ok(prefix, "\n}\n", "a * * ) 2", "go")


def test_scan_and_close():
    assert scan("f(a, [b", "python").stack == ("(", "[")
    assert scan("f(')')", "python").stack == ()  # brackets in strings do not count
    assert scan("f(a)) # )", "python").unmatched == 1
    assert scan("x = '''(", "python").quote == "'''"
    assert close_text("if f(a", "python") == "if f(a)\n"
    assert close_text("    if a:", "python") == "    if a:\n        pass\n"
    assert close_text("x = 'ab", "python") == "x = 'ab'\n"
    assert scan("fn f<'a>(x: &'a str) {", "rust").stack == ("{",)  # 'a is a lifetime, not a quote


def test_an_error_already_on_the_line_before_the_cursor_is_not_the_suggestions():
    # A tab-indented line among space-indented ones (an editor with noexpandtab): Python
    # refuses the line with or without the suggestion, so the suggestion is not to blame.
    prefix = "def f(n):\n    if n < 2:\n        return n\n\treturn f"
    ctx = prepare_for(prefix, "\n", "a.py", "python")
    assert check(ctx, "(n - 1)")
    assert not check(ctx, "(n - 1))")  # a closer with no opener is still the suggestion's
