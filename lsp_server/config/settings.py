"""Typed settings for the server, validated once.

Clients send settings as camelCase JSON (``initializationOptions`` or the ``quill``
section of ``workspace/didChangeConfiguration``).  :func:`parse_settings` turns that into a
:class:`Settings` value.  A bad value never raises: it is reported in the returned list of
problems and the previous (or default) value is kept, so the server stays usable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BACKENDS = ("llama_cpp", "ctransformers", "openai")
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Settings:
    """Every setting the server understands (camelCase on the wire)."""

    model: str = DEFAULT_MODEL
    backend: str = "llama_cpp"
    endpoint: str | None = None
    api_key_env: str = "QUILL_API_KEY"
    gpu_layers: int = 0
    context_tokens: int = 2048
    max_tokens: int = 64
    temperature: float = 0.0
    debounce_ms: int = 0
    workspace_context: bool = True
    request_timeout_s: float = 30.0
    threads: int = 0
    enabled: bool = True
    # Reuse earlier suggestions: the same context again, or the user typing the start of
    # the shown suggestion.  Benchmarks turn it off to measure the model path.
    cache_completions: bool = True
    # Session latency (engine/session.py).  A first suggestion in a cold document should
    # come within this many ms: the prompt is sized to the speed measured at load, and the
    # full prompt is evaluated in idle time (0: always the full prompt, as before).
    latency_target_ms: int = 1000
    # Host memory for the KV states of recently used documents, so that going back to a
    # file costs a copy rather than a prompt evaluation (0: one state, as before).
    kv_cache_mb: int = 512
    # Evaluate prompts before they are asked for: on open, on cursor moves, the suggestion
    # after an accepted one.  Always cancelled by a real request.
    warmup: bool = True
    # Tokens of the workspace's likely context (the definitions most files import) that
    # idle time evaluates once the index is built, so that the first prompt of a file just
    # opened shifts them into place instead of evaluating them (engine/progressive.py,
    # docs/latency.md; 0: off).  Needs ``warmup`` and ``kvCacheMb``.
    workspace_warm_tokens: int = 1024
    # Files never indexed, retrieved or sent (globs, on top of the built-in list of secret
    # files: .env*, private keys, credential stores; see lsp_server/context/secrets.py).
    secret_paths: tuple[str, ...] = ()
    # The workspace index holds at most this many files (its memory is about 2-4 KB a
    # file); beyond it the rest is skipped and reported as "limit" in quill/workspaceIndex.
    index_max_files: int = 50_000
    # Suggestions worth showing (engine/gate.py, engine/candidates.py).  A suggestion that
    # adds a syntax error where it is inserted is trimmed to its longest valid prefix,
    # replaced by another candidate, or dropped (false: shown as generated).
    validity_gate: bool = True
    # A line with nothing after the cursor may grow past itself: an ended statement gets
    # the next line; a blank or just-ended line the lines up to the code below when the
    # model meets that code (false: such suggestions stay on one line).
    multiline: bool = True
    # Candidates tried when the first one fails the gate, when cleanup could not use what
    # the model wrote, or when the client asks for several (1: the greedy suggestion only).
    candidates: int = 3
    # A suggestion whose confidence is under this is not shown (0: every suggestion is
    # shown).  The confidence: the geometric mean of the probabilities of the tokens the
    # model wrote itself, or the square root of the lowest of them among its first six,
    # whichever is lower (engine/candidates.py).  0.55, measured with the answers known
    # (docs/suggestion-quality.md): on the dev sets, warm and cold, 93-100% of the right
    # suggestions stay and 22-56% of the wrong ones; on a held-out set 81-100% and 19-49%.
    min_confidence: float = 0.55
    # The bar for suggestions from a quick prompt (the first request in a file whose full
    # prompt is not evaluated yet; engine/progressive.py), which the full prompt's replaces
    # when it differs.  0.6, measured on quick answers with the answers known
    # (docs/latency.md): from 0.55 to 0.6 no right suggestion is lost and 20 -> 15 (dev
    # repo-line, 60 cases) and 16 -> 12 (held-out, 60) wrong ones are shown.
    quick_min_confidence: float = 0.6
    # When a suggestion is under ``min_confidence``, also try the next most likely start
    # where the model hesitated, and show it if it is sure (engine/candidates.py).  More
    # right suggestions, at a latency cost: on the repo-line dev set 25 -> 27 exact of 164
    # with 50 -> 53 wrong shown, p50 1.14x; the keystroke's p50 (latency.py) 1.41x
    # today's against 1.12x without it (docs/suggestion-quality.md).  Off by default for
    # that cost.
    unsure_alternatives: bool = False
    # On the embedded demo model, offer once (quill/modelOffer) the code model that fits
    # this machine, as `quill-lsp models recommend` picks it (protocol/model_offer.py).
    model_offer: bool = True

    def model_settings(self) -> tuple[Any, ...]:
        """The part of the settings that needs the model to be (re)loaded when it changes."""
        return (
            self.model,
            self.backend,
            self.endpoint,
            self.api_key_env,
            self.gpu_layers,
            self.context_tokens,
            self.threads,
            self.kv_cache_mb,
        )


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


def _as_int(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")
        ivalue = int(value)
        if not lo <= ivalue <= hi:
            raise ValueError(f"expected an integer between {lo} and {hi}")
        return ivalue

    return convert


def _as_float(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        fvalue = float(value)
        if not lo <= fvalue <= hi:
            raise ValueError(f"expected a number between {lo} and {hi}")
        return fvalue

    return convert


def _as_nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _as_optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()


def _as_str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    if len(value) > 1000:
        raise ValueError("expected at most 1000 patterns")
    return tuple(v.strip() for v in value if v.strip())


def _as_backend(value: Any) -> str:
    if value not in BACKENDS:
        raise ValueError(f"expected one of {', '.join(BACKENDS)}")
    return str(value)


def _as_endpoint(value: Any) -> str | None:
    text = _as_optional_str(value)
    if text is not None and not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return text


# camelCase key -> (dataclass field, converter)
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "model": ("model", _as_nonempty_str),
    "backend": ("backend", _as_backend),
    "endpoint": ("endpoint", _as_endpoint),
    "apiKeyEnv": ("api_key_env", _as_nonempty_str),
    "gpuLayers": ("gpu_layers", _as_int(-1, 100_000)),
    "contextTokens": ("context_tokens", _as_int(256, 1_048_576)),
    "maxTokens": ("max_tokens", _as_int(1, 4096)),
    "temperature": ("temperature", _as_float(0.0, 2.0)),
    "debounceMs": ("debounce_ms", _as_int(0, 10_000)),
    "workspaceContext": ("workspace_context", _as_bool),
    "requestTimeoutS": ("request_timeout_s", _as_float(0.1, 3600.0)),
    "threads": ("threads", _as_int(0, 1024)),
    "enabled": ("enabled", _as_bool),
    "cacheCompletions": ("cache_completions", _as_bool),
    "latencyTargetMs": ("latency_target_ms", _as_int(0, 600_000)),
    "kvCacheMb": ("kv_cache_mb", _as_int(0, 1_048_576)),
    "warmup": ("warmup", _as_bool),
    "workspaceWarmTokens": ("workspace_warm_tokens", _as_int(0, 1_000_000)),
    "secretPaths": ("secret_paths", _as_str_list),
    "indexMaxFiles": ("index_max_files", _as_int(100, 10_000_000)),
    "validityGate": ("validity_gate", _as_bool),
    "multiline": ("multiline", _as_bool),
    "candidates": ("candidates", _as_int(1, 8)),
    "minConfidence": ("min_confidence", _as_float(0.0, 1.0)),
    "quickMinConfidence": ("quick_min_confidence", _as_float(0.0, 1.0)),
    "unsureAlternatives": ("unsure_alternatives", _as_bool),
    "modelOffer": ("model_offer", _as_bool),
}

SETTING_KEYS = tuple(_FIELDS)


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Validate client settings.

    ``raw`` is the JSON object from the client; it may be wrapped in ``{"quill": {...}}``.
    Returns the new settings and a list of human-readable problems (empty when all is
    well).  Invalid or unknown keys keep the value from ``base`` (or the default).
    """
    base = base or Settings()
    problems: list[str] = []
    if raw is None:
        return base, problems
    if isinstance(raw, dict) and isinstance(raw.get("quill"), dict):
        raw = raw["quill"]
    if not isinstance(raw, dict):
        return base, [f"Quill settings must be an object, got {type(raw).__name__}"]

    changes: dict[str, Any] = {}
    for key, value in raw.items():
        spec = _FIELDS.get(key)
        if spec is None:
            problems.append(f"unknown setting quill.{key} (ignored)")
            continue
        name, convert = spec
        if value is None and name not in ("endpoint",):
            continue  # null means "use the default / keep the current value"
        try:
            changes[name] = convert(value)
        except ValueError as exc:
            current = getattr(base, name)
            problems.append(f"quill.{key}={value!r} is invalid: {exc}; keeping {current!r}")
    return dataclasses.replace(base, **changes), problems


def to_camel_dict(settings: Settings) -> dict[str, Any]:
    """The settings as the client would send them (for logs and `quill-lsp complete`)."""
    return {
        key: list(value) if isinstance(value := getattr(settings, name), tuple) else value
        for key, (name, _) in _FIELDS.items()
    }
