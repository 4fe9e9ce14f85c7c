"""Workspace context as one object: index + live updates + retrieval.

:class:`WorkspaceContext` owns the symbol index of the workspace roots, the watcher that
keeps it current, the list of recently opened/edited documents, and the retriever the
completion engine calls (it *is* the engine's ``ContextProvider``).  The LSP glue
(``protocol/workspace_features.py``) and the CLI (:func:`build_context_provider`) both use
it; nothing here knows about LSP.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lsp_server.context.documents import Document, DocumentStore
from lsp_server.context.index import MAX_FILES, ProgressCallback, WorkspaceIndex
from lsp_server.context.retrieval import Retriever, uri_to_path
from lsp_server.context.watcher import IndexUpdater, WorkspaceWatcher
from lsp_server.families.completion import ContextChunk

logger = logging.getLogger(__name__)

RECENT_DOCUMENTS = 10


class RecentDocuments:
    """The documents opened or edited most recently (kept after they are closed)."""

    def __init__(self, store: DocumentStore | None, capacity: int = RECENT_DOCUMENTS) -> None:
        self._docs: OrderedDict[str, Document] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        if store is not None:
            store.add_listener(self._on_change)
            for uri in store.uris():
                try:
                    self._on_change(store.get(uri), [])
                except KeyError:
                    pass

    def _on_change(self, doc: Document, edits: list[tuple[int, int, int, str]]) -> None:
        with self._lock:
            self._docs[doc.uri] = doc
            self._docs.move_to_end(doc.uri)
            while len(self._docs) > self._capacity:
                self._docs.popitem(last=False)

    def items(self) -> list[tuple[str, str, int]]:
        """(uri, text, version), most recent last.  ``text`` is read once: a document that
        changes meanwhile is seen at one version or the next, never torn."""
        with self._lock:
            docs = list(self._docs.values())
        return [(d.uri, d.text, d.version) for d in docs]


class WorkspaceContext:
    """Index, watcher and retriever of a set of workspace roots."""

    def __init__(
        self,
        roots: Iterable[str],
        store: DocumentStore | None = None,
        recent: RecentDocuments | None = None,
        *,
        secret_paths: Sequence[str] = (),
        max_files: int = MAX_FILES,
    ) -> None:
        self.index = WorkspaceIndex(roots, max_files=max_files, secret_paths=secret_paths)
        # The store keeps its listeners for good: whoever restarts contexts passes one
        # RecentDocuments along instead of subscribing a new one each time.
        self.recent = recent if recent is not None else RecentDocuments(store)
        self.retriever = Retriever(self.index, recent=self.recent.items)
        self.updater = IndexUpdater(self.index)
        self.watcher = WorkspaceWatcher(self.updater)
        self._cancel = threading.Event()

    # ContextProvider ------------------------------------------------------
    def retrieve(self, request: Any, token_budget: int, count_tokens: Callable[[str], int]) -> Sequence[ContextChunk]:
        return self.retriever.retrieve(request, token_budget, count_tokens)

    def likely_chunks(self, token_budget: int, count_tokens: Callable[[str], int]) -> tuple[list[ContextChunk], int] | None:
        """The workspace's likely context (``Retriever.likely_chunks``) and the index
        generation it was read from; None while the index is not built."""
        if self.index.stats.state != "ready":
            return None
        generation = self.index.generation
        return self.retriever.likely_chunks(token_budget, count_tokens), generation

    # lifecycle ------------------------------------------------------------
    @property
    def roots(self) -> list[str]:
        return list(self.index.roots)

    def build(
        self,
        roots: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        first: Sequence[str] = (),
    ) -> int:
        """Index ``roots`` (all by default), blocking; safe to call from any thread."""
        return self.index.build(roots, progress=progress, cancel=self._cancel, first=first)

    def start_watching(self) -> bool:
        self.updater.start()
        if self.watcher.running:
            return True
        ok = self.watcher.start(self.index.roots)
        if not ok:
            logger.warning("live index updates from the file system are off: %s", self.watcher.error)
        return ok

    def add_root(self, root: str) -> None:
        root = os.path.abspath(root)
        self.index.add_root(root)
        self.watcher.add_root(root)

    def remove_root(self, root: str) -> None:
        root = os.path.abspath(root)
        self.watcher.remove_root(root)
        self.index.remove_root(root)

    def file_events(self, paths: Iterable[str]) -> None:
        """Paths the client reports changed (``workspace/didChangeWatchedFiles``)."""
        self.updater.start()
        self.updater.submit(paths)

    def stop(self) -> None:
        self._cancel.set()
        self.watcher.stop()
        self.updater.stop()

    def status(self) -> dict[str, Any]:
        stats = self.index.stats
        return {
            "state": stats.state,
            "roots": self.index.roots,
            "files": stats.files,
            "symbols": stats.symbols,
            "skipped": dict(stats.skipped),
            "maxFiles": self.index.max_files,
            "buildSeconds": round(stats.build_s, 3),
            "generation": self.index.generation,
            "watching": self.watcher.running,
            "watchError": self.watcher.error,
            "eventsApplied": self.updater.applied,
            "retrievalCalls": self.retriever.stats.calls,
            "lastRetrievalMs": round(self.retriever.stats.last_ms, 3),
            "lastCandidates": self.retriever.stats.last_candidates,
            "lastChunks": self.retriever.stats.last_chunks,
        }


def build_context_provider(roots: Sequence[str], store: DocumentStore | None = None) -> WorkspaceContext:
    """A ready context provider for ``roots`` (index built synchronously; no watcher), for
    one-shot use such as ``quill-lsp complete``."""
    context = WorkspaceContext(roots, store)
    context.build(first=[os.path.abspath(uri_to_path(u)) for u in (store.uris() if store else [])])
    return context
