"""Inline completions end to end: a real LSP client (pytest-lsp) drives the real server
subprocess, which runs the real default model (SmolLM2-135M through llama.cpp).

Each test runs with the capability snapshots of two real clients: Neovim and VS Code.
"""

from __future__ import annotations

import ast
import asyncio
import sys
import uuid
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from benchmarks.harness import plain
from lsp_server.config import Settings
from lsp_server.engine.gate import close_text

# One server per client snapshot for the whole module (a fresh process per test would
# spend most of the suite loading the model).
pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

GUARD_S = 120  # only against a hung server; no test asserts on time

FIB = '''import math


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fib'''


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server", "--log-level", "warning"]),
    params=["neovim", "visual_studio_code"],
    scope="module",
)
async def client(request, lsp_client: LanguageClient, tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        return None  # real editors accept the server's file-watch registration

    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
        # A generous timeout: the suite may share a loaded 2-core machine.
        initialization_options={"cacheCompletions": False, "workspaceContext": False, "requestTimeoutS": 600},
    )
    lsp_client.init_result = await lsp_client.initialize_session(params)  # type: ignore[attr-defined]
    lsp_client.root = root  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, text: str, name: str = "", language: str = "python") -> str:
    root: Path = client.root  # type: ignore[attr-defined]
    path = root / (name or f"doc_{uuid.uuid4().hex[:8]}.py")
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
        )
    )
    return uri


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> str:
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            )
        ),
        GUARD_S,
    )
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    if not items:
        return ""
    item = items[0]
    assert item.range is not None
    assert (item.range.start.line, item.range.start.character) == (line, character)
    assert item.range.start == item.range.end
    return item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value


def end_of(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines) - 1, len(lines[-1])


async def test_capabilities_advertise_inline_and_fallback_completion(client: LanguageClient):
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider is not None and caps.inline_completion_provider is not False
    assert caps.completion_provider is not None
    assert caps.text_document_sync is not None


async def test_real_model_completes_the_recursive_call(client: LanguageClient):
    uri = open_doc(client, FIB)
    text = await inline(client, uri, *end_of(FIB))
    assert text, "the model produced no completion"
    line = "    return fib" + text
    assert "\n" not in text  # one line at the end of a line
    # The identifier is completed, not broken: the completed line parses in context.
    ast.parse(FIB.replace("    return fib", line))
    assert line.strip().startswith("return fibonacci")


async def test_indentation_cursor_gets_no_stray_space(client: LanguageClient):
    source = "def square(n):\n    "
    uri = open_doc(client, source)
    text = await inline(client, uri, 1, 4)
    assert text, "the model produced no completion"
    assert not text[0].isspace(), f"completion starts with whitespace: {text!r}"
    ast.parse(source + text)


async def test_block_after_a_def_line(client: LanguageClient):
    source = 'def is_even(n: int) -> bool:\n    """True when n is even."""\n'
    uri = open_doc(client, source + "    ")
    text = await inline(client, uri, 2, 4)
    assert text
    ast.parse(source + "    " + text + "\n")


async def test_fallback_completion_item_replaces_the_word(client: LanguageClient):
    uri = open_doc(client, FIB)
    line, char = end_of(FIB)
    result = await asyncio.wait_for(
        client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=char),
            )
        ),
        GUARD_S,
    )
    items = result.items if isinstance(result, types.CompletionList) else result
    assert items, "no completion item"
    edit = items[0].text_edit
    assert isinstance(edit, types.TextEdit)
    # The edit starts at the word "fib" so clients that filter by word keep the item.
    assert edit.range.start == types.Position(line=line, character=char - 3)
    assert edit.new_text.startswith("fib") and len(edit.new_text) > 3
    assert items[0].filter_text == edit.new_text


async def test_typing_a_character_reuses_the_prompt_cache(client: LanguageClient):
    uri = open_doc(client, FIB)
    line, char = end_of(FIB)
    first = await inline(client, uri, line, char)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(line=line, character=char), end=types.Position(line=line, character=char)),
                    text="o",
                )
            ],
        )
    )
    second = await inline(client, uri, line, char + 1)
    assert first.startswith("o") and second
    # Same model, same context: typing the suggestion's first char leaves the rest.
    assert second == first[1:]


async def test_settings_change_takes_effect(client: LanguageClient):
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"quill": {"maxTokens": 1}})
    )
    uri = open_doc(client, FIB)
    text = await inline(client, uri, *end_of(FIB))
    assert len(text) <= 12  # one token at most
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"quill": {"maxTokens": 64}})
    )


async def test_unopened_document_is_a_clear_error_and_server_stays_up(client: LanguageClient):
    with pytest.raises(JsonRpcException) as info:
        await inline(client, "file:///never/opened.py", 0, 0)
    assert "not open" in str(info.value)
    uri = open_doc(client, FIB)
    assert await inline(client, uri, *end_of(FIB))


async def test_position_past_the_end_is_clamped(client: LanguageClient):
    uri = open_doc(client, FIB)
    line, _ = end_of(FIB)
    text_far_right = await inline(client, uri, line, 500)
    text_far_down = await inline(client, uri, 900, 3)
    assert text_far_right and text_far_down


async def test_invalid_settings_are_reported_and_defaults_kept(client: LanguageClient):
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"quill": {"maxTokens": "many", "colour": "red"}})
    )
    for _ in range(100):
        if len(client.messages) >= 2:
            break
        await asyncio.sleep(0.05)
    texts = [m.message for m in client.messages]
    assert any("quill.maxTokens" in t and "invalid" in t for t in texts)
    assert any("quill.colour" in t for t in texts)
    uri = open_doc(client, FIB)
    assert await inline(client, uri, *end_of(FIB))


async def test_cancelled_request_leaves_the_server_working(client: LanguageClient):
    uri = open_doc(client, "def long_function(a, b, c):\n    ")
    msg_id = f"cancel-me-{uuid.uuid4()}"
    pending = client.protocol.send_request_async(  # type: ignore[attr-defined]
        types.TEXT_DOCUMENT_INLINE_COMPLETION,
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=1, character=4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        ),
        msg_id=msg_id,
    )
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))  # type: ignore[attr-defined]
    try:
        result = await asyncio.wait_for(pending, GUARD_S)
    except JsonRpcException as exc:
        assert "cancel" in str(exc).lower()  # RequestCancelled
    else:
        assert result is None or isinstance(result, types.InlineCompletionList)  # finished first
    uri2 = open_doc(client, FIB)
    assert await inline(client, uri2, *end_of(FIB))


async def test_huge_minified_line_is_answered(client: LanguageClient):
    text = "var a=[" + ",".join(str(i) for i in range(900_000)) + "];\nvar total = "
    assert len(text) > 5_000_000
    uri = open_doc(client, text, name="bundle.min.js", language="javascript")
    result = await inline(client, uri, 1, len("var total = "))
    assert isinstance(result, str)  # any answer (even empty) within the guard, no crash
    uri2 = open_doc(client, FIB)
    assert await inline(client, uri2, *end_of(FIB))


async def test_lone_surrogate_text_does_not_break_the_server(client: LanguageClient):
    text = 'label = "\udcff broken"\nvalue = '
    uri = open_doc(client, text.replace("\udcff", "?"))
    # The document is replaced by one holding a lone surrogate (valid JSON, invalid UTF-8).
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )
    result = await inline(client, uri, 1, len("value = "))
    assert isinstance(result, str)
    uri2 = open_doc(client, FIB)
    assert await inline(client, uri2, *end_of(FIB))


async def test_several_suggestions_when_asked_and_each_passes_the_gate(client: LanguageClient):
    """Invoked (VS Code: Alt+] / Alt+[): candidates from the real model, each valid where
    it is inserted; quill/status says what the gate and the confidence were."""
    source = "def square(n):\n    "
    uri = open_doc(client, source)
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=1, character=4),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            )
        ),
        GUARD_S,
    )
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    assert items, "the model produced no completion"
    texts = [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]
    assert len(set(texts)) == len(texts)
    for text in texts:
        # the validity gate let through only valid starts (a block opened at the end is
        # still to be written: close_text gives it a body)
        ast.parse(close_text(source + text, "python"))
    status = plain(await client.protocol.send_request_async("quill/status", {}))
    last = status["session"]["lastCompletion"]
    assert last["gate"] in ("pass", "trimmed", "dropped")
    assert last["confidence"] is not None and 0.0 < last["confidence"] <= 1.0
    assert last["candidates"] >= 1


async def test_confidence_bar_hides_what_is_under_it_and_says_why(client: LanguageClient):
    """The same request with the bar just under and just over the confidence the server
    reported: shown, then hidden with the reason in quill/status."""

    async def ask(bar: float) -> tuple[str, dict]:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"quill": {"minConfidence": bar}})
        )
        uri = open_doc(client, FIB)
        text = await inline(client, uri, *end_of(FIB))
        status = plain(await client.protocol.send_request_async("quill/status", {}))
        return text, status["session"]["lastCompletion"]

    try:
        text, last = await ask(0.0)
        assert text, "the model produced no completion"
        conf = last["confidence"]
        assert conf is not None and 0.0 < conf <= 1.0 and last["hidden"] == ""
        assert last["forcedTokens"] <= len(last["tokenLogprobs"])
        under, last_under = await ask(max(0.0, conf - 0.01))
        assert under == text and last_under["hidden"] == ""
        if conf < 0.99:
            over, last_over = await ask(min(1.0, conf + 0.01))
            assert over == "" and last_over["hidden"] == "confidence"
            assert last_over["raw"], "the hidden generation is reported"
    finally:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"quill": {"minConfidence": Settings().min_confidence}})
        )
