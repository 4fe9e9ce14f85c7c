"""The workspace index on a small multi-language workspace (tests/data/context/ws).

The fixture is copied into a temporary folder, where the files that git (and so this
repository) would ignore are created by :func:`make_workspace`: a .gitignore and what it
ignores, build output, node_modules, binary/huge/minified files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lsp_server.context.index import WorkspaceIndex
from lsp_server.context.symbols import Import

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "context" / "ws"


def make_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    (ws / ".gitignore").write_text("# local junk\n*.log\n/scratch.py\nsecret_*.py\n!secret_ok.py\ntmp/\n")
    (ws / "scratch.py").write_text("def scratch_only(): pass\n")
    (ws / "secret_keys.py").write_text("def secret_thing(): pass\n")
    (ws / "secret_ok.py").write_text("def not_so_secret(): pass\n")
    (ws / "tmp").mkdir()
    (ws / "tmp" / "t.py").write_text("def in_tmp(): pass\n")
    (ws / "build").mkdir()
    (ws / "build" / "out.py").write_text("def built_output(): pass\n")
    (ws / "node_modules" / "left-pad").mkdir(parents=True)
    (ws / "node_modules" / "left-pad" / "index.js").write_text("export function leftPad(s, n) { return s; }\n")
    (ws / "venvdir").mkdir()
    (ws / "venvdir" / "pyvenv.cfg").write_text("home = /usr\n")
    (ws / "venvdir" / "lib.py").write_text("def in_venv(): pass\n")
    (ws / "pkg" / "blob.py").write_bytes(b"def binary_thing(): pass\n\x00\x01\x02")
    (ws / "pkg" / "huge.py").write_text("def huge_thing(): pass\n" + "x = 1\n" * 200_000)
    (ws / "web" / "src" / "bundle.js").write_text("function minified(){return 1};" * 200)
    return ws


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture()
def index(ws: Path) -> WorkspaceIndex:
    idx = WorkspaceIndex([str(ws)])
    idx.build()
    return idx


def rels(index: WorkspaceIndex) -> set[str]:
    return {s.rel.replace(os.sep, "/") for s in index.files.values()}


def names(index: WorkspaceIndex, rel: str) -> dict[str, str]:
    summary = next(s for s in index.files.values() if s.rel.replace(os.sep, "/") == rel)
    return {(f"{s.container}.{s.name}" if s.container else s.name): s.kind for s in summary.symbols}


def test_files_indexed_and_skipped(index: WorkspaceIndex) -> None:
    assert rels(index) == {
        "app/main.py",
        "pkg/__init__.py",
        "pkg/geometry.py",
        "pkg/shapes.py",
        "pkg/util/__init__.py",
        "pkg/util/text.py",
        "secret_ok.py",
        "web/src/math.ts",
        "web/src/app.ts",
        "web/src/widget.js",
        "go/main.go",
        "go/shapes/shapes.go",
        "rust/src/lib.rs",
        "rust/src/shapes.rs",
        "rust/src/main.rs",
        "java/com/example/geo/Circle.java",
        "java/com/example/app/Main.java",
        "c/include/geom.h",
        "c/src/main.c",
        "c/src/shapes.cpp",
    }
    # .gitignore (with a re-include), build output, vendored code, a virtualenv, generated,
    # binary, huge and minified files are all left out.
    skipped = index.stats.skipped
    assert skipped["generated-or-binary"] == 3  # autogen.py, blob.py, bundle.js
    assert skipped["huge"] == 1
    assert index.stats.state == "ready"
    assert index.stats.symbols == sum(len(s.symbols) for s in index.files.values())


def test_python_definitions(index: WorkspaceIndex) -> None:
    got = names(index, "pkg/geometry.py")
    assert got == {
        "MAX_RADIUS": "constant",
        "_unit": "variable",
        "Circle": "class",
        "Circle.sides": "field",
        "Circle.__init__": "method",
        "Circle.area": "method",
        "Circle.diameter": "method",
        "Circle._private": "method",
        "circle_area": "function",
        "fetch_shape": "function",
    }
    ((summary, sym),) = [d for d in index.definitions("circle_area") if d[0].language == "python"]
    assert sym.signature == "def circle_area(radius: float) -> float:"
    assert sym.doc == "Area of a circle of the given radius."
    ((_, init),) = [d for d in index.definitions("__init__") if d[1].container == "Circle"]
    assert init.signature == 'def __init__(self, radius: float, *, name: str = "c") -> None:'
    ((_, prop),) = index.definitions("diameter")
    assert prop.signature == "@property\ndef diameter(self) -> float:"
    ((_, fetch),) = index.definitions("fetch_shape")
    assert fetch.signature.startswith("async def fetch_shape(url: str, timeout: float = 1.0) -> Circle:")
    assert index.definitions("helper") == []  # nested functions are not indexed
    ((_, const),) = index.definitions("MAX_RADIUS")
    assert const.signature == "MAX_RADIUS = 100"


@pytest.mark.parametrize(
    "rel, expected",
    [
        (
            "web/src/math.ts",
            {
                "add": "function",
                "Shape": "interface",
                "Vec": "class",
                "Vec.constructor": "method",
                "Vec.length": "method",
                "Vec.area": "method",
                "ORIGIN": "constant",
                "scale": "function",
            },
        ),
        ("web/src/widget.js", {"Widget": "class", "Widget.render": "method"}),
        ("go/shapes/shapes.go", {"Pi": "constant", "Square": "type", "Area": "function", "Square.Scale": "method"}),
        ("rust/src/shapes.rs", {"Point": "class", "Point.new": "method", "area": "function"}),
        ("rust/src/lib.rs", {"double": "function"}),
        (
            "java/com/example/geo/Circle.java",
            {
                "Circle": "class",
                "Circle.PI": "field",
                "Circle.r": "field",
                "Circle.Circle": "method",
                "Circle.area": "method",
            },
        ),
        ("c/include/geom.h", {"GEOM_H": "macro", "GEOM_PI": "macro", "point": "class", "circle_area": "function"}),
        (
            "c/src/shapes.cpp",
            {"geo": "module", "geo.Square": "class", "geo.Square.Square": "method", "geo.Square.area": "method"},
        ),
    ],
)
def test_other_language_definitions(index: WorkspaceIndex, rel: str, expected: dict[str, str]) -> None:
    assert names(index, rel) == expected


def test_signatures_and_docs_across_languages(index: WorkspaceIndex) -> None:
    def one(name: str, rel_end: str):
        return next(s for f, s in index.definitions(name) if f.rel.endswith(rel_end))

    assert one("add", "math.ts").signature == "function add(a: number, b: number): number"
    assert one("add", "math.ts").doc == "Sum of two numbers."
    assert one("length", "math.ts").doc == "Length of the vector."
    assert one("Area", "shapes.go").signature == "func Area(r float64) float64"
    assert one("Area", "shapes.go").doc == "Area returns the area of a circle of radius r."
    assert one("Square", "shapes.go").signature == "type Square struct { S float64 }"
    assert one("area", "shapes.rs").doc == "Area of a circle."
    assert one("area", "Circle.java").signature == "public double area()"
    assert one("circle_area", "geom.h").signature == "double circle_area(double r);"
    assert one("circle_area", "geom.h").doc == "Area of a circle of radius r."


def test_package_names(index: WorkspaceIndex) -> None:
    by_rel = {s.rel.replace(os.sep, "/"): s for s in index.files.values()}
    assert by_rel["go/shapes/shapes.go"].package == "shapes"
    assert by_rel["java/com/example/geo/Circle.java"].package == "com.example.geo"


def resolved(index: WorkspaceIndex, ws: Path, rel: str) -> dict[str, tuple[str, tuple[str, ...], str]]:
    path = str(ws / rel)
    summary = index.summary(path)
    assert summary is not None
    out = {}
    for b in index.resolve(path, summary.language, summary.imports):
        out[b.local] = (b.kind, tuple(os.path.relpath(p, ws).replace(os.sep, "/") for p in b.paths), b.name)
    return out


def test_python_imports_resolve_across_files(index: WorkspaceIndex, ws: Path) -> None:
    got = resolved(index, ws, "app/main.py")
    assert got["Circle"] == ("symbol", ("pkg/__init__.py",), "Circle")  # re-exported by the package
    assert got["circle_area"] == ("symbol", ("pkg/geometry.py",), "circle_area")
    assert got["MAX_RADIUS"] == ("symbol", ("pkg/geometry.py",), "MAX_RADIUS")
    assert got["describe"] == ("symbol", ("pkg/shapes.py",), "describe")
    assert got["text_mod"] == ("module", ("pkg/util/text.py",), "")
    assert got["pkg.util.text"] == ("module", ("pkg/util/text.py",), "")
    assert got["pkg"] == ("module", ("pkg/__init__.py",), "")
    # The facade re-export leads to the definition.
    ((summary, sym),) = index.find_definition(str(ws / "pkg/__init__.py"), "Circle")
    assert (summary.rel.replace(os.sep, "/"), sym.kind) == ("pkg/geometry.py", "class")


def test_python_relative_imports(index: WorkspaceIndex, ws: Path) -> None:
    got = resolved(index, ws, "pkg/shapes.py")
    assert got["util"] == ("module", ("pkg/util/__init__.py",), "")
    assert got["Circle"] == ("symbol", ("pkg/geometry.py",), "Circle")
    assert got["area_of"] == ("symbol", ("pkg/geometry.py",), "circle_area")
    assert got["slugify"] == ("symbol", ("pkg/util/text.py",), "slugify")
    # `import math` / `import re` are the standard library: nothing in the workspace.
    assert "math" not in resolved(index, ws, "pkg/geometry.py")


def test_stdlib_name_is_not_a_workspace_module(index: WorkspaceIndex, ws: Path) -> None:
    (ws / "pkg" / "json.py").write_text("def dumps(x): ...\n")
    index.update_file(str(ws / "pkg" / "json.py"))
    path = str(ws / "app" / "main.py")
    assert index.resolve(path, "python", (Import(module="json", alias="json"),)) == ()
    assert index.resolve(path, "python", (Import(module="pkg.json", alias="j"),))[0].local == "j"


def test_other_language_imports_resolve(index: WorkspaceIndex, ws: Path) -> None:
    ts = resolved(index, ws, "web/src/app.ts")
    assert ts["add"] == ("symbol", ("web/src/math.ts",), "add")
    assert ts["V"] == ("symbol", ("web/src/math.ts",), "Vec")
    assert ts["m"] == ("module", ("web/src/math.ts",), "")
    assert "React" not in ts  # a package, not a workspace file
    assert resolved(index, ws, "web/src/widget.js")["add"] == ("symbol", ("web/src/math.ts",), "add")
    assert resolved(index, ws, "go/main.go")["shapes"] == ("module", ("go/shapes/shapes.go",), "")
    rust = resolved(index, ws, "rust/src/main.rs")
    assert rust["area"] == ("symbol", ("rust/src/shapes.rs",), "area")
    assert rust["P"] == ("symbol", ("rust/src/shapes.rs",), "Point")
    assert resolved(index, ws, "rust/src/lib.rs")["shapes"] == ("module", ("rust/src/shapes.rs",), "")
    java = resolved(index, ws, "java/com/example/app/Main.java")
    assert java == {"Circle": ("symbol", ("java/com/example/geo/Circle.java",), "Circle")}
    assert resolved(index, ws, "c/src/main.c") == {"*": ("wildcard", ("c/include/geom.h",), "")}
    assert resolved(index, ws, "c/src/shapes.cpp") == {"*": ("wildcard", ("c/include/geom.h",), "")}


def test_update_and_remove_one_file(index: WorkspaceIndex, ws: Path) -> None:
    generation = index.generation
    text = ws / "pkg" / "util" / "text.py"
    text.write_text("def titlecase(value: str) -> str:\n    return value.title()\n")
    os.utime(text, ns=(1, 1))  # a different mtime even on a coarse clock
    assert index.update_file(str(text))
    assert index.generation > generation
    assert index.definitions("slugify") == []
    assert [s.name for _, s in index.definitions("titlecase")] == ["titlecase"]
    assert not index.update_file(str(text))  # unchanged: nothing to do
    text.unlink()
    assert index.refresh_path(str(text)) == 1
    assert index.definitions("titlecase") == []
    # Importers see the change: `from .util.text import slugify` no longer resolves.
    assert "slugify" not in resolved(index, ws, "pkg/shapes.py")


def test_gitignore_change_rescans(index: WorkspaceIndex, ws: Path) -> None:
    (ws / ".gitignore").write_text("*.log\n")
    index.refresh_path(str(ws / ".gitignore"))
    assert "scratch.py" in rels(index) and "secret_keys.py" in rels(index)
    (ws / ".gitignore").write_text("pkg/\n")
    index.refresh_path(str(ws / ".gitignore"))
    assert not any(r.startswith("pkg/") for r in rels(index))


def test_multi_root(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    (a / "liba").mkdir(parents=True)
    (a / "liba" / "__init__.py").write_text("def from_a(): ...\n")
    b.mkdir()
    (b / "app.py").write_text("from liba import from_a\n")
    index = WorkspaceIndex([str(a), str(b)])
    index.build()
    path = str(b / "app.py")
    summary = index.summary(path)
    assert summary is not None and summary.rel == "app.py"
    (binding,) = index.resolve(path, "python", summary.imports)
    assert binding.paths == (str(a / "liba" / "__init__.py"),)  # an import across roots
    index.remove_root(str(a))
    assert index.summary(str(a / "liba" / "__init__.py")) is None
    assert index.resolve(path, "python", summary.imports) == ()
    assert index.root_for(path) == str(b)


def test_file_limit(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}(): ...\n")
    index = WorkspaceIndex([str(tmp_path)], max_files=3)
    index.build()
    assert len(index.files) == 3
    assert index.stats.skipped["limit"] == 2


def test_progress_and_cancel(ws: Path) -> None:
    import threading

    index = WorkspaceIndex([str(ws)])
    seen: list[tuple[int, int]] = []
    index.build(progress=lambda done, total, path: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == len(seen)
    cancel = threading.Event()
    cancel.set()
    other = WorkspaceIndex([str(ws)])
    assert other.build(cancel=cancel) == 0
    assert other.stats.state == "cancelled"


def test_parallel_build_matches_the_serial_one(ws: Path) -> None:
    serial = WorkspaceIndex([str(ws)])
    serial.build(workers=0)
    parallel = WorkspaceIndex([str(ws)])
    seen: list[int] = []
    parallel.build(workers=2, progress=lambda done, total, path: seen.append(done))
    assert set(parallel.files) == set(serial.files)
    for path, summary in serial.files.items():
        assert parallel.files[path].symbols == summary.symbols
        assert parallel.files[path].imports == summary.imports
    assert parallel.stats.skipped == serial.stats.skipped
    assert seen == list(range(1, len(seen) + 1))
