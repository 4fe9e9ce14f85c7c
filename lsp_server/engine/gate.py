"""The validity gate: a suggestion must not add a syntax error where it is inserted.

Before a suggestion is shown, the text around the cursor is parsed with it and without it
(tree-sitter, through ``context/parser.py``'s grammars; for Python also Python's own
parser, which is stricter) and the two are compared.  What the user is still typing is not
an error: the text is checked as the *start* of a valid file (brackets and strings still
open at the end are closed, a block opened at the end gets a body), with the rest of the
cursor's line after it.  Brackets closed further on in the document count only through a
bracket scan of the following lines: a suggestion that closes a bracket which the suffix
closes too adds an unmatched closer there.

``check`` says whether a text passes; ``trim`` cuts a failing one back to its longest
passing prefix at a token or line boundary.  Pure text logic; no model, no IO.
"""

from __future__ import annotations

import ast
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lsp_server.context.parser import MAX_PARSE_BYTES, language_for, thread_parser

logger = logging.getLogger(__name__)

# Lines of the document before the cursor that are parsed (tree-sitter), and how far back
# the start of a top-level Python statement is looked for (Python's parser).
WINDOW_LINES = 200
PY_TOP_LEVEL_LINES = 400
# Lines after the cursor whose brackets are scanned for a closer the suggestion took.
SUFFIX_LINES = 40
# At most this many prefixes are tried when trimming.
MAX_TRIM_TRIES = 12

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")": "(", "]": "[", "}": "{"}
_HASH_COMMENT = {"python", "ruby", "bash"}


@dataclass(frozen=True)
class Scan:
    """Brackets and strings still open at the end of a text, and closers with no opener."""

    stack: tuple[str, ...]
    quote: str  # the open string's delimiter ("" when none)
    unmatched: int  # closers with no (or the wrong) opener


def scan(text: str, language: str) -> Scan:
    """A small lexer: enough to track brackets outside strings and comments."""
    stack: list[str] = []
    unmatched = 0
    quote = ""
    hash_comment = language in _HASH_COMMENT
    slash_comment = not hash_comment or language == "php"
    char_quote = language not in ("rust",)  # 'a is a lifetime in Rust
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
            if c == "\n" and len(quote) == 1 and quote != "`":
                quote = ""  # an unterminated one-line string ends with its line
            i += 1
            continue
        if (hash_comment and c == "#") or (slash_comment and text.startswith("//", i)):
            j = text.find("\n", i)
            i = n if j == -1 else j
            continue
        if slash_comment and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j == -1 else j + 2
            continue
        if c in "\"'`":
            if c == "'" and not char_quote:
                i += 1
                continue
            if language == "python" and text.startswith(c * 3, i):
                quote = c * 3
                i += 3
                continue
            quote = c
            i += 1
            continue
        if c in _OPEN:
            stack.append(c)
        elif c in _CLOSE:
            if stack and stack[-1] == _CLOSE[c]:
                stack.pop()
            else:
                unmatched += 1
        i += 1
    return Scan(tuple(stack), quote, unmatched)


def close_text(text: str, language: str) -> str:
    """``text`` made into the end of a file: the open string and brackets closed, and in
    Python a block opened on the last line given a body, a decorator something to decorate."""
    s = scan(text, language)
    out = text + s.quote + "".join(_OPEN[b] for b in reversed(s.stack))
    if language == "python":
        last = out.rstrip().rsplit("\n", 1)[-1]
        code = last.split("#", 1)[0].rstrip() if "#" in last and not s.quote else last.rstrip()
        indent = len(last) - len(last.lstrip(" \t"))
        if code.endswith(":"):
            out = out.rstrip() + "\n" + " " * (indent + 4) + "pass"
        elif code.lstrip().startswith("@"):
            out = out.rstrip() + "\n" + " " * indent + "def _(): pass"
        elif code.endswith("\\"):
            out = out.rstrip()[:-1]
    return out + "\n"


# --------------------------------------------------------------- parsers
def _ts_errors(text: str, language: str, region_start: int) -> int | None:
    """Error and missing nodes of ``text`` that end after character ``region_start``
    (None when the grammar is not available)."""
    parser = thread_parser(language)
    if parser is None or len(text) > MAX_PARSE_BYTES:
        return None
    data = text.encode("utf-8", "surrogatepass")
    start_byte = len(text[:region_start].encode("utf-8", "surrogatepass"))
    try:
        tree = parser.parse(data)
    except Exception:  # a grammar failure degrades to "no opinion"
        logger.debug("tree-sitter failed on the gate window", exc_info=True)
        return None
    count = 0
    stack: list[Any] = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_byte <= start_byte and not node.is_missing:
            continue
        if node.type == "ERROR" or node.is_missing:
            if node.end_byte > start_byte or (node.is_missing and node.start_byte >= start_byte):
                count += 1
            continue
        if node.has_error:
            stack.extend(node.children)
    return count


def _py_error(text: str) -> int | None:
    """Offset of Python's first syntax error in ``text`` (None: it parses; -1: it could not
    be told)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, "<quill-gate>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        return None
    except SyntaxError as exc:
        if not exc.lineno:
            return -1
        lines = text.split("\n")
        line = min(len(lines), max(1, exc.lineno)) - 1
        start = sum(len(x) + 1 for x in lines[:line])
        if isinstance(exc, IndentationError) and "expected an indented block" not in str(exc.msg):
            return start  # a wrong indentation is wrong wherever the parser noticed it
        return start + max(0, (exc.offset or 1) - 1)
    except (ValueError, RecursionError, MemoryError):
        return -1


def _py_window_start(prefix: str) -> int | None:
    """Where the top-level statement around the cursor starts (a line at column 0 that
    is not a comment, a closer or inside a triple-quoted string), or None within reach."""
    end = len(prefix)
    for _ in range(PY_TOP_LEVEL_LINES):
        nl = prefix.rfind("\n", 0, end)
        start = nl + 1
        line = prefix[start:end] if end > start else ""
        if line[:1] and not line[:1].isspace() and line[:1] not in "#)]}\"'" and start < len(prefix):
            head = prefix[:start]
            if head.count('"""') % 2 == 0 and head.count("'''") % 2 == 0:
                return start
        if nl == -1:
            return 0
        end = nl
    return None


# ------------------------------------------------------------------ gate
@dataclass(frozen=True)
class GateContext:
    """The document around the cursor, prepared once per request."""

    language: str
    window: str  # the prefix from the window start to the cursor
    region_start: int  # index in ``window`` of the cursor line's start
    line_rest: str  # the cursor line after the cursor
    suffix_lines: str  # the following lines (bracket scan only)
    py_window: str | None  # Python: the prefix from the top-level statement's start
    before_ts: int | None
    before_py: int | None
    before_unmatched: int


def prepare(prefix: str, suffix: str, language: str | None) -> GateContext | None:
    """None when the language is unknown (no gate: the suggestion passes as before)."""
    if not language:
        return None
    start = prefix.rfind("\n")
    for _ in range(WINDOW_LINES):
        if start <= 0:
            start = 0
            break
        start = prefix.rfind("\n", 0, start)
    start = max(0, start)
    window = prefix[start:]
    region_start = window.rfind("\n") + 1
    nl = suffix.find("\n")
    line_rest = suffix if nl == -1 else suffix[:nl]
    rest_lines = "" if nl == -1 else "\n".join(suffix[nl:].split("\n", SUFFIX_LINES + 1)[: SUFFIX_LINES + 1])
    py_window = None
    if language == "python":
        w = _py_window_start(prefix)
        py_window = prefix[w:] if w is not None else None
    before_ts = _ts_errors(close_text(window + line_rest, language), language, region_start)
    before_py = None
    if py_window is not None:
        before_py = _py_error(close_text(py_window + line_rest, language))
    unmatched = scan(window + line_rest + rest_lines, language).unmatched
    return GateContext(language, window, region_start, line_rest, rest_lines, py_window, before_ts, before_py, unmatched)


def prepare_for(prefix: str, suffix: str, path: str, language_id: str = "") -> GateContext | None:
    language = language_for(path, language_id)
    return prepare(prefix, suffix, language) if language else None


def check(ctx: GateContext | None, text: str) -> bool:
    """Whether ``text`` inserted at the cursor adds no syntax error around it."""
    if ctx is None or not text:
        return True
    lang = ctx.language
    # A closer the suggestion took from the suffix (or one with no opener at all).
    if scan(ctx.window + text + ctx.line_rest + ctx.suffix_lines, lang).unmatched > ctx.before_unmatched:
        return False
    if ctx.py_window is not None:
        verdict = _py_verdict(ctx, text)
        if verdict is not None:
            return verdict
    if ctx.before_ts is None:
        return True
    after = _ts_errors(close_text(ctx.window + text + ctx.line_rest, lang), lang, ctx.region_start)
    return after is None or after <= ctx.before_ts


def _py_verdict(ctx: GateContext, text: str) -> bool | None:
    """Python's parser on the top-level statement around the cursor; None: no opinion
    (an error before the cursor's line hides what follows)."""
    assert ctx.py_window is not None
    body = ctx.py_window + text + ctx.line_rest
    closed = close_text(body, "python")
    err = _py_error(closed)
    if err is None:
        return True
    cursor = len(ctx.py_window)
    region = ctx.py_window.rfind("\n") + 1
    if err < 0 or err < region:
        return None
    if ctx.before_py is not None and err == ctx.before_py and err < cursor:
        return None  # an error on the cursor's line before the cursor, there without the suggestion
    if err >= len(body.rstrip()):
        return True  # at the very end: unfinished (the user goes on typing), not wrong
    before = ctx.before_py
    if before is not None and before >= region and err >= cursor + len(text) and before == err - len(text):
        return True  # the same error in the rest of the line, there before the suggestion
    return False


def trim(ctx: GateContext | None, text: str, boundaries: Sequence[int] = ()) -> str:
    """``text`` if it passes, else its longest passing prefix ending at a line end or at
    one of ``boundaries`` (token ends, as offsets in ``text``), else ""."""
    if ctx is None or check(ctx, text):
        return text
    cuts = {i for i, c in enumerate(text) if c == "\n"}
    cuts.update(b for b in boundaries if 0 < b < len(text))
    tries = 0
    for cut in sorted(cuts, reverse=True):
        cand = text[:cut].rstrip()
        if not cand.strip():
            continue
        tries += 1
        if check(ctx, cand):
            return cand
        if tries >= MAX_TRIM_TRIES:
            break
    return ""
