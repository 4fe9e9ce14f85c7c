"""Compact, code-shaped views of workspace code for the prompt: a definition as its
signature (long parameter lists cut, bodies left out, a class with its main members) and
a file's imports re-rendered one line per module."""

from __future__ import annotations

from collections.abc import Sequence

from lsp_server.context.symbols import FileSummary, Import, Symbol

MAX_CLASS_MEMBERS = 8
MAX_IMPORT_LINES = 30

MAX_SHOWN_SIGNATURE = 150
MAX_SHOWN_DOC = 80


def shorten_signature(sig: str, limit: int = MAX_SHOWN_SIGNATURE) -> str:
    """Cut a long parameter list at a parameter boundary: ``f(a, b, ...) -> T``."""
    if len(sig) <= limit:
        return sig
    open_at = sig.find("(")
    if open_at == -1:
        return sig[: limit - 4] + " ..."
    depth = 0
    close_at = -1
    for i in range(open_at, len(sig)):
        ch = sig[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                close_at = i
                break
    if close_at == -1:
        return sig[: limit - 4] + " ..."
    tail = sig[close_at:]
    params = sig[open_at + 1 : close_at]
    room = max(20, limit - open_at - len(tail))
    cut, depth = 0, 0
    for i, ch in enumerate(params):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            if i > room:
                break
            cut = i
    if cut == 0:
        return sig if len(sig) <= limit * 2 else sig[: limit - 4] + " ..."
    return sig[: open_at + 1] + params[:cut] + ", ..." + tail


def _python_stub(sym: Symbol, indent: str = "") -> str:
    sig_lines = sym.signature.split("\n")
    sig_lines[-1] = shorten_signature(sig_lines[-1])
    lines = [indent + line for line in sig_lines]
    if sym.kind in ("function", "method") and not (sym.doc and len(sym.doc) <= MAX_SHOWN_DOC):
        lines[-1] += " ..."
        return "\n".join(lines)
    if sym.kind in ("function", "method", "class"):
        if sym.doc and len(sym.doc) <= MAX_SHOWN_DOC:
            lines.append(f'{indent}    """{sym.doc}"""')
        if sym.kind != "class":
            lines.append(f"{indent}    ...")
    return "\n".join(lines)


def _one_line_stub(sym: Symbol, language: str) -> str:
    sig = shorten_signature(sym.signature.split("\n")[-1] if language == "python" else sym.signature)
    if language == "python" and sym.kind in ("function", "method"):
        return sig + " ..."
    return sig


_BRACE_LANGS = frozenset({"javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp"})


def render_symbol(summary: FileSummary, sym: Symbol, near: dict[str, float] | None = None) -> str:
    """A compact, code-shaped view of one definition (body left out)."""
    language = summary.language
    near = near or {}
    if language == "python":
        if sym.kind == "class":
            head = _python_stub(sym)
            members = _pick_members(summary, sym, near)
            body = ["    " + _one_line_stub(m, language) for m in members]
            return "\n".join([head, *body]) if body or sym.doc else head + "\n    ..."
        if sym.container:
            owner = [s for s in summary.named(sym.container.rsplit(".", 1)[-1]) if s.kind == "class"]
            if owner:
                return owner[0].signature.split("\n")[-1] + "\n" + _python_stub(sym, "    ")
        return _python_stub(sym)
    # Brace languages: doc comment line, then the signature (bodies are never shown).
    doc = f"// {sym.doc}\n" if sym.doc else ""
    if sym.kind in ("class", "interface") and not sym.signature.rstrip().endswith(("}", ";")):
        members = _pick_members(summary, sym, near)
        inner = "\n".join("    " + m.signature.split("\n")[-1].rstrip(";") + ";" for m in members)
        return f"{doc}{sym.signature} {{\n{inner}\n}}" if inner else f"{doc}{sym.signature} {{ ... }}"
    sig = sym.signature
    if sym.container and sym.kind == "method" and language in ("java", "typescript", "javascript", "tsx", "cpp"):
        sig = f"{sym.container.rsplit('.', 1)[-1]}: {sig}" if language != "java" else sig
    if sym.kind in ("function", "method") and not sig.rstrip().endswith((";", "}")):
        sig += " { ... }" if language in _BRACE_LANGS else ""
    return doc + sig


def _pick_members(summary: FileSummary, cls: Symbol, near: dict[str, float]) -> list[Symbol]:
    container = f"{cls.container}.{cls.name}" if cls.container else cls.name
    members = summary.members(container)

    def rank(m: Symbol) -> tuple[float, int]:
        w = near.get(m.name, 0.0)
        if m.name in ("__init__", "constructor", "new") or m.name == cls.name:
            w += 2.0
        elif m.name.startswith("_"):
            w -= 1.0
        return (-w, m.line)

    picked = sorted(members, key=rank)[:MAX_CLASS_MEMBERS]
    picked.sort(key=lambda m: m.line)
    return picked


def _import_lines(imports: Sequence[Import], resolved: set[int]) -> tuple[list[str], list[str]]:
    """Import statements re-rendered one line per module: (into the workspace, others)."""
    internal: list[str] = []
    external: list[str] = []
    merged: dict[tuple[str, int], list[str]] = {}
    order: list[tuple[tuple[str, int], bool]] = []
    for imp in imports:
        inside = imp.line in resolved
        if imp.names or imp.wildcard:
            key = (imp.module, imp.level)
            if key not in merged:
                merged[key] = []
                order.append((key, inside))
            names = ["*"] if imp.wildcard else [n if n == a else f"{n} as {a}" for n, a in imp.names]
            merged[key].extend(n for n in names if n not in merged[key])
        else:
            line = f"import {imp.module}" + (
                f" as {imp.alias}" if imp.alias and imp.alias != imp.module.split(".")[0] else ""
            )
            (internal if inside else external).append(line)
    for (module, level), inside in order:
        line = f"from {'.' * level}{module} import {', '.join(merged[(module, level)])}"
        (internal if inside else external).append(line)
    return internal[:MAX_IMPORT_LINES], external[:MAX_IMPORT_LINES]
