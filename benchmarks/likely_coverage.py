#!/usr/bin/env python3
"""How much of a file's first prompt the workspace's likely context can hold.

Before a file is opened, idle time can only evaluate a guess of its context: the
workspace's likely context (``Retriever.likely_chunks``, ``workspaceWarmTokens``).  For
each repo-line dev case this retrieves what the file's first request retrieves (in
process, the model's real tokenizer, ``contextTokens`` 1024 as in quality.py) and counts
how much of it the likely context holds at each budget: cases with all of it, cases with
some of it, and the share of its tokens.  Then the kinds of chunk the first prompts read
(same file or another), which says where the rest comes from.

Usage: python benchmarks/likely_coverage.py [--limit 60] [--budgets 900,2000,4000,8000,16000]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quality import DEFAULT_DEV, DEFAULT_REPOS, ensure_repos, load_cases  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60, help="repo-line cases (spread over the repositories)")
    ap.add_argument("--budgets", default="900,2000,4000,8000,16000", help="likely-context budgets, tokens")
    ap.add_argument("--context-tokens", type=int, default=1024)
    args = ap.parse_args()

    from lsp_server.config import Settings
    from lsp_server.context.documents import DocumentStore
    from lsp_server.context.workspace import WorkspaceContext
    from lsp_server.engine.engine import CompletionRequest
    from lsp_server.engine.model import load_model
    from lsp_server.engine.prompt import HINT_KIND, PromptBudget

    repos = ensure_repos(DEFAULT_REPOS)
    cases = load_cases(DEFAULT_DEV, ["repo_line"], None, args.limit)["repo_line"]
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    model = load_model(Settings(context_tokens=args.context_tokens, threads=1))
    backend = model.backend
    budget = PromptBudget.for_model(backend.info.n_ctx, args.context_tokens, 64, suffix_max=64)
    share = int(budget.total * budget.context_share)

    def count(text: str) -> int:
        return len(backend.tokenize(text))

    likely: dict[str, tuple[WorkspaceContext, dict[int, set[str]]]] = {}
    covered = {b: [0, 0, 0] for b in budgets}  # cases with all, cases with some, tokens held
    total_tokens = with_context = 0
    kinds: Counter[tuple[str, bool]] = Counter()
    kind_tokens: Counter[tuple[str, bool]] = Counter()
    for c in cases:
        root = repos / "repos" / c["repo"]
        if c["repo"] not in likely:
            ctx = WorkspaceContext([str(root)], DocumentStore())
            ctx.build()
            held = {b: {ch.text for ch in ctx.retriever.likely_chunks(b, count)} for b in budgets}
            likely[c["repo"]] = (ctx, held)
        ctx, held = likely[c["repo"]]
        path = root / c["path"]
        lines = path.read_text(encoding="utf-8").split("\n")
        lines[c["line"]] = lines[c["line"]][: c["character"]]
        text = "\n".join(lines)
        offset = sum(len(ln) + 1 for ln in lines[: c["line"]]) + c["character"]
        ctx.retriever.forget(path.as_uri())
        req = CompletionRequest(uri=path.as_uri(), text=text, offset=offset, path=c["path"], repo_name=c["repo"])
        chunks = [ch for ch in ctx.retrieve(req, share, count) if ch.kind != HINT_KIND]
        for ch in chunks:
            key = (ch.kind, ch.path in ("", c["path"]))
            kinds[key] += 1
            kind_tokens[key] += count(ch.text)
        if not chunks:
            continue
        with_context += 1
        tokens = sum(count(ch.text) for ch in chunks)
        total_tokens += tokens
        for b in budgets:
            got = [ch for ch in chunks if ch.text in held[b]]
            covered[b][0] += len(got) == len(chunks)
            covered[b][1] += bool(got)
            covered[b][2] += sum(count(ch.text) for ch in got)
    backend.close()
    print(f"{len(cases)} cases, {with_context} with retrieved context at the first request ({total_tokens} tokens)")
    print("| likely-context budget | chunks held (per repo) | cases with all | cases with some | share of tokens |")
    print("|---|---|---|---|---|")
    for b in budgets:
        n_held = "/".join(str(len(held[b])) for _, held in likely.values())
        all_, some, tok = covered[b]
        print(f"| {b} | {n_held} | {all_} | {some} | {tok / max(1, total_tokens):.2f} |")
    print("\nchunks of the first prompts by kind (same file or another): count, tokens")
    for (kind, same), n in kinds.most_common():
        print(f"  {kind:10} {'this file' if same else 'other file':10} {n:4d} {kind_tokens[(kind, same)]:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
