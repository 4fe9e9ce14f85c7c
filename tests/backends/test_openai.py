"""The openai backend end-to-end against a real OpenAI-compatible server started here on
127.0.0.1: llama-cpp-python's ``llama_cpp.server`` serving SmolLM2, with an API key."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from lsp_server.backends import BackendError, GenerationRequest
from lsp_server.backends.openai import EndpointError
from lsp_server.config import Settings
from lsp_server.engine.engine import CompletionEngine, CompletionRequest, ModelUnavailable
from lsp_server.engine.model import load_model

from .conftest import API_KEY_ENV, closed_port, post_json

pytestmark = pytest.mark.slow

CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return "


def settings(url: str, **kw: object) -> Settings:
    base = {
        "backend": "openai",
        "endpoint": url,
        "model": "smollm2-135m-instruct",
        "api_key_env": API_KEY_ENV,
        "max_tokens": 16,
        "request_timeout_s": 60.0,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def remote(llama_server):
    model = load_model(settings(llama_server["url"]))
    yield model
    model.backend.close()


def test_streams_a_completion_counted_with_the_models_tokenizer(remote, llama_server):
    b = remote.backend
    assert b.info.device.startswith("remote server") and "SmolLM2" in b.info.name
    assert b._vocab is not None  # the manifest's model is installed: counted locally
    prompt = b.bos_tokens() + b.tokenize(CODE)
    result = b.generate(GenerationRequest(prompt=prompt, max_tokens=12, stop=remote.stop), threading.Event())
    assert result.text and result.stop_reason in ("length", "eos", "stop")
    # The server sees exactly the tokens we counted for the budget.
    status, body = post_json(
        llama_server["port"], "/v1/completions", {"prompt": b.prompt_text(prompt), "max_tokens": 1, "temperature": 0}
    )
    assert status == 200 and body["usage"]["prompt_tokens"] == len(prompt)


def test_forced_prefix_is_sent_and_returned(remote):
    b = remote.backend
    prompt = b.bos_tokens() + b.tokenize("import o")
    result = b.generate(GenerationRequest(prompt=prompt, max_tokens=4, forced_prefix="s"), threading.Event())
    assert result.text.startswith("s")


def test_cancel_closes_the_stream_and_the_server_keeps_serving(remote, llama_server):
    b = remote.backend
    prompt = b.bos_tokens() + b.tokenize("# a long list of numbers\n1, 2, 3,")
    cancel = threading.Event()
    got_text = threading.Event()

    def first_text(text: str) -> bool:
        got_text.set()
        return False

    timer = threading.Thread(target=lambda: (got_text.wait(30), cancel.set()))
    timer.start()
    t0 = time.perf_counter()
    result = b.generate(GenerationRequest(prompt=prompt, max_tokens=400, should_stop=first_text), cancel)
    elapsed = time.perf_counter() - t0
    timer.join()
    assert result.stop_reason == "cancelled"
    assert len(result.tokens) < 400 and elapsed < 20
    # The server noticed the closed connection and is free for the next request at once.
    deadline = time.monotonic() + 10
    while "disconnected" not in llama_server["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "disconnected" in llama_server["log"].read_text()
    after = b.generate(GenerationRequest(prompt=b.bos_tokens() + b.tokenize(CODE), max_tokens=4), threading.Event())
    assert after.stop_reason != "cancelled" and after.text


def test_cancel_while_waiting_for_the_first_token(remote):
    b = remote.backend
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    result = b.generate(GenerationRequest(prompt=b.bos_tokens() + b.tokenize(CODE * 20), max_tokens=200), cancel)
    assert result.stop_reason == "cancelled"


def test_the_servers_tokenizer_when_no_local_copy(llama_server, remote):
    model = load_model(settings(llama_server["url"], model="served-name-only"))
    try:
        b = model.backend
        assert b._vocab is None and b._remote is not None and b._remote.kind == "llama-cpp-python"
        assert b.tokenize(CODE) == remote.backend.tokenize(CODE)
        result = b.generate(GenerationRequest(prompt=b.tokenize(CODE), max_tokens=4), threading.Event())
        assert result.text
    finally:
        model.backend.close()


def test_api_key_comes_from_the_named_environment_variable(llama_server, monkeypatch):
    monkeypatch.delenv("QUILL_NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendError, match="API key"):
        load_model(settings(llama_server["url"], api_key_env="QUILL_NO_SUCH_KEY"))


def test_unreachable_endpoint_is_a_clear_message():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(EndpointError, match=f"cannot reach the completion server at {url}"):
        load_model(settings(url))
    engine = CompletionEngine(settings(url))
    try:
        with pytest.raises(ModelUnavailable, match="cannot reach"):
            asyncio.run(engine.ensure_model())
    finally:
        engine.shutdown()


def test_missing_endpoint_is_a_clear_message():
    with pytest.raises(BackendError, match="quill.endpoint is not set"):
        load_model(Settings(backend="openai"))


def test_a_server_that_never_answers_times_out():
    """Accepts the connection and says nothing: the read timeout ends the wait."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    port = sock.getsockname()[1]
    try:
        t0 = time.perf_counter()
        with pytest.raises(EndpointError, match="timed out"):
            load_model(settings(f"http://127.0.0.1:{port}", request_timeout_s=0.5))
        assert time.perf_counter() - t0 < 5
    finally:
        sock.close()


def test_the_engine_completes_through_the_server(llama_server):
    engine = CompletionEngine(settings(llama_server["url"]))
    try:
        result = asyncio.run(engine.complete(CompletionRequest(uri="file:///t.py", text=CODE, offset=len(CODE))))
    finally:
        engine.shutdown()
    assert result is not None and result.prompt_tokens > 0
    assert result.stop_reason != "cancelled"
