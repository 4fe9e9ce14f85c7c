"""What the completion engine takes and gives: a request, its result, and the records the
engine and its idle-time work (``engine/progressive.py``) share: the last suggestion shown
per document, cached suggestions, counters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lsp_server.context.parser import SyntaxHint
from lsp_server.engine.postprocess import Mode
from lsp_server.families.completion import ContextChunk


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
    # document whose full prompt is still being evaluated; "context": a short one after all
    # of the full prompt's retrieved context, evaluated first (see engine/progressive.py).
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
class LastResult:
    prefix: str
    line_suffix: str
    text: str
    kind: str = ""  # the prompt it came from ("quick" and "context" ones expire once the full prompt is ready)
    at: float = 0.0
    upgraded: bool = False  # the client was told that a fuller prompt's suggestion differs


@dataclass
class CacheEntry:
    text: str
    kind: str  # the prompt it came from: "full", "context" or "quick" (CompletionResult.prompt_kind)
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
    upgrades: int = 0  # clients told to ask again: the full prompt's suggestion differs

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
            "upgrades": self.upgrades,
        }
