"""Code actions: "Explain with Quill" and the rewrites ("Refactor", "Add docstring",
"Add type hints", "Simplify").

Protocol surface (what the editor clients rely on):

* ``textDocument/codeAction`` lists the actions for a non-empty selection, or for the
  function/class around the cursor (tree-sitter) when the selection is empty and the user
  asked (``triggerKind`` Invoked: an automatic lightbulb request with an empty selection
  gets nothing, so the lightbulb does not sit on every line).  No model runs here.

  - "Explain with Quill": kind ``""`` (the LSP empty kind: it changes nothing, so it is
    neither a quick fix nor a refactoring) with the command ``quill.explain``
    ``[uri, range]``.
  - The rewrites: kind ``refactor.rewrite``, no edit, ``data`` naming the action and the
    range; the edit is computed in ``codeAction/resolve``, so the model runs only for the
    action the user picked.  A client that cannot resolve edits gets the command
    ``quill.rewrite`` ``[uri, range, action]`` instead, which applies the edit with
    ``workspace/applyEdit``.

* ``workspace/executeCommand quill.explain [uri, range]``: writes the explanation to
  ``<cache>/explanations/*.md``, sends ``window/showDocument`` for it (when the client
  supports it) and ``window/logMessage`` with the text; returns
  ``{"markdown": text, "uri": file_uri}`` (``null`` when there is no explanation; the user
  has been told why).

* Failures of an action the user picked (selection too large for the model's window, a
  rewrite that does not parse, no change, model unavailable) are told with
  ``window/showMessage`` and the action comes back without an edit: every client shows a
  showMessage, while an error response to ``codeAction/resolve`` is only logged by some.
  Cancellation (``$/cancelRequest``, ``window/workDoneProgress/cancel``, or a newer action
  starting) answers with the RequestCancelled error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled

from lsp_server.context.documents import Document, DocumentNotOpen
from lsp_server.context.parser import language_for
from lsp_server.engine import actions as act
from lsp_server.engine.engine import ModelUnavailable

# Imported at run time (not only for type checking): pygls reads the command handlers'
# annotations with typing.get_type_hints, which must be able to resolve them.
from lsp_server.protocol.server import QuillServer

logger = logging.getLogger(__name__)

EXPLAIN_COMMAND = "quill.explain"
REWRITE_COMMAND = "quill.rewrite"
DATA_TAG = "quill"
KEEP_EXPLANATIONS = 50  # older explanation files are deleted
_ANSWERED = object()  # the request was answered (or cancelled) before its handler ran


def explanations_dir() -> Path:
    from lsp_server.registry import cache_dir

    return cache_dir() / "explanations"


# ------------------------------------------------------------------ conversions


def _range_json(rng: types.Range) -> dict[str, Any]:
    return {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }


def _range_from(value: Any) -> types.Range:
    """A Range from a command argument or ``data`` (JSON object or Range)."""
    if isinstance(value, types.Range):
        return value
    try:
        start, end = value["start"], value["end"]
        return types.Range(
            start=types.Position(line=int(start["line"]), character=int(start["character"])),
            end=types.Position(line=int(end["line"]), character=int(end["character"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise JsonRpcInvalidParams(f"expected a range {{start: {{line, character}}, end: ...}}, got {value!r}") from exc


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# ------------------------------------------------------------------ progress


class _Progress:
    """``$/progress`` for one action; a no-op when the client cannot show progress.

    Reports come from the model thread (``on_tokens``) and are handed to the event loop.
    A ``window/workDoneProgress/cancel`` for the token cancels the action.
    """

    def __init__(self, ls: QuillServer, title: str, cancel: act.CancelToken) -> None:
        self.ls = ls
        self.title = title
        self.cancel = cancel
        self.token: str | None = None
        self.loop = asyncio.get_running_loop()
        self._percentage = 0
        self._ended = False

    async def begin(self, message: str) -> None:
        token = await self.ls.create_progress_token("quill-action")
        if token is None:
            return
        self.token = token
        future = self.ls.work_done_progress.tokens.get(token)
        if future is not None:
            future.add_done_callback(
                lambda f: self.cancel.cancel("cancelled from the progress indicator") if f.cancelled() else None
            )
        self.ls.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title=self.title, message=message, cancellable=True, percentage=0)
        )

    def on_tokens(self, generated: int, limit: int) -> None:  # model thread
        self.loop.call_soon_threadsafe(self._report, generated, limit)

    def _report(self, generated: int, limit: int) -> None:
        if self.token is None or self._ended:
            return
        self._percentage = max(self._percentage, min(99, 100 * generated // max(1, limit)))
        try:
            self.ls.work_done_progress.report(
                self.token,
                types.WorkDoneProgressReport(
                    message=f"generating ({generated} token{'' if generated == 1 else 's'})",
                    percentage=self._percentage,
                    cancellable=True,
                ),
            )
        except Exception:
            logger.debug("progress report failed", exc_info=True)

    def end(self, message: str) -> None:
        if self.token is None or self._ended:
            return
        self._ended = True
        try:
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
        except Exception:
            logger.debug("progress end failed", exc_info=True)
        self.ls.work_done_progress.tokens.pop(self.token, None)


# ------------------------------------------------------------------ the feature


class CodeActions:
    """State and logic of the code-action feature for one server."""

    def __init__(self, ls: QuillServer) -> None:
        self.ls = ls
        self.slot = act.ActionSlot()

    # ---------------------------------------------------------------- helpers
    def tell(self, spec: act.ActionSpec, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """A message about an action the user just picked (not rate-limited: one per pick)."""
        text = f"{spec.title}: {message}"
        logger.warning("%s", text)
        try:
            self.ls.window_show_message(types.ShowMessageParams(type=kind, message=text))
        except Exception:
            logger.debug("could not send showMessage", exc_info=True)

    def _client_resolves_edits(self) -> bool:
        caps = self.ls.client_capabilities
        ca = caps.text_document.code_action if caps and caps.text_document else None
        if ca is None or not ca.data_support or ca.resolve_support is None:
            return False
        return "edit" in (ca.resolve_support.properties or [])

    def _client_document_changes(self) -> bool:
        caps = self.ls.client_capabilities
        we = caps.workspace.workspace_edit if caps and caps.workspace else None
        return bool(we and we.document_changes)

    def _client_shows_documents(self) -> bool:
        caps = self.ls.client_capabilities
        sd = caps.window.show_document if caps and caps.window else None
        return bool(sd and sd.support)

    def _offsets(self, doc: Document, rng: types.Range) -> tuple[int, int]:
        enc = self.ls.documents.encoding
        s = doc.offset_at(rng.start.line, rng.start.character, enc)
        e = doc.offset_at(rng.end.line, rng.end.character, enc)
        return (s, e) if s <= e else (e, s)

    def _range(self, doc: Document, start: int, end: int) -> types.Range:
        enc = self.ls.documents.encoding
        sl, sc = doc.position_at(start, enc)
        el, ec = doc.position_at(end, enc)
        return types.Range(start=types.Position(line=sl, character=sc), end=types.Position(line=el, character=ec))

    def target(self, uri: str, start: int, end: int) -> tuple[int, int] | None:
        """The code an action works on: the selection, or the enclosing definition."""
        doc = self.ls.documents.get(uri)
        text = doc.text
        if text[start:end].strip():
            return start, end
        tree = self.ls.parser.tree(doc)
        if tree is None:
            return None
        encoded = text.encode("utf-8", "surrogatepass")
        byte = act.index_to_byte(text, act.probe_offset(text, start))
        found = act.enclosing_definition(tree.root_node, byte)
        if found is None:
            return None
        return act.byte_to_index(text, found[0], encoded), act.byte_to_index(text, found[1], encoded)

    def _target_or_tell(self, spec: act.ActionSpec, uri: str, start: int, end: int) -> tuple[int, int] | None:
        try:
            target = self.target(uri, start, end)
        except DocumentNotOpen:
            target = None
        except Exception:
            logger.exception("finding the code for %s failed in %s", spec.title, uri)
            target = None
        if target is None:
            self.tell(spec, "select some code first (there is no function or class around the cursor).")
        return target

    def _request_future(self, token: act.CancelToken) -> Any | None:
        """The future of the request being handled, watched so that the client cancelling
        the request cancels ``token``.

        pygls cancels the handler's own task for ``codeAction/resolve``, but for
        ``workspace/executeCommand`` only the outer request future (the command's task
        goes on): so watch that future, whichever it is.  pygls keeps the futures of
        requests in flight in ``_request_futures``.
        """
        protocol = self.ls.protocol
        msg_id = protocol.msg_id
        futures = getattr(protocol, "_request_futures", None)
        if msg_id is None or futures is None:
            return None
        future = futures.get(msg_id)
        if future is None:  # already answered or cancelled before we got here
            token.cancel("request cancelled")
            return _ANSWERED
        future.add_done_callback(lambda f: token.cancel("request cancelled") if f.cancelled() else None)
        return future

    @staticmethod
    def _answer_cancelled(future: Any | None, message: str) -> None:
        """Answer the request with RequestCancelled, as pygls does for ``$/cancelRequest``
        (without logging an error: a cancelled action is not one)."""
        if future is _ANSWERED:
            return  # nobody is waiting for an answer any more
        if future is None:
            raise JsonRpcRequestCancelled(message)
        if future is asyncio.current_task():
            raise asyncio.CancelledError(message)  # resolve: pygls answers for a cancelled task
        future.cancel()  # executeCommand: cancelling the outer future sends the answer

    def _model_name(self) -> str:
        model = self.ls.engine.model
        return model.backend.info.name if model is not None else self.ls.settings.model

    # ---------------------------------------------------------------- listing
    def list_actions(self, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        uri = params.text_document.uri
        try:
            doc = self.ls.documents.get(uri)
        except DocumentNotOpen:
            return None
        context = params.context
        only = list(context.only) if context and context.only else None
        s, e = self._offsets(doc, params.range)
        empty = not doc.text[s:e].strip()
        if empty and context is not None and context.trigger_kind == types.CodeActionTriggerKind.Automatic:
            return None
        language = language_for(uri, doc.language_id)
        specs = [spec for spec in act.available_actions(language) if act.kind_matches(spec.lsp_kind, only)]
        if not specs:
            return None
        try:
            target = self.target(uri, s, e)
        except Exception:
            logger.exception("finding the code for a code action failed in %s", uri)
            return None
        if target is None:
            return None
        rng = self._range(doc, *target)
        rng_json = _range_json(rng)
        lazy = self._client_resolves_edits()
        out: list[types.CodeAction] = []
        for spec in specs:
            if not spec.rewrite:
                command = types.Command(title=spec.title, command=EXPLAIN_COMMAND, arguments=[uri, rng_json])
                out.append(types.CodeAction(title=spec.title, kind=spec.lsp_kind, command=command))
            elif lazy:
                data = {
                    DATA_TAG: 1,
                    "action": spec.kind.value,
                    "uri": uri,
                    "range": rng_json,
                    "version": doc.version,
                    "sha": _sha(doc.text[target[0] : target[1]]),
                }
                out.append(types.CodeAction(title=spec.title, kind=spec.lsp_kind, data=data))
            else:
                command = types.Command(
                    title=spec.title, command=REWRITE_COMMAND, arguments=[uri, rng_json, spec.kind.value]
                )
                out.append(types.CodeAction(title=spec.title, kind=spec.lsp_kind, command=command))
        return out

    # ---------------------------------------------------------------- running
    async def _run(self, spec: act.ActionSpec, req: act.ActionRequest) -> act.ActionResult | None:
        """Run one action on the model (latest action wins), with progress and cancel."""
        token = self.slot.start()
        request = self._request_future(token)
        progress = _Progress(self.ls, spec.title, token)
        try:
            await progress.begin("waiting for the model")
            result = await self.ls.engine.run_exclusive(
                lambda model: act.run_action(model, req, token.event, progress.on_tokens)
            )
        except asyncio.CancelledError:  # $/cancelRequest on codeAction/resolve cancels this task
            token.cancel("request cancelled")
            progress.end(token.reason)
            raise
        except act.ActionCancelled:
            reason = token.reason or "cancelled"
            progress.end(reason)
            logger.info("%s: %s", spec.title, reason)
            self._answer_cancelled(request, f"{spec.title}: {reason}")
            return None
        except act.ActionError as exc:
            progress.end("nothing to apply")
            self.tell(spec, str(exc))
            return None
        except ModelUnavailable as exc:
            progress.end("model unavailable")
            self.tell(spec, f"the model is not available: {exc}", types.MessageType.Error)
            return None
        except Exception as exc:  # one failed action must never take the server down
            logger.exception("%s failed", spec.title)
            progress.end("failed")
            self.tell(spec, f"failed: {exc}", types.MessageType.Error)
            return None
        finally:
            self.slot.finish(token)
        if token.cancelled:  # cancelled after the last token: do not deliver
            progress.end(token.reason)
            self._answer_cancelled(request, f"{spec.title}: {token.reason}")
            return None
        progress.end("done")
        logger.info(
            "%s: %d prompt + %d generated tokens (%s prompt, stop: %s), %s",
            spec.title,
            result.prompt_tokens,
            result.generated_tokens,
            result.style,
            result.stop_reason,
            {k: round(v) for k, v in result.timings_ms.items()},
        )
        return result

    def _request(self, kind: act.ActionKind, doc: Document, region: act.CodeRegion) -> act.ActionRequest:
        return act.ActionRequest(
            kind=kind,
            code=region.code,
            language=language_for(doc.uri, doc.language_id),
            path=self.ls.relative_path(doc.uri),
            temperature=self.ls.settings.temperature,
        )

    def _document(self, spec: act.ActionSpec, uri: str) -> Document | None:
        try:
            return self.ls.documents.snapshot(uri)
        except DocumentNotOpen:
            self.tell(spec, f"the document is not open: {uri}")
            return None

    # ---------------------------------------------------------------- explain
    async def explain(self, uri: str, rng: types.Range) -> dict[str, Any] | None:
        spec = act.ACTIONS[act.ActionKind.EXPLAIN]
        doc = self._document(spec, uri)
        if doc is None:
            return None
        s, e = self._offsets(doc, rng)
        target = self._target_or_tell(spec, uri, s, e)
        if target is None:
            return None
        region = act.CodeRegion.from_document(doc.text, *target)
        result = await self._run(spec, self._request(act.ActionKind.EXPLAIN, doc, region))
        if result is None:
            return None
        shown = self._range(doc, region.start, region.end)
        first = shown.start.line + 1
        last = shown.end.line + (0 if shown.end.character == 0 and shown.end.line > shown.start.line else 1)
        path = self.ls.relative_path(uri)
        lines = f"{first}" if last == first else f"{first}–{last}"
        markdown = (
            f"### Quill: `{path}`, line{'s' if '–' in lines else ''} {lines}\n\n{result.text}\n\n"
            f"*Explained by {self._model_name()} on this machine. Small models can be wrong: check before relying on it.*\n"
        )
        file_uri = self._write_explanation(path, first, last, markdown)
        self.ls.window_log_message(
            types.LogMessageParams(
                type=types.MessageType.Info, message=f"Quill explanation of {path}:{lines}\n{result.text}"
            )
        )
        if file_uri is not None and self._client_shows_documents():
            try:
                self.ls.window_show_document(types.ShowDocumentParams(uri=file_uri, external=False, take_focus=True))
            except Exception:
                logger.debug("showDocument failed", exc_info=True)
        return {"markdown": markdown, "uri": file_uri}

    def _write_explanation(self, path: str, first: int, last: int, markdown: str) -> str | None:
        folder = explanations_dir()
        stem = re.sub(r"[^\w.-]+", "_", Path(path).name or "code")[:60]
        name = f"{stem}-L{first}-{last}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.md"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            file = folder / name
            file.write_text(markdown, encoding="utf-8")
        except OSError as exc:
            logger.warning("could not write the explanation under %s: %s", folder, exc)
            return None
        try:
            old = sorted(folder.glob("*.md"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_EXPLANATIONS:]
            for stale in old:
                stale.unlink(missing_ok=True)
        except OSError:
            logger.debug("pruning old explanations failed", exc_info=True)
        # Not resolve(): the thin clients recognise the file by the cache directory as they
        # compute it, which a symlink (e.g. ~/.cache) must not hide.
        return file.absolute().as_uri()

    # ---------------------------------------------------------------- rewrite
    async def rewrite(
        self, kind: act.ActionKind, uri: str, rng: types.Range, expected_sha: str | None = None
    ) -> types.WorkspaceEdit | None:
        spec = act.ACTIONS[kind]
        doc = self._document(spec, uri)
        if doc is None:
            return None
        s, e = self._offsets(doc, rng)
        if expected_sha is not None and _sha(doc.text[s:e]) != expected_sha:
            self.tell(spec, "the code changed since this action was offered; run it again.")
            return None
        target = self._target_or_tell(spec, uri, s, e) if expected_sha is None else (s, e)
        if target is None:
            return None
        region = act.CodeRegion.from_document(doc.text, *target)
        if region.empty:
            self.tell(spec, "select the code to rewrite.")
            return None
        result = await self._run(spec, self._request(kind, doc, region))
        if result is None:
            return None
        # The user may have typed while the model ran.
        current = self._document(spec, uri)
        if current is None:
            return None
        now = act.relocate_region(region, current.text) if current.text != doc.text else region
        if now is None:
            self.tell(spec, "the code changed while Quill was working, so nothing was changed; run it again.")
            return None
        replacement = now.replacement(result.text)
        language = language_for(uri, current.language_id)
        try:
            await asyncio.to_thread(_validate, kind, language, now, replacement, result.text)
        except act.RewriteRejected as exc:
            self.tell(spec, str(exc))
            logger.info("rejected rewrite:\n%s", result.raw)
            return None
        edit = types.TextEdit(range=self._range(current, now.start, now.end), new_text=replacement)
        if self._client_document_changes():
            return types.WorkspaceEdit(
                document_changes=[
                    types.TextDocumentEdit(
                        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=current.version),
                        edits=[edit],
                    )
                ]
            )
        return types.WorkspaceEdit(changes={uri: [edit]})

    async def resolve(self, action: types.CodeAction) -> types.CodeAction:
        data = action.data
        if not isinstance(data, dict) or data.get(DATA_TAG) != 1:
            return action  # not ours, or "Explain" (a command: nothing to resolve)
        try:
            kind = act.ActionKind(data["action"])
            uri = str(data["uri"])
            rng = _range_from(data["range"])
        except (KeyError, ValueError, JsonRpcInvalidParams):
            logger.warning("codeAction/resolve with unexpected data: %r", data)
            return action
        if not act.ACTIONS[kind].rewrite:
            return action
        edit = await self.rewrite(kind, uri, rng, expected_sha=data.get("sha"))
        if edit is not None:
            action.edit = edit
        return action


def _validate(
    kind: act.ActionKind, language: str | None, region: act.CodeRegion, replacement: str, new_code: str
) -> None:
    """Raise RewriteRejected unless the rewrite parses (when the original did) and does
    what the action promised.  Runs off the event loop, with a parser of its own."""
    parser = None
    checks: list[act.SyntaxCheck] = []
    if language:
        try:
            from tree_sitter_language_pack import get_parser

            parser = get_parser(language)  # type: ignore[arg-type]
            checks.append(act.tree_sitter_check(parser))
        except Exception as exc:  # no grammar: nothing to check against
            logger.debug("no tree-sitter grammar for %s: %s", language, exc)
    if language == "python":
        checks.append(act.python_check)  # stricter than tree-sitter about indentation
    act.validate_rewrite(act.combined_check(checks) if checks else None, region, replacement, new_code, language)
    act.check_intent(kind, language, region.code, new_code, parser)


def _command_args(args: tuple[Any, ...], count: int) -> tuple[Any, ...]:
    if len(args) < count:
        raise JsonRpcInvalidParams(f"expected {count} arguments, got {len(args)}")
    return args


def register(server: QuillServer) -> None:
    """Register code action handlers on ``server``."""
    feature = CodeActions(server)

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.Empty, types.CodeActionKind.RefactorRewrite],
            resolve_provider=True,
        ),
    )
    def code_action(ls: QuillServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        return feature.list_actions(params)

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: QuillServer, params: types.CodeAction) -> types.CodeAction:
        return await feature.resolve(params)

    @server.command(EXPLAIN_COMMAND)
    async def explain(ls: QuillServer, *args: Any) -> dict[str, Any] | None:
        uri, rng = _command_args(args, 2)[:2]
        return await feature.explain(str(uri), _range_from(rng))

    @server.command(REWRITE_COMMAND)
    async def rewrite(ls: QuillServer, *args: Any) -> dict[str, Any]:
        """For clients without ``codeAction/resolve``: compute and apply the edit."""
        uri, rng, action = _command_args(args, 3)[:3]
        try:
            kind = act.ActionKind(action)
        except ValueError as exc:
            raise JsonRpcInvalidParams(f"unknown Quill action {action!r}") from exc
        if not act.ACTIONS[kind].rewrite:
            raise JsonRpcInvalidParams(f"{action!r} is not a rewrite")
        edit = await feature.rewrite(kind, str(uri), _range_from(rng))
        if edit is None:
            return {"applied": False}
        result = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=act.ACTIONS[kind].title)
        )
        return {"applied": bool(result and result.applied)}

    server.on_shutdown.append(lambda ls: feature.slot.cancel_all("server shutting down"))
