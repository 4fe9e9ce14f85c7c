"""Session latency: what the engine needs to answer the first request in a file quickly
and to have the next request's prompt evaluated before it is asked.

- :class:`Perf` — the model's measured speed on this machine (prompt tokens/s, ms per
  generated token, the thread count that gave them), measured when the model loads,
  cached per model, backend and machine, and measured again when the speed seen on real
  requests drops (another process took the cores).
- :func:`affordable_prompt_tokens` — how many prompt tokens a request may evaluate and
  still answer within ``latencyTargetMs``: the size of the *quick* prompt of a cold
  document, and the test of whether a document's full prompt is ready enough to use.
- :class:`WarmQueue` — work for idle time, newest first: a document's full prompt to
  evaluate (on open, on a cursor move, after a quick answer), and the suggestion that
  follows an accepted one (speculation).  The engine runs it on the model thread between
  requests; a request always preempts it.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

# A prompt of ordinary code for measuring speed (tokenized with the model's tokenizer).
_SAMPLE = '''def parse_header(line: str) -> tuple[str, str]:
    """Split an HTTP header line into its name and value."""
    name, _, value = line.partition(":")
    if not name or name != name.strip():
        raise ValueError(f"bad header line: {line!r}")
    return name.lower(), value.strip()


class Headers(dict):
    def add(self, line):
        key, value = parse_header(line)
        self[key] = value
'''
# Prompt evaluation gets slower as the context fills (attention over more cells): the
# speed measured on a short sample is discounted by this factor when a budget is set.
DEPTH_DISCOUNT = 0.75
MIN_QUICK_TOKENS = 48
# Per-request overhead outside the model (tokenizing, retrieval, the protocol), in ms.
OVERHEAD_MS = 40.0
# Re-measure when requests see less than this share of the measured prompt speed ...
SLOWDOWN_RATIO = 0.5
# ... on this many requests in a row, at most once in this many seconds.
SLOWDOWN_COUNT = 3
REMEASURE_INTERVAL_S = 120.0
# More threads must be at least this much faster to be chosen (fewer threads leave cores
# to the editor, and spin less when another process takes a core).
THREAD_GAIN = 1.15


class MeasurableBackend(Protocol):
    def measure(self, threads: int, sample: Sequence[int], n_gen: int = ...) -> Any: ...

    def set_threads(self, threads: int, batch_threads: int = ...) -> None: ...

    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...


@dataclass
class Perf:
    """Measured speed of one model on this machine."""

    prompt_tok_s: float
    gen_ms_per_token: float
    threads: int  # for generation
    measured_at: float  # time.time()
    source: str = "measured"  # "measured" or "cached"
    candidates: str = ""  # what each thread count gave, for the log and quill/status
    batch_threads: int = 0  # for prompt evaluation (0: the same as ``threads``)

    def as_dict(self) -> dict[str, Any]:
        return {
            "promptTokensPerS": round(self.prompt_tok_s, 1),
            "genMsPerToken": round(self.gen_ms_per_token, 1),
            "threads": self.threads,
            "batchThreads": self.batch_threads or self.threads,
            "source": self.source,
            "measuredAt": self.measured_at,
            "candidates": self.candidates,
        }


def thread_candidates(setting: int, cores: int | None = None) -> list[int]:
    """Thread counts to try: the setting when it names one, else 1, half and all cores."""
    if setting > 0:
        return [setting]
    cores = max(1, cores or os.cpu_count() or 1)
    return sorted({1, max(1, cores // 2), cores})


def _fastest(results: Sequence[Any], speed: Any) -> Any:
    """The result with fewest threads unless more threads are ``THREAD_GAIN`` times faster
    by ``speed`` (larger is faster)."""
    best = results[0]
    for r in results[1:]:
        if speed(r) >= speed(best) * THREAD_GAIN:
            best = r
    return best


def calibrate(backend: MeasurableBackend, threads_setting: int) -> Perf:
    """Measure prompt and generation speed for each candidate thread count and keep the
    fastest for each (more threads only when clearly faster): prompt evaluation (batches)
    gains from more cores where generating one token at a time may not.  About a second
    on a small model."""
    sample = backend.tokenize(_SAMPLE)[:64]
    candidates = thread_candidates(threads_setting)
    backend.measure(candidates[0], sample[:8], n_gen=1)  # page the weights in
    results = [backend.measure(t, sample) for t in candidates]
    prompt = _fastest(results, lambda r: r.prompt_tok_s)
    gen = _fastest(results, lambda r: 1.0 / max(1e-6, r.gen_ms_per_token))
    backend.set_threads(gen.threads, prompt.threads)
    summary = ", ".join(
        f"{r.threads} threads {r.prompt_tok_s:.0f} tok/s {r.gen_ms_per_token:.1f} ms/token" for r in results
    )
    logger.info(
        "measured %s: prompt %.0f tok/s with %d threads, generation %.1f ms/token with %d threads (%s)",
        type(backend).__name__,
        prompt.prompt_tok_s,
        prompt.threads,
        gen.gen_ms_per_token,
        gen.threads,
        summary,
    )
    return Perf(prompt.prompt_tok_s, gen.gen_ms_per_token, gen.threads, time.time(), "measured", summary, prompt.threads)


def perf_key(backend: str, model_path: str, gpu_layers: int, threads_setting: int) -> str:
    try:
        size = os.path.getsize(model_path)
    except OSError:
        size = 0
    return "|".join(
        [backend, os.path.basename(model_path), str(size), platform.node(), str(os.cpu_count()),
         f"gpu{gpu_layers}", f"threads{threads_setting}", "batch-threads"]
    )


def _perf_file() -> Path:
    from lsp_server.registry import cache_dir

    return cache_dir() / "perf.json"


def load_perf(key: str, max_age_s: float = 7 * 86400) -> Perf | None:
    from lsp_server.registry import read_cache_json

    return perf_from_entry(read_cache_json(_perf_file()).get(key), max_age_s)


def perf_from_entry(entry: Any, max_age_s: float = 7 * 86400) -> Perf | None:
    """The figures of one ``perf.json`` entry, or None when it is malformed or too old."""
    try:
        perf = Perf(
            float(entry["prompt_tok_s"]),
            float(entry["gen_ms_per_token"]),
            int(entry["threads"]),
            float(entry["measured_at"]),
            "cached",
            str(entry.get("candidates", "")),
            int(entry.get("batch_threads", 0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if time.time() - perf.measured_at > max_age_s or perf.prompt_tok_s <= 0:
        return None
    return perf


def save_perf(key: str, perf: Perf) -> None:
    from lsp_server.registry import update_cache_json

    entry = asdict(perf)
    entry.pop("source", None)
    if not update_cache_json(_perf_file(), lambda data: data.__setitem__(key, entry)):
        logger.debug("could not save speed figures")


def affordable_prompt_tokens(perf: Perf | None, target_ms: float, expected_gen_tokens: float) -> int:
    """Prompt tokens a request may evaluate and still answer within ``target_ms``.
    Unlimited (a large number) without a target or without figures."""
    if target_ms <= 0 or perf is None or perf.prompt_tok_s <= 0:
        return 1 << 30
    gen_ms = expected_gen_tokens * perf.gen_ms_per_token
    prompt_ms = max(target_ms * 0.25, target_ms - gen_ms - OVERHEAD_MS)
    return max(MIN_QUICK_TOKENS, int(prompt_ms / 1000 * perf.prompt_tok_s * DEPTH_DISCOUNT))


def prefill_batch(perf: Perf | None, slice_ms: float = 50.0) -> int:
    """Tokens per decode in idle-time work: about ``slice_ms`` of work, so that a request
    that arrives waits at most that long for the model thread."""
    if perf is None:
        return 16
    return max(4, min(512, int(perf.prompt_tok_s * slice_ms / 1000)))


class SpeedWatch:
    """Notices when requests run much slower than measured (the cores got busy)."""

    def __init__(self) -> None:
        self._slow = 0
        self._last_measure = time.monotonic()

    def observe(self, perf: Perf | None, evaluated: int, prompt_ms: float) -> bool:
        """Record one request; True when it is time to measure again."""
        if perf is None or evaluated < 16 or prompt_ms <= 0:
            return False
        seen = evaluated / (prompt_ms / 1000)
        if seen < perf.prompt_tok_s * DEPTH_DISCOUNT * SLOWDOWN_RATIO:
            self._slow += 1
        else:
            self._slow = 0
        if self._slow >= SLOWDOWN_COUNT and time.monotonic() - self._last_measure > REMEASURE_INTERVAL_S:
            self._slow = 0
            self._last_measure = time.monotonic()
            return True
        return False

    def measured(self) -> None:
        self._last_measure = time.monotonic()


@dataclass
class WarmTarget:
    """Idle-time work for one document."""

    uri: str
    request: Any  # a CompletionRequest snapshot (kept opaque here)
    cursor_known: bool  # False: opened, cursor not reported yet (no suggestion is made)
    speculative: bool = False  # the suggestion after an accepted one
    created: float = 0.0


class WarmQueue:
    """Pending idle-time work, one entry per (document, purpose); newest first, and
    speculation before prefill (it serves the very next keystroke)."""

    LIMIT = 8
    # Documents opened without a known cursor (an editor restoring its tabs): only the
    # newest few are evaluated ahead, not every file a workspace opens.
    UNKNOWN_CURSOR_LIMIT = 2

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, bool], WarmTarget] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, target: WarmTarget) -> None:
        target.created = target.created or time.monotonic()
        with self._lock:
            key = (target.uri, target.speculative)
            self._items.pop(key, None)
            self._items[key] = target
            blind = [k for k, t in self._items.items() if not t.cursor_known]
            for k in blind[: max(0, len(blind) - self.UNKNOWN_CURSOR_LIMIT)]:
                del self._items[k]
            while len(self._items) > self.LIMIT:
                self._items.popitem(last=False)

    def pop(self) -> WarmTarget | None:
        with self._lock:
            for key in reversed(self._items):
                if key[1]:
                    return self._items.pop(key)
            if self._items:
                return self._items.popitem(last=True)[1]
            return None

    def requeue(self, target: WarmTarget) -> None:
        """Put back preempted work, behind everything queued since (it was preempted by
        newer work or by a request), unless newer work for the same purpose came in."""
        with self._lock:
            key = (target.uri, target.speculative)
            if key not in self._items:
                self._items[key] = target
                self._items.move_to_end(key, last=False)

    def drop(self, uri: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == uri]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def has(self, uri: str) -> bool:
        with self._lock:
            return any(k[0] == uri for k in self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
