"""The engine's session logic (quick prompts, idle-time work, speculation) on a fake model
with the real KV-reuse rules; the real model is exercised in tests/lsp/test_session.py."""

import asyncio
from types import SimpleNamespace

import pytest

from lsp_server.config import Settings
from lsp_server.engine import session
from lsp_server.engine.engine import CompletionEngine, CompletionRequest
from lsp_server.engine.session import (
    Perf,
    WarmQueue,
    WarmTarget,
    affordable_prompt_tokens,
    calibrate,
    thread_candidates,
)

from .fakes import slot_fake_loaded

BIG = "".join(f"value_{i} = compute({i}, {i * 3})\n" for i in range(120))  # ~3,700 characters


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path))


def make(reply=lambda p: "result\n", **settings):
    model = slot_fake_loaded(reply, eval_s=settings.pop("eval_s", 0.0))
    engine = CompletionEngine(Settings(**settings), loader=lambda s: model)
    return engine, model.backend


def req(text, uri="file:///w/a.py", offset=None):
    return CompletionRequest(uri=uri, text=text, offset=len(text) if offset is None else offset, path="a.py")


async def test_a_cold_document_is_answered_from_a_quick_prompt_then_from_the_full_one():
    engine, backend = make()
    doc = BIG + "total = "
    first = await engine.complete(req(doc))
    assert first is not None and first.prompt_kind == "quick"
    affordable = engine.affordable_tokens()
    assert first.prompt_tokens <= affordable * 3 // 2 + 2
    assert first.evaluated_tokens <= first.prompt_tokens
    # The full prompt is evaluated in idle time ...
    assert await engine.settle(10)
    assert engine.document_state("file:///w/a.py") == "ready"
    assert any(slot.startswith("full:") and complete for slot, _, complete in backend.prefills)
    # ... and the quick suggestion is not served from the cache any more.
    again = await engine.complete(req(doc))
    assert again is not None and again.prompt_kind == "full"
    assert again.cached and again.speculative  # computed in idle time from the full prompt
    engine.shutdown()


async def test_a_small_document_needs_no_quick_prompt():
    engine, _ = make()
    result = await engine.complete(req("x = 1\ny = "))
    assert result is not None and result.prompt_kind == "full"
    engine.shutdown()


async def test_a_request_preempts_idle_time_work_which_resumes_after_it():
    engine, backend = make(eval_s=0.001)  # 1 ms a token: the full prefill takes seconds
    await engine.ensure_model()
    engine.warm(req(BIG + "total = ", uri="file:///w/big.py"), cursor_known=False)
    await asyncio.sleep(0.2)
    assert engine.document_state("file:///w/big.py") == "warming"
    result = await engine.complete(req("a = 1\nb = ", uri="file:///w/other.py"))
    assert result is not None and result.text == "result"
    assert engine.stats.warm_preempted >= 1
    assert any(not complete for slot, _, complete in backend.prefills if slot == "full:file:///w/big.py")
    assert await engine.settle(30)
    assert engine.document_state("file:///w/big.py") == "ready"
    engine.shutdown()


async def test_the_suggestion_after_an_accepted_one_is_ready_when_asked():
    engine, _ = make(reply=lambda p: "compute(1)\n")
    doc = "a = 1\nb = "
    first = await engine.complete(req(doc))
    assert first is not None and first.text == "compute(1)"
    assert await engine.settle(10)
    accepted = await engine.complete(req(doc + first.text))
    assert accepted is not None and accepted.cached and accepted.speculative
    assert engine.stats.speculative_hits == 1
    engine.shutdown()


async def test_a_reported_cursor_gets_its_suggestion_before_it_is_asked():
    engine, backend = make()
    await engine.ensure_model()
    doc = BIG + "total = "
    engine.warm(req(doc), cursor_known=True)
    assert await engine.settle(10)
    n_calls = len(backend.calls)
    result = await engine.complete(req(doc))
    assert result is not None and result.cached and result.text == "result"
    assert len(backend.calls) == n_calls  # nothing generated on the request
    engine.shutdown()


async def test_with_the_features_off_every_request_uses_the_full_prompt_and_nothing_runs_idle():
    engine, backend = make(latency_target_ms=0, kv_cache_mb=0, warmup=False)
    doc = BIG + "total = "
    result = await engine.complete(req(doc))
    assert result is not None and result.prompt_kind == "full"
    engine.warm(req(doc, uri="file:///w/b.py"))
    assert await engine.settle(5)
    assert backend.prefills == []
    assert engine.stats.warm_jobs == 0
    engine.shutdown()


def test_the_quick_budget_follows_the_measured_speed_and_the_target():
    fast = Perf(1000.0, 5.0, 2, 0.0)
    slow = Perf(100.0, 20.0, 1, 0.0)
    assert affordable_prompt_tokens(fast, 1000, 10) > affordable_prompt_tokens(slow, 1000, 10)
    assert affordable_prompt_tokens(slow, 2000, 10) > affordable_prompt_tokens(slow, 1000, 10)
    assert affordable_prompt_tokens(slow, 0, 10) > 10**6  # no target: no limit
    assert affordable_prompt_tokens(None, 1000, 10) > 10**6  # no figures: no limit
    assert affordable_prompt_tokens(slow, 1, 10) == session.MIN_QUICK_TOKENS


def test_thread_candidates():
    assert thread_candidates(3) == [3]
    assert thread_candidates(0, cores=2) == [1, 2]
    assert thread_candidates(0, cores=16) == [1, 8, 16]
    assert thread_candidates(0, cores=1) == [1]


def test_calibration_takes_more_threads_only_when_clearly_faster():
    class Measured:
        def __init__(self, speeds):
            self.speeds = speeds
            self.threads = None

        def tokenize(self, text, special=False):
            return list(range(64))

        def measure(self, threads, sample, n_gen=6):
            return SimpleNamespace(threads=threads, prompt_tok_s=self.speeds[threads], gen_ms_per_token=10.0)

        def set_threads(self, threads):
            self.threads = threads

    b = Measured({t: 100.0 + t for t in thread_candidates(0)})  # barely faster: not worth the cores
    assert calibrate(b, 0).threads == 1 and b.threads == 1
    b = Measured({t: 100.0 * t for t in thread_candidates(0)})
    perf = calibrate(b, 0)
    assert perf.threads == max(thread_candidates(0)) and b.threads == perf.threads
    b = Measured({t: 100.0 / t for t in thread_candidates(0)})  # more threads collapse (a busy machine)
    assert calibrate(b, 0).threads == 1


def test_figures_are_cached_per_model_and_machine(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)
    key = session.perf_key("llama_cpp", str(model), 0, 0)
    assert session.load_perf(key) is None
    session.save_perf(key, Perf(123.0, 9.0, 2, __import__("time").time()))
    got = session.load_perf(key)
    assert got is not None and got.prompt_tok_s == 123.0 and got.threads == 2 and got.source == "cached"
    assert session.load_perf(session.perf_key("llama_cpp", str(model), -1, 0)) is None  # another set-up


def test_warm_queue_order():
    q = WarmQueue()
    q.put(WarmTarget("a", None, False))
    q.put(WarmTarget("b", None, True))
    q.put(WarmTarget("a", None, True, speculative=True))
    first = q.pop()
    assert first is not None and first.speculative  # the very next keystroke's
    second = q.pop()
    assert second is not None and second.uri == "b"  # newest first
    q.put(WarmTarget("c", None, True))
    q.requeue(second)  # preempted: behind everything queued
    assert q.pop().uri == "c"  # type: ignore[union-attr]
    assert q.pop().uri == "a"  # type: ignore[union-attr]
    assert q.pop().uri == "b"  # type: ignore[union-attr]
    assert q.pop() is None


def test_only_the_newest_documents_opened_without_a_cursor_are_warmed():
    q = WarmQueue()
    for i in range(5):
        q.put(WarmTarget(f"file:///tab{i}.py", None, False))
    q.put(WarmTarget("file:///here.py", None, True))
    popped = [q.pop() for _ in range(len(q))]
    assert [t.uri for t in popped if t is not None] == ["file:///here.py", "file:///tab4.py", "file:///tab3.py"]


async def test_an_empty_file_is_no_error_and_becomes_ready():
    engine, backend = make()
    backend.bos_tokens = lambda: []  # a model without BOS (SmolLM2): an empty prefix is an empty prompt
    result = await engine.complete(req(""))
    assert result is not None and result.text == ""
    await engine.ensure_model()
    engine.warm(req("", uri="file:///w/empty.py"), cursor_known=False)
    assert await engine.settle(5)
    assert engine.document_state("file:///w/empty.py") == "ready"
    engine.shutdown()
