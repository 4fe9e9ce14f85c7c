"""Command line: ``quill-lsp`` (the server), ``complete``, ``models``, ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from lsp_server import __version__


def _setup_logging(level: str, log_file: str | None) -> None:
    handlers: list[logging.Handler] = []
    # Never stdout: in stdio mode it carries the protocol.
    handlers.append(logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )


def _settings_from_args(args: argparse.Namespace) -> tuple[Any, list[str]]:
    from lsp_server.config import parse_settings

    raw: dict[str, Any] = {}
    if getattr(args, "settings", None):
        try:
            raw.update(json.loads(args.settings))
        except ValueError as exc:
            raise SystemExit(f"--settings is not valid JSON: {exc}") from exc
    for key, attr in (("model", "model"), ("backend", "backend"), ("endpoint", "endpoint"), ("gpuLayers", "gpu_layers")):
        value = getattr(args, attr, None)
        if value is not None:
            raw[key] = value
    return parse_settings(raw)


def cmd_serve(args: argparse.Namespace) -> int:
    from lsp_server.protocol.server import create_server
    from lsp_server.protocol.stdio import SanitizingReader

    settings, problems = _settings_from_args(args)
    for p in problems:
        logging.getLogger("quill").warning("%s", p)
    server = create_server(settings)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io(SanitizingReader(sys.stdin.buffer), sys.stdout.buffer)
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from lsp_server.context.documents import Document, DocumentStore
    from lsp_server.context.parser import DocumentParser
    from lsp_server.engine.engine import CompletionEngine, CompletionRequest, ModelUnavailable

    path = Path(args.file)
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        print(f"quill-lsp: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    settings, problems = _settings_from_args(args)
    for p in problems:
        print(f"quill-lsp: {p}", file=sys.stderr)
    store = DocumentStore()
    parser = DocumentParser(store)
    uri = path.resolve().as_uri()
    doc: Document = store.open(uri, text)
    offset = doc.offset_at(args.line, args.character, "utf-32")
    workspace = Path(args.workspace).resolve() if args.workspace else path.resolve().parent
    context = None
    if settings.workspace_context:
        try:
            from lsp_server.context.workspace import build_context_provider  # type: ignore[attr-defined]

            context = build_context_provider([str(workspace)], store)
        except ImportError:
            context = None
    engine = CompletionEngine(settings, context=context)

    async def run() -> Any:
        t0 = time.perf_counter()
        await engine.ensure_model()
        load_ms = (time.perf_counter() - t0) * 1000
        rel = os.path.relpath(path.resolve(), workspace) if path.resolve().is_relative_to(workspace) else path.name
        req = CompletionRequest(
            uri=uri, text=text, offset=offset, path=rel, syntax=parser.hint(doc, offset), repo_name=workspace.name
        )
        result = await engine.complete(req)
        return load_ms, result

    try:
        load_ms, result = asyncio.run(run())
    except ModelUnavailable as exc:
        print(f"quill-lsp: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.shutdown()
    text_out = result.text if result else ""
    if args.json:
        payload = result.as_dict() if result else {"text": ""}
        payload["modelLoadMs"] = round(load_ms, 1)
        payload["model"] = engine.settings.model
        print(json.dumps(payload, indent=2))
    else:
        print(text_out)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from lsp_server import registry
    from lsp_server.backends.base import ModelFileError

    try:
        if args.models_cmd == "list":
            manifests = registry.load_manifests()
            rows = []
            for m in manifests.values():
                installed = registry.installed_path(m)
                rows.append((m.id, f"{m.size_mb:.0f} MB", "yes" if installed else "no", m.backend, m.license))
            header = ("ID", "SIZE", "INSTALLED", "BACKEND", "LICENSE")
            widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
            for row in [header] + rows:
                print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
            return 0
        m = registry.get_manifest(args.id)
        if args.models_cmd == "path":
            p = registry.installed_path(m)
            if p is None:
                print(f"quill-lsp: model {m.id} is not installed", file=sys.stderr)
                return 1
            print(p)
            return 0
        if args.models_cmd == "verify":
            p = registry.installed_path(m)
            if p is None:
                print(f"quill-lsp: model {m.id} is not installed", file=sys.stderr)
                return 1
            registry.verify_file(p, m.source.sha256, use_record=False)
            print(f"{m.id}: OK {p}" + ("" if m.source.sha256 else " (no sha256 in manifest)"))
            return 0
        if args.models_cmd == "pull":
            from lsp_server.pull import pull_model  # type: ignore[import-not-found]

            print(pull_model(m))
            return 0
    except (ModelFileError, registry.ManifestError) as exc:
        print(f"quill-lsp: {exc}", file=sys.stderr)
        return 1
    return 2


def cmd_demo(args: argparse.Namespace) -> int:
    from lsp_server.protocol.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quill-lsp", description="Quill: local code completions over LSP")
    parser.add_argument("--version", action="version", version=f"quill-lsp {__version__}")
    parser.add_argument("--tcp", action="store_true", help="serve on a TCP socket instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2087)
    parser.add_argument("--log-level", default=os.environ.get("QUILL_LOG_LEVEL", "info"))
    parser.add_argument("--log-file", default=os.environ.get("QUILL_LOG_FILE"))
    parser.add_argument("--settings", help="initial settings as a JSON object (camelCase keys)")
    parser.add_argument("--model", help="model id or .gguf path")
    sub = parser.add_subparsers(dest="command")

    c = sub.add_parser("complete", help="one completion from the terminal (same engine as the server)")
    c.add_argument("file")
    c.add_argument("--line", type=int, required=True, help="0-based line")
    c.add_argument("--character", type=int, required=True, help="0-based column (characters)")
    c.add_argument("--workspace", help="workspace root for cross-file context")
    c.add_argument("--json", action="store_true", help="print timings and token counts too")
    c.add_argument("--model", help="model id or .gguf path")
    c.add_argument("--backend")
    c.add_argument("--endpoint")
    c.add_argument("--gpu-layers", type=int, dest="gpu_layers")
    c.add_argument("--settings", help="settings as a JSON object (camelCase keys)")

    m = sub.add_parser("models", help="list, pull, verify and locate models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list")
    for name in ("pull", "verify", "path"):
        p = msub.add_parser(name)
        p.add_argument("id")

    d = sub.add_parser("demo", help="a real LSP session against a sample file: prints the ghost text and latency")
    d.add_argument("--file", help="file to complete in (default: a built-in sample)")
    d.add_argument("--model", help="model id or .gguf path")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level, args.log_file)
    if args.command == "complete":
        return cmd_complete(args)
    if args.command == "models":
        return cmd_models(args)
    if args.command == "demo":
        return cmd_demo(args)
    return cmd_serve(args)
