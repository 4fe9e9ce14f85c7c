"""Checks on a rewrite before it is applied.

* Syntax (:func:`validate_rewrite`): a rewrite that does not parse where the original did
  is refused; the parsers are :data:`SyntaxCheck` functions (tree-sitter's,
  :func:`tree_sitter_check`, and Python's own, :func:`python_check`).
* Intent (:func:`check_intent`): "Add docstring" and "Add type hints" may only add
  documentation or annotations, and must add some.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any

from lsp_server.engine.actions.errors import RewriteRejected
from lsp_server.engine.actions.region import CodeRegion
from lsp_server.engine.actions.spec import LANGUAGE_NAMES, ActionKind

# ------------------------------------------------------------------------ syntax

# Where the first syntax error is, as (row, column) in the source; None when it parses.
SyntaxCheck = Callable[[str], "tuple[int, int] | None"]


def first_error(root: Any) -> tuple[int, int] | None:
    """Position of the first ERROR or MISSING node under a tree-sitter ``root``."""
    if not root.has_error:
        return None
    cursor = [root]
    while cursor:
        node = cursor.pop()
        if node.type == "ERROR" or node.is_missing:
            return tuple(node.start_point)  # type: ignore[return-value]
        cursor.extend(reversed([c for c in node.children if c.has_error or c.is_missing]))
    return tuple(root.start_point)  # type: ignore[return-value]


def tree_sitter_check(parser: Any) -> SyntaxCheck:
    def check(source: str) -> tuple[int, int] | None:
        return first_error(parser.parse(source.encode("utf-8", "surrogatepass")).root_node)

    return check


def python_check(source: str) -> tuple[int, int] | None:
    """Python's own parser, stricter than tree-sitter's (which accepts ``def f():`` with an
    empty body followed by a dedented line)."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return (max(0, (exc.lineno or 1) - 1), max(0, (exc.offset or 1) - 1))
    except (ValueError, RecursionError, MemoryError):
        return (0, 0)
    return None


def combined_check(checks: Sequence[SyntaxCheck]) -> SyntaxCheck:
    def check(source: str) -> tuple[int, int] | None:
        for one in checks:
            err = one(source)
            if err is not None:
                return err
        return None

    return check


def validate_rewrite(
    check: SyntaxCheck | None,
    region: CodeRegion,
    replacement: str,
    new_code: str,
    language: str | None,
) -> None:
    """Refuse a rewrite that does not parse when the original did.

    The whole document is checked first (a method body only parses in its class); if the
    document had errors elsewhere already, the code alone is compared instead.
    """
    if check is None:
        return
    lang = LANGUAGE_NAMES.get(language or "", language or "code")
    old_doc_error = check(region.document)
    if old_doc_error is None:
        new_doc = region.apply(replacement)
        err = check(new_doc)
        if err is None:
            return
        first_row = region.document.count("\n", 0, region.start)
        row = err[0] - first_row + 1
        where = f" (line {row} of the rewrite)" if 1 <= row <= replacement.count("\n") + 1 else ""
        raise RewriteRejected(
            f"the model's rewrite is not valid {lang}{where}, so it was not applied. Try again or select less code."
        )
    if check(region.code) is None and check(new_code) is not None:
        raise RewriteRejected(
            f"the model's rewrite is not valid {lang}, so it was not applied. Try again or select less code."
        )


# ------------------------------------------------------------------------ intent

_LARGER_MODEL = " A larger model (setting quill.model) does this better."


def _py_parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _strip_python_docs(tree: ast.Module) -> tuple[str, int]:
    """The code's AST without docstrings and ``pass`` (a docstring can replace a
    ``pass``), and how many docstrings there were."""
    count = 0
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            if _is_docstring(body[0]):
                count += 1
                body = body[1:]
            node.body = [stmt for stmt in body if not isinstance(stmt, ast.Pass)]  # type: ignore[attr-defined]
    return ast.dump(tree), count


class _StripAnnotations(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_arg(self, node: ast.arg) -> ast.arg:
        if node.annotation is not None:
            self.count += 1
            node.annotation = None
        return node

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        if node.returns is not None:
            self.count += 1
            node.returns = None
        self.generic_visit(node)
        return node

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        self.count += 1
        if node.value is None:
            return None  # a bare declaration ``x: int``
        return ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)

    def visit_Import(self, node: ast.Import) -> ast.AST | None:
        return None if all(a.name == "typing" for a in node.names) else node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
        return None if node.module in ("typing", "__future__", "collections.abc") else node


def _strip_python_annotations(tree: ast.Module) -> tuple[str, int]:
    stripper = _StripAnnotations()
    stripped = stripper.visit(tree)
    return ast.dump(stripped), stripper.count


def _leaves(root: Any, skip: Callable[[Any], bool]) -> tuple[list[str], int]:
    """Leaf token texts outside the skipped nodes, and how many nodes were skipped."""
    out: list[str] = []
    skipped = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if skip(node):
            skipped += 1
            continue
        if node.child_count == 0:
            out.append(node.text.decode("utf-8", "replace") if node.text is not None else node.type)
        else:
            stack.extend(reversed(node.children))
    return out, skipped


def _is_comment(node: Any) -> bool:
    return "comment" in node.type


def _is_type_annotation(node: Any) -> bool:
    return node.type == "type_annotation" or _is_comment(node)


def check_intent(kind: ActionKind, language: str | None, old_code: str, new_code: str, parser: Any = None) -> None:
    """ "Add docstring" and "Add type hints" promise to change nothing else: refuse a
    rewrite that changed the code itself, or added nothing.  The comparison ignores
    layout: Python's AST, else the tree-sitter tokens outside comments / annotations.
    Code that does not parse on its own (part of a statement) is not judged here."""
    if kind not in (ActionKind.DOCSTRING, ActionKind.TYPE_HINTS):
        return
    what = "documentation" if kind is ActionKind.DOCSTRING else "type annotations"
    changed = f"the model changed the code itself, not only its {what}, so nothing was changed." + _LARGER_MODEL
    nothing = f"the model did not add any {what}, so nothing was changed." + _LARGER_MODEL
    if language == "python":
        old_tree, new_tree = _py_parse(old_code), _py_parse(new_code)
        if old_tree is None or new_tree is None:
            return
        strip = _strip_python_docs if kind is ActionKind.DOCSTRING else _strip_python_annotations
        (old_dump, old_n), (new_dump, new_n) = strip(old_tree), strip(new_tree)
        if old_dump != new_dump:
            raise RewriteRejected(changed)
        if kind is ActionKind.DOCSTRING and new_n <= old_n:
            raise RewriteRejected(nothing)
        if kind is ActionKind.TYPE_HINTS and new_n <= old_n:
            raise RewriteRejected(nothing)
        return
    if parser is None:
        return
    if kind is ActionKind.TYPE_HINTS and language not in ("typescript", "tsx", "javascript"):
        return  # no reliable notion of "an annotation" in this grammar
    skip = _is_type_annotation if kind is ActionKind.TYPE_HINTS and language != "javascript" else _is_comment
    old_root = parser.parse(old_code.encode("utf-8", "surrogatepass")).root_node
    new_root = parser.parse(new_code.encode("utf-8", "surrogatepass")).root_node
    if old_root.has_error or new_root.has_error:
        return
    (old_leaves, old_n), (new_leaves, new_n) = _leaves(old_root, skip), _leaves(new_root, skip)
    if old_leaves != new_leaves:
        raise RewriteRejected(changed)
    if new_n <= old_n:
        raise RewriteRejected(nothing)
