"""The prompt for an action, and its budget.

* Per model family (:func:`build_prompt`): the model's chat format for instruct models
  (``lsp_server.families.chat``: the registry's ``chat_template`` name, else the GGUF's own
  Jinja template), a plain Markdown continuation for base models; a rewrite's answer starts
  inside an opened code fence (:func:`fence_for`), "Add docstring" on a Python definition
  with its header and an opened docstring (:func:`python_docstring_primer`).
* The budget (:func:`plan_prompt`): the prompt counted with the model's own tokenizer
  against its context window, the answer sized to the room left, a selection too large for
  a whole answer refused (:class:`~lsp_server.engine.actions.errors.SelectionTooLarge`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lsp_server.engine.actions.errors import SelectionTooLarge
from lsp_server.engine.actions.region import leading_ws
from lsp_server.engine.actions.spec import ACTIONS, LANGUAGE_NAMES, ActionKind, task_for
from lsp_server.engine.tokens import continuation
from lsp_server.families.chat import PromptStyle
from lsp_server.families.completion import Segment

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
        indent = leading_ws(body[0]) if body and leading_ws(body[0]) else "    "
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
    """BOS, then the segments as llama.cpp tokenizes the chat prompt's whole text, special
    tokens parsed in the markup only: runs of text (markup without special tokens of this
    vocabulary included) are tokenized as one text, and a SentencePiece vocabulary's
    leading space goes where llama.cpp puts it, at the start and after a special token,
    not before every piece."""
    tokens = list(backend.bos_tokens())
    bos = tokens[:1]
    fresh = True  # the next text starts the prompt or follows a special token
    for special, text in _runs(backend, segments):
        part = backend.tokenize(text, special=special) if fresh else continuation(backend, text, special=special)
        if bos and not tokens[len(bos) :] and part[:1] == bos:
            part = part[1:]  # the template spelled out the BOS the backend already adds
        tokens.extend(part)
        # A special token adds no text of its own (llama.cpp renders control tokens empty).
        fresh = special and bool(part) and not backend.detokenize(part[-1:])
    return tokens


def _runs(backend: Any, segments: Sequence[Segment]) -> list[tuple[bool, str]]:
    """(parse special tokens, text) of the segments, adjacent ones of a kind joined; markup
    that holds no special token of this vocabulary counts as text."""
    runs: list[tuple[bool, str]] = []
    for seg in segments:
        if not seg.text:
            continue
        special = seg.kind == "control" and backend.tokenize(seg.text, special=True) != backend.tokenize(seg.text)
        if runs and runs[-1][0] == special:
            runs[-1] = (special, runs[-1][1] + seg.text)
        else:
            runs.append((special, seg.text))
    return runs


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
