"""The one interface every model backend implements.

The engine talks to a model only through :class:`Backend`.  All methods are called from
the engine's single model worker thread, so an implementation needs no locking of its own;
``generate`` must check ``cancel`` between tokens and return promptly once it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class BackendError(RuntimeError):
    """A model could not be loaded or run.  The message is shown to the user as is."""


class ModelFileError(BackendError):
    """The model file is missing, unreadable or not what it should be."""


@dataclass
class FimTokens:
    """Fill-in-the-middle control tokens as text (None where the model has none)."""

    prefix: str | None = None
    suffix: str | None = None
    middle: str | None = None
    eot: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return bool(self.prefix and self.suffix and self.middle)


@dataclass
class ModelInfo:
    """What the engine needs to know about a loaded model."""

    name: str
    path: str = ""
    n_ctx: int = 2048
    n_vocab: int = 0
    architecture: str = ""
    fim: FimTokens = field(default_factory=FimTokens)
    eos_token_ids: tuple[int, ...] = ()
    chat_template: str | None = None
    device: str = "cpu"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class GenerationRequest:
    """One generation.  ``prompt`` is already tokenized with the model's own tokenizer."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    stop: Sequence[str] = ()
    # Text the output must start with (token healing): generation is constrained until
    # it has produced these characters; they are NOT stripped by the backend.
    forced_prefix: str = ""
    # Called with the text generated so far; returning True stops generation (used for
    # syntax-aware stops such as "the block ended").
    should_stop: Callable[[str], bool] | None = None
    # Called after each token with the text, the log-probabilities and the token ends so
    # far; True stops generation with stop_reason "unsure": what is written can no longer
    # be shown (engine/candidates.py ``give_up_rule``).  Backends that cannot score tokens
    # ignore it.
    give_up: Callable[[str, Sequence[float], Sequence[int]], bool] | None = None
    seed: int = 0
    # Which KV state to use (a document's, see backends/kv_store.py); backends that keep
    # one state, or none, ignore it.
    slot: str = ""


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose KV cache was reused from the previous call
    prompt_ms: float
    generate_ms: float
    stop_reason: str  # "stop", "length", "cancelled", "eos", "condition", "unsure"
    evaluated_tokens: int = -1  # prompt tokens evaluated (-1: the backend does not say)
    shifted_tokens: int = 0  # reused tokens that were moved to new positions
    # Per generated token: its log-probability (temperature 1, no mask) and the character
    # offset in ``text`` where it ends (empty: the backend does not say).
    logprobs: list[float] = field(default_factory=list)
    token_ends: list[int] = field(default_factory=list)
    # For the first steps, the most likely tokens there: [(token, log-probability)], best
    # first (engine/candidates.py branches from them).
    top: list[list[tuple[int, float]]] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """A loaded model.  Created by :func:`lsp_server.backends.load_backend`."""

    info: ModelInfo

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Tokens of ``text`` (no BOS); ``special`` parses control-token text as such."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def bos_tokens(self) -> list[int]:
        """Tokens to start every prompt with (BOS where the model wants one)."""
        ...

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        """Generate from ``request.prompt``, reusing the KV cache for the longest common
        prefix with the previous call.  Checks ``cancel`` between tokens."""
        ...

    def close(self) -> None: ...
