"""engine/actions/checks.py: syntax checks of rewrites, and intent checks (docstring / type hints)."""

from __future__ import annotations

import pytest
from tree_sitter_language_pack import get_parser

from lsp_server.engine import actions as act
from lsp_server.engine.actions import ActionKind, CodeRegion
from tests.unit.test_actions_prompts import AREA
from tests.unit.test_actions_region import SOURCE, region_of

# ------------------------------------------------------------------------- syntax


def _check(language: str) -> act.SyntaxCheck:
    checks = [act.tree_sitter_check(get_parser(language))]  # type: ignore[arg-type]
    if language == "python":
        checks.append(act.python_check)
    return act.combined_check(checks)


def test_validate_rewrite_refuses_broken_python() -> None:
    region = region_of(SOURCE, "def main():\n    print(Store().total([1, 2]))")
    good = "def main():\n    store = Store()\n    print(store.total([1, 2]))"
    act.validate_rewrite(_check("python"), region, region.replacement(good), good, "python")
    broken = "def main(:\n    print(1)"
    with pytest.raises(act.RewriteRejected, match="not valid Python"):
        act.validate_rewrite(_check("python"), region, region.replacement(broken), broken, "python")
    # Tree-sitter accepts an empty body followed by a dedented line; Python does not.
    dedented = "def main():\nprint(1)"
    with pytest.raises(act.RewriteRejected):
        act.validate_rewrite(_check("python"), region, region.replacement(dedented), dedented, "python")


def test_validate_rewrite_javascript_and_documents_with_errors_elsewhere() -> None:
    text = "function f() {\n  return 1;\n}\n"
    region = CodeRegion.from_document(text, 0, len(text) - 1)
    bad = "function f() {\n  return 1;\n"
    with pytest.raises(act.RewriteRejected, match="JavaScript"):
        act.validate_rewrite(_check("javascript"), region, region.replacement(bad), bad, "javascript")
    # The file is already broken elsewhere: judge the selected code alone.
    broken_doc = "def f():\n    return 1\n\ndef g(:\n"
    region = CodeRegion.from_document(broken_doc, 0, broken_doc.index("\n\ndef g"))
    ok = "def f() -> int:\n    return 1"
    act.validate_rewrite(_check("python"), region, region.replacement(ok), ok, "python")
    with pytest.raises(act.RewriteRejected):
        act.validate_rewrite(_check("python"), region, region.replacement("def f(:"), "def f(:", "python")
    act.validate_rewrite(None, region, "anything", "anything", None)  # no grammar: nothing to check


# ------------------------------------------------------------------------ intent


def test_docstring_must_only_add_documentation() -> None:
    act.check_intent(ActionKind.DOCSTRING, "python", AREA, AREA.replace(":\n", ':\n    """Area."""\n', 1))
    with pytest.raises(act.RewriteRejected, match="did not add any documentation"):
        act.check_intent(ActionKind.DOCSTRING, "python", AREA, AREA.replace("radius ** 2", "radius**2"))
    with pytest.raises(act.RewriteRejected, match="changed the code itself"):
        act.check_intent(ActionKind.DOCSTRING, "python", AREA, '"""Doc."""\n' + AREA.replace("** 2", "* radius"))
    # A docstring may replace a `pass`.
    act.check_intent(ActionKind.DOCSTRING, "python", "class A:\n    pass", 'class A:\n    """An A."""')
    # Part of a statement: not judged here (the syntax check still is).
    act.check_intent(ActionKind.DOCSTRING, "python", "return (", "return (")


def test_type_hints_must_only_add_annotations() -> None:
    typed = "from typing import Any\n\ndef circle_area(radius: float) -> float:\n    return math.pi * radius ** 2"
    act.check_intent(ActionKind.TYPE_HINTS, "python", AREA, typed)
    act.check_intent(ActionKind.TYPE_HINTS, "python", "x = 1", "x: int = 1")
    with pytest.raises(act.RewriteRejected, match="did not add any type annotations"):
        act.check_intent(ActionKind.TYPE_HINTS, "python", AREA, AREA)
    with pytest.raises(act.RewriteRejected, match="changed the code itself"):
        act.check_intent(ActionKind.TYPE_HINTS, "python", AREA, typed.replace("math.pi", "3.14"))
    act.check_intent(ActionKind.REFACTOR, "python", AREA, "anything")  # other actions may change code


def test_intent_in_other_languages() -> None:
    ts = get_parser("typescript")
    code = "function add(a, b) {\n  return a + b;\n}"
    act.check_intent(
        ActionKind.TYPE_HINTS, "typescript", code, code.replace("(a, b)", "(a: number, b: number): number"), ts
    )
    with pytest.raises(act.RewriteRejected, match="changed the code itself"):
        act.check_intent(
            ActionKind.TYPE_HINTS,
            "typescript",
            code,
            code.replace("a + b", "b + a").replace("(a, b)", "(a: number, b)"),
            ts,
        )
    go = get_parser("go")
    func = "func Add(a, b int) int {\n\treturn a + b\n}"
    act.check_intent(ActionKind.DOCSTRING, "go", func, "// Add adds.\n" + func, go)
    with pytest.raises(act.RewriteRejected, match="did not add any documentation"):
        act.check_intent(ActionKind.DOCSTRING, "go", func, func.replace("\t", "    "), go)
