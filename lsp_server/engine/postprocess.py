"""When to complete, how much, and cleaning what the model produced.

Pure text logic: the syntax facts it needs (is the cursor in a comment, does a block body
start here) come in a :class:`SyntaxHint` computed by ``context/parser.py`` with tree-sitter.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from lsp_server.context.parser import SyntaxHint

_WORD = re.compile(r"\w")
_CLOSERS = set(")]}>\"'`;:,. \t")
BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", " do", " then")
MAX_BLOCK_LINES = 12


class Mode(enum.Enum):
    NONE = "none"
    LINE = "line"
    BLOCK = "block"


@dataclass(frozen=True)
class CursorText:
    """The text around the cursor that the rules look at."""

    line_prefix: str  # current line up to the cursor
    line_suffix: str  # current line after the cursor
    prev_line: str = ""  # last non-blank line above
    next_line: str = ""  # first non-blank line below

    @classmethod
    def from_prefix_suffix(cls, prefix: str, suffix: str) -> CursorText:
        nl = prefix.rfind("\n")
        line_prefix = prefix[nl + 1 :]
        end = suffix.find("\n")
        line_suffix = suffix if end == -1 else suffix[:end]
        prev_line = ""
        if nl != -1:
            # Look back at most a few KB for the previous non-blank line.
            for line in reversed(prefix[max(0, nl - 4096) : nl].split("\n")):
                if line.strip():
                    prev_line = line
                    break
        next_line = ""
        if end != -1:
            for line in suffix[end + 1 : end + 4097].split("\n"):
                if line.strip():
                    next_line = line
                    break
        return cls(line_prefix.rstrip("\r"), line_suffix.rstrip("\r"), prev_line.rstrip("\r"), next_line.rstrip("\r"))


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def decide_mode(cur: CursorText, hint: SyntaxHint | None = None) -> Mode:
    """Nothing, one line, or a block, from the cursor's position."""
    hint = hint or SyntaxHint()
    after = cur.line_suffix
    if after[:1] and _WORD.match(after[:1]):
        return Mode.NONE  # inside a word: a suggestion would split it
    if after.strip() and not set(after.strip()) <= _CLOSERS:
        return Mode.LINE  # code follows on this line: fill the gap only
    if hint.in_comment or hint.in_string:
        return Mode.LINE
    before = cur.line_prefix
    if not before.strip():
        if hint.block_body_expected or cur.prev_line.rstrip().endswith(BLOCK_OPENERS):
            return Mode.BLOCK
        return Mode.LINE
    if before.rstrip().endswith(BLOCK_OPENERS) and not after.strip():
        return Mode.BLOCK
    return Mode.LINE


def block_min_indent(cur: CursorText) -> int:
    """Lines after the first that are indented less than this end the block."""
    if not cur.line_prefix.strip():
        return len(cur.line_prefix.expandtabs(4)) if "\t" in cur.line_prefix else len(cur.line_prefix)
    return indent_of(cur.line_prefix) + 1


def stop_condition(mode: Mode, cur: CursorText) -> Callable[[str], bool]:
    """A predicate on the text generated so far that says "enough"."""
    if mode is Mode.LINE:

        def line_done(text: str) -> bool:
            return "\n" in text

        return line_done

    min_indent = block_min_indent(cur)

    def block_done(text: str) -> bool:
        lines = text.split("\n")
        complete = lines[:-1]  # the last line may still be growing
        if len(complete) > MAX_BLOCK_LINES:
            return True
        for line in complete[1:]:
            if line.strip() and indent_of(line) < min_indent:
                return True
        return False

    return block_done


def _strip_suffix_overlap(text: str, line_suffix: str) -> str:
    """Drop the end of ``text`` that the rest of the line already has (e.g. ")")."""
    rest = line_suffix.strip()
    if not rest:
        return text
    stripped = text.rstrip()
    for k in range(len(rest), 0, -1):
        if stripped.endswith(rest[:k]):
            return stripped[: len(stripped) - k].rstrip() if rest[:k].strip() else stripped
    # "foo(x):" typed where the line already ends in ")": cut where the closers begin.
    if set(rest) <= _CLOSERS - {" ", "\t"}:
        idx = stripped.rfind(rest)
        if idx > 0:
            return stripped[:idx]
    return text


def finalize(text: str, mode: Mode, cur: CursorText, forced_prefix: str = "") -> str:
    """Clean a raw generation into the text to insert at the cursor ("" for nothing)."""
    if mode is Mode.NONE:
        return ""
    if forced_prefix:
        if not text.startswith(forced_prefix):
            return ""  # the model refused the healed prefix: nothing sensible to insert
        text = text[len(forced_prefix) :]
    text = text.replace("\r\n", "\n").replace("\r", "")
    if mode is Mode.LINE:
        text = text.split("\n", 1)[0]
        text = text.rstrip()
        text = _strip_suffix_overlap(text, cur.line_suffix)
    else:
        lines = text.split("\n")
        min_indent = block_min_indent(cur)
        kept = [lines[0]]
        for line in lines[1 : MAX_BLOCK_LINES + 1]:
            if line.strip() and indent_of(line) < min_indent:
                break
            kept.append(line)
        while len(kept) > 1 and not kept[-1].strip():
            kept.pop()
        text = "\n".join(line.rstrip() for line in kept)
        # Do not repeat what already follows the cursor.
        nxt = cur.next_line.strip()
        if nxt:
            out: list[str] = []
            for line in text.split("\n"):
                if line.strip() == nxt and out:
                    break
                out.append(line)
            text = "\n".join(out).rstrip()
    if not text.strip():
        return ""
    # A line that only repeats the next line of the file is noise.
    first = text.strip().split("\n", 1)[0].strip()
    if cur.next_line.strip() and first == cur.next_line.strip() and not cur.line_prefix.strip():
        return ""
    return text
