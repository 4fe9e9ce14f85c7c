"""The engine's session logic (quick prompts, idle-time work, speculation) on a fake model
with the real KV-reuse rules; the real model is exercised in tests/lsp/test_session.py."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from lsp_server.config import Settings
from lsp_server.engine import session
from lsp_server.engine.engine import CompletionEngine, CompletionRequest
from lsp_server.engine.postprocess import CursorText
from lsp_server.engine.session import (
    Perf,
    WarmQueue,
    WarmTarget,
    affordable_prompt_tokens,
    calibrate,
    thread_candidates,
)
from lsp_server.families.completion import ContextChunk

from .fakes import slot_fake_loaded

BIG = "".join(f"value_{i} = compute({i}, {i * 3})\n" for i in range(120))  # ~3,700 characters


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path))


def make(reply=lambda p: "result\n", **settings):
    model = slot_fake_loaded(reply, eval_s=settings.pop("eval_s", 0.0))
    engine = CompletionEngine(Settings(**settings), loader=lambda s: model)
    return engine, model.backend


async def context_engine(reply, context, **settings):
    """An engine on the slot-keeping fake model with workspace context from ``context``,
    its model loaded, and that model."""
    model = slot_fake_loaded(reply)
    engine = CompletionEngine(Settings(workspace_context=True, **settings), loader=lambda s: model, context=context)
    await engine.ensure_model()
    return engine, model


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


class _Measured:
    """Thread counts -> (prompt tokens/s, ms per generated token)."""

    def __init__(self, speeds):
        self.speeds = speeds
        self.threads = self.batch_threads = None

    def tokenize(self, text, special=False):
        return list(range(64))

    def measure(self, threads, sample, n_gen=6):
        prompt, gen = self.speeds[threads] if isinstance(self.speeds[threads], tuple) else (self.speeds[threads], 10.0)
        return SimpleNamespace(threads=threads, prompt_tok_s=prompt, gen_ms_per_token=gen)

    def set_threads(self, threads, batch_threads=0):
        self.threads, self.batch_threads = threads, batch_threads or threads


def test_calibration_takes_more_threads_only_when_clearly_faster():
    b = _Measured({t: 100.0 + t for t in thread_candidates(0)})  # barely faster: not worth the cores
    perf = calibrate(b, 0)
    assert perf.threads == 1 and perf.batch_threads == 1 and b.threads == 1 and b.batch_threads == 1
    b = _Measured({t: (100.0 * t, 10.0 / t) for t in thread_candidates(0)})
    perf = calibrate(b, 0)
    assert perf.threads == perf.batch_threads == max(thread_candidates(0)) and b.threads == perf.threads
    b = _Measured({t: 100.0 / t for t in thread_candidates(0)})  # more threads collapse (a busy machine)
    assert calibrate(b, 0).batch_threads == 1


def test_prompt_and_generation_threads_are_chosen_apart():
    # Prompt evaluation (batches) scales with the cores; one token at a time does not.
    b = _Measured({t: (75.0 * t, 12.0 + t) for t in thread_candidates(0, cores=2)})
    perf = calibrate(b, 2)  # the setting names 2 threads: nothing to choose
    assert perf.threads == perf.batch_threads == 2
    session_cores = thread_candidates(0)
    b = _Measured({t: (75.0 * t, 12.0 + t) for t in session_cores})
    perf = calibrate(b, 0)
    assert perf.threads == 1 and b.threads == 1
    assert perf.batch_threads == max(session_cores) and b.batch_threads == perf.batch_threads
    assert perf.prompt_tok_s == 75.0 * max(session_cores) and perf.gen_ms_per_token == 13.0
    assert perf.as_dict()["batchThreads"] == perf.batch_threads


def test_figures_are_cached_per_model_and_machine(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)
    key = session.perf_key("llama_cpp", str(model), 0, 0)
    assert session.load_perf(key) is None
    session.save_perf(key, Perf(123.0, 9.0, 1, __import__("time").time(), batch_threads=2))
    got = session.load_perf(key)
    assert got is not None and got.prompt_tok_s == 123.0 and got.threads == 1 and got.source == "cached"
    assert got.batch_threads == 2
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


def _upgrades(engine):
    seen = []
    engine.on_upgrade = lambda r: seen.append((r.uri, r.offset))
    return seen


def _by_prompt(p):
    # The full prompt reaches 20 lines up; the quick one holds the lines near the cursor.
    return "from_full\n" if "value_100 " in p else "from_quick\n"


async def test_the_full_prompts_different_suggestion_tells_the_client_to_ask_again():
    engine, _ = make(reply=_by_prompt)
    seen = _upgrades(engine)
    doc = BIG + "total = "
    first = await engine.complete(req(doc))
    assert first is not None and first.prompt_kind == "quick" and first.text == "from_quick"
    assert await engine.settle(10)
    assert seen == [("file:///w/a.py", len(doc))]
    assert engine.stats.upgrades == 1
    # Asked again (what the client does on the notification): the full prompt's answer,
    # computed in idle time, and no second notification for it.
    again = await engine.complete(req(doc))
    assert again is not None and again.text == "from_full" and again.prompt_kind == "full" and again.cached
    assert await engine.settle(10)
    assert len(seen) == 1
    engine.shutdown()


async def test_no_upgrade_when_the_full_prompt_agrees_with_the_quick_one():
    engine, _ = make()
    seen = _upgrades(engine)
    first = await engine.complete(req(BIG + "total = "))
    assert first is not None and first.prompt_kind == "quick"
    assert await engine.settle(10)
    assert engine.document_state("file:///w/a.py") == "ready"
    assert seen == [] and engine.stats.upgrades == 0
    engine.shutdown()


async def test_only_the_cursor_the_user_is_at_is_upgraded():
    engine, _ = make(reply=_by_prompt)
    seen = _upgrades(engine)
    doc = BIG + "total = "
    await engine.complete(req(doc))
    moved = doc + "0\nmore = "  # the user typed on before the full prompt was ready
    typed = await engine.complete(req(moved))
    assert typed is not None and typed.prompt_kind == "quick" and typed.text == "from_quick"
    assert await engine.settle(10)
    assert seen == [("file:///w/a.py", len(moved))]
    engine.shutdown()


async def test_a_full_prompt_answer_is_never_upgraded():
    engine, _ = make(reply=_by_prompt)
    seen = _upgrades(engine)
    result = await engine.complete(req("x = 1\ny = "))  # small: the full prompt at once
    assert result is not None and result.prompt_kind == "full"
    assert await engine.settle(10)
    assert seen == []
    engine.shutdown()


def _sure_at_058(backend):
    import math

    plain_generate = backend.generate

    def sure_of_it(request, cancel):  # every token at probability 0.58
        r = plain_generate(request, cancel)
        r.logprobs = [math.log(0.58)] * len(r.tokens)
        r.token_ends = list(range(1, len(r.tokens) + 1))
        return r

    backend.generate = sure_of_it
    return backend


async def test_a_quick_suggestion_has_its_own_bar_and_the_full_prompts_replaces_it():
    model = slot_fake_loaded(lambda p: "result\n")
    _sure_at_058(model.backend)
    engine = CompletionEngine(Settings(min_confidence=0.55, quick_min_confidence=0.6), loader=lambda s: model)
    seen = _upgrades(engine)
    doc = BIG + "total = "
    quick = await engine.complete(req(doc))
    assert quick is not None and quick.prompt_kind == "quick"
    assert quick.text == "" and quick.hidden == "confidence"  # 0.58 is under the quick bar
    assert await engine.settle(10)
    assert seen == [("file:///w/a.py", len(doc))]  # nothing was shown; the full prompt has one
    full = await engine.complete(req(doc))
    assert full is not None and full.prompt_kind == "full" and full.text == "result"  # over the full bar
    engine.shutdown()



class _Context:
    """Retrieved context: the same two chunks for every request."""

    chunks = [
        ContextChunk(path="lib/util.py", text="def compute_total(values, rate):\n    return sum(values) * rate\n"),
        ContextChunk(path="lib/names.py", text="GRAND_TOTAL_NAME = 'grand total of all values'\n"),
    ]

    def retrieve(self, request, token_budget, count_tokens):
        return list(self.chunks)


def _reads_context(p):
    return "compute_total(values, rate)\n" if "def compute_total" in p else "from_window\n"


async def test_a_quick_prompt_reads_the_retrieved_context_evaluated_before_it():
    """Idle time evaluates the full prompt's retrieved context first; the quick prompt
    then reads it (at about the cost of the cursor region alone)."""
    engine, model = await context_engine(_reads_context, _Context())
    backend = model.backend
    doc = BIG + "total = "
    # Asked at once: nothing is evaluated, the cursor region alone answers.
    first = await engine.complete(req(doc))
    assert first is not None and first.prompt_kind == "quick" and first.text == "from_window"
    assert first.context_chunks == 0
    # Reported, and left a moment: the context is evaluated into the full prompt's slot
    # before the quick answer is computed, which reads it.
    other = req(BIG + "grand = ", uri="file:///w/b.py")
    engine.warm(other, cursor_known=True)
    assert await engine.settle(10)
    slots = [slot for slot, _, _ in backend.prefills if slot == "full:file:///w/b.py"]
    assert len(slots) >= 2  # the context first, then the rest of the full prompt
    prompts = [backend.detokenize(c.prompt) for c in backend.calls]
    assert any("def compute_total" in p and "value_100 " not in p for p in prompts), "no quick prompt read it"
    engine.shutdown()


async def test_a_request_mid_way_reads_the_context_evaluated_so_far():
    engine, model = await context_engine(_reads_context, _Context())
    backend = model.backend
    doc = BIG + "total = "
    full, _ = engine.full_prompt(model, req(doc))
    head = engine.context_head(model, req(doc), full)
    assert 0 < len(head) < len(full.tokens)
    # As if idle time had evaluated the context head before the request came.
    backend.slots["full:file:///w/a.py"] = list(head)
    result = await engine.complete(req(doc))
    assert result is not None and result.prompt_kind == "context" and result.text == "compute_total(values, rate)"
    assert result.context_chunks == 2
    assert result.evaluated_tokens <= engine.affordable_tokens() * 9 // 8
    # With only part of it evaluated, the chunks that are (in order) and no others.
    backend.slots.clear()
    backend.slots["full:file:///w/a.py"] = list(head[: len(head) // 2])
    part = await engine.complete(req(doc + "0"))
    assert part is not None and part.prompt_kind == "quick" and part.context_chunks == 1
    assert part.evaluated_tokens <= engine.affordable_tokens() * 9 // 8
    engine.shutdown()


async def test_a_keystroke_after_a_quick_answer_stays_in_the_quick_slot():
    """The quick answer's slot holds the cursor region: the next keystroke costs a token or
    two there, and does not evaluate the cursor region again after the context idle time
    has evaluated meanwhile (the context's answer comes in idle time, as an upgrade)."""
    engine, model = await context_engine(_reads_context, _Context(), warmup=False)
    backend = model.backend
    doc = BIG + "total = "
    first = await engine.complete(req(doc))
    assert first is not None and first.prompt_kind == "quick" and first.context_chunks == 0
    full, _ = engine.full_prompt(model, req(doc + "c"))
    backend.slots["full:file:///w/a.py"] = engine.context_head(model, req(doc + "c"), full)
    key = await engine.complete(req(doc + "c"))
    assert key is not None and key.prompt_kind == "quick" and key.context_chunks == 0
    assert key.evaluated_tokens <= 4, key
    # Idle-time work asks the same question and reads the context.
    result = engine.run(model, req(doc + "c"), key.mode, CursorText.from_prefix_suffix(doc + "c", ""), threading.Event(), idle=True)
    assert result.prompt_kind == "context" and result.text == "compute_total(values, rate)"
    engine.shutdown()


async def test_a_quick_prompt_that_reads_all_the_context_has_the_full_prompts_bar():
    model = slot_fake_loaded(_reads_context)
    _sure_at_058(model.backend)
    settings = Settings(workspace_context=True, min_confidence=0.55, quick_min_confidence=0.6)
    engine = CompletionEngine(settings, loader=lambda s: model, context=_Context())
    await engine.ensure_model()
    doc = BIG + "total = "
    full, _ = engine.full_prompt(model, req(doc))
    model.backend.slots["full:file:///w/a.py"] = engine.context_head(model, req(doc), full)
    result = await engine.complete(req(doc))
    assert result is not None and result.prompt_kind == "context" and result.context_chunks == 2
    assert result.text == "compute_total(values, rate)"  # 0.58: over the full bar, under the quick one
    # Without the context evaluated (in no state, a.py's included), the cursor region
    # alone: the quick bar hides it.
    model.backend.slots.clear()
    blind = await engine.complete(req(BIG + "grand = ", uri="file:///w/b.py"))
    assert blind is not None and blind.prompt_kind == "quick" and blind.context_chunks == 0
    assert blind.text == "" and blind.hidden == "confidence"
    engine.shutdown()


class _UsageContext(_Context):
    """A definition from another file and the file's own lines that use it."""

    usage = ContextChunk(path="", text="grand = compute_total(values, GRAND_RATE)\n", kind="usage")
    chunks = [_Context.chunks[0], usage]


def _reads_usage(p):
    return "compute_total(values, GRAND_RATE)\n" if "grand = compute_total" in p else "from_window\n"


async def test_a_quick_prompt_asked_at_once_reads_the_files_usage_lines():
    """Nothing evaluated yet: the quick prompt is the cursor region and, before it, the
    full prompt's usage lines (not its other context), within their own budget."""
    engine, model = await context_engine(_reads_usage, _UsageContext())
    backend = model.backend
    doc = BIG + "total = "
    first = await engine.complete(req(doc))
    assert first is not None and first.prompt_kind == "quick" and first.text == "compute_total(values, GRAND_RATE)"
    assert first.context_chunks == 1
    prompt = backend.detokenize(backend.calls[-1].prompt)
    assert "grand = compute_total" in prompt and "def compute_total" not in prompt
    tokens = engine.affordable_tokens()
    usage = len(backend.tokenize(_UsageContext.usage.text))
    assert first.prompt_tokens <= tokens * 3 // 2 + 2 + usage
    # Usage lines longer than their budget are left out: the cursor region alone.
    long_usage = ContextChunk(path="", text="grand = compute_total(values, GRAND_RATE)\n" * 200, kind="usage")
    engine.context.chunks = [_Context.chunks[0], long_usage]  # type: ignore[union-attr]
    blind = await engine.complete(req(BIG + "grand = ", uri="file:///w/b.py"))
    assert blind is not None and blind.prompt_kind == "quick" and blind.context_chunks == 0
    assert blind.text == "from_window"
    engine.shutdown()


async def test_an_answer_given_at_once_is_replaced_once_the_context_is_evaluated():
    """Asked at once, the cursor region alone answers; idle time evaluates the retrieved
    context and computes the answer again, and the client is told when it differs (before
    the full prompt is evaluated)."""
    model = slot_fake_loaded(_reads_context, eval_s=0.002)  # the full prompt: seconds
    engine = CompletionEngine(Settings(workspace_context=True), loader=lambda s: model, context=_Context())
    seen = _upgrades(engine)
    await engine.ensure_model()
    doc = BIG + "total = "
    first = await engine.complete(req(doc))
    assert first is not None and first.prompt_kind == "quick" and first.text == "from_window"
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen == [("file:///w/a.py", len(doc))]
    assert engine.document_state("file:///w/a.py") == "warming"  # the full prompt is still to come
    again = await engine.complete(req(doc))
    assert again is not None and again.cached and again.prompt_kind == "context"
    assert again.text == "compute_total(values, rate)"
    assert await engine.settle(30)
    engine.shutdown()


class _Likely(_Context):
    """A workspace whose likely context (what most files import) is the two chunks."""

    def likely_chunks(self, token_budget, count_tokens):
        return list(self.chunks), 7


async def test_the_workspaces_likely_context_is_evaluated_when_idle_and_read_at_once():
    """Once the model is loaded (and the index built), idle time evaluates the workspace's
    likely context in a slot of its own; a file opened afterwards starts from that state,
    and its first answer, asked at once, reads the context for the cost of the cursor
    region."""
    engine, model = await context_engine(_reads_context, _Likely())
    backend = model.backend
    assert await engine.settle(10)
    warm = engine.session_status()["workspace"]
    assert warm["state"] == "ready" and warm["chunks"] == 2 and warm["generation"] == 7 and not warm["due"]
    assert ("workspace:", warm["tokens"], True) in backend.prefills
    first = await engine.complete(req(BIG + "total = "))
    assert first is not None and first.prompt_kind == "context" and first.context_chunks == 2
    assert first.text == "compute_total(values, rate)"
    assert first.evaluated_tokens <= engine.affordable_tokens() * 9 // 8
    assert first.reused_tokens >= warm["tokens"] // 2
    engine.shutdown()


async def test_a_file_opened_later_reads_the_context_another_file_evaluated():
    """Without the workspace's state, a file just opened starts from another file's state
    that holds its chunks (here a.py's, evaluated when idle)."""
    model = slot_fake_loaded(_reads_context)
    settings = Settings(workspace_context=True, workspace_warm_tokens=0)
    engine = CompletionEngine(settings, loader=lambda s: model, context=_Likely())
    await engine.ensure_model()
    blind = await engine.complete(req(BIG + "total = "))
    assert blind is not None and blind.prompt_kind == "quick" and blind.context_chunks == 0
    assert engine.session_status()["workspace"]["state"] == "none"
    engine.warm(req(BIG + "total = "))
    assert await engine.settle(10)
    text = "".join(f"item_{i} = other({i}, {i * 5})\n" for i in range(120)) + "grand = "
    other = await engine.complete(req(text, uri="file:///w/b.py"))
    assert other is not None and other.prompt_kind == "context" and other.context_chunks == 2
    assert other.evaluated_tokens <= engine.affordable_tokens() * 9 // 8
    engine.shutdown()


def test_the_chunks_a_kept_state_holds_in_its_order():
    from lsp_server.engine.progressive import seeded_order

    a = ContextChunk(path="a.py", text="def alpha(x):\n    return x + 1\n")
    b = ContextChunk(path="b.py", text="def beta(y):\n    return y * 2\n")
    c = ContextChunk(path="c.py", text="def gamma(z):\n    return z - 3\n")
    tokens = lambda text: [ord(ch) for ch in text]  # noqa: E731
    state = [1] + tokens("# c.py\n" + c.text) + tokens("# a.py\n" + a.text)
    assert seeded_order({"workspace:": state}, [a, b, c], tokens) == [c, a]
    fuller = {"workspace:": state, "full:x": [1] + tokens(a.text + b.text + c.text)}
    assert seeded_order(fuller, [a, b, c], tokens) == [a, b, c]  # the state holding most
    assert seeded_order({}, [a], tokens) == []


class _LikelySecond(_Context):
    """A workspace whose likely context is the second of the two chunks only."""

    def likely_chunks(self, token_budget, count_tokens):
        return list(self.chunks)[1:], 7


async def test_a_kept_state_that_holds_some_of_the_chunks_is_read_in_part():
    """A file just opened reads the chunks a seed holds even when it holds only some of
    them: a quick prompt (the quick bar), the cursor region after those chunks."""
    model = slot_fake_loaded(_reads_context)
    engine = CompletionEngine(Settings(workspace_context=True), loader=lambda s: model, context=_LikelySecond())
    await engine.ensure_model()
    assert await engine.settle(10)
    assert engine.session_status()["workspace"]["chunks"] == 1
    first = await engine.complete(req(BIG + "total = "))
    assert first is not None and first.prompt_kind == "quick" and first.context_chunks == 1
    assert first.reused_tokens > 0 and first.evaluated_tokens <= engine.affordable_tokens() * 9 // 8
    engine.shutdown()


class _ManyLikely(_Context):
    """Likely context of many chunks; records the thread that reads the index."""

    def __init__(self):
        self.threads: list[str] = []
        self.chunks = [
            ContextChunk(path=f"lib/m{i}.py", text=f"def helper_{i}(value):\n    return value * {i} + {i * 7}\n")
            for i in range(40)
        ]

    def likely_chunks(self, token_budget, count_tokens):
        import threading

        self.threads.append(threading.current_thread().name)
        used, out = 0, []
        for c in self.chunks:
            cost = count_tokens(f"# {c.path}\n{c.text}\n\n")
            if used + cost <= token_budget:
                out.append(c)
                used += cost
        return out, 3


async def test_the_likely_context_is_read_off_the_model_thread_and_fits_its_budget():
    """The index is read on another thread than the model's (a request never waits behind
    the scan); the block is chosen to fit ``workspaceWarmTokens`` of the model's tokens."""
    model = slot_fake_loaded(_reads_context)
    context = _ManyLikely()
    settings = Settings(workspace_context=True, workspace_warm_tokens=200)
    engine = CompletionEngine(settings, loader=lambda s: model, context=context)
    await engine.ensure_model()
    assert await engine.settle(10)
    warm = engine.session_status()["workspace"]
    assert context.threads and not any(name.startswith("quill-model") for name in context.threads)
    assert warm["state"] == "ready" and 0 < warm["tokens"] <= 200 and 0 < warm["chunks"] < 40
    engine.shutdown()


async def test_a_file_opened_while_the_model_loads_is_warmed_once_it_is_ready():
    """Work queued before the model is loaded starts when it is, the workspace's likely
    context on or off (``workspaceWarmTokens`` 0 here)."""
    model = slot_fake_loaded(_reads_context)
    settings = Settings(workspace_context=True, workspace_warm_tokens=0)
    engine = CompletionEngine(settings, loader=lambda s: model, context=_Context())
    engine.warm(req(BIG + "total = "))
    await engine.ensure_model()
    # Not engine.settle(): it starts idle work itself.
    for _ in range(100):
        if any(slot.startswith("full:") and evaluated for slot, evaluated, _ in model.backend.prefills):
            break
        await asyncio.sleep(0.1)
    assert any(slot.startswith("full:") and evaluated for slot, evaluated, _ in model.backend.prefills)
    engine.shutdown()
