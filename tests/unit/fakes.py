"""A small fake model for fast unit tests of the engine's logic (never the only proof)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

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
