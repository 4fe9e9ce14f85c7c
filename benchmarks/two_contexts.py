#!/usr/bin/env python3
"""A second llama.cpp context for idle-time prefill, measured against one shared context.

Quill runs idle-time work (a file's full prompt, the workspace's likely context) on the
model thread in slices of about 50 ms; a request waits for the slice in progress to end
and then has every core.  The alternative (issue 22): a second context over the same
weights (mmap shares their pages) that keeps prefilling while the request decodes.

A request here is what a first request in a file costs: a quick prompt of ``--prompt``
tokens, then ``--gen`` generated tokens.  Idle work is a prompt of ``--idle`` tokens
evaluated in slices of about ``--slice-ms``.  Printed for each way, over ``--reps`` requests: the request's
median and p90 ms, and the idle prompt tokens evaluated per second while requests ran.

- ``one context``: idle slices and requests on one thread, as Quill's model thread runs
  them: a request lands somewhere in a slice, waits for its end, then has all threads.
- ``two contexts, T+T``: the request on one context and idle prefill on the other at
  the same time, each with T threads.

Usage: python benchmarks/two_contexts.py [--threads 2] [--reps 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Tokens per slice of idle work: set in main() to about 50 ms of prompt evaluation, as
# Quill's session.prefill_batch sizes it.
SLICE = 16


def make_context(model: str, threads: int, n_ctx: int):  # type: ignore[no-untyped-def]
    from llama_cpp import Llama

    return Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)


def text_tokens(llm, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    source = Path(os.__file__).read_text(encoding="utf-8")
    tokens = llm.tokenize(source.encode(), add_bos=False)
    return list(tokens[:n])


def request(llm, prompt: list[int], gen: int) -> float:  # type: ignore[no-untyped-def]
    """ms for a request on a fresh state: evaluate ``prompt``, then ``gen`` tokens one by one."""
    llm.reset()
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    t0 = time.perf_counter()
    llm.eval(prompt)
    token = prompt[-1]
    for _ in range(gen):
        llm.eval([token])
    return (time.perf_counter() - t0) * 1000


class Idle:
    """Idle prefill on ``llm`` in slices of SLICE tokens, from the start again when full."""

    def __init__(self, llm, tokens: list[int]) -> None:  # type: ignore[no-untyped-def]
        self.llm, self.tokens, self.done, self.pos = llm, tokens, 0, 0

    def step(self) -> None:
        if self.pos == 0:
            self.llm.reset()
            self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        part = self.tokens[self.pos : self.pos + SLICE]
        self.llm.eval(part)
        self.done += len(part)
        self.pos = 0 if self.pos + SLICE >= len(self.tokens) else self.pos + SLICE


def one_context(model: str, threads: int, prompt: list[int], idle_tokens: list[int], gen: int, reps: int, gap: float) -> tuple[list[float], float]:
    """Requests on the context that does idle work between them (one model thread)."""
    llm = make_context(model, threads, 4096)
    idle = Idle(llm, idle_tokens)
    times: list[float] = []
    t_start = time.perf_counter()
    for i in range(reps):
        # The request lands somewhere in a slice of idle work and waits for its end.
        t_slice = time.perf_counter()
        idle.step()
        slice_ms = (time.perf_counter() - t_slice) * 1000
        times.append(slice_ms * (1 - ((i % 4) + 0.5) / 4) + request(llm, prompt, gen))
        idle.pos = 0  # the request took the state: idle work starts its prompt again
        t_gap = time.perf_counter()
        while time.perf_counter() - t_gap < gap:
            idle.step()
    rate = idle.done / (time.perf_counter() - t_start)
    llm.close()
    return times, rate


def two_contexts(model: str, threads: int, prompt: list[int], idle_tokens: list[int], gen: int, reps: int, gap: float) -> tuple[list[float], float]:
    """Requests on one context while another prefills all the time."""
    a = make_context(model, threads, 4096)
    b = make_context(model, threads, 4096)
    idle = Idle(b, idle_tokens)
    stop = threading.Event()

    def run_idle() -> None:
        while not stop.is_set():
            idle.step()

    worker = threading.Thread(target=run_idle, daemon=True)
    t_start = time.perf_counter()
    worker.start()
    times = []
    for _ in range(reps):
        times.append(request(a, prompt, gen))
        time.sleep(gap)
    stop.set()
    worker.join()
    rate = idle.done / (time.perf_counter() - t_start)
    a.close()
    b.close()
    return times, rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="a .gguf path (default: the embedded model)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the cores a request may use")
    ap.add_argument("--prompt", type=int, default=160, help="quick prompt tokens of a request")
    ap.add_argument("--gen", type=int, default=10, help="tokens a request generates")
    ap.add_argument("--idle", type=int, default=1024, help="tokens of the idle-time prompt")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--slice-ms", type=float, default=50.0, help="a slice of idle work, ms (Quill: 50)")
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between requests (idle time)")
    args = ap.parse_args()
    model = args.model
    if not model:
        from lsp_server.registry import resolve_model

        model = str(resolve_model("smollm2-135m-instruct").path)
    probe = make_context(model, 1, 512)
    tokens = text_tokens(probe, args.prompt + args.idle)
    probe.close()
    prompt, idle_tokens = tokens[: args.prompt], tokens[args.prompt :]
    global SLICE
    timer = make_context(model, args.threads, 4096)
    timer.eval(idle_tokens[:256])  # warm up
    timer.reset()
    timer._ctx.kv_cache_seq_rm(-1, 0, -1)
    t0 = time.perf_counter()
    timer.eval(idle_tokens[:256])
    rate = 256 / (time.perf_counter() - t0)
    timer.close()
    SLICE = max(4, int(rate * args.slice_ms / 1000))
    half = max(1, args.threads // 2)
    ways = [("one context", one_context, args.threads), (f"two contexts, {half}+{half}", two_contexts, half)]
    if half != args.threads:
        ways.append((f"two contexts, {args.threads}+{args.threads}", two_contexts, args.threads))
    print(
        f"{Path(model).name}; request: {args.prompt} prompt + {args.gen} generated tokens, {args.gap:g} s apart; "
        f"idle prompt {args.idle} tokens in slices of {SLICE} ({rate:.0f} tok/s); {args.reps} requests; load {os.getloadavg()[0]:.1f}"
    )
    print("| way | request p50 ms | request p90 ms | idle prompt tokens/s |")
    print("|---|---|---|---|")
    base = None
    for name, fn, threads in ways:
        times, rate = fn(model, threads, prompt, idle_tokens, args.gen, args.reps, args.gap)
        p50 = statistics.median(times)
        p90 = sorted(times)[min(len(times) - 1, int(0.9 * len(times)))]
        base = base or p50
        print(f"| {name} | {p50:.0f} ({p50 / base:.2f}x) | {p90:.0f} | {rate:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
