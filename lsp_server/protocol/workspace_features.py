"""Workspace context glue: indexing at `initialized`, watched files, retrieval hook-up.

- At ``initialized`` (when the ``workspaceContext`` setting is on) the workspace roots are
  indexed on a background thread, with ``$/progress`` when the client can show it; the
  engine's context provider is set at once (retrieval uses what is indexed so far).
- watchdog keeps the index current; ``workspace/didChangeWatchedFiles`` (registered
  dynamically where the client offers it) feeds the same updater, so either source alone
  is enough and both together do no double work.
- ``workspace/didChangeWorkspaceFolders`` adds/removes roots (multi-root workspaces).
- Turning ``workspaceContext`` off stops the watcher and drops the index; turning it on
  again rebuilds it.
- ``quill/workspaceIndex`` answers the index status (files, symbols, state, timings) and,
  given ``{"symbol": name}``, where that name is defined.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from lsp_server.config import Settings
from lsp_server.context.parser import EXTENSIONS
from lsp_server.protocol.server import param

if TYPE_CHECKING:
    from lsp_server.context.workspace import RecentDocuments, WorkspaceContext
    from lsp_server.protocol.server import QuillServer

logger = logging.getLogger(__name__)

INDEX_STATUS_REQUEST = "quill/workspaceIndex"
PROGRESS_INTERVAL_S = 0.25


def _uri_to_path(uri: str) -> str:
    from lsp_server.protocol.server import uri_to_path

    return os.path.abspath(uri_to_path(uri))


class WorkspaceFeature:
    """The workspace context of one server: created, rebuilt and stopped with settings."""

    def __init__(self, server: QuillServer) -> None:
        self.server = server
        self.context: WorkspaceContext | None = None
        self.recent: RecentDocuments | None = None
        self.initialized = False
        self._build_task: asyncio.Task[Any] | None = None
        self._registered_watch = False

    # ------------------------------------------------------------------ hooks
    def on_initialized(self, ls: QuillServer) -> None:
        self.initialized = True
        if ls.settings.workspace_context:
            self.start()
        asyncio.ensure_future(self._register_file_watching())

    def on_settings_changed(self, ls: QuillServer, settings: Settings) -> None:
        if not self.initialized:
            return  # initialize: the index is built at `initialized`
        if settings.workspace_context and self.context is None:
            self.start()
        elif not settings.workspace_context and self.context is not None:
            self.stop()
        elif self.context is not None and (
            tuple(settings.secret_paths) != self.context.index.secret_paths
            or settings.index_max_files != self.context.index.max_files
        ):
            # Fewer files allowed, or new secret globs: rebuild, so that nothing indexed
            # under the old settings stays.
            self.stop()
            self.start()

    def on_shutdown(self, ls: QuillServer) -> None:
        self.stop()

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        from lsp_server.context.workspace import RecentDocuments, WorkspaceContext

        ls = self.server
        if self.recent is None:
            self.recent = RecentDocuments(ls.documents)
        context = WorkspaceContext(
            ls.workspace_roots,
            recent=self.recent,
            secret_paths=ls.settings.secret_paths,
            max_files=ls.settings.index_max_files,
        )
        self.context = context
        ls.engine.context = context
        context.start_watching()
        self._build(list(context.roots))

    def stop(self) -> None:
        context, self.context = self.context, None
        if self.server.engine.context is context:
            self.server.engine.context = None
        if self._build_task is not None and not self._build_task.done():
            self._build_task.cancel()
        if context is not None:
            context.stop()

    def _build(self, roots: list[str]) -> None:
        if not roots or self.context is None:
            return
        previous = self._build_task
        self._build_task = asyncio.ensure_future(self._build_with_progress(self.context, roots, previous))

    async def _build_with_progress(
        self, context: WorkspaceContext, roots: list[str], previous: asyncio.Task[Any] | None
    ) -> None:
        if previous is not None and not previous.done():
            try:
                await previous  # one build at a time; folders added meanwhile queue up
            except BaseException:
                pass
        ls = self.server
        loop = asyncio.get_running_loop()
        token = await ls.create_progress_token("quill-index")
        names = ", ".join(os.path.basename(r) or r for r in roots)
        if token is not None:
            try:
                ls.work_done_progress.begin(
                    token,
                    types.WorkDoneProgressBegin(
                        title="Quill", message=f"indexing {names}", percentage=0, cancellable=False
                    ),
                )
            except Exception:
                logger.debug("client refused progress", exc_info=True)
                token = None
        last = [0.0]

        def progress(done: int, total: int, path: str) -> None:
            now = time.monotonic()
            if token is None or (now - last[0] < PROGRESS_INTERVAL_S and done != total):
                return
            last[0] = now
            pct = int(done * 100 / max(1, total))
            message = f"indexing {names}: {done}/{total} files"
            loop.call_soon_threadsafe(self._report, token, pct, message)

        open_paths = [_uri_to_path(u) for u in ls.documents.uris()]
        t0 = time.perf_counter()
        message = "workspace index ready"
        try:
            await loop.run_in_executor(None, lambda: context.build(roots, progress, open_paths))
            status = context.status()
            message = (
                f"indexed {status['files']} files ({status['symbols']} symbols) in {time.perf_counter() - t0:.1f} s"
            )
            logger.info("%s", message)
            ls.engine.workspace_changed()  # its likely context is evaluated when idle
        except asyncio.CancelledError:
            message = "indexing cancelled"
            raise
        except Exception as exc:  # the server keeps working, without workspace context
            message = "indexing failed"
            logger.exception("indexing the workspace failed")
            ls.notifier.show(f"indexing the workspace failed: {exc}", types.MessageType.Warning)
        finally:
            if token is not None:
                try:
                    ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
                except Exception:
                    logger.debug("progress end failed", exc_info=True)

    def _report(self, token: str, percentage: int, message: str) -> None:
        try:
            self.server.work_done_progress.report(
                token, types.WorkDoneProgressReport(message=message, percentage=percentage)
            )
        except Exception:
            logger.debug("progress report failed", exc_info=True)

    async def _register_file_watching(self) -> None:
        """Ask the client for file events too, where it supports dynamic registration."""
        ls = self.server
        caps = ls.client_capabilities
        watched = caps.workspace.did_change_watched_files if caps and caps.workspace else None
        if watched is None or not watched.dynamic_registration or self._registered_watch:
            return
        exts = sorted({e.lstrip(".") for e in EXTENSIONS})
        watchers = [
            types.FileSystemWatcher(glob_pattern="**/*.{" + ",".join(exts) + "}"),
            types.FileSystemWatcher(glob_pattern="**/.gitignore"),
        ]
        try:
            await ls.client_register_capability_async(
                types.RegistrationParams(
                    registrations=[
                        types.Registration(
                            id=f"quill-watched-files-{uuid.uuid4()}",
                            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                            register_options=types.DidChangeWatchedFilesRegistrationOptions(watchers=watchers),
                        )
                    ]
                )
            )
            self._registered_watch = True
        except Exception:
            logger.debug("client refused file watching registration", exc_info=True)

    # ------------------------------------------------------------- handlers
    def watched_files(self, params: types.DidChangeWatchedFilesParams) -> None:
        if self.context is None:
            return
        self.context.file_events(_uri_to_path(change.uri) for change in params.changes)

    def folders_changed(self, params: types.DidChangeWorkspaceFoldersParams) -> None:
        ls = self.server
        added = [_uri_to_path(f.uri) for f in params.event.added or []]
        removed = [_uri_to_path(f.uri) for f in params.event.removed or []]
        roots = [r for r in ls.workspace_roots if r not in removed]
        roots += [r for r in added if r not in roots]
        ls.workspace_roots = roots
        if self.context is None:
            return
        for root in removed:
            self.context.remove_root(root)
        for root in added:
            self.context.add_root(root)
        self._build(added)

    def status(self, params: Any = None) -> dict[str, Any]:
        if self.context is None:
            return {"state": "off", "roots": self.server.workspace_roots}
        status = self.context.status()
        if self._build_task is not None and not self._build_task.done():
            status["state"] = "building"
        symbol = param(params, "symbol")
        if isinstance(symbol, str) and symbol:
            status["definitions"] = [
                {"path": f.path, "line": s.line, "kind": s.kind, "signature": s.signature}
                for f, s in self.context.index.definitions(symbol)
            ]
        return status


def register(server: QuillServer) -> None:
    """Register workspace handlers and hooks on ``server``."""
    feature = WorkspaceFeature(server)
    server.workspace_feature = feature  # type: ignore[attr-defined]
    server.on_initialized.append(feature.on_initialized)
    server.on_settings_changed.append(feature.on_settings_changed)
    server.on_shutdown.append(feature.on_shutdown)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: QuillServer, params: types.DidChangeWatchedFilesParams) -> None:
        feature.watched_files(params)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_workspace_folders(ls: QuillServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        feature.folders_changed(params)

    @server.feature(INDEX_STATUS_REQUEST)
    def index_status(ls: QuillServer, params: Any) -> dict[str, Any]:
        """Index status; ``{"symbol": name}`` adds that name's definitions."""
        return feature.status(params)
