"""Output hygiene: the model's answer made fit to use.  Chat markup and Markdown fences
stripped (:func:`strip_chat_markup`, :func:`extract_code`), cut-off, empty or unchanged
rewrites refused with a message the user can act on (:func:`clean_rewrite`), explanations
tidied (:func:`clean_explanation`), and a small model stuck in a loop noticed
(:func:`looping`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from lsp_server.engine.actions.errors import ActionError, RewriteRejected
from lsp_server.families.chat import CHAT_MARKUP

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
