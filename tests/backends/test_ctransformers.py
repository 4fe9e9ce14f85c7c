"""The ctransformers backend: a real completion from a small GGUF Llama model with a
SentencePiece vocabulary that the test builds (random weights: mechanics, not text)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lsp_server.backends import BackendError, GenerationRequest
from lsp_server.backends.ctransformers import check_ctransformers_can_load
from lsp_server.config import Settings
from lsp_server.engine.engine import CompletionEngine, CompletionRequest, ModelUnavailable
from lsp_server.engine.model import load_model
from lsp_server.registry import get_manifest

from .conftest import smollm2_path

pytest.importorskip("ctransformers", reason="the ctransformers extra is not installed")


@pytest.fixture(scope="module")
def model(tiny_spm_gguf):
    loaded = load_model(Settings(backend="ctransformers", model=str(tiny_spm_gguf), context_tokens=512, threads=1))
    yield loaded
    loaded.backend.close()


def test_loads_with_fim_tokens_and_template_from_the_file(model):
    info = model.backend.info
    assert info.architecture == "llama" and info.n_ctx == 512
    assert (info.fim.prefix, info.fim.suffix, info.fim.middle) == ("<PRE>", "<SUF>", "<MID>")
    assert model.template.name == "codellama"  # matched from the vocabulary, no manifest


def test_control_tokens_are_single_tokens_and_text_cannot_inject_them(model):
    b = model.backend
    pre = b.tokenize("<PRE>", special=True)
    assert len(pre) == 1
    assert pre[0] not in b.tokenize("<PRE>")  # user text is never a control token
    text = "def add(a, b):"
    # SentencePiece adds its dummy-prefix space to a text it tokenizes on its own.
    assert b.detokenize(b.tokenize(text)) in (text, " " + text)


def test_real_completion_reuses_the_prefix_and_matches_a_fresh_model(model, tiny_spm_gguf):
    b = model.backend
    prompt = b.bos_tokens() + b.tokenize("<PRE>", special=True) + b.tokenize(" def add(a, b):")
    first = b.generate(GenerationRequest(prompt=prompt, max_tokens=6), threading.Event())
    assert len(first.tokens) > 0 and first.reused_tokens == 0
    # The next keystroke: same start, one more token: only the tail is evaluated.
    longer = prompt + b.tokenize(" x")
    second = b.generate(GenerationRequest(prompt=longer, max_tokens=6), threading.Event())
    assert second.reused_tokens >= len(prompt) - 1
    fresh = load_model(Settings(backend="ctransformers", model=str(tiny_spm_gguf), context_tokens=512, threads=1))
    try:
        again = fresh.backend.generate(GenerationRequest(prompt=longer, max_tokens=6), threading.Event())
    finally:
        fresh.backend.close()
    assert again.reused_tokens == 0
    assert again.tokens == second.tokens  # reuse changed nothing but the time


def test_forced_prefix_and_cancel(model):
    b = model.backend
    prompt = b.bos_tokens() + b.tokenize(" def add(a, b):\n")
    healed = b.generate(GenerationRequest(prompt=prompt, max_tokens=6, forced_prefix=" retu"), threading.Event())
    assert healed.text.startswith(" retu")
    cancel = threading.Event()
    seen: list[str] = []

    def stop_after_two(text: str) -> bool:
        seen.append(text)
        if len(seen) == 2:
            cancel.set()
        return False

    result = b.generate(GenerationRequest(prompt=prompt, max_tokens=50, should_stop=stop_after_two), cancel)
    assert result.stop_reason == "cancelled" and len(result.tokens) == 2


def test_completion_through_the_engine(tiny_spm_gguf):
    settings = Settings(backend="ctransformers", model=str(tiny_spm_gguf), context_tokens=512, threads=1, max_tokens=8)
    engine = CompletionEngine(settings)
    text = "def add(a, b):\n    return a + b\n\nx = add(1, "
    try:
        result = asyncio.run(engine.complete(CompletionRequest(uri="file:///t.py", text=text, offset=len(text))))
    finally:
        engine.shutdown()
    assert result is not None and result.prompt_tokens > 0 and result.generated_tokens > 0


def test_refuses_models_it_cannot_run_with_the_reason():
    with pytest.raises(BackendError, match="BPE vocabulary"):
        check_ctransformers_can_load("unused", get_manifest("smollm2-135m-instruct"))
    with pytest.raises(BackendError, match="gemma3"):
        check_ctransformers_can_load("unused", get_manifest("gemma3-270m"))
    check_ctransformers_can_load("unused", get_manifest("codellama-7b"))  # accepted
    path = smollm2_path()
    if path is not None:  # a .gguf without manifest: decided from its own metadata
        with pytest.raises(BackendError, match="BPE"):
            check_ctransformers_can_load(str(path))


def test_engine_reports_a_refused_model_and_keeps_going():
    engine = CompletionEngine(Settings(backend="ctransformers", model="smollm2-135m-instruct"))
    try:
        with pytest.raises(ModelUnavailable, match="ctransformers backend cannot run smollm2"):
            asyncio.run(engine.ensure_model())
    finally:
        engine.shutdown()
