#!/usr/bin/env python3
"""How much better could a model do on the fim dev set if Quill chose among sampled
suggestions?  A ceiling, printed, for deciding whether more candidates are worth building.

For each fill-in-the-middle case the server's own full prompt is built in-process (the
engine's prompt builder: path comment, prefix window, token healing), then the model
writes one greedy suggestion and ``--samples`` sampled ones (``--temperature``, seeds
1..N), each stopped and cleaned up the way the server does it (``stop_condition`` and
``finalize`` with multi-line growth on; no gate, candidates or bar).  Printed, as cases
out of all:

- greedy:      the greedy suggestion passes the case's tests (what the server starts from);
- vote:        the most frequent cleaned-up suggestion among greedy + samples passes
               (self-consistency; ties go to the greedy one);
- any:         any of greedy + samples passes (pass@k: the ceiling of choosing better);
- any-lines:   any first 1-6 lines of any raw generation (up to ``maxTokens``, 64)
               passes (the ceiling of choosing better and cutting better).  It counts
               accidental passes too (a junk line that turns the code after the cursor
               into a comment), so it is generous.

    python benchmarks/fim_headroom.py --samples 6 --temperature 0.7
    python benchmarks/fim_headroom.py --model other.gguf --limit 40

In-process and single-threaded by default; about 10 s per case with 6 samples on one core
of the 2-core development machine and the default model.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import dev_dir, fim_passes, read_jsonl  # noqa: E402
from lsp_server.backends.base import GenerationRequest  # noqa: E402
from lsp_server.config.settings import parse_settings  # noqa: E402
from lsp_server.engine.engine import CompletionEngine, CompletionRequest  # noqa: E402
from lsp_server.engine.postprocess import CursorText, decide_mode, finalize, stop_condition  # noqa: E402

CUT_LINES = 6


def majority(shown: list[str]) -> str:
    """The suggestion written most often (whitespace runs count as one space; nothing
    shown is no vote); ties go to the first one, the greedy suggestion when it is among
    them."""
    votes = collections.Counter(" ".join(s.split()) for s in shown if s)
    if not votes:
        return ""
    best = max(votes.values())
    return next(s for s in shown if s and votes[" ".join(s.split())] == best)


def case_outcome(engine: CompletionEngine, model: Any, case: dict[str, Any], samples: int, temperature: float) -> dict[str, Any]:
    prefix, suffix = case["prefix"], case["suffix"]
    name = "case_" + case["id"].replace("/", "_").replace("-", "_") + ".py"
    req = CompletionRequest(uri=f"file:///{name}", text=prefix + suffix, offset=len(prefix), path=name, language_id="python")
    cur = CursorText.from_prefix_suffix(prefix, suffix)
    mode = decide_mode(cur)
    prompt, _ = engine.full_prompt(model, req)
    forced = prompt.forced_prefix
    cond = stop_condition(mode, cur, True)
    shown: list[str] = []
    raw: list[str] = []
    for seed in range(samples + 1):
        request = GenerationRequest(
            prompt=prompt.tokens,
            max_tokens=engine.settings.max_tokens,
            temperature=temperature if seed else 0.0,
            seed=seed,
            stop=model.stop,
            forced_prefix=forced,
            should_stop=lambda text: cond(text[len(forced) :]),
            slot="headroom",
        )
        gen = model.backend.generate(request, _never())
        raw.append(gen.text[len(forced) :])
        shown.append(finalize(gen.text, mode, cur, forced, True))
    verdict: dict[str, bool] = {}

    def passes(text: str) -> bool:
        if text not in verdict:
            verdict[text] = bool(text) and fim_passes(case, text)
        return verdict[text]

    vote = majority(shown)
    lines_pass = any(passes("\n".join(r.split("\n")[:k])) for r in raw for k in range(1, CUT_LINES + 1))
    return {
        "id": case["id"],
        "shown": shown,
        "greedy": passes(shown[0]),
        "vote": passes(vote),
        "any": any(passes(s) for s in shown),
        "any_lines": lines_pass or any(passes(s) for s in shown),
    }


def _never() -> Any:
    import threading

    return threading.Event()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", default=str(dev_dir()), help="the dev set folder (fim_random_span.jsonl)")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases")
    ap.add_argument("--model", default="", help="a manifest id or a .gguf path (the `model` setting; default: the embedded model)")
    ap.add_argument("--json", default="", help="write each case's suggestions and verdicts here")
    args = ap.parse_args()

    raw_settings: dict[str, Any] = {"threads": args.threads, "contextTokens": 512}
    if args.model:
        raw_settings["model"] = args.model
    settings, problems = parse_settings(raw_settings)
    if problems:
        print("settings:", "; ".join(problems), file=sys.stderr)
        return 2
    engine = CompletionEngine(settings)
    model = engine.load_model_sync()
    cases = read_jsonl(Path(args.dev) / "fim_random_span.jsonl")
    if args.limit:
        cases = cases[: args.limit]
    t0 = time.perf_counter()
    outcomes = []
    for i, case in enumerate(cases, 1):
        outcomes.append(case_outcome(engine, model, case, args.samples, args.temperature))
        if i % 20 == 0:
            print(f"  {i}/{len(cases)} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    engine.shutdown()
    n = len(outcomes)
    print(f"fim_random_span, {n} cases, greedy + {args.samples} samples at temperature {args.temperature}, "
          f"{time.perf_counter() - t0:.0f} s")
    for key in ("greedy", "vote", "any", "any_lines"):
        k = sum(o[key] for o in outcomes)
        print(f"  {key:10} {k:4d} / {n}  ({k / n:.3f})")
    gained = [o["id"] for o in outcomes if o["any"] and not o["greedy"]]
    print("  passed by a sample only:", ", ".join(gained) or "none")
    if args.json:
        Path(args.json).write_text(json.dumps(outcomes, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
