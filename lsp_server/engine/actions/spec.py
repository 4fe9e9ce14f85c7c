"""What the code actions are: their kinds and menu entries (:data:`ACTIONS`), which of them
are offered for a language and an LSP ``context.only`` filter (:func:`available_actions`,
:func:`kind_matches`), the per-language tables, and what each rewrite asks the model to do
(:func:`task_for`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class ActionKind(str, enum.Enum):
    EXPLAIN = "explain"
    REFACTOR = "refactor"
    DOCSTRING = "docstring"
    TYPE_HINTS = "typeHints"
    SIMPLIFY = "simplify"


@dataclass(frozen=True)
class ActionSpec:
    kind: ActionKind
    title: str  # shown in the editor's code action menu
    lsp_kind: str  # LSP CodeActionKind ("" is the LSP "Empty" kind)
    rewrite: bool  # True: the answer replaces the selection; False: Markdown for the user


ACTIONS: dict[ActionKind, ActionSpec] = {
    ActionKind.EXPLAIN: ActionSpec(ActionKind.EXPLAIN, "Explain with Quill", "", False),
    ActionKind.REFACTOR: ActionSpec(ActionKind.REFACTOR, "Refactor with Quill", "refactor.rewrite", True),
    ActionKind.DOCSTRING: ActionSpec(ActionKind.DOCSTRING, "Add docstring with Quill", "refactor.rewrite", True),
    ActionKind.TYPE_HINTS: ActionSpec(ActionKind.TYPE_HINTS, "Add type hints with Quill", "refactor.rewrite", True),
    ActionKind.SIMPLIFY: ActionSpec(ActionKind.SIMPLIFY, "Simplify with Quill", "refactor.rewrite", True),
}

# "Add type hints" only where a language has optional annotations to add.
TYPE_HINT_LANGUAGES = frozenset({"python", "typescript", "tsx", "javascript", "php"})

LANGUAGE_NAMES = {
    "python": "Python",
    "javascript": "JavaScript",
    "typescript": "TypeScript",
    "tsx": "TypeScript (TSX)",
    "go": "Go",
    "rust": "Rust",
    "java": "Java",
    "c": "C",
    "cpp": "C++",
    "csharp": "C#",
    "ruby": "Ruby",
    "php": "PHP",
    "lua": "Lua",
    "kotlin": "Kotlin",
    "swift": "Swift",
    "scala": "Scala",
    "bash": "shell",
}

_DOC_CONVENTIONS = {
    "python": "a docstring (PEP 257)",
    "javascript": "a JSDoc comment",
    "typescript": "a TSDoc comment",
    "tsx": "a TSDoc comment",
    "go": "a Go doc comment that starts with the name",
    "rust": "/// doc comments",
    "java": "a Javadoc comment",
    "kotlin": "a KDoc comment",
    "c": "a Doxygen comment",
    "cpp": "a Doxygen comment",
    "csharp": "/// XML documentation comments",
    "php": "a PHPDoc comment",
    "ruby": "a YARD comment",
    "swift": "/// documentation comments",
    "scala": "a Scaladoc comment",
}

_TYPE_HINT_TASKS = {
    "python": "add type hints (PEP 484) to every function parameter and return value that lacks one",
    "typescript": "add explicit TypeScript types to parameters, return values and variables that lack them",
    "tsx": "add explicit TypeScript types to parameters, return values and props that lack them",
    "javascript": "add JSDoc type annotations (@param and @returns) to every function",
    "php": "add PHP type declarations to parameters and return values that lack them",
}


def available_actions(language: str | None) -> list[ActionSpec]:
    """The actions offered for code in ``language`` (a tree-sitter name; None = plain text)."""
    out = []
    for spec in ACTIONS.values():
        if spec.kind is ActionKind.TYPE_HINTS and language not in TYPE_HINT_LANGUAGES:
            continue
        out.append(spec)
    return out


def kind_matches(kind: str, only: Sequence[str] | None) -> bool:
    """LSP ``context.only`` filtering: kinds are hierarchical (``refactor`` covers
    ``refactor.rewrite``); the empty kind is listed only when nothing is filtered."""
    if not only:
        return True
    for wanted in only:
        if not wanted:
            if not kind:
                return True
            continue
        if kind == wanted or kind.startswith(wanted + "."):
            return True
    return False


def task_for(kind: ActionKind, language: str | None) -> str:
    """What the model is asked to do to the code (a phrase that follows "Rewrite it to")."""
    lang = language or ""
    if kind is ActionKind.REFACTOR:
        return "improve its readability and structure (clear names, small steps, no duplication) without changing its behaviour"
    if kind is ActionKind.SIMPLIFY:
        return "make it simpler and shorter without changing its behaviour"
    if kind is ActionKind.DOCSTRING:
        doc = _DOC_CONVENTIONS.get(lang, "a documentation comment")
        return f"add {doc} to each function, method and class that lacks one, and change nothing else"
    if kind is ActionKind.TYPE_HINTS:
        hint = _TYPE_HINT_TASKS.get(lang, "add explicit type annotations where they are missing")
        return f"{hint}, and change nothing else"
    raise ValueError(f"{kind} is not a rewrite")
