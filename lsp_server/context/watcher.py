"""Live index updates from file-system events.

watchdog watches each workspace root (one recursive watch per root: watchdog starts a
thread per watch, so never one per directory).  Its events, and the client's
``workspace/didChangeWatchedFiles`` notifications, go into one queue; a single worker
thread drains it, waits :data:`SETTLE_S` for a burst to settle (an editor's save, a
``git checkout``), merges events per path and re-indexes each path once.  A file changes
in the index a fraction of a second after it changes on disk; nothing else is re-read.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from lsp_server.context.index import WorkspaceIndex

logger = logging.getLogger(__name__)

SETTLE_S = 0.05
_NOISE_DIRS = (os.sep + ".git" + os.sep, os.sep + "__pycache__" + os.sep, os.sep + "node_modules" + os.sep)


class IndexUpdater:
    """Applies path events to an index on its own thread, coalescing bursts."""

    def __init__(self, index: WorkspaceIndex, on_update: Callable[[int], None] | None = None) -> None:
        self.index = index
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._on_update = on_update
        self.applied = 0  # paths processed (for tests and status)
        self._pending = 0
        self._cond = threading.Condition()

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="quill-index-updates", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=2)
        self._thread = None

    def submit(self, paths: Iterable[str]) -> None:
        for path in paths:
            if any(noise in path for noise in _NOISE_DIRS):
                continue
            with self._cond:
                self._pending += 1
            self._queue.put(os.path.abspath(path))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every submitted path has been applied (tests, benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _done(self, n: int) -> None:
        with self._cond:
            self._pending -= n
            if self._pending <= 0:
                self._pending = 0
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = {item}
            taken = 1
            stop = False
            deadline = time.monotonic() + SETTLE_S
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.add(nxt)
                taken += 1
            try:
                self._apply(batch)
            finally:
                self._done(taken)
            if stop:
                return

    def _apply(self, batch: set[str]) -> None:
        changed = 0
        # Parents first, so a new directory is walked before its files are looked at.
        for path in sorted(batch, key=len):
            try:
                changed += self.index.refresh_path(path)
            except Exception:
                logger.exception("updating the index for %s failed", path)
            self.applied += 1
        if changed:
            logger.debug("index updated: %d file(s) from %d event path(s)", changed, len(batch))
            if self._on_update is not None:
                try:
                    self._on_update(changed)
                except Exception:
                    logger.debug("index update callback failed", exc_info=True)


class WorkspaceWatcher:
    """watchdog observer over the index's roots, feeding an :class:`IndexUpdater`."""

    def __init__(self, updater: IndexUpdater) -> None:
        self.updater = updater
        self._observer: Any | None = None
        self._watches: dict[str, Any] = {}
        self.error: str | None = None

    def start(self, roots: Iterable[str]) -> bool:
        """Start watching; False (with ``error`` set) when watchdog cannot run here."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError as exc:  # pragma: no cover - watchdog is a dependency
            self.error = f"watchdog unavailable: {exc}"
            return False

        updater = self.updater

        class _Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write", "closed"):
                    return
                paths = [os.fsdecode(event.src_path)]
                dest = getattr(event, "dest_path", "")
                if dest:
                    paths.append(os.fsdecode(dest))
                updater.submit(paths)

        self._handler = _Handler()
        try:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        except Exception as exc:
            self.error = f"file watching unavailable: {exc}"
            self._observer = None
            return False
        ok = True
        for root in roots:
            ok = self.add_root(root) and ok
        return ok

    def add_root(self, root: str) -> bool:
        if self._observer is None or root in self._watches:
            return self._observer is not None
        try:
            self._watches[root] = self._observer.schedule(self._handler, root, recursive=True)
            return True
        except Exception as exc:  # inotify limits, a vanished folder
            self.error = f"cannot watch {root}: {exc}"
            logger.warning("%s", self.error)
            return False

    def remove_root(self, root: str) -> None:
        watch = self._watches.pop(root, None)
        if watch is not None and self._observer is not None:
            try:
                self._observer.unschedule(watch)
            except Exception:
                logger.debug("unschedule %s failed", root, exc_info=True)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=2)
            except Exception:
                logger.debug("stopping the observer failed", exc_info=True)

    @property
    def running(self) -> bool:
        return self._observer is not None
