import asyncio

import pytest

from lsp_server.config import Settings
from lsp_server.engine.engine import CompletionEngine, CompletionRequest, ModelUnavailable
from lsp_server.engine.postprocess import Mode

from .fakes import fake_loaded


def make_engine(reply, step_s=0.0, **settings):
    model = fake_loaded(reply, step_s)
    engine = CompletionEngine(Settings(**settings), loader=lambda s: model)
    return engine, model.backend


def req(text, offset=None, uri="file:///w/a.py"):
    return CompletionRequest(uri=uri, text=text, offset=len(text) if offset is None else offset, path="a.py")


async def test_completion_uses_prefix_and_cleans_output():
    engine, backend = make_engine(lambda prompt: "urn x + 1\nprint('noise')")
    result = await engine.complete(req("def f(x):\n    ret"))
    assert result is not None
    assert result.text == "urn x + 1"
    assert result.mode is Mode.LINE
    # Token healing: the last prefix token ("t" for the char tokenizer) was taken back.
    assert backend.calls[0].forced_prefix == "t"
    engine.shutdown()


async def test_inside_word_skips_the_model():
    engine, backend = make_engine(lambda prompt: "zzz")
    result = await engine.complete(req("foo(bar)", offset=5))
    assert result is not None and result.text == "" and result.mode is Mode.NONE
    assert backend.calls == []
    engine.shutdown()


async def test_latest_wins_cancels_the_older_request():
    engine, backend = make_engine(lambda prompt: "x" * 50, step_s=0.02)
    first = asyncio.ensure_future(engine.complete(req("a = ")))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(engine.complete(req("a = 1 + ")))
    r1, r2 = await asyncio.gather(first, second)
    assert r1 is None  # superseded
    assert r2 is not None and r2.text.startswith("x")
    engine.shutdown()


async def test_asyncio_cancel_sets_the_cancel_flag():
    engine, backend = make_engine(lambda prompt: "y" * 200, step_s=0.01)
    task = asyncio.ensure_future(engine.complete(req("b = ")))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker notices between tokens and frees the model quickly for the next request.
    result = await asyncio.wait_for(engine.complete(req("c = ")), timeout=1.5)
    assert result is not None
    engine.shutdown()


async def test_type_through_reuses_the_shown_suggestion():
    engine, backend = make_engine(lambda prompt: "print('hello')")
    first = await engine.complete(req("x = 1\n"))
    assert first.text == "print('hello')"
    second = await engine.complete(req("x = 1\npri"))
    assert second.cached and second.text == "nt('hello')"
    assert len(backend.calls) == 1
    engine.shutdown()


async def test_cache_off_always_runs_the_model():
    engine, backend = make_engine(lambda prompt: "print('hello')", cache_completions=False)
    await engine.complete(req("x = 1\n"))
    await engine.complete(req("x = 1\npri"))
    assert len(backend.calls) == 2
    engine.shutdown()


async def test_model_load_failure_is_a_clear_error_once():
    calls = []

    def loader(settings):
        calls.append(settings)
        raise FileNotFoundError("model file not found: /nope.gguf")

    engine = CompletionEngine(Settings(model="/nope.gguf"), loader=loader)
    with pytest.raises(ModelUnavailable, match="/nope.gguf"):
        await engine.complete(req("x = "))
    with pytest.raises(ModelUnavailable):
        await engine.complete(req("y = "))
    assert len(calls) == 1  # not retried on every keystroke
    engine.shutdown()


async def test_huge_single_line_document_is_bounded():
    engine, backend = make_engine(lambda prompt: "1")
    text = "var a=" + "x" * 5_000_000 + ";"
    result = await asyncio.wait_for(engine.complete(req(text + "\nvar b = ")), timeout=10)
    assert result is not None
    assert len(backend.calls[0].prompt) <= engine.settings.context_tokens
    engine.shutdown()


async def test_backend_failure_is_a_clear_error_and_the_next_request_works():
    from lsp_server.engine.engine import CompletionFailed

    calls = []

    def reply(prompt):
        calls.append(prompt)
        if len(calls) == 1:
            raise ConnectionError("completion server went away")
        return "1"

    engine, backend = make_engine(reply)
    with pytest.raises(CompletionFailed, match="went away"):
        await engine.complete(req("x = "))
    result = await engine.complete(req("y = "))
    assert result is not None and result.text == "1"
    engine.shutdown()
