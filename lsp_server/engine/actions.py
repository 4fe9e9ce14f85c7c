"""Code actions on a selection: explain it, or rewrite it (refactor, docstring, type hints,
simplify).

Pure logic, no pygls and no file IO.  This module decides

* which code an action works on (the selection, or the enclosing function/class found in
  a tree-sitter tree) and how its indentation is taken off for the model and put back on
  the model's answer (:class:`CodeRegion`);
* the prompt, per model family: the model's chat template for instruct models (by the
  registry's ``chat_template`` name, else from the GGUF's own Jinja template), a plain
  Markdown instruction prompt for base models; counted with the model's own tokenizer
  against its context window (:func:`plan_prompt`);
* output hygiene: chat markup and Markdown fences stripped, truncated or unparseable
  rewrites refused with a message the user can act on (:func:`clean_rewrite`,
  :func:`validate_rewrite`, :func:`clean_explanation`).

:func:`run_action` is the job that runs on the engine's model worker thread (through
``CompletionEngine.run_exclusive``); it checks a cancel flag between tokens.
"""

from __future__ import annotations

import ast
import enum
import logging
import re
import textwrap
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsp_server.families.chat import CHAT_MARKUP, PromptStyle, prompt_style
from lsp_server.families.completion import Segment

if TYPE_CHECKING:
    from lsp_server.engine.model import LoadedModel

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- actions


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


# ----------------------------------------------------------------------- errors


class ActionError(Exception):
    """An action could not produce a result; the message is for the user as is."""


class SelectionTooLarge(ActionError):
    pass


class RewriteRejected(ActionError):
    pass


class ActionCancelled(Exception):
    """Generation stopped because the cancel flag was set (``reason`` says by whom)."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


class CancelToken:
    """A cancel flag for one action, with the reason it was set (first reason wins)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if not self.event.is_set():
                self.reason = reason
                self.event.set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


class ActionSlot:
    """At most one code action at a time: starting one cancels the one still running.

    The model runs one job at a time anyway (the engine's single worker thread); this adds
    "latest wins" on top, so a forgotten long explanation never holds up the action the
    user just picked (nor the completions queued behind it) for more than one token.
    """

    SUPERSEDED = "superseded by a newer Quill action"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: CancelToken | None = None

    def start(self) -> CancelToken:
        token = CancelToken()
        with self._lock:
            if self._current is not None:
                self._current.cancel(self.SUPERSEDED)
            self._current = token
        return token

    def finish(self, token: CancelToken) -> None:
        with self._lock:
            if self._current is token:
                self._current = None

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            if self._current is not None:
                self._current.cancel(reason)


# ----------------------------------------------------------------------- region


def _leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _common_prefix(items: Iterable[str]) -> str:
    items = list(items)
    if not items:
        return ""
    lo, hi = min(items), max(items)
    n = 0
    while n < len(lo) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


@dataclass(frozen=True)
class CodeRegion:
    """The text an action works on, ``text[start:end]`` of a document.

    The model sees :attr:`code`: the selection without its surrounding blank lines and
    without the indentation it shares with its first line.  :meth:`replacement` maps the
    model's code back: the same indentation, the same leading and trailing whitespace, so
    that replacing ``[start, end)`` with it changes nothing outside the code itself.
    """

    document: str
    start: int
    end: int
    head: str  # leading blank lines of the selection, kept verbatim
    tail: str  # trailing whitespace of the selection, kept verbatim
    lead: str  # text of the first code line before the code starts (outside the selection)
    base: str  # indentation shared by the code's lines, taken off for the model
    inline: bool  # the code starts after other code on its line (an expression)
    code: str  # what the model sees ("\n" newlines)
    newline: str  # the document's newline

    @classmethod
    def from_document(cls, document: str, start: int, end: int) -> CodeRegion:
        start, end = max(0, min(start, end)), min(len(document), max(start, end))
        sel = document[start:end]
        stripped = sel.lstrip(" \t\r\n")
        lead_ws = sel[: len(sel) - len(stripped)]
        nl = lead_ws.rfind("\n")
        head = lead_ws[: nl + 1] if nl != -1 else ""
        body = sel[len(head) :]
        core = body.rstrip(" \t\r\n")
        tail = body[len(core) :]
        core_start = start + len(head)
        line_start = document.rfind("\n", 0, core_start) + 1
        lead = document[line_start:core_start]
        newline = "\r\n" if "\r\n" in document else "\n"
        lines = core.replace("\r\n", "\n").split("\n")
        inline = bool(lead.strip())
        rest = [ln for ln in lines[1:] if ln.strip()]
        if inline:
            indents = [_leading_ws(lead)] + [_leading_ws(ln) for ln in rest]
            base = _common_prefix(indents)
            first = lines[0]
        else:
            first = lead + lines[0]
            base = _common_prefix([_leading_ws(first)] + [_leading_ws(ln) for ln in rest])
        model_lines = [first if inline else first[len(base) :]]
        for ln in lines[1:]:
            model_lines.append(ln[len(base) :] if ln.strip() else "")
        return cls(
            document=document,
            start=start,
            end=end,
            head=head,
            tail=tail,
            lead=lead,
            base=base,
            inline=inline,
            code="\n".join(model_lines),
            newline=newline,
        )

    @property
    def selected(self) -> str:
        return self.document[self.start : self.end]

    @property
    def empty(self) -> bool:
        return not self.code.strip()

    def replacement(self, new_code: str) -> str:
        """The text to put in place of ``[start, end)`` for the model's ``new_code``."""
        lines = textwrap.dedent(new_code.replace("\r\n", "\n").strip("\n")).rstrip().split("\n")
        out: list[str] = []
        for i, ln in enumerate(lines):
            ln = ln.rstrip()
            if i == 0:
                if self.inline:
                    out.append(ln.lstrip())
                else:
                    full = self.base + ln
                    out.append(full[len(self.lead) :] if full.startswith(self.lead) else ln.lstrip())
            else:
                out.append(self.base + ln if ln else "")
        return self.head + self.newline.join(out) + self.tail

    def apply(self, replacement: str) -> str:
        """The document with ``[start, end)`` replaced."""
        return self.document[: self.start] + replacement + self.document[self.end :]


def relocate_region(region: CodeRegion, document: str) -> CodeRegion | None:
    """The same code in a newer version of the document (the user typed while the model
    ran): at the same offsets if it is still there, else its one occurrence; None when it
    was edited or is ambiguous."""
    selected = region.selected
    if document[region.start : region.end] == selected and document[: region.start] == region.document[: region.start]:
        return CodeRegion.from_document(document, region.start, region.end)
    first = document.find(selected)
    if first == -1 or document.find(selected, first + 1) != -1:
        return None
    return CodeRegion.from_document(document, first, first + len(selected))


# -------------------------------------------------------------- enclosing definition

# Tree-sitter node types that are a function, method or class, across the bundled grammars.
DEFINITION_TYPES = frozenset(
    {
        # Python
        "function_definition",
        "class_definition",
        "decorated_definition",
        # JavaScript / TypeScript
        "function_declaration",
        "generator_function_declaration",
        "method_definition",
        "class_declaration",
        "abstract_class_declaration",
        "interface_declaration",
        # Go
        "method_declaration",
        "type_declaration",
        # Rust
        "function_item",
        "impl_item",
        "trait_item",
        "struct_item",
        "enum_item",
        "mod_item",
        # Java / C# / Kotlin / Swift / PHP
        "constructor_declaration",
        "enum_declaration",
        "record_declaration",
        "struct_declaration",
        "local_function_statement",
        "object_declaration",
        "protocol_declaration",
        # C / C++
        "class_specifier",
        "struct_specifier",
        # Ruby / Scala / Lua
        "method",
        "singleton_method",
        "class",
        "module",
        "object_definition",
        "trait_definition",
    }
)
# Anonymous functions count when they are the value of a declaration (``const f = () => ...``).
_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "func_literal", "lambda"})
_DECLARATIONS = frozenset({"lexical_declaration", "variable_declaration", "short_var_declaration"})
# Wrappers that belong to the definition (decorators, export).
_WRAPPERS = frozenset({"decorated_definition", "export_statement"})


def _definition_of(node: Any) -> Any | None:
    if not node.is_named or node.parent is None:
        # The keyword `class` is an anonymous node of type "class"; Python's root node is
        # a "module" (Ruby's `module` definition is never the root).
        return None
    if node.type in DEFINITION_TYPES:
        return node
    if node.type in _FUNCTION_VALUES:
        parent = node.parent
        if parent is not None and parent.type in ("variable_declarator", "assignment"):
            grand = parent.parent
            if grand is not None and grand.type in _DECLARATIONS:
                return grand
    return None


def enclosing_definition(root: Any, byte: int) -> tuple[int, int] | None:
    """Byte range of the innermost function/method/class around ``byte`` (with its
    decorators), or None.  ``root`` is a tree-sitter root node."""
    node = root.descendant_for_byte_range(byte, byte)
    while node is not None:
        found = _definition_of(node)
        if found is not None and found.start_byte <= byte <= found.end_byte:
            while found.parent is not None and found.parent.type in _WRAPPERS:
                found = found.parent
            return found.start_byte, found.end_byte
        node = node.parent
    return None


def probe_offset(text: str, offset: int) -> int:
    """Where to look for the enclosing definition of a cursor at ``offset``: a cursor in a
    line's indentation (or at its end) belongs to that line's code."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end == -1 else line_end
    line = text[line_start:line_end]
    if not line.strip():
        return offset
    if not text[line_start:offset].strip():
        return line_start + len(_leading_ws(line))
    if not text[offset:line_end].strip():
        return line_start + len(line.rstrip()) - 1
    return offset


def byte_to_index(text: str, byte: int, encoded: bytes | None = None) -> int:
    """String index of a UTF-8 byte offset into ``text``."""
    data = encoded if encoded is not None else text.encode("utf-8", "surrogatepass")
    return len(data[:byte].decode("utf-8", "surrogatepass"))


def index_to_byte(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------- prompts

SYSTEM_PROMPT = (
    "You are Quill, a careful programming assistant inside a code editor. You answer about the code the user selected."
)


def fence_for(code: str) -> str:
    """A Markdown fence longer than any run of backticks in ``code``."""
    longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=0)
    return "`" * max(3, longest + 1)


@dataclass(frozen=True)
class ActionRequest:
    """One action on one piece of code (plain data, made by the protocol layer)."""

    kind: ActionKind
    code: str  # dedented, see CodeRegion.code
    language: str | None = None  # tree-sitter name, also the fence tag
    path: str = ""  # workspace-relative (shown to base models, which continue a file)
    temperature: float = 0.0


@dataclass(frozen=True)
class ActionPrompt:
    segments: list[Segment]
    stop: tuple[str, ...]
    fenced_answer: bool  # the prompt ends inside an opened code fence
    style: str
    # Code the answer starts with, already in the prompt (see python_docstring_primer);
    # the model's text continues it.
    answer_prefix: str = ""


def _code_noun(language: str | None) -> str:
    name = LANGUAGE_NAMES.get(language or "", language or "")
    return f"{name} code" if name else "code"


def _user_message(req: ActionRequest, fence: str) -> str:
    # The file name stays out of the prompt: the language is stated, and a small model
    # spins stories out of names ("shapes.py": "a list of shapes").
    what = _code_noun(req.language)
    code = f"{fence}{req.language or ''}\n{req.code}\n{fence}"
    if req.kind is ActionKind.EXPLAIN:
        return (
            f"Explain what this {what} does, for a developer who is reading it.\n\n{code}\n\n"
            "Answer in Markdown: one sentence that sums it up, then the key steps as a short bullet "
            "list. Be brief."
        )
    return (
        f"Rewrite this {what} to {task_for(req.kind, req.language)}.\n\n{code}\n\n"
        "Reply with only the complete rewritten code in one code block, with no explanation."
    )


def build_prompt(req: ActionRequest, style: PromptStyle) -> ActionPrompt:
    fence = fence_for(req.code)
    tag = req.language or ""
    rewrite = ACTIONS[req.kind].rewrite
    if style is None:
        return _plain_prompt(req, fence)
    segments = style.segments(SYSTEM_PROMPT, _user_message(req, fence))
    if segments is None:  # the GGUF template failed to render after all
        return _plain_prompt(req, fence)
    stop: tuple[str, ...] = tuple(style.stop)
    primer = _primer(req)
    if rewrite:
        # Start the answer inside a code fence: even a small model then writes code, and
        # the closing fence ends it.
        segments = segments + [Segment("text", f"{fence}{tag}\n{primer}", "answer")]
        stop += (fence,)
    return ActionPrompt(segments=segments, stop=stop, fenced_answer=rewrite, style=style.name, answer_prefix=primer)


def _primer(req: ActionRequest) -> str:
    if req.kind is ActionKind.DOCSTRING and req.language == "python":
        return python_docstring_primer(req.code)
    return ""


_PY_DEFINITION = re.compile(r"(async\s+def|def|class)\s")


def python_docstring_primer(code: str) -> str:
    """The start of the answer for "Add docstring" on a Python definition: its header line
    and an opened docstring, so that even a small model writes the docstring first (and
    does not wander off into rewriting the code).  Empty when that does not apply."""
    lines = code.split("\n")
    for k, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith(("@", "#")):
            continue  # decorators and comments before the definition
        if line != text.lstrip() or not _PY_DEFINITION.match(text) or not text.endswith(":"):
            return ""  # not a one-line header at the top level of the selection
        body = [ln for ln in lines[k + 1 :] if ln.strip()]
        if body and body[0].lstrip().startswith(('"""', "'''", 'r"""', "r'''")):
            return ""  # it has a docstring already
        indent = _leading_ws(body[0]) if body and _leading_ws(body[0]) else "    "
        return "\n".join(lines[: k + 1]) + "\n" + indent + '"""'
    return ""


def _plain_prompt(req: ActionRequest, fence: str) -> ActionPrompt:
    """A base model continues a document; make the answer its natural continuation."""
    what = _code_noun(req.language)
    tag = req.language or ""
    where = f" (`{req.path}`)" if req.path else ""  # a base model continues a file: its name helps
    original = f"{fence}{tag}\n{req.code}\n{fence}\n"
    if req.kind is ActionKind.EXPLAIN:
        text = f"## {what[0].upper() + what[1:]}{where}\n\n{original}\n## What the code above does\n\n"
        return ActionPrompt([Segment("text", text, "user")], ("\n## ", fence), False, "plain")
    task = task_for(req.kind, req.language)
    primer = _primer(req)
    text = (
        f"## {what[0].upper() + what[1:]}{where}\n\n{original}\n"
        f"## The same code, rewritten to {task}\n\n{fence}{tag}\n{primer}"
    )
    return ActionPrompt([Segment("text", text, "user")], (fence,), True, "plain", answer_prefix=primer)


# ------------------------------------------------------------------------ budget

EXPLAIN_MAX_TOKENS = 384
EXPLAIN_MIN_TOKENS = 96
REWRITE_EXTRA_TOKENS = 128  # room for added docstrings / annotations beyond the original


@dataclass(frozen=True)
class PlannedPrompt:
    tokens: list[int]
    max_tokens: int
    code_tokens: int
    prompt: ActionPrompt


def tokenize_segments(backend: Any, segments: Sequence[Segment]) -> list[int]:
    tokens = list(backend.bos_tokens())
    bos = tokens[:1]
    for seg in segments:
        part = backend.tokenize(seg.text, special=seg.kind == "control")
        if bos and not tokens[len(bos) :] and part[:1] == bos:
            part = part[1:]  # the template spelled out the BOS the backend already adds
        tokens.extend(part)
    return tokens


def plan_prompt(
    backend: Any, n_ctx: int, req: ActionRequest, style: PromptStyle, model_name: str = "the model"
) -> PlannedPrompt:
    """Tokenize the prompt with the model's tokenizer and size the answer to the window.

    Raises SelectionTooLarge when the code cannot fit with room for a whole answer: a
    rewrite must have room for at least the original's length, never a truncated one.
    """
    prompt = build_prompt(req, style)
    tokens = tokenize_segments(backend, prompt.segments)
    code_tokens = len(backend.tokenize(req.code))
    room = n_ctx - len(tokens)
    if ACTIONS[req.kind].rewrite:
        need = code_tokens + 32
        want = int(code_tokens * 1.5) + REWRITE_EXTRA_TOKENS
        answer = "rewritten code"
    else:
        need = EXPLAIN_MIN_TOKENS
        want = EXPLAIN_MAX_TOKENS
        answer = "explanation"
    if room < need:
        raise SelectionTooLarge(
            f"the selection is too large for the model: it is {code_tokens} tokens, and with the instructions "
            f"and room for the {answer} it needs about {len(tokens) + need} tokens, but {model_name} has a "
            f"context window of {n_ctx} tokens. Select a smaller piece of code, or raise quill.contextTokens "
            "if the model supports a longer context."
        )
    return PlannedPrompt(tokens=tokens, max_tokens=min(want, room), code_tokens=code_tokens, prompt=prompt)


# ----------------------------------------------------------------------- hygiene

_ROLE_LINE = re.compile(r"^\s*(assistant|model|response|answer)\s*:?\s*\n", re.IGNORECASE)
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[ \t]*$")
_PROSE_START = re.compile(
    r"^(here|sure|certainly|of course|below|this is|the (rewritten|refactored|simplified|updated|following))\b",
    re.IGNORECASE,
)


def strip_chat_markup(text: str, extra: Sequence[str] = ()) -> str:
    """Cut the text at the first chat control marker and drop a leading role name."""
    cut = len(text)
    for marker in tuple(CHAT_MARKUP) + tuple(extra):
        if marker:
            i = text.find(marker)
            if i != -1:
                cut = min(cut, i)
    text = text[:cut]
    return _ROLE_LINE.sub("", text, count=1)


def _fenced_blocks(lines: list[str]) -> list[tuple[int, int | None]]:
    """(first code line, closing fence line or None) of each fenced block."""
    blocks: list[tuple[int, int | None]] = []
    i = 0
    while i < len(lines):
        m = _FENCE_LINE.match(lines[i])
        if m:
            char, size = m.group(1)[0], len(m.group(1))
            for j in range(i + 1, len(lines)):
                mm = _FENCE_LINE.match(lines[j])
                if mm and mm.group(1)[0] == char and len(mm.group(1)) >= size and not mm.group(2):
                    blocks.append((i + 1, j))
                    i = j + 1
                    break
            else:
                blocks.append((i + 1, None))
                break
            continue
        i += 1
    return blocks


def extract_code(text: str, *, fenced_answer: bool, original: str = "") -> str:
    """The code in a model's answer.

    ``fenced_answer``: the prompt opened a fence, so the answer starts with code and ends
    at the closing fence (the model may still open a second fence; that one is unwrapped).
    Otherwise the first fenced block that is not just the original code, or the whole text
    without a leading line of prose.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    if fenced_answer:
        # Stop at a closing fence that the stop strings did not catch (a longer one).
        for k, ln in enumerate(lines):
            m = _FENCE_LINE.match(ln)
            if m and not m.group(2) and k > 0 and "".join(lines[:k]).strip():
                lines = lines[:k]
                break
        stripped = "\n".join(lines).strip("\n")
        if not _FENCE_LINE.match(stripped.split("\n", 1)[0] if stripped else ""):
            return stripped
        lines = stripped.split("\n")
    blocks = _fenced_blocks(lines)
    if blocks:
        candidates = ["\n".join(lines[a:b] if b is not None else lines[a:]) for a, b in blocks]
        norm_original = _normalize_code(original)
        for cand in candidates:
            if cand.strip() and _normalize_code(cand) != norm_original:
                return cand.strip("\n")
        return candidates[0].strip("\n")
    # No fence: drop a leading line of prose ("Here is the simplified code:").
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and _PROSE_START.match(lines[0].strip()) and lines[0].rstrip().endswith(":"):
        lines.pop(0)
    return "\n".join(lines).strip("\n")


def _normalize_code(code: str) -> str:
    return "\n".join(ln.rstrip() for ln in textwrap.dedent(code.replace("\r\n", "\n")).strip().split("\n"))


def clean_rewrite(
    raw: str, *, fenced_answer: bool, original: str, stop_reason: str, extra_markup: Sequence[str] = ()
) -> str:
    """The code to put in place of ``original``; raises RewriteRejected when there is none
    that can be used.  Indentation is restored later by :meth:`CodeRegion.replacement`."""
    if stop_reason == "length":
        raise RewriteRejected(
            "the model's rewrite was cut off before it finished, so it was not applied. Try a smaller selection."
        )
    code = extract_code(strip_chat_markup(raw, extra_markup), fenced_answer=fenced_answer, original=original)
    code = "\n".join(ln.rstrip() for ln in code.split("\n")).strip("\n")
    if not code.strip():
        raise RewriteRejected("the model returned no code, so nothing was changed.")
    if _normalize_code(code) == _normalize_code(original):
        raise RewriteRejected("the model suggested no change.")
    return code


def clean_explanation(raw: str, *, stop_reason: str, extra_markup: Sequence[str] = ()) -> str:
    """Markdown for the user: chat markup cut, repeated lines collapsed, fences closed."""
    text = strip_chat_markup(raw, extra_markup).replace("\r\n", "\n")
    lines: list[str] = []
    for ln in text.split("\n"):
        ln = ln.rstrip()
        if ln and lines and ln == lines[-1]:
            continue  # a small model stuck in a loop
        if not ln and lines and not lines[-1]:
            continue  # at most one blank line in a row
        lines.append(ln)
    text = "\n".join(lines).strip()
    if not text:
        raise ActionError("the model returned no explanation.")
    opened = None
    for ln in text.split("\n"):
        m = _FENCE_LINE.match(ln)
        if m:
            if opened is None:
                opened = m.group(1)
            elif m.group(1)[0] == opened[0] and len(m.group(1)) >= len(opened) and not m.group(2):
                opened = None
    if opened is not None:
        text += f"\n{opened}"
    if stop_reason == "length":
        text += "\n\n*(The explanation was cut off at the length limit.)*"
    return text


def looping(text: str, repeats: int = 3) -> bool:
    """True when the last ``repeats`` non-blank lines are the same line (greedy decoding
    of a small model can loop for ever)."""
    tail = [ln.strip() for ln in text.rstrip("\n").split("\n")[-(repeats * 2 + 1) :] if ln.strip()]
    return len(tail) >= repeats and len(set(tail[-repeats:])) == 1 and len(tail[-1]) > 3 and text.endswith("\n")


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


# ---------------------------------------------------------------------------- job


@dataclass
class ActionResult:
    text: str  # cleaned code (rewrites, without the original indentation) or Markdown
    raw: str
    stop_reason: str
    prompt_tokens: int
    generated_tokens: int
    style: str
    timings_ms: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[int, int], None]  # (tokens generated, max tokens)


def run_action(
    model: LoadedModel,
    req: ActionRequest,
    cancel: threading.Event,
    on_progress: ProgressCallback | None = None,
    progress_every: int = 8,
) -> ActionResult:
    """Prompt, generate and clean one action.  Runs on the model worker thread.

    Raises ActionCancelled when ``cancel`` is set (also while still queued), ActionError
    subclasses with a message for the user.
    """
    import time

    from lsp_server.backends import GenerationRequest

    if cancel.is_set():
        raise ActionCancelled()
    t0 = time.perf_counter()
    backend = model.backend
    info = backend.info
    manifest = model.manifest
    style = prompt_style(
        manifest.chat_template if manifest is not None else None,
        info.chat_template,
        has_manifest=manifest is not None,
    )
    planned = plan_prompt(backend, info.n_ctx, req, style, info.name or "the model")
    prompt = planned.prompt
    spec = ACTIONS[req.kind]
    stops = tuple(dict.fromkeys(prompt.stop + tuple(model.stop)))
    # Markup to cut from the answer: the family's and the model's stop strings, not the
    # closing fence (an answer that re-opens a fence is unwrapped by extract_code).
    markup = tuple(
        s for s in dict.fromkeys(tuple(style.stop if style is not None else ()) + tuple(model.stop)) if "`" not in s
    )
    count = 0

    def should_stop(text: str) -> bool:
        nonlocal count
        count += 1
        if on_progress is not None and (count == 1 or count % progress_every == 0):
            try:
                on_progress(count, planned.max_tokens)
            except Exception:  # progress is cosmetic; never fail the job over it
                pass
        return (not spec.rewrite) and looping(text)

    t1 = time.perf_counter()
    gen = backend.generate(
        GenerationRequest(
            prompt=planned.tokens,
            max_tokens=planned.max_tokens,
            temperature=req.temperature,
            stop=stops,
            should_stop=should_stop,
        ),
        cancel,
    )
    if gen.stop_reason == "cancelled" or cancel.is_set():
        raise ActionCancelled()
    if spec.rewrite:
        text = clean_rewrite(
            prompt.answer_prefix + gen.text,
            fenced_answer=prompt.fenced_answer,
            original=req.code,
            stop_reason=gen.stop_reason,
            extra_markup=markup,
        )
    else:
        text = clean_explanation(gen.text, stop_reason=gen.stop_reason, extra_markup=markup)
    return ActionResult(
        text=text,
        raw=prompt.answer_prefix + gen.text,
        stop_reason=gen.stop_reason,
        prompt_tokens=len(planned.tokens),
        generated_tokens=len(gen.tokens),
        style=prompt.style,
        timings_ms={"prompt_build": (t1 - t0) * 1000, "prompt_eval": gen.prompt_ms, "generate": gen.generate_ms},
    )
