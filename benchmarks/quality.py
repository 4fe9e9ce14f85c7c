#!/usr/bin/env python3
"""Completion quality on the dev set, through the real LSP server, context on vs off.

Runs ``../shared/eval/dev`` cases (see its README) the way an editor does: a pygls
``LanguageClient`` starts ``python -m lsp_server`` over stdio, opens the file, and asks
``textDocument/inlineCompletion``.  Each setting of ``workspaceContext`` gets its own
server per workspace (nothing carries over between the two rows).

repo_line: the package sources (``make_repo_cases.py`` output, downloaded once from the
package index) are copied into a fresh temporary workspace per (setting, repo); for each
case the line is cut at the cursor on disk (the watcher sees it) and in the opened
document, a completion is asked at the cursor, and the file is restored.
fim_random_span: each case is one file ``prefix + suffix`` in an empty workspace; pass@1
runs ``prefix + completion + suffix + test + check(entry_point)`` in a fresh subprocess.

Prints, per kind and setting: cases, exact match, edit similarity, latency percentiles,
and the cross_file_name hit rate (repo_line) or pass@1 (fim_random_span).

Moments (``--moments``): "warm" (default) reports the cursor and asks once the server
says (``quill/status``) that the document's full prompt is evaluated: the quality of
every request after the first in a file.  "cold" asks right after opening: the first
request in a file, answered from a short quick prompt (see docs/latency.md).  "after:S"
reports the cursor 150 ms after opening (as Quill's clients do) and asks S seconds after
the open.  "refresh:S" asks right after opening and then waits at the cursor up to S
seconds: when the server sends ``quill/refreshInlineCompletion`` there, it asks again (as
Quill's clients do) and the second answer is scored (its latency column stays the first
answer's; the JSON has ``refreshedAfterMs``).  "type:N" asks right after opening, then
types the first N characters of the expected text a key every 120 ms, asking after each:
the last answer is scored with the typed characters in front of it, and the latency
column is the median keystroke's.  "session-off" asks right after opening with the session
features off (always the full prompt).

Rows (``--rows``, issue 11): "today" has the validity gate, multi-line growth, candidates
and the confidence bar off; "gate", "multiline", "candidates", "confidence" turn one on;
"all" all four; "all-nobar" all but the bar (its per-case confidences give the sweep that chose the bar's default);
"llama-server" is llama.cpp's own server, same model and threads, asked as llama.vim asks
(``make llama-server``; ``LlamaServerSession``).
``--ablation`` adds repo_line rows with each kind of retrieved context left out.  Columns:
shown = share of requests with a suggestion; exact|s and wrong|s = of the shown ones, the
share exactly right and the share wrong (fim: failing its tests; repo_line: not an exact
match); p50 x / p95 x = latency against the "today" row of the same kind and context.

    python benchmarks/quality.py                      # everything, both settings
    python benchmarks/quality.py --limit 20 --kinds repo_line --settings on
    python benchmarks/quality.py --cases click/0,click/5 --show
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import NativeLlamaServer, dev_dir, fim_passes, percentile, plain, read_jsonl  # noqa: E402

DEFAULT_DEV = dev_dir()
DEFAULT_REPOS = Path(os.environ.get("QUILL_EVAL_REPOS", os.path.join(tempfile.gettempdir(), "quill-eval")))
PACKAGES = ["click==8.1.8", "rich==13.9.4", "attrs==25.3.0"]


# ----------------------------------------------------------------- scoring
def levenshtein(a: str, b: str) -> int:
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(pred: str, truth: str) -> float:
    if not pred and not truth:
        return 1.0
    return 1.0 - levenshtein(pred, truth) / max(len(pred), len(truth))


# ------------------------------------------------------------------ server
@dataclass
class Outcome:
    case: dict[str, Any]
    setting: str
    completion: str
    latency_ms: float
    score: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)  # quill/status lastCompletion


BLOCK_KEYWORDS = ("if", "elif", "else", "while", "for", "with", "def", "class", "try", "except", "finally", "async")


def spot_kind(before: str) -> str:
    """The kind of spot a cursor is at, from its line's text before it: "new line" (only
    indentation), "return" (right after ``return``), "block opener" (a line that opens a
    block: ``if``, ``for``, ``def`` ...) or "mid-expression"."""
    stripped = before.strip()
    if not stripped:
        return "new line"
    if stripped == "return" or stripped.endswith(" return"):
        return "return"
    if stripped.split(" ", 1)[0].rstrip(":") in BLOCK_KEYWORDS:
        return "block opener"
    return "mid-expression"


class Session:
    """One real server over stdio, with one workspace root."""

    def __init__(self, root: Path, options: dict[str, Any]) -> None:
        self.root = root
        options = dict(options)
        # "_env": extra environment for the server (QUILL_CONTEXT_EXCLUDE for ablations).
        extra_env = options.pop("_env", None)
        # "_cwd": where the server starts; ``python -m lsp_server`` imports the checkout found
        # there first (another tree's: give its path here and in PYTHONPATH).
        self.cwd = options.pop("_cwd", None)
        # "_trigger": "invoked" asks as an explicit request (the user's shortcut: several
        # suggestions to cycle through), "automatic" as the editor does while typing.
        self.invoked = options.pop("_trigger", "automatic") == "invoked"
        self.env = dict(os.environ, **extra_env) if extra_env else None
        self.options = options
        self.client = LanguageClient("quill-quality", "0.1")
        self.model_state: dict[str, str] = {}
        self.model_settled = asyncio.Event()
        self.not_warm = 0  # documents asked before the server said they were warm

        @self.client.feature("quill/modelState")
        def _state(params: Any) -> None:
            state = getattr(params, "state", None) or (params.get("state") if isinstance(params, dict) else None)
            detail = getattr(params, "detail", None) or (params.get("detail") if isinstance(params, dict) else "")
            self.model_state.update(state=str(state), detail=str(detail))
            if state in ("ready", "error"):
                self.model_settled.set()

        self.refreshes: list[dict[str, Any]] = []  # quill/refreshInlineCompletion received

        @self.client.feature("quill/refreshInlineCompletion")
        def _refresh(params: Any) -> None:
            self.refreshes.append(plain(params))

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def _show(params: types.ShowMessageParams) -> None:
            print(f"  [server] {params.message}", file=sys.stderr)

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def _log(params: types.LogMessageParams) -> None:
            pass

    async def start(self) -> None:
        kwargs: dict[str, Any] = {"env": self.env} if self.env else {}
        if self.cwd:
            kwargs["cwd"] = self.cwd
        await self.client.start_io(sys.executable, "-m", "lsp_server", "--log-level", "warning", **kwargs)
        await self.client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(),
                root_uri=self.root.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=self.root.as_uri(), name=self.root.name)],
                initialization_options=self.options,
            )
        )
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.model_settled.wait(), timeout=300)
        if self.model_state.get("state") != "ready":
            raise RuntimeError(f"model failed to load: {self.model_state}")
        if self.options.get("workspaceContext", True):
            for _ in range(1200):
                status = await self.client.protocol.send_request_async("quill/workspaceIndex", {})
                state = status["state"] if isinstance(status, dict) else getattr(status, "state", "")
                if state == "ready":
                    break
                await asyncio.sleep(0.1)
            await self.wait_workspace()

    async def wait_workspace(self, timeout_s: float = 120.0) -> None:
        """Until the server has evaluated the workspace's likely context (idle time after
        the index is built, as a user reading code gives it; servers without it: at once)."""
        t0 = time.perf_counter()
        ws: dict[str, Any] = {}
        while time.perf_counter() - t0 < timeout_s:
            status = plain(await self.client.protocol.send_request_async("quill/status", {}))
            ws = (status.get("session") or {}).get("workspace") or {}
            if not ws or (not ws.get("due") and ws.get("state") != "warming"):
                break
            await asyncio.sleep(0.1)
        if ws:
            print(
                f"  workspace context {ws.get('state')}: {ws.get('chunks')} chunks, {ws.get('tokens')} tokens, "
                f"{time.perf_counter() - t0:.1f} s after the index",
                file=sys.stderr,
            )

    async def wait_warm(self, uri: str, timeout_s: float = 600.0) -> bool:
        """Until the server says the document's full prompt is evaluated (quill/status);
        False (and a warning) when it does not within ``timeout_s`` or warming failed."""
        deadline = time.monotonic() + timeout_s
        state = None
        while time.monotonic() < deadline:
            status = plain(await self.client.protocol.send_request_async("quill/status", {}))
            state = next((d.get("state") for d in status.get("documents") or [] if d.get("uri") == uri), None)
            if state in ("ready", "failed"):
                break
            await asyncio.sleep(0.05)
        if state != "ready":
            self.not_warm += 1
            print(f"  warning: {uri} is {state} after waiting; asked anyway", file=sys.stderr)
            return False
        return True

    async def complete(
        self, path: Path, text: str, line: int, character: int, moment: str = "warm", truth: str = ""
    ) -> tuple[str, float, dict[str, Any]]:
        """One completion at a moment of a session (see the module docstring): "warm",
        "cold", "after:S", "refresh:S" or "type:N" (``truth``: what the user goes on to type)."""
        uri = path.as_uri()
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
            )
        )
        t_open = time.perf_counter()
        cursor = {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}
        if moment == "warm":
            self.client.protocol.notify("quill/didMoveCursor", cursor)
            await self.wait_warm(uri)
        elif moment.startswith("after:"):
            # As Quill's clients do: the cursor is reported 150 ms after it settles.
            await asyncio.sleep(0.15)
            self.client.protocol.notify("quill/didMoveCursor", cursor)
            await asyncio.sleep(max(0.0, float(moment[6:]) - (time.perf_counter() - t_open)))
        self.refreshes.clear()
        t0 = time.perf_counter()
        texts = await self._ask(uri, line, character)
        ms = (time.perf_counter() - t0) * 1000
        detail = await self._last_completion()
        if moment.startswith("type:"):
            # The user types the first N characters of what belongs there, a key every
            # 120 ms, each sent and asked for as an editor does; the last answer counts,
            # with the typed characters in front of it.
            typed = ""
            keystroke_ms: list[float] = []
            for ch in truth[: int(moment[5:])]:
                if ch == "\n":
                    break
                await asyncio.sleep(0.12)
                self.client.text_document_did_change(
                    types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2 + len(typed)),
                        content_changes=[
                            types.TextDocumentContentChangePartial(
                                range=types.Range(
                                    start=types.Position(line=line, character=character + len(typed)),
                                    end=types.Position(line=line, character=character + len(typed)),
                                ),
                                text=ch,
                            )
                        ],
                    )
                )
                typed += ch
                tk = time.perf_counter()
                texts = await self._ask(uri, line, character + len(typed))
                keystroke_ms.append((time.perf_counter() - tk) * 1000)
            if typed:
                detail = await self._last_completion()
                detail["keystrokeMs"] = keystroke_ms
                texts = [typed + t for t in texts] or [typed]
                ms = statistics.median(keystroke_ms)
        if moment.startswith("refresh:"):
            # The user waits at the cursor: a refresh from the server is asked again, as
            # Quill's clients do; what is scored is what shows at the end.
            limit = t0 + float(moment[8:])
            while time.perf_counter() < limit and not self._refreshed(uri, line, character):
                status = plain(await self.client.protocol.send_request_async("quill/status", {}))
                state = next((d.get("state") for d in status.get("documents") or [] if d.get("uri") == uri), None)
                if state in ("ready", "failed"):
                    await asyncio.sleep(0.2)
                    break
                await asyncio.sleep(0.05)
            if self._refreshed(uri, line, character):
                detail["refreshedAfterMs"] = (time.perf_counter() - t0) * 1000
                detail["firstText"] = texts[0] if texts else ""
                texts = await self._ask(uri, line, character)
                detail.update({k: v for k, v in (await self._last_completion()).items() if k != "refreshedAfterMs"})
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
        if self.invoked:
            detail["items"] = texts
        return (texts[0] if texts else ""), ms, detail

    def _refreshed(self, uri: str, line: int, character: int) -> bool:
        return any(
            r.get("textDocument", {}).get("uri") == uri and r.get("position") == {"line": line, "character": character}
            for r in self.refreshes
        )

    async def _ask(self, uri: str, line: int, character: int) -> list[str]:
        result = await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                    if self.invoked
                    else types.InlineCompletionTriggerKind.Automatic
                ),
            )
        )
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        return [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]

    async def _last_completion(self) -> dict[str, Any]:
        status = plain(await self.client.protocol.send_request_async("quill/status", {}))
        return dict((status.get("session") or {}).get("lastCompletion") or {})

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), timeout=10)
            self.client.exit(None)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.client.stop(), timeout=10)
        except Exception:
            pass


class LlamaServerSession:
    """llama.cpp's own llama-server in place of Quill (the row "llama-server"), asked as
    llama.vim asks (``harness.NativeLlamaServer``): no context, no bar, nothing done
    before a request.  "warm": asked once, then asked again (the prompt in its cache);
    "after:S": asked S s after the open; "type:N" as for Quill; "refresh:S" is "cold"."""

    def __init__(self, root: Path, options: dict[str, Any]) -> None:
        self.root = root
        self.binary = str(options["_peer"])
        self.threads = int(options.get("threads") or os.cpu_count() or 1)
        self.model = options.get("model")
        self.timeout_s = float(options.get("requestTimeoutS", 120))
        self.not_warm = 0
        self.server: NativeLlamaServer | None = None

    async def start(self) -> None:
        from lsp_server.registry import resolve_model

        model = self.model if self.model and str(self.model).endswith(".gguf") else resolve_model(self.model or "smollm2-135m-instruct").path
        self.server = await asyncio.get_running_loop().run_in_executor(None, NativeLlamaServer, self.binary, model, self.threads)

    async def _ask(self, lines: list[str], line: int, character: int) -> tuple[str, float, int]:
        assert self.server is not None
        prompt = self.server.prefix(lines, line, character)
        t0 = time.perf_counter()
        text, evaluated = await asyncio.get_running_loop().run_in_executor(None, self.server.complete, prompt, self.timeout_s)
        return text, (time.perf_counter() - t0) * 1000, evaluated

    async def complete(
        self, path: Path, text: str, line: int, character: int, moment: str = "warm", truth: str = ""
    ) -> tuple[str, float, dict[str, Any]]:
        lines = text.split("\n")
        t_open = time.perf_counter()
        if moment == "warm":
            await self._ask(lines, line, character)
        elif moment.startswith("after:"):
            await asyncio.sleep(max(0.0, float(moment[6:]) - (time.perf_counter() - t_open)))
        got, ms, evaluated = await self._ask(lines, line, character)
        detail: dict[str, Any] = {"promptKind": "llama-server", "evaluatedTokens": evaluated}
        if moment.startswith("type:"):
            typed, keystroke_ms, base = "", [], lines[line]
            for ch in truth[: int(moment[5:])]:
                if ch == "\n":
                    break
                await asyncio.sleep(0.12)
                typed += ch
                lines[line] = base[:character] + typed + base[character:]
                got, k_ms, detail["evaluatedTokens"] = await self._ask(lines, line, character + len(typed))
                keystroke_ms.append(k_ms)
            if typed:
                got, ms = typed + got, statistics.median(keystroke_ms)
                detail["keystrokeMs"] = keystroke_ms
        return got, ms, detail

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def make_session(root: Path, options: dict[str, Any]) -> Session | LlamaServerSession:
    return LlamaServerSession(root, options) if options.get("_peer") else Session(root, options)


# ------------------------------------------------------------------- cases
def load_cases(dev: Path, kinds: list[str], ids: set[str] | None, limit: int | None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        cases = read_jsonl(dev / f"{kind}.jsonl")
        if ids:
            cases = [c for c in cases if c["id"] in ids or c["id"].split("/", 1)[-1] in ids]
        if limit is not None:
            if kind == "repo_line":  # spread the limit over the repositories
                by_repo: dict[str, list[dict[str, Any]]] = {}
                for c in cases:
                    by_repo.setdefault(c["repo"], []).append(c)
                per = max(1, limit // max(1, len(by_repo)))
                cases = [c for repo in by_repo.values() for c in repo[:per]][:limit]
            else:
                cases = cases[:limit]
        out[kind] = cases
    return out


def ensure_repos(repos: Path) -> Path:
    if (repos / "repos").is_dir():
        return repos
    script = DEFAULT_DEV.parent / "make_repo_cases.py"
    print(f"fetching package sources into {repos} (make_repo_cases.py) ...", file=sys.stderr)
    subprocess.run([sys.executable, str(script), str(repos), *PACKAGES, "--per-package", "60"], check=True)
    return repos


async def run_repo_line(
    cases: list[dict[str, Any]], setting: str, options: dict[str, Any], repos: Path, show: bool, moment: str = "warm"
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    by_repo: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        by_repo.setdefault(c["repo"], []).append(c)
    for repo, repo_cases in by_repo.items():
        with tempfile.TemporaryDirectory(prefix=f"quill-ws-{repo}-") as tmp:
            root = Path(tmp) / repo
            shutil.copytree(repos / "repos" / repo, root)
            session = make_session(root, options)
            await session.start()
            try:
                for c in repo_cases:
                    path = root / c["path"]
                    original = path.read_text(encoding="utf-8")
                    lines = original.split("\n")
                    src_line = lines[c["line"]]
                    assert src_line[c["character"] :] == c["ground_truth"], c["id"]
                    lines[c["line"]] = src_line[: c["character"]]
                    cut = "\n".join(lines)
                    path.write_text(cut, encoding="utf-8")
                    try:
                        completion, ms, detail = await session.complete(
                            path, cut, c["line"], c["character"], moment, c["ground_truth"]
                        )
                    finally:
                        path.write_text(original, encoding="utf-8")
                    first = completion.split("\n", 1)[0]
                    truth = c["ground_truth"]
                    score = {
                        "em": float(first.strip() == truth.strip()),
                        "es": edit_similarity(first.strip(), truth.strip()),
                        "hit": float(c["cross_file_name"] in completion),
                    }
                    if "items" in detail:  # explicit request: is any of the suggestions right?
                        score["any"] = float(any(t.split("\n", 1)[0].strip() == truth.strip() for t in detail["items"]))
                    detail["spot"] = spot_kind(src_line[: c["character"]])
                    outcomes.append(Outcome(c, setting, completion, ms, score, detail))
                    if show:
                        print(
                            f"  {setting:3} {c['id']:10} {ms:6.0f} ms em={score['em']:.0f} "
                            f"truth={truth!r} got={first!r}"
                        )
            finally:
                await session.stop()
    return outcomes


@contextlib.asynccontextmanager
async def scratch_session(name: str, options: dict[str, Any]) -> AsyncIterator[tuple[Session | LlamaServerSession, Path]]:
    """A real server on an empty temporary workspace folder ``name``, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"quill-ws-{name}-") as tmp:
        root = Path(tmp) / name
        root.mkdir()
        session = make_session(root, options)
        await session.start()
        try:
            yield session, root
        finally:
            await session.stop()


async def run_fim(
    cases: list[dict[str, Any]], setting: str, options: dict[str, Any], show: bool, moment: str = "warm"
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with scratch_session("humaneval", options) as (session, root):
        for c in cases:
            name = "case_" + c["id"].replace("/", "_").replace("-", "_") + ".py"
            path = root / name
            text = c["prefix"] + c["suffix"]
            line = c["prefix"].count("\n")
            character = len(c["prefix"]) - (c["prefix"].rfind("\n") + 1)
            completion, ms, detail = await session.complete(path, text, line, character, moment, c["ground_truth"])
            detail["spot"] = spot_kind(c["prefix"][c["prefix"].rfind("\n") + 1 :])
            outcomes.append(Outcome(c, setting, completion, ms, detail=detail))
            if show:
                print(f"  {setting:3} {c['id']:40} {ms:6.0f} ms got={completion[:60]!r}")
    for o in outcomes:
        c = o.case
        o.score = {
            "em": float(o.completion.strip() == c["ground_truth"].strip()),
            "es": edit_similarity(o.completion.strip(), c["ground_truth"].strip()),
            "pass": float(fim_passes(c, o.completion)),
        }
        if "items" in o.detail:  # explicit request: is any of the suggestions right?
            o.score["any"] = float(bool(o.score["pass"]) or any(fim_passes(c, t) for t in o.detail["items"][1:]))
    return outcomes


def retrieval_timing(cases: list[dict[str, Any]], repos: Path, context_tokens: int) -> dict[str, float]:
    """Retrieval alone, in this process, as on every keystroke: the first request of a
    document (cold: parse + resolve) and five typed characters after it (warm), with the
    model's real tokenizer; also how often the chunks stayed identical while typing."""
    from lsp_server.config import Settings
    from lsp_server.context.documents import DocumentStore
    from lsp_server.context.workspace import WorkspaceContext
    from lsp_server.engine.engine import CompletionRequest
    from lsp_server.engine.model import load_model
    from lsp_server.engine.prompt import PromptBudget

    model = load_model(Settings(context_tokens=context_tokens, threads=1))
    tok = model.backend
    budget = PromptBudget.for_model(tok.info.n_ctx, context_tokens, 64, suffix_max=64)
    share = int(budget.total * budget.context_share)

    def count(text: str) -> int:
        return len(tok.tokenize(text))

    contexts: dict[str, tuple[Any, Any]] = {}
    cold: list[float] = []
    warm: list[float] = []
    same = steps = 0
    for c in cases:
        root = repos / "repos" / c["repo"]
        if c["repo"] not in contexts:
            store = DocumentStore()
            ctx = WorkspaceContext([str(root)], store)
            ctx.build()
            contexts[c["repo"]] = (ctx, store)
        ctx, store = contexts[c["repo"]]
        path = root / c["path"]
        lines = path.read_text(encoding="utf-8").split("\n")
        head = lines[c["line"]][: c["character"]]
        typed = c["ground_truth"][:5]
        previous: list[tuple[str, str]] = []
        ctx.retriever.forget(path.as_uri())  # each case opens its document afresh
        for k in range(len(typed) + 1):
            lines[c["line"]] = head + typed[:k]
            text = "\n".join(lines)
            offset = sum(len(ln) + 1 for ln in lines[: c["line"]]) + len(head) + k
            req = CompletionRequest(uri=path.as_uri(), text=text, offset=offset, path=c["path"], repo_name=c["repo"])
            t0 = time.perf_counter()
            chunks = [(ch.path, ch.text) for ch in ctx.retrieve(req, share, count)]
            (cold if k == 0 else warm).append((time.perf_counter() - t0) * 1000)
            if k:
                steps += 1
                same += chunks == previous
            previous = chunks
    model.backend.close()
    return {
        "cold_p50_ms": percentile(cold, 0.5),
        "cold_p90_ms": percentile(cold, 0.9),
        "warm_p50_ms": percentile(warm, 0.5),
        "warm_p90_ms": percentile(warm, 0.9),
        "warm_p99_ms": percentile(warm, 0.99),
        "stable_keystrokes": same / max(1, steps),
    }


def summarize(kind: str, setting: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """One row.  "shown": a suggestion was returned; "right": it passes the tests (fim)
    or is an exact match (repo_line); "wrong": shown and not right."""
    n = len(outcomes)
    lat = [o.latency_ms for o in outcomes]
    nan = float("nan")
    shown = [o for o in outcomes if o.completion.strip()]
    right_key = "pass" if kind == "fim_random_span" else "em"
    row: dict[str, Any] = {
        "kind": kind,
        "setting": setting,
        "cases": n,
        "exact_match": statistics.fmean(o.score["em"] for o in outcomes) if n else nan,
        "edit_similarity": statistics.fmean(o.score["es"] for o in outcomes) if n else nan,
        "shown": len(shown) / n if n else nan,
        "exact_of_shown": statistics.fmean(o.score["em"] for o in shown) if shown else nan,
        "right_of_shown": statistics.fmean(o.score[right_key] for o in shown) if shown else nan,
        "wrong_of_shown": 1 - statistics.fmean(o.score[right_key] for o in shown) if shown else nan,
        "exact_shown_n": sum(int(o.score["em"]) for o in shown),
        "wrong_shown_n": sum(1 - int(o.score[right_key]) for o in shown),
        "p50_ms": percentile(lat, 0.5),
        "p90_ms": percentile(lat, 0.9),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99),
        "mean_ms": statistics.fmean(lat) if lat else nan,
    }
    if any("any" in o.score for o in outcomes):
        row["any_right_n"] = sum(int(o.score.get("any", 0)) for o in outcomes)
        row["items_mean"] = statistics.fmean(len(o.detail.get("items") or []) for o in outcomes) if n else nan
    refreshed = [o.detail["refreshedAfterMs"] for o in outcomes if o.detail.get("refreshedAfterMs") is not None]
    if refreshed:
        row["refreshed_n"] = len(refreshed)
        row["refreshed_p50_ms"] = percentile(refreshed, 0.5)
    if kind == "repo_line":
        row["cross_file_name_hit"] = statistics.fmean(o.score["hit"] for o in outcomes) if n else nan
    else:
        row["pass@1"] = statistics.fmean(o.score["pass"] for o in outcomes) if n else nan
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    """Latency ratios are against the row of the same kind and context labelled "today"
    (or, without one, the first row of that kind and context)."""
    header = (
        f"{'kind':16} {'row':22} {'cases':>5} {'EM':>6} {'ES':>6} {'pass@1':>6} {'xfile':>6} {'shown':>6} "
        f"{'exact|s':>7} {'wrong|s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p50 x':>6} {'p95 x':>6}"
    )
    print(header)
    print("-" * len(header))
    base: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        ctx = r["setting"].split()[0]
        key = (r["kind"], ctx)
        if key not in base or r["setting"].endswith(" today"):
            base[key] = r
    for r in rows:
        b = base[(r["kind"], r["setting"].split()[0])]
        print(
            f"{r['kind']:16} {r['setting']:22} {r['cases']:5d} {r['exact_match']:6.3f} {r['edit_similarity']:6.3f} "
            f"{r.get('pass@1', float('nan')):6.3f} {r.get('cross_file_name_hit', float('nan')):6.3f} {r['shown']:6.3f} "
            f"{r['exact_of_shown']:7.3f} {r['wrong_of_shown']:7.3f} {r['p50_ms']:7.0f} {r['p95_ms']:7.0f} "
            f"{r['p50_ms'] / b['p50_ms']:6.2f} {r['p95_ms'] / b['p95_ms']:6.2f}"
        )
    for r in rows:
        if "any_right_n" in r:
            right = r["exact_shown_n"] if r["kind"] == "repo_line" else round(r.get("pass@1", 0) * r["cases"])
            print(
                f"explicit requests, {r['kind']} {r['setting']}: first suggestion right {right}, any of the "
                f"suggestions right {r['any_right_n']} of {r['cases']} ({r['items_mean']:.2f} suggestions per request)"
            )


def print_sweep(kind: str, label: str, outcomes: list[Outcome]) -> None:
    """What a confidence bar would have hidden, from the confidences the server reported
    (rows run with minConfidence 0): shown, exact and wrong counts per threshold."""
    right_key = "pass" if kind == "fim_random_span" else "em"
    print(f"confidence sweep, {kind} {label} ({len(outcomes)} cases): threshold shown exact wrong wrong|shown")
    for bar in (0.0, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7):
        shown = [
            o for o in outcomes
            if o.completion.strip() and (o.detail.get("confidence") is None or o.detail["confidence"] >= bar)
        ]
        exact = sum(int(o.score["em"]) for o in shown)
        wrong = sum(1 - int(o.score[right_key]) for o in shown)
        print(f"  {bar:9.2f} {len(shown):5d} {exact:5d} {wrong:5d} {wrong / max(1, len(shown)):11.3f}")
    # The same per kind of spot (spot_kind): a bar that hides what is likely wrong at one
    # kind of spot may silence ordinary code at another.
    spots = sorted({o.detail.get("spot", "") for o in outcomes})
    if len(spots) > 1:
        bars = (0.0, 0.4, 0.5, 0.55, 0.6, 0.7)
        print(f"  by spot (right/wrong shown at {', '.join(f'{b:.2f}' for b in bars)}):")
        for spot in spots:
            group = [o for o in outcomes if o.detail.get("spot", "") == spot]
            cells = []
            for bar in bars:
                shown = [
                    o for o in group
                    if o.completion.strip() and (o.detail.get("confidence") is None or o.detail["confidence"] >= bar)
                ]
                right = sum(int(o.score[right_key]) for o in shown)
                cells.append(f"{right}/{len(shown) - right}")
            print(f"    {spot or '?':15} {len(group):3d} cases  " + "  ".join(f"{c:>6}" for c in cells))


# Feature rows: the server's settings for each (benchmarks the issue-11 features alone and
# together against today's behaviour, all three off).
def feature_rows(min_confidence: float, quick_min_confidence: float | None = None) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {
        "default": {},
        "today": {"validityGate": False, "multiline": False, "candidates": 1, "minConfidence": 0.0, "quickMinConfidence": 0.0},
        "gate": {"validityGate": True, "multiline": False, "candidates": 1, "minConfidence": 0.0, "quickMinConfidence": 0.0},
        "multiline": {"validityGate": False, "multiline": True, "candidates": 1, "minConfidence": 0.0, "quickMinConfidence": 0.0},
        "candidates": {"validityGate": False, "multiline": False, "candidates": 3, "minConfidence": 0.0, "quickMinConfidence": 0.0},
        "confidence": {"validityGate": False, "multiline": False, "candidates": 1, "minConfidence": min_confidence},
        "all": {"validityGate": True, "multiline": True, "candidates": 3, "minConfidence": min_confidence},
        "all-nobar": {"validityGate": True, "multiline": True, "candidates": 3, "minConfidence": 0.0, "quickMinConfidence": 0.0},
        "all-unsure": {"validityGate": True, "multiline": True, "candidates": 3, "minConfidence": min_confidence,
                       "unsureAlternatives": True},
    }
    if quick_min_confidence is not None:  # the rows with a bar get the quick prompts' bar given
        for row in rows.values():
            if row.get("minConfidence"):
                row["quickMinConfidence"] = quick_min_confidence
    return rows


async def main_async(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    ids = {x.strip() for x in args.cases.split(",")} if args.cases else None
    cases = load_cases(Path(args.dev), kinds, ids, args.limit)
    settings = [s.strip() for s in args.settings.split(",")]
    moments = [m.strip() for m in args.moments.split(",") if m.strip()]
    # Rows: each workspaceContext setting asked once the document is warm (what every
    # request after the first in a file gets), right after the open (the first request in a
    # cold file: a quick prompt), and with the session features off (the behaviour before
    # them: always the full prompt).
    variants: list[tuple[str, str, str, dict[str, Any]]] = []  # (label, setting, moment, extra options)
    table = feature_rows(args.min_confidence, args.quick_min_confidence)
    row_names = [r.strip() for r in args.rows.split(",") if r.strip()]
    if "llama-server" in row_names:
        if not (Path(args.llama_server).is_file() or shutil.which(args.llama_server)):
            raise SystemExit(f"no llama-server at {args.llama_server}: build it with `make llama-server` or pass --llama-server PATH")
        table["llama-server"] = {"_peer": args.llama_server}
    for setting in settings:
        for name in row_names:
            feats = table[name]
            tag = "" if name == "default" else f" {name}"
            if "warm" in moments:
                variants.append((f"{setting}{tag}", setting, "warm", dict(feats)))
            if "cold" in moments:
                variants.append((f"{setting}{tag} cold", setting, "cold", dict(feats)))
            for m in moments:
                if m.startswith(("after:", "refresh:")):
                    variants.append((f"{setting}{tag} {m}", setting, m, dict(feats)))
                elif m.startswith("type:"):  # typing through a suggestion needs the cache
                    variants.append((f"{setting}{tag} {m}", setting, m, {**feats, "cacheCompletions": True}))
            if "session-off" in moments:
                variants.append(
                    (f"{setting}{tag} session-off", setting, "cold",
                     {**feats, "latencyTargetMs": 0, "kvCacheMb": 0, "warmup": False})
                )
    # Context ablation (repo_line, context on, features as in --ablation-row): each kind
    # of retrieved context left out in turn (retrieval.CONTEXT_SOURCES).
    ablation: list[tuple[str, str, str, dict[str, Any]]] = []
    if args.ablation:
        from lsp_server.context.retrieval import CONTEXT_SOURCES

        feats = table[args.ablation_row]
        for src in CONTEXT_SOURCES:
            ablation.append((f"on -{src}", "on", "warm", {**feats, "_env": {"QUILL_CONTEXT_EXCLUDE": src}}))
    repos = ensure_repos(Path(args.repos)) if cases.get("repo_line") else Path(args.repos)
    rows: list[dict[str, Any]] = []
    all_outcomes: list[Outcome] = []
    sweeps: list[tuple[str, str, list[Outcome]]] = []
    t_start = time.perf_counter()
    timing: dict[str, float] | None = None
    if cases.get("repo_line") and "on" in settings and not args.no_retrieval_timing:
        timing = retrieval_timing(cases["repo_line"], repos, args.context_tokens)
    for kind in kinds:
        kind_cases = cases.get(kind, [])
        if not kind_cases:
            continue
        results: dict[str, list[Outcome]] = {v[0]: [] for v in variants}
        if kind == "repo_line":
            # Alternate settings per repository so machine load hits both rows alike.
            by_repo: dict[str, list[dict[str, Any]]] = {}
            for c in kind_cases:
                by_repo.setdefault(c["repo"], []).append(c)
            results.update({v[0]: [] for v in ablation})
            for repo_cases in by_repo.values():
                for label, setting, moment, extra in variants + ablation:
                    opts = dict(args.base_options, workspaceContext=setting == "on", **extra)
                    results[label] += await run_repo_line(repo_cases, label, opts, repos, args.show, moment)
        else:
            for label, setting, moment, extra in variants:
                opts = dict(args.base_options, workspaceContext=setting == "on", **extra)
                results[label] += await run_fim(kind_cases, label, opts, args.show, moment)
        for label, *_ in variants + (ablation if kind == "repo_line" else []):
            rows.append(summarize(kind, label, results[label]))
            all_outcomes += results[label]
        sweeps += [(kind, label, results[label]) for label in results if label.endswith(("today", "all-nobar"))]
        print(f"[{kind} done after {time.perf_counter() - t_start:.0f} s]", file=sys.stderr)
    print()
    print(f"options: {json.dumps(args.base_options)}")
    print_table(rows)
    for kind, label, outs in sweeps:
        print_sweep(kind, label, outs)
    for r in rows:
        if r.get("refreshed_n"):
            print(
                f"refreshed, {r['kind']} {r['setting']}: {r['refreshed_n']} of {r['cases']} answers replaced on the "
                f"server's refresh, p50 {r['refreshed_p50_ms']:.0f} ms after the first answer"
            )
    if timing is not None:
        print(
            f"retrieval per request (in-process, real tokenizer): first request of a document "
            f"p50 {timing['cold_p50_ms']:.1f} ms / p90 {timing['cold_p90_ms']:.1f} ms; while typing "
            f"p50 {timing['warm_p50_ms']:.2f} ms / p90 {timing['warm_p90_ms']:.2f} ms / p99 {timing['warm_p99_ms']:.2f} ms; "
            f"context unchanged on {timing['stable_keystrokes']:.0%} of keystrokes"
        )
    print(f"wall time: {time.perf_counter() - t_start:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "options": args.base_options,
                    "rows": rows,
                    "retrieval_timing": timing,
                    "outcomes": [
                        {
                            "id": o.case["id"],
                            "setting": o.setting,
                            "completion": o.completion,
                            "latency_ms": o.latency_ms,
                            "detail": {k: o.detail.get(k) for k in ("spot", "confidence", "minProb", "gate", "candidates", "hidden", "promptKind", "promptTokens", "reusedTokens", "shiftedTokens", "evaluatedTokens", "contextTokens", "contextChunks", "timingsMs", "generatedTokens", "tokenLogprobs", "forcedTokens", "raw", "items", "refreshedAfterMs", "firstText", "keystrokeMs")},
                            **o.score,
                        }
                        for o in all_outcomes
                    ],
                },
                indent=1,
            )
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", default=str(DEFAULT_DEV), help="directory with repo_line.jsonl / fim_random_span.jsonl")
    ap.add_argument("--repos", default=str(DEFAULT_REPOS), help="make_repo_cases.py output (fetched if missing)")
    ap.add_argument("--kinds", default="repo_line,fim_random_span")
    ap.add_argument("--settings", default="off,on", help="workspaceContext settings to run: off,on")
    ap.add_argument(
        "--moments",
        default="warm,cold",
        help="warm: asked once the server has evaluated the document's full prompt; cold: asked right after "
        "opening (the first request in a file); after:S: asked S s after opening, the cursor reported; refresh:S: "
        "asked at once, then again on the server's refresh within S s; session-off: asked right after opening with the "
        "session features off",
    )
    ap.add_argument(
        "--rows",
        default="default",
        help="feature rows: default (the server's settings), today (gate, multi-line growth, candidates and "
        "confidence bar off), gate, multiline, candidates, confidence (each alone), all, all-nobar (all with no "
        "confidence bar), llama-server (llama.cpp's own server, asked as llama.vim asks)",
    )
    ap.add_argument(
        "--trigger",
        choices=("automatic", "invoked"),
        default="automatic",
        help="automatic: asked as while typing (one suggestion); invoked: asked explicitly (the shortcut), "
        "which returns several suggestions: the first is scored, and how often any of them is right is printed",
    )
    ap.add_argument("--min-confidence", type=float, default=None, help="the bar for the confidence/all rows (default: the server's)")
    ap.add_argument("--quick-min-confidence", type=float, default=None, help="the quick prompts' bar for the confidence/all rows (default: the server's)")
    ap.add_argument("--ablation", action="store_true", help="repo_line: also each kind of retrieved context left out")
    ap.add_argument("--ablation-row", default="today", help="the feature row the ablation runs with")
    ap.add_argument("--limit", type=int, help="at most N cases per kind (spread over repositories)")
    ap.add_argument("--cases", help="comma-separated case ids (e.g. click/0,rich/12)")
    ap.add_argument(
        "--context-tokens",
        type=int,
        default=512,
        help="contextTokens for the server (prompt size; the cold prompt is the cost on a CPU)",
    )
    ap.add_argument("--max-tokens", type=int, default=None, help="maxTokens for the server (default: its own)")
    ap.add_argument("--model", help="model id or .gguf path (default: the server's)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="llama.cpp threads (default: the server's, all cores; 1 holds up better on a busy machine)",
    )
    ap.add_argument(
        "--llama-server",
        default=os.environ.get("QUILL_LLAMA_SERVER", str(HERE.parent / "build" / "llama-server" / "bin" / "llama-server")),
        help="the llama-server binary of the row \"llama-server\" (make llama-server)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a server setting for every row, e.g. --set latencyTargetMs=1500 (repeatable)",
    )
    ap.add_argument("--show", action="store_true", help="print every case")
    ap.add_argument("--no-retrieval-timing", action="store_true", help="skip the in-process retrieval timing")
    ap.add_argument("--json", help="write rows and per-case outcomes to this file")
    args = ap.parse_args()
    if args.min_confidence is None:
        from lsp_server.config import Settings

        args.min_confidence = Settings().min_confidence
    args.base_options = {"cacheCompletions": False, "contextTokens": args.context_tokens}
    if args.trigger != "automatic":
        args.base_options["_trigger"] = args.trigger
    if args.max_tokens:
        args.base_options["maxTokens"] = args.max_tokens
    if args.model:
        args.base_options["model"] = args.model
    if args.threads is not None:
        args.base_options["threads"] = args.threads
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item}: expected KEY=JSON")
        try:
            args.base_options[key] = json.loads(value)
        except json.JSONDecodeError:
            args.base_options[key] = value
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
