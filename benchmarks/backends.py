#!/usr/bin/env python3
"""Per-backend latency of the same completion: llama_cpp, ctransformers, openai.

Each backend gets the same prompt tokens and generates the same number of tokens
greedily.  Two figures per backend, median of ``--reps`` runs:

- cold: the whole prompt evaluated (no KV reuse) plus the generation;
- keystroke: the same prompt plus one token, right after a completion of the prompt (what
  typing costs: prefix reuse, then the generation).

Two models:

1. the default model, SmolLM2-135M (Q4_1), which llama_cpp and openai run (ctransformers
   cannot: its vocabulary is BPE);
2. a synthetic model all three backends can run: SmolLM2's shape (30 layers, 576 wide,
   GQA 9/3, 32k SentencePiece vocabulary, Q8_0) with random weights, built here with the
   ``gguf`` package (mechanics and speed only; the text is noise).

The openai backend talks to ``python -m llama_cpp.server`` started here on 127.0.0.1 with
the same model and thread count.

    python benchmarks/backends.py --reps 5 --prompt-tokens 400 --new-tokens 24
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import LlamaServer, LlamaShape, installed_model, spm_vocab, write_llama_gguf  # noqa: E402
from lsp_server.backends import Backend, GenerationRequest  # noqa: E402
from lsp_server.config import Settings  # noqa: E402
from lsp_server.engine.model import load_model  # noqa: E402

SAMPLE = Path(__file__).read_text(encoding="utf-8") * 4


def build_synthetic(path: Path, seed: int = 0) -> Path:
    """SmolLM2-135M's shape as a GGUF llama with a SentencePiece vocab, Q8_0, random weights."""
    n_vocab = 32000
    words = sorted({w_ for w_ in SAMPLE.replace("\n", " ").split(" ") if w_.isidentifier()})
    pieces = ["▁"] + [f"▁{x}" for x in words] + words
    i = 0
    while len(pieces) < n_vocab - 3 - 256:  # the room <unk> <s> </s> and the byte pieces leave
        pieces.append(f"▁tok{i}")
        i += 1
    shape = LlamaShape(n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536, context_length=2048)
    vocab = spm_vocab(pieces, size=n_vocab)
    return write_llama_gguf(path, vocab, shape, name="synthetic-135m-spm", q8_0=True, weight_scale=0.05, seed=seed)


def one_round(backend: Backend, prompt: list[int], new_tokens: int, r: int, out: dict[str, list[float]]) -> int:
    """One cold completion and one keystroke; appends the timings to ``out``."""
    # Cold: change the first token after BOS so nothing is reused.
    variant = list(prompt)
    variant[1] = prompt[1 + (r % 5)]
    t0 = time.perf_counter()
    res = backend.generate(GenerationRequest(prompt=variant, max_tokens=new_tokens), threading.Event())
    out["cold"].append((time.perf_counter() - t0) * 1000)
    if res.tokens:
        out["per_token"].append(res.generate_ms / len(res.tokens))
    # Keystroke: the same prompt plus one token.
    t0 = time.perf_counter()
    res = backend.generate(GenerationRequest(prompt=variant + [prompt[-1]], max_tokens=new_tokens), threading.Event())
    out["keystroke"].append((time.perf_counter() - t0) * 1000)
    return len(res.tokens)


def compare(label: str, path: str, threads: int, prompt_tokens: int, new_tokens: int, reps: int) -> None:
    """All backends loaded side by side and measured in turn, round after round, so that
    they see the same machine load (this matters on a shared machine)."""
    common: dict[str, Any] = {"threads": threads, "context_tokens": 2048}
    server: LlamaServer | None = None
    loaded: dict[str, Backend] = {}
    try:
        for name in ("llama_cpp", "ctransformers", "openai"):
            try:
                if name == "openai":
                    server = LlamaServer(path, threads, threads_batch=threads)
                    settings = Settings(backend="openai", endpoint=server.url, model=path, **common)
                else:
                    settings = Settings(backend=name, model=path, **common)
                loaded[name] = load_model(settings).backend
            except Exception as exc:  # a backend that cannot run this model says why
                print(f"{label:26s} {name:14s} cannot run it: {type(exc).__name__}: {exc}", flush=True)
        prompts = {n: (b.bos_tokens() + b.tokenize(SAMPLE))[:prompt_tokens] for n, b in loaded.items()}
        for n, b in loaded.items():  # warm-up (page in the weights): not measured
            b.generate(GenerationRequest(prompt=prompts[n][:50], max_tokens=2), threading.Event())
        times: dict[str, dict[str, list[float]]] = {n: {"cold": [], "keystroke": [], "per_token": []} for n in loaded}
        generated = {n: 0 for n in loaded}
        for r in range(reps):
            for n, b in loaded.items():
                generated[n] = one_round(b, prompts[n], new_tokens, r, times[n])
        for n in loaded:
            t = times[n]
            per_token = statistics.median(t["per_token"]) if t["per_token"] else float("nan")
            print(
                f"{label:26s} {n:14s} cold {statistics.median(t['cold']):7.0f} ms  "
                f"keystroke {statistics.median(t['keystroke']):7.0f} ms  {per_token:6.1f} ms/token  "
                f"({len(prompts[n])} prompt tokens, {generated[n]} generated)",
                flush=True,
            )
    finally:
        for b in loaded.values():
            b.close()
        if server is not None:
            server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=400)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args()

    smol = installed_model("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory(prefix="quill-bench-") as tmp:
        models: list[tuple[str, str]] = []
        if smol is not None:
            models.append(("SmolLM2-135M Q4_1", str(smol)))
        if not args.skip_synthetic:
            t0 = time.perf_counter()
            synth = build_synthetic(Path(tmp) / "synthetic-135m-spm-q8_0.gguf")
            print(
                f"built the synthetic SentencePiece model ({synth.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            models.append(("synthetic 135M SPM Q8_0", str(synth)))
        for label, path in models:
            compare(label, path, args.threads, args.prompt_tokens, args.new_tokens, args.reps)
    print(
        f"{args.reps} reps, median; {args.threads} thread(s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
