"""``quill-lsp models recommend``: the code model that fits this machine.

Nothing here touches the network.  What it uses, measured unless handed in by flags:

- memory: RAM available and total (``/proc/meminfo`` and the cgroup limit, as the llama.cpp
  backend reads them before it loads a model); GPU memory where this llama-cpp-python
  build can offload (``llama_supports_gpu_offload``) and ``nvidia-smi`` reports it (never
  required), or the unified memory of a Metal build on a Mac.
- speed: the embedded model's prompt tokens/s and ms per generated token, as the engine
  measures and caches them (``engine/session.py`` ``calibrate``, ``perf.json`` in the cache
  folder); measured now (a second or two) when nothing is cached.

A candidate's CPU speed is the embedded model's scaled by size: prompt evaluation (tokens
in batches: arithmetic) inversely with the parameter count, generation (every weight read
once per token) inversely with the bytes of the file.  A GPU's speed is not measured: it is
assumed from conservative figures for a mid-range discrete GPU (``GPU_*`` below).

The ladder: the Qwen2.5-Coder models of the registry, largest first (the family llama.vscode
and llama.vim recommend: fill-in-the-middle and repository context, Apache-2.0).  The first
whose memory need fits and whose first suggestion in a file (a useful prompt of
``PROMPT_TOKENS`` tokens plus ``GEN_TOKENS`` generated ones, by the engine's own budget
rule) fits ``latencyTargetMs`` is the recommendation; when none fits, the embedded model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsp_server.backends.llama_cpp import (
    LOAD_MEMORY_SHARE,
    available_memory,
    gib,
    kv_bytes_per_token,
    read_gguf_metadata,
)
from lsp_server.config import Settings
from lsp_server.config.settings import DEFAULT_MODEL
from lsp_server.engine.session import (
    DEPTH_DISCOUNT,
    OVERHEAD_MS,
    Perf,
    affordable_prompt_tokens,
    load_perf,
    perf_from_entry,
    perf_key,
)
from lsp_server.registry import Manifest, cache_dir, installed_path, load_manifests, read_cache_json

GIB = 1 << 30
# A useful prompt: the lines around the cursor and a little context (a few hundred tokens).
PROMPT_TOKENS = 256
# Tokens a typical suggestion takes (a rest of line): engine.engine.EXPECTED_GEN_TOKENS.
GEN_TOKENS = 10
# The family the ladder is made of.
LADDER_FAMILY = "qwen2.5-coder"
# llama.cpp's compute buffers and runtime besides the weights and the KV cache (about
# n_batch x vocabulary x 4 bytes for a 150k vocabulary, plus the graph).
LLAMA_BUFFERS = int(0.3 * GIB)
# Share of the free GPU memory a model may take (the rest: the desktop, other programs).
GPU_MEMORY_SHARE = 0.9
# Assumed GPU speed (not measured; conservative for a mid-range discrete GPU, e.g. an RTX
# 3060 with 360 GB/s): prompt tokens/s of a 1B-parameter model in the engine's 64-token
# batches, and the effective bandwidth at which generation reads the weights.
GPU_PROMPT_TOK_S_1B = 8000.0
GPU_BANDWIDTH_GBS = 250.0
# Apple silicon (Metal build): the GPU shares the RAM; macOS lets it use about this share.
METAL_MEMORY_SHARE = 0.66
METAL_PROMPT_TOK_S_1B = 3000.0
METAL_BANDWIDTH_GBS = 100.0
# KV cache bytes per context token (f16 K and V, all layers) of ladder models that are not
# installed (installed ones are read from their GGUF header): layers x KV heads x (K + V)
# head size x 2 bytes.
KNOWN_KV_BYTES_PER_TOKEN = {
    "qwen2.5-coder-0.5b": 24 * 2 * (64 + 64) * 2,
    "qwen2.5-coder-1.5b": 28 * 2 * (128 + 128) * 2,
    "qwen2.5-coder-7b": 28 * 4 * (128 + 128) * 2,
}
KV_BYTES_PER_TOKEN_PER_B = 32 * 1024  # otherwise: a generous guess per billion parameters
CACHE_MAX_AGE_S = 7 * 86400


class RecommendError(Exception):
    """The command cannot recommend anything: the message says what to pass."""


@dataclass
class Gpu:
    name: str
    free_bytes: int
    usable: bool  # this llama-cpp-python build can offload to it
    source: str  # "nvidia-smi", "given", "Metal (unified memory)"
    prompt_tok_s_1b: float = GPU_PROMPT_TOK_S_1B
    bandwidth_gbs: float = GPU_BANDWIDTH_GBS


@dataclass
class Speed:
    """The embedded model's measured speed: what every CPU estimate is scaled from."""

    prompt_tok_s: float
    gen_ms: float
    source: str
    model_id: str
    model_name: str
    params_b: float
    size_bytes: int


@dataclass
class Machine:
    ram_available: int
    ram_total: int
    ram_source: str
    gpu: Gpu | None
    gpu_note: str
    speed: Speed


@dataclass
class Target:
    latency_ms: int
    prompt_tokens: int = PROMPT_TOKENS
    gen_tokens: int = GEN_TOKENS
    context_tokens: int = 2048
    kv_cache_mb: int = 512


@dataclass
class Candidate:
    id: str
    name: str
    params_b: float
    size_bytes: int
    quant: str
    installed: bool
    device: str = "cpu"
    memory: str = "RAM"
    need_bytes: int = 0
    usable_bytes: int = 0
    need_detail: str = ""
    prompt_tok_s: float = 0.0
    gen_ms: float = 0.0
    first_ms: float = 0.0
    fits_memory: bool = False
    fits_latency: bool = False
    gpu_reason: str = ""  # why it is not on the GPU, when there is one
    verdict: str = ""  # "recommended", "rejected", "smaller", "fallback"
    reason: str = ""

    @property
    def fits(self) -> bool:
        return self.fits_memory and self.fits_latency


@dataclass
class Recommendation:
    machine: Machine
    target: Target
    candidates: list[Candidate]
    chosen: Candidate
    embedded: bool
    reasoning: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_ranked: dict[str, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- figures
def parse_params(text: str) -> float | None:
    """``"1.5B"`` -> 1.5, ``"135M"`` -> 0.135 (billions of parameters); None if unreadable."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([MB])\s*", text.upper())
    if not m:
        return None
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "M" else value


def _mem(n: float) -> str:
    return gib(n) if n >= GIB else f"{n / (1 << 20):.0f} MiB"


def ram_figures() -> tuple[int, int]:
    """(available, total) bytes of RAM; available as the llama.cpp backend counts it."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    avail = available_memory()
    if avail is None:
        avail = total // 2  # no MemAvailable (not Linux): assume half is free
    return avail, max(total, avail)


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can put layers on a GPU (CUDA, Metal, ...)."""
    try:
        import llama_cpp
    except ImportError:
        return False
    try:
        return bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
    except Exception:  # noqa: BLE001 - a broken build: no GPU
        return False


def nvidia_smi(timeout_s: float = 5.0) -> list[tuple[str, int, int]] | None:
    """(name, total bytes, free bytes) per NVIDIA GPU, or None without a working nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        try:
            gpus.append((parts[0], int(float(parts[1]) * (1 << 20)), int(float(parts[2]) * (1 << 20))))
        except ValueError:
            continue
    return gpus or None


def detect_gpu(ram_available: int, ram_total: int) -> tuple[Gpu | None, str]:
    """The GPU llama.cpp would use, or None and why not."""
    offload = gpu_offload_supported()
    gpus = nvidia_smi()
    if gpus:
        name, _total, free = max(gpus, key=lambda g: g[2])
        more = f" (the largest free of {len(gpus)})" if len(gpus) > 1 else ""
        if offload:
            return Gpu(name, free, True, "nvidia-smi"), f"{name}{more}: {gib(free)} free (nvidia-smi)"
        return Gpu(name, free, False, "nvidia-smi"), (
            f"{name}{more}: {gib(free)} free (nvidia-smi), but this llama-cpp-python build has no GPU support"
        )
    if offload and sys.platform == "darwin":
        free = int(min(ram_available, ram_total * METAL_MEMORY_SHARE))
        gpu = Gpu("Apple GPU", free, True, "Metal (unified memory)", METAL_PROMPT_TOK_S_1B, METAL_BANDWIDTH_GBS)
        return gpu, f"Apple GPU (Metal): shares the RAM, about {gib(free)} usable"
    if offload:
        return None, "this llama.cpp build can offload to a GPU, but its memory is unknown (no nvidia-smi): pass --gpu-gb"
    return None, "none that llama.cpp can use (this llama-cpp-python build has no GPU support)"


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _reference_manifest() -> Manifest:
    manifests = load_manifests()
    if DEFAULT_MODEL not in manifests:
        raise RecommendError(f"the embedded model's manifest ({DEFAULT_MODEL}) is missing from the registry")
    return manifests[DEFAULT_MODEL]


def _cached_perf(path: Path, threads_setting: int) -> Perf | None:
    """The engine's cached figures for the embedded model on the CPU of this machine: the
    entry of these settings, else the newest for any thread setting."""
    perf = load_perf(perf_key("llama_cpp", str(path), 0, threads_setting), CACHE_MAX_AGE_S)
    if perf is not None:
        return perf
    prefix = perf_key("llama_cpp", str(path), 0, 0).rsplit("|", 2)[0] + "|"
    best: Perf | None = None
    for key, entry in read_cache_json(cache_dir() / "perf.json").items():
        if key.startswith(prefix):
            found = perf_from_entry(entry, CACHE_MAX_AGE_S)
            if found is not None and (best is None or found.measured_at > best.measured_at):
                best = found
    return best


def _measure(path: Path, threads_setting: int) -> Perf:
    """Load the embedded model and measure it as the engine does (about 1-2 s)."""
    from lsp_server.backends.base import BackendError
    from lsp_server.backends.llama_cpp import LlamaCppBackend
    from lsp_server.engine.session import calibrate, save_perf

    print(f"quill-lsp: measuring the embedded model's speed on this machine ({path.name})...", file=sys.stderr)
    try:
        backend = LlamaCppBackend(str(path), n_ctx=512, threads=threads_setting)
    except BackendError as exc:
        raise RecommendError(f"could not load the embedded model to measure speed: {exc}") from exc
    try:
        perf = calibrate(backend, threads_setting)
    finally:
        backend.close()
    save_perf(perf_key("llama_cpp", str(path), 0, threads_setting), perf)  # the server reuses it
    return perf


def reference_speed(
    prompt_tok_s: float | None, gen_ms: float | None, *, threads_setting: int = 0, measure: bool = True
) -> Speed:
    """The embedded model's speed: handed in, cached by the engine, or measured now."""
    ref = _reference_manifest()
    params = parse_params(ref.params) or 0.135
    path = installed_path(ref)
    size = path.stat().st_size if path is not None else int(ref.source.size_bytes or ref.size_mb * 1e6)
    sources = []
    if prompt_tok_s is None or gen_ms is None:
        given = prompt_tok_s is not None or gen_ms is not None
        perf = _cached_perf(path, threads_setting) if path is not None else None
        if perf is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(perf.measured_at))
            sources.append(f"cached in {cache_dir() / 'perf.json'}, measured {when}, {_threads(perf.threads)}")
        elif path is not None and measure:
            perf = _measure(path, threads_setting)
            sources.append(f"measured now, {_threads(perf.threads)}")
        else:
            why = "the embedded model is not installed" if path is None else "nothing is cached (--no-measure)"
            raise RecommendError(f"no speed figures: {why}; pass --prompt-tok-s and --gen-ms")
        if given:
            sources.insert(0, "partly given")
        if prompt_tok_s is None:
            prompt_tok_s = perf.prompt_tok_s
        if gen_ms is None:
            gen_ms = perf.gen_ms_per_token
    if prompt_tok_s <= 0:
        raise RecommendError("the prompt speed must be above 0 tokens/s")
    if not sources:
        sources.append("given")
    return Speed(prompt_tok_s, gen_ms, "; ".join(sources), ref.id, ref.name, params, size)


# ------------------------------------------------------------------------- estimates
def _size_bytes(m: Manifest) -> int:
    path = installed_path(m)
    if path is not None:
        return path.stat().st_size
    return int(m.source.size_bytes or m.size_mb * 1e6)


def _kv_per_token(m: Manifest, params_b: float) -> int:
    path = installed_path(m)
    if path is not None and m.format == "gguf":
        try:
            per = kv_bytes_per_token(read_gguf_metadata(str(path), stop_prefix="tokenizer."))
        except Exception:  # noqa: BLE001 - a bad file: fall back to the table
            per = None
        if per:
            return per
    return KNOWN_KV_BYTES_PER_TOKEN.get(m.id, int(KV_BYTES_PER_TOKEN_PER_B * params_b))


def _cpu_speed(c: Candidate, speed: Speed) -> tuple[float, float]:
    prompt = speed.prompt_tok_s * speed.params_b / c.params_b
    gen = speed.gen_ms * c.size_bytes / max(1, speed.size_bytes)
    return prompt, gen


def _gpu_speed(c: Candidate, gpu: Gpu) -> tuple[float, float]:
    return gpu.prompt_tok_s_1b / c.params_b, c.size_bytes / (gpu.bandwidth_gbs * 1e9) * 1000


def first_suggestion_ms(prompt_tok_s: float, gen_ms: float, target: Target) -> float:
    """A cold prompt of ``target.prompt_tokens`` plus ``target.gen_tokens`` generated, as
    the engine budgets it (``affordable_prompt_tokens``: the measured speed discounted for
    a filling context, plus the per-request overhead)."""
    prompt_ms = target.prompt_tokens / max(1e-9, prompt_tok_s * DEPTH_DISCOUNT) * 1000
    return OVERHEAD_MS + prompt_ms + target.gen_tokens * gen_ms


def estimate(m: Manifest, machine: Machine, target: Target, gpu_usable: bool) -> Candidate:
    params = parse_params(m.params) or 0.0
    c = Candidate(m.id, m.name, params, _size_bytes(m), m.quant, installed_path(m) is not None)
    kv = _kv_per_token(m, params) * min(target.context_tokens, m.context_length)
    store = target.kv_cache_mb * (1 << 20)
    base = c.size_bytes + kv + LLAMA_BUFFERS
    detail = f"file {_mem(c.size_bytes)} + KV cache {_mem(kv)} ({min(target.context_tokens, m.context_length)} tokens)"
    detail += f" + llama.cpp buffers {_mem(LLAMA_BUFFERS)}"
    gpu = machine.gpu
    if gpu is not None and gpu_usable:
        usable = int(gpu.free_bytes * GPU_MEMORY_SHARE)
        if base <= usable:
            c.device, c.memory, c.need_bytes, c.usable_bytes = "gpu", "GPU memory", base, usable
            c.need_detail, c.fits_memory = detail, True
            c.prompt_tok_s, c.gen_ms = _gpu_speed(c, gpu)
        else:
            c.gpu_reason = (
                f"does not fit the GPU (needs {gib(base)}, {gib(usable)} usable: "
                f"{GPU_MEMORY_SHARE:.0%} of {gib(gpu.free_bytes)} free)"
            )
    if c.device == "cpu":
        c.need_bytes = base + store
        c.usable_bytes = int(machine.ram_available * LOAD_MEMORY_SHARE)
        c.need_detail = f"{detail} + kvCacheMb {_mem(store)}"
        c.fits_memory = c.need_bytes <= c.usable_bytes
        c.prompt_tok_s, c.gen_ms = _cpu_speed(c, machine.speed)
    c.first_ms = first_suggestion_ms(c.prompt_tok_s, c.gen_ms, target)
    c.fits_latency = c.first_ms <= target.latency_ms
    return c


def _why_not(c: Candidate, machine: Machine, target: Target) -> str:
    problems = []
    if not c.fits_memory:
        share = f"{LOAD_MEMORY_SHARE:.0%} of {gib(machine.ram_available)} available of {gib(machine.ram_total)} total"
        problems.append(f"needs {gib(c.need_bytes)} of RAM ({c.need_detail}), {gib(c.usable_bytes)} usable ({share})")
    if not c.fits_latency:
        problems.append(
            f"a first suggestion takes about {c.first_ms:,.0f} ms{'' if c.gpu_reason else ' on the CPU'} "
            f"({target.prompt_tokens} prompt tokens at ~{c.prompt_tok_s:,.0f} tok/s + {target.gen_tokens} tokens "
            f"at ~{c.gen_ms:,.0f} ms) > the {target.latency_ms} ms latency target"
        )
    return (f"{c.gpu_reason}; on the CPU: " if c.gpu_reason else "") + "; ".join(problems)


def _fits_text(c: Candidate, target: Target) -> str:
    return (
        f"needs {gib(c.need_bytes)} of {c.memory} ({gib(c.usable_bytes)} usable); a first suggestion in about "
        f"{c.first_ms:,.0f} ms on the {c.device.upper()} (~{c.prompt_tok_s:,.0f} prompt tok/s, ~{c.gen_ms:,.0f} ms/token)"
        f" <= {target.latency_ms} ms"
    )


def _not_ranked(manifests: dict[str, Manifest], ladder: set[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for m in manifests.values():
        if m.id in ladder or m.id == DEFAULT_MODEL:
            continue
        if m.format != "gguf":
            why = "legacy GGML files for ctransformers (CPU only, 2023 kernels)"
        elif "non-production" in m.license.lower():
            why = "license does not allow production use"
        elif m.template == "plain":
            why = "no fill-in-the-middle (completes from the prefix only)"
        else:
            why = (
                "code models with fill-in-the-middle; the Qwen2.5-Coder technical report (arXiv 2409.12186) "
                "compares these families' base models with its own and reports Qwen2.5-Coder ahead at the same size"
            )
        groups.setdefault(why, []).append(m.id)
    return groups


def ladder(manifests: dict[str, Manifest]) -> list[Manifest]:
    """The candidates, largest first: the ladder family's llama.cpp models."""
    rungs = [
        m
        for m in manifests.values()
        if m.family == LADDER_FAMILY and m.format == "gguf" and parse_params(m.params) is not None
    ]
    return sorted(rungs, key=lambda m: parse_params(m.params) or 0.0, reverse=True)


def recommend(machine: Machine, target: Target, manifests: dict[str, Manifest] | None = None) -> Recommendation:
    manifests = load_manifests() if manifests is None else manifests
    rungs = ladder(manifests)
    gpu_usable = machine.gpu is not None and machine.gpu.usable
    candidates = [estimate(m, machine, target, gpu_usable) for m in rungs]
    chosen = next((c for c in candidates if c.fits), None)
    reasoning: list[str] = []
    notes: list[str] = []
    for c in candidates:
        if chosen is None or candidates.index(c) < candidates.index(chosen):
            c.verdict, c.reason = "rejected", _why_not(c, machine, target)
            reasoning.append(f"{c.id} rejected: {c.reason}")
        elif c is chosen:
            c.verdict, c.reason = "recommended", _fits_text(c, target)
            reasoning.append(f"{c.id} fits: {c.reason}")
        else:
            c.verdict, c.reason = "smaller", f"smaller than {chosen.id}, which fits"
    embedded = chosen is None
    if chosen is None:
        if DEFAULT_MODEL not in manifests:
            raise RecommendError(f"no ladder model fits and the embedded model ({DEFAULT_MODEL}) is not in the registry")
        chosen = estimate(manifests[DEFAULT_MODEL], machine, target, gpu_usable)
        chosen.verdict = "fallback"
        chosen.reason = (
            f"none of the {LADDER_FAMILY} models fits this machine; the embedded model is installed and "
            f"needs no download"
        )
        reasoning.append(f"{chosen.id} (embedded): {chosen.reason}")
        if not chosen.fits_latency:
            perf = Perf(chosen.prompt_tok_s, chosen.gen_ms, 1, time.time())
            quick = affordable_prompt_tokens(perf, target.latency_ms, target.gen_tokens)
            notes.append(
                f"even the embedded model needs about {chosen.first_ms:,.0f} ms for a {target.prompt_tokens}-token "
                f"prompt here; the engine starts a file with a shorter prompt (about {quick} tokens fit the "
                f"{target.latency_ms} ms target) and evaluates the rest while you pause"
            )
        if not chosen.fits_memory:
            notes.append(
                f"the embedded model itself needs about {gib(chosen.need_bytes)} with these settings and "
                f"{gib(chosen.usable_bytes)} is usable: lower kvCacheMb or contextTokens, or free memory"
            )
    if machine.gpu is not None and not machine.gpu.usable:
        alt = next((c for c in (estimate(m, machine, target, True) for m in rungs) if c.fits), None)
        if alt is not None and alt.id != chosen.id:
            notes.append(
                f"with a GPU build of llama.cpp the {machine.gpu.name} would run {alt.id} "
                f"(first suggestion ~{alt.first_ms:,.0f} ms): make install LLAMA_CMAKE_ARGS=\"-DGGML_CUDA=on\", "
                "then gpuLayers -1 (docs/models-and-backends.md, Using a GPU)"
            )
    rec = Recommendation(machine, target, candidates, chosen, embedded, reasoning, notes)
    rec.not_ranked = _not_ranked(manifests, {m.id for m in rungs})
    return rec


# -------------------------------------------------------------------------- output
def _size_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _settings_for(rec: Recommendation) -> dict[str, Any]:
    out: dict[str, Any] = {"model": rec.chosen.id}
    if rec.chosen.device == "gpu":
        out["gpuLayers"] = -1
    return out


def pull_command(rec: Recommendation) -> str | None:
    if rec.embedded or rec.chosen.installed:
        return None
    return f"quill-lsp models pull {rec.chosen.id}"


def as_json(rec: Recommendation) -> dict[str, Any]:
    m, c, g = rec.machine, rec.chosen, rec.machine.gpu

    def cand(x: Candidate) -> dict[str, Any]:
        return {
            "id": x.id,
            "params": x.params_b,
            "quant": x.quant,
            "sizeBytes": x.size_bytes,
            "installed": x.installed,
            "device": x.device,
            "memory": x.memory,
            "memoryNeedGiB": round(x.need_bytes / GIB, 2),
            "memoryUsableGiB": round(x.usable_bytes / GIB, 2),
            "promptTokensPerS": round(x.prompt_tok_s, 1),
            "genMsPerToken": round(x.gen_ms, 1),
            "firstSuggestionMs": round(x.first_ms),
            "fitsMemory": x.fits_memory,
            "fitsLatency": x.fits_latency,
            "verdict": x.verdict,
            "reason": x.reason,
        }

    return {
        "recommended": {
            "id": c.id,
            "name": c.name,
            "params": c.params_b,
            "quant": c.quant,
            "sizeBytes": c.size_bytes,
            "size": _size_text(c.size_bytes),
            "device": c.device,
            "installed": c.installed,
            "embedded": rec.embedded,
            "pullCommand": pull_command(rec),
            "settings": _settings_for(rec),
        },
        "machine": {
            "ramAvailableGiB": round(m.ram_available / GIB, 2),
            "ramTotalGiB": round(m.ram_total / GIB, 2),
            "ramSource": m.ram_source,
            "gpu": None
            if g is None
            else {"name": g.name, "freeGiB": round(g.free_bytes / GIB, 2), "usable": g.usable, "source": g.source},
            "gpuNote": m.gpu_note,
            "reference": {
                "model": m.speed.model_id,
                "promptTokensPerS": round(m.speed.prompt_tok_s, 1),
                "genMsPerToken": round(m.speed.gen_ms, 2),
                "source": m.speed.source,
            },
        },
        "target": {
            "latencyTargetMs": rec.target.latency_ms,
            "promptTokens": rec.target.prompt_tokens,
            "genTokens": rec.target.gen_tokens,
            "contextTokens": rec.target.context_tokens,
            "kvCacheMb": rec.target.kv_cache_mb,
        },
        "candidates": [cand(x) for x in rec.candidates] + ([cand(c)] if rec.embedded else []),
        "reasoning": rec.reasoning,
        "notes": rec.notes,
        "notRanked": rec.not_ranked,
    }


def render_text(rec: Recommendation) -> str:
    m, c, t = rec.machine, rec.chosen, rec.target
    where = "on the GPU" if c.device == "gpu" else "on the CPU"
    lines = []
    if rec.embedded:
        lines.append(f"Recommended: {c.id} (the embedded default), {c.name}: {_size_text(c.size_bytes)} file, {c.quant}")
        lines.append("Get it:      nothing to get: `make install` installed it")
        lines.append("             No code model of the registry fits this machine (see why below).")
    else:
        lines.append(f"Recommended: {c.id}, {c.name}: {_size_text(c.size_bytes)} file, {c.quant}, {where}")
        pull = pull_command(rec)
        lines.append(f"Get it:      {pull}" if pull else "Get it:      already installed")
    if rec.embedded:
        lines.append(f"Then set:    nothing: it is the default model ({json.dumps(_settings_for(rec))})")
    else:
        lines.append(f"Then set:    {json.dumps(_settings_for(rec))}  (editor settings, section quill)")
    lines += ["", "Why:"] + [f"  - {r}" for r in rec.reasoning] + [f"  - note: {n}" for n in rec.notes]
    lines += ["", "This machine:"]
    lines.append(f"  RAM     {gib(m.ram_available)} available of {gib(m.ram_total)} total ({m.ram_source})")
    lines.append(f"  GPU     {m.gpu_note}")
    if m.gpu is not None and m.gpu.usable:
        lines.append(
            f"          GPU speed assumed, not measured: ~{m.gpu.prompt_tok_s_1b:,.0f} prompt tok/s for 1B parameters, "
            f"weights read at {m.gpu.bandwidth_gbs:.0f} GB/s"
        )
    s = m.speed
    lines.append(
        f"  speed   {s.model_name}: {s.prompt_tok_s:,.0f} prompt tok/s, {s.gen_ms:.1f} ms/token on the CPU ({s.source})"
    )
    lines.append(
        f"  target  latencyTargetMs {t.latency_ms}: a {t.prompt_tokens}-token prompt + {t.gen_tokens} generated tokens "
        f"(contextTokens {t.context_tokens}, kvCacheMb {t.kv_cache_mb})"
    )
    lines += [
        "",
        f"Candidates, estimated (CPU: {s.model_id}'s speed scaled by 1/parameters for prompts, 1/file bytes per token):",
    ]
    header = ("model", "params", "file", "device", "memory need/usable", "prompt tok/s", "ms/token", "first ms", "verdict")
    rows = [
        (
            x.id,
            f"{x.params_b:g}B",
            _size_text(x.size_bytes),
            x.device,
            f"{x.need_bytes / GIB:.1f}/{x.usable_bytes / GIB:.1f} GiB {'VRAM' if x.device == 'gpu' else 'RAM'}",
            f"{x.prompt_tok_s:,.0f}",
            f"{x.gen_ms:,.0f}",
            f"{x.first_ms:,.0f}",
            x.verdict,
        )
        for x in rec.candidates + ([c] if rec.embedded else [])
    ]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if rec.not_ranked:
        lines += ["", "Not ranked (set \"model\" to any of them to use it anyway):"]
        lines += [f"  - {', '.join(ids)}: {why}" for why, ids in rec.not_ranked.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def build_machine(
    *,
    ram_gb: float | None = None,
    ram_total_gb: float | None = None,
    gpu_gb: float | None = None,
    prompt_tok_s: float | None = None,
    gen_ms: float | None = None,
    threads_setting: int = 0,
    measure: bool = True,
    speed: Speed | None = None,
) -> Machine:
    """The machine's figures: each one handed in, else measured (``speed``: the embedded
    model's figures already in hand, e.g. the server's own measurement)."""
    if ram_gb is not None:
        avail = int(ram_gb * GIB)
        total = int((ram_total_gb if ram_total_gb is not None else ram_gb) * GIB)
        ram_source = "given"
    else:
        avail, total = ram_figures()
        if ram_total_gb is not None:
            total = int(ram_total_gb * GIB)
        ram_source = "measured: /proc/meminfo and the cgroup limit" if platform.system() == "Linux" else "measured"
    if gpu_gb is not None:
        gpu = Gpu("GPU", int(gpu_gb * GIB), True, "given") if gpu_gb > 0 else None
        note = f"{gib(gpu.free_bytes)} free (given)" if gpu else "none (given)"
    else:
        gpu, note = detect_gpu(avail, total)
    if speed is None or prompt_tok_s is not None or gen_ms is not None:
        speed = reference_speed(prompt_tok_s, gen_ms, threads_setting=threads_setting, measure=measure)
    return Machine(avail, max(total, avail), ram_source, gpu, note, speed)


def machine_from_args(args: argparse.Namespace, settings: Settings) -> Machine:
    return build_machine(
        ram_gb=args.ram_gb,
        ram_total_gb=args.ram_total_gb,
        gpu_gb=args.gpu_gb,
        prompt_tok_s=args.prompt_tok_s,
        gen_ms=args.gen_ms,
        threads_setting=settings.threads,
        measure=not args.no_measure,
    )


def target_for(settings: Settings, latency_ms: int | None = None, prompt_tokens: int | None = None) -> tuple[Target, list[str]]:
    """The latency target to recommend for: ``latencyTargetMs`` unless handed one."""
    target_ms = latency_ms if latency_ms is not None else settings.latency_target_ms
    notes = []
    if target_ms <= 0:
        notes.append("latencyTargetMs is 0 (no target): recommending for 1000 ms")
        target_ms = 1000
    target = Target(
        target_ms,
        prompt_tokens=max(1, prompt_tokens or PROMPT_TOKENS),
        context_tokens=settings.context_tokens,
        kv_cache_mb=settings.kv_cache_mb,
    )
    return target, notes


def run(args: argparse.Namespace, settings: Settings) -> int:
    target, notes = target_for(settings, args.latency_target_ms, args.prompt_tokens)
    try:
        rec = recommend(machine_from_args(args, settings), target)
    except RecommendError as exc:
        print(f"quill-lsp: {exc}", file=sys.stderr)
        return 1
    rec.notes[:0] = notes
    print(json.dumps(as_json(rec), indent=2) if args.json else render_text(rec))
    return 0
