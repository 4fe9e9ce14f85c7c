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
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from lsp_server.backends import BackendError, GenerationRequest, GenerationResult
from lsp_server.config import Settings
from lsp_server.context.parser import SyntaxHint
from lsp_server.engine.candidates import (
    TIME_SHARE,
    Candidate,
    ChoiceOptions,
    choose,
    make_candidate,
    rank,
)
from lsp_server.engine.gate import prepare_for as gate_prepare
from lsp_server.engine.model import LoadedModel
from lsp_server.engine.postprocess import CursorText, Mode, decide_mode, finalize, lookahead_capped, stop_condition
from lsp_server.engine.prompt import HINT_KIND, Prompt, PromptBudget, PromptBuilder
from lsp_server.engine.session import (
    Perf,
    SpeedWatch,
    WarmQueue,
    WarmTarget,
    affordable_prompt_tokens,
    calibrate,
    load_perf,
    perf_key,
    prefill_batch,
    save_perf,
)
from lsp_server.families.completion import ContextChunk

logger = logging.getLogger(__name__)

CACHE_SIZE = 256
# A remote endpoint that could not be reached is tried again after this long
# (QUILL_REMOTE_RETRY_S overrides it: the stress tests wait one second, not thirty).
try:
    REMOTE_RETRY_S = max(0.0, float(os.environ.get("QUILL_REMOTE_RETRY_S") or 30.0))
except ValueError:
    REMOTE_RETRY_S = 30.0
# The quick prompt of a cold document starts on every 4th line (the full one on every 16th).
QUICK_LINE_QUANTUM = 4
# Tokens a typical suggestion takes to generate (a rest of line), for sizing the quick
# prompt.  A constant, so that the quick prompt keeps its first tokens between keystrokes.
EXPECTED_GEN_TOKENS = 10
# A quick prompt only when the full one costs more than this many times what the latency
# target affords: for a small file, a little over the target beats a prompt of 4 lines.
QUICK_MIN_SAVING = 2.0
# Idle-time work starts this long after the last request ended: keystrokes come closer
# together while the user types, and each would otherwise wait for a slice of work to end.
IDLE_AFTER_REQUEST_S = 0.15
# Candidates may take at least this long when the user asked for several suggestions.
EXPLICIT_CANDIDATES_S = 0.5
T = TypeVar("T")


class ModelUnavailable(RuntimeError):
    """The configured model could not be loaded; the message says why."""


class CompletionFailed(RuntimeError):
    """Generation failed (a remote server went away, a backend error); the message says why."""


class ContextProvider(Protocol):
    """Retrieved workspace context for a completion (see ``context/retrieval.py``)."""

    def retrieve(self, request: CompletionRequest, token_budget: int, count_tokens: Callable[[str], int]) -> Sequence[ContextChunk]: ...


@dataclass(frozen=True)
class CompletionRequest:
    uri: str
    text: str  # document snapshot
    offset: int  # cursor, as an index into ``text``
    path: str = ""  # workspace-relative path shown to the model
    language_id: str = ""
    syntax: SyntaxHint | None = None
    repo_name: str = ""
    max_items: int = 1  # suggestions the client wants (several when the user cycles them)

    @property
    def prefix(self) -> str:
        return self.text[: self.offset]

    @property
    def suffix(self) -> str:
        return self.text[self.offset :]


@dataclass
class CompletionResult:
    text: str
    mode: Mode
    prompt_tokens: int = 0
    reused_tokens: int = 0
    context_tokens: int = 0
    context_chunks: int = 0
    generated_tokens: int = 0
    stop_reason: str = ""
    cached: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    raw: str = ""
    # "full": the whole prompt (context and prefix window); "quick": the short prompt of a
    # document whose full prompt is still being evaluated (see engine/session.py).
    prompt_kind: str = ""
    evaluated_tokens: int = -1  # prompt tokens evaluated for this request (-1: unknown)
    shifted_tokens: int = 0
    speculative: bool = False  # served from work done before it was asked for
    # Suggestions worth showing (engine/candidates.py): more suggestions after ``text``
    # (when the client asked for several), the shown one's confidence (None: not
    # measured), the validity gate's verdict on the first candidate, how many candidates
    # were generated, and why nothing is shown ("gate", "confidence") when so.
    alternatives: list[str] = field(default_factory=list)
    confidence: float | None = None
    min_prob: float | None = None
    gate: str = ""
    candidates: int = 0
    hidden: str = ""
    token_logprobs: tuple[float, ...] = ()  # of the tokens that make the shown suggestion
    forced_tokens: int = 0  # how many of them cover the healed prefix (not in the confidence)

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "mode": self.mode.value,
            "promptTokens": self.prompt_tokens,
            "reusedTokens": self.reused_tokens,
            "contextTokens": self.context_tokens,
            "contextChunks": self.context_chunks,
            "generatedTokens": self.generated_tokens,
            "stopReason": self.stop_reason,
            "cached": self.cached,
            "promptKind": self.prompt_kind,
            "evaluatedTokens": self.evaluated_tokens,
            "shiftedTokens": self.shifted_tokens,
            "speculative": self.speculative,
            "alternatives": self.alternatives,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "minProb": None if self.min_prob is None else round(self.min_prob, 4),
            "gate": self.gate,
            "candidates": self.candidates,
            "hidden": self.hidden,
            "raw": self.raw if self.hidden or not self.text else "",  # why nothing was shown
            "tokenLogprobs": [round(lp, 3) for lp in self.token_logprobs],
            "forcedTokens": self.forced_tokens,
            "timingsMs": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


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


@dataclass
class _LastResult:
    prefix: str
    line_suffix: str
    text: str
    kind: str = ""  # the prompt it came from ("quick" ones expire once the full prompt is ready)
    at: float = 0.0


@dataclass
class _CacheEntry:
    text: str
    kind: str  # the prompt it came from: "full" or "quick"
    at: float  # time.monotonic()
    speculative: bool = False  # computed in idle time, before it was asked for
    prompt_tokens: int = 0


@dataclass
class SessionStats:
    """Counters for quill/status and benchmarks."""

    requests: int = 0
    cache_hits: int = 0
    speculative_hits: int = 0
    quick_prompts: int = 0
    full_prompts: int = 0
    warm_jobs: int = 0
    warm_preempted: int = 0
    warm_tokens: int = 0
    measurements: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "cacheHits": self.cache_hits,
            "speculativeHits": self.speculative_hits,
            "quickPrompts": self.quick_prompts,
            "fullPrompts": self.full_prompts,
            "warmJobs": self.warm_jobs,
            "warmPreempted": self.warm_preempted,
            "warmTokens": self.warm_tokens,
            "measurements": self.measurements,
        }


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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quill-model")
        self._model: LoadedModel | None = None
        self._model_key: tuple[object, ...] | None = None
        self._model_error: str | None = None
        self._load_lock: asyncio.Lock | None = None
        self._error_at = 0.0
        self._inflight: dict[str, threading.Event] = {}
        self._cache: OrderedDict[tuple[object, ...], _CacheEntry] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._last: dict[str, _LastResult] = {}
        self.on_model_state: Callable[[str, str], None] | None = None  # (state, detail)
        # Session latency (engine/session.py).
        self.perf: Perf | None = None
        self._perf_key: str | None = None
        self._speed = SpeedWatch()
        self._measure_due = False
        self._warm = WarmQueue()
        self._preempt = threading.Event()  # set while a request wants the model thread
        self._foreground = 0
        self._last_foreground = 0.0  # time.monotonic() when the last request ended
        self._bg_task: asyncio.Task[None] | None = None
        self._warming: str | None = None
        self._full_ready: dict[str, float] = {}  # uri -> when its full prompt was last evaluated
        self._warm_failed: set[str] = set()  # idle-time work raised (reported, not retried)
        # (uri, prompt kind) -> the line the prefix window started on last time (model thread).
        self._starts: dict[tuple[str, str], int] = {}
        self._closed = False
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
            self._warm.clear()
            self._preempt.set()
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
            backend.set_threads(perf.threads)  # type: ignore[attr-defined]
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
            self._preempt.set()  # idle-time work must not hold the thread the load needs
            try:
                model = await loop.run_in_executor(self._executor, self._load_blocking, settings)
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
            self._full_ready.clear()
            self._state("ready", model.description)
            self._kick()
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
        if last.kind == "quick" and self._full_ready.get(req.uri, -1.0) > last.at:
            return None
        if req.offset < len(last.prefix) or cur.line_suffix != last.line_suffix:
            return None
        if req.text[: len(last.prefix)] != last.prefix:
            return None
        typed = req.text[len(last.prefix) : req.offset]
        if not typed or "\n" in typed or not last.text.startswith(typed) or len(typed) >= len(last.text):
            return None
        return last.text[len(typed) :]

    def _cache_key(self, req: CompletionRequest, mode: Mode) -> tuple[object, ...]:
        return (
            self._model_key,
            mode,
            self.settings.workspace_context,
            req.max_items > 1,
            req.text[max(0, req.offset - 4096) : req.offset],
            req.text[req.offset : req.offset + 1024],
        )

    def _cache_get(self, key: tuple[object, ...], uri: str) -> _CacheEntry | None:
        """A cached suggestion, unless it came from a quick prompt and the document's full
        prompt has been evaluated since (then the full prompt answers instead)."""
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry.kind == "quick" and self._full_ready.get(uri, -1.0) > entry.at:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry

    def _cache_put(self, key: tuple[object, ...], entry: _CacheEntry) -> None:
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
        key = self._cache_key(req, mode)
        entry = self._cache_get(key, req.uri) if settings.cache_completions else None
        if entry is not None:
            self.stats.cache_hits += 1
            self.stats.speculative_hits += int(entry.speculative)
            self._remember(req, cur, entry.text, entry.kind, entry.at)
            if entry.kind == "quick":
                self.warm(req, cursor_known=True)  # the full prompt is still to come
            self._speculate(req, entry.text)
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
            fut = loop.run_in_executor(self._executor, self._generate, model, req, mode, cur, cancel, t_queued)
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
            entry = _CacheEntry(result.text, result.prompt_kind, time.monotonic(), False, result.prompt_tokens)
            self._cache_put(key, entry)
            self._remember(req, cur, result.text, entry.kind, entry.at)
            if result.prompt_kind == "quick":
                self.warm(req, cursor_known=True)
            self._speculate(req, result.text)
        elif cancel.is_set():
            return None
        return result

    def _finish_cached(self, result: CompletionResult, t_start: float) -> CompletionResult:
        result.timings_ms["total"] = (time.perf_counter() - t_start) * 1000
        self.last_result = result.as_dict()
        return result

    def _remember(self, req: CompletionRequest, cur: CursorText, text: str, kind: str = "", at: float = 0.0) -> None:
        if text:
            self._last[req.uri] = _LastResult(req.text[: req.offset], cur.line_suffix, text, kind, at or time.monotonic())
        else:
            self._last.pop(req.uri, None)

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

    def _full_prompt(self, model: LoadedModel, req: CompletionRequest) -> tuple[Prompt, float]:
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
        self, model: LoadedModel, req: CompletionRequest, tokens: int, hints: Sequence[ContextChunk] = ()
    ) -> Prompt:
        """The cursor region, in about ``tokens`` tokens: no retrieved context but the
        ``hints`` (a line of this file like the one being written, as a comment right above
        the cursor's line: a few tokens that the model copies from)."""
        full = self._budget(model)
        total = max(16, min(full.total, tokens))
        budget = PromptBudget(
            total=total,
            suffix_max=min(full.suffix_max, max(8, tokens // 4)),
            line_quantum=QUICK_LINE_QUANTUM,
            slack=min(total // 2, full.total - total),
        )
        return PromptBuilder(model.backend, model.template).build(
            req.prefix, req.suffix, budget, hints, req.path, req.repo_name, keep_line=self._starts.get((req.uri, "quick"))
        )

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
        result = self._run(model, req, mode, cur, cancel)
        result.timings_ms["queue"] = (t0 - t_queued) * 1000
        return result

    def _needs_quick(self, model: LoadedModel, full: Prompt, uri: str) -> bool:
        """Whether the full prompt would cost more than the latency target affords (by
        ``QUICK_MIN_SAVING``), so that a quick prompt answers instead."""
        if not self._progressive(model):
            return False
        cost = model.backend.eval_cost(full.tokens, f"full:{uri}")  # type: ignore[attr-defined]
        return bool(cost > self.affordable_tokens() * QUICK_MIN_SAVING)

    def _run(
        self,
        model: LoadedModel,
        req: CompletionRequest,
        mode: Mode,
        cur: CursorText,
        cancel: threading.Event,
        full: tuple[Prompt, float] | None = None,
    ) -> CompletionResult:
        """Build the prompt (full, or quick when the full one would cost more than the
        latency target allows), generate, clean up.  On the model thread.  ``full``: the
        full prompt and its retrieval ms, when the caller built it already."""
        settings = self.settings
        backend = model.backend
        t0 = time.perf_counter()
        prompt, context_ms = full if full is not None else self._full_prompt(model, req)
        kind, slot = "full", f"full:{req.uri}"
        if self._needs_quick(model, prompt, req.uri):
            hints = [c for c in prompt.chunks_used if c.kind == HINT_KIND]
            prompt, kind, slot = self._quick_prompt(model, req, self.affordable_tokens(), hints), "quick", f"quick:{req.uri}"
        t2 = time.perf_counter()
        if not prompt.tokens:  # nothing before the cursor, and no markup: nothing to go on
            return CompletionResult(text="", mode=mode, stop_reason="empty-prompt", prompt_kind=kind, evaluated_tokens=0)
        self._starts[(req.uri, kind)] = prompt.prefix_start_line
        forced = prompt.forced_prefix
        grow = settings.multiline
        cond = stop_condition(mode, cur, grow)
        if grow and mode is Mode.LINE and settings.latency_target_ms > 0:
            # Looking ahead for the code below costs tokens: as long again as the line took
            # at most, and never past the latency target.
            cond = lookahead_capped(cond, cur, t0 + settings.latency_target_ms / 1000)
        request = GenerationRequest(
            prompt=prompt.tokens,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            stop=model.stop,
            forced_prefix=forced,
            should_stop=lambda text: cond(text[len(forced) :]),
            slot=slot,
        )
        gen = backend.generate(request, cancel)
        text = finalize(gen.text, mode, cur, forced, grow) if gen.stop_reason != "cancelled" else ""
        choice = _Choice(text)
        if gen.stop_reason != "cancelled":
            t3 = time.perf_counter()
            choice = self._choose(model, req, mode, cur, cancel, request, gen, text, t0)
            choice.ms = (time.perf_counter() - t3) * 1000
            if kind == "full":
                self._full_ready[req.uri] = time.monotonic()
                self.stats.full_prompts += 1
            else:
                self.stats.quick_prompts += 1
            if self._speed.observe(self.perf, gen.evaluated_tokens, gen.prompt_ms):
                logger.info("prompt evaluation is much slower than measured; measuring again when idle")
                self._measure_due = True
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
    ) -> _Choice:
        """The validity gate, other candidates and the confidence bar, on the greedy
        generation ``gen`` (cleaned: ``text``).  With all three off, ``text`` as it is."""
        settings = self.settings
        opts = ChoiceOptions(
            gate=settings.validity_gate,
            candidates=settings.candidates,
            min_confidence=settings.min_confidence,
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
    def warm(self, req: CompletionRequest, cursor_known: bool = True) -> None:
        """Evaluate what a request at ``req`` will need before it is asked (on open, on a
        cursor move, after a quick answer).  Cancelled by any real request."""
        if not self.settings.warmup or not self.settings.enabled or self._closed:
            return
        self._warm.put(WarmTarget(req.uri, req, cursor_known))
        self._yield_to_newer()

    def _speculate(self, req: CompletionRequest, text: str) -> None:
        """Prepare the suggestion that follows ``text`` once it is accepted."""
        if not text or not self.settings.warmup or not self.settings.cache_completions:
            return
        accepted = CompletionRequest(
            uri=req.uri,
            text=req.text[: req.offset] + text + req.text[req.offset :],
            offset=req.offset + len(text),
            path=req.path,
            language_id=req.language_id,
            syntax=None,
            repo_name=req.repo_name,
        )
        self._warm.put(WarmTarget(req.uri, accepted, True, speculative=True))
        self._yield_to_newer()

    def _yield_to_newer(self) -> None:
        """Newer idle-time work goes first: the running job stops at its next batch (what
        it evaluated is kept) and is queued again behind it."""
        if self._warming is not None:
            self._preempt.set()
        self._kick()

    def forget(self, uri: str) -> None:
        """A document was closed: drop its pending idle-time work (its KV state stays in
        the LRU, for when it is opened again)."""
        self._warm.drop(uri)
        self._warm_failed.discard(uri)
        self._last.pop(uri, None)
        self._full_ready.pop(uri, None)
        for kind in ("full", "quick"):
            self._starts.pop((uri, kind), None)

    def _begin_foreground(self) -> None:
        self._foreground += 1
        self._preempt.set()

    def _end_foreground(self) -> None:
        self._foreground = max(0, self._foreground - 1)
        self._last_foreground = time.monotonic()
        if not self._foreground:
            self._kick()

    def _kick(self) -> None:
        if self._closed or not self.settings.warmup or self._model is None:
            return
        if not len(self._warm) and not self._measure_due:
            return
        if self._bg_task is not None and not self._bg_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._bg_task = loop.create_task(self._background())

    async def _background(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0)  # a request being scheduled goes first
            model = self._model
            if self._foreground or self._closed or model is None or not self.settings.warmup:
                return
            quiet = IDLE_AFTER_REQUEST_S - (time.monotonic() - self._last_foreground)
            if quiet > 0:
                await asyncio.sleep(quiet)
                continue
            if self._measure_due:
                self._measure_due = False
                self._preempt.clear()
                await loop.run_in_executor(self._executor, self._remeasure, model)
                continue
            target = self._warm.pop()
            if target is None:
                return
            self._preempt.clear()
            self._warming = target.uri
            try:
                outcome = await loop.run_in_executor(self._executor, self._warm_job, model, target, self._preempt)
            except Exception:
                logger.exception("idle-time work for %s failed", target.uri)
                outcome = "failed"
                self._warm_failed.add(target.uri)
            finally:
                self._warming = None
            if outcome == "preempted":
                self.stats.warm_preempted += 1
                self._warm.requeue(target)

    def _remeasure(self, model: LoadedModel) -> None:
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

    def _warm_job(self, model: LoadedModel, target: WarmTarget, preempt: threading.Event) -> str:
        """One piece of idle-time work on the model thread: "done" or "preempted"."""
        if model is not self._model or preempt.is_set():
            return "preempted"
        backend = model.backend
        req = target.request
        cur = CursorText.from_prefix_suffix(req.text[max(0, req.offset - 8192) : req.offset], req.text[req.offset : req.offset + 8192])
        mode = decide_mode(cur, req.syntax) if target.cursor_known else Mode.NONE
        key = self._cache_key(req, mode)
        self.stats.warm_jobs += 1

        full: tuple[Prompt, float] | None = None

        def answer() -> str:
            """Compute the suggestion at the cursor and keep it for when it is asked."""
            result = self._run(model, req, mode, cur, preempt, full)
            if result.stop_reason == "cancelled":
                return "preempted"
            self._cache_put(key, _CacheEntry(result.text, result.prompt_kind, time.monotonic(), True, result.prompt_tokens))
            return "done"

        if target.speculative:
            if mode is Mode.NONE or self._cache_get(key, req.uri) is not None:
                return "done"
            return answer()
        prefill = getattr(backend, "prefill", None)
        if prefill is None:
            return "done"
        full = self._full_prompt(model, req)
        prompt = full[0]
        slot = f"full:{req.uri}"
        if not prompt.tokens:
            self._full_ready[req.uri] = time.monotonic()
            return "done"
        cost = backend.eval_cost(prompt.tokens, slot)  # type: ignore[attr-defined]
        if mode is not Mode.NONE and self._needs_quick(model, prompt, req.uri):
            # Cursor region first: a quick answer while the full prompt is evaluated.
            entry = self._cache_get(key, req.uri)
            if entry is None and answer() == "preempted":
                return "preempted"
        if cost > 0:
            res = prefill(prompt.tokens, slot, preempt, prefill_batch(self.perf))
            self.stats.warm_tokens += res.evaluated
            if not res.complete:
                return "preempted"
        self._full_ready[req.uri] = time.monotonic()
        if mode is not Mode.NONE:
            entry = self._cache_get(key, req.uri)
            if entry is None or entry.kind != "full":
                return answer()
        return "done"

    async def settle(self, timeout_s: float = 60.0) -> bool:
        """Wait until idle-time work is done (for tests, benchmarks and the CLI); False on
        timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self._bg_task
            if (task is None or task.done()) and not len(self._warm) and not self._measure_due:
                return True
            if task is None or task.done():
                self._kick()
                if self._bg_task is None or self._bg_task.done():
                    return True  # nothing can run (warm-up off, no model)
            await asyncio.sleep(0.01)
        return False

    # ---------------------------------------------------------------- status
    def document_state(self, uri: str) -> str:
        """"warming" while idle-time work for ``uri`` is pending or running, "ready" once
        its full prompt has been evaluated, "failed" when that work raised, else "cold"."""
        if self._warming == uri or self._warm.has(uri):
            return "warming"
        if uri in self._full_ready:
            return "ready"
        return "failed" if uri in self._warm_failed else "cold"

    def session_status(self) -> dict[str, object]:
        model = self._model
        store = getattr(model.backend, "kv_store", None) if model is not None else None
        return {
            "perf": self.perf.as_dict() if self.perf else None,
            "affordablePromptTokens": self.affordable_tokens() if self.perf else None,
            "threads": getattr(model.backend, "n_threads", None) if model is not None else None,
            "kvCache": {
                "bytes": store.nbytes,
                "maxBytes": store.max_bytes,
                "slots": [{"slot": k, "tokens": n} for k, n in store.slots().items()],
                "evicted": store.evicted,
            }
            if store is not None
            else None,
            "pendingWarm": len(self._warm),
            "warming": self._warming,
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
            return await loop.run_in_executor(self._executor, fn, model)
        finally:
            self._end_foreground()

    def shutdown(self) -> None:
        """Stop generation, wait for the worker, then free the model.

        The model must not be closed under a running generation (llama.cpp would crash):
        the cancel flags stop it between tokens, and the worker is joined first.
        """
        self._closed = True
        self._warm.clear()
        self._preempt.set()
        for event in self._inflight.values():
            event.set()
        if self._bg_task is not None:
            self._bg_task.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
        model, self._model = self._model, None
        if model is not None:
            try:
                model.backend.close()
            except Exception:
                logger.debug("closing model failed", exc_info=True)
