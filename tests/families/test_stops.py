"""Generation stops at each family's stop tokens, on the real vocabulary.

The weights are random, so the model is made to emit a given token with a logit bias:
the backend's logits get +100 on a chosen token at each step (``steer``), the rest of the
path is Quill's and llama.cpp's (the decode loop, llama.cpp's end-of-generation set, the
stop strings the engine passes, the token pieces).  The same steering with an ordinary
token in the stop token's place runs to ``max_tokens``: the stop is the stop token's doing.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lsp_server.backends import GenerationRequest

from .seed import Family


def stop_token_ids(loaded) -> dict[str, int]:
    """The token each stop string names in this vocabulary: its own text, or SentencePiece's
    spelling with a leading '▁' (Code Llama's ``▁<EOT>``)."""
    b = loaded.backend
    out: dict[str, int] = {}
    for stop in loaded.stop:
        for text in (stop, "▁" + stop):
            ids = b.tokenize(text, special=True)
            if len(ids) == 1:
                out[stop] = ids[0]
                break
    return out


def steer(backend, monkeypatch: pytest.MonkeyPatch, prompt_len: int, sequence: list[int]) -> None:
    """From now on, the token at generation step i is ``sequence[i]`` (a logit bias)."""
    real = backend._logits

    def logits() -> np.ndarray:
        out = np.array(real(), copy=True)
        step = backend.llama.n_tokens - prompt_len
        if 0 <= step < len(sequence):
            out[sequence[step]] = float(out.max()) + 100.0
        return out

    monkeypatch.setattr(backend, "_logits", logits)


def generate(loaded, monkeypatch, sequence: list[int], max_tokens: int = 6):
    b = loaded.backend
    prompt = b.bos_tokens() + b.tokenize("def add(a, b):\n    return a + b\n")
    steer(b, monkeypatch, len(prompt), sequence)
    request = GenerationRequest(prompt=prompt, max_tokens=max_tokens, stop=loaded.stop)
    return b.generate(request, threading.Event())


def filler(b) -> tuple[int, int]:
    """Two ordinary tokens of this vocabulary."""
    return b.tokenize(" y")[-1], b.tokenize(" z")[-1]


def test_every_stop_string_is_a_token_of_the_vocabulary(fam: Family, by_manifest, bare):
    for loaded in (by_manifest, bare):
        ids = stop_token_ids(loaded)
        assert set(ids) == set(loaded.stop), f"not tokens of {fam.vocab}: {set(loaded.stop) - set(ids)}"
    # The published end-of-text tokens are among them.
    assert set(fam.ends) <= set(stop_token_ids(by_manifest).values()) | set(_eog(by_manifest, fam.ends))


def _eog(loaded, ids) -> list[int]:
    return [t for t in ids if loaded.backend.is_eog(t)]


@pytest.mark.parametrize("which", ["by_manifest", "bare"])
def test_generation_stops_at_each_stop_token(fam: Family, which: str, request, monkeypatch):
    loaded = request.getfixturevalue(which)
    b = loaded.backend
    y, z = filler(b)
    # Control: an ordinary token where the stop token will be: generation runs on.
    ran = generate(loaded, monkeypatch, [y, y, z, y, y, y])
    assert ran.stop_reason == "length" and ran.tokens == [y, y, z, y, y, y]
    targets = dict(stop_token_ids(loaded))
    targets.update({f"end id {t}": t for t in fam.ends})
    missed = {}
    for stop, token in targets.items():
        out = generate(loaded, monkeypatch, [y, y, token, y, y, y])
        if out.stop_reason not in ("eos", "stop") or out.tokens[:2] != [y, y] or len(out.tokens) > 3:
            missed[stop] = (token, out.stop_reason, out.tokens)
            continue
        # Nothing of the stop token reaches the suggestion.
        assert out.text == b.detokenize([y, y]), stop
    assert not missed, f"generation ran past these stop tokens: {missed}"
