"""``quill-lsp demo``: a real LSP session against the real server, as an editor would run it.

Starts ``python -m lsp_server`` as a subprocess over stdio, opens a sample file, asks for
an inline completion at a cursor, prints the ghost text and its latency, then types one
more character and asks again (the KV-cache reuse path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

SAMPLE = '''import math


def circle_area(radius: float) -> float:
    """Area of a circle of the given radius."""
    return math.pi * radius ** 2


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fib'''


async def _wait_for_model(client: LanguageClient, timeout_s: float = 300.0) -> dict[str, str]:
    """Poll ``quill/status`` until the model is ready or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await client.protocol.send_request_async("quill/status", {})
        fields = status if isinstance(status, dict) else status._asdict()
        state = str(fields.get("state") or "")
        if state in ("ready", "error") or time.monotonic() > deadline:
            return {"state": state, "detail": str(fields.get("detail") or fields.get("error") or "")}
        await asyncio.sleep(0.05)


async def _why_nothing(client: LanguageClient) -> None:
    """Say why a request got no suggestion (the gate or the confidence bar hid it)."""
    try:
        status = await client.protocol.send_request_async("quill/status", {})
    except Exception:  # noqa: BLE001 - only an explanation
        return
    fields = status if isinstance(status, dict) else status._asdict()
    last = dict((fields.get("session") or {}).get("lastCompletion") or {})
    if last.get("hidden") == "confidence":
        print(
            f"(not shown: confidence {last.get('confidence')} is under minConfidence; the model wrote {last.get('raw')!r})",
            file=sys.stderr,
        )
    elif last.get("hidden") == "gate":
        print(f"(not shown: it would add a syntax error; the model wrote {last.get('raw')!r})", file=sys.stderr)


async def _session(path: Path, text: str, model: str | None) -> int:
    client = LanguageClient("quill-demo", "0.1")
    messages: list[str] = []

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        messages.append(params.message)
        print(f"[server] {params.message}", file=sys.stderr)

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:
        pass

    await client.start_io(sys.executable, "-m", "lsp_server", "--log-level", os.environ.get("QUILL_DEMO_SERVER_LOG_LEVEL", "warning"))
    init_opts: dict[str, object] = {"model": model} if model else {}
    init_opts["cacheCompletions"] = False
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=path.parent.as_uri(),
            initialization_options=init_opts,
        )
    )
    client.initialized(types.InitializedParams())
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        )
    )
    lines = text.split("\n")
    pos = types.Position(line=len(lines) - 1, character=len(lines[-1]))

    async def ask() -> tuple[str, float]:
        t0 = time.perf_counter()
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=pos,
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            )
        )
        ms = (time.perf_counter() - t0) * 1000
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        text_out = items[0].insert_text if items else ""
        if not items:
            await _why_nothing(client)
        return (text_out if isinstance(text_out, str) else text_out.value), ms

    t0 = time.perf_counter()
    status = await _wait_for_model(client)
    print(f"model {status['state']}: {status['detail']} ({(time.perf_counter() - t0) * 1000:.0f} ms)")
    if status["state"] != "ready":
        return 1
    first, first_ms = await ask()
    # A new keystroke: one more character typed at the cursor.
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text="o")],
        )
    )
    pos = types.Position(line=pos.line, character=pos.character + 1)
    second, second_ms = await ask()
    # And a warm repeat of the same request path (no completion cache: cacheCompletions=false).
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=3),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text="n")],
        )
    )
    pos = types.Position(line=pos.line, character=pos.character + 1)
    third, third_ms = await ask()

    print(f"file: {path}")
    print("cursor after:   " + repr(lines[-1]))
    print(f"ghost text:     {first!r}   ({first_ms:.0f} ms, cold prompt)")
    print(f"after typing 'o': {second!r}   ({second_ms:.0f} ms, KV cache reused)")
    print(f"after typing 'n': {third!r}   ({third_ms:.0f} ms)")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    if not first and not second:
        print("no completion was produced", file=sys.stderr)
        return 1
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import logging

    # The client side of pygls warns about the server's own notifications (quill/modelState).
    logging.getLogger("pygls").setLevel(logging.ERROR)
    if args.file:
        path = Path(args.file).resolve()
        text = path.read_text(encoding="utf-8")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="quill-demo-"))
        path = tmp / "sample.py"
        path.write_text(SAMPLE, encoding="utf-8")
        text = SAMPLE
    return asyncio.run(_session(path, text, args.model))
