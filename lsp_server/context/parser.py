"""Tree-sitter parsing of open documents, incremental on every change.

Grammars come from tree-sitter-language-pack (pinned to a release that ships them inside
the wheel; later releases download grammars at run time, which an offline machine cannot).
Each open document keeps its tree; a change is applied with ``tree.edit()`` at once and the
re-parse happens lazily, reusing the old tree, when a request needs the syntax.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from lsp_server.context.documents import Document, DocumentStore

logger = logging.getLogger(__name__)

MAX_PARSE_BYTES = 1_000_000  # bigger files (minified bundles) get no syntax help

# LSP languageId / file extension -> tree-sitter-language-pack name.
LANGUAGE_IDS = {
    "python": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",
    "typescript": "typescript",
    "typescriptreact": "tsx",
    "go": "go",
    "rust": "rust",
    "java": "java",
    "c": "c",
    "cpp": "cpp",
    "csharp": "csharp",
    "ruby": "ruby",
    "php": "php",
    "lua": "lua",
    "kotlin": "kotlin",
    "swift": "swift",
    "scala": "scala",
    "bash": "bash",
    "shellscript": "bash",
}
EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".lua": "lua",
    ".kt": "kotlin",
    ".swift": "swift",
    ".scala": "scala",
    ".sh": "bash",
}

_parsers: dict[str, Any] = {}


@dataclass(frozen=True)
class SyntaxHint:
    """What tree-sitter knows about the cursor position (all False when unknown)."""

    in_comment: bool = False
    in_string: bool = False
    block_body_expected: bool = False  # e.g. after "def f():" with an empty body
    has_error: bool = False


def language_for(path_or_uri: str, language_id: str = "") -> str | None:
    """The grammar name for a document, or None for plain text."""
    if language_id and language_id in LANGUAGE_IDS:
        return LANGUAGE_IDS[language_id]
    ext = os.path.splitext(path_or_uri)[1].lower()
    return EXTENSIONS.get(ext)


def get_parser(language: str) -> Any | None:
    """A cached tree-sitter parser, or None when the grammar is unavailable."""
    if language in _parsers:
        return _parsers[language]
    parser = None
    try:
        from tree_sitter_language_pack import get_parser as _get

        parser = _get(language)  # type: ignore[arg-type]
    except Exception as exc:  # a missing grammar degrades to plain text
        logger.warning("no tree-sitter grammar for %s: %s", language, exc)
    _parsers[language] = parser
    return parser


_local = threading.local()


def thread_parser(language: str) -> Any | None:
    """A parser for ``language`` owned by the calling thread (a tree-sitter parser must not
    be used by two threads at once: the indexer, the watcher and the model worker each get
    their own)."""
    cache: dict[str, Any] | None = getattr(_local, "parsers", None)
    if cache is None:
        cache = _local.parsers = {}
    if language not in cache:
        parser = None
        if get_parser(language) is not None:  # logs a missing grammar once
            from tree_sitter_language_pack import get_parser as _get

            parser = _get(language)  # type: ignore[arg-type]
        cache[language] = parser
    return cache[language]


_BLOCK = 4096


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix: block compares (C speed), then a search in one block."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i : i + _BLOCK] == b[i : i + _BLOCK]:
        i += _BLOCK
    if i >= n:
        return n
    lo, hi = i, min(n, i + _BLOCK)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[i:mid] == b[i:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix, at most ``limit``."""
    i = 0
    la, lb = len(a), len(b)
    while i < limit and a[max(la - i - _BLOCK, la - limit) : la - i] == b[max(lb - i - _BLOCK, lb - limit) : lb - i]:
        i = min(limit, i + _BLOCK)
    if i >= limit:
        return limit
    lo, hi = i, min(limit, i + _BLOCK)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid : la - i] == b[lb - mid : lb - i]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def text_edit(old: str, new: str) -> tuple[int, int, int]:
    """(start, old_end, new_end) of the one region in which ``new`` differs from ``old``."""
    start = _common_prefix(old, new)
    tail = _common_suffix(old, new, min(len(old), len(new)) - start)
    return start, len(old) - tail, len(new) - tail


def _byte_point(text: str, index: int) -> tuple[int, tuple[int, int]]:
    before = text[:index]
    byte = len(before.encode("utf-8", "surrogatepass"))
    row = before.count("\n")
    col = len(before[before.rfind("\n") + 1 :].encode("utf-8", "surrogatepass"))
    return byte, (row, col)


class SnapshotTrees:
    """Syntax trees of document snapshots, for one thread (the model worker).

    The engine hands retrieval a snapshot per request, not the edits in between; the
    difference from the previous snapshot of the same document is one region while the
    user types, so the old tree is edited (``tree.edit()``) and re-parsed incrementally.
    """

    def __init__(self, capacity: int = 16) -> None:
        self._trees: OrderedDict[str, tuple[str, str, Any]] = OrderedDict()
        self._capacity = capacity

    def tree(self, uri: str, text: str, language: str) -> Any | None:
        if len(text) > MAX_PARSE_BYTES:
            return None
        parser = thread_parser(language)
        if parser is None:
            return None
        old = self._trees.get(uri)
        data = text.encode("utf-8", "surrogatepass")
        try:
            if old is not None and old[1] == language:
                old_text, _, old_tree = old
                if old_text == text:
                    self._trees.move_to_end(uri)
                    return old_tree
                start, old_end, new_end = text_edit(old_text, text)
                start_byte, start_point = _byte_point(text, start)
                old_end_byte, old_end_point = _byte_point(old_text, old_end)
                new_end_byte, new_end_point = _byte_point(text, new_end)
                old_tree.edit(
                    start_byte=start_byte,
                    old_end_byte=old_end_byte,
                    new_end_byte=new_end_byte,
                    start_point=start_point,
                    old_end_point=old_end_point,
                    new_end_point=new_end_point,
                )
                tree = parser.parse(data, old_tree)
            else:
                tree = parser.parse(data)
        except Exception:
            logger.exception("tree-sitter failed on %s", uri)
            self._trees.pop(uri, None)
            return None
        self._trees[uri] = (text, language, tree)
        self._trees.move_to_end(uri)
        while len(self._trees) > self._capacity:
            self._trees.popitem(last=False)
        return tree

    def forget(self, uri: str) -> None:
        self._trees.pop(uri, None)


def _point_after(start: tuple[int, int], text: str) -> tuple[int, int]:
    nl = text.count("\n")
    if nl == 0:
        return start[0], start[1] + len(text.encode("utf-8", "surrogatepass"))
    last = text[text.rfind("\n") + 1 :]
    return start[0] + nl, len(last.encode("utf-8", "surrogatepass"))


@dataclass
class _ParsedDoc:
    language: str
    tree: Any | None = None
    dirty: bool = True
    source: bytes = b""


class DocumentParser:
    """Keeps a syntax tree per open document in step with its edits."""

    def __init__(self, store: DocumentStore) -> None:
        self._docs: dict[str, _ParsedDoc] = {}
        store.add_listener(self._on_change)

    def _on_change(self, doc: Document, edits: list[tuple[int, int, int, str]]) -> None:
        language = language_for(doc.uri, doc.language_id)
        if language is None or len(doc.text) > MAX_PARSE_BYTES:
            self._docs.pop(doc.uri, None)
            return
        state = self._docs.get(doc.uri)
        if state is None or state.language != language or not edits or len(edits) > 1 or state.tree is None:
            # Opened, or several changes at once: parse from scratch next time.
            self._docs[doc.uri] = _ParsedDoc(language=language)
            return
        start, old_end, new_end, old_slice = edits[0]
        before = doc.text[:start]
        start_byte = len(before.encode("utf-8", "surrogatepass"))
        row = before.count("\n")
        col = len(before[before.rfind("\n") + 1 :].encode("utf-8", "surrogatepass"))
        inserted = doc.text[start:new_end]
        state.tree.edit(
            start_byte=start_byte,
            old_end_byte=start_byte + len(old_slice.encode("utf-8", "surrogatepass")),
            new_end_byte=start_byte + len(inserted.encode("utf-8", "surrogatepass")),
            start_point=(row, col),
            old_end_point=_point_after((row, col), old_slice),
            new_end_point=_point_after((row, col), inserted),
        )
        state.dirty = True

    def forget(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def tree(self, doc: Document) -> Any | None:
        """The up-to-date tree of ``doc`` (None for plain text or huge files)."""
        state = self._docs.get(doc.uri)
        if state is None:
            language = language_for(doc.uri, doc.language_id)
            if language is None or len(doc.text) > MAX_PARSE_BYTES:
                return None
            state = self._docs[doc.uri] = _ParsedDoc(language=language)
        if state.dirty or state.tree is None:
            parser = get_parser(state.language)
            if parser is None:
                return None
            source = doc.text.encode("utf-8", "surrogatepass")
            try:
                state.tree = parser.parse(source, state.tree) if state.tree is not None else parser.parse(source)
            except Exception:
                logger.exception("tree-sitter failed on %s", doc.uri)
                state.tree = None
                return None
            state.source = source
            state.dirty = False
        return state.tree

    def hint(self, doc: Document, offset: int) -> SyntaxHint:
        """Syntax facts at a string offset of ``doc``."""
        tree = self.tree(doc)
        if tree is None:
            return SyntaxHint()
        byte = len(doc.text[:offset].encode("utf-8", "surrogatepass"))
        return syntax_hint(tree.root_node, byte)


def syntax_hint(root: Any, byte: int) -> SyntaxHint:
    node = root.descendant_for_byte_range(max(0, byte - 1), byte)
    in_comment = in_string = False
    walk = node
    while walk is not None:
        kind = walk.type
        if "comment" in kind and walk.start_byte < byte <= walk.end_byte:
            in_comment = True
            break
        if (
            "string" in kind or kind in ("template_literal", "heredoc_body")
        ) and walk.start_byte < byte < walk.end_byte:
            in_string = True
            break
        walk = walk.parent
    return SyntaxHint(in_comment=in_comment, in_string=in_string, has_error=bool(root.has_error))
