"""Suggestions inserted before a word that continues an expression, on any Python code.

The cases: in the Python files under ``--src`` (for instance the held-out packages that
``../shared/eval/make_repo_cases.py`` fetches), single-line expressions that a word of the
same line continues, removed: the true branch of ``x if c else y`` (before ``if``), the
element of a comprehension (before ``for``), the first operand of ``and``/``or``, the left
side of ``in``/``not in``/``is``.  The cursor sits where the expression was, the rest of the
line after it (``if c else y``).  Each case is asked through the real server (one file in a
fresh workspace, once its full prompt is evaluated), with the server's default settings.

Printed per tree: cases, shown, exact (the expression, whitespace aside), valid (the file
parses with the suggestion inserted), wrong shown (shown, not exact), latency p50/p95.
``--baseline-tree`` runs the same cases on another checkout in the same run.

    python benchmarks/before_word.py --src /tmp/heldout/repos --per-package 30 \\
        --baseline-tree /tmp/wt-old
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import collections
import itertools
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import percentile  # noqa: E402
from benchmarks.quality import scratch_session  # noqa: E402

WORD_OF = {ast.In: "in", ast.NotIn: "not", ast.Is: "is", ast.IsNot: "is", ast.And: "and", ast.Or: "or"}


def _cases_in(path: Path, root: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    lines = text.split("\n")
    line_starts = list(itertools.accumulate((len(x) + 1 for x in lines), initial=0))
    found: list[dict[str, Any]] = []
    for node in ast.walk(tree):
        part: ast.expr | None = None
        word = ""
        if isinstance(node, ast.IfExp):
            part, word = node.body, "if"
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            part, word = node.elt, "for"
        elif isinstance(node, ast.BoolOp):
            part, word = node.values[0], WORD_OF[type(node.op)]
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in WORD_OF:
            part, word = node.left, WORD_OF[type(node.ops[0])]
        if part is None or not isinstance(node, ast.expr) or node.lineno != node.end_lineno:
            continue  # not one of the shapes above, or on more than one line (the part is inside it)
        line = lines[part.lineno - 1]
        if not line.isascii():
            continue  # ast columns count UTF-8 bytes
        start, end = part.col_offset, part.end_col_offset or 0
        if line[:start].strip() == "" or not line[end:].startswith(" " + word + " "):
            continue  # the cursor alone on its line, or a bracket between the part and the word
        offset = line_starts[part.lineno - 1] + start
        truth = line[start:end]
        found.append(
            {
                "id": f"{path.relative_to(root)}:{part.lineno}",
                "prefix": text[:offset],
                "suffix": text[offset + len(truth) + 1 :],  # the space before the word goes too
                "truth": truth,
                "word": word,
                "line": part.lineno - 1,
                "character": start,
            }
        )
    return found


def collect(src: Path, per_package: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = []
    for package in sorted(p for p in src.iterdir() if p.is_dir()):
        found = [c for f in sorted(package.rglob("*.py")) for c in _cases_in(f, src)]
        rng.shuffle(found)
        cases += found[:per_package]
    return cases


def _valid(case: dict[str, Any], completion: str) -> bool:
    try:
        ast.parse(case["prefix"] + completion + case["suffix"])
        return True
    except SyntaxError:
        return False


async def run(cases: list[dict[str, Any]], tree: str, threads: int) -> dict[str, Any]:
    env = {"PYTHONPATH": tree + os.pathsep + os.environ.get("PYTHONPATH", "")}
    options: dict[str, Any] = {"threads": threads, "contextTokens": 512, "cacheCompletions": False}
    options.update(_env=env, _cwd=tree)
    shown = exact = valid = 0
    ms_all: list[float] = []
    examples: list[str] = []
    outcomes: list[dict[str, Any]] = []
    async with scratch_session("code", options) as (session, root):
        for i, c in enumerate(cases):
            path = root / f"case_{i}.py"
            text = c["prefix"] + c["suffix"]
            path.write_text(text)
            got, ms, detail = await session.complete(path, text, c["line"], c["character"], "warm")
            ms_all.append(ms)
            outcomes.append({"id": c["id"], "truth": c["truth"], "got": got, "confidence": detail.get("confidence")})
            if got.strip():
                shown += 1
                exact += got.strip() == c["truth"].strip()
                valid += _valid(c, got)
                if len(examples) < 8:
                    examples.append(f"    {c['id']}: {got!r} (truth {c['truth']!r}, then {c['word']!r})")
    return {
        "tree": tree,
        "cases": len(cases),
        "shown": shown,
        "exact": exact,
        "valid": valid,
        "wrong": shown - exact,
        "p50": percentile(ms_all, 0.5),
        "p95": percentile(ms_all, 0.95),
        "examples": examples,
        "outcomes": outcomes,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="a directory of packages (one folder each) of Python code")
    ap.add_argument("--per-package", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tree", help="the checkout whose server answers (default: this one)")
    ap.add_argument("--baseline-tree", help="another checkout of this project, run on the same cases")
    ap.add_argument("--json", help="write the rows and each case's suggestion and confidence to this file")
    args = ap.parse_args()
    cases = collect(Path(args.src), args.per_package, args.seed)
    words = collections.Counter(c["word"] for c in cases)
    print(f"{len(cases)} cases from {args.src}: " + ", ".join(f"{w} {n}" for w, n in sorted(words.items())))
    trees = [args.tree or str(Path(__file__).resolve().parents[1])] + ([args.baseline_tree] if args.baseline_tree else [])
    rows = [await run(cases, tree, args.threads) for tree in trees]
    print(f"{'tree':40} {'cases':>5} {'shown':>5} {'exact':>5} {'valid':>5} {'wrong':>5} {'p50 ms':>7} {'p95 ms':>7}")
    for r in rows:
        print(
            f"{r['tree'][-40:]:40} {r['cases']:5} {r['shown']:5} {r['exact']:5} {r['valid']:5} {r['wrong']:5} "
            f"{r['p50']:7.0f} {r['p95']:7.0f}"
        )
        print("\n".join(r["examples"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
