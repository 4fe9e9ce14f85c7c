"""Ranked cross-file context for one completion, in a cache-friendly order.

For the document at the cursor (its live text, never the disk copy in the index):

1. its imports are read from an incrementally re-parsed tree and resolved through the
   index (``from .compat import isatty`` -> the ``def isatty`` of ``compat.py``);
2. identifiers near the cursor are weighed by distance (the word being typed is left out,
   so the context does not move while the user types within a word);
3. candidates are scored: imported definitions (more when used near the cursor, a little
   more when used often in the file), ``module.attr`` definitions, names defined
   elsewhere in the workspace, far parts of the current file the prefix window will not
   show (its imports, the enclosing class/def headers, definitions used near the
   cursor), and similar windows of recently opened files (Jaccard over identifier sets);
4. chunks are picked by score, plus a bonus for those picked for the previous request of
   this document (hysteresis), until the token budget is full;
5. they are *presented* in a stable order: chunks kept from the previous request keep
   their places, new ones are appended, so the prompt's first tokens stay the same and
   the model's KV cache is reused from one keystroke to the next.

Runs on the model worker thread; everything it keeps (trees, sessions, token counts) is
private to that thread.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from lsp_server.context.index import WorkspaceIndex, language_of
from lsp_server.context.parser import SnapshotTrees, text_edit
from lsp_server.context.render import _import_lines, _one_line_stub, render_symbol
from lsp_server.context.retrieval_types import CONTEXT_SOURCES as CONTEXT_SOURCES
from lsp_server.context.retrieval_types import (
    Candidate,
    RetrievalStats,
    _group_new,
    _Session,
    excluded_sources,
    source_of,
)
from lsp_server.context.secrets import is_secret_path
from lsp_server.context.symbols import FileSummary, Import, Symbol, extract
from lsp_server.families.completion import ContextChunk, fit_chunks

logger = logging.getLogger(__name__)

# How long likely_chunks may read the index (in idle time, off the model thread).
LIKELY_SCAN_S = 0.5
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_]+$")
_STRING_START = re.compile(r"[rRbBuUfF]{0,2}[\"']")
_DECLARATION = re.compile(r"(async\s+)?(def|class|function|fn|func|interface|struct|enum|type)\s")
_TRIPLE = re.compile(r'"""|\'\'\'')
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')

NEAR_LINES_BEFORE = 12
NEAR_LINES_AFTER = 3
DECAY = 0.8
DEFAULT_SHARE = 0.35  # PromptBudget's default context share (to estimate the prefix window)
SNIPPET_LINES = 8
SNIPPET_STEP = 4
SNIPPET_QUERY_LINES = 6
MAX_SNIPPETS = 2
MIN_JACCARD = 0.25
# Tuned on the dev set (repo_line): usage examples that can be copied beat signatures for a
# small model, so a close snippet outranks everything; the file's workspace imports next.
SNIPPET_WEIGHT = 10.0
IMPORTS_WEIGHT = 2.5
MAX_GLOBAL_DEFS = 3  # a name defined in more files than this is too ambiguous to show
STICKY_BONUS = 1.0
MAX_USAGE_LINES = 6
MAX_USAGE_CHARS = 100
USAGE_WEIGHT = 3.0
HINT_WEIGHT = 20.0  # one short line, placed by the prompt builder next to the cursor
MIN_SCORE = 1.7  # below this a chunk costs the prefix more than it brings

_STOPWORDS = frozenset(
    """self cls this super None True False null nil true false and or not in is if else elif for while return
    def class function func fn let var const import from as with try except finally raise pass break continue
    lambda yield await async new delete typeof instanceof void int str float bool bytes list dict set tuple
    len range print object type isinstance getattr setattr hasattr string number boolean any struct impl pub
    use mod match static public private protected final package interface enum extends implements include
    define ifdef ifndef endif char double long short unsigned signed auto register sizeof args kwargs""".split()
)


def uri_to_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        return uri
    return unquote(parsed.path)


_IMPORT_LINE = re.compile(r"\s*(import|from|#\s*include|use|using|package|mod)\b")


def _one_line_edit(old: str, new: str, start: int, old_end: int, new_end: int) -> bool:
    """An edit within one line that is not an import line (imports are what resolution
    needs; a declaration being typed on this line is visible in the prompt anyway)."""
    if "\n" in old[start:old_end] or "\n" in new[start:new_end]:
        return False
    line_start = new.rfind("\n", 0, start) + 1
    old_line_end = old.find("\n", start)
    new_line_end = new.find("\n", start)
    old_line = old[line_start : old_line_end if old_line_end != -1 else len(old)]
    new_line = new[line_start : new_line_end if new_line_end != -1 else len(new)]
    return not (_IMPORT_LINE.match(old_line) or _IMPORT_LINE.match(new_line))


def _shift_symbol(sym: Symbol, first: int, delta: int) -> Symbol:
    """``sym`` after ``delta`` lines were inserted (or removed) at line ``first``."""
    line = sym.line + delta if sym.line > first else sym.line
    end = sym.end_line + delta if sym.end_line >= first else sym.end_line
    return sym if (line, end) == (sym.line, sym.end_line) else replace(sym, line=line, end_line=end)


def _near_weights(before: str, after: str) -> dict[str, float]:
    """Identifier -> weight in (0, 1]: 1 on the cursor line, decaying with distance."""
    weights: dict[str, float] = {}
    lines = before.split("\n")[-NEAR_LINES_BEFORE:]
    for dist, line in enumerate(reversed(lines)):
        w = DECAY**dist
        for m in _IDENT.finditer(line):
            name = m.group()
            if weights.get(name, 0.0) < w:
                weights[name] = w
        for m in _DOTTED.finditer(line):
            dotted = f"{m.group(1)}.{m.group(2)}"
            if weights.get(dotted, 0.0) < w:
                weights[dotted] = w
    for dist, line in enumerate(after.split("\n")[:NEAR_LINES_AFTER]):
        w = 0.5 * DECAY**dist
        for m in _IDENT.finditer(line):
            if weights.get(m.group(), 0.0) < w:
                weights[m.group()] = w
        for m in _DOTTED.finditer(line):
            dotted = f"{m.group(1)}.{m.group(2)}"
            if weights.get(dotted, 0.0) < w:
                weights[dotted] = w
    return weights


def _line_offset(text: str, line: int) -> int:
    """Offset of the start of ``line`` (0-based) in ``text``."""
    pos = 0
    for _ in range(line):
        nxt = text.find("\n", pos)
        if nxt == -1:
            return len(text)
        pos = nxt + 1
    return pos


def _identifier_set(text: str) -> frozenset[str]:
    """The distinctive identifiers of some code (keywords and very common names left out)."""
    return frozenset(w for w in _IDENT.findall(text) if len(w) > 2 and w not in _STOPWORDS)


class _Windows:
    """Identifier sets of overlapping line windows of one file, for Jaccard similarity."""

    __slots__ = ("key", "lines", "windows")

    def __init__(self, key: tuple[object, ...], text: str) -> None:
        self.key = key
        self.lines = text.split("\n")
        self.windows: list[tuple[int, frozenset[str]]] = []
        # Identifiers never span lines: a window's set is the union of its lines' sets.
        per_line = [_identifier_set(line) for line in self.lines]
        for start in range(0, max(1, len(self.lines) - SNIPPET_LINES + 1), SNIPPET_STEP):
            idents = frozenset().union(*per_line[start : start + SNIPPET_LINES])
            if len(idents) >= 4:
                self.windows.append((start, idents))


class Retriever:
    """The :class:`~lsp_server.engine.engine.ContextProvider` of a workspace."""

    def __init__(
        self,
        index: WorkspaceIndex,
        recent: Callable[[], Iterable[tuple[str, str, int]]] | None = None,
    ) -> None:
        self.index = index
        self._recent = recent  # () -> [(uri, text, version)] of recently opened/edited docs
        self._trees = SnapshotTrees()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._token_counts: OrderedDict[str, int] = OrderedDict()
        self._rendered: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._windows: dict[str, _Windows] = {}  # uri (or "self:" + uri) -> windows
        self._usages: dict[str, tuple[Any, list[tuple[int, str, tuple[tuple[str, str], ...]]]]] = {}
        self._live: OrderedDict[str, tuple[str, tuple[Symbol, ...], tuple[Import, ...]]] = OrderedDict()
        self.stats = RetrievalStats()
        self.last_candidates: list[Candidate] = []
        self.enabled = True
        self.exclude = excluded_sources()

    # ---------------------------------------------------------------- helpers
    def _count(self, text: str, count_tokens: Callable[[str], int]) -> int:
        n = self._token_counts.get(text)
        if n is None:
            n = count_tokens(text)
            self._token_counts[text] = n
            if len(self._token_counts) > 4096:
                self._token_counts.popitem(last=False)
        else:
            self._token_counts.move_to_end(text)
        return n

    def _render(self, summary: FileSummary, sym: Symbol) -> str:
        key = (summary.path, summary.mtime_ns, sym.line, sym.name)
        text = self._rendered.get(key)
        if text is None:
            text = self._rendered[key] = render_symbol(summary, sym)
            if len(self._rendered) > 8192:
                self._rendered.popitem(last=False)
        return text

    def _session(self, uri: str) -> _Session:
        session = self._sessions.get(uri)
        if session is None:
            session = self._sessions[uri] = _Session()
            while len(self._sessions) > 64:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(uri)
        return session

    def forget(self, uri: str) -> None:
        self._sessions.pop(uri, None)
        self._usages.pop(uri, None)
        self._trees.forget(uri)
        self._live.pop(uri, None)

    def _is_secret(self, uri: str) -> bool:
        """A document that must never be retrieved: a secret file (built-in names or the
        user's quill.secretPaths)."""
        path = os.path.abspath(uri_to_path(uri))
        root = self.index.root_for(path)
        return is_secret_path(path, self.index.secret_paths, root)

    def _rel(self, path: str) -> str:
        return self.index.relative(path)

    def _live_summary(self, uri: str, text: str, language: str) -> tuple[tuple[Symbol, ...], tuple[Import, ...]]:
        """Symbols and imports of the live document.

        Typing inside a function body changes no declaration: the previous result is kept
        (line numbers shifted when lines were added or removed) and nothing is parsed.
        Otherwise the snapshot is re-parsed incrementally and its declaration level read.
        """
        cached = self._live.get(uri)
        if cached is not None:
            old_text, syms, imps = cached
            if old_text == text:
                return syms, imps
            start, old_end, new_end = text_edit(old_text, text)
            first = old_text.count("\n", 0, start)
            last = first + old_text.count("\n", start, old_end)
            in_body = any(s.kind in ("function", "method") and s.line < first and last <= s.end_line for s in syms)
            if in_body or _one_line_edit(old_text, text, start, old_end, new_end):
                delta = text.count("\n", start, new_end) - (last - first)
                if delta:
                    syms = tuple(_shift_symbol(s, first, delta) for s in syms)
                    imps = tuple(replace(i, line=i.line + delta) if i.line > first else i for i in imps)
                self._live[uri] = (text, syms, imps)
                self._live.move_to_end(uri)
                return syms, imps
        tree = self._trees.tree(uri, text, language)
        if tree is None:
            return (), ()
        data = text.encode("utf-8", "surrogatepass")
        syms, imps, _ = extract(data, tree, language)
        self._live[uri] = (text, syms, imps)
        self._live.move_to_end(uri)
        while len(self._live) > 16:
            self._live.popitem(last=False)
        return syms, imps

    # --------------------------------------------------------------- retrieve
    def retrieve(self, request: Any, token_budget: int, count_tokens: Callable[[str], int]) -> list[ContextChunk]:
        t0 = time.perf_counter()
        try:
            return self._retrieve(request, token_budget, count_tokens)
        finally:
            self.stats.calls += 1
            self.stats.last_ms = (time.perf_counter() - t0) * 1000

    def _retrieve(self, request: Any, token_budget: int, count_tokens: Callable[[str], int]) -> list[ContextChunk]:
        if not self.enabled or token_budget <= 0:
            return []
        uri: str = request.uri
        text: str = request.text
        offset: int = request.offset
        path = os.path.abspath(uri_to_path(uri))
        language = language_of(path) or ""
        session = self._session(uri)
        session.requests += 1

        # The word being typed is left out of every signal: context holds still within a word.
        partial = _WORD_TAIL.search(text[max(0, offset - 64) : offset])
        cut = offset - (len(partial.group()) if partial else 0)
        before = text[max(0, cut - 4000) : cut]
        after = text[offset : offset + 1000]
        near = _near_weights(before, after)

        # How much of the file the prompt's prefix window will show (estimate).
        if not session.chars_per_token or session.requests % 32 == 0:
            sample = text[max(0, cut - 3000) : cut]
            session.chars_per_token = max(1.5, len(sample) / max(1, count_tokens(sample))) if sample else 3.0
        window_tokens = token_budget / DEFAULT_SHARE - token_budget
        window_start = max(0, cut - int(window_tokens * session.chars_per_token))
        window_start_line = text.count("\n", 0, window_start) + (1 if window_start else 0)

        syms: tuple[Symbol, ...] = ()
        imports: tuple[Import, ...] = ()
        if language:
            syms, imports = self._live_summary(uri, text, language)
        bindings = self.index.resolve(path, language, imports) if imports else ()
        # How often each name occurs in the file: a prior for imported names.  Recounted only
        # when the file has grown or shrunk noticeably, so it holds still while typing.
        if session.counts is None or abs(len(text) - session.counts_len) > 512:
            session.counts = Counter(_IDENT.findall(text[:cut])) + Counter(_IDENT.findall(text[offset:]))
            session.counts_len = len(text)
        counts = session.counts

        candidates: list[Candidate] = []
        rel_self = self._rel(path)
        local_names = {s.name for s in syms if not s.container}
        bound: set[str] = set()
        seen_defs: set[tuple[str, int]] = set()

        def add_definition(summary: FileSummary, sym: Symbol, score: float, source: str = "imported") -> None:
            ident = (summary.path, sym.line)
            if summary.path == path or ident in seen_defs:
                return
            seen_defs.add(ident)
            candidates.append(
                Candidate(
                    key=("def", summary.path, sym.line, sym.name),
                    path=summary.rel,
                    text=self._render(summary, sym),
                    score=score,
                    kind="definition",
                    source=source,
                )
            )

        # 1. Imported names and modules.
        for b in bindings:
            bound.add(b.local)
            if b.kind == "symbol":
                defs = self.index.find_definition(b.paths[0], b.name)
                if not defs:
                    continue
                uses = counts.get(b.local, 0) - 1  # the import itself
                score = 1.0 + 2.0 * near.get(b.local, 0.0) + 0.3 * min(3.0, math.log1p(max(0, uses)))
                if uses <= 0:
                    score -= 0.5
                summary, sym = defs[0]
                add_definition(summary, sym, score)
            elif b.kind == "module":
                for dotted, w in near.items():
                    if "." not in dotted:
                        continue
                    head, attr = dotted.split(".", 1)
                    if head != b.local:
                        continue
                    for target in b.paths:
                        for summary, sym in self.index.find_definition(target, attr)[:1]:
                            add_definition(summary, sym, 1.2 + 2.0 * w)
                uses = counts.get(b.local, 0) - 1
                if uses > 0:
                    outline = self._module_outline(b.paths)
                    if outline is not None:
                        summary, body = outline
                        candidates.append(
                            Candidate(
                                key=("outline", summary.path),
                                path=summary.rel,
                                text=body,
                                score=0.6 + 1.0 * near.get(b.local, 0.0) + 0.1 * min(3.0, math.log1p(uses)),
                                kind="definition",
                            )
                        )
            elif b.kind == "wildcard":
                for name, w in near.items():
                    if "." in name or name in local_names or name in _STOPWORDS:
                        continue
                    for target in b.paths:
                        found = self.index.summary(target)
                        if found is None:
                            continue
                        for sym in found.named(name)[:1]:
                            if not sym.container:
                                add_definition(found, sym, 0.8 + 2.0 * w)

        # 2. Names near the cursor defined elsewhere in the workspace (not imported here).
        root = self.index.root_for(path)
        for name, w in sorted(near.items(), key=lambda kv: -kv[1]):
            if "." in name:
                name = name.split(".", 1)[1]
                w *= 0.8
            if len(name) < 3 or name in _STOPWORDS or name in bound or name in local_names:
                continue
            n_files = self.index.count_definitions(name)
            if n_files == 0 or n_files > MAX_GLOBAL_DEFS:
                continue
            defs = [d for d in self.index.definitions(name) if d[0].path != path and d[0].root == root]
            for summary, sym in defs[:1]:
                add_definition(summary, sym, (0.4 + 1.6 * w) / n_files, "workspace")

        # 3. Far parts of this file that the prefix window will not show.
        if window_start > 0:
            resolved_lines = {b.line for b in bindings}
            candidates.extend(
                self._far_in_file(text, rel_self, imports, syms, window_start_line, cut, near, resolved_lines)
            )

        # 4. Lines of this file the prompt will not show that use the workspace names it
        # imports, most like the cursor's line first (usage examples to copy from).
        line_end = text.find("\n", offset)
        for usage in self._usage_lines(
            uri, text, cut, window_start_line, len(text) if line_end == -1 else line_end, bindings, imports, near,
            language,
        ):
            candidates.append(replace(usage, path=rel_self))

        # 5. Similar windows of recently opened/edited files.
        candidates.extend(
            self._similar_snippets(uri, text, before, window_start, len(text) if line_end == -1 else line_end)
        )

        self.stats.last_candidates = len(candidates)
        if self.exclude:
            candidates = [c for c in candidates if source_of(c) not in self.exclude]
        self.last_candidates = candidates  # for inspection (status, tuning)
        chunks = self._select(session, candidates, token_budget, count_tokens, request)
        self.stats.last_chunks = len(chunks)
        return chunks

    def likely_chunks(self, token_budget: int, count_tokens: Callable[[str], int]) -> list[ContextChunk]:
        """The context a file of the workspace is likely to retrieve before any is opened:
        the definitions (and module outlines) imported by the most files of the index,
        rendered as :meth:`retrieve` renders them, most imported first, within
        ``token_budget``.  Evaluated in idle time, it lets the first prompt of a file just
        opened shift these chunks into place instead of evaluating them."""
        if not self.enabled or token_budget <= 0:
            return []
        deadline = time.perf_counter() + LIKELY_SCAN_S
        importers: Counter[tuple[object, ...]] = Counter()
        found: dict[tuple[object, ...], tuple[str, str]] = {}
        for summary in list(self.index.files.values()):
            if time.perf_counter() > deadline:
                break
            if not summary.imports or self._is_secret(summary.path):
                continue
            keys: set[tuple[object, ...]] = set()
            for b in self.index.resolve(summary.path, summary.language, summary.imports):
                if b.kind == "symbol":
                    for target, sym in self.index.find_definition(b.paths[0], b.name)[:1]:
                        if target.path != summary.path:
                            key: tuple[object, ...] = ("def", target.path, sym.line, sym.name)
                            keys.add(key)
                            found.setdefault(key, (target.rel, self._render(target, sym)))
                elif b.kind == "module":
                    outline = self._module_outline(b.paths)
                    if outline is not None and outline[0].path != summary.path:
                        key = ("outline", outline[0].path)
                        keys.add(key)
                        found.setdefault(key, (outline[0].rel, outline[1]))
            importers.update(keys)
        likely = []
        for key, n in sorted(importers.items(), key=lambda kv: (-kv[1], repr(kv[0]))):
            if n < 2:
                break
            path, text = found[key]
            if text.strip():
                likely.append(ContextChunk(path=path, text=text, score=float(n), kind="definition"))
        # Not through the cache of counts (_count): the caller's counter may be a guess.
        return fit_chunks(likely, token_budget, count_tokens)

    # ------------------------------------------------------------- candidates
    def _module_outline(self, paths: Sequence[str]) -> tuple[FileSummary, str] | None:
        for p in paths[:1]:
            summary = self.index.summary(p)
            if summary is None:
                continue
            # The same outline whatever the cursor is near (names used as ``alias.attr`` get
            # their own chunks): its text never changes while the user types.
            top = [s for s in summary.top_level() if not s.name.startswith("_") and s.kind != "variable"]
            if not top:
                return None
            picked = top[:10]
            body = "\n".join(_one_line_stub(s, summary.language).split("\n")[-1] for s in picked)
            return summary, body
        return None

    def _far_in_file(
        self,
        text: str,
        rel_self: str,
        imports: Sequence[Import],
        syms: Sequence[Symbol],
        window_start_line: int,
        cut: int,
        near: dict[str, float],
        resolved: set[int],
    ) -> list[Candidate]:
        out: list[Candidate] = []
        lines = text.split("\n") if syms else []
        # The file's imports (which names exist here at all), compact: one line per module,
        # the ones that lead into the workspace first.
        far_imports = [imp for imp in imports if imp.line < window_start_line]
        if far_imports:
            internal, external = _import_lines(far_imports, resolved)
            if internal:
                out.append(
                    Candidate(
                        key=("imports", rel_self),
                        path=rel_self,
                        text="\n".join(internal),
                        score=IMPORTS_WEIGHT,
                        kind="import",
                    )
                )
            if external:
                out.append(
                    Candidate(
                        key=("imports-ext", rel_self), path=rel_self, text="\n".join(external), score=0.9, kind="import"
                    )
                )
        # Enclosing class/def headers whose lines are out of the window.
        cursor_line = text.count("\n", 0, cut)
        scope = [
            s
            for s in syms
            if s.line < window_start_line
            and s.line <= cursor_line <= s.end_line
            and s.kind in ("class", "function", "method", "interface", "impl", "module")
        ]
        if scope:
            scope.sort(key=lambda s: s.line)
            header_lines = []
            for s in scope:
                src_line = lines[s.line] if s.line < len(lines) else ""
                indent = src_line[: len(src_line) - len(src_line.lstrip())]
                header_lines.append(indent + s.signature.split("\n")[-1])
            out.append(
                Candidate(
                    key=("scope", rel_self, tuple(s.line for s in scope)),
                    path=rel_self,
                    text="\n".join(header_lines),
                    score=2.0,
                    kind="scope",
                )
            )
        # Definitions of this file used near the cursor but defined out of the window.
        for s in syms:
            if s.line >= window_start_line or s.kind not in ("function", "method", "class", "constant"):
                continue
            w = near.get(s.name, 0.0)
            if w <= 0 or s in scope or len(s.name) < 3 or s.name in _STOPWORDS:
                continue
            body = "\n".join(s.signature.split("\n")) + (" ..." if s.kind in ("function", "method") else "")
            out.append(
                Candidate(
                    key=("self", rel_self, s.line, s.name),
                    path=rel_self,
                    text=body,
                    score=0.8 + 2.0 * w,
                    kind="definition",
                )
            )
        return out

    def _usage_lines(
        self,
        uri: str,
        text: str,
        cut: int,
        window_start_line: int,
        visible_end: int,
        bindings: Sequence[Any],
        imports: Sequence[Import],
        near: dict[str, float],
        language: str = "python",
    ) -> list[Candidate]:
        """Lines of this file outside the prompt's window (far above it, or below the
        cursor) that use names bound to workspace definitions by the file's imports.

        The code a small model copies best: how the file itself calls the names it
        imports.  Lines are ranked by how much they look like the cursor's line (the same
        token right before a workspace name as right before the cursor, e.g. ``raise``,
        ``except``, ``= not``), then by the identifiers they share with the lines near
        the cursor; the best come last, nearest the code.

        When the best line has a workspace name right after the token the cursor follows,
        that line also comes as a "hint" chunk: the prompt builder shows it as a comment
        just above the cursor's line, where a small model does copy from (a usage example
        a few hundred tokens up, before the prefix, it mostly ignores)."""
        names = {b.local for b in bindings if b.kind in ("symbol", "module") and len(b.local) > 1}
        if not names:
            return []
        cursor_line = text.count("\n", 0, cut)
        first_visible = window_start_line // 16 * 16
        import_lines = {imp.line for imp in imports}
        comment = " #" if language == "python" else " //"
        key = (
            first_visible,
            hash(text[: _line_offset(text, first_visible)]),
            hash(text[visible_end:]),
            frozenset(names),
            comment,
        )
        cached = self._usages.get(uri)
        if cached is None or cached[0] != key:
            found: list[tuple[int, str, tuple[tuple[str, str], ...]]] = []
            alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
            pattern = re.compile(r"(\S*)\s*\b(" + alternatives + r")\b")
            # The same names alone: a line none of them is on needs no run of ``pattern``
            # (whose leading ``\S*`` backtracks at every position of the line).
            mentions = re.compile(r"\b(?:" + alternatives + r")\b")
            lines = text.split("\n")
            in_string = ""  # the quotes of the triple-quoted string a line starts in
            for i, line in enumerate(lines):
                was_in_string = in_string
                for m in _TRIPLE.finditer(line):
                    if not in_string:
                        in_string = m.group()
                    elif m.group() == in_string:
                        in_string = ""
                if was_in_string or first_visible <= i <= cursor_line or i in import_lines:
                    continue
                stripped = line.strip()
                if (
                    not stripped
                    or len(stripped) > MAX_USAGE_CHARS
                    or stripped.startswith(("#", "//", "import ", "from "))
                    or _STRING_START.match(stripped)
                ):
                    continue
                if not mentions.search(line):
                    continue
                # (the token before the name, the name) for each use on the line
                code = _STRING.sub('""', line.split(comment, 1)[0])
                uses = tuple((m.group(1)[-12:], m.group(2)) for m in pattern.finditer(code))
                uses = tuple(u for u in uses if not u[0].endswith("."))  # attribute of something else
                if uses and not _DECLARATION.match(stripped):
                    found.append((i, stripped, uses))
            cached = self._usages[uri] = (key, found)
            while len(self._usages) > 16:
                del self._usages[next(iter(self._usages))]
        found = cached[1]
        if not found:
            return []
        head = text[_line_offset(text, cursor_line) : cut]
        lead_match = re.search(r"(\S*)\s*$", head)
        lead = lead_match.group(1)[-12:] if lead_match else ""
        first_word = head.split()[0] if head.split() else ""
        scored: list[tuple[float, int, str]] = []
        seen: set[str] = set()
        led: set[int] = set()  # lines where the cursor's token leads to a workspace name
        for i, stripped, uses in found:
            if stripped in seen:
                continue
            seen.add(stripped)
            score = 0.0
            if lead and any(tok == lead for tok, _ in uses):
                score += 2.0  # the same token leads to a workspace name as at the cursor
                led.add(i)
            if first_word and stripped.split()[0] == first_word:
                score += 1.0
            idents = set(_IDENT.findall(stripped))
            score += sum(near.get(w, 0.0) for w in idents if w not in _STOPWORDS) / (1.0 + 0.2 * len(idents))
            score += 0.5 * max(near.get(name, 0.0) for _, name in uses)
            score -= 0.1 * min(5.0, abs(i - cursor_line) / 100)
            scored.append((score, i, stripped))
        scored.sort(key=lambda x: (-x[0], x[1]))
        picked = scored[:MAX_USAGE_LINES]
        if not picked or picked[0][0] <= 0:
            return []
        out = []
        best_score, best_line, best_text = picked[0]
        if best_line in led:
            out.append(
                Candidate(
                    key=("hint", uri, best_line, best_text),
                    path="",
                    text=best_text,
                    score=HINT_WEIGHT,
                    kind="hint",
                    source="usage",
                )
            )
        picked.reverse()  # the best last
        out.append(
            Candidate(
                key=("usage", uri, tuple(i for _, i, _ in picked)),
                path="",
                text="\n".join(s for _, _, s in picked),
                score=USAGE_WEIGHT + 0.2 * best_score,
                kind="usage",
            )
        )
        return out

    def _similar_snippets(
        self, uri: str, text: str, before: str, window_start: int, visible_end: int
    ) -> list[Candidate]:
        """Windows most like the lines before the cursor (Jaccard over identifier sets):
        from recently opened/edited files, and from the parts of this file the prompt
        will not show (far above the prefix window, or below the cursor)."""
        query = _identifier_set("\n".join(before.split("\n")[-SNIPPET_QUERY_LINES:]))
        if len(query) < 3:
            return []
        sources: list[tuple[str, _Windows, bool]] = []
        # This file: keyed on the text outside the visible region (the window's first line
        # rounded down to a multiple of 16, as the prompt builder's grid), so typing at the
        # cursor neither rebuilds nor moves these windows.
        first_visible = text.count("\n", 0, window_start) // 16 * 16
        last_visible = text.count("\n", 0, visible_end)
        head_end = _line_offset(text, first_visible)
        outside = (first_visible, hash(text[:head_end]), hash(text[visible_end:]))
        own = self._windows.get("self:" + uri)
        if own is None or own.key != outside:
            own = self._windows["self:" + uri] = _Windows(outside, text)
        sources.append((uri, own, True))
        alive = {"self:" + uri}
        for other_uri, other_text, version in self._recent() if self._recent is not None else ():
            alive.add(other_uri)
            if other_uri == uri or not other_text:
                continue
            if self._is_secret(other_uri):
                continue  # an open .env or key file is never shown to the model
            key = (version, len(other_text))
            win = self._windows.get(other_uri)
            if win is None or win.key != key:
                win = self._windows[other_uri] = _Windows(key, other_text)
            sources.append((other_uri, win, False))
        for stale in [u for u in self._windows if u not in alive and not u.startswith("self:")]:
            del self._windows[stale]
        while sum(1 for u in self._windows if u.startswith("self:")) > 8:
            del self._windows[next(u for u in self._windows if u.startswith("self:") and u != "self:" + uri)]
        best: list[tuple[float, str, int, _Windows]] = []
        for source_uri, win, is_self in sources:
            for start, idents in win.windows:
                if is_self and start + SNIPPET_LINES > first_visible and start <= last_visible + 1:
                    continue  # the prompt shows these lines already
                inter = len(query & idents)
                if not inter:
                    continue
                sim = inter / len(query | idents)
                if sim >= MIN_JACCARD:
                    best.append((sim, source_uri, start, win))
        best.sort(key=lambda b: (-b[0], b[1], b[2]))
        out = []
        used: list[tuple[str, int]] = []
        for sim, source_uri, start, win in best:
            if any(u == source_uri and abs(s - start) < SNIPPET_LINES for u, s in used):
                continue
            used.append((source_uri, start))
            body = "\n".join(win.lines[start : start + SNIPPET_LINES]).strip("\n")
            rel = self._rel(os.path.abspath(uri_to_path(source_uri)))
            out.append(
                Candidate(
                    key=("snippet", source_uri, start, body),
                    path=rel,
                    text=body,
                    score=SNIPPET_WEIGHT * sim,
                    kind="snippet",
                )
            )
            if len(out) >= MAX_SNIPPETS:
                break
        return out

    # --------------------------------------------------------------- selection
    def _select(
        self,
        session: _Session,
        candidates: list[Candidate],
        token_budget: int,
        count_tokens: Callable[[str], int],
        request: Any,
    ) -> list[ContextChunk]:
        # Reserve what the template adds around the chunks: the current file's own header
        # line and a repo-name line (repo-level formats).
        reserve = (
            self._count(f"# {request.path or 'file'}\n", count_tokens)
            + self._count(f"{request.repo_name or 'workspace'}\n", count_tokens)
            + 2
        )
        budget = token_budget - reserve
        if budget <= 0 or not candidates:
            session.keys, session.chunks = [], {}
            return []
        previous = set(session.keys)
        best: dict[tuple[object, ...], Candidate] = {}
        for c in candidates:
            if not c.text.strip() or c.score < MIN_SCORE:
                continue
            if c.key in previous:
                c.score += STICKY_BONUS
            old = best.get(c.key)
            if old is None or c.score > old.score:
                best[c.key] = c
        ranked = sorted(best.values(), key=lambda c: (-c.score, c.key.__repr__()))
        chosen: dict[tuple[object, ...], tuple[Candidate, int]] = {}
        used = 0
        for c in ranked:
            cost = self._count(f"# {c.path}\n{c.text}\n\n", count_tokens)
            if used + cost > budget:
                continue
            chosen[c.key] = (c, cost)
            used += cost
        # Stable presentation: kept chunks in their old places, new ones appended (the
        # best of them last, nearest the code), grouped by file so headers are shared.
        kept = [k for k in session.keys if k in chosen]
        new = sorted((k for k in chosen if k not in previous), key=lambda k: chosen[k][0].score)
        new = _group_new(new, chosen, kept)
        order = kept + new
        chunks: list[ContextChunk] = []
        new_chunks: dict[tuple[object, ...], ContextChunk] = {}
        for k in order:
            c = chosen[k][0]
            chunk = session.chunks.get(k)
            if chunk is None or chunk.text != c.text or chunk.path != c.path:
                chunk = ContextChunk(path=c.path, text=c.text, score=round(c.score, 3), kind=c.kind)
            new_chunks[k] = chunk
            chunks.append(chunk)
        session.keys, session.chunks = order, new_chunks
        return chunks
