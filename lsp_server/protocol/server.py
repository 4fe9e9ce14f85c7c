"""The LSP server: thin pygls handlers over the engine.

This package is the only place that imports pygls or lsprotocol.  Handlers convert LSP
types to the engine's plain dataclasses and back; anything that can take long is
``async def`` so that ``$/cancelRequest`` and newer keystrokes really stop it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCNotification

from lsp_server import __version__
from lsp_server.config import Settings, parse_settings
from lsp_server.context.documents import DocumentNotOpen, DocumentStore, TextChange
from lsp_server.context.parser import DocumentParser
from lsp_server.engine.engine import (
    CompletionEngine,
    CompletionFailed,
    CompletionRequest,
    CompletionResult,
    ModelUnavailable,
)

logger = logging.getLogger(__name__)

STATUS_REQUEST = "quill/status"
MODEL_STATE_NOTIFICATION = "quill/modelState"
# Sent by Quill's editor clients when the cursor settles somewhere (a file opened or
# switched to, a jump, a click): {"textDocument": {"uri"}, "position": {"line", "character"}}.
# The server evaluates the prompt a request there will need before it is asked.
CURSOR_NOTIFICATION = "quill/didMoveCursor"
# Server -> client: a better suggestion is ready at this cursor (the full prompt's, where a
# quick prompt's was shown or hidden); a client whose cursor is still there asks again.
# LSP 3.18 has no refresh request for inline completions.
REFRESH_NOTIFICATION = "quill/refreshInlineCompletion"
# Suggestions returned when an inline completion is asked for explicitly (Invoked).
EXPLICIT_ITEMS = 3


# A client that does not answer window/workDoneProgress/create within this gets no progress.
PROGRESS_CREATE_TIMEOUT_S = 5.0


def param(params: Any, key: str) -> Any:
    """``key`` of a custom request's params (a dict, or pygls's object for unknown methods)."""
    if isinstance(params, dict):
        return params.get(key)
    return getattr(params, key, None)


def uri_to_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        return uri
    return unquote(parsed.path)


class Notifier:
    """User-facing messages: each distinct message at most once a minute."""

    def __init__(self, server: LanguageServer, interval_s: float = 60.0) -> None:
        self._server = server
        self._interval = interval_s
        self._last: dict[str, float] = {}

    def show(self, message: str, kind: types.MessageType = types.MessageType.Error) -> None:
        now = time.monotonic()
        if now - self._last.get(message, -1e9) < self._interval:
            logger.info("(suppressed repeat) %s", message)
            return
        self._last[message] = now
        logger.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, "%s", message)
        try:
            self._server.window_show_message(types.ShowMessageParams(type=kind, message=f"Quill: {message}"))
        except Exception:
            logger.debug("could not send showMessage", exc_info=True)


class QuillProtocol(LanguageServerProtocol):
    """Answers a request whose params do not fit its method with an error.

    pygls drops such a message after logging it, so the client would wait forever for
    the response; here the client gets InvalidParams at once.
    """

    def structure_message(self, data: dict[str, Any]) -> Any:
        if isinstance(data, dict) and "method" in data and "id" in data and data.get("jsonrpc") != "2.0":
            # Not JSON-RPC 2.0: pygls would drop it and the client would wait forever.
            if isinstance(data["id"], (int, str)) and not isinstance(data["id"], bool):
                self._send_response(data["id"], error=JsonRpcInvalidRequest('"jsonrpc" must be "2.0"').to_response_error())
            return JsonRPCNotification(method="$/quill/invalidMessage", jsonrpc="2.0", params=None)
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "id" in data and "method" in data:
                logger.warning("invalid %s request: %s", data.get("method"), exc)
                self._send_response(data["id"], error=exc.to_response_error())
                return JsonRPCNotification(method="$/quill/invalidMessage", jsonrpc="2.0", params=None)
            raise


class QuillServer(LanguageServer):
    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("protocol_cls", QuillProtocol)
        super().__init__(
            name="quill-lsp",
            version=__version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            **kwargs,
        )
        self.settings = settings or Settings()
        self.documents = DocumentStore()
        self.parser = DocumentParser(self.documents)
        self.engine = CompletionEngine(self.settings)
        self.engine.on_model_state = self._on_model_state
        self.engine.on_upgrade = self._on_upgrade
        self.notifier = Notifier(self)
        self.workspace_roots: list[str] = []
        self.model_state = ("idle", "")
        self._load_task: asyncio.Task[Any] | None = None
        # Feature modules (context index, code actions) register start-up hooks here.
        self.on_initialized: list[Callable[[QuillServer], Any]] = []
        self.on_settings_changed: list[Callable[[QuillServer, Settings], Any]] = []
        self.on_shutdown: list[Callable[[QuillServer], Any]] = []

    # --------------------------------------------------------------- helpers
    def _on_model_state(self, state: str, detail: str) -> None:
        self.model_state = (state, detail)
        try:
            self.protocol.notify(MODEL_STATE_NOTIFICATION, {"state": state, "detail": detail})
        except Exception:
            logger.debug("could not send model state", exc_info=True)

    def _on_upgrade(self, req: CompletionRequest) -> None:
        """Tell the client to ask again at ``req``'s cursor, if the document still reads
        the same up to it and on the rest of its line."""
        try:
            doc = self.documents.snapshot(req.uri)
        except DocumentNotOpen:
            return
        end = req.text.find("\n", req.offset)
        end = len(req.text) if end == -1 else end
        if doc.text[:end] != req.text[:end]:
            return  # the text moved on: the request that follows gets its own answer
        line, character = doc.position_at(req.offset, self.documents.encoding)
        logger.info("%s sent for %s at %d:%d (a fuller prompt's suggestion differs)", REFRESH_NOTIFICATION, req.uri, line, character)
        try:
            self.protocol.notify(
                REFRESH_NOTIFICATION,
                {
                    "textDocument": {"uri": req.uri, "version": doc.version},
                    "position": {"line": line, "character": character},
                },
            )
        except Exception:
            logger.debug("could not send %s", REFRESH_NOTIFICATION, exc_info=True)

    def apply_settings(self, raw: Any, *, initial: bool = False) -> None:
        settings, problems = parse_settings(raw, self.settings)
        for problem in problems:
            self.notifier.show(problem, types.MessageType.Warning)
        self.settings = settings
        reload = self.engine.update_settings(settings)
        for hook in self.on_settings_changed:
            try:
                hook(self, settings)
            except Exception:
                logger.exception("settings hook failed")
        if reload and not initial:
            # quill/status must not pair the new model's id with the old model's "ready"
            # until the load task has started (it sends quill/modelState "loading").
            self.model_state = ("loading", settings.model)
            self.start_model_load()

    def start_model_load(self) -> None:
        """Load (or reload) the model in the background, with $/progress."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self._load_task = asyncio.ensure_future(self._load_model_with_progress())

    def _client_has_progress(self) -> bool:
        caps = self.client_capabilities
        return bool(caps and caps.window and caps.window.work_done_progress)

    async def create_progress_token(self, prefix: str) -> str | None:
        """A server-initiated ``$/progress`` token (``window/workDoneProgress/create``), or
        None when the client cannot show progress or refuses.  Bounded: a client that never
        answers must not hold back the work the progress is about.  pygls keeps a future per
        token that its ``window/workDoneProgress/cancel`` handler cancels."""
        if not self._client_has_progress():
            return None
        token = f"{prefix}-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), PROGRESS_CREATE_TIMEOUT_S)
        except Exception:
            logger.debug("client refused progress", exc_info=True)
            return None
        return token

    async def _load_model_with_progress(self) -> None:
        token = await self.create_progress_token("quill-model")
        if token is not None:
            try:
                self.work_done_progress.begin(
                    token, types.WorkDoneProgressBegin(title="Quill", message=f"loading model {self.settings.model}")
                )
            except Exception:
                logger.debug("progress begin failed", exc_info=True)
                token = None
        message = "model ready"
        try:
            model = await self.engine.ensure_model()
            message = f"ready: {model.description}"
            self.window_log_message(types.LogMessageParams(type=types.MessageType.Info, message=f"Quill {message}"))
        except ModelUnavailable as exc:
            message = "model failed to load"
            self.notifier.show(str(exc))
        except asyncio.CancelledError:
            message = "model load cancelled"
            raise
        finally:
            if token is not None:
                try:
                    self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
                except Exception:
                    logger.debug("progress end failed", exc_info=True)

    def relative_path(self, uri: str) -> str:
        path = uri_to_path(uri)
        for root in self.workspace_roots:
            if path.startswith(root.rstrip("/") + "/"):
                return os.path.relpath(path, root)
        return os.path.basename(path)

    def completion_request(self, uri: str, position: types.Position, max_items: int = 1) -> CompletionRequest:
        try:
            doc = self.documents.snapshot(uri)
        except DocumentNotOpen as exc:
            raise JsonRpcInvalidParams(str(exc)) from exc
        offset = doc.offset_at(position.line, position.character, self.documents.encoding)
        try:
            live = self.documents.get(uri)
            hint = self.parser.hint(live, offset) if live.version == doc.version else None
        except Exception:
            logger.exception("syntax hint failed for %s", uri)
            hint = None
        return CompletionRequest(
            uri=uri,
            text=doc.text,
            offset=offset,
            path=self.relative_path(uri),
            language_id=doc.language_id,
            syntax=hint,
            repo_name=os.path.basename(self.workspace_roots[0]) if self.workspace_roots else "",
            max_items=max_items,
        )

    def warm_document(self, uri: str, position: types.Position | None) -> None:
        """Idle-time work for a document: the prompt for the cursor at ``position``, or,
        when the cursor is not known (a plain didOpen), the first prompt window of the
        file (which serves any cursor in it)."""
        if not self.settings.warmup:
            return
        try:
            if position is None:
                doc = self.documents.snapshot(uri)
                guess = min(len(doc.text), self.settings.context_tokens * 3)
                end = doc.text.find("\n", guess)
                offset = len(doc.text) if end == -1 else end
                line, character = doc.position_at(offset, self.documents.encoding)
                position = types.Position(line=line, character=character)
                req = self.completion_request(uri, position)
                self.engine.warm(req, cursor_known=False)
            else:
                self.engine.warm(self.completion_request(uri, position), cursor_known=True)
        except (JsonRpcInvalidParams, DocumentNotOpen):
            logger.debug("warm-up for %s skipped: document not open", uri)
        except Exception:
            logger.exception("warm-up for %s failed", uri)

    async def run_completion(
        self, uri: str, position: types.Position, max_items: int = 1
    ) -> tuple[CompletionRequest, CompletionResult | None]:
        req = self.completion_request(uri, position, max_items)
        try:
            result = await self.engine.complete(req)
        except ModelUnavailable as exc:
            self.notifier.show(str(exc))
            return req, None
        except CompletionFailed as exc:
            self.notifier.show(f"completion failed: {exc}")
            return req, None
        if result is None:
            logger.debug("completion %s: superseded or cancelled", uri)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("completion %s at %d: raw %r -> %s", uri, req.offset, result.raw, result.as_dict())
        return req, result


def _word_before(text: str) -> str:
    i = len(text)
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    return text[i:]


def build_core(settings: Settings | None = None) -> QuillServer:
    """The server with its core handlers (documents, completions, status, shutdown).
    Feature modules add theirs: see ``protocol/app.py``."""
    server = QuillServer(settings)

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: QuillServer, params: types.InitializeParams) -> None:
        roots = []
        for folder in params.workspace_folders or []:
            roots.append(uri_to_path(folder.uri))
        if not roots and params.root_uri:
            roots.append(uri_to_path(params.root_uri))
        elif not roots and params.root_path:
            roots.append(params.root_path)
        ls.workspace_roots = [os.path.abspath(r) for r in roots]
        encoding = ls.workspace.position_encoding or "utf-16"
        ls.documents.encoding = str(getattr(encoding, "value", encoding))
        ls.apply_settings(params.initialization_options, initial=True)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: QuillServer, params: types.InitializedParams) -> None:
        ls.start_model_load()
        for hook in ls.on_initialized:
            try:
                hook(ls)
            except Exception:
                logger.exception("initialized hook failed")

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_config(ls: QuillServer, params: types.DidChangeConfigurationParams) -> None:
        raw = params.settings
        if isinstance(raw, dict) and "quill" in raw:
            raw = raw["quill"]
        if raw is None or raw == {}:
            try:
                got = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="quill")])
                )
                raw = got[0] if got else None
            except Exception:
                logger.debug("workspace/configuration failed", exc_info=True)
                raw = None
        if raw is not None:
            ls.apply_settings(raw)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: QuillServer, params: types.DidOpenTextDocumentParams) -> None:
        td = params.text_document
        ls.documents.open(td.uri, td.text, td.version, td.language_id)
        ls.warm_document(td.uri, None)

    @server.feature(CURSOR_NOTIFICATION)
    def did_move_cursor(ls: QuillServer, params: Any) -> None:
        try:
            uri = params.textDocument.uri
            pos = types.Position(line=int(params.position.line), character=int(params.position.character))
        except (AttributeError, TypeError, ValueError):
            logger.debug("malformed %s: %r", CURSOR_NOTIFICATION, params)
            return
        if pos.line < 0 or pos.character < 0:
            return
        ls.warm_document(uri, pos)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: QuillServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        changes = []
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                changes.append(TextChange(change.text, (r.start.line, r.start.character), (r.end.line, r.end.character)))
            else:
                changes.append(TextChange(change.text))
        try:
            ls.documents.change(uri, params.text_document.version, changes)
        except DocumentNotOpen:
            logger.warning("didChange for a document that is not open: %s", uri)
            return
        ls.engine.cancel(uri)  # the text moved on: a running completion for it is stale

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: QuillServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.engine.cancel(uri)
        ls.engine.forget(uri)
        ls.documents.close(uri)
        ls.parser.forget(uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: QuillServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList | None:
        pos = params.position
        # Asked for explicitly (VS Code: the user cycles suggestions with Alt+] / Alt+[):
        # several candidates; typing (Automatic) gets the best one.
        explicit = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        _req, result = await ls.run_completion(params.text_document.uri, pos, EXPLICIT_ITEMS if explicit else 1)
        if result is None or not result.text:
            return types.InlineCompletionList(items=[])
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(insert_text=text, range=types.Range(start=pos, end=pos))
                for text in [result.text, *result.alternatives]
            ]
        )

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[".", "(", " "], resolve_provider=False),
    )
    async def completion(ls: QuillServer, params: types.CompletionParams) -> types.CompletionList:
        pos = params.position
        req, result = await ls.run_completion(params.text_document.uri, pos)
        if result is None or not result.text:
            return types.CompletionList(is_incomplete=True, items=[])
        # Clients filter items by the word before the cursor: replace that word with the
        # word plus the suggestion, so the item survives filtering.
        line_start = req.text.rfind("\n", 0, req.offset) + 1
        word = _word_before(req.text[line_start : req.offset])
        doc = ls.documents.get(req.uri)
        start_line, start_char = doc.position_at(req.offset - len(word), ls.documents.encoding)
        new_text = word + result.text
        first_line = new_text.split("\n", 1)[0]
        label = first_line if len(first_line) <= 60 else first_line[:57] + "..."
        item = types.CompletionItem(
            label=label or new_text.strip()[:60],
            kind=types.CompletionItemKind.Snippet,
            detail="Quill",
            documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{new_text}\n```"),
            filter_text=new_text,
            sort_text="0000",
            preselect=True,
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(
                range=types.Range(start=types.Position(line=start_line, character=start_char), end=pos),
                new_text=new_text,
            ),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(STATUS_REQUEST)
    def status(ls: QuillServer, params: Any) -> dict[str, Any]:
        model = ls.engine.model
        return {
            "version": __version__,
            "state": ls.model_state[0],
            "detail": ls.model_state[1],
            "model": ls.settings.model,
            "backend": ls.settings.backend,
            "device": model.backend.info.device if model else None,
            "description": model.description if model else None,
            "error": ls.engine.model_error,
            "workspaceRoots": ls.workspace_roots,
            "session": ls.engine.session_status(),
            # Per open document: "cold", "warming" (idle-time work pending or running) or
            # "ready" (its full prompt has been evaluated).
            "documents": [{"uri": uri, "state": ls.engine.document_state(uri)} for uri in ls.documents.uris()],
        }

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: QuillServer, params: Any) -> None:
        for hook in ls.on_shutdown:
            try:
                hook(ls)
            except Exception:
                logger.exception("shutdown hook failed")
        ls.engine.shutdown()

    return server
