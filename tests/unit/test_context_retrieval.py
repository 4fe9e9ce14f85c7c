"""Retrieval: what context a completion gets, in what order, within what budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lsp_server.config import Settings
from lsp_server.context.documents import DocumentStore
from lsp_server.context.workspace import WorkspaceContext, build_context_provider
from lsp_server.engine.engine import CompletionRequest
from lsp_server.engine.prompt import PromptBudget, PromptBuilder
from lsp_server.families.completion import get_template

from .test_context_index import make_workspace

MAIN = """import os
from pkg import Circle
from pkg.geometry import MAX_RADIUS, circle_area
from pkg.shapes import describe


def run(r: float) -> str:
    if r > MAX_RADIUS:
        raise ValueError("too big")
    c = Circle(r)
    total = circle_area(r)
    """


def chars(text: str) -> int:
    """A stand-in tokenizer: one token per 3 characters."""
    return (len(text) + 2) // 3


def request(path: Path, text: str, offset: int | None = None, root: Path | None = None) -> CompletionRequest:
    return CompletionRequest(
        uri=path.as_uri(),
        text=text,
        offset=len(text) if offset is None else offset,
        path=os.path.relpath(path, root) if root else path.name,
        language_id="python",
    )


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture()
def context(ws: Path) -> WorkspaceContext:
    return build_context_provider([str(ws)], DocumentStore())


def texts(chunks) -> list[tuple[str, str]]:
    return [(c.path.replace(os.sep, "/"), c.text) for c in chunks]


def test_imported_definitions_from_other_files(context: WorkspaceContext, ws: Path) -> None:
    chunks = context.retrieve(request(ws / "app" / "main.py", MAIN, root=ws), 400, chars)
    joined = "\n".join(t for _, t in texts(chunks))
    assert {p for p, _ in texts(chunks)} >= {"pkg/geometry.py"}
    assert "def circle_area(radius: float) -> float:" in joined
    assert '"""Area of a circle of the given radius."""' in joined  # docstring first line
    assert "class Circle:" in joined and "def area(self) -> float:" in joined  # through pkg/__init__.py
    assert "MAX_RADIUS = 100" in joined
    # Imported and never used: not worth the prefix lines it would take.
    assert "def describe(c: Circle) -> str:" not in joined
    used = context.retrieve(request(ws / "app" / "main.py", MAIN + "print(describe(c))\n    ", root=ws), 400, chars)
    assert "def describe(c: Circle) -> str:" in "\n".join(t for _, t in texts(used))
    assert all(c.path.replace(os.sep, "/") != "app/main.py" for c in chunks)
    assert all(c.kind in ("definition", "import", "snippet", "scope") for c in chunks)


def test_module_attribute_use(context: WorkspaceContext, ws: Path) -> None:
    text = "import pkg.util.text as t\n\n\ndef slug(title):\n    return t.slugify(title)\n    "
    joined = "\n".join(c.text for c in context.retrieve(request(ws / "app" / "x.py", text), 300, chars))
    assert 'def slugify(value: str, sep: str = "-") -> str:' in joined


def test_context_holds_still_while_typing(context: WorkspaceContext, ws: Path) -> None:
    path = ws / "app" / "main.py"
    previous = None
    for typed in ["c", "ci", "cir", "circ", "circl", "circle", "circle_", "circle_a", "circle_ar"]:
        chunks = texts(context.retrieve(request(path, MAIN + typed, root=ws), 400, chars))
        if previous is not None:
            assert chunks == previous  # same chunks, same order, same text: the KV cache holds
        previous = chunks


def test_new_chunks_are_appended_after_kept_ones(context: WorkspaceContext, ws: Path) -> None:
    path = ws / "app" / "main.py"
    first = texts(context.retrieve(request(path, MAIN, root=ws), 400, chars))
    line = "x = describe(c) + str(MAX_RADIUS)\n    "
    for i in range(1, len(line) + 1):
        now = texts(context.retrieve(request(path, MAIN + line[:i], root=ws), 400, chars))
        kept = [c for c in first if c in now]
        assert now[: len(kept)] == kept  # survivors keep their order, at the front
        first = now


def test_budget_is_respected(context: WorkspaceContext, ws: Path) -> None:
    req = request(ws / "app" / "main.py", MAIN, root=ws)
    for budget in (0, 5, 30, 60, 120, 400):
        chunks = context.retrieve(req, budget, chars)
        assert sum(chars(f"# {c.path}\n{c.text}\n\n") for c in chunks) <= max(0, budget)


def test_open_document_wins_over_its_disk_copy(context: WorkspaceContext, ws: Path) -> None:
    # On disk app/main.py defines `run`; the open text defines something else.  Context
    # never comes from the disk copy of the document being edited.
    live = "from pkg.geometry import circle_area\n\ndef other():\n    return circle_area(1)\n"
    chunks = context.retrieve(request(ws / "app" / "main.py", live, root=ws), 400, chars)
    assert all("def run(" not in c.text for c in chunks)
    assert any("circle_area" in c.text for c in chunks)


def test_far_imports_and_enclosing_scope(context: WorkspaceContext, ws: Path) -> None:
    body = "".join(f"        self.v{i} = {i}\n" for i in range(300))
    text = (
        "from pkg.geometry import Circle, circle_area\nimport os\n\n\n"
        "class Holder:\n    def fill(self, radius):\n" + body + "        self.total = "
    )
    chunks = context.retrieve(request(ws / "app" / "holder.py", text, root=ws), 150, chars)
    kinds = {c.kind: c for c in chunks}
    assert kinds["import"].text == "from pkg.geometry import Circle, circle_area"
    assert kinds["scope"].text == "class Holder:\n    def fill(self, radius):"
    # A short file shows its own imports: no in-file chunks then.
    short = context.retrieve(request(ws / "app" / "holder.py", text[:200], root=ws), 150, chars)
    assert not [c for c in short if c.kind in ("import", "scope")]


def test_similar_snippets_from_recent_documents(ws: Path) -> None:
    store = DocumentStore()
    context = build_context_provider([str(ws)], store)
    other = ws / "app" / "report.py"
    store.open(
        other.as_uri(),
        "def report(rows):\n    for row in rows:\n"
        "        total_price = row.quantity * row.unit_price\n        emit(row.name, total_price)\n",
    )
    text = "def invoice(rows):\n    for row in rows:\n        total_price = row.quantity * "
    chunks = context.retrieve(request(ws / "app" / "invoice.py", text, root=ws), 300, chars)
    snippets = [c for c in chunks if c.kind == "snippet"]
    assert snippets and "row.unit_price" in snippets[0].text
    assert snippets[0].path.replace(os.sep, "/") == "app/report.py"


def test_typescript_imports(context: WorkspaceContext, ws: Path) -> None:
    text = "import { add, Vec } from './math';\n\nexport function f(v: Vec) {\n  return add(v.x, "
    chunks = context.retrieve(request(ws / "web" / "src" / "f.ts", text, root=ws), 300, chars)
    joined = "\n".join(c.text for c in chunks)
    assert "// Sum of two numbers.\nfunction add(a: number, b: number): number { ... }" in joined
    assert "class Vec implements Shape {" in joined


def test_plain_text_file_degrades_to_nothing(context: WorkspaceContext, ws: Path) -> None:
    assert context.retrieve(request(ws / "notes.txt", "nothing known here\n"), 300, chars) == []
    chunks = context.retrieve(request(ws / "notes.txt", "call circle_area and describe here\n"), 300, chars)
    assert all(c.kind == "definition" for c in chunks)  # names near the cursor still resolve


@pytest.mark.model
def test_budget_never_exceeded_with_the_real_tokenizer(context: WorkspaceContext, ws: Path) -> None:
    from lsp_server.engine.model import load_model

    model = load_model(Settings())
    try:
        tok = model.backend

        def count(text: str) -> int:
            return len(tok.tokenize(text))

        text = (ws / "app" / "main.py").read_text() + "\n\ndef more(r):\n    c = Circle(r)\n    return "
        req = request(ws / "app" / "main.py", text, root=ws)
        for window in (256, 384, 512, 1024, 2048):
            budget = PromptBudget.for_model(tok.info.n_ctx, window, 64, suffix_max=64)
            share = int(budget.total * budget.context_share)
            chunks = context.retrieve(req, share, count)
            assert chunks
            for name in ("plain", "qwen25coder", "starcoder2", "codellama", "deepseek"):
                prompt = PromptBuilder(tok, get_template(name)).build(
                    req.prefix, req.suffix, budget, chunks, req.path, "ws"
                )
                assert prompt.n_tokens <= budget.total
                assert prompt.n_context_tokens <= share
                if name == "plain":
                    assert prompt.chunks_used == list(chunks)  # the retriever's estimate holds
                    # What the model sees is what was counted.
                    assert (
                        len(prompt.tokens) == len(tok.bos_tokens()) + prompt.n_context_tokens + prompt.n_prefix_tokens
                    )
    finally:
        model.backend.close()


def test_edits_inside_a_body_keep_the_declarations_in_step(context: WorkspaceContext, ws: Path) -> None:
    filler = "".join(f"    v{i} = {i}\n" for i in range(200))
    head = "from pkg.geometry import circle_area\n\n\ndef first(a):\n" + filler + "    return a\n\n\n"
    tail = "def second(b):\n" + filler + "    total = "
    path = ws / "app" / "two.py"

    def scope(text: str) -> str:
        chunks = context.retrieve(request(path, text, root=ws), 150, chars)
        return next(c.text for c in chunks if c.kind == "scope")

    assert scope(head + tail) == "def second(b):"
    # Three lines typed inside first(): no re-parse, the later declaration moves with them.
    grown = head.replace("    return a\n", "    x = 1\n    y = 2\n    z = 3\n    return a\n") + tail
    assert scope(grown) == "def second(b):"
    # A new declaration above is seen at once.
    assert scope(grown.replace("def second(b):", "class Box:\n  def second(b):")) == "class Box:\n  def second(b):"


def test_usage_lines_of_imported_names_from_outside_the_window(context: WorkspaceContext, ws: Path) -> None:
    # The file calls the workspace names it imports far above the cursor and below it: those
    # lines come as one "usage" chunk, the ones like the cursor's line (the same token right
    # before the name: ``raise``) last, nearest the code; docstrings, comments, strings and
    # lines the prompt shows anyway are left out.
    filler = "".join(f"    x{i} = {i}\n" for i in range(300))
    text = (
        "from pkg.geometry import Circle, circle_area\nfrom pkg.shapes import describe\n\n\n"
        "def first(r):\n"
        '    """circle_area in a docstring."""\n'
        "    # circle_area in a comment\n"
        '    print("circle_area in a string")\n'
        "    raise describe(Circle(r))\n"
        "    total = circle_area(r)\n"
        "    return total\n\n\n"
        "def second(r):\n" + filler + "    area = circle_area(2 * r)\n    raise "
    )
    cursor = len(text)
    text += "\n\n\ndef third(r):\n    return describe(Circle(r + 1))\n"
    chunks = context.retrieve(request(ws / "app" / "far.py", text, cursor, root=ws), 400, chars)
    usage = [c for c in chunks if c.kind == "usage"]
    assert usage, [c.kind for c in chunks]
    lines = usage[0].text.split("\n")
    assert usage[0].path.replace(os.sep, "/") == "app/far.py"
    assert lines[-1] == "raise describe(Circle(r))"
    assert "total = circle_area(r)" in lines and "return describe(Circle(r + 1))" in lines
    assert not any("docstring" in ln or "comment" in ln or "string" in ln for ln in lines)
    assert "area = circle_area(2 * r)" not in lines  # in the prompt's window already
    # The best line follows the cursor's token (``raise``) into a workspace name: a hint.
    assert [c.text for c in chunks if c.kind == "hint"] == ["raise describe(Circle(r))"]
    # No hint when no line leads into a workspace name the way the cursor's line does.
    at = text.index("    raise \n") + len("    ")
    other = text[:at] + "yield " + text[at + len("raise ") :]
    chunks = context.retrieve(request(ws / "app" / "far.py", other, at + len("yield "), root=ws), 400, chars)
    assert [c for c in chunks if c.kind == "usage"] and not [c for c in chunks if c.kind == "hint"]


def test_usage_lines_need_workspace_imports(context: WorkspaceContext, ws: Path) -> None:
    filler = "".join(f"    x{i} = {i}\n" for i in range(300))
    text = "import os\n\n\ndef f():\n    os.getcwd()\n" + filler + "    "
    chunks = context.retrieve(request(ws / "app" / "plain.py", text, root=ws), 400, chars)
    assert not [c for c in chunks if c.kind == "usage"]


def test_the_likely_context_is_what_most_files_import(context: WorkspaceContext, ws: Path) -> None:
    """Before a file is opened: the definitions imported by two files or more (circle_area
    and Circle: pkg/__init__.py, pkg/shapes.py and app/main.py import them), rendered as
    retrieval renders them, so that their tokens are the ones a prompt will hold."""
    got = context.likely_chunks(400, chars)
    assert got is not None
    chunks, generation = got
    assert generation == context.index.generation
    joined = "\n".join(c.text for c in chunks)
    assert "def circle_area(radius: float) -> float:" in joined and "class Circle:" in joined
    # Imported by one file only: not likely elsewhere.
    assert "def describe(c: Circle) -> str:" not in joined and "MAX_RADIUS" not in joined
    retrieved = context.retrieve(request(ws / "app" / "main.py", MAIN, root=ws), 400, chars)
    assert {c.text for c in chunks} & {c.text for c in retrieved}
    # Most imported first, within the budget.
    first = chunks[0]
    alone, _ = context.likely_chunks(chars(f"# {first.path}\n{first.text}\n\n"), chars)
    assert [c.text for c in alone] == [first.text]
    assert context.likely_chunks(0, chars) == ([], context.index.generation)


def test_a_guess_of_the_likely_contexts_tokens_does_not_change_retrieval(context: WorkspaceContext, ws: Path) -> None:
    """The likely context is read with a guess of its tokens (off the model thread): the
    counts retrieval keeps for its budget stay the tokenizer's."""
    fresh = build_context_provider([str(ws)], DocumentStore())
    assert context.likely_chunks(400, lambda text: 1)
    req = request(ws / "app" / "main.py", MAIN, root=ws)
    assert texts(context.retrieve(req, 120, chars)) == texts(fresh.retrieve(req, 120, chars))


def test_no_likely_context_before_the_index_is_built(ws: Path) -> None:
    assert WorkspaceContext([str(ws)]).likely_chunks(400, chars) is None
