"""Code actions end to end: the real server subprocess, the real default model (SmolLM2).

What an editor sees: the actions listed for a selection, an edit from
``codeAction/resolve`` that replaces exactly the selected range and parses, an
explanation delivered as a Markdown file (``window/showDocument``) and as a log message,
cancellation, and a clear message for a selection too large for the model's window.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Union

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

GUARD_S = 120  # only against a hung server; no test asserts on time

# Non-ASCII before and after the actions' range: positions are UTF-16 on the wire.
SAMPLE = '''"""Inventory helpers — prices in €."""

import math


class Inventory:
    """Items with prices. 🙂"""

    def __init__(self, prices):
        self.prices = prices

    def total(self, items):
        t = 0
        for i in range(len(items)):
            t = t + items[i]
        return t


def circle_area(radius):
    return math.pi * radius ** 2


LABEL = "naïve — ünïcode"
'''

TITLES = {
    "Explain with Quill",
    "Refactor with Quill",
    "Add docstring with Quill",
    "Add type hints with Quill",
    "Simplify with Quill",
}


class Session:
    """A client plus what the tests need to know about its server."""

    def __init__(self, client: LanguageClient, cache: Path, workspace: Path, init: types.InitializeResult) -> None:
        self.client = client
        self.cache = cache
        self.workspace = workspace
        self.init = init
        self.applied_edits: list[types.ApplyWorkspaceEditParams] = []

    def open(self, name: str, text: str) -> str:
        path = self.workspace / name
        path.write_text(text, encoding="utf-8")
        uri = path.as_uri()
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
            )
        )
        return uri


def _fix_code_action_union(client: LanguageClient) -> None:
    """lsprotocol (2025.0.0) reads every ``Command | CodeAction`` that has a ``command`` key
    as a Command, so a CodeAction that carries a command ("Explain with Quill") arrives
    mangled in a pygls client.  Editors tell them apart as the spec says: ``command`` is a
    string only in a Command.  Give the test client that rule."""
    converter = client.protocol._converter

    def structure(obj: Any, _: Any) -> types.Command | types.CodeAction:
        if isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], structure)  # noqa: UP007


async def _start(tmp: Path, caps: str) -> Session:
    cache = tmp / "cache"
    workspace = tmp / "ws"
    workspace.mkdir(parents=True)
    env = {**os.environ, "QUILL_CACHE_DIR": str(cache)}
    client = await ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server"], server_env=env).start()
    assert isinstance(client, LanguageClient)
    _fix_code_action_union(client)
    session: Session

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        session.applied_edits.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    init = await client.initialize_session(
        types.InitializeParams(capabilities=client_capabilities(caps), root_uri=workspace.as_uri())
    )
    session = Session(client, cache, workspace, init)
    return session


async def _stop(session: Session) -> None:
    await session.client.shutdown_session()
    await session.client.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vscode(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    session = await _start(tmp_path_factory.mktemp("vscode"), "visual_studio_code")
    yield session
    await _stop(session)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def neovim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    session = await _start(tmp_path_factory.mktemp("neovim"), "neovim")
    yield session
    await _stop(session)


# ------------------------------------------------------------------ helpers


def span(text: str, needle: str) -> types.Range:
    """The LSP range (UTF-16) of the first ``needle`` in ``text``, whole lines."""
    start = text.index(needle)
    end = start + len(needle)
    return types.Range(start=position(text, start), end=position(text, end))


def position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    prefix = text[offset - col : offset]
    return types.Position(line=line, character=len(prefix.encode("utf-16-le")) // 2)


def offset(text: str, pos: types.Position) -> int:
    lines = text.split("\n")
    base = sum(len(ln) + 1 for ln in lines[: pos.line])
    units = 0
    for i, ch in enumerate(lines[pos.line]):
        if units >= pos.character:
            return base + i
        units += 2 if ord(ch) > 0xFFFF else 1
    return base + len(lines[pos.line])


def apply_edits(text: str, edits: list[types.TextEdit]) -> str:
    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(text, edit.range.start)] + edit.new_text + text[offset(text, edit.range.end) :]
    return text


async def list_actions(
    session: Session,
    uri: str,
    rng: types.Range,
    trigger: types.CodeActionTriggerKind = types.CodeActionTriggerKind.Invoked,
    only: list[str] | None = None,
) -> list[types.CodeAction]:
    result = await session.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=rng,
            context=types.CodeActionContext(diagnostics=[], only=only, trigger_kind=trigger),
        )
    )
    return [a for a in result or [] if isinstance(a, types.CodeAction)]


def by_title(actions: list[types.CodeAction], title: str) -> types.CodeAction:
    return next(a for a in actions if a.title == title)


async def until(predicate: Callable[[], Any]) -> Any:
    async def poll() -> Any:
        while not (value := predicate()):
            await asyncio.sleep(0.02)
        return value

    return await asyncio.wait_for(poll(), GUARD_S)


def progress_of(session: Session, title: str, known: set[Any]) -> Any:
    """A progress token for ``title`` that started after ``known`` was taken."""
    for token, values in session.client.progress_reports.items():
        if token not in known and values and isinstance(values[0], types.WorkDoneProgressBegin):
            if values[0].title == title:
                return token
    return None


async def request(session: Session, method: str, params: Any) -> tuple[str, asyncio.Future[Any]]:
    """Send a request with a known id (to cancel it); the future is its answer."""
    msg_id = f"test-{uuid.uuid4()}"
    future = asyncio.ensure_future(session.client.protocol.send_request_async(method, params, msg_id=msg_id))
    await asyncio.sleep(0)  # let it go out
    return msg_id, future


def explain_params(uri: str, rng: types.Range) -> types.ExecuteCommandParams:
    return types.ExecuteCommandParams(
        command="quill.explain",
        arguments=[
            uri,
            {
                "start": {"line": rng.start.line, "character": rng.start.character},
                "end": {"line": rng.end.line, "character": rng.end.character},
            },
        ],
    )


def single_edit(edit: types.WorkspaceEdit, uri: str) -> types.TextEdit:
    if edit.document_changes:
        assert len(edit.document_changes) == 1
        change = edit.document_changes[0]
        assert isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri
        assert len(change.edits) == 1
        (text_edit,) = change.edits
    else:
        assert edit.changes is not None and list(edit.changes) == [uri]
        (text_edit,) = edit.changes[uri]
    assert isinstance(text_edit, types.TextEdit)
    return text_edit


# -------------------------------------------------------------------- listing


async def test_capabilities(vscode: Session) -> None:
    caps = vscode.init.capabilities
    assert isinstance(caps.code_action_provider, types.CodeActionOptions)
    assert caps.code_action_provider.resolve_provider is True
    assert types.CodeActionKind.RefactorRewrite in (caps.code_action_provider.code_action_kinds or [])
    assert caps.execute_command_provider is not None
    assert {"quill.explain", "quill.rewrite"} <= set(caps.execute_command_provider.commands)


async def test_actions_listed_for_a_selection(vscode: Session) -> None:
    uri = vscode.open("listing.py", SAMPLE)
    rng = span(SAMPLE, "        t = 0\n        for i in range(len(items)):\n")
    actions = await list_actions(vscode, uri, rng)
    assert {a.title for a in actions} == TITLES
    explain = by_title(actions, "Explain with Quill")
    assert explain.kind == "" and explain.edit is None
    assert explain.command is not None and explain.command.command == "quill.explain"
    assert explain.command.arguments is not None and explain.command.arguments[0] == uri
    for action in actions:
        if action is explain:
            continue
        # Lazy: no edit until the user picks it (codeAction/resolve).
        assert action.kind == types.CodeActionKind.RefactorRewrite
        assert action.edit is None and action.data is not None
        assert action.data["range"] == {
            "start": {"line": rng.start.line, "character": rng.start.character},
            "end": {"line": rng.end.line, "character": rng.end.character},
        }

    only = await list_actions(vscode, uri, rng, only=["refactor"])
    assert {a.title for a in only} == TITLES - {"Explain with Quill"}


async def test_empty_selection_targets_the_enclosing_function(vscode: Session) -> None:
    uri = vscode.open("enclosing.py", SAMPLE)
    cursor = position(SAMPLE, SAMPLE.index("t = t + items"))
    actions = await list_actions(vscode, uri, types.Range(start=cursor, end=cursor))
    assert {a.title for a in actions} == TITLES
    data = by_title(actions, "Simplify with Quill").data
    method = span(
        SAMPLE,
        "def total(self, items):\n        t = 0\n        for i in range(len(items)):\n"
        "            t = t + items[i]\n        return t",
    )
    assert data["range"]["start"] == {"line": method.start.line, "character": method.start.character}
    assert data["range"]["end"] == {"line": method.end.line, "character": method.end.character}
    # The editor's automatic lightbulb request with no selection gets nothing.
    auto = await list_actions(vscode, uri, types.Range(start=cursor, end=cursor), types.CodeActionTriggerKind.Automatic)
    assert auto == []
    # Outside any function or class: nothing to act on.
    top = position(SAMPLE, SAMPLE.index("import math"))
    assert await list_actions(vscode, uri, types.Range(start=top, end=top)) == []


# ------------------------------------------------------------------- resolve


async def test_resolve_returns_an_edit_of_exactly_the_range_that_parses(vscode: Session) -> None:
    uri = vscode.open("resolve.py", SAMPLE)
    method = (
        "    def total(self, items):\n        t = 0\n        for i in range(len(items)):\n"
        "            t = t + items[i]\n        return t\n"
    )
    rng = span(SAMPLE, method)
    known = set(vscode.client.progress_reports)
    action = by_title(await list_actions(vscode, uri, rng), "Simplify with Quill")
    resolved = await asyncio.wait_for(vscode.client.code_action_resolve_async(action), GUARD_S)
    assert resolved.edit is not None, [m.message for m in vscode.client.messages]
    text_edit = single_edit(resolved.edit, uri)
    assert text_edit.range == rng  # exactly the selection
    after = apply_edits(SAMPLE, [text_edit])
    start, end = offset(SAMPLE, rng.start), offset(SAMPLE, rng.end)
    # Byte for byte, nothing outside the range moved.
    assert after.encode()[: len(SAMPLE[:start].encode())] == SAMPLE[:start].encode()
    assert after.encode().endswith(SAMPLE[end:].encode())
    assert after != SAMPLE
    ast.parse(after)  # the edited file parses
    new_method = text_edit.new_text
    assert new_method.startswith("    def total(") and new_method.endswith("\n")  # indentation kept
    assert "```" not in new_method and "<|im_" not in new_method
    print(f"\n--- Simplify with Quill ---\n{new_method}")
    # Progress: begin, at least one report, end.
    token = progress_of(vscode, "Simplify with Quill", known)
    values = vscode.client.progress_reports[token]
    assert isinstance(values[-1], types.WorkDoneProgressEnd) and values[-1].message == "done"
    assert any(isinstance(v, types.WorkDoneProgressReport) for v in values)


async def test_add_docstring_adds_only_a_docstring(vscode: Session) -> None:
    uri = vscode.open("docstring.py", SAMPLE)
    rng = span(SAMPLE, "def circle_area(radius):\n    return math.pi * radius ** 2")
    before = len(vscode.client.messages)
    action = by_title(await list_actions(vscode, uri, rng), "Add docstring with Quill")
    resolved = await asyncio.wait_for(vscode.client.code_action_resolve_async(action), GUARD_S)
    if resolved.edit is None:  # refused: then the user was told why
        await until(lambda: len(vscode.client.messages) > before)
        assert vscode.client.messages[-1].message.startswith("Add docstring with Quill: the model")
        return
    text_edit = single_edit(resolved.edit, uri)
    assert text_edit.range == rng
    new_function = ast.parse(text_edit.new_text).body[0]
    assert isinstance(new_function, ast.FunctionDef) and ast.get_docstring(new_function)
    new_function.body = new_function.body[1:]
    old_function = ast.parse(SAMPLE[offset(SAMPLE, rng.start) : offset(SAMPLE, rng.end)]).body[0]
    assert ast.dump(new_function) == ast.dump(old_function)  # the code itself is untouched
    print(f"\n--- Add docstring with Quill ---\n{text_edit.new_text}")


async def test_rewrite_for_neovim_uses_plain_changes(neovim: Session) -> None:
    uri = neovim.open("nvim.py", SAMPLE)
    cursor = position(SAMPLE, SAMPLE.index("t = t + items"))
    action = by_title(await list_actions(neovim, uri, types.Range(start=cursor, end=cursor)), "Simplify with Quill")
    resolved = await asyncio.wait_for(neovim.client.code_action_resolve_async(action), GUARD_S)
    assert resolved.edit is not None, [m.message for m in neovim.client.messages]
    assert resolved.edit.document_changes is None  # Neovim did not announce documentChanges
    text_edit = single_edit(resolved.edit, uri)
    assert text_edit.range.start == position(SAMPLE, SAMPLE.index("def total"))
    after = apply_edits(SAMPLE, [text_edit])
    ast.parse(after)
    assert after.startswith(SAMPLE[: SAMPLE.index("def total")])
    assert after.endswith(SAMPLE[SAMPLE.index("\n\n\ndef circle_area") :])


async def test_oversized_selection_gets_a_clear_message(vscode: Session) -> None:
    big = "".join(f"def function_number_{i}(value):\n    return value * {i} + {i * 7}\n\n\n" for i in range(160))
    uri = vscode.open("big.py", big)
    rng = types.Range(start=types.Position(line=0, character=0), end=position(big, len(big)))
    before = len(vscode.client.messages)
    action = by_title(await list_actions(vscode, uri, rng), "Refactor with Quill")
    resolved = await asyncio.wait_for(vscode.client.code_action_resolve_async(action), GUARD_S)
    assert resolved.edit is None
    await until(lambda: len(vscode.client.messages) > before)
    message = vscode.client.messages[-1].message
    assert message.startswith("Refactor with Quill: the selection is too large")
    assert "context window of 2048 tokens" in message

    result = await asyncio.wait_for(vscode.client.workspace_execute_command_async(explain_params(uri, rng)), GUARD_S)
    assert result is None
    await until(lambda: len(vscode.client.messages) > before + 1)
    assert vscode.client.messages[-1].message.startswith("Explain with Quill: the selection is too large")


async def test_changed_code_is_not_rewritten(vscode: Session) -> None:
    uri = vscode.open("stale.py", SAMPLE)
    rng = span(SAMPLE, "def circle_area(radius):\n    return math.pi * radius ** 2")
    action = by_title(await list_actions(vscode, uri, rng), "Add docstring with Quill")
    edited = SAMPLE.replace("radius ** 2", "radius * radius")
    vscode.client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=edited)],
        )
    )
    before = len(vscode.client.messages)
    resolved = await asyncio.wait_for(vscode.client.code_action_resolve_async(action), GUARD_S)
    assert resolved.edit is None
    await until(lambda: len(vscode.client.messages) > before)
    assert "changed since this action was offered" in vscode.client.messages[-1].message


# ------------------------------------------------------------------- explain


async def test_explain_delivers_markdown(vscode: Session) -> None:
    uri = vscode.open("explain.py", SAMPLE)
    rng = span(SAMPLE, "def circle_area(radius):\n    return math.pi * radius ** 2\n")
    shown = len(vscode.client.shown_documents)
    known = set(vscode.client.progress_reports)
    result = await asyncio.wait_for(vscode.client.workspace_execute_command_async(explain_params(uri, rng)), GUARD_S)
    assert isinstance(result, dict) and result["markdown"].strip()
    file_uri = result["uri"]
    assert file_uri.startswith("file://") and file_uri.endswith(".md")
    path = Path(file_uri.removeprefix("file://"))
    assert path.is_file() and path.parent == vscode.cache / "explanations"
    assert path.read_text(encoding="utf-8") == result["markdown"]
    assert "<|im_" not in result["markdown"]
    print(f"\n--- Explain with Quill ---\n{result['markdown']}")
    # window/showDocument for the file, and the text in window/logMessage.
    await until(lambda: len(vscode.client.shown_documents) > shown)
    assert vscode.client.shown_documents[-1].uri == file_uri
    assert vscode.client.shown_documents[-1].take_focus is True
    assert any(m.message.startswith("Quill explanation of explain.py:") for m in vscode.client.log_messages)
    token = progress_of(vscode, "Explain with Quill", known)
    assert token is not None
    assert vscode.client.progress_reports[token][-1].message == "done"


# -------------------------------------------------------------------- cancel


async def _wait_generating(session: Session, title: str, known: set[Any]) -> Any:
    """The progress token of a running action, once it has generated a token."""

    def generating() -> Any:
        token = progress_of(session, title, known)
        if token is not None and any(
            isinstance(v, types.WorkDoneProgressReport) for v in session.client.progress_reports[token]
        ):
            return token
        return None

    return await until(generating)


async def _expect_cancelled(future: asyncio.Future[Any]) -> None:
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wait_for(future, GUARD_S)
    assert info.value.code == -32800  # RequestCancelled


async def test_cancel_request_stops_explain(vscode: Session) -> None:
    uri = vscode.open("cancel.py", SAMPLE)
    rng = span(SAMPLE, "class Inventory:")
    known = set(vscode.client.progress_reports)
    shown = len(vscode.client.shown_documents)
    msg_id, future = await request(vscode, types.WORKSPACE_EXECUTE_COMMAND, explain_params(uri, rng))
    token = await _wait_generating(vscode, "Explain with Quill", known)
    vscode.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    await _expect_cancelled(future)
    end = await until(
        lambda: next(
            (v for v in vscode.client.progress_reports[token] if isinstance(v, types.WorkDoneProgressEnd)), None
        )
    )
    assert end.message == "request cancelled"
    assert len(vscode.client.shown_documents) == shown  # nothing delivered


async def test_cancel_request_stops_resolve(vscode: Session) -> None:
    uri = vscode.open("cancel3.py", SAMPLE)
    rng = span(SAMPLE, "class Inventory:")
    known = set(vscode.client.progress_reports)
    action = by_title(await list_actions(vscode, uri, rng), "Refactor with Quill")
    msg_id, future = await request(vscode, types.CODE_ACTION_RESOLVE, action)
    token = await _wait_generating(vscode, "Refactor with Quill", known)
    vscode.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    await _expect_cancelled(future)
    end = await until(
        lambda: next(
            (v for v in vscode.client.progress_reports[token] if isinstance(v, types.WorkDoneProgressEnd)), None
        )
    )
    assert end.message == "request cancelled"


async def test_progress_cancel_stops_resolve(vscode: Session) -> None:
    uri = vscode.open("cancel2.py", SAMPLE)
    rng = span(
        SAMPLE,
        'class Inventory:\n    """Items with prices. 🙂"""\n\n    def __init__(self, prices):\n'
        "        self.prices = prices\n",
    )
    known = set(vscode.client.progress_reports)
    action = by_title(await list_actions(vscode, uri, rng), "Add docstring with Quill")
    _msg_id, future = await request(vscode, types.CODE_ACTION_RESOLVE, action)
    token = await _wait_generating(vscode, "Add docstring with Quill", known)
    vscode.client.protocol.notify(
        types.WINDOW_WORK_DONE_PROGRESS_CANCEL, types.WorkDoneProgressCancelParams(token=token)
    )
    await _expect_cancelled(future)
    end = vscode.client.progress_reports[token][-1]
    assert isinstance(end, types.WorkDoneProgressEnd) and end.message == "cancelled from the progress indicator"


async def test_a_newer_action_cancels_the_running_one(vscode: Session) -> None:
    uri = vscode.open("latest.py", SAMPLE)
    known = set(vscode.client.progress_reports)
    _id, first = await request(
        vscode, types.WORKSPACE_EXECUTE_COMMAND, explain_params(uri, span(SAMPLE, "class Inventory:"))
    )
    token = await _wait_generating(vscode, "Explain with Quill", known)
    # The user picks a rewrite while the explanation is still being written.
    method = (
        "    def total(self, items):\n        t = 0\n        for i in range(len(items)):\n"
        "            t = t + items[i]\n        return t\n"
    )
    action = by_title(await list_actions(vscode, uri, span(SAMPLE, method)), "Simplify with Quill")
    second = asyncio.ensure_future(vscode.client.code_action_resolve_async(action))
    await _expect_cancelled(first)
    ends = [v for v in vscode.client.progress_reports[token] if isinstance(v, types.WorkDoneProgressEnd)]
    assert ends and ends[0].message == "superseded by a newer Quill action"
    resolved = await asyncio.wait_for(second, GUARD_S)
    assert resolved.edit is not None, [m.message for m in vscode.client.messages]


# ------------------------------------------------------- clients without resolve


async def test_client_without_resolve_gets_a_command_that_applies_the_edit(tmp_path: Path) -> None:
    session = await _start(tmp_path, "emacs")  # Emacs lsp-mode: no codeAction/resolve, no showDocument
    try:
        uri = session.open("emacs.py", SAMPLE)
        method = (
            "    def total(self, items):\n        t = 0\n        for i in range(len(items)):\n"
            "            t = t + items[i]\n        return t\n"
        )
        rng = span(SAMPLE, method)
        action = by_title(await list_actions(session, uri, rng), "Simplify with Quill")
        assert action.data is None and action.command is not None and action.command.command == "quill.rewrite"
        result = await asyncio.wait_for(
            session.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=action.command.command, arguments=action.command.arguments)
            ),
            GUARD_S,
        )
        assert result == {"applied": True}
        (applied,) = session.applied_edits
        text_edit = single_edit(applied.edit, uri)
        assert text_edit.range == rng
        ast.parse(apply_edits(SAMPLE, [text_edit]))
    finally:
        await _stop(session)
