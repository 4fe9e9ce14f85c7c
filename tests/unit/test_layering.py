"""The layering rule of ARCHITECTURE.md, checked on the source.

protocol -> engine -> context -> backends / registry / pull -> config / families: a module
may import its own layer and the layers below it, never one above; pygls and lsprotocol
are imported only under ``protocol/``; and no modules import each other in a circle.
Every import counts, also one inside a function or under ``TYPE_CHECKING``: a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lsp_server"

# Higher numbers sit above lower ones.  The first matching prefix decides.
LAYERS: list[tuple[str, int]] = [
    ("lsp_server.cli", 6),
    ("lsp_server.__main__", 6),
    ("lsp_server.selfcheck", 6),
    ("lsp_server.protocol", 5),
    ("lsp_server.engine", 4),
    ("lsp_server.recommend", 4),
    ("lsp_server.context", 3),
    ("lsp_server.backends", 2),
    ("lsp_server.registry", 2),
    ("lsp_server.pull", 2),
    ("lsp_server.config", 1),
    ("lsp_server.families", 1),
    ("lsp_server", 0),  # the package itself: __version__
]
PROTOCOL_ONLY = ("pygls", "lsprotocol")


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to ARCHITECTURE.md")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(lsp_server modules imported, top-level names of other packages imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    this = module_name(path)
    is_package = path.name == "__init__.py"
    inner: set[str] = set()
    outer: set[str] = set()

    def add(name: str) -> None:
        if name.split(".")[0] != "lsp_server":
            outer.add(name.split(".")[0])
            return
        # The longest known module that ``name`` names (a class name is not a module).
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != this:
            inner.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = this if is_package else this.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from pkg import module`` imports the module; ``from mod import name`` the module.
                candidate = f"{source}.{alias.name}"
                add(candidate if candidate in modules else source)
    return inner, outer


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    outside: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name], outside[name] = imports_of(path, modules)
    return graph, outside


def test_every_module_has_a_layer() -> None:
    for name in all_modules():
        layer_of(name)


def test_no_module_imports_a_layer_above_it() -> None:
    graph, _ = import_graph()
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "imports that point upward:\n" + "\n".join(upward)


def test_only_protocol_speaks_lsp() -> None:
    _, outside = import_graph()
    leaks = [
        f"{src} imports {pkg}"
        for src, pkgs in sorted(outside.items())
        for pkg in sorted(pkgs & set(PROTOCOL_ONLY))
        if not src.startswith("lsp_server.protocol")
    ]
    assert not leaks, "pygls/lsprotocol outside protocol/:\n" + "\n".join(leaks)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circles() -> None:
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], has_cycle: bool) -> None:
    assert (find_cycle(graph) is not None) is has_cycle


def test_the_import_reader_sees_lazy_imports() -> None:
    modules = all_modules()
    src = PACKAGE / "backends" / "__init__.py"
    inner, _ = imports_of(src, modules)
    # load_backend imports the registry inside the function body.
    assert "lsp_server.registry" in inner
    assert "lsp_server.backends.base" in inner
