"""Open-document snapshots.

The store keeps the text of every document the client has opened, applies full and
incremental changes, and converts LSP positions (line + UTF-16 code units by default) to
string offsets.  Positions past the end of a line or of the file are clamped, never an
error: a client whose view of the document is a keystroke ahead must still get an answer.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


class DocumentNotOpen(KeyError):
    """A request named a document the client never opened (or already closed)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uri = uri

    def __str__(self) -> str:
        return f"document is not open: {self.uri} (send textDocument/didOpen first)"


@dataclass(frozen=True)
class TextChange:
    """One content change: ``range`` None means the whole text is replaced."""

    text: str
    start: tuple[int, int] | None = None  # (line, character)
    end: tuple[int, int] | None = None


def _char_units(ch: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(ch.encode("utf-8", "surrogatepass"))
    return 2 if ord(ch) > 0xFFFF else 1  # utf-16


def _units_to_index(line: str, units: int, encoding: str) -> int:
    """Index into ``line`` of the position ``units`` code units from its start."""
    if units <= 0:
        return 0
    if encoding == "utf-32" or line.isascii():
        return min(units, len(line))
    count = 0
    for i, ch in enumerate(line):
        if count >= units:
            return i
        count += _char_units(ch, encoding)
    return len(line)


def _index_to_units(line: str, index: int, encoding: str) -> int:
    prefix = line[:index]
    if encoding == "utf-32" or prefix.isascii():
        return len(prefix)
    return sum(_char_units(ch, encoding) for ch in prefix)


@dataclass
class Document:
    uri: str
    text: str
    version: int = 0
    language_id: str = ""
    _line_starts: list[int] | None = field(default=None, repr=False)

    @property
    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            starts = [0]
            text = self.text
            find = text.find
            pos = find("\n")
            while pos != -1:
                starts.append(pos + 1)
                pos = find("\n", pos + 1)
            self._line_starts = starts
        return self._line_starts

    def line_count(self) -> int:
        return len(self.line_starts)

    def line_text(self, line: int) -> str:
        starts = self.line_starts
        line = max(0, min(line, len(starts) - 1))
        start = starts[line]
        end = starts[line + 1] - 1 if line + 1 < len(starts) else len(self.text)
        text = self.text[start:end]
        return text[:-1] if text.endswith("\r") else text

    def offset_at(self, line: int, character: int, encoding: str = "utf-16") -> int:
        """String offset of an LSP position, clamped into the document."""
        starts = self.line_starts
        if line < 0:
            return 0
        if line >= len(starts):
            return len(self.text)
        line_str = self.line_text(line)
        return starts[line] + _units_to_index(line_str, character, encoding)

    def position_at(self, offset: int, encoding: str = "utf-16") -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.line_starts, offset) - 1
        col = offset - self.line_starts[line]
        line_str = self.line_text(line)
        col = min(col, len(line_str))
        return line, _index_to_units(line_str, col, encoding)

    def apply(self, change: TextChange, encoding: str = "utf-16") -> tuple[int, int, int]:
        """Apply one change; returns (start offset, old end offset, new end offset)."""
        if change.start is None or change.end is None:
            old_len = len(self.text)
            self.text = change.text
            self._line_starts = None
            return 0, old_len, len(change.text)
        start = self.offset_at(*change.start, encoding=encoding)
        end = self.offset_at(*change.end, encoding=encoding)
        if end < start:
            start, end = end, start
        self.text = self.text[:start] + change.text + self.text[end:]
        self._line_starts = None
        return start, end, start + len(change.text)


ChangeListener = Callable[[Document, list[tuple[int, int, int, str]]], None]


class DocumentStore:
    """Thread-safe map of open documents."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self.encoding = "utf-16"  # the negotiated LSP position encoding

    def add_listener(self, listener: ChangeListener) -> None:
        """``listener(doc, edits)`` runs after each open/change; edits are
        (start, old_end, new_end, old_text_slice) in string offsets, empty on open."""
        self._listeners.append(listener)

    def _notify(self, doc: Document, edits: list[tuple[int, int, int, str]]) -> None:
        for listener in self._listeners:
            try:
                listener(doc, edits)
            except Exception:  # a context source must never break document sync
                import logging

                logging.getLogger(__name__).exception("document listener failed for %s", doc.uri)

    def open(self, uri: str, text: str, version: int = 0, language_id: str = "") -> Document:
        doc = Document(uri=uri, text=text, version=version, language_id=language_id)
        with self._lock:
            self._docs[uri] = doc
        self._notify(doc, [])
        return doc

    def change(self, uri: str, version: int, changes: list[TextChange]) -> Document:
        with self._lock:
            doc = self._docs.get(uri)
            if doc is None:
                raise DocumentNotOpen(uri)
            edits = []
            for change in changes:
                before = doc.text
                start, old_end, new_end = doc.apply(change, encoding=self.encoding)
                edits.append((start, old_end, new_end, before[start:old_end]))
            doc.version = version
        self._notify(doc, edits)
        return doc

    def close(self, uri: str) -> None:
        with self._lock:
            self._docs.pop(uri, None)

    def get(self, uri: str) -> Document:
        with self._lock:
            doc = self._docs.get(uri)
        if doc is None:
            raise DocumentNotOpen(uri)
        return doc

    def snapshot(self, uri: str) -> Document:
        """A copy that later edits will not change (safe to use from the model thread)."""
        with self._lock:
            doc = self._docs.get(uri)
            if doc is None:
                raise DocumentNotOpen(uri)
            return Document(uri=doc.uri, text=doc.text, version=doc.version, language_id=doc.language_id)

    def uris(self) -> list[str]:
        with self._lock:
            return list(self._docs)
