"""The real LSP server (``python -m lsp_server``) on the openai backend: a completion
served by ``llama_cpp.server`` on 127.0.0.1, and an unreachable endpoint that is reported
once, clearly, while the server stays up."""

from __future__ import annotations

import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .conftest import API_KEY_ENV, closed_port

pytestmark = pytest.mark.slow

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server"])
CODE = "import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n        return "
URI = "file:///workspace/config.py"


async def start(client: LanguageClient, options: dict) -> None:
    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register_capability(params: types.RegistrationParams) -> None:
        return None  # accept dynamic registrations (watched files), as an editor does

    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual_studio_code"),
            root_uri="file:///workspace",
            initialization_options=options,
        )
    )
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text=CODE)
        )
    )


def cursor() -> types.Position:
    lines = CODE.split("\n")
    return types.Position(line=len(lines) - 1, character=len(lines[-1]))


@pytest_lsp.fixture(config=SERVER)
async def remote_client(lsp_client: LanguageClient, llama_server):
    await start(
        lsp_client,
        {
            "backend": "openai",
            "endpoint": llama_server["url"],
            "model": "smollm2-135m-instruct",
            "apiKeyEnv": API_KEY_ENV,
            "maxTokens": 16,
            "cacheCompletions": False,
        },
    )
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=SERVER)
async def unreachable_client(lsp_client: LanguageClient):
    await start(lsp_client, {"backend": "openai", "endpoint": f"http://127.0.0.1:{closed_port()}"})
    yield
    await lsp_client.shutdown_session()


async def test_inline_completion_from_the_shared_server(remote_client: LanguageClient):
    result = await remote_client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI),
            position=cursor(),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
    )
    assert result is not None
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    assert items and items[0].insert_text
    status = await remote_client.protocol.send_request_async("quill/status", {})
    assert status.backend == "openai" and str(status.device).startswith("remote server")


async def test_unreachable_endpoint_is_reported_and_the_server_stays_up(unreachable_client: LanguageClient):
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        position=cursor(),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
    )
    for _ in range(3):  # every request degrades to "no suggestion"; none kills the server
        result = await unreachable_client.text_document_inline_completion_async(params)
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        assert not items
    shown = [m.message for m in unreachable_client.messages if m.type == types.MessageType.Error]
    reachable = [m for m in shown if "cannot reach the completion server" in m]
    assert len(reachable) == 1, shown  # told once, clearly; not flooded
    status = await unreachable_client.protocol.send_request_async("quill/status", {})
    assert "cannot reach" in (status.error or "")
