"""The completion engine: trigger decision, latest-wins, prompt, generation, cleanup.

Pure logic on plain dataclasses: no pygls, no file IO.  The model runs on one worker
thread (a thread cannot be killed, so generation checks a cancel flag between tokens); the
asyncio side only waits on it, so ``$/cancelRequest`` and a newer keystroke stop it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from lsp_server.backends import BackendError, GenerationRequest
from lsp_server.config import Settings
from lsp_server.context.parser import SyntaxHint
from lsp_server.engine.model import LoadedModel
from lsp_server.engine.postprocess import CursorText, Mode, decide_mode, finalize, stop_condition
from lsp_server.engine.prompt import PromptBudget, PromptBuilder
from lsp_server.families.completion import ContextChunk

logger = logging.getLogger(__name__)

CACHE_SIZE = 256
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
            "timingsMs": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


@dataclass
class _LastResult:
    prefix: str
    line_suffix: str
    text: str


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
        self._inflight: dict[str, threading.Event] = {}
        self._cache: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._last: dict[str, _LastResult] = {}
        self.on_model_state: Callable[[str, str], None] | None = None  # (state, detail)

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
        self._cache.clear()
        self._last.clear()
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
        return self._loader(settings)

    async def ensure_model(self) -> LoadedModel:
        """The loaded model for the current settings (loading it on the worker thread)."""
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:
            key = self.settings.model_settings()
            if self._model is not None and self._model_key == key:
                return self._model
            if self._model_key == key and self._model_error is not None:
                raise ModelUnavailable(self._model_error)
            settings = self.settings
            self._state("loading", settings.model)
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self._executor, self._load_blocking, settings)
            except Exception as exc:  # any failure is a clear message, never a crash
                self._model_key = key
                self._model_error = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
                logger.error("model %s failed to load: %s", settings.model, self._model_error)
                self._state("error", self._model_error)
                raise ModelUnavailable(self._model_error) from exc
            self._model, self._model_key, self._model_error = model, key, None
            self._cache.clear()
            self._state("ready", model.description)
            return model

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
        if req.offset < len(last.prefix) or cur.line_suffix != last.line_suffix:
            return None
        if req.text[: len(last.prefix)] != last.prefix:
            return None
        typed = req.text[len(last.prefix) : req.offset]
        if not typed or "\n" in typed or not last.text.startswith(typed) or len(typed) >= len(last.text):
            return None
        return last.text[len(typed) :]

    async def complete(self, req: CompletionRequest) -> CompletionResult | None:
        """One completion, or None when superseded/cancelled or there is nothing to add."""
        t_start = time.perf_counter()
        settings = self.settings
        if not settings.enabled:
            return None
        cur = CursorText.from_prefix_suffix(req.text[max(0, req.offset - 8192) : req.offset], req.text[req.offset : req.offset + 8192])
        mode = decide_mode(cur, req.syntax)
        if mode is Mode.NONE:
            return CompletionResult(text="", mode=mode, stop_reason="not-here")

        if settings.cache_completions:
            rest = self._type_through(req, cur)
            if rest is not None:
                return CompletionResult(text=rest, mode=mode, cached=True, stop_reason="type-through",
                                        timings_ms={"total": (time.perf_counter() - t_start) * 1000})
        key = (self._model_key, mode, settings.workspace_context, req.text[max(0, req.offset - 4096) : req.offset], req.text[req.offset : req.offset + 1024])
        if settings.cache_completions and key in self._cache:
            self._cache.move_to_end(key)
            text = self._cache[key]
            self._remember(req, cur, text)
            return CompletionResult(text=text, mode=mode, cached=True, stop_reason="cache",
                                    timings_ms={"total": (time.perf_counter() - t_start) * 1000})

        # Latest wins: a newer request for this document cancels the older one.
        self.cancel(req.uri)
        cancel = threading.Event()
        self._inflight[req.uri] = cancel
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
        if result is None:
            return None
        result.timings_ms["total"] = (time.perf_counter() - t_start) * 1000
        if result.stop_reason != "cancelled":
            self._cache[key] = result.text
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            self._remember(req, cur, result.text)
        elif cancel.is_set():
            return None
        return result

    def _remember(self, req: CompletionRequest, cur: CursorText, text: str) -> None:
        if text:
            self._last[req.uri] = _LastResult(prefix=req.text[: req.offset], line_suffix=cur.line_suffix, text=text)
        else:
            self._last.pop(req.uri, None)

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
        settings = self.settings
        backend = model.backend
        info = backend.info
        # Hardware-sized suffix: on a CPU every suffix token is re-evaluated per keystroke.
        suffix_max = 64 if info.device == "cpu" else 256
        budget = PromptBudget.for_model(info.n_ctx, settings.context_tokens, settings.max_tokens, suffix_max=suffix_max)
        chunks: Sequence[ContextChunk] = ()
        if settings.workspace_context and self.context is not None:
            try:
                chunks = self.context.retrieve(
                    req, int(budget.total * budget.context_share), lambda s: len(backend.tokenize(s))
                )
            except Exception:
                logger.exception("context retrieval failed for %s; completing without it", req.uri)
                chunks = ()
        t1 = time.perf_counter()
        builder = PromptBuilder(backend, model.template)
        prompt = builder.build(req.prefix, req.suffix, budget, chunks, req.path, req.repo_name)
        t2 = time.perf_counter()
        forced = prompt.forced_prefix
        cond = stop_condition(mode, cur)
        gen = backend.generate(
            GenerationRequest(
                prompt=prompt.tokens,
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                stop=model.stop,
                forced_prefix=forced,
                should_stop=lambda text: cond(text[len(forced) :]),
            ),
            cancel,
        )
        text = finalize(gen.text, mode, cur, forced) if gen.stop_reason != "cancelled" else ""
        return CompletionResult(
            text=text,
            mode=mode,
            prompt_tokens=prompt.n_tokens,
            reused_tokens=gen.reused_tokens,
            context_tokens=prompt.n_context_tokens,
            context_chunks=len(prompt.chunks_used),
            generated_tokens=len(gen.tokens),
            stop_reason=gen.stop_reason,
            raw=gen.text,
            timings_ms={
                "queue": (t0 - t_queued) * 1000,
                "context": (t1 - t0) * 1000,
                "prompt_build": (t2 - t1) * 1000,
                "prompt_eval": gen.prompt_ms,
                "generate": gen.generate_ms,
            },
        )

    async def run_exclusive(self, fn: Callable[[LoadedModel], T]) -> T:
        """Run ``fn(model)`` on the model worker thread, after any queued generation.

        For work other than completions (code actions): the model is never used by two
        jobs at once.  ``fn`` must check its own cancel flag between tokens.
        """
        model = await self.ensure_model()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, model)

    def shutdown(self) -> None:
        """Stop generation, wait for the worker, then free the model.

        The model must not be closed under a running generation (llama.cpp would crash):
        the cancel flags stop it between tokens, and the worker is joined first.
        """
        for event in self._inflight.values():
            event.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        model, self._model = self._model, None
        if model is not None:
            try:
                model.backend.close()
            except Exception:
                logger.debug("closing model failed", exc_info=True)
