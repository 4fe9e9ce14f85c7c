"""The completion engine: trigger decision, latest-wins, prompt, generation, cleanup.

Pure logic on plain dataclasses: no pygls, no file IO.  The model runs on one worker
thread (a thread cannot be killed, so generation checks a cancel flag between tokens); the
asyncio side only waits on it, so ``$/cancelRequest`` and a newer keystroke stop it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from lsp_server.backends import BackendError, GenerationRequest, GenerationResult
from lsp_server.backends.decoding import common_prefix_len
from lsp_server.config import Settings
from lsp_server.engine.candidates import (
    TIME_SHARE,
    Candidate,
    ChoiceOptions,
    choose,
    confidence_of,
    forced_tokens,
    give_up_rule,
    make_candidate,
    own_logprobs,
    rank,
)
from lsp_server.engine.gate import prepare_for as gate_prepare
from lsp_server.engine.model import LoadedModel
from lsp_server.engine.postprocess import CursorText, Mode, decide_mode, finalize, lookahead_capped, stop_condition
from lsp_server.engine.progressive import (
    CHARS_PER_TOKEN_GUESS,
    QUICK_CONTEXT_OVERRUN,
    IdleWork,
    needs_quick,
    quick_budget,
    quick_usage_tokens,
    seeded_order,
)
from lsp_server.engine.prompt import HINT_KIND, USAGE_KIND, Prompt, PromptBudget, PromptBuilder
from lsp_server.engine.requests import (
    CacheEntry,
    CompletionRequest,
    CompletionResult,
    ContextProvider,
    LastResult,
    SessionStats,
)
from lsp_server.engine.session import (
    Perf,
    SpeedWatch,
    affordable_prompt_tokens,
    calibrate,
    load_perf,
    perf_key,
    save_perf,
)
from lsp_server.families.completion import ContextChunk, fit_chunks

logger = logging.getLogger(__name__)

CACHE_SIZE = 256
# A remote endpoint that could not be reached is tried again after this long
# (QUILL_REMOTE_RETRY_S overrides it: the stress tests wait one second, not thirty).
try:
    REMOTE_RETRY_S = max(0.0, float(os.environ.get("QUILL_REMOTE_RETRY_S") or 30.0))
except ValueError:
    REMOTE_RETRY_S = 30.0
# Tokens a typical suggestion takes to generate (a rest of line), for sizing the quick
# prompt.  A constant, so that the quick prompt keeps its first tokens between keystrokes.
EXPECTED_GEN_TOKENS = 10
# Candidates may take at least this long when the user asked for several suggestions.
EXPLICIT_CANDIDATES_S = 0.5
T = TypeVar("T")


class ModelUnavailable(RuntimeError):
    """The configured model could not be loaded; the message says why."""


class CompletionFailed(RuntimeError):
    """Generation failed (a remote server went away, a backend error); the message says why."""


@dataclass
class _Choice:
    """What ``CompletionEngine._choose`` made of a generation."""

    text: str
    alternatives: list[str] = field(default_factory=list)
    confidence: float | None = None
    min_prob: float | None = None
    gate: str = ""
    tried: int = 1
    hidden: str = ""
    ms: float = 0.0
    logprobs: tuple[float, ...] = ()
    forced_tokens: int = 0


def _unsure(gen: GenerationResult, forced_len: int) -> _Choice:
    """A generation that gave up (``give_up_rule``): nothing to show; its confidence is
    that of what it wrote, under the bar by construction."""
    n_forced = forced_tokens(gen, forced_len)
    own = own_logprobs(gen.logprobs, n_forced)  # the rule gave up on one of these: never empty
    return _Choice(
        "",
        confidence=confidence_of(sum(own) / len(own), own),
        min_prob=math.exp(min(own)),
        gate="unsure",
        hidden="confidence",
        logprobs=tuple(gen.logprobs),
        forced_tokens=n_forced,
    )


ModelLoader = Callable[[Settings], LoadedModel]


class CompletionEngine:
    def __init__(
        self,
        settings: Settings,
        loader: ModelLoader | None = None,
        context: ContextProvider | None = None,
    ) -> None:
        if loader is None:
            from lsp_server.engine.model import load_model

            loader = load_model
        self.settings = settings
        self._loader = loader
        self.context = context
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quill-model")
        self._model: LoadedModel | None = None
        self._model_key: tuple[object, ...] | None = None
        self._model_error: str | None = None
        self._load_lock: asyncio.Lock | None = None
        self._error_at = 0.0
        self._inflight: dict[str, threading.Event] = {}
        self._cache: OrderedDict[tuple[object, ...], CacheEntry] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._last: dict[str, LastResult] = {}
        self.on_model_state: Callable[[str, str], None] | None = None  # (state, detail)
        # Session latency (engine/session.py).
        self.perf: Perf | None = None
        self._perf_key: str | None = None
        self._speed = SpeedWatch()
        self.foreground = 0
        self.last_foreground = 0.0  # time.monotonic() when the last request ended
        # Told the request when the full prompt's suggestion should replace the quick one
        # a client shows there (engine/progressive.py); called on the event loop.
        self.on_upgrade: Callable[[CompletionRequest], None] | None = None
        self.idle = IdleWork(self)
        # (uri, prompt kind) -> the line the prefix window started on last time (model thread).
        self._starts: dict[tuple[str, str], int] = {}
        self.closed = False
        self.stats = SessionStats()
        self.last_result: dict[str, object] | None = None

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def model_error(self) -> str | None:
        return self._model_error

    def update_settings(self, settings: Settings) -> bool:
        """Apply new settings; True when the model must be reloaded."""
        reload = settings.model_settings() != self.settings.model_settings()
        self.settings = settings
        with self._cache_lock:
            self._cache.clear()
        self._last.clear()
        if not settings.warmup:
            self.idle.clear()
        return reload

    def _state(self, state: str, detail: str = "") -> None:
        if self.on_model_state is not None:
            try:
                self.on_model_state(state, detail)
            except Exception:
                logger.debug("model state callback failed", exc_info=True)

    def _load_blocking(self, settings: Settings) -> LoadedModel:
        old = self._model
        self._model = None
        if old is not None:
            old.backend.close()
        model = self._loader(settings)
        self._setup_perf(model, settings)
        return model

    def _setup_perf(self, model: LoadedModel, settings: Settings) -> None:
        """Speed figures for sizing prompts: cached for this model and machine, else
        measured now (about a second); the thread count is chosen by the measurement."""
        backend = model.backend
        self.perf, self._perf_key = None, None
        if not hasattr(backend, "measure"):
            return
        key = perf_key(settings.backend, backend.info.path, settings.gpu_layers, settings.threads)
        perf = load_perf(key)
        if perf is not None:
            backend.set_threads(perf.threads, perf.batch_threads)  # type: ignore[attr-defined]
        else:
            try:
                perf = calibrate(backend, settings.threads)  # type: ignore[arg-type]
            except Exception:
                logger.exception("measuring the model's speed failed; prompts are not sized to it")
                return
            save_perf(key, perf)
            self.stats.measurements += 1
        self.perf, self._perf_key = perf, key
        self._speed.measured()

    async def ensure_model(self) -> LoadedModel:
        """The loaded model for the current settings (loading it on the worker thread)."""
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:
            key = self.settings.model_settings()
            if self._model is not None and self._model_key == key:
                return self._model
            if self._model_key == key and self._model_error is not None and not self._retry_due():
                raise ModelUnavailable(self._model_error)
            settings = self.settings
            self._state("loading", settings.model)
            loop = asyncio.get_running_loop()
            self.idle.preempt.set()  # idle-time work must not hold the thread the load needs
            try:
                model = await loop.run_in_executor(self.executor, self._load_blocking, settings)
            except Exception as exc:  # any failure is a clear message, never a crash
                self._model_key = key
                self._model_error = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
                self._error_at = time.monotonic()
                logger.error("model %s failed to load: %s", settings.model, self._model_error)
                self._state("error", self._model_error)
                raise ModelUnavailable(self._model_error) from exc
            self._model, self._model_key, self._model_error = model, key, None
            with self._cache_lock:
                self._cache.clear()
            self.idle.full_ready.clear()
            self._state("ready", model.description)
            self.workspace_changed()
            return model

    def _retry_due(self) -> bool:
        """A remote endpoint that was down is tried again after a while (a local model
        file that failed stays failed until the settings change)."""
        return self.settings.backend == "openai" and time.monotonic() - self._error_at >= REMOTE_RETRY_S

    def load_model_sync(self) -> LoadedModel:
        """For the CLI: load the model on the calling thread."""
        return asyncio.run(self.ensure_model())

    # --------------------------------------------------------------- complete
    def cancel(self, uri: str) -> None:
        event = self._inflight.get(uri)
        if event is not None:
            event.set()

    def _type_through(self, req: CompletionRequest, cur: CursorText) -> str | None:
        """The rest of the last suggestion when the user typed its start."""
        last = self._last.get(req.uri)
        if last is None:
            return None
        if self.idle.outdated(req.uri, last.kind, last.at):
            return None
        if req.offset < len(last.prefix) or cur.line_suffix != last.line_suffix:
            return None
        if req.text[: len(last.prefix)] != last.prefix:
            return None
        typed = req.text[len(last.prefix) : req.offset]
        if not typed or "\n" in typed or not last.text.startswith(typed) or len(typed) >= len(last.text):
            return None
        return last.text[len(typed) :]

    def cache_key(self, req: CompletionRequest, mode: Mode) -> tuple[object, ...]:
        return (
            self._model_key,
            mode,
            self.settings.workspace_context,
            req.max_items > 1,
            req.text[max(0, req.offset - 4096) : req.offset],
            req.text[req.offset : req.offset + 1024],
        )

    def cache_get(self, key: tuple[object, ...], uri: str) -> CacheEntry | None:
        """A cached suggestion, unless it came from a quick prompt and the document's full
        prompt has been evaluated since (then the full prompt answers instead)."""
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if self.idle.outdated(uri, entry.kind, entry.at):
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry

    def cache_put(self, key: tuple[object, ...], entry: CacheEntry) -> None:
        with self._cache_lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    async def complete(self, req: CompletionRequest) -> CompletionResult | None:
        """One completion, or None when superseded/cancelled or there is nothing to add."""
        t_start = time.perf_counter()
        settings = self.settings
        if not settings.enabled:
            return None
        self.stats.requests += 1
        cur = CursorText.from_prefix_suffix(req.text[max(0, req.offset - 8192) : req.offset], req.text[req.offset : req.offset + 8192])
        mode = decide_mode(cur, req.syntax)
        if mode is Mode.NONE:
            return CompletionResult(text="", mode=mode, stop_reason="not-here")

        if settings.cache_completions:
            rest = self._type_through(req, cur)
            if rest is not None:
                self.stats.cache_hits += 1
                return self._finish_cached(
                    CompletionResult(text=rest, mode=mode, cached=True, stop_reason="type-through", evaluated_tokens=0), t_start
                )
        key = self.cache_key(req, mode)
        entry = self.cache_get(key, req.uri) if settings.cache_completions else None
        if entry is not None:
            self.stats.cache_hits += 1
            self.stats.speculative_hits += int(entry.speculative)
            self._remember(req, cur, entry.text, entry.kind, entry.at)
            if entry.kind != "full":
                self.warm(req, cursor_known=True)  # the full prompt is still to come
            self.idle.speculate(req, entry.text)
            hit = CompletionResult(
                text=entry.text,
                mode=mode,
                cached=True,
                stop_reason="speculation" if entry.speculative else "cache",
                prompt_kind=entry.kind,
                speculative=entry.speculative,
                prompt_tokens=entry.prompt_tokens,
                evaluated_tokens=0,
            )
            return self._finish_cached(hit, t_start)

        # Latest wins: a newer request for this document cancels the older one.
        self.cancel(req.uri)
        cancel = threading.Event()
        self._inflight[req.uri] = cancel
        self._begin_foreground()
        try:
            if settings.debounce_ms:
                await asyncio.sleep(settings.debounce_ms / 1000)
                if cancel.is_set():
                    return None
            model = await self.ensure_model()
            if cancel.is_set():
                return None
            loop = asyncio.get_running_loop()
            t_queued = time.perf_counter()
            fut = loop.run_in_executor(self.executor, self._generate, model, req, mode, cur, cancel, t_queued)
            try:
                result = await asyncio.wait_for(fut, timeout=settings.request_timeout_s)
            except asyncio.TimeoutError:
                cancel.set()
                logger.warning("completion for %s timed out after %.1f s", req.uri, settings.request_timeout_s)
                return None
            except Exception as exc:  # a backend failure degrades this request only
                cancel.set()
                logger.exception("completion for %s failed", req.uri)
                raise CompletionFailed(str(exc) or type(exc).__name__) from exc
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if self._inflight.get(req.uri) is cancel:
                del self._inflight[req.uri]
            self._end_foreground()
        if result is None:
            return None
        result.timings_ms["total"] = (time.perf_counter() - t_start) * 1000
        self.last_result = result.as_dict()
        if result.stop_reason != "cancelled":
            entry = CacheEntry(result.text, result.prompt_kind, time.monotonic(), False, result.prompt_tokens)
            self.cache_put(key, entry)
            self._remember(req, cur, result.text, entry.kind, entry.at)
            if result.prompt_kind != "full":
                self.warm(req, cursor_known=True)
            self.idle.speculate(req, result.text)
        elif cancel.is_set():
            return None
        return result

    def _finish_cached(self, result: CompletionResult, t_start: float) -> CompletionResult:
        result.timings_ms["total"] = (time.perf_counter() - t_start) * 1000
        self.last_result = result.as_dict()
        return result

    def _remember(self, req: CompletionRequest, cur: CursorText, text: str, kind: str = "", at: float = 0.0) -> None:
        """What the client was given at this cursor (an empty text too: a quick prompt's
        hidden suggestion is upgraded like a shown one)."""
        self._last[req.uri] = LastResult(req.text[: req.offset], cur.line_suffix, text, kind, at or time.monotonic())

    def shown(self, uri: str) -> LastResult | None:
        return self._last.get(uri)

    # ------------------------------------------------------- prompts and generation
    def _progressive(self, model: LoadedModel) -> bool:
        """Quick prompts for cold documents: a latency target, and a backend that keeps
        per-document KV states (without them the quick and full prompts would evict each
        other)."""
        backend = model.backend
        store = getattr(backend, "kv_store", None)
        return self.settings.latency_target_ms > 0 and store is not None and store.enabled and self.perf is not None

    def affordable_tokens(self) -> int:
        return affordable_prompt_tokens(self.perf, self.settings.latency_target_ms, EXPECTED_GEN_TOKENS)

    def _budget(self, model: LoadedModel) -> PromptBudget:
        info = model.backend.info
        settings = self.settings
        # Hardware-sized suffix: on a CPU every suffix token is re-evaluated per keystroke.
        suffix_max = 64 if info.device == "cpu" else 256
        return PromptBudget.for_model(info.n_ctx, settings.context_tokens, settings.max_tokens, suffix_max=suffix_max)

    def full_prompt(self, model: LoadedModel, req: CompletionRequest) -> tuple[Prompt, float]:
        """The whole prompt (retrieved context and prefix window) and ms spent retrieving."""
        backend = model.backend
        budget = self._budget(model)
        chunks: Sequence[ContextChunk] = ()
        t0 = time.perf_counter()
        if self.settings.workspace_context and self.context is not None:
            try:
                chunks = self.context.retrieve(
                    req, int(budget.total * budget.context_share), lambda s: len(backend.tokenize(s))
                )
            except Exception:
                logger.exception("context retrieval failed for %s; completing without it", req.uri)
                chunks = ()
        t1 = time.perf_counter()
        prompt = PromptBuilder(backend, model.template).build(
            req.prefix, req.suffix, budget, chunks, req.path, req.repo_name, keep_line=self._starts.get((req.uri, "full"))
        )
        return prompt, (t1 - t0) * 1000

    def _quick_prompt(
        self, model: LoadedModel, req: CompletionRequest, tokens: int, chunks: Sequence[ContextChunk] = (), context: int = 0
    ) -> Prompt:
        """The cursor region, in about ``tokens`` tokens, after up to ``context`` tokens of
        the retrieved ``chunks`` (their first ones, laid out as in the full prompt; 0: only
        the hints, a line of this file like the one being written, as a comment right above
        the cursor's line: a few tokens that the model copies from)."""
        budget = replace(quick_budget(self._budget(model), tokens), context_extra=context)
        if not context:
            chunks = [c for c in chunks if c.kind == HINT_KIND]
        return PromptBuilder(model.backend, model.template).build(
            req.prefix, req.suffix, budget, chunks, req.path, req.repo_name, keep_line=self._starts.get((req.uri, "quick"))
        )

    def quick(self, model: LoadedModel, req: CompletionRequest, full: Prompt, idle: bool = False) -> tuple[Prompt, str, str]:
        """The quick prompt for ``req``, the KV slot to run it in and its kind: the cursor
        region after as many of the full prompt's retrieved chunks as the full prompt's
        slot holds evaluated already (idle time evaluates them first, ``IdleWork._job``),
        so that it costs about what the cursor region and the usage lines do ("context"
        when that is all of them, else "quick"); without any, the cursor region after the
        full prompt's usage lines in a slot of its own ("quick").  A request weighs that
        against the least any of these would cost now (little on a keystroke after a quick
        answer); idle-time work (``idle``) against the cursor region's size."""
        tokens = self.affordable_tokens()
        full_slot = f"full:{req.uri}"
        ctx = [c for c in full.chunks_used if c.kind != HINT_KIND]
        hints = [c for c in full.chunks_used if c.kind == HINT_KIND]
        # The file's own lines that use its imported names: what a quick prompt's tokens
        # buy most of (docs/latency.md, "The quick prompt's usage lines").
        usage = [c for c in ctx if c.kind == USAGE_KIND]
        backend = model.backend
        alone = self._quick_prompt(model, req, tokens, usage + hints, quick_usage_tokens(tokens) if usage else 0)
        order = ctx
        if ctx and not backend.slot_tokens(full_slot):  # type: ignore[attr-defined]
            # A document just opened: the chunks another kept state holds evaluated (the
            # workspace's likely context, another document's), in the order it holds them.
            states: dict[str, Any] = getattr(backend, "kept_states", dict)()
            order = seeded_order(states, ctx, backend.tokenize) if states else []
        if order:
            # A prompt that reads kept chunks may cost what the cursor region costs in its
            # own slot (all of it in a file just opened) plus ``slack``; on a keystroke
            # after a quick answer, what that answer's prompt costs now (a token or two),
            # so that each key does not evaluate the cursor region again.  Idle-time work
            # pays up to the cursor region's size.
            builder = PromptBuilder(backend, model.template)
            slack = builder.header_cost(req.path) + tokens // QUICK_CONTEXT_OVERRUN
            tried = []
            for n in range(len(order), 0, -1):
                prompt = self._quick_prompt(model, req, tokens, order[:n] + hints, full.n_context_tokens)
                tried.append((n, prompt, backend.eval_cost(prompt.tokens, full_slot)))  # type: ignore[attr-defined]
            least = alone.n_tokens
            if not idle:
                least = backend.eval_cost(alone.tokens, f"quick:{req.uri}")  # type: ignore[attr-defined]
                cached = min(cost for _, _, cost in tried)
                if cached <= slack:  # the answer before this key read kept chunks
                    least = min(least, cached)
            allowed = least + slack
            for n, prompt, cost in tried:
                if cost <= allowed:
                    return prompt, full_slot, "context" if n == len(ctx) else "quick"
        return alone, f"quick:{req.uri}", "quick"

    def context_head(self, model: LoadedModel, req: CompletionRequest, full: Prompt) -> list[int]:
        """The first tokens of ``full`` that a quick prompt with all of its retrieved
        context shares (the context and what precedes it): evaluated first in idle time."""
        if not any(c.kind != HINT_KIND for c in full.chunks_used):
            return []
        quick = self._quick_prompt(model, req, self.affordable_tokens(), full.chunks_used, full.n_context_tokens)
        return full.tokens[: min(common_prefix_len(full.tokens, quick.tokens), len(full.tokens) - 1)]

    def _generate(
        self,
        model: LoadedModel,
        req: CompletionRequest,
        mode: Mode,
        cur: CursorText,
        cancel: threading.Event,
        t_queued: float,
    ) -> CompletionResult | None:
        t0 = time.perf_counter()
        if cancel.is_set():
            return None
        result = self.run(model, req, mode, cur, cancel)
        result.timings_ms["queue"] = (t0 - t_queued) * 1000
        return result

    def needs_quick(self, model: LoadedModel, full: Prompt, uri: str) -> bool:
        """Whether the full prompt would cost more than the latency target affords (by
        ``progressive.QUICK_MIN_SAVING``), so that a quick prompt answers instead."""
        if not self._progressive(model):
            return False
        cost = model.backend.eval_cost(full.tokens, f"full:{uri}")  # type: ignore[attr-defined]
        return needs_quick(cost, self.affordable_tokens())

    def run(
        self,
        model: LoadedModel,
        req: CompletionRequest,
        mode: Mode,
        cur: CursorText,
        cancel: threading.Event,
        full: tuple[Prompt, float] | None = None,
        idle: bool = False,
    ) -> CompletionResult:
        """Build the prompt (full, or quick when the full one would cost more than the
        latency target allows), generate, clean up.  On the model thread.  ``full``: the
        full prompt and its retrieval ms, when the caller built it already; ``idle``: for
        idle-time work (``Engine.quick``)."""
        settings = self.settings
        backend = model.backend
        t0 = time.perf_counter()
        prompt, context_ms = full if full is not None else self.full_prompt(model, req)
        kind, slot = "full", f"full:{req.uri}"
        if self.needs_quick(model, prompt, req.uri):
            prompt, slot, kind = self.quick(model, req, prompt, idle)
        t2 = time.perf_counter()
        if not prompt.tokens:  # nothing before the cursor, and no markup: nothing to go on
            return CompletionResult(text="", mode=mode, stop_reason="empty-prompt", prompt_kind=kind, evaluated_tokens=0)
        self._starts[(req.uri, "full" if kind == "full" else "quick")] = prompt.prefix_start_line
        forced = prompt.forced_prefix
        grow = settings.multiline
        cond = stop_condition(mode, cur, grow)
        if grow and mode is Mode.LINE and settings.latency_target_ms > 0:
            # Looking ahead for the code below costs tokens: as long again as the line took
            # at most, and never past the latency target.
            cond = lookahead_capped(cond, cur, t0 + settings.latency_target_ms / 1000)
        bar = settings.quick_min_confidence if kind == "quick" else settings.min_confidence
        give_up = None
        if mode is Mode.LINE and not cur.line_suffix.strip() and req.max_items <= 1 and not settings.unsure_alternatives:
            give_up = give_up_rule(bar, len(forced))
        request = GenerationRequest(
            prompt=prompt.tokens,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            stop=model.stop,
            forced_prefix=forced,
            should_stop=lambda text: cond(text[len(forced) :]),
            give_up=give_up,
            slot=slot,
        )
        gen = backend.generate(request, cancel)
        text = finalize(gen.text, mode, cur, forced, grow) if gen.stop_reason not in ("cancelled", "unsure") else ""
        choice = _Choice(text)
        if gen.stop_reason == "unsure":
            choice = _unsure(gen, len(forced))
        elif gen.stop_reason != "cancelled":
            t3 = time.perf_counter()
            # The quick bar is for a quick prompt without the full one's retrieved context;
            # one that reads all of it is as sure of itself as the full one (docs/latency.md).
            choice = self._choose(model, req, mode, cur, cancel, request, gen, text, t0, kind == "quick")
            choice.ms = (time.perf_counter() - t3) * 1000
        if gen.stop_reason != "cancelled":
            if kind == "full":
                self.idle.full_ready[req.uri] = time.monotonic()
                self.stats.full_prompts += 1
            else:
                self.stats.quick_prompts += 1
            if self._speed.observe(self.perf, gen.evaluated_tokens, gen.prompt_ms):
                logger.info("prompt evaluation is much slower than measured; measuring again when idle")
                self.idle.measure_due = True
        return CompletionResult(
            text=choice.text,
            mode=mode,
            alternatives=choice.alternatives,
            confidence=choice.confidence,
            min_prob=choice.min_prob,
            gate=choice.gate,
            candidates=choice.tried,
            hidden=choice.hidden,
            token_logprobs=choice.logprobs,
            forced_tokens=choice.forced_tokens,
            prompt_tokens=prompt.n_tokens,
            reused_tokens=gen.reused_tokens,
            context_tokens=prompt.n_context_tokens,
            context_chunks=len(prompt.chunks_used),
            generated_tokens=len(gen.tokens),
            stop_reason=gen.stop_reason,
            raw=gen.text,
            prompt_kind=kind,
            evaluated_tokens=gen.evaluated_tokens,
            shifted_tokens=gen.shifted_tokens,
            timings_ms={
                "context": context_ms,
                "prompt_build": (t2 - t0) * 1000 - context_ms,
                "prompt_eval": gen.prompt_ms,
                "generate": gen.generate_ms,
                "choose": choice.ms,
            },
        )

    def _choose(
        self,
        model: LoadedModel,
        req: CompletionRequest,
        mode: Mode,
        cur: CursorText,
        cancel: threading.Event,
        request: GenerationRequest,
        gen: GenerationResult,
        text: str,
        t_start: float,
        quick: bool = False,
    ) -> _Choice:
        """The validity gate, other candidates and the confidence bar, on the greedy
        generation ``gen`` (cleaned: ``text``).  With all three off, ``text`` as it is."""
        settings = self.settings
        opts = ChoiceOptions(
            gate=settings.validity_gate,
            candidates=settings.candidates,
            # A quick prompt's suggestion has its own bar (quickMinConfidence): it is
            # replaced by the full prompt's a few seconds later, when that one differs.
            min_confidence=settings.quick_min_confidence if quick else settings.min_confidence,
            items=max(1, req.max_items),
            unsure=settings.unsure_alternatives,
        )
        forced = request.forced_prefix
        if not opts.gate and opts.candidates <= 1 and opts.min_confidence <= 0 and opts.items <= 1:
            # All off: the text as generated (its confidence is only reported).
            scored = make_candidate(gen, text, len(forced), None, use_gate=False)
            return _Choice(
                text,
                confidence=scored.confidence if scored.known else None,
                min_prob=math.exp(scored.min_logprob) if scored.known else None,
                logprobs=scored.logprobs,
                forced_tokens=scored.forced,
            )
        ctx = None
        if opts.gate:
            try:
                ctx = gate_prepare(req.prefix, req.suffix, req.path or req.uri, req.language_id)
            except Exception:
                logger.exception("the validity gate failed for %s; suggestion not checked", req.uri)

        def build(g: GenerationResult) -> Candidate:
            cleaned = finalize(g.text, mode, cur, forced, settings.multiline)
            return make_candidate(g, cleaned, len(forced), ctx, opts.gate and ctx is not None)

        first = build(gen)
        branch_fn = getattr(model.backend, "branch", None)
        branch: Callable[[Sequence[int], int], GenerationResult | None] | None = None
        if branch_fn is not None:

            def branch(head: Sequence[int], cap: int) -> GenerationResult | None:
                sub = dataclasses.replace(request, max_tokens=min(cap, request.max_tokens))
                return branch_fn(sub, head, cancel)  # type: ignore[no-any-return]

        now = time.perf_counter()
        ranked, tried = choose(
            gen,
            first,
            opts,
            forced_len=len(forced),
            branch=branch,
            build=build,
            deadline=now + max(TIME_SHARE * (now - t_start), EXPLICIT_CANDIDATES_S if opts.items > 1 else 0.0),
            cancel=cancel,
            rejected=not text and bool(gen.text[len(forced) :].strip()),
        )
        best = ranked[0] if ranked else None
        hidden = ""
        if best is None and first.text:
            hidden = "confidence" if rank([first]) else "gate"
        elif best is None and text:
            hidden = "gate"
        return _Choice(
            text=best.text if best else "",
            alternatives=[c.text for c in ranked[1 : opts.items]],
            confidence=(best or first).confidence if (best or first).known else None,
            min_prob=math.exp((best or first).min_logprob) if (best or first).known else None,
            gate=first.verdict,
            tried=tried,
            hidden=hidden,
            logprobs=(best or first).logprobs,
            forced_tokens=(best or first).forced,
        )

    # --------------------------------------------------------- idle-time work
    def workspace_changed(self) -> None:
        """The model loaded or the workspace index was built: evaluate the workspace's
        likely context again when idle (``IdleWork.workspace_job``), and start idle work
        (what was queued while the model loaded)."""
        if self.settings.workspace_warm_tokens > 0 and self.settings.workspace_context:
            self.idle.workspace_due = True
        self.idle.kick()

    def _workspace_budget(self, model: LoadedModel) -> int:
        return min(self.settings.workspace_warm_tokens, model.backend.info.n_ctx - self.settings.max_tokens - 64)

    def workspace_chunks(self, model: LoadedModel) -> tuple[list[ContextChunk], int] | None:
        """Candidates for the workspace's likely context, most imported first, and the index
        generation they were read from; None without an index.  Runs off the model thread
        (a scan of the index, up to ``LIKELY_SCAN_S``), so it never calls the model (it may
        be closed meanwhile): more is read than fits, by a low guess of the tokens from the
        characters; ``workspace_prompt`` chooses by the model's tokens."""
        likely = getattr(self.context, "likely_chunks", None)
        settings = self.settings
        if likely is None or not settings.workspace_context or not self._progressive(model):
            return None
        got = likely(self._workspace_budget(model), lambda text: len(text) // CHARS_PER_TOKEN_GUESS)
        return None if got is None else (list(got[0]), got[1])

    def workspace_prompt(self, model: LoadedModel, got: tuple[list[ContextChunk], int]) -> tuple[list[int], int, int]:
        """Of ``got`` (``workspace_chunks``), in order, each chunk that still fits the budget
        in the model's tokens (as retrieval chooses), laid out as retrieved context is in a
        prompt: the tokens, the number of chunks and the index generation (on the model
        thread)."""
        candidates, generation = got
        backend = model.backend
        chunks = fit_chunks(candidates, self._workspace_budget(model), lambda text: len(backend.tokenize(text)))
        roots = getattr(self.context, "roots", None) or [""]
        tokens = PromptBuilder(backend, model.template).context_tokens(chunks, os.path.basename(roots[0]))
        return tokens, len(chunks), generation

    def warm(self, req: CompletionRequest, cursor_known: bool = True) -> None:
        """Evaluate what a request at ``req`` will need before it is asked (on open, on a
        cursor move, after a quick answer).  Cancelled by any real request."""
        self.idle.warm(req, cursor_known)

    def forget(self, uri: str) -> None:
        """A document was closed: drop its pending idle-time work (its KV state stays in
        the LRU, for when it is opened again)."""
        self.idle.forget(uri)
        self._last.pop(uri, None)
        for kind in ("full", "quick"):
            self._starts.pop((uri, kind), None)

    def _begin_foreground(self) -> None:
        self.foreground += 1
        self.idle.preempt.set()

    def _end_foreground(self) -> None:
        self.foreground = max(0, self.foreground - 1)
        self.last_foreground = time.monotonic()
        if not self.foreground:
            self.idle.kick()

    def remeasure(self, model: LoadedModel) -> None:
        if model is not self._model or self._perf_key is None:
            return
        try:
            perf = calibrate(model.backend, self.settings.threads)  # type: ignore[arg-type]
        except Exception:
            logger.exception("measuring the model's speed again failed")
            return
        save_perf(self._perf_key, perf)
        self.perf = perf
        self.stats.measurements += 1
        self._speed.measured()

    async def settle(self, timeout_s: float = 60.0) -> bool:
        """Wait until idle-time work is done (for tests, benchmarks and the CLI); False on
        timeout."""
        return await self.idle.settle(timeout_s)

    # ---------------------------------------------------------------- status
    def document_state(self, uri: str) -> str:
        """"warming", "ready" (its full prompt evaluated), "failed" or "cold"."""
        return self.idle.document_state(uri)

    def session_status(self) -> dict[str, object]:
        model = self._model
        store = getattr(model.backend, "kv_store", None) if model is not None else None
        return {
            "perf": self.perf.as_dict() if self.perf else None,
            "affordablePromptTokens": self.affordable_tokens() if self.perf else None,
            "threads": getattr(model.backend, "n_threads", None) if model is not None else None,
            "batchThreads": getattr(model.backend, "n_threads_batch", None) if model is not None else None,
            "kvCache": {
                "bytes": store.nbytes,
                "maxBytes": store.max_bytes,
                "slots": [{"slot": k, "tokens": n} for k, n in store.slots().items()],
                "evicted": store.evicted,
            }
            if store is not None
            else None,
            "pendingWarm": len(self.idle.queue),
            "workspace": dict(self.idle.workspace, due=self.idle.workspace_due),
            "seeded": getattr(model.backend, "seeded", None) if model is not None else None,
            "warming": self.idle.warming,
            "stats": self.stats.as_dict(),
            "lastCompletion": self.last_result,
        }

    async def run_exclusive(self, fn: Callable[[LoadedModel], T]) -> T:
        """Run ``fn(model)`` on the model worker thread, after any queued generation.

        For work other than completions (code actions): the model is never used by two
        jobs at once.  ``fn`` must check its own cancel flag between tokens.
        """
        self._begin_foreground()
        try:
            model = await self.ensure_model()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, fn, model)
        finally:
            self._end_foreground()

    def shutdown(self) -> None:
        """Stop generation, wait for the worker, then free the model.

        The model must not be closed under a running generation (llama.cpp would crash):
        the cancel flags stop it between tokens, and the worker is joined first.
        """
        self.closed = True
        self.idle.clear()
        for event in self._inflight.values():
            event.set()
        self.idle.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)
        model, self._model = self._model, None
        if model is not None:
            try:
                model.backend.close()
            except Exception:
                logger.debug("closing model failed", exc_info=True)
