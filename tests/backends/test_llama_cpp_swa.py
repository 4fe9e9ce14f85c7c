"""KV prefix reuse for a sliding-window model (Gemma 3 270M: 5 of 6 layers attend to the
last 512 tokens only).  Reuse must be both taken and correct: the reused cache gives the
same tokens as a fresh evaluation, also when the common prefix is longer than the window
and after a longer prompt.  Needs the Gemma weights (``quill-lsp models pull gemma3-270m``)."""

from __future__ import annotations

import threading

import pytest

from lsp_server import registry
from lsp_server.backends import GenerationRequest
from lsp_server.backends.llama_cpp import LlamaCppBackend

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def gemma_path() -> str:
    path = registry.installed_path(registry.get_manifest("gemma3-270m"))
    if path is None:
        pytest.skip("Gemma 3 270M is not installed (quill-lsp models pull gemma3-270m)")
    return str(path)


@pytest.fixture(scope="module")
def tokens(gemma_path) -> list[int]:
    import textwrap

    b = LlamaCppBackend(gemma_path, n_ctx=2048, threads=2)
    try:
        src = open(textwrap.__file__, encoding="utf-8").read()
        return b.bos_tokens() + b.tokenize(src)[:1100]
    finally:
        b.close()


def run(b: LlamaCppBackend, prompt: list[int]):
    return b.generate(GenerationRequest(prompt=prompt, max_tokens=6), threading.Event())


def test_gemma_is_a_sliding_window_model(gemma_path):
    b = LlamaCppBackend(gemma_path, n_ctx=1024, threads=2)
    try:
        assert b.n_swa == 512 and b.info.architecture == "gemma3"
    finally:
        b.close()


def test_reuse_across_the_window_is_taken_and_exact(gemma_path, tokens):
    b = LlamaCppBackend(gemma_path, n_ctx=2048, threads=2)  # the default: full-size SWA cache
    fresh = LlamaCppBackend(gemma_path, n_ctx=2048, threads=2)
    try:
        run(b, tokens[:1100])
        # Back to a shorter prompt whose common prefix (800) is longer than the window (512),
        # after a longer one: the positions before it must still be in the cache.
        reused = run(b, tokens[:800] + tokens[900:905])
        assert reused.reused_tokens == 800
        expected = run(fresh, tokens[:800] + tokens[900:905])
        assert expected.reused_tokens == 0
        assert reused.tokens == expected.tokens
        # A keystroke: one more token at the end.
        step = run(b, tokens[:800] + tokens[900:906])
        assert step.reused_tokens == 805
    finally:
        b.close()
        fresh.close()


def test_a_window_sized_cache_is_not_reused_when_it_lost_the_window(gemma_path, tokens):
    """With swa_full=False llama.cpp drops cells that left the window; it still agrees to
    truncate the cache, so reusing it would silently give wrong attention.  The backend
    checks what the cache holds and re-evaluates instead."""
    b = LlamaCppBackend(gemma_path, n_ctx=2048, threads=2, swa_full=False)
    try:
        run(b, tokens[:1100])
        assert not b._cache_covers(500)
        assert run(b, tokens[:500]).reused_tokens == 0
        assert run(b, tokens[:501]).reused_tokens == 500  # the tail still is reusable
    finally:
        b.close()
