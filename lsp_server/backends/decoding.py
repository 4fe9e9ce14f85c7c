"""Pieces the in-process backends share: token healing masks, token choice, stop strings,
and a vocabulary-only GGUF tokenizer.

``GgufVocab`` loads only the vocabulary of a GGUF file through llama.cpp (no weights, a
few milliseconds and a few MB even for a 34B model).  The ctransformers backend tokenizes
GGUF models with it (ctransformers' own 2023 tokenizer cannot parse control tokens such as
``<PRE>``), and the openai backend counts the prompt budget with it when the served model
is also available locally.
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsp_server.backends.base import BackendError, FimTokens, GenerationRequest, ModelFileError

logger = logging.getLogger(__name__)

_log_callback_ref: Any = None


def silence_llama_logs(llama_cpp: Any) -> None:
    """llama.cpp prints to stderr; keep only errors, through our logger."""
    global _log_callback_ref
    if _log_callback_ref is not None:
        return

    @llama_cpp.llama_log_callback
    def _callback(level: int, text: bytes, user_data: Any) -> None:
        if level <= 2:  # GGML_LOG_LEVEL_ERROR = 2 (NONE=0, DEBUG=1... varies): keep errors
            msg = text.decode("utf-8", "replace").rstrip()
            if msg:
                logger.debug("llama.cpp: %s", msg)

    _log_callback_ref = _callback
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


class PieceIndex:
    """Which tokens may come next when the output must start with given bytes (token
    healing): tokens whose bytes start with the remaining forced bytes, or that are a
    proper prefix of them."""

    def __init__(self, n_vocab: int, piece: Callable[[int], bytes], is_eog: Callable[[int], bool]) -> None:
        pairs = []
        by_bytes: dict[bytes, list[int]] = {}
        for tok in range(n_vocab):
            data = piece(tok)
            if not data or is_eog(tok):
                continue
            pairs.append((data, tok))
            by_bytes.setdefault(data, []).append(tok)
        pairs.sort()
        self._pieces = [p for p, _ in pairs]
        self._ids = [t for _, t in pairs]
        self._by_bytes = by_bytes

    def allowed(self, remaining: bytes) -> np.ndarray:
        allowed: list[int] = []
        i = bisect.bisect_left(self._pieces, remaining)
        while i < len(self._pieces) and self._pieces[i].startswith(remaining):
            allowed.append(self._ids[i])
            i += 1
        for k in range(1, len(remaining)):
            allowed.extend(self._by_bytes.get(remaining[:k], ()))
        return np.asarray(allowed, dtype=np.int64)


def pick_token(logits: np.ndarray, temperature: float, allowed: np.ndarray | None, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else sampling from the top 40 (or the allowed set)."""
    if allowed is not None:
        if allowed.size == 0:
            return -1
        sub = logits[allowed]
        if temperature <= 0:
            return int(allowed[int(np.argmax(sub))])
        probs = np.exp((sub - sub.max()) / temperature)
        return int(rng.choice(allowed, p=probs / probs.sum()))
    if temperature <= 0:
        return int(np.argmax(logits))
    top = np.argpartition(logits, -40)[-40:]
    sub = logits[top]
    probs = np.exp((sub - sub.max()) / temperature)
    return int(rng.choice(top, p=probs / probs.sum()))


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    best: int | None = None
    for stop in stops:
        if not stop:
            continue
        idx = text.find(stop)
        if idx != -1 and (best is None or idx < best):
            best = idx
    return best


def common_prefix_len(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    n = min(len(a), len(b))
    if not n:
        return 0
    eq = np.asarray(a[:n], dtype=np.int64) == np.asarray(b[:n], dtype=np.int64)
    bad = np.flatnonzero(~eq)
    return int(bad[0]) if bad.size else n


def silent_stop_tokens(
    tokenize: Callable[..., list[int]], piece: Callable[[int], bytes], stops: Sequence[str]
) -> frozenset[int]:
    """The tokens that stop strings name but that add no text: control tokens llama.cpp
    does not count as end of generation (StarCoder's ``<file_sep>`` and ``<fim_prefix>``,
    Qwen's ``<|im_start|>``, Code Llama's ``▁<EOT>`` in files without an EOT id).  A stop
    string can never match their text, so decoding has to stop on their ids.  A stop string
    is looked up as written, then as SentencePiece spells control tokens (``▁<EOT>``)."""
    ids: set[int] = set()
    for stop in stops:
        for text in (stop, "\u2581" + stop):
            tokens = tokenize(text, special=True)
            if len(tokens) == 1:
                if not piece(tokens[0]):
                    ids.add(tokens[0])
                break
    return frozenset(ids)


class StopTokens:
    """``silent_stop_tokens`` per stop list, remembered (a backend sees a few lists)."""

    def __init__(self, tokenize: Callable[..., list[int]], piece: Callable[[int], bytes]) -> None:
        self._tokenize = tokenize
        self._piece = piece
        self._known: dict[tuple[str, ...], frozenset[int]] = {}

    def end_check(self, stops: Sequence[str], is_eog: Callable[[int], bool]) -> Callable[[int], bool]:
        """``is_eog``, widened to the tokens ``stops`` name that add no text."""
        key = tuple(stops)
        ids = self._known.get(key)
        if ids is None:
            if len(self._known) >= 64:
                self._known.clear()
            ids = self._known[key] = silent_stop_tokens(self._tokenize, self._piece, key)
        if not ids:
            return is_eog
        return lambda token: token in ids or is_eog(token)


def gguf_version(path: str) -> int | None:
    """The GGUF format version of ``path`` (None when it is not a GGUF file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if len(head) < 8 or head[:4] != b"GGUF":
        return None
    return int.from_bytes(head[4:8], "little")


def check_request(request: GenerationRequest, n_ctx: int) -> None:
    """Refuse a generation that cannot fit the model's context."""
    if not request.prompt:
        raise BackendError("empty prompt")
    if len(request.prompt) + request.max_tokens > n_ctx:
        raise BackendError(
            f"prompt of {len(request.prompt)} tokens + {request.max_tokens} new tokens "
            f"exceeds the model's context of {n_ctx}"
        )


# Alternatives kept per step for candidates (engine/candidates.py), for the first steps only.
TOP_K = 4
TOP_STEPS = 4


@dataclass
class Decoded:
    """What one decode produced: the text, its tokens, why it stopped, each token's
    log-probability under the model's (unconstrained, temperature 1) distribution and the
    character offset in ``text`` where it ends, and for the first steps the most likely
    tokens there (id, log-probability; under the healing mask while it applies)."""

    text: str
    tokens: list[int]
    stop_reason: str
    logprobs: list[float] = field(default_factory=list)
    token_ends: list[int] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)


def log_softmax_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log p(ids) under softmax(logits)."""
    m = float(logits.max())
    lse = m + float(np.log(np.exp(logits - m).sum()))
    return logits[ids].astype(np.float64) - lse


def top_tokens(logits: np.ndarray, allowed: np.ndarray | None, k: int = TOP_K) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens (within ``allowed`` when given), best first."""
    pool = allowed if allowed is not None else None
    sub = logits[pool] if pool is not None else logits
    if sub.size == 0:
        return []
    k = min(k, sub.size)
    idx = np.argpartition(sub, -k)[-k:]
    idx = idx[np.argsort(-sub[idx])]
    ids = pool[idx] if pool is not None else idx
    lps = log_softmax_at(logits, np.asarray(ids, dtype=np.int64))
    return [(int(t), float(lp)) for t, lp in zip(ids, lps, strict=True)]


def decode(
    request: GenerationRequest,
    cancel: threading.Event,
    rng: np.random.Generator,
    *,
    logits: Callable[[], np.ndarray],
    eval_token: Callable[[int], None],
    piece: Callable[[int], bytes],
    is_eog: Callable[[int], bool],
    allowed_tokens: Callable[[bytes], np.ndarray],
    head: Sequence[int] = (),
) -> Decoded:
    """The token loop of the in-process backends, after the prompt has been evaluated.

    Constrains the first tokens to the forced (healed) prefix, checks ``cancel`` between
    tokens, stops on end of generation, a stop string or ``request.should_stop``.
    ``head``: tokens taken as the first ones instead of the model's choice (a candidate
    that branches from the greedy path; see engine/candidates.py).
    """
    forced = request.forced_prefix.encode("utf-8", "replace")
    produced = b""
    text = ""
    tokens: list[int] = []
    logprobs: list[float] = []
    ends: list[int] = []
    top: list[list[tuple[int, float]]] = []
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    stop_reason = "length"
    for step in range(request.max_tokens):
        if cancel.is_set():
            stop_reason = "cancelled"
            break
        allowed = allowed_tokens(forced[len(produced) :]) if len(produced) < len(forced) else None
        current = logits()
        if step < len(head):
            token = int(head[step])
        else:
            token = pick_token(current, request.temperature, allowed, rng)
        if step < TOP_STEPS:
            top.append(top_tokens(current, allowed))
        if token < 0 or is_eog(token):
            stop_reason = "eos"
            break
        tokens.append(token)
        logprobs.append(float(log_softmax_at(current, np.asarray([token], dtype=np.int64))[0]))
        data = piece(token)
        produced += data
        text += decoder.decode(data)
        ends.append(len(text))
        hit = find_stop(text, request.stop)
        if hit is not None:
            text = text[:hit]
            stop_reason = "stop"
            break
        if request.should_stop is not None and len(produced) >= len(forced) and request.should_stop(text):
            stop_reason = "condition"
            break
        if request.give_up is not None and request.give_up(text, logprobs, ends):
            stop_reason = "unsure"
            break
        eval_token(token)
    if stop_reason != "stop":
        text += decoder.decode(b"", final=True)
    return Decoded(text, tokens, stop_reason, logprobs, ends, top)


def token_piece(lib: Any, vocab: Any, token: int) -> bytes:
    """The bytes a token adds to the text in llama.cpp (control tokens add none)."""
    buf = ctypes.create_string_buffer(64)
    n = lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[: max(0, n)]


class GgufVocab:
    """The tokenizer of a GGUF file, loaded vocabulary-only through llama.cpp."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise ModelFileError(f"model file not found: {path}")
        try:
            import llama_cpp
            from llama_cpp._internals import LlamaModel
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise BackendError("llama-cpp-python is needed to read the model's vocabulary") from exc
        silence_llama_logs(llama_cpp)
        self._lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model: Any = LlamaModel(path_model=path, params=params, verbose=False)
        except ValueError as exc:
            raise ModelFileError(f"llama.cpp could not read the vocabulary of {path}: {exc}") from exc
        self.path = path
        self._vocab = self._model.vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.metadata = self._model.metadata()
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        data = text.encode("utf-8", "replace")
        if not data:
            return []
        return list(self._model.tokenize(data, False, special))

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        data = token_piece(self._lib, self._vocab, token)
        self._pieces[token] = data
        return data

    def special_text(self, token: int) -> str:
        """The text of a token as written in a prompt (control tokens included)."""
        buf = ctypes.create_string_buffer(128)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(0, n)].decode("utf-8", "replace")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def render(self, tokens: Sequence[int]) -> str:
        """Tokens back to prompt text with control tokens spelled out (for a server that
        takes text and parses control tokens, as llama.cpp's servers do)."""
        out: list[bytes] = []
        for t in tokens:
            data = self.piece(t)
            if not data and self.is_control(t):
                data = self.special_text(t).encode("utf-8")
            out.append(data)
        return b"".join(out).decode("utf-8", "replace")

    def is_control(self, token: int) -> bool:
        fn = getattr(self._lib, "llama_vocab_is_control", None)
        return bool(fn(self._vocab, token)) if fn is not None else False

    def bos_tokens(self) -> list[int]:
        bos = int(self._lib.llama_vocab_bos(self._vocab))
        return [bos] if self._add_bos and bos >= 0 else []

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def token_text(self, token: int) -> str | None:
        if token < 0 or token >= self.n_vocab:
            return None
        raw = self._lib.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", "replace") if raw else None

    def fim_tokens(self) -> FimTokens:
        lib, v = self._lib, self._vocab
        eot = [t for t in (self.token_text(lib.llama_vocab_eot(v)), self.token_text(lib.llama_vocab_eos(v))) if t]
        return FimTokens(
            prefix=self.token_text(lib.llama_vocab_fim_pre(v)),
            suffix=self.token_text(lib.llama_vocab_fim_suf(v)),
            middle=self.token_text(lib.llama_vocab_fim_mid(v)),
            eot=tuple(eot),
        )

    def eog_ids(self) -> tuple[int, ...]:
        lib, v = self._lib, self._vocab
        return tuple(t for t in (int(lib.llama_vocab_eos(v)), int(lib.llama_vocab_eot(v))) if t >= 0)

    def close(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None:
            model.close()
            self._model = None
