#!/usr/bin/env python3
"""SmolLM2-135M vs Gemma 3 270M side by side: quality and keystroke latency, to choose the
default model by measurement.

Quality: the dev set's fill-in-the-middle cases (``shared/eval/dev/fim_random_span.jsonl``,
HumanEval random-span infilling), pass@1 with greedy decoding and exact match.  Two modes:

- ``engine`` (default): the completion engine exactly as the server runs it (template,
  token budget, token healing, line/block decision, post-processing), cache off;
- ``direct``: the model called straight through the backend, plain prefix, greedy, one
  line: the set-up of the figures quoted in the issue, for comparison.

Keystroke latency: a typing replay through the engine, one line per keystroke (the first
``--keystrokes`` lines of the standard library's ``textwrap.py``, cursor at the end), the
completion cache off so every keystroke runs the model.  Gemma 3 is run twice: with the
full-size sliding-window cache the backend uses (``swa_full``), and with llama.cpp's
window-sized cache, where prefix reuse has to be refused whenever the cache no longer holds
the window (it would be wrong), to show what the full cache buys.

    python benchmarks/models.py                          # everything
    python benchmarks/models.py --limit 40 --keystrokes 60
    python benchmarks/models.py --skip-quality --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import dev_dir, fim_passes, percentile, read_jsonl  # noqa: E402
from lsp_server.backends import GenerationRequest  # noqa: E402
from lsp_server.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from lsp_server.config import Settings  # noqa: E402
from lsp_server.engine.engine import CompletionEngine, CompletionRequest  # noqa: E402
from lsp_server.engine.model import LoadedModel, load_model  # noqa: E402
from lsp_server.families.completion import get_template  # noqa: E402
from lsp_server.registry import get_manifest, resolve_model  # noqa: E402

MODELS = ["smollm2-135m-instruct", "gemma3-270m"]


def load_cases(path: Path | None, limit: int | None) -> list[dict[str, Any]]:
    if path is None:
        path = dev_dir() / "fim_random_span.jsonl"
    if not path.is_file():
        raise SystemExit("fim_random_span.jsonl not found; pass --dev-set")
    cases = read_jsonl(path)
    return cases[:limit] if limit else cases


def settings_for(model: str, threads: int) -> Settings:
    return Settings(model=model, threads=threads, workspace_context=False, cache_completions=False)


def loader_with(swa_full: bool) -> Callable[[Settings], LoadedModel]:
    """``load_model`` with the sliding-window cache size chosen (the backend's default is full)."""

    def load(settings: Settings) -> LoadedModel:
        resolved = resolve_model(settings.model)
        m = resolved.manifest
        assert m is not None
        backend = LlamaCppBackend(
            resolved.path,
            n_ctx=min(settings.context_tokens, m.context_length),
            threads=settings.threads,
            name=m.name,
            swa_full=swa_full,
        )
        template = get_template(m.template)
        return LoadedModel(
            backend=backend, template=template, stop=tuple(dict.fromkeys(template.stop + m.stop)), manifest=m
        )

    return load


# -------------------------------------------------------------------------- quality
def quality_row(cases: int, passed: int, exact: int, lat: list[float]) -> dict[str, Any]:
    return {
        "cases": cases,
        "pass@1": passed / cases,
        "exact": exact / cases,
        "p50_ms": percentile(lat, 0.5),
        "p95_ms": percentile(lat, 0.95),
    }


def quality_engine(model: str, cases: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    from lsp_server.context.documents import DocumentStore
    from lsp_server.context.parser import DocumentParser

    engine = CompletionEngine(settings_for(model, threads))
    store = DocumentStore()
    parser = DocumentParser(store)
    passed = exact = 0
    lat: list[float] = []

    async def one(case: dict[str, Any], i: int) -> str:
        text = case["prefix"] + case["suffix"]
        uri = f"file:///bench/case{i}.py"
        doc = store.open(uri, text)
        offset = len(case["prefix"])
        req = CompletionRequest(uri=uri, text=text, offset=offset, path="solution.py", syntax=parser.hint(doc, offset))
        result = await engine.complete(req)
        store.close(uri)
        parser.forget(uri)
        if result is not None:
            lat.append(result.timings_ms.get("total", 0.0))
        return result.text if result else ""

    async def run_all() -> list[str]:
        await engine.ensure_model()
        return [await one(c, i) for i, c in enumerate(cases)]

    try:
        outputs = asyncio.run(run_all())
    finally:
        engine.shutdown()
    for case, out in zip(cases, outputs, strict=True):
        passed += fim_passes(case, out)
        exact += out.strip() == case["ground_truth"].strip()
    return quality_row(len(cases), passed, exact, lat)


def quality_direct(model: str, cases: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    loaded = load_model(settings_for(model, threads))
    b = loaded.backend
    passed = exact = 0
    lat: list[float] = []
    try:
        for case in cases:
            prompt = b.bos_tokens() + b.tokenize(case["prefix"])
            budget = b.info.n_ctx - 64
            prompt = prompt[-budget:]
            t0 = time.perf_counter()
            result = b.generate(
                GenerationRequest(
                    prompt=prompt, max_tokens=48, stop=loaded.stop, should_stop=lambda text: "\n" in text.lstrip("\n")
                ),
                threading.Event(),
            )
            lat.append((time.perf_counter() - t0) * 1000)
            text = result.text
            lead = len(text) - len(text.lstrip("\n"))
            line_end = text.find("\n", lead)
            out = text if line_end < 0 else text[:line_end]
            passed += fim_passes(case, out)
            exact += out.strip() == case["ground_truth"].strip()
    finally:
        b.close()
    return quality_row(len(cases), passed, exact, lat)


# ------------------------------------------------------------------------ keystrokes
def keystrokes(model: str, n_lines: int, threads: int, swa_full: bool = True) -> dict[str, Any]:
    lines = Path(textwrap.__file__).read_text(encoding="utf-8").splitlines(keepends=True)[: n_lines + 1]
    engine = CompletionEngine(settings_for(model, threads), loader=loader_with(swa_full))
    totals: list[float] = []
    evals: list[float] = []
    reused: list[float] = []

    async def run() -> None:
        await engine.ensure_model()
        for i in range(1, len(lines)):
            text = "".join(lines[:i])
            result = await engine.complete(
                CompletionRequest(uri="file:///bench/textwrap.py", text=text, offset=len(text), path="textwrap.py")
            )
            if result is None or result.stop_reason == "not-here":
                continue
            totals.append(result.timings_ms.get("total", 0.0))
            evals.append(result.timings_ms.get("prompt_eval", 0.0))
            if result.prompt_tokens:
                reused.append(result.reused_tokens / result.prompt_tokens)

    try:
        asyncio.run(run())
    finally:
        engine.shutdown()
    return {
        "keystrokes": len(totals),
        "p50_ms": percentile(totals, 0.5),
        "p95_ms": percentile(totals, 0.95),
        "max_ms": max(totals) if totals else float("nan"),
        "prompt_eval_p95_ms": percentile(evals, 0.95),
        "reused_share": statistics.mean(reused) if reused else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--dev-set", type=Path)
    ap.add_argument("--limit", type=int, help="first N quality cases (default: all 164)")
    ap.add_argument("--modes", nargs="+", default=["engine"], choices=["engine", "direct"])
    ap.add_argument("--keystrokes", type=int, default=120, help="lines typed in the replay")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-keystrokes", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    for m in args.models:
        get_manifest(m)  # fail early, with the install hint, on a missing model
        resolve_model(m)
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    if not args.skip_quality:
        cases = load_cases(args.dev_set, args.limit)
        for mode in args.modes:
            for m in args.models:
                t0 = time.perf_counter()
                fn = quality_engine if mode == "engine" else quality_direct
                row = fn(m, cases, args.threads)
                row["wall_s"] = round(time.perf_counter() - t0, 1)
                report[f"quality/{mode}/{m}"] = row
                print(
                    f"quality {mode:6s} {m:24s} pass@1 {row['pass@1']:.3f}  exact {row['exact']:.3f}  "
                    f"({row['cases']} cases, p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, {row['wall_s']} s)",
                    flush=True,
                )
    if not args.skip_keystrokes:
        runs = [(m, True) for m in args.models]
        runs += [(m, False) for m in args.models if get_manifest(m).architecture == "gemma3"]
        for m, swa_full in runs:
            row = keystrokes(m, args.keystrokes, args.threads, swa_full)
            label = m + (
                "" if get_manifest(m).architecture != "gemma3" else (" swa_full" if swa_full else " window-cache")
            )
            report[f"keystrokes/{label}"] = row
            print(
                f"keystrokes {label:36s} p50 {row['p50_ms']:6.0f} ms  p95 {row['p95_ms']:6.0f} ms  max {row['max_ms']:6.0f} ms  "
                f"prompt-eval p95 {row['prompt_eval_p95_ms']:6.0f} ms  reused {row['reused_share']:.0%} of prompt tokens "
                f"({row['keystrokes']} keystrokes)",
                flush=True,
            )
    report["load_avg_end"] = os.getloadavg()[0]
    print(f"load average {report['load_avg_start']:.1f} -> {report['load_avg_end']:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
