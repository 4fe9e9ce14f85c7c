"""Bad input gets a clear answer, and the server stays up (real server subprocess)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .rawclient import RawClient

pytestmark = [pytest.mark.model]

FIB = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib"


def did_open(client: RawClient, uri: str, text: str) -> None:
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
    )


def inline_request(client: RawClient, msg_id: int, uri: str, line: int, character: int) -> None:
    client.request(
        msg_id,
        "textDocument/inlineCompletion",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, "context": {"triggerKind": 2}},
    )


def items(response: dict) -> list:
    result = response.get("result") or {}
    return result.get("items", []) if isinstance(result, dict) else result


@pytest.fixture
def raw(tmp_path):
    client = RawClient()
    client.initialize(str(tmp_path), {"cacheCompletions": False, "workspaceContext": False, "requestTimeoutS": 600})
    yield client
    client.close()


def test_every_request_is_answered_while_the_model_loads(tmp_path):
    # llama-cpp-python points fd 1 at /dev/null while it loads a model; the protocol
    # must not lose the responses written meanwhile.
    client = RawClient()
    try:
        client.initialize(str(tmp_path))
        for i in range(1, 41):
            client.request(i, "quill/status", {})
            client.pump(0.05)
        states = [client.response(i, timeout=60)["result"]["state"] for i in range(1, 41)]
        assert "loading" in states or "ready" in states
        client.wait_for(lambda m: m.get("method") == "quill/modelState" and m["params"]["state"] == "ready")
    finally:
        client.close()


def test_invalid_utf8_body_still_gets_an_answer(raw: RawClient):
    uri = "file:///tmp/quill-bad-utf8.py"
    body = (
        b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": "'
        + uri.encode()
        + b'", "languageId": "python", "version": 1, "text": "x = \'\xff\xfe\'\\ny = "}}}'
    )
    raw.send_bytes(body)
    inline_request(raw, 1, uri, 1, 4)
    response = raw.response(1)
    assert "error" not in response, response
    # Later requests still work.
    did_open(raw, "file:///tmp/quill-ok.py", FIB)
    inline_request(raw, 2, "file:///tmp/quill-ok.py", 3, 14)
    assert items(raw.response(2))


def test_invalid_utf8_in_a_request_body(raw: RawClient):
    raw.send_bytes(b'{"jsonrpc": "2.0", "id": 5, "method": "quill/status", "params": {"x": "\xc3\x28"}}')
    assert raw.response(5)["result"]["version"]


def test_missing_model_file_says_which_path(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    client = RawClient()
    try:
        client.initialize(str(tmp_path), {"model": str(missing)})
        msg = client.wait_for(lambda m: m.get("method") == "window/showMessage")
        assert str(missing) in msg["params"]["message"]
        did_open(client, "file:///tmp/a.py", FIB)
        inline_request(client, 1, "file:///tmp/a.py", 3, 14)
        assert items(client.response(1)) == []  # an empty answer, not a crash
        client.request(2, "quill/status", {})
        status = client.response(2)["result"]
        assert status["state"] == "error" and str(missing) in status["error"]
    finally:
        client.close()


def test_corrupt_model_file_names_the_expected_sha256(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 1000)
    expected = "0" * 64
    models = tmp_path / "manifests"
    models.mkdir()
    (models / "broken.toml").write_text(
        'id = "broken-model"\nname = "Broken"\nfamily = "smollm2"\ntemplate = "plain"\n'
        f'[source]\ntype = "file"\nfile = "{bogus}"\nsha256 = "{expected}"\n'
    )
    client = RawClient(env={"QUILL_MODELS_DIR": str(models), "QUILL_CACHE_DIR": str(tmp_path / "cache")})
    try:
        client.initialize(str(tmp_path), {"model": "broken-model"})
        msg = client.wait_for(lambda m: m.get("method") == "window/showMessage")["params"]["message"]
        assert str(bogus) in msg and expected in msg
        assert hashlib.sha256(bogus.read_bytes()).hexdigest() in msg
        client.request(1, "quill/status", {})
        assert client.response(1)["result"]["state"] == "error"
    finally:
        client.close()


def test_truncated_gguf_is_refused_clearly(tmp_path):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 64)
    client = RawClient()
    try:
        client.initialize(str(tmp_path), {"model": str(bad)})
        msg = client.wait_for(lambda m: m.get("method") == "window/showMessage")["params"]["message"]
        assert str(bad) in msg
        client.request(1, "quill/status", {})
        assert client.response(1)["result"]["state"] == "error"
    finally:
        client.close()


def test_request_for_a_closed_document(raw: RawClient):
    did_open(raw, "file:///tmp/c.py", FIB)
    raw.notify("textDocument/didClose", {"textDocument": {"uri": "file:///tmp/c.py"}})
    inline_request(raw, 1, "file:///tmp/c.py", 0, 0)
    err = raw.response(1)["error"]
    assert "not open" in err["message"]


def test_garbage_message_does_not_kill_the_server(raw: RawClient):
    raw.send_bytes(b"this is not json")
    raw.send_bytes(b'{"jsonrpc": "2.0", "id": 3, "method": "textDocument/inlineCompletion", "params": {"bogus": 1}}')
    err = raw.response(3).get("error")
    assert err is not None
    raw.request(4, "quill/status", {})
    assert raw.response(4)["result"]["version"]


def test_model_file_path_in_manifest_dir_is_used(tmp_path):
    # Sanity for the fixtures above: a plain .gguf path loads and serves.
    from lsp_server.registry import get_manifest, installed_path

    path = installed_path(get_manifest("smollm2-135m-instruct"))
    assert path is not None and Path(path).is_file()
    client = RawClient()
    try:
        client.initialize(str(tmp_path), {"model": str(path), "cacheCompletions": False})
        did_open(client, "file:///tmp/p.py", FIB)
        inline_request(client, 1, "file:///tmp/p.py", 3, 14)
        assert items(client.response(1))
    finally:
        client.close()
