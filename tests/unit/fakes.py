"""A small fake model for fast unit tests of the engine's logic (never the only proof)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from lsp_server.backends import GenerationRequest, GenerationResult, ModelInfo
from lsp_server.engine.model import LoadedModel
from lsp_server.families.completion import get_template


class CharTokenizer:
    """One token per character; control tokens in ``specials`` are single tokens."""

    def __init__(self, specials: Sequence[str] = ()) -> None:
        self.specials = {s: 100_000 + i for i, s in enumerate(specials)}
        self.rev = {v: k for k, v in self.specials.items()}

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        if special and text in self.specials:
            return [self.specials[text]]
        return [ord(c) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self.rev.get(t, chr(t)) if t >= 100_000 else chr(t) for t in tokens)

    def bos_tokens(self) -> list[int]:
        return [1]


class FakeBackend(CharTokenizer):
    """Generates ``reply(prompt_text)`` one character per step, honouring cancel."""

    def __init__(self, reply: Callable[[str], str], step_s: float = 0.0, n_ctx: int = 2048) -> None:
        super().__init__()
        self.reply = reply
        self.step_s = step_s
        self.info = ModelInfo(name="fake", n_ctx=n_ctx)
        self.calls: list[GenerationRequest] = []
        self.started = threading.Event()

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        self.calls.append(request)
        self.started.set()
        prompt_text = self.detokenize([t for t in request.prompt if t != 1])
        full = request.forced_prefix + self.reply(prompt_text)
        out = ""
        reason = "length"
        for ch in full[: request.max_tokens]:
            if cancel.is_set():
                reason = "cancelled"
                break
            if self.step_s:
                time.sleep(self.step_s)
            out += ch
            if request.should_stop is not None and len(out) >= len(request.forced_prefix) and request.should_stop(out):
                reason = "condition"
                break
        else:
            reason = "eos" if len(full) <= request.max_tokens else "length"
        return GenerationResult(out, [ord(c) for c in out], len(request.prompt), 0, 0.0, 0.0, reason)

    def close(self) -> None:
        pass


def fake_loaded(reply: Callable[[str], str], step_s: float = 0.0) -> LoadedModel:
    return LoadedModel(backend=FakeBackend(reply, step_s), template=get_template("plain"), stop=())


class SlotFakeBackend(FakeBackend):
    """A fake with the in-process backends' KV-slot interface (``kv_store``, ``eval_cost``,
    ``prefill``, ``measure``), for the engine's session logic.  Evaluating a prompt token
    costs ``eval_s``; the reuse rules are the real ones (``kv_store.plan_reuse``)."""

    def __init__(self, reply: Callable[[str], str], eval_s: float = 0.0, n_ctx: int = 4096,
                 prompt_tok_s: float = 200.0, gen_ms: float = 5.0, kv_cache_mb: int = 64) -> None:
        super().__init__(reply, 0.0, n_ctx)
        from lsp_server.backends.kv_store import SnapshotStore

        self.eval_s = eval_s
        self.speed = (prompt_tok_s, gen_ms)
        self.kv_store = SnapshotStore(kv_cache_mb * 1024 * 1024)
        self.slots: dict[str, list[int]] = {}
        self.prefills: list[tuple[str, int, bool]] = []  # (slot, evaluated, complete)
        self.n_threads = 1

    def _plan(self, slot: str, prompt: Sequence[int]) -> int:
        from lsp_server.backends.kv_store import best_seed, plan_reuse

        key = slot if self.kv_store.enabled else ""
        cached = self.slots.get(key, [])
        if not cached and self.kv_store.enabled:  # a new slot starts from its seed
            return best_seed({k: v for k, v in self.kept_states().items() if k != key}, prompt, 32)[1]
        return plan_reuse(cached, prompt, 32).keep

    def kept_states(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.slots.items() if v} if self.kv_store.enabled else {}

    def eval_cost(self, prompt: Sequence[int], slot: str = "") -> int:
        return len(prompt) - self._plan(slot, prompt)

    def slot_tokens(self, slot: str) -> int:
        return len(self.slots.get(slot if self.kv_store.enabled else "", []))

    def _eval(self, prompt: Sequence[int], slot: str, cancel: threading.Event) -> tuple[int, int, bool]:
        key = slot if self.kv_store.enabled else ""
        keep = self._plan(slot, prompt)
        done = keep
        while done < len(prompt):
            if cancel.is_set():
                break
            step = min(8, len(prompt) - done)
            if self.eval_s:
                time.sleep(self.eval_s * step)
            done += step
        self.slots[key] = list(prompt[:done])
        return keep, done - keep, done >= len(prompt)

    def prefill(self, prompt: Sequence[int], slot: str, cancel: threading.Event, batch: int):  # noqa: ANN201
        from lsp_server.backends.llama_cpp import PrefillResult

        keep, evaluated, complete = self._eval(prompt, slot, cancel)
        self.prefills.append((slot, evaluated, complete))
        return PrefillResult(len(prompt), keep, 0, evaluated, complete, 0.0)

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        keep, evaluated, complete = self._eval(request.prompt, request.slot, cancel)
        if not complete:
            return GenerationResult("", [], len(request.prompt), keep, 0.0, 0.0, "cancelled", evaluated)
        result = super().generate(request, cancel)
        result.reused_tokens, result.evaluated_tokens = keep, evaluated
        return result

    def measure(self, threads: int, sample: Sequence[int], n_gen: int = 6):  # noqa: ANN201
        from lsp_server.backends.llama_cpp import Throughput

        return Throughput(threads, *self.speed)

    def set_threads(self, threads: int, batch_threads: int = 0) -> None:
        self.n_threads, self.n_threads_batch = threads, batch_threads or threads


def slot_fake_loaded(reply: Callable[[str], str], **kwargs: float) -> LoadedModel:
    return LoadedModel(backend=SlotFakeBackend(reply, **kwargs), template=get_template("plain"), stop=())  # type: ignore[arg-type]
