"""Local model and backend faults, each against the real server over stdio with the real
default model: the model file truncated or replaced while the server runs, a context far
too large for the machine's memory, and an exception inside generation.  For each: a
clear window/showMessage, the server stays up, and it recovers once the cause is fixed
(a settings change, the file restored) without a restart."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from lsp_server.backends.llama_cpp import LOAD_MEMORY_SHARE, available_memory, kv_bytes_per_token, read_gguf_metadata
from lsp_server.registry import resolve_model
from tests.stress.harness import FIB, FIB_CURSOR, Server, figure, size, wait_until

pytestmark = [pytest.mark.model, pytest.mark.slow]

FAULTY = [sys.executable, str(Path(__file__).with_name("faulty_server.py"))]
# latencyTargetMs 0: the whole prompt every time, so a suggestion does not depend on how
# busy the machine was when its speed was measured.
OPTIONS = {"cacheCompletions": False, "maxTokens": 16, "workspaceContext": False, "warmup": False, "latencyTargetMs": 0}


@pytest.fixture(scope="module")
def model_file() -> str:
    return resolve_model("smollm2-135m-instruct").path


def start(tmp_path: Path, options: dict, command: list[str] | None = None) -> Server:
    s = Server(env={"QUILL_CACHE_DIR": str(tmp_path / "cache")}, command=command)
    s.request(0, "initialize", {"processId": None, "capabilities": {}, "rootUri": None, "initializationOptions": {**OPTIONS, **options}})
    s.response(0)
    s.notify("initialized", {})
    return s


def state(s: Server, after: int, timeout: float = 120) -> dict:
    """The first quill/modelState ready/error among the messages from index ``after`` on."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for m in s.messages[after:]:
            if m.get("method") == "quill/modelState" and m["params"]["state"] in ("ready", "error"):
                return m["params"]
        s.pump(0.1)
    raise TimeoutError("no model state")


def configure(s: Server, options: dict) -> int:
    mark = len(s.messages)
    s.notify("workspace/didChangeConfiguration", {"settings": {"quill": {**OPTIONS, **options}}})
    return mark


def shown(s: Server, after: int = 0) -> list[str]:
    return [m["params"]["message"] for m in s.messages[after:] if m.get("method") == "window/showMessage"]


def complete(s: Server, uri: str, text: str, version: int) -> list:
    s.change(uri, version, text)
    lines = text.split("\n")
    return s.timed_completion(uri, len(lines) - 1, len(lines[-1]), timeout=60)[1]


def test_model_file_truncated_or_replaced_while_serving(tmp_path, model_file):
    """llama.cpp maps the file by default: truncating a mapped file kills the process with
    SIGBUS at the next token.  Quill reads a model that fits in memory into memory instead
    (plan_memory), so the running server does not notice; a reload of the broken file is a
    clear error, and the restored file loads again on the next settings change."""
    path = tmp_path / "model.gguf"
    shutil.copy(model_file, path)
    s = start(tmp_path, {"model": str(path)})
    try:
        assert state(s, 0)["state"] == "ready"
        uri = "file:///local/trunc.py"
        s.open(uri, FIB)
        first = s.timed_completion(uri, *FIB_CURSOR)[1]
        assert first, s.call("quill/status", {})["result"]["session"]
        os.truncate(path, 1 << 20)  # keeps the GGUF magic and header, loses the tensors
        got_truncated = complete(s, uri, FIB.replace("return fib", "return fibo"), 2)
        assert s.alive(), f"server died (exit {s.proc.returncode}) after the model file was truncated"
        assert got_truncated
        # Replaced by a new file (rename over it, as `models pull` and package managers do).
        shutil.copy(model_file, tmp_path / "new.gguf")
        os.truncate(tmp_path / "new.gguf", 1 << 20)
        os.replace(tmp_path / "new.gguf", path)
        assert complete(s, uri, FIB, 3) and s.alive()
        # A reload (contextTokens changed) reads the broken file: one clear message.
        mark = configure(s, {"model": str(path), "contextTokens": 1024})
        failed = state(s, mark)
        assert failed["state"] == "error", failed
        assert complete(s, uri, FIB.replace("return fib", "return fibo"), 4) == []
        assert s.alive()
        assert any(str(path) in m for m in shown(s, mark)), shown(s, mark)
        # The file restored and the setting changed back: serving again, same process.
        shutil.copy(model_file, path)
        mark = configure(s, {"model": str(path), "contextTokens": 2048})
        assert state(s, mark)["state"] == "ready"
        assert complete(s, uri, FIB, 5)
        figure("model file truncated", survived=s.alive(), reload_error=failed["detail"][:80], recovered=True)
    finally:
        s.close()


def test_context_too_large_is_refused_before_allocating(tmp_path, model_file):
    """contextTokens=1048576 with a model path (no manifest caps it) asks for ~22.5 GiB of
    KV cache: refused from the file's metadata before llama.cpp allocates anything."""
    n_ctx = 1_048_576
    per_token = kv_bytes_per_token(read_gguf_metadata(model_file))
    available = available_memory()
    if per_token is None or available is None or per_token * n_ctx <= available * LOAD_MEMORY_SHARE:
        pytest.skip("this machine has the memory for a 1M-token context of the default model")
    s = start(tmp_path, {"model": model_file, "contextTokens": n_ctx})
    try:
        t0 = time.monotonic()
        failed = state(s, 0, timeout=60)
        refused_s = time.monotonic() - t0
        assert failed["state"] == "error" and "contextTokens" in failed["detail"], failed
        assert wait_until(lambda: bool(s.pump(0.05)) or bool(shown(s)), 5)
        assert any("contextTokens" in m for m in shown(s)), shown(s)
        peak = s.peak_rss_mb()
        assert peak < 1024, peak  # nothing near the asked size was allocated
        uri = "file:///local/ctx.py"
        s.open(uri, FIB)
        assert s.timed_completion(uri, *FIB_CURSOR)[1] == []
        assert s.alive()
        mark = configure(s, {"model": model_file, "contextTokens": 2048})
        assert state(s, mark)["state"] == "ready"
        assert complete(s, uri, FIB, 2)
        figure("context too large", asked_tokens=n_ctx, kv_gib=per_token * n_ctx / 2**30,
               refused_after_s=refused_s, peak_rss_mb=peak, message=failed["detail"][:90])
    finally:
        s.close()


def test_exception_inside_generation(tmp_path):
    """faulty_server.py raises from inside the decode loop whenever the prompt holds the
    trigger: that request fails with a message, the next clean one is served."""
    rounds = size(3, 20)
    s = start(tmp_path, {}, command=FAULTY)
    try:
        assert state(s, 0)["state"] == "ready"
        uri = "file:///local/fault.py"
        s.open(uri, FIB)
        version, served = 1, 0
        for _ in range(rounds):
            version += 1
            assert complete(s, uri, "# QUILL_INJECT_FAULT\n" + FIB, version) == []
            assert s.alive()
            version += 1
            got = complete(s, uri, FIB, version)
            assert got, "no completion after the injected fault"
            served += 1
        messages = shown(s)
        assert any("completion failed" in m and "injected fault" in m for m in messages), messages
        assert len(messages) <= 2, messages  # told once a minute, not per request
        figure("exception in generation", faults=rounds, served_after=served, messages=len(messages),
               peak_rss_mb=s.peak_rss_mb())
    finally:
        s.close()
