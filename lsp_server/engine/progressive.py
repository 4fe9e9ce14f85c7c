"""Progressive context: the quick/full decision, idle-time work, and upgrades.

A request in a document whose full prompt would cost more than the latency target affords
is answered from a *quick* prompt (the cursor region); the full prompt is then evaluated
in idle time (:class:`IdleWork`, on the model thread, preempted by any request).  When
the full prompt's suggestion for the cursor the user still sits at differs from the quick
one that was shown (or hidden), the engine's ``on_upgrade`` callback tells the client to
ask again (:func:`upgrade_due`), so that the better suggestion replaces the quick one
before the user acts.

The engine is reached through :class:`Host` (this module does not import the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Protocol

import numpy as np

from lsp_server.config import Settings
from lsp_server.engine.model import LoadedModel
from lsp_server.engine.postprocess import CursorText, Mode, decide_mode
from lsp_server.engine.prompt import Prompt, PromptBudget
from lsp_server.engine.requests import CacheEntry, CompletionRequest, CompletionResult, LastResult, SessionStats
from lsp_server.engine.session import Perf, WarmQueue, WarmTarget, prefill_batch
from lsp_server.families.completion import ContextChunk

logger = logging.getLogger(__name__)

# The quick prompt of a cold document starts on every 4th line (the full one on every 16th).
QUICK_LINE_QUANTUM = 4
# A quick prompt only when the full one costs more than this many times what the latency
# target affords: for a small file, a little over the target beats a prompt of 4 lines.
QUICK_MIN_SAVING = 2.0
# A quick prompt reads the retrieved context the full prompt's slot holds evaluated when
# what is left to evaluate exceeds the cursor region alone by at most 1/this.
QUICK_CONTEXT_OVERRUN = 8
# A quick prompt also reads the full prompt's usage lines (the file's own lines that use
# its imported names) in up to this share of its cursor region's tokens, on top of them.
QUICK_USAGE_SHARE = 1.0
# Idle-time work starts this long after the last request ended: keystrokes come closer
# together while the user types, and each would otherwise wait for a slice of work to end.
IDLE_AFTER_REQUEST_S = 0.15


def needs_quick(full_cost: int, affordable: int) -> bool:
    """Whether a full prompt that costs ``full_cost`` tokens to evaluate is answered from a
    quick prompt instead (``affordable``: what the latency target allows)."""
    return full_cost > affordable * QUICK_MIN_SAVING


def quick_usage_tokens(tokens: int) -> int:
    """Tokens a quick prompt of ``tokens`` (its cursor region) may give to usage lines."""
    return int(tokens * QUICK_USAGE_SHARE)


def quick_budget(full: PromptBudget, tokens: int) -> PromptBudget:
    """The budget of a quick prompt of about ``tokens`` tokens, within the full one's."""
    total = max(16, min(full.total, tokens))
    return PromptBudget(
        total=total,
        suffix_max=min(full.suffix_max, max(8, tokens // 4)),
        line_quantum=QUICK_LINE_QUANTUM,
        slack=min(total // 2, full.total - total),
    )


# The KV slot of the workspace's likely context (IdleWork.workspace_job).
WORKSPACE_SLOT = "workspace:"
# Characters per token assumed when candidates for the likely context are read off the
# model thread: low on purpose (code is 3-4 for the seed families' tokenizers), so that
# more is read than fits and the model's tokens choose.
CHARS_PER_TOKEN_GUESS = 8
# A chunk is looked for in a kept state by its tokens less the first and last (they may
# merge with what surrounds it); shorter ones are not looked for.
SEED_MIN_CHUNK_TOKENS = 8


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where ``needle`` first occurs in ``haystack``, or -1."""
    n = len(needle)
    for i in np.flatnonzero(haystack[: max(0, len(haystack) - n + 1)] == needle[0]):
        if np.array_equal(haystack[i : i + n], needle):
            return int(i)
    return -1


def seeded_order(
    states: dict[str, np.ndarray], chunks: Sequence[ContextChunk], tokenize: Callable[[str], list[int]]
) -> list[ContextChunk]:
    """Of ``chunks`` (a full prompt's retrieved context), those that one kept KV state
    holds evaluated (the state that holds most of their tokens), in the order it holds
    them: a quick prompt that lists them so reuses them by shifting (``kv_store.plan_reuse``
    keeps runs in cache order) instead of evaluating them."""
    needles = [np.asarray(tokenize(c.text)[1:-1], dtype=np.int64) for c in chunks]
    best: list[ContextChunk] = []
    best_n = 0
    for tokens in states.values():
        hay = np.asarray(tokens, dtype=np.int64)
        found = []
        for i, needle in enumerate(needles):
            if len(needle) >= SEED_MIN_CHUNK_TOKENS:
                pos = _find(hay, needle)
                if pos >= 0:
                    found.append((pos, i))
        n = sum(len(needles[i]) for _, i in found)
        if n > best_n:
            best, best_n = [chunks[i] for _, i in sorted(found)], n
    return best


# How much of the document's prompt a suggestion's prompt kind read (CompletionResult.prompt_kind).
PROMPT_RANK = {"quick": 0, "context": 1, "full": 2}


def upgrade_due(shown: LastResult | None, req: CompletionRequest, line_suffix: str, result: CompletionResult) -> bool:
    """Whether ``result`` (computed in idle time from a fuller prompt: the full one, or the
    quick one after the retrieved context) should replace what the client shows at
    ``req``'s cursor: the shown suggestion came from a lesser prompt (or was hidden
    there), the cursor and the rest of its line are unchanged since, and the suggestion
    differs."""
    if shown is None or shown.upgraded or result.prompt_kind not in PROMPT_RANK:
        return False
    if PROMPT_RANK.get(shown.kind, 2) >= PROMPT_RANK[result.prompt_kind]:
        return False
    if result.stop_reason == "cancelled" or shown.line_suffix != line_suffix:
        return False
    if shown.prefix != req.text[: req.offset]:
        return False
    return result.text != shown.text


class Host(Protocol):
    """What the idle-time work needs of the engine (``engine/engine.py``)."""

    settings: Settings
    perf: Perf | None
    stats: SessionStats
    foreground: int
    last_foreground: float
    closed: bool
    on_upgrade: Callable[[CompletionRequest], None] | None

    @property
    def model(self) -> LoadedModel | None: ...

    @property
    def executor(self) -> Executor: ...

    def run(
        self,
        model: LoadedModel,
        req: CompletionRequest,
        mode: Mode,
        cur: CursorText,
        cancel: threading.Event,
        full: tuple[Prompt, float] | None = None,
        idle: bool = False,
    ) -> CompletionResult: ...

    def full_prompt(self, model: LoadedModel, req: CompletionRequest) -> tuple[Prompt, float]: ...

    def needs_quick(self, model: LoadedModel, full: Prompt, uri: str) -> bool: ...

    def context_head(self, model: LoadedModel, req: CompletionRequest, full: Prompt) -> list[int]: ...

    def cache_key(self, req: CompletionRequest, mode: Mode) -> tuple[object, ...]: ...

    def cache_get(self, key: tuple[object, ...], uri: str) -> CacheEntry | None: ...

    def cache_put(self, key: tuple[object, ...], entry: CacheEntry) -> None: ...

    def shown(self, uri: str) -> LastResult | None: ...

    def remeasure(self, model: LoadedModel) -> None: ...

    def workspace_chunks(self, model: LoadedModel) -> tuple[list[ContextChunk], int] | None: ...

    def workspace_prompt(self, model: LoadedModel, got: tuple[list[ContextChunk], int]) -> tuple[list[int], int, int]: ...


class IdleWork:
    """Work for idle time on the model thread: a document's full prompt (on open, on a
    cursor move, after a quick answer) and the suggestion after an accepted one.  A
    request sets ``preempt``; the running job stops at its next batch (what it evaluated
    is kept) and is queued again."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.queue = WarmQueue()
        self.preempt = threading.Event()  # set while a request wants the model thread
        self.measure_due = False
        self.warming: str | None = None
        self.full_ready: dict[str, float] = {}  # uri -> when its full prompt was last evaluated
        self.failed: set[str] = set()  # idle-time work raised (reported, not retried)
        # The workspace's likely context: evaluated once the model is loaded and the index
        # built (each sets ``workspace_due``), when nothing else is queued.
        self.workspace_due = False
        self.workspace: dict[str, object] = {"state": "none", "tokens": 0, "chunks": 0}
        self._task: asyncio.Task[None] | None = None
        self._upgrades: list[CompletionRequest] = []  # found on the model thread, sent from the loop
        self._upgrades_lock = threading.Lock()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ queue
    def warm(self, req: CompletionRequest, cursor_known: bool = True) -> None:
        """Evaluate what a request at ``req`` will need before it is asked (on open, on a
        cursor move, after a quick answer).  Cancelled by any real request."""
        settings = self.host.settings
        if not settings.warmup or not settings.enabled or self.host.closed:
            return
        self.queue.put(WarmTarget(req.uri, req, cursor_known))
        self._yield_to_newer()

    def speculate(self, req: CompletionRequest, text: str) -> None:
        """Prepare the suggestion that follows ``text`` once it is accepted."""
        settings = self.host.settings
        if not text or not settings.warmup or not settings.cache_completions:
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
        self.queue.put(WarmTarget(req.uri, accepted, True, speculative=True))
        self._yield_to_newer()

    def _yield_to_newer(self) -> None:
        """Newer idle-time work goes first: the running job stops at its next batch (what
        it evaluated is kept) and is queued again behind it."""
        if self.warming is not None:
            self.preempt.set()
        self.kick()

    def forget(self, uri: str) -> None:
        self.queue.drop(uri)
        self.failed.discard(uri)
        self.full_ready.pop(uri, None)

    def clear(self) -> None:
        self.queue.clear()
        self.preempt.set()

    def outdated(self, uri: str, kind: str, at: float) -> bool:
        """Whether a suggestion of prompt ``kind`` made at ``at`` is superseded: a quick
        (or context) prompt's, once the document's full prompt has been evaluated since."""
        return kind in ("quick", "context") and self.full_ready.get(uri, -1.0) > at

    def document_state(self, uri: str) -> str:
        """"warming" while idle-time work for ``uri`` is pending or running, "ready" once
        its full prompt has been evaluated, "failed" when that work raised, else "cold"."""
        if self.warming == uri or self.queue.has(uri):
            return "warming"
        if uri in self.full_ready:
            return "ready"
        return "failed" if uri in self.failed else "cold"

    # ------------------------------------------------------------------- loop
    def kick(self) -> None:
        host = self.host
        if host.closed or not host.settings.warmup or host.model is None:
            return
        if not len(self.queue) and not self.measure_due and not self.workspace_due:
            return
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._loop())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        host = self.host
        loop = self._event_loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0)  # a request being scheduled goes first
            model = host.model
            if host.foreground or host.closed or model is None or not host.settings.warmup:
                return
            quiet = IDLE_AFTER_REQUEST_S - (time.monotonic() - host.last_foreground)
            if quiet > 0:
                await asyncio.sleep(quiet)
                continue
            if self.measure_due:
                self.measure_due = False
                self.preempt.clear()
                await loop.run_in_executor(host.executor, host.remeasure, model)
                continue
            target = self.queue.pop()
            if target is None:
                if not self.workspace_due:
                    return
                self.preempt.clear()
                try:
                    # Reading the index (up to LIKELY_SCAN_S on a large workspace) runs off
                    # the model thread, so that a request never waits behind it.
                    got = await loop.run_in_executor(None, host.workspace_chunks, model)
                    outcome = await loop.run_in_executor(host.executor, self.workspace_job, model, got, self.preempt)
                except Exception:
                    logger.exception("evaluating the workspace's likely context failed")
                    outcome, self.workspace_due = "failed", False
                    self.workspace["state"] = "failed"
                if outcome == "preempted":
                    host.stats.warm_preempted += 1
                continue
            self.preempt.clear()
            self.warming = target.uri
            try:
                outcome = await loop.run_in_executor(host.executor, self._job, model, target, self.preempt)
            except Exception:
                logger.exception("idle-time work for %s failed", target.uri)
                outcome = "failed"
                self.failed.add(target.uri)
            finally:
                self.warming = None
            self._send_upgrades()
            if outcome == "preempted":
                host.stats.warm_preempted += 1
                self.queue.requeue(target)

    async def settle(self, timeout_s: float = 60.0) -> bool:
        """Wait until idle-time work is done (for tests, benchmarks and the CLI); False on
        timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self._task
            if (task is None or task.done()) and not len(self.queue) and not self.measure_due and not self.workspace_due:
                return True
            if task is None or task.done():
                self.kick()
                if self._task is None or self._task.done():
                    return True  # nothing can run (warm-up off, no model)
            await asyncio.sleep(0.01)
        return False

    # -------------------------------------------------------------------- job
    def workspace_job(
        self, model: LoadedModel, got: tuple[list[ContextChunk], int] | None, preempt: threading.Event
    ) -> str:
        """Evaluate the workspace's likely context (``got``: ``Host.workspace_chunks``, read
        off this thread) into its own slot (on the model thread): a document opened later
        starts from this state (``kv_store.best_seed``) and its first prompt lists the
        chunks it holds (``seeded_order``).  "done" or "preempted"."""
        host = self.host
        prefill = getattr(model.backend, "prefill", None)
        if model is not host.model or preempt.is_set():
            return "preempted"
        if got is None or prefill is None:  # no index yet (its build sets workspace_due again), or off
            self.workspace_due = False
            return "done"
        tokens, chunks, generation = host.workspace_prompt(model, got)
        self.workspace.update(state="warming", chunks=chunks, generation=generation)
        if chunks:
            res = prefill(tokens, WORKSPACE_SLOT, preempt, prefill_batch(host.perf))
            host.stats.warm_tokens += res.evaluated
            if not res.complete:
                return "preempted"
        self.workspace.update(state="ready", tokens=len(tokens) if chunks else 0)
        self.workspace_due = False
        return "done"

    def _job(self, model: LoadedModel, target: WarmTarget, preempt: threading.Event) -> str:
        """One piece of idle-time work on the model thread: "done" or "preempted"."""
        host = self.host
        if model is not host.model or preempt.is_set():
            return "preempted"
        backend = model.backend
        req = target.request
        cur = CursorText.from_prefix_suffix(req.text[max(0, req.offset - 8192) : req.offset], req.text[req.offset : req.offset + 8192])
        mode = decide_mode(cur, req.syntax) if target.cursor_known else Mode.NONE
        key = host.cache_key(req, mode)
        host.stats.warm_jobs += 1

        full: tuple[Prompt, float] | None = None

        def answer() -> str:
            """Compute the suggestion at the cursor and keep it for when it is asked."""
            result = host.run(model, req, mode, cur, preempt, full, idle=True)
            if result.stop_reason == "cancelled":
                return "preempted"
            host.cache_put(key, CacheEntry(result.text, result.prompt_kind, time.monotonic(), True, result.prompt_tokens))
            if not target.speculative:
                self._upgrade(req, cur, result)
            return "done"

        if target.speculative:
            if mode is Mode.NONE or host.cache_get(key, req.uri) is not None:
                return "done"
            return answer()
        prefill = getattr(backend, "prefill", None)
        if prefill is None:
            return "done"
        full = host.full_prompt(model, req)
        prompt = full[0]
        slot = f"full:{req.uri}"
        if not prompt.tokens:
            self.full_ready[req.uri] = time.monotonic()
            return "done"
        cost = backend.eval_cost(prompt.tokens, slot)  # type: ignore[attr-defined]
        if mode is not Mode.NONE and host.needs_quick(model, prompt, req.uri):
            # A quick answer before the full prompt is evaluated: its retrieved context
            # first (the quick prompt reads what of it is evaluated, see Engine.quick),
            # then the answer; one given at once from the cursor region alone is computed
            # again this way, and replaces it on the client when it differs.
            entry = host.cache_get(key, req.uri)
            if entry is None or entry.kind == "quick":
                head = host.context_head(model, req, prompt)
                if head and backend.eval_cost(head, slot) > 0:  # type: ignore[attr-defined]
                    res = prefill(head, slot, preempt, prefill_batch(host.perf))
                    host.stats.warm_tokens += res.evaluated
                    if not res.complete:
                        return "preempted"
                if (entry is None or head) and answer() == "preempted":
                    return "preempted"
        if cost > 0:
            res = prefill(prompt.tokens, slot, preempt, prefill_batch(host.perf))
            host.stats.warm_tokens += res.evaluated
            if not res.complete:
                return "preempted"
        self.full_ready[req.uri] = time.monotonic()
        if mode is not Mode.NONE:
            entry = host.cache_get(key, req.uri)
            if entry is None or entry.kind != "full":
                return answer()
        return "done"

    def _upgrade(self, req: CompletionRequest, cur: CursorText, result: CompletionResult) -> None:
        """Tell the client when the full prompt's suggestion should replace a quick one it
        shows (or hid) at the cursor the user is still at."""
        host = self.host
        shown = host.shown(req.uri)
        if not upgrade_due(shown, req, cur.line_suffix, result) or host.on_upgrade is None:
            return
        assert shown is not None
        shown.upgraded = True  # once: the client asks again and gets this suggestion
        host.stats.upgrades += 1
        with self._upgrades_lock:
            self._upgrades.append(req)
        if self._event_loop is not None:  # now, not when the job (a long prefill) ends
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is exiting
                self._event_loop.call_soon_threadsafe(self._send_upgrades)

    def _send_upgrades(self) -> None:
        """Call ``on_upgrade`` for what the last job found (on the event loop's thread)."""
        with self._upgrades_lock:
            found, self._upgrades = self._upgrades, []
        callback = self.host.on_upgrade
        for req in found:
            if callback is None:
                return
            try:
                callback(req)
            except Exception:
                logger.debug("upgrade callback failed", exc_info=True)
