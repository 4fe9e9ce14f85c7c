"""Keystroke latency: the LSP server end to end against llama-cpp-python called directly.

One run, same machine, same prompt set, same model:
- *server*: a real LSP client (pygls) drives ``python -m lsp_server`` over stdio; the time
  is from sending ``textDocument/inlineCompletion`` to receiving the answer.
- *direct*: ``Llama.create_completion`` on the same prefix text in this process (greedy,
  stop at the end of the line, its own KV prefix reuse), the baseline the server must stay
  close to while adding what it adds (token healing, workspace context, post-processing).

Typing replay: for each case the cursor line is typed character by character; after each
keystroke both paths are asked for a one-line completion.  The first request of a case
evaluates a cold prompt; the later ones reuse the KV cache of the one before.

Usage: python benchmarks/latency.py [--cases 12] [--keys 6] [--workspace-context]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import percentile as pct  # noqa: E402

STDLIB_FILES = ["textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "csv.py", "calendar.py", "cmd.py", "difflib.py"]
PREFIX_LINES = 40
SUFFIX_LINES = 10


@dataclass
class Case:
    name: str
    before: str  # text before the cursor line
    line_head: str  # cursor line up to where typing starts
    typed: str  # characters typed one by one
    after: str  # text after the cursor line


def make_cases(n: int, keys: int, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    candidates: list[Case] = []
    for fname in STDLIB_FILES:
        path = stdlib / fname
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8").split("\n")
        for i in range(PREFIX_LINES, len(lines) - SUFFIX_LINES):
            line = lines[i]
            body = line.strip()
            indent = len(line) - len(body)
            if indent < 8 or len(body) < keys + 12 or body.startswith(("#", '"', "'")):
                continue
            head_len = indent + 2  # typing starts after two characters of the statement
            candidates.append(
                Case(
                    name=f"{fname}:{i + 1}",
                    before="\n".join(lines[i - PREFIX_LINES : i]) + "\n",
                    line_head=line[:head_len],
                    typed=line[head_len : head_len + keys],
                    after="\n" + "\n".join(lines[i + 1 : i + 1 + SUFFIX_LINES]) + "\n",
                )
            )
    rng.shuffle(candidates)
    return candidates[:n]


async def _start_server(workspace: Path, workspace_context: bool, extra: dict | None) -> LanguageClient:
    client = LanguageClient("quill-latency-bench", "1")
    await client.start_io(sys.executable, "-m", "lsp_server", "--log-level", "warning")
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=workspace.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="bench")],
            initialization_options={
                "cacheCompletions": False,  # measure the model path, not the suggestion cache
                "workspaceContext": workspace_context,
                "requestTimeoutS": 600,
                "maxTokens": 48,
                **(extra or {}),
            },
        )
    )
    client.initialized(types.InitializedParams())
    from lsp_server.protocol.demo import _wait_for_model

    status = await _wait_for_model(client)
    if status["state"] != "ready":
        raise SystemExit(f"server model failed: {status['detail']}")
    return client


async def _replay(client: LanguageClient, path: Path, case: Case) -> list[float]:
    text = case.before + case.line_head + case.after
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
    )
    line = case.before.count("\n")
    col = len(case.line_head)
    per_case = []
    for k in range(len(case.typed) + 1):
        if k:
            ch = case.typed[k - 1]
            client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=k + 1),
                    content_changes=[
                        types.TextDocumentContentChangePartial(
                            range=types.Range(types.Position(line, col), types.Position(line, col)), text=ch
                        )
                    ],
                )
            )
            col += 1
        t0 = time.perf_counter()
        await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=col),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            )
        )
        per_case.append((time.perf_counter() - t0) * 1000)
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
    return per_case


async def run_all(
    cases: list[Case], workspace: Path, workspace_context: bool, direct: DirectModel, extras: list[dict]
) -> tuple[list[list[list[float]]], list[list[float]]]:
    """Replay every case on the model called directly and on one server per settings
    object in ``extras``, taking turns case by case so that machine noise hits all alike."""
    clients = [await _start_server(workspace, workspace_context, extra) for extra in extras]
    timings: list[list[list[float]]] = [[] for _ in clients]
    direct_timings: list[list[float]] = []
    for n, case in enumerate(cases):
        direct_timings.append(direct.replay(case))
        for i, client in enumerate(clients):
            timings[i].append(await _replay(client, workspace / f"case_{n}_{i}.py", case))
    for client in clients:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return timings, direct_timings


class DirectModel:
    """llama-cpp-python called directly: the baseline."""

    def __init__(self, model_path: str, n_ctx: int) -> None:
        from llama_cpp import Llama

        from lsp_server.backends.llama_cpp import default_threads

        threads = default_threads()  # the server's own default, for a like-for-like baseline
        self.llm = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)

    def replay(self, case: Case) -> list[float]:
        per_case = []
        for k in range(len(case.typed) + 1):
            prompt = case.before + case.line_head + case.typed[:k]
            t0 = time.perf_counter()
            self.llm.create_completion(prompt, max_tokens=48, temperature=0.0, stop=["\n"])
            per_case.append((time.perf_counter() - t0) * 1000)
        return per_case


def summarize(label: str, timings: list[list[float]]) -> dict[str, float]:
    first = [t[0] for t in timings]
    later = [x for t in timings for x in t[1:]]
    # The request right after typing one more character, against the first of its case.
    second_over_first = [t[1] / t[0] for t in timings if len(t) > 1 and t[0] > 0]
    out = {
        "first_p50": statistics.median(first),
        "keys_p50": statistics.median(later),
        "keys_p95": pct(later, 0.95),
        "next_over_first": statistics.median(second_over_first),
    }
    print(
        f"{label:>8}: first request p50 {out['first_p50']:7.1f} ms | keystroke p50 {out['keys_p50']:6.1f} ms"
        f" p95 {out['keys_p95']:6.1f} ms | one-more-char / first = {out['next_over_first']:.2f}"
    )
    return out


def main() -> int:
    import logging

    logging.getLogger("pygls").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--keys", type=int, default=6, help="characters typed per case")
    parser.add_argument("--workspace-context", action="store_true", help="server with workspace context on")
    parser.add_argument(
        "--server-settings",
        default="{}",
        help='more server settings as JSON, e.g. \'{"latencyTargetMs": 0, "warmup": false}\' (the full prompt on every request)',
    )
    parser.add_argument(
        "--baseline-settings",
        default=None,
        help="a second server with these settings (JSON, over --server-settings) replays the same cases in "
        "the same run; its keystroke p50/p95 is the baseline of a 'server/baseline' ratio",
    )
    args = parser.parse_args()

    from lsp_server.registry import resolve_model

    model_path = resolve_model("smollm2-135m-instruct").path
    cases = make_cases(args.cases, args.keys)
    print(f"{len(cases)} cases x {args.keys + 1} requests, model {Path(model_path).name}")
    extra = json.loads(args.server_settings)
    extras = [extra]
    if args.baseline_settings is not None:
        extras.append({**extra, **json.loads(args.baseline_settings)})
    with tempfile.TemporaryDirectory(prefix="quill-latency-") as tmp:
        workspace = Path(tmp)
        direct = DirectModel(model_path, 2048)
        server_ts, direct_t = asyncio.run(run_all(cases, workspace, args.workspace_context, direct, extras))
    s = summarize("server", server_ts[0])
    b = summarize("baseline", server_ts[1]) if len(server_ts) > 1 else None
    d = summarize("direct", direct_t)
    print(f"server/direct: keystroke p50 {s['keys_p50'] / d['keys_p50']:.2f}, p95 {s['keys_p95'] / d['keys_p95']:.2f}, "
          f"first request p50 {s['first_p50'] / d['first_p50']:.2f}")
    if b is not None:
        print(f"server/baseline: keystroke p50 {s['keys_p50'] / b['keys_p50']:.2f}, "
              f"p95 {s['keys_p95'] / b['keys_p95']:.2f}, first request p50 {s['first_p50'] / b['first_p50']:.2f}")
    print(f"one more character after the first request: server {s['next_over_first']:.2f}x the first, "
          f"direct {d['next_over_first']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
