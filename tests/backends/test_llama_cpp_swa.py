"""KV prefix reuse for a sliding-window model (Gemma 3 270M: 5 of 6 layers attend to the
last 512 tokens only).  Reuse must be both taken and correct: the reused cache gives the
same tokens as a fresh evaluation, also when the common prefix is longer than the window
and after a longer prompt.  Needs the Gemma weights (``quill-lsp models pull gemma3-270m``)."""

from __future__ import annotations

import threading

import numpy as np
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
    return b.generate(GenerationRequest(prompt=prompt, max_tokens=1), threading.Event())


def logits_after(b: LlamaCppBackend, prompt: list[int]) -> np.ndarray:
    b._eval_prompt(prompt)
    return b._logits().copy()


def fresh_logits(b: LlamaCppBackend, head: list[int], tail: list[int]) -> np.ndarray:
    """Logits of ``head + tail`` evaluated from scratch in the same two batches as the
    reuse path (CPU kernels differ by batch size, so another split differs slightly)."""
    b.llama.reset()
    b.llama._ctx.kv_cache_seq_rm(-1, 0, -1)
    b.llama.n_tokens = 0
    b.llama.eval(head)
    b.llama.eval(tail)
    return b._logits().copy()


def test_gemma_is_a_sliding_window_model(gemma_path):
    b = LlamaCppBackend(gemma_path, n_ctx=1024, threads=2)
    try:
        assert b.n_swa == 512 and b.info.architecture == "gemma3"
    finally:
        b.close()


def test_reuse_across_the_window_is_taken_and_exact(gemma_path, tokens):
    b = LlamaCppBackend(gemma_path, n_ctx=1024, threads=2)  # the default: full-size SWA cache
    try:
        run(b, tokens[:700])
        # Back to a shorter prompt whose common prefix (600) is longer than the window (512),
        # after a longer one: the positions before it must still be in the cache.
        prompt = tokens[:600] + tokens[650:655]
        assert run(b, prompt).reused_tokens == 600
        run(b, tokens[:700])
        reused = logits_after(b, prompt)
        expected = fresh_logits(b, tokens[:600], tokens[650:655])
        assert np.array_equal(reused, expected)
        # A keystroke: one more token at the end.
        assert run(b, prompt + tokens[655:656]).reused_tokens == 605
    finally:
        b.close()


def test_a_window_sized_cache_is_not_reused_when_it_lost_the_window(gemma_path, tokens):
    """With swa_full=False llama.cpp drops cells that left the window, yet still agrees to
    truncate the cache: reusing it then gives wrong logits.  The backend checks what the
    cache holds and re-evaluates instead."""
    # The window-sized cache holds n_swa + n_ubatch = 1024 cells: after 1100 tokens the
    # first ~80 positions are gone.
    b = LlamaCppBackend(gemma_path, n_ctx=2048, threads=2, swa_full=False)
    try:
        run(b, tokens[:1100])
        assert not b._cache_covers(500)
        assert run(b, tokens[:500]).reused_tokens == 0
        assert run(b, tokens[:501]).reused_tokens == 500  # the tail still is reusable
        # What reuse would have given without the check: not the right logits.
        run(b, tokens[:1100])
        assert b.llama._ctx.kv_cache_seq_rm(-1, 500, -1)  # llama.cpp says yes...
        b.llama.n_tokens = 500
        b.llama.eval(tokens[650:655])
        wrong = b._logits().copy()
        assert not np.allclose(wrong, fresh_logits(b, tokens[:500], tokens[650:655]), atol=1e-3)  # ...but it is wrong
    finally:
        b.close()
