"""Session latency: an editing session over several real files, replayed through a real LSP
client over stdio, against the same session with the session-latency features off and
against llama.cpp's own ``llama-server`` (what llama.vim / llama.vscode users run).

The session, in a fixed order: open each file (didOpen, then the cursor the editor shows,
as Quill's clients report it with ``quill/didMoveCursor``), ask for a suggestion after a
``return `` two thirds of the way down, type 4 characters at 9 characters/s (a request
after each), then the next file.  Then back to each file in the same order: the user
starts a new line below the one they typed on and types 4 characters there.

It runs twice: asking right after the open, and after a pause of ``--pause`` seconds (a
user reads before typing), so both the cold path and the warm-before-asked path are
measured.  Printed per moment (open, switch back, keystroke that generates, keystroke
served from a cache): median, p95, max, requests with no suggestion, timeouts; prompt
tokens evaluated per request; the server's peak RSS.  Then each suggestion against the real
file (exact: its first line is the rest of the real line; right: a correct start of it;
wrong: shown and not right), and what a ``minConfidence`` at each of ``--bars`` would leave
of it (from the confidence the server reported).

llama-server gets what llama.vim sends: the last 256 lines before the cursor through
``/completion`` with ``cache_prompt``, ``--cache-reuse 256``, 4 slots, same model and
threads.  Build it with ``make llama-server`` (about 25 minutes on one core) or pass
``--llama-server PATH``; without it that column is skipped.

Usage: python benchmarks/session.py [--files 4] [--pause 2] [--configs quill,off,llama-server]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import NativeLlamaServer, percentile, plain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FILES = ["textwrap.py", "shlex.py", "fractions.py", "graphlib.py", "heapq.py", "cmd.py"]
TYPED = 4
CHARS_PER_S = 9.0
LLAMA_SERVER_DEFAULT = ROOT / "build" / "llama-server" / "bin" / "llama-server"
OFF = {"latencyTargetMs": 0, "kvCacheMb": 0, "warmup": False}


@dataclass
class FileCase:
    name: str
    text: str  # the file with the cursor line cut after "return "
    line: int
    col: int
    typed: str  # what the user types after "return "
    next_typed: str  # what the user types on the new line below, on the way back
    rest: str = ""  # the file's own text after "return " (what a right suggestion writes)
    next_line: str = ""  # the file's own next line, stripped (typed on the way back)

    @property
    def indent(self) -> str:
        line = self.text.split("\n")[self.line]
        return line[: len(line) - len(line.lstrip())]


def make_cases(n: int) -> list[FileCase]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    cases = []
    for fname in FILES[:n]:
        lines = (stdlib / fname).read_text(encoding="utf-8").split("\n")
        target = len(lines) * 2 // 3
        best = None
        for i, line in enumerate(lines):
            body = line.strip()
            if body.startswith("return ") and len(body) >= len("return ") + TYPED + 2:
                if best is None or abs(i - target) < abs(best - target):
                    best = i
        assert best is not None, fname
        line = lines[best]
        col = line.index("return ") + len("return ")
        nxt = next((ln.strip() for ln in lines[best + 1 :] if ln.strip()), "pass")
        cut = lines[:best] + [line[:col]] + lines[best + 1 :]
        cases.append(
            FileCase(fname, "\n".join(cut), best, col, line[col : col + TYPED], (nxt + "    ")[:TYPED], line[col:].rstrip(), nxt)
        )
    return cases


@dataclass
class Sample:
    moment: str  # "open", "back", "key-gen", "key-cache"
    ms: float
    text: str
    timed_out: bool = False
    evaluated: int = -1
    kind: str = ""
    truth: str = ""  # the rest of the line in the real file at that moment
    confidence: float | None = None  # as the server reported it (None: not known)
    server: dict[str, Any] | None = None  # Quill's lastCompletion for this request (timings, tokens)

    @property
    def first_line(self) -> str:
        return self.text.lstrip("\n").split("\n", 1)[0].strip()

    @property
    def exact(self) -> bool:
        return bool(self.first_line) and self.first_line == self.truth.strip()

    @property
    def right(self) -> bool:
        """Exact, or a correct start of the rest of the line."""
        return bool(self.first_line) and self.truth.strip().startswith(self.first_line)


@dataclass
class RunResult:
    label: str
    samples: list[Sample] = field(default_factory=list)
    rss_mb: float = float("nan")
    threads: int | None = None
    notes: str = ""


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Editor:
    """What the session does, against one completion provider."""

    async def open(self, case: FileCase) -> None: ...

    async def cursor(self, case: FileCase, line: int, col: int) -> None: ...

    async def edit(self, case: FileCase, line: int, col: int, text: str) -> None: ...

    async def ask(self, case: FileCase, line: int, col: int) -> Sample: ...


class QuillEditor(Editor):
    def __init__(self, client: LanguageClient, workspace: Path, timeout_s: float) -> None:
        self.client = client
        self.workspace = workspace
        self.timeout_s = timeout_s
        self.docs: dict[str, list[str]] = {}
        self.versions: dict[str, int] = {}

    def uri(self, case: FileCase) -> str:
        return (self.workspace / case.name).as_uri()

    async def open(self, case: FileCase) -> None:
        uri = self.uri(case)
        self.docs[uri] = case.text.split("\n")
        self.versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=case.text))
        )

    async def cursor(self, case: FileCase, line: int, col: int) -> None:
        self.client.protocol.notify(
            "quill/didMoveCursor", {"textDocument": {"uri": self.uri(case)}, "position": {"line": line, "character": col}}
        )

    async def edit(self, case: FileCase, line: int, col: int, text: str) -> None:
        uri = self.uri(case)
        self.versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(types.Position(line, col), types.Position(line, col)), text=text
                    )
                ],
            )
        )

    async def ask(self, case: FileCase, line: int, col: int) -> Sample:
        t0 = time.perf_counter()
        text = ""
        timed_out = False
        try:
            got = await asyncio.wait_for(
                self.client.text_document_inline_completion_async(
                    types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=self.uri(case)),
                        position=types.Position(line=line, character=col),
                        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
                    )
                ),
                timeout=self.timeout_s + 5,
            )
            items = got.items if got is not None and not isinstance(got, list) else (got or [])
            text = str(items[0].insert_text) if items else ""
        except asyncio.TimeoutError:
            timed_out = True
        ms = (time.perf_counter() - t0) * 1000
        status = plain(await self.client.protocol.send_request_async("quill/status", {}))
        last = (status.get("session") or {}).get("lastCompletion") or {}
        if ms >= self.timeout_s * 1000:
            timed_out = True
        conf = last.get("confidence")
        return Sample(
            "", ms, text, timed_out, int(last.get("evaluatedTokens", -1)), str(last.get("promptKind", "")),
            confidence=None if conf is None else float(conf),
            server=last,
        )


class LlamaServerEditor(Editor):
    """llama.vim's request (``NativeLlamaServer.complete``) on the editor's copy of each file."""

    def __init__(self, server: NativeLlamaServer, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.docs: dict[str, list[str]] = {}
        self.errors = 0

    async def open(self, case: FileCase) -> None:
        self.docs[case.name] = case.text.split("\n")

    async def cursor(self, case: FileCase, line: int, col: int) -> None:
        return None

    async def edit(self, case: FileCase, line: int, col: int, text: str) -> None:
        lines = self.docs[case.name]
        cur = lines[line]
        new = (cur[:col] + text + cur[col:]).split("\n")
        lines[line : line + 1] = new

    async def ask(self, case: FileCase, line: int, col: int) -> Sample:
        prompt = self.server.prefix(self.docs[case.name], line, col)
        t0 = time.perf_counter()
        text, timed_out, evaluated = "", False, -1
        try:
            text, evaluated = await asyncio.get_running_loop().run_in_executor(
                None, self.server.complete, prompt, self.timeout_s
            )
        except TimeoutError:
            timed_out = True
        except Exception as exc:  # an error answer: counted as "no suggestion", and said once
            if not self.errors:
                print(f"  llama-server error: {exc}", file=sys.stderr)
            self.errors += 1
        return Sample("", (time.perf_counter() - t0) * 1000, text, timed_out, evaluated, "")


async def replay(editor: Editor, cases: list[FileCase], pause_s: float) -> list[Sample]:
    """The session; returns one sample per request, tagged with its moment."""
    samples: list[Sample] = []
    gap = 1.0 / CHARS_PER_S

    async def type_on(case: FileCase, line: int, col: int, chars: str, truth: str) -> None:
        for i, ch in enumerate(chars):
            t_key = time.perf_counter()
            await editor.edit(case, line, col, ch)
            col += 1
            s = await editor.ask(case, line, col)
            s.moment = "key-cache" if s.evaluated == 0 else "key-gen"
            s.truth = truth[i + 1 :]
            samples.append(s)
            rest = gap - (time.perf_counter() - t_key)
            if rest > 0:
                await asyncio.sleep(rest)

    for case in cases:
        await editor.open(case)
        await editor.cursor(case, case.line, case.col)
        if pause_s:
            await asyncio.sleep(pause_s)
        s = await editor.ask(case, case.line, case.col)
        s.moment, s.truth = "open", case.rest
        samples.append(s)
        await type_on(case, case.line, case.col, case.typed, case.rest)
    for case in cases:
        # Back to the file: the editor shows the cursor where it was; the user ends the
        # line, starts a new one below and types on it.
        end_col = case.col + len(case.typed)
        await editor.cursor(case, case.line, end_col)
        await editor.edit(case, case.line, end_col, "\n" + case.indent)
        line, col = case.line + 1, len(case.indent)
        s = await editor.ask(case, line, col)
        s.moment, s.truth = "back", case.next_line
        samples.append(s)
        await type_on(case, line, col, case.next_typed, case.next_line)
    return samples


async def run_quill(
    cases: list[FileCase], pause_s: float, settings: dict[str, Any], label: str, timeout_s: float, tree: Path | None = None
) -> RunResult:
    """One session against ``python -m lsp_server``: this checkout's, or ``tree``'s (another
    checkout of the project, e.g. a worktree of main, for a before/after in one run)."""
    with tempfile.TemporaryDirectory(prefix="quill-session-") as tmp:
        workspace = Path(tmp)
        for case in cases:
            (workspace / case.name).write_text(case.text, encoding="utf-8")
        client = LanguageClient("quill-session-bench", "1")
        log = Path(tempfile.gettempdir()) / f"quill-session-{label.replace(' ', '_')}.log"
        where: dict[str, Any] = {}
        if tree is not None:
            where = {"cwd": str(tree), "env": {**os.environ, "PYTHONPATH": str(tree)}}
        await client.start_io(sys.executable, "-m", "lsp_server", "--log-level", "info", "--log-file", str(log), **where)
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(),
                root_uri=workspace.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="bench")],
                initialization_options={"requestTimeoutS": timeout_s, **settings},
            )
        )
        client.initialized(types.InitializedParams())
        from lsp_server.protocol.demo import _wait_for_model

        status = await _wait_for_model(client)
        if status["state"] != "ready":
            raise SystemExit(f"server model failed: {status['detail']}")
        # Let the workspace index settle, as it would before a user's first request.
        await asyncio.sleep(1.0)
        pid = client._server.pid if getattr(client, "_server", None) else None  # type: ignore[attr-defined]
        samples = await replay(QuillEditor(client, workspace, timeout_s), cases, pause_s)
        full = plain(await client.protocol.send_request_async("quill/status", {}))
        rss = peak_rss_mb(pid) if pid else float("nan")
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    session = full.get("session") or {}
    return RunResult(label, samples, rss, session.get("threads"), json.dumps(session.get("stats", {})))


async def run_llama_server(binary: str, model: str, threads: int, cases: list[FileCase], pause_s: float, timeout_s: float) -> RunResult:
    try:
        server = NativeLlamaServer(binary, model, threads)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    try:
        samples = await replay(LlamaServerEditor(server, timeout_s), cases, pause_s)
        rss = peak_rss_mb(server.proc.pid)
    finally:
        server.stop()
    return RunResult(f"llama-server t{threads}", samples, rss, threads)


MOMENTS = [("open", "first suggestion after open"), ("back", "back to a file, new line"),
           ("key-gen", "keystroke that generates"), ("key-cache", "keystroke served from cache")]


def print_table(results: list[RunResult], title: str) -> None:
    print(f"\n## {title}")
    print("| config | moment | n | p50 ms | p95 ms | max ms | no suggestion | timed out | prompt tokens evaluated (median) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for moment, label in MOMENTS:
            ss = [s for s in r.samples if s.moment == moment]
            if not ss:
                continue
            ms = [s.ms for s in ss]
            ev = [s.evaluated for s in ss if s.evaluated >= 0]
            print(
                f"| {r.label} | {label} | {len(ss)} | {statistics.median(ms):,.0f} | {percentile(ms, 0.95):,.0f} | {max(ms):,.0f} | "
                f"{sum(1 for s in ss if not s.text.strip())} | {sum(1 for s in ss if s.timed_out)} | "
                f"{statistics.median(ev) if ev else 'n/a'} | {r.rss_mb:,.0f} |"
            )
    for r in results:
        if r.notes:
            print(f"{r.label}: {r.notes}")


def print_quality(results: list[RunResult], bars: list[float]) -> None:
    """What was shown, against the real file: exact (the first line is the rest of the
    real line), right (a correct start of it), wrong (shown, not right); and, for each
    bar, what a ``minConfidence`` at that value would have left of it (from the
    confidence the server reported for each suggestion; cache hits repeat the confidence
    of the suggestion they continue)."""
    head = "".join(f" | at {b:g}: shown / right / wrong" for b in bars)
    print(f"\n| config | moment | n | shown | exact | right | wrong{head} |")
    print("|---|---|---|---|---|---|---" + "|---" * len(bars) + "|")
    for r in results:
        for moment, label in [("all", "all requests"), *MOMENTS]:
            ss = [s for s in r.samples if moment == "all" or s.moment == moment]
            if not ss:
                continue
            shown = [s for s in ss if s.first_line]
            right = sum(s.right for s in shown)
            cells = ""
            for b in bars:
                kept = [s for s in shown if s.confidence is None or s.confidence >= b]
                kr = sum(s.right for s in kept)
                cells += f" | {len(kept)} / {kr} / {len(kept) - kr}"
            print(f"| {r.label} | {label} | {len(ss)} | {len(shown)} | {sum(s.exact for s in shown)} | {right} | "
                  f"{len(shown) - right}{cells} |")


def main() -> int:
    import logging

    logging.getLogger("pygls").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4, help=f"files in the session (at most {len(FILES)})")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between open and the first request (second run)")
    parser.add_argument(
        "--configs", default="quill,off,llama-server", help="comma list of quill, off, llama-server, baseline"
    )
    parser.add_argument("--quill-settings", default="{}", help="settings (JSON) for the 'quill' config")
    parser.add_argument(
        "--baseline-tree", type=Path, default=None,
        help="another checkout of Quill (e.g. `git worktree add /tmp/main main`): the 'baseline' config runs its server",
    )
    parser.add_argument("--modes", default="now,pause", help="comma list: now (ask right after open), pause")
    parser.add_argument("--llama-server", default=os.environ.get("QUILL_LLAMA_SERVER", str(LLAMA_SERVER_DEFAULT)))
    parser.add_argument("--threads", type=int, default=0, help="llama-server threads (0: what Quill chose)")
    parser.add_argument("--timeout", type=float, default=30.0, help="request timeout, s (Quill's default)")
    parser.add_argument("--bars", default="0.5,0.7", help="confidence bars to show the effect of (comma list)")
    parser.add_argument("--json", type=Path, help="write every request (moment, ms, suggestion, truth, confidence) here")
    args = parser.parse_args()

    from lsp_server.registry import resolve_model

    model = resolve_model("smollm2-135m-instruct").path
    cases = make_cases(args.files)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(f"files: {', '.join(f'{c.name}:{c.line + 1}' for c in cases)}; model {Path(model).name}; "
          f"load average {os.getloadavg()[0]:.1f}")
    have_llama_server = Path(args.llama_server).is_file() or shutil.which(args.llama_server)
    if "llama-server" in configs and not have_llama_server:
        print(f"llama-server not found at {args.llama_server} (make llama-server); skipping that column")
        configs.remove("llama-server")
    dump: dict[str, Any] = {}
    for mode in modes:
        pause = args.pause if mode == "pause" else 0.0
        results: list[RunResult] = []
        threads = args.threads
        for config in configs:
            if config == "quill":
                r = asyncio.run(run_quill(cases, pause, json.loads(args.quill_settings), "quill", args.timeout))
                threads = threads or (r.threads or 1)
            elif config == "baseline":
                if args.baseline_tree is None:
                    raise SystemExit("--configs baseline needs --baseline-tree")
                r = asyncio.run(run_quill(cases, pause, {}, f"baseline ({args.baseline_tree.name})", args.timeout,
                                          args.baseline_tree.resolve()))
                threads = threads or (r.threads or 1)
            elif config == "off":
                r = asyncio.run(run_quill(cases, pause, dict(OFF), "quill, features off", args.timeout))
                threads = threads or (r.threads or 1)
            else:
                r = asyncio.run(run_llama_server(args.llama_server, model, threads or 1, cases, pause, args.timeout))
            results.append(r)
            print(f"  ran {r.label} ({mode}): threads {r.threads}", flush=True)
        print_table(results, f"asked {'right after open' if not pause else f'after a {pause:g} s pause'} "
                             f"(load average now {os.getloadavg()[0]:.1f})")
        print_quality(results, [float(b) for b in args.bars.split(",") if b.strip()])
        dump[mode] = {r.label: [dataclasses.asdict(s) for s in r.samples] for r in results}
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
