"""A world in which a code model fits and can be downloaded, all on 127.0.0.1.

For the model offer (``quill/modelOffer``, ``quill/pullModel``) in the LSP and real-editor
tests: a fake Hugging Face server serves a tiny real GGUF model (Qwen2's real tokenizer from
llama.cpp's vocabulary file, random weights: benchmarks/harness.py ``write_tiny_model``),
and a models folder overrides the ladder's top rung (``qwen2.5-coder-7b``) with a manifest
that points at it.  ``QUILL_MACHINE`` hands in figures under which that rung fits (RAM, and
a prompt speed fast enough for the latency target), as ``models recommend``'s flags would.
The embedded demo model stays what the server starts with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_hub import COMMIT, FakeHub, running, sha

MODEL_ID = "qwen2.5-coder-7b"
MODEL_NAME = "Qwen2.5-Coder test model (tiny random weights)"
HUB_REPO = "quill-test/Qwen2.5-Coder-tiny-GGUF"
HUB_FILE = "qwen2.5-coder-tiny-q8_0.gguf"
# Figures under which the 7B rung fits: plenty of RAM, no GPU, a fast CPU.
FIGURES = {"ramGb": 64, "ramTotalGb": 64, "gpuGb": 0, "promptTokS": 200000, "genMs": 0.2}

_MODEL_CACHE: dict[str, bytes] = {}


def tiny_model_bytes(workdir: Path) -> bytes:
    """The tiny Qwen2 model's bytes (written once per test process)."""
    if "qwen2" not in _MODEL_CACHE:
        from benchmarks.harness import VOCAB_ENV, read_vocab, vocab_file, write_tiny_model

        vocab = vocab_file("qwen2")
        if not vocab.is_file():
            if os.environ.get(VOCAB_ENV):
                pytest.fail(f"{vocab} is missing although {VOCAB_ENV} is set: `make vocab` should have extracted it")
            pytest.skip(f"llama.cpp's vocabulary file {vocab.name} is not in {vocab.parent}: run `make vocab`")
        pytest.importorskip("gguf")
        path = workdir / HUB_FILE
        write_tiny_model(path, read_vocab(vocab), "qwen2", name="tiny qwen2.5-coder")
        _MODEL_CACHE["qwen2"] = path.read_bytes()
    return _MODEL_CACHE["qwen2"]


def manifest_text(content: bytes) -> str:
    return f'''# Test world (tests/offer_world.py): the ladder's top rung, on a tiny model served on 127.0.0.1.
id = "{MODEL_ID}"
name = "{MODEL_NAME}"
family = "qwen2.5-coder"
template = "qwen25coder"
backend = "llama_cpp"
format = "gguf"
architecture = "qwen2"
tokenizer = "bpe"
params = "7B"
quant = "Q8_0"
context_length = 2048
size_mb = {max(1, len(content) // 1_000_000)}
license = "Apache-2.0"
hardware = "test"
stop = ["<|endoftext|>", "<|file_sep|>", "<|fim_pad|>"]
chat_template = "chatml"
description = "{MODEL_NAME}"

[source]
type = "huggingface"
repo = "{HUB_REPO}"
revision = "{COMMIT}"
file = "{HUB_FILE}"
sha256 = "{sha(content)}"
size_bytes = {len(content)}
'''


@dataclass
class OfferWorld:
    root: Path
    hub: FakeHub
    env: dict[str, str]
    model_id: str = MODEL_ID
    model_name: str = MODEL_NAME

    @property
    def cache(self) -> Path:
        return Path(self.env["QUILL_CACHE_DIR"])

    @property
    def pulled(self) -> Path:
        """Where the pull puts the model."""
        return self.cache / "models" / MODEL_ID / HUB_FILE

    def env_json(self) -> str:
        """Just the variables this world sets, as JSON (for a driver in another language)."""
        keys = ("QUILL_MODELS_DIR", "QUILL_CACHE_DIR", "HF_ENDPOINT", "HF_HOME", "QUILL_MACHINE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET")
        return json.dumps({k: self.env[k] for k in keys if k in self.env})


@contextmanager
def offer_world(
    tmp: Path, *, offline: bool = False, throttle_s: float = 2.0, pad_to: int = 0
) -> Iterator[OfferWorld]:
    """Start the fake hub and write the models folder; ``world.env`` starts the editor.
    ``pad_to`` zero-fills the hub's file to that many bytes (a download of several chunks)."""
    root = tmp / "offer-world"
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(exist_ok=True)
    content = tiny_model_bytes(root)
    content += bytes(max(0, pad_to - len(content)))
    (models / f"{MODEL_ID}.toml").write_text(manifest_text(content), encoding="utf-8")
    hub = FakeHub(content, repo=HUB_REPO, file=HUB_FILE)
    hub.throttle_s = throttle_s
    with running(hub):
        env = dict(os.environ)
        env.update(
            QUILL_MODELS_DIR=str(models),
            QUILL_CACHE_DIR=str(root / "cache"),
            HF_ENDPOINT=hub.url,
            HF_HUB_DISABLE_XET="1",
            HF_HOME=str(root / "hf-home"),  # huggingface_hub's own cache, fresh
            QUILL_MACHINE=json.dumps(FIGURES),
        )
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("HF_HUB_DISABLE_TELEMETRY", None)  # Quill must turn it off itself
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        yield OfferWorld(root, hub, env)
