"""When to complete, how much, and cleaning what the model produced.

Pure text logic: the syntax facts it needs (is the cursor in a comment, does a block body
start here) come in a :class:`SyntaxHint` computed by ``context/parser.py`` with tree-sitter.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from lsp_server.context.parser import SyntaxHint

_WORD = re.compile(r"\w")
_CLOSERS = set(")]}>\"'`;:,. \t")
BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", " do", " then")
MAX_BLOCK_LINES = 12
# Lines a suggestion may run ahead looking for the code below the cursor (then it fills
# the gap exactly); without meeting it the suggestion is one line.
REJOIN_LINES = 6
# A line longer than this (counting the text before the cursor on the cursor's line) is a
# runaway: the model repeating itself or rambling to its token limit.  Of 29 suggestions
# with such a line in five dev-set runs none was right there, and they were the slowest
# (1.0-2.7 s): generation stops at it and that line is not shown (docs/suggestion-quality.md).
MAX_LINE_CHARS = 120
# The search for the code below may take as long again as the suggestion's own line took,
# and at least this long (``lookahead_capped``).  Bounded only by the latency target, the
# defaults cost 2.32x today's p50 on the fim set (most holes end a line); with this budget
# 1.73x, and 1 of 164 completions changed.
LOOKAHEAD_MIN_S = 0.2


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
    if after[:1] and _WORD.match(after[:1]) and cur.line_prefix[-1:] and _WORD.match(cur.line_prefix[-1:]):
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


def _continues(cur: CursorText) -> bool:
    """Nothing follows the cursor on its line: a one-line suggestion may grow past it
    (the lines that lead up to the code below)."""
    return not cur.line_suffix.strip()


def _rejoin_base(cur: CursorText) -> int | None:
    """For a suggestion that fills the gap up to the code below: the indentation under
    which lines are past that code (None: no code below to meet)."""
    if not cur.next_line.strip():
        return None
    return indent_of(cur.next_line)


def _rejoin_index(lines: list[str], cur: CursorText) -> int | None:
    """The first of ``lines`` that is the code below the cursor."""
    nxt = cur.next_line.strip()
    if not nxt:
        return None
    return next((i for i, line in enumerate(lines) if line.strip() == nxt), None)


def _line_plan(lines: list[str], cur: CursorText) -> str:
    """How a one-line suggestion with nothing after the cursor may go on:
    "newline": the model ended the cursor's line, the suggestion is the next line (or the
    lines up to the code below, when it meets that code);
    "fill": the cursor's line is blank, the suggestion is its line (or the lines up to the
    code below, when it meets that code);
    "": one line.  (A line the model completes with a block opener stays one line: its
    body is the next suggestion, prepared in idle time once this one is shown.  Growing
    it here doubled the keystroke's p50 and passed no more dev tests.)"""
    if not lines[0].strip():
        return "newline" if len(lines) > 1 else ""
    return "fill" if not cur.line_prefix.strip() else ""


def _opens_lines(cur: CursorText) -> bool:
    """Only indentation before the cursor and code after it: new lines may go above
    that code (Enter pressed before a statement)."""
    return not cur.line_prefix.strip() and bool(cur.line_suffix.strip())


def _lines_above(text: str, cur: CursorText) -> str | None:
    """Lines inserted above the code after the cursor: the generated lines before the
    one that is that code, indented as it is (None: the model never wrote it)."""
    lines = text.split("\n")
    complete = lines[:-1] if not text.endswith("\n") else lines
    rest = cur.line_suffix.strip()
    indent = cur.line_prefix + cur.line_suffix[: len(cur.line_suffix) - len(cur.line_suffix.lstrip())]
    for k in range(1, len(complete)):
        line = complete[k]
        if line.strip() == rest:
            if line[: len(line) - len(line.lstrip())] not in (indent, indent.expandtabs(4)):
                return None  # it would move the code to another indentation
            kept = [ln.rstrip() for ln in complete[:k]]
            if not any(ln.strip() for ln in kept):
                return None
            return "\n".join(kept) + "\n" + cur.line_prefix
    return None


def _lookahead_lines(lines: list[str], plan: str) -> list[str]:
    """The lines that fill the gap: after the ended line for "newline", all for "fill"."""
    return lines[1:] if plan == "newline" else lines


def _runaway_at(text: str, cur: CursorText) -> int:
    """Where the first line of ``text`` (a generation at the cursor) that runs past
    ``MAX_LINE_CHARS`` starts, or -1."""
    start = 0
    width = len(cur.line_prefix.expandtabs(4))
    while True:
        end = text.find("\n", start)
        line = text[start:] if end == -1 else text[start:end]
        if width + len(line.expandtabs(4)) > MAX_LINE_CHARS:
            return start
        if end == -1:
            return -1
        start, width = end + 1, 0


def stop_condition(mode: Mode, cur: CursorText, grow: bool = True) -> Callable[[str], bool]:
    """A predicate on the text generated so far that says "enough".  ``grow``: a line
    with nothing after the cursor may go past itself (``_line_plan``).  A runaway line
    (``MAX_LINE_CHARS``) is always enough."""
    enough = _stop_condition(mode, cur, grow)

    def stop(text: str) -> bool:
        return enough(text) or _runaway_at(text, cur) != -1

    return stop


def _stop_condition(mode: Mode, cur: CursorText, grow: bool) -> Callable[[str], bool]:
    if mode is Mode.LINE:
        if grow and _opens_lines(cur):
            rest = cur.line_suffix.strip()

            def lines_above(text: str) -> bool:
                complete = text.split("\n")[:-1]
                if not complete:
                    return False
                if rest in complete[0] or len(complete) > REJOIN_LINES:
                    return True
                return any(line.strip() == rest for line in complete[1:])

            return lines_above
        if not (grow and _continues(cur)):

            def line_done(text: str) -> bool:
                return "\n" in text

            return line_done
        base = _rejoin_base(cur)

        def line_grows(text: str) -> bool:
            lines = text.split("\n")
            complete = lines[:-1]
            if not complete:
                return False
            plan = _line_plan(lines, cur)
            if plan == "":
                return True
            body = _lookahead_lines(complete, plan)
            if plan == "newline" and not any(line.strip() for line in body):
                return len(body) > 1  # blank lines only: give up after two
            if base is None:
                return bool(body) and any(line.strip() for line in body)  # one line, nothing to meet
            if len(body) > REJOIN_LINES or _rejoin_index(body, cur) is not None:
                return True
            return any(line.strip() and indent_of(line) < base for line in body)

        return line_grows

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


def lookahead_capped(
    cond: Callable[[str], bool],
    cur: CursorText,
    until: float | None,
    clock: Callable[[], float] = time.perf_counter,
    start: float | None = None,
) -> Callable[[str], bool]:
    """``cond`` (a :func:`stop_condition` for a line), and also "enough" once the text
    holds a suggestion and the lines looked ahead past it (the search for the code below
    the cursor, up to ``REJOIN_LINES``) have taken as long as that suggestion did since
    ``start`` (at least ``LOOKAHEAD_MIN_S``), or ``clock()`` is past ``until``.  What is
    given up is the search, never the line itself.  ``until`` None: no cap."""
    if until is None:
        return cond
    t_start = clock() if start is None else start
    ready_at: list[float] = []

    def stop(text: str) -> bool:
        if cond(text):
            return True
        if "\n" not in text:
            return False
        now = clock()
        if not ready_at:
            if not finalize(text[: text.rindex("\n")], Mode.LINE, cur):
                return False
            ready_at.append(now)
        return now >= until or now - ready_at[0] >= max(LOOKAHEAD_MIN_S, ready_at[0] - t_start)

    return stop


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


def _meet_line_suffix(text: str, line_suffix: str) -> str:
    """The part of a generated line before the text the cursor's line goes on with
    ("" when the line does not contain it)."""
    rest = line_suffix.strip()
    idx = text.find(rest, 1)
    if not rest or idx <= 0:
        return ""
    head = text[:idx]
    if line_suffix[:1] in " \t":
        head = head.rstrip()
    return head if head.strip() else ""


def _grow_line(text: str, cur: CursorText) -> str | None:
    """A one-line suggestion that goes past its line (see ``_line_plan``); None when it
    is just one line (the caller cleans it as such)."""
    lines = [line.rstrip() for line in text.split("\n")]
    plan = _line_plan(lines, cur)
    if plan == "" or len(lines) < 2:
        return None
    body = _lookahead_lines(lines, plan)
    # A last line still growing (the generation ran out of tokens) is not a line.
    complete = body[:-1] if not text.endswith("\n") else body
    idx = _rejoin_index(complete, cur)
    if idx is not None:
        kept = complete[:idx]
    else:
        first = next((i for i, line in enumerate(body) if line.strip()), None)
        if first is None:
            return ""
        kept = body[: first + 1]
    while kept and not kept[-1].strip():
        kept.pop()
    if not kept:
        return ""
    if plan == "newline":
        return "\n" + "\n".join(kept)
    return "\n".join(kept)


def finalize(text: str, mode: Mode, cur: CursorText, forced_prefix: str = "", grow: bool = True) -> str:
    """Clean a raw generation into the text to insert at the cursor ("" for nothing);
    ``grow`` as for :func:`stop_condition`."""
    if mode is Mode.NONE:
        return ""
    if forced_prefix:
        if not text.startswith(forced_prefix):
            return ""  # the model refused the healed prefix: nothing sensible to insert
        text = text[len(forced_prefix) :]
    text = text.replace("\r\n", "\n").replace("\r", "")
    runaway = _runaway_at(text, cur)
    if runaway != -1:
        text = text[:runaway]  # that line and what follows it go ("" when it is the first)
    if mode is Mode.LINE and grow and _continues(cur):
        grown = _grow_line(text, cur)
        if grown is not None:
            return grown
    if mode is Mode.LINE and grow and _opens_lines(cur) and cur.line_suffix.strip() not in text.split("\n", 1)[0]:
        above = _lines_above(text, cur)
        if above is not None:
            return above
    if mode is Mode.LINE:
        text = text.split("\n", 1)[0]
        text = text.rstrip()
        if _WORD.match(cur.line_suffix[:1]):
            # Inserted before a word: only a line that ends in what follows the cursor says
            # where the insertion ends (a model without the suffix writes the whole line).
            return _meet_line_suffix(text, cur.line_suffix)
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
