"""In-process GGUF models through llama-cpp-python.

The model is loaded once and its context stays warm.  Each call reuses the KV cache for
the longest token prefix it shares with the previous call, so a keystroke re-evaluates
only the changed tail of the prompt.  Decoding is our own short loop (greedy by default)
rather than ``Llama.generate`` so that we can check the cancel flag between tokens,
constrain the first tokens for token healing, and stop on syntax conditions.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lsp_server.backends.base import (
    BackendError,
    FimTokens,
    GenerationRequest,
    GenerationResult,
    ModelFileError,
    ModelInfo,
)
from lsp_server.backends.decoding import (
    PieceIndex,
    StopTokens,
    check_request,
    decode,
    silence_llama_logs,
    token_piece,
)
from lsp_server.backends.kv_store import ReusePlan, Snapshot, SnapshotStore, best_seed, plan_reuse

logger = logging.getLogger(__name__)

def check_gguf_header(path: str) -> None:
    """Fail early, with the path, on a file that is not a GGUF model."""
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc
    if magic != b"GGUF":
        raise ModelFileError(f"{path} is not a GGUF model file (magic {magic!r}); it may be corrupt or incomplete")


# ------------------------------------------------------------------ memory before loading
# A file up to this share of the available memory is read into memory (use_mmap=False): a
# memory-mapped file that is truncated or rewritten while the server runs kills it with
# SIGBUS at the next token.  Larger files are mapped (they may not fit otherwise).
# QUILL_MMAP=1 / QUILL_MMAP=0 force one or the other.
READ_INTO_MEMORY_SHARE = 0.5
# The KV cache plus a model read into memory may take at most this share of the memory
# available when the model loads; more is refused before llama.cpp allocates anything.
LOAD_MEMORY_SHARE = 0.8

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_metadata(path: str, stop_prefix: str | None = None) -> dict[str, object]:
    """The key/value metadata of a GGUF file, read with plain file IO (no llama.cpp, no
    mmap).  Arrays of strings are skipped (None); arrays of numbers are kept as lists.
    ``stop_prefix``: stop at the first key that starts with it (``"tokenizer."``: the
    vocabulary, written after the model's shape, takes most of the reading time).
    Raises ModelFileError when the header is cut short or malformed."""
    import struct

    def need(fh: object, n: int) -> bytes:
        data = fh.read(n)  # type: ignore[attr-defined]
        if len(data) != n:
            raise ModelFileError(f"{path} is incomplete or corrupt: its GGUF header ends early")
        return data  # type: ignore[no-any-return]

    def string(fh: object) -> str:
        (n,) = struct.unpack("<Q", need(fh, 8))
        if n > 1 << 24:
            raise ModelFileError(f"{path} is corrupt: a GGUF header string of {n} bytes")
        return need(fh, n).decode("utf-8", "replace")

    def value(fh: object, kind: int) -> object:
        fmt = _GGUF_SCALARS.get(kind)
        if fmt is not None:
            return struct.unpack(fmt, need(fh, struct.calcsize(fmt)))[0]
        if kind == _GGUF_STRING:
            return string(fh)
        if kind == _GGUF_ARRAY:
            (item, count) = struct.unpack("<IQ", need(fh, 12))
            if item == _GGUF_STRING or item == _GGUF_ARRAY:
                for _ in range(count):
                    value(fh, item)
                return None
            fmt = _GGUF_SCALARS.get(item)
            if fmt is None:
                raise ModelFileError(f"{path} is corrupt: unknown GGUF value type {item}")
            size = struct.calcsize(fmt)
            if count > 4096:  # large numeric arrays (token scores, types) are not needed
                need(fh, 0)
                fh.seek(count * size, 1)  # type: ignore[attr-defined]
                return None
            return [x[0] for x in struct.iter_unpack(fmt, need(fh, count * size))]
        raise ModelFileError(f"{path} is corrupt: unknown GGUF value type {kind}")

    try:
        with open(path, "rb", buffering=1 << 20) as fh:
            if need(fh, 4) != b"GGUF":
                raise ModelFileError(f"{path} is not a GGUF model file; it may be corrupt or incomplete")
            _version, _tensors, n_kv = struct.unpack("<IQQ", need(fh, 20))
            if n_kv > 1 << 20:
                raise ModelFileError(f"{path} is corrupt: {n_kv} metadata entries")
            meta: dict[str, object] = {}
            for _ in range(n_kv):
                key = string(fh)
                if stop_prefix is not None and key.startswith(stop_prefix):
                    break
                (kind,) = struct.unpack("<I", need(fh, 4))
                meta[key] = value(fh, kind)
            return meta
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc
    except struct.error as exc:
        raise ModelFileError(f"{path} is incomplete or corrupt: {exc}") from exc


def kv_bytes_per_token(meta: dict[str, object]) -> int | None:
    """Bytes of f16 K and V cache one context token takes in all layers (every layer holds
    the full context: swa_full), or None when the metadata does not say (recurrent models)."""
    arch = meta.get("general.architecture")

    def num(key: str) -> object:
        return meta.get(f"{arch}.{key}")

    layers, embd, heads = num("block_count"), num("embedding_length"), num("attention.head_count")
    if not isinstance(layers, int) or not isinstance(embd, int) or layers <= 0 or embd <= 0:
        return None
    head_list = heads if isinstance(heads, list) else [heads] * layers
    kv = num("attention.head_count_kv")
    kv_list = kv if isinstance(kv, list) else [kv if isinstance(kv, int) else None] * layers
    total = 0
    for h, h_kv in zip(head_list, kv_list, strict=False):
        if not isinstance(h, int) or h <= 0:
            return None
        n_kv = h_kv if isinstance(h_kv, int) else h
        k_len, v_len = num("attention.key_length"), num("attention.value_length")
        k = k_len if isinstance(k_len, int) else embd // h
        v = v_len if isinstance(v_len, int) else embd // h
        total += n_kv * (k + v) * 2
    return total or None


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, lowered by a cgroup limit."""
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
        if limit.isdigit() and avail is not None:
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def plan_memory(path: str, n_ctx: int, gpu_layers: int = 0, available: int | None = None) -> bool:
    """Before llama.cpp allocates anything: whether to memory-map the file, and a clear
    BackendError when the context the settings ask for cannot fit in memory (instead of a
    load that eats the machine).  Returns use_mmap."""
    size = os.path.getsize(path)
    available = available_memory() if available is None else available
    forced = os.environ.get("QUILL_MMAP", "")
    if forced in ("0", "1"):
        use_mmap = forced == "1"
    else:
        use_mmap = available is not None and size > available * READ_INTO_MEMORY_SHARE
    if available is None or gpu_layers != 0:
        return use_mmap  # unknown memory, or the cache lives on the GPU: llama.cpp decides
    per_token = kv_bytes_per_token(read_gguf_metadata(path, stop_prefix="tokenizer."))
    if per_token is None:
        return use_mmap
    kv = per_token * n_ctx
    model = 0 if use_mmap else size
    budget = available * LOAD_MEMORY_SHARE
    if kv + model > budget:
        fits = int(max(0.0, budget - model) // per_token)
        hint = f"lower quill.contextTokens (about {fits} tokens fit now)" if fits >= 256 else "free memory or pick a smaller model"
        raise BackendError(
            f"contextTokens={n_ctx} needs about {gib(kv)} of KV cache for {os.path.basename(path)} "
            f"({per_token} bytes per token){' plus ' + gib(model) + ' for the model' if model else ''}, "
            f"but only {gib(available)} of memory is available; {hint}"
        )
    return use_mmap


# Shifted reuse of cached runs (see kv_store.plan_reuse): runs shorter than this are
# evaluated again rather than moved.
CACHE_REUSE_MIN_TOKENS = 32
# At most this many tokens per llama_decode call while a prompt is evaluated for a
# request: between calls the cancel flag is checked, so a newer keystroke stops a long
# cold prompt (about 0.5 s of work on a 2-core CPU with the default model; a first
# prompt of ~230 tokens in two decodes instead of four is 3-4% faster there).
FOREGROUND_BATCH = 128
_MEASURE_SLOT = "\0measure"


@dataclass
class PrefillResult:
    """What one ``prefill`` call did."""

    tokens: int  # prompt length
    reused: int  # tokens the cache already held (common prefix + shifted runs)
    shifted: int  # of which moved to new positions
    evaluated: int
    complete: bool  # False: stopped by the cancel flag; the cache holds a prefix of the prompt
    ms: float


@dataclass
class Throughput:
    """Measured speed of this model on this machine with a given thread count."""

    threads: int
    prompt_tok_s: float
    gen_ms_per_token: float


def default_threads() -> int:
    """Half the cores, at least one.

    llama.cpp's worker threads spin-wait on each other; when the editor, a build or a test
    run takes a core, a thread count equal to the cores collapses (measured on 2 busy
    cores: 38 prompt tokens took 9.8 s with 2 threads, 1.2 s with 1).  Half the cores
    leaves room for the editor the server serves.
    """
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaCppBackend:
    """A GGUF model in this process."""

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int = 2048,
        gpu_layers: int = 0,
        threads: int = 0,
        name: str = "",
        swa_full: bool = True,
        kv_cache_mb: int = 0,
    ) -> None:
        check_gguf_header(path)
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError("llama-cpp-python is not installed; run `make install` (see README)") from exc
        self._lib = llama_cpp
        silence_llama_logs(llama_cpp)
        n_threads = threads or default_threads()
        use_mmap = plan_memory(path, n_ctx, gpu_layers)
        t0 = time.perf_counter()
        try:
            self.llama = llama_cpp.Llama(
                model_path=path,
                use_mmap=use_mmap,
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                n_gpu_layers=gpu_layers,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                logits_all=False,
                verbose=False,
                # A full-size cache for sliding-window layers (Gemma 3 and others) so that
                # the KV cache can be truncated to a common prefix: without it llama.cpp
                # refuses partial removal and every keystroke re-evaluates the whole prompt.
                swa_full=swa_full,
            )
        except ValueError as exc:
            raise ModelFileError(f"llama.cpp could not load {path}: {exc}") from exc
        self.load_ms = (time.perf_counter() - t0) * 1000
        self._vocab = self.llama._model.vocab
        self._n_vocab = self.llama.n_vocab()
        self._piece_cache: dict[int, bytes] = {}
        self._piece_index: PieceIndex | None = None
        self._stop_tokens = StopTokens(self.tokenize, self.piece)
        self._swa_full = swa_full
        self.n_swa = int(getattr(llama_cpp, "llama_model_n_swa", lambda m: 0)(self.llama._model.model) or 0)
        self._rng = np.random.default_rng(0)
        meta = dict(self.llama.metadata)
        self.info = ModelInfo(
            name=name or meta.get("general.name", os.path.basename(path)),
            path=path,
            n_ctx=self.llama.n_ctx(),
            n_vocab=self._n_vocab,
            architecture=meta.get("general.architecture", ""),
            fim=self._fim_tokens(),
            eos_token_ids=tuple(t for t in (self.llama.token_eos(),) if t >= 0),
            chat_template=meta.get("tokenizer.chat_template"),
            device=self._device(gpu_layers),
            metadata=meta,
        )
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.n_threads = self.n_threads_batch = n_threads
        # KV states of other slots (documents) than the active one, in host memory.
        self._store = SnapshotStore(max(0, kv_cache_mb) * 1024 * 1024)
        self._active: str | None = None
        self.seeded = 0  # slots that started from another slot's state (``_activate``)
        self._branch_from: tuple[str, int, np.ndarray] | None = None
        mem = self.llama._ctx.memory
        self._can_shift = bool(mem is not None and llama_cpp.llama_memory_can_shift(mem)) and (
            not self.n_swa or swa_full
        )
        logger.info(
            "loaded %s (%s, n_ctx=%d, %d threads) on %s in %.0f ms",
            self.info.name,
            self.info.architecture,
            self.info.n_ctx,
            n_threads,
            self.info.device,
            self.load_ms,
        )

    # ----------------------------------------------------------------- model facts
    def _device(self, gpu_layers: int) -> str:
        lib = self._lib
        offload = bool(getattr(lib, "llama_supports_gpu_offload", lambda: False)())
        if gpu_layers != 0 and offload:
            return f"gpu ({'all' if gpu_layers < 0 else gpu_layers} layers offloaded)"
        if gpu_layers != 0 and not offload:
            logger.warning("gpuLayers=%d but this llama-cpp-python build has no GPU support", gpu_layers)
        return "cpu"

    def _token_text(self, token: int) -> str | None:
        if token < 0 or token >= self._n_vocab:
            return None
        raw = self._lib.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", "replace") if raw else None

    def _fim_tokens(self) -> FimTokens:
        lib = self._lib
        vocab = self._vocab
        pre = self._token_text(lib.llama_vocab_fim_pre(vocab))
        suf = self._token_text(lib.llama_vocab_fim_suf(vocab))
        mid = self._token_text(lib.llama_vocab_fim_mid(vocab))
        eot: list[str] = []
        for fn in ("llama_vocab_eot", "llama_vocab_eos"):
            f = getattr(lib, fn, None)
            if f is not None:
                text = self._token_text(f(vocab))
                if text:
                    eot.append(text)
        return FimTokens(prefix=pre, suffix=suf, middle=mid, eot=tuple(eot))

    # ------------------------------------------------------------------ tokenizer
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        data = text.encode("utf-8", "replace")
        if not data:
            return []
        return list(self.llama.tokenize(data, add_bos=False, special=special))

    def piece(self, token: int) -> bytes:
        """The bytes a token adds to the text (control tokens add none)."""
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        data = token_piece(self._lib, self._vocab, token)
        self._piece_cache[token] = data
        return data

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def bos_tokens(self) -> list[int]:
        bos = self.llama.token_bos()
        return [bos] if self._add_bos and bos >= 0 else []

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    # --------------------------------------------------------------- token healing
    def allowed_tokens(self, remaining: bytes) -> np.ndarray:
        """Tokens consistent with having to produce ``remaining`` next."""
        if self._piece_index is None:
            self._piece_index = PieceIndex(self._n_vocab, self.piece, self.is_eog)
        return self._piece_index.allowed(remaining)

    # ----------------------------------------------------------------- generation
    def _logits(self) -> np.ndarray:
        ptr = self.llama._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _cache_covers(self, common: int) -> bool:
        """Whether the KV cache still holds what the first ``common`` tokens need.

        A sliding-window layer with a window-sized cache (``swa_full=False``) drops cells
        that fall out of the window, so after a longer prompt it may no longer hold the
        window before position ``common``: reusing it then would be wrong, not just slow.
        With the full-size cache we ask for (``swa_full=True``) it always holds them."""
        if not self.n_swa or self._swa_full:
            return True
        pos_min = getattr(self._lib, "llama_memory_seq_pos_min", None)
        mem = getattr(self.llama._ctx, "memory", None)
        if pos_min is None or mem is None:
            return False
        lowest = int(pos_min(mem, 0))
        return lowest <= max(0, common - self.n_swa)

    # ------------------------------------------------------------- KV cache slots
    @property
    def kv_store(self) -> SnapshotStore:
        return self._store

    def _cached_tokens(self, slot: str) -> np.ndarray:
        if not self._store.enabled or slot == self._active:
            return self.llama.input_ids[: self.llama.n_tokens]
        tokens = self._store.peek_tokens(slot)
        return tokens if tokens is not None else np.zeros(0, dtype=np.intc)

    def slot_tokens(self, slot: str) -> int:
        """How many tokens the KV state of ``slot`` holds (0: none kept)."""
        return len(self._cached_tokens(slot))

    def eval_cost(self, prompt: Sequence[int], slot: str = "") -> int:
        """How many tokens of ``prompt`` would have to be evaluated in ``slot`` (one that
        holds nothing yet starts from its seed, ``_seed``)."""
        cached = self._cached_tokens(slot)
        if not len(cached):
            return len(prompt) - self._seed(slot, prompt)[1]
        return len(prompt) - self._plan(cached, prompt).keep

    def kept_states(self) -> dict[str, np.ndarray]:
        """Slot name -> the tokens of every KV state held (the active one included)."""
        states = self._store.tokens() if self._store.enabled else {}
        if self._active is not None and self._active != _MEASURE_SLOT and self.llama.n_tokens > 0:
            states[self._active] = self.llama.input_ids[: self.llama.n_tokens]
        return states

    def _seed(self, slot: str, prompt: Sequence[int]) -> tuple[str | None, int]:
        """For ``slot`` holding nothing yet: the kept state that serves most of ``prompt``
        (``kv_store.best_seed``) and the prompt tokens it keeps."""
        if not self._store.enabled or not self._can_shift or not len(prompt):
            return None, 0
        states = {k: v for k, v in self.kept_states().items() if k != slot}
        return best_seed(states, prompt, CACHE_REUSE_MIN_TOKENS)

    def _plan(self, cached: np.ndarray, prompt: Sequence[int]) -> ReusePlan:
        return plan_reuse(cached, prompt, CACHE_REUSE_MIN_TOKENS if self._can_shift else 0)

    def _activate(self, slot: str, prompt: Sequence[int] = ()) -> None:
        """Make ``slot``'s KV state the context's: save the active one, restore ``slot``'s.
        A slot with no state of its own starts from the kept state that serves most of
        ``prompt`` (``_seed``): a copy, the seed stays as it was."""
        llama = self.llama
        if not self._store.enabled or (slot == self._active and llama.n_tokens > 0):
            self._active = slot
            return
        seed = self._seed(slot, prompt)[0] if self._store.peek_tokens(slot) is None else None
        if slot == self._active and seed is None:
            return
        ctx = llama._ctx.ctx
        if self._active not in (None, _MEASURE_SLOT, slot) and llama.n_tokens > 0:
            size = self._lib.llama_state_seq_get_size(ctx, 0)
            buf = (ctypes.c_uint8 * size)()
            written = self._lib.llama_state_seq_get_data(ctx, buf, size, 0)
            if written:
                tokens = np.array(llama.input_ids[: llama.n_tokens], dtype=np.intc)
                self._store.put(self._active, Snapshot(tokens=tokens, data=buf))
                if seed == self._active:  # the context holds the seed already
                    self.seeded += 1
                    self._active = slot
                    return
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.n_tokens = 0
        snap = self._store.take(slot)
        if snap is None and seed is not None:
            snap = self._store.get(seed)
            self.seeded += snap is not None
        if snap is not None:
            size = ctypes.sizeof(snap.data)
            if self._lib.llama_state_seq_set_data(ctx, snap.data, size, 0):
                llama.input_ids[: len(snap.tokens)] = snap.tokens
                llama.n_tokens = len(snap.tokens)
            else:  # pragma: no cover - llama.cpp refused its own snapshot
                logger.warning("could not restore the KV state of %s; evaluating again", slot)
                llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        self._active = slot

    def forget(self, slot: str) -> None:
        """Drop what is kept for ``slot`` (a closed document)."""
        self._store.drop(slot)

    def _apply_plan(self, prompt: list[int]) -> ReusePlan:
        """Bring the KV cache to the longest reusable part of ``prompt``."""
        llama = self.llama
        plan = self._plan(llama.input_ids[: llama.n_tokens], prompt)
        if plan.keep > 0 and not self._cache_covers(plan.common):
            logger.debug("sliding-window cache no longer holds the window before %d; full re-evaluation", plan.common)
            plan = ReusePlan(keep=0, common=0)
        mem = llama._ctx.memory
        ok = True
        for (p0, p1), shift in zip(plan.removals, plan.shifts, strict=True):
            ok = bool(self._lib.llama_memory_seq_rm(mem, 0, p0, p1))
            if not ok:
                break
            self._lib.llama_memory_seq_add(mem, 0, shift.start, shift.end, shift.delta)
        if ok and plan.keep > 0:
            ok = bool(llama._ctx.kv_cache_seq_rm(-1, plan.keep, -1))
        if not ok:
            logger.debug("KV cache could not be cut to %d tokens; full re-evaluation", plan.keep)
            plan = ReusePlan(keep=0, common=0)
        if plan.keep == 0:
            llama.reset()
            llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.input_ids[: plan.keep] = prompt[: plan.keep]
        llama.n_tokens = plan.keep
        return plan

    def _eval_prompt(self, prompt: list[int], cancel: threading.Event | None = None, batch: int = FOREGROUND_BATCH) -> PrefillResult:
        """Bring the KV cache to ``prompt``, at most ``batch`` tokens per decode, checking
        ``cancel`` between decodes.  The tokens are split into decodes of equal size: a
        short last decode costs nearly what a full one does."""
        t0 = time.perf_counter()
        plan = self._apply_plan(prompt)
        pos = plan.keep
        decodes = max(1, -(-(len(prompt) - pos) // max(1, batch)))
        size = -(-(len(prompt) - pos) // decodes)
        while pos < len(prompt):
            if cancel is not None and cancel.is_set():
                break
            chunk = prompt[pos : pos + size]
            self.llama.eval(chunk)
            pos += len(chunk)
        return PrefillResult(
            tokens=len(prompt),
            reused=plan.keep,
            shifted=plan.shifted,
            evaluated=pos - plan.keep,
            complete=pos >= len(prompt),
            ms=(time.perf_counter() - t0) * 1000,
        )

    def prefill(self, prompt: Sequence[int], slot: str, cancel: threading.Event, batch: int) -> PrefillResult:
        """Evaluate ``prompt`` into ``slot``'s KV state ahead of a request, ``batch`` tokens
        at a time, stopping between batches once ``cancel`` is set (what was evaluated is
        kept: it is a prefix of the prompt)."""
        if not prompt:
            return PrefillResult(0, 0, 0, 0, True, 0.0)
        check_request(GenerationRequest(prompt=list(prompt), max_tokens=1), self.info.n_ctx)
        self._activate(slot, prompt)
        return self._eval_prompt(list(prompt), cancel, batch)

    def set_threads(self, threads: int, batch_threads: int = 0) -> None:
        """Threads for generation (one token a decode) and for prompt evaluation (batches;
        ``batch_threads``, default the same): on a small model the two gain differently
        from more cores."""
        batch = batch_threads or threads
        self._lib.llama_set_n_threads(self.llama._ctx.ctx, threads, batch)
        self.n_threads, self.n_threads_batch = threads, batch

    def measure(self, threads: int, sample: Sequence[int], n_gen: int = 6) -> Throughput:
        """Prompt and generation speed with ``threads``, on ``sample`` (a few dozen tokens
        of ordinary text).  Uses a scratch state; the active slot is saved first."""
        self.set_threads(threads)
        self._activate(_MEASURE_SLOT)
        llama = self.llama
        llama.reset()
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        prompt = self.bos_tokens() + list(sample)
        t0 = time.perf_counter()
        llama.eval(prompt)
        t1 = time.perf_counter()
        token = int(prompt[-1])
        for _ in range(n_gen):
            llama.eval([token])
        t2 = time.perf_counter()
        llama.reset()
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        self._active = None
        return Throughput(
            threads=threads,
            prompt_tok_s=len(prompt) / max(1e-6, t1 - t0),
            gen_ms_per_token=(t2 - t1) * 1000 / max(1, n_gen),
        )

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        check_request(request, self.info.n_ctx)
        if request.seed:
            self._rng = np.random.default_rng(request.seed)
        t0 = time.perf_counter()
        self._activate(request.slot, request.prompt)
        evaluated = self._eval_prompt(list(request.prompt), cancel)
        t1 = time.perf_counter()
        if not evaluated.complete:
            return GenerationResult(
                text="",
                tokens=[],
                prompt_tokens=len(request.prompt),
                reused_tokens=evaluated.reused,
                prompt_ms=(t1 - t0) * 1000,
                generate_ms=0.0,
                stop_reason="cancelled",
                evaluated_tokens=evaluated.evaluated,
                shifted_tokens=evaluated.shifted,
            )
        # The logits at the prompt's end, kept for candidates that branch from it
        # (``branch``): a copy, since decoding overwrites llama.cpp's buffer.
        self._branch_from = (request.slot, len(request.prompt), np.array(self._logits(), copy=True))
        out = decode(
            request,
            cancel,
            self._rng,
            logits=self._logits,
            eval_token=lambda token: self.llama.eval([token]),
            piece=self.piece,
            is_eog=self._stop_tokens.end_check(request.stop, self.is_eog),
            allowed_tokens=self.allowed_tokens,
        )
        t2 = time.perf_counter()
        return GenerationResult(
            text=out.text,
            tokens=out.tokens,
            prompt_tokens=len(request.prompt),
            reused_tokens=evaluated.reused,
            prompt_ms=(t1 - t0) * 1000,
            generate_ms=(t2 - t1) * 1000,
            stop_reason=out.stop_reason,
            evaluated_tokens=evaluated.evaluated,
            shifted_tokens=evaluated.shifted,
            logprobs=out.logprobs,
            token_ends=out.token_ends,
            top=out.top,
        )

    def branch(self, request: GenerationRequest, head: Sequence[int], cancel: threading.Event) -> GenerationResult | None:
        """Another candidate for the request ``generate`` just answered: the KV cache is cut
        back to the prompt's end (the prompt is not evaluated again), ``head`` is taken as
        the first tokens, then decoding goes on as usual.  None when the cache no longer
        holds that prompt (another call came between)."""
        saved = self._branch_from
        llama = self.llama
        n = len(request.prompt)
        if (
            saved is None
            or saved[0] != request.slot
            or saved[1] != n
            or self._active != request.slot
            or llama.n_tokens < n
            or list(llama.input_ids[:n]) != list(request.prompt)
        ):
            return None
        if not llama._ctx.kv_cache_seq_rm(-1, n, -1):
            return None
        llama.n_tokens = n
        first = [True]

        def logits() -> np.ndarray:
            if first[0]:
                first[0] = False
                return saved[2]
            return self._logits()

        t0 = time.perf_counter()
        out = decode(
            request,
            cancel,
            self._rng,
            logits=logits,
            eval_token=lambda token: self.llama.eval([token]),
            piece=self.piece,
            is_eog=self._stop_tokens.end_check(request.stop, self.is_eog),
            allowed_tokens=self.allowed_tokens,
            head=head,
        )
        return GenerationResult(
            text=out.text,
            tokens=out.tokens,
            prompt_tokens=n,
            reused_tokens=n,
            prompt_ms=0.0,
            generate_ms=(time.perf_counter() - t0) * 1000,
            stop_reason=out.stop_reason,
            evaluated_tokens=0,
            logprobs=out.logprobs,
            token_ends=out.token_ends,
            top=out.top,
        )

    def close(self) -> None:
        llama = getattr(self, "llama", None)
        if llama is not None:
            try:
                llama.close()
            except Exception:  # pragma: no cover - best effort
                logger.debug("closing llama failed", exc_info=True)
            self.llama = None  # type: ignore[assignment]
