"""What a source file defines and imports, read from its tree-sitter tree.

One pass over the *declaration level* of a file: the module top level, class / impl /
namespace bodies and the blocks of module-level ``if``/``try`` statements.  Function
bodies are never walked, so a 5,000-line file costs a few hundred node visits, not a
hundred thousand.  The result is a :class:`FileSummary` of plain, immutable values that
the index stores and the retriever renders.

Python gets a dedicated reader (signatures with decorators, docstrings, relative
imports); the other languages share one reader driven by a table of node types.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_SIGNATURE_CHARS = 360
MAX_VALUE_CHARS = 120
MAX_SUMMARY_CHARS = 600  # whole-text summaries (a Go struct, a TS interface)


@dataclass(frozen=True, slots=True)
class Symbol:
    """One definition: a function, class, method, type, constant, macro or field."""

    name: str
    kind: str  # function, method, class, interface, type, constant, variable, field, macro
    signature: str  # the declaration without its body, as written (whitespace folded)
    doc: str = ""  # first line of the docstring / doc comment
    line: int = 0  # 0-based line of the definition
    container: str = ""  # enclosing class / impl / namespace ("" at module level)
    end_line: int = 0


@dataclass(frozen=True, slots=True)
class Import:
    """One import as written; the index resolves ``module`` to workspace files."""

    module: str  # "os.path", "./widget", "crate::util", "com.x.util", "geom/circle.h"
    names: tuple[tuple[str, str], ...] = ()  # (imported name, local name)
    alias: str = ""  # local name bound to the module itself ("" when nothing is bound)
    level: int = 0  # Python: number of leading dots
    line: int = 0
    wildcard: bool = False
    kind: str = "import"  # "import", "include", "mod" (Rust `mod x;`)


@dataclass(slots=True)
class FileSummary:
    path: str  # absolute
    rel: str  # relative to its workspace root
    root: str
    language: str
    symbols: tuple[Symbol, ...] = ()
    imports: tuple[Import, ...] = ()
    package: str = ""  # Go package name / Java package ("" elsewhere)
    mtime_ns: int = 0
    size: int = 0
    error: str = ""
    _by_name: dict[str, list[Symbol]] | None = field(default=None, repr=False)

    def named(self, name: str) -> list[Symbol]:
        """Definitions of ``name`` in this file (module level first)."""
        if self._by_name is None:
            by: dict[str, list[Symbol]] = {}
            for sym in self.symbols:
                by.setdefault(sym.name, []).append(sym)
            for syms in by.values():
                syms.sort(key=lambda s: (s.container != "", s.line))
            self._by_name = by
        return self._by_name.get(name, [])

    def members(self, container: str) -> list[Symbol]:
        return [s for s in self.symbols if s.container == container]

    def top_level(self) -> list[Symbol]:
        return [s for s in self.symbols if not s.container]


_WS = re.compile(r"\s*\n\s*")


def fold(text: str, limit: int = MAX_SIGNATURE_CHARS) -> str:
    """One line: newlines and their indentation become single spaces."""
    text = _WS.sub(" ", text.strip())
    text = text.replace("( ", "(").replace(" )", ")").replace("[ ", "[").replace(" ]", "]").replace(", )", ")")
    if len(text) > limit:
        text = text[: limit - 4].rstrip() + " ..."
    return text


def _first_doc_line(text: str) -> str:
    """First meaningful line of a docstring or a comment block, markers removed."""
    for raw in text.splitlines():
        line = raw.strip()
        for marker in ('"""', "'''", "/**", "/*!", "/*", "*/", "///", "//!", "//", "#", "--", '"', "'"):
            if line.startswith(marker):
                line = line[len(marker) :].strip()
        if line.endswith("*/"):
            line = line[:-2].strip()
        for marker in ('"""', "'''"):
            if line.endswith(marker):
                line = line[: -len(marker)].strip()
        line = line.lstrip("*!/ ").strip()
        if line:
            return line[:160]
    return ""


class _Source:
    """Byte source with cheap text slices."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def text(self, node: Any, end: int | None = None) -> str:
        return self.data[node.start_byte : node.end_byte if end is None else end].decode("utf-8", "replace")

    def between(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8", "replace")


# ---------------------------------------------------------------------- Python
def _py_docstring(src: _Source, body: Any | None) -> str:
    if body is None:
        return ""
    for child in body.named_children:
        if child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_child_count:
            child = child.named_children[0]  # older grammars wrap expressions
        if child.type == "string":
            return _first_doc_line(src.text(child))
        return ""
    return ""


def _py_header_end(node: Any, body: Any | None) -> int:
    """End of a def/class header: its ':' (comments before the body are not part of it)."""
    end = node.end_byte
    for child in node.children:
        if child.type == ":":
            end = child.end_byte
        elif body is not None and child.start_byte >= body.start_byte:
            break
    return end


def _py_import(src: _Source, node: Any, out: list[Import]) -> None:
    line = node.start_point[0]
    if node.type == "import_statement":
        for child in node.named_children:
            if child.type == "dotted_name":
                name = src.text(child)
                out.append(Import(module=name, alias=name.split(".")[0], line=line))
            elif child.type == "aliased_import":
                name_node = child.child_by_field_name("name")
                alias_node = child.child_by_field_name("alias")
                if name_node is not None:
                    out.append(
                        Import(module=src.text(name_node), alias=src.text(alias_node) if alias_node else "", line=line)
                    )
        return
    # import_from_statement
    module_node = node.child_by_field_name("module_name")
    module, level = "", 0
    if module_node is not None:
        if module_node.type == "relative_import":
            for part in module_node.named_children:
                if part.type == "import_prefix":
                    level = src.text(part).count(".")
                elif part.type == "dotted_name":
                    module = src.text(part)
        else:
            module = src.text(module_node)
    names: list[tuple[str, str]] = []
    wildcard = False
    for i, child in enumerate(node.children):
        if child.type == "wildcard_import":
            wildcard = True
        elif node.field_name_for_child(i) == "name":
            if child.type == "dotted_name":
                n = src.text(child)
                names.append((n, n))
            elif child.type == "aliased_import":
                name_node = child.child_by_field_name("name")
                alias_node = child.child_by_field_name("alias")
                if name_node is not None:
                    n = src.text(name_node)
                    names.append((n, src.text(alias_node) if alias_node else n))
    out.append(Import(module=module, names=tuple(names), level=level, line=line, wildcard=wildcard))


def _py_walk(src: _Source, node: Any, container: str, syms: list[Symbol], imps: list[Import], top: bool) -> None:
    for child in node.named_children:
        kind = child.type
        if kind == "expression_statement" and child.named_child_count:
            child = child.named_children[0]  # older grammars wrap expressions
            kind = child.type
        decorators = ""
        if kind == "decorated_definition":
            defn = child.child_by_field_name("definition")
            if defn is None:
                continue
            decs = [src.text(d) for d in child.named_children if d.type == "decorator"]
            short = [d for d in decs if len(d) <= 48][:2]
            decorators = "\n".join(short) + ("\n" if short else "")
            start = child
            child, kind = defn, defn.type
        else:
            start = child
        if kind == "function_definition":
            name_node = child.child_by_field_name("name")
            body = child.child_by_field_name("body")
            if name_node is None:
                continue
            sig = fold(src.between(child.start_byte, _py_header_end(child, body))).rstrip()
            syms.append(
                Symbol(
                    name=src.text(name_node),
                    kind="method" if container else "function",
                    signature=decorators + sig,
                    doc=_py_docstring(src, body),
                    line=start.start_point[0],
                    container=container,
                    end_line=child.end_point[0],
                )
            )
        elif kind == "class_definition":
            name_node = child.child_by_field_name("name")
            body = child.child_by_field_name("body")
            if name_node is None:
                continue
            name = src.text(name_node)
            header = src.between(child.start_byte, _py_header_end(child, body))
            syms.append(
                Symbol(
                    name=name,
                    kind="class",
                    signature=decorators + fold(header).rstrip(),
                    doc=_py_docstring(src, body),
                    line=start.start_point[0],
                    container=container,
                    end_line=child.end_point[0],
                )
            )
            if body is not None:
                _py_walk(src, body, f"{container}.{name}" if container else name, syms, imps, False)
        elif kind == "assignment":
            inner = child
            left = inner.child_by_field_name("left")
            if left is None or left.type != "identifier":
                continue
            name = src.text(left)
            if name.startswith("__") and name.endswith("__"):
                continue
            text = src.text(inner)
            first = text.split("\n", 1)[0]
            sig = first if len(first) <= MAX_VALUE_CHARS else first[: MAX_VALUE_CHARS - 4].rstrip() + " ..."
            if container:
                k = "field"
            else:
                k = "constant" if name.lstrip("_").isupper() else "variable"
            syms.append(
                Symbol(
                    name=name,
                    kind=k,
                    signature=sig,
                    line=child.start_point[0],
                    container=container,
                    end_line=child.end_point[0],
                )
            )
        elif kind in ("import_statement", "import_from_statement"):
            _py_import(src, child, imps)
        elif top and kind in ("if_statement", "try_statement", "with_statement"):
            if kind == "if_statement":
                cond = child.child_by_field_name("condition")
                if cond is not None and "__main__" in src.text(cond):
                    continue
            for part in child.named_children:
                if part.type == "block":
                    _py_walk(src, part, container, syms, imps, True)
                elif part.type in (
                    "else_clause",
                    "elif_clause",
                    "except_clause",
                    "finally_clause",
                    "except_group_clause",
                ):
                    for block in part.named_children:
                        if block.type == "block":
                            _py_walk(src, block, container, syms, imps, True)


def _extract_python(src: _Source, root: Any) -> tuple[list[Symbol], list[Import], str]:
    syms: list[Symbol] = []
    imps: list[Import] = []
    _py_walk(src, root, "", syms, imps, True)
    return syms, imps, ""


# --------------------------------------------------------------- other languages
@dataclass(frozen=True)
class LanguageSpec:
    """Node types of one grammar, for the table-driven reader."""

    defs: dict[str, str]  # node type -> symbol kind
    containers: frozenset[str] = frozenset()  # defs whose body holds members
    transparent: frozenset[str] = frozenset()  # walk into these without a symbol
    whole: frozenset[str] = frozenset()  # defs summarised by their full text (structs, enums)
    imports: Callable[[_Source, Any, list[Import]], bool] | None = None  # True: was an import


def _string_content(src: _Source, node: Any) -> str:
    text = src.text(node)
    return text.strip().strip("\"'`<>")


def _js_import(src: _Source, node: Any, out: list[Import]) -> bool:
    if node.type != "import_statement":
        return False
    source = node.child_by_field_name("source")
    if source is None:
        return True
    module = _string_content(src, source)
    names: list[tuple[str, str]] = []
    alias = ""
    for child in node.named_children:
        if child.type != "import_clause":
            continue
        for part in child.named_children:
            if part.type == "identifier":
                names.append(("default", src.text(part)))
            elif part.type == "namespace_import":
                ids = [c for c in part.named_children if c.type == "identifier"]
                if ids:
                    alias = src.text(ids[-1])
            elif part.type == "named_imports":
                for spec in part.named_children:
                    if spec.type != "import_specifier":
                        continue
                    n = spec.child_by_field_name("name")
                    a = spec.child_by_field_name("alias")
                    if n is not None:
                        names.append((src.text(n), src.text(a) if a is not None else src.text(n)))
    out.append(Import(module=module, names=tuple(names), alias=alias, line=node.start_point[0]))
    return True


def _go_import(src: _Source, node: Any, out: list[Import]) -> bool:
    if node.type != "import_declaration":
        return False
    specs = []
    for child in node.named_children:
        if child.type == "import_spec":
            specs.append(child)
        elif child.type == "import_spec_list":
            specs.extend(c for c in child.named_children if c.type == "import_spec")
    for spec in specs:
        path = spec.child_by_field_name("path")
        if path is None:
            continue
        module = _string_content(src, path)
        name = spec.child_by_field_name("name")
        alias = src.text(name) if name is not None else module.rsplit("/", 1)[-1]
        out.append(Import(module=module, alias=alias, line=spec.start_point[0], wildcard=alias == "."))
    return True


def _rust_use_paths(src: _Source, node: Any, base: str, out: list[tuple[str, str]]) -> None:
    kind = node.type
    if kind in ("identifier", "self", "crate", "super", "scoped_identifier"):
        path = src.text(node)
        full = f"{base}::{path}" if base else path
        out.append((full, full.rsplit("::", 1)[-1]))
    elif kind == "use_as_clause":
        p = node.child_by_field_name("path")
        a = node.child_by_field_name("alias")
        if p is not None:
            path = src.text(p)
            full = f"{base}::{path}" if base else path
            out.append((full, src.text(a) if a is not None else full.rsplit("::", 1)[-1]))
    elif kind == "scoped_use_list":
        p = node.child_by_field_name("path")
        lst = node.child_by_field_name("list")
        prefix = src.text(p) if p is not None else ""
        full = f"{base}::{prefix}" if base and prefix else (prefix or base)
        if lst is not None:
            for item in lst.named_children:
                _rust_use_paths(src, item, full, out)
    elif kind == "use_list":
        for item in node.named_children:
            _rust_use_paths(src, item, base, out)
    elif kind == "use_wildcard":
        text = src.text(node).rstrip("*").rstrip(":")
        full = f"{base}::{text}" if base and text else (text or base)
        out.append((full + "::*", "*"))


def _rust_import(src: _Source, node: Any, out: list[Import]) -> bool:
    if node.type == "mod_item":
        if node.child_by_field_name("body") is None:
            name = node.child_by_field_name("name")
            if name is not None:
                n = src.text(name)
                out.append(Import(module=n, alias=n, line=node.start_point[0], kind="mod"))
            return True
        return False
    if node.type != "use_declaration":
        return False
    arg = node.child_by_field_name("argument")
    if arg is None:
        return True
    paths: list[tuple[str, str]] = []
    _rust_use_paths(src, arg, "", paths)
    for full, local in paths:
        if full.endswith("::*"):
            out.append(Import(module=full[:-3], line=node.start_point[0], wildcard=True))
        elif "::" in full:
            module, name = full.rsplit("::", 1)
            if name == "self":
                out.append(Import(module=module, alias=module.rsplit("::", 1)[-1], line=node.start_point[0]))
            else:
                out.append(Import(module=module, names=((name, local),), line=node.start_point[0]))
        else:
            out.append(Import(module=full, alias=local, line=node.start_point[0]))
    return True


def _java_import(src: _Source, node: Any, out: list[Import]) -> bool:
    if node.type != "import_declaration":
        return False
    path = ""
    wildcard = False
    for child in node.named_children:
        if child.type in ("scoped_identifier", "identifier"):
            path = src.text(child)
        elif child.type == "asterisk":
            wildcard = True
    if not path:
        return True
    if wildcard:
        out.append(Import(module=path, line=node.start_point[0], wildcard=True))
    elif "." in path:
        module, name = path.rsplit(".", 1)
        out.append(Import(module=module, names=((name, name),), line=node.start_point[0]))
    return True


def _c_import(src: _Source, node: Any, out: list[Import]) -> bool:
    if node.type != "preproc_include":
        return False
    path = node.child_by_field_name("path")
    if path is not None and path.type == "string_literal":
        out.append(Import(module=_string_content(src, path), line=node.start_point[0], kind="include"))
    return True


_JS_DEFS = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "abstract_class_declaration": "class",
    "method_definition": "method",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "type",
    "lexical_declaration": "variable",
    "variable_declaration": "variable",
    "public_field_definition": "field",
    "field_definition": "field",
    "abstract_method_signature": "method",
    "method_signature": "method",
    "function_signature": "function",
}
_JS = LanguageSpec(
    defs=_JS_DEFS,
    containers=frozenset({"class_declaration", "abstract_class_declaration"}),
    transparent=frozenset(
        {"export_statement", "class_body", "ambient_declaration", "internal_module", "statement_block"}
    ),
    whole=frozenset({"interface_declaration", "type_alias_declaration", "enum_declaration"}),
    imports=_js_import,
)
_GO = LanguageSpec(
    defs={
        "function_declaration": "function",
        "method_declaration": "method",
        "type_spec": "type",
        "type_alias": "type",
        "const_spec": "constant",
        "var_spec": "variable",
    },
    transparent=frozenset({"type_declaration", "const_declaration", "var_declaration"}),
    whole=frozenset({"type_spec", "type_alias"}),
    imports=_go_import,
)
_RUST = LanguageSpec(
    defs={
        "function_item": "function",
        "function_signature_item": "function",
        "struct_item": "class",
        "enum_item": "type",
        "union_item": "type",
        "trait_item": "interface",
        "type_item": "type",
        "const_item": "constant",
        "static_item": "constant",
        "macro_definition": "macro",
        "mod_item": "module",
        "impl_item": "impl",
    },
    containers=frozenset({"trait_item", "impl_item", "mod_item"}),
    transparent=frozenset({"declaration_list"}),
    whole=frozenset({"struct_item", "enum_item", "type_item", "union_item"}),
    imports=_rust_import,
)
_JAVA = LanguageSpec(
    defs={
        "class_declaration": "class",
        "interface_declaration": "interface",
        "enum_declaration": "type",
        "record_declaration": "class",
        "annotation_type_declaration": "interface",
        "method_declaration": "method",
        "constructor_declaration": "method",
        "field_declaration": "field",
        "constant_declaration": "constant",
    },
    containers=frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}),
    transparent=frozenset({"class_body", "interface_body", "enum_body", "enum_body_declarations"}),
    imports=_java_import,
)
_C_DEFS = {
    "function_definition": "function",
    "declaration": "function",  # prototypes (other declarations are skipped below)
    "struct_specifier": "class",
    "union_specifier": "class",
    "enum_specifier": "type",
    "type_definition": "type",
    "preproc_def": "macro",
    "preproc_function_def": "macro",
}
_C = LanguageSpec(
    defs=_C_DEFS,
    transparent=frozenset(
        {"preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif", "linkage_specification", "declaration_list"}
    ),
    whole=frozenset({"struct_specifier", "union_specifier", "enum_specifier", "type_definition"}),
    imports=_c_import,
)
_CPP = LanguageSpec(
    defs={
        **_C_DEFS,
        "class_specifier": "class",
        "field_declaration": "method",  # member prototypes (data members are skipped below)
        "alias_declaration": "type",
        "namespace_definition": "module",
    },
    containers=frozenset({"class_specifier", "struct_specifier", "namespace_definition"}),
    transparent=frozenset({*_C.transparent, "template_declaration", "field_declaration_list", "access_specifier"}),
    whole=frozenset({"enum_specifier", "type_definition", "alias_declaration", "union_specifier"}),
    imports=_c_import,
)

SPECS: dict[str, LanguageSpec] = {
    "javascript": _JS,
    "typescript": _JS,
    "tsx": _JS,
    "go": _GO,
    "rust": _RUST,
    "java": _JAVA,
    "c": _C,
    "cpp": _CPP,
}

_GO_KEYWORD = {"type_spec": "type ", "type_alias": "type ", "const_spec": "const ", "var_spec": "var "}
_BODY_TYPES = frozenset(
    {
        "statement_block",
        "block",
        "compound_statement",
        "class_body",
        "interface_body",
        "enum_body",
        "field_declaration_list",
        "declaration_list",
        "enumerator_list",
        "enum_variant_list",
        "constructor_body",
    }
)


def _declarator_name(node: Any, src: _Source) -> tuple[str, str] | None:
    """(name, qualifier) of a C/C++ declarator chain; None when it declares no function."""
    decl = node.child_by_field_name("declarator")
    func = None
    while decl is not None:
        if decl.type == "function_declarator":
            func = decl
        nxt = decl.child_by_field_name("declarator")
        if nxt is None:
            break
        decl = nxt
    if func is None or decl is None:
        return None
    text = src.text(decl)
    if "::" in text:
        qual, name = text.rsplit("::", 1)
        return name, qual
    return text, ""


def _generic_name(node: Any, src: _Source, language: str) -> tuple[list[str], str]:
    """Names a definition node binds, and a container qualifier (C++ ``A::f``)."""
    kind = node.type
    if kind in ("function_definition", "declaration", "field_declaration") and language in ("c", "cpp"):
        got = _declarator_name(node, src)
        if got is None:
            return [], ""
        return [got[0]], got[1]
    if kind in ("lexical_declaration", "variable_declaration"):
        names = []
        for d in node.named_children:
            if d.type == "variable_declarator":
                n = d.child_by_field_name("name")
                if n is not None and n.type == "identifier":
                    names.append(src.text(n))
        return names, ""
    if kind == "field_declaration" and language == "java" or kind == "constant_declaration":
        names = []
        for d in node.named_children:
            if d.type == "variable_declarator":
                n = d.child_by_field_name("name")
                if n is not None:
                    names.append(src.text(n))
        return names, ""
    if kind in ("const_spec", "var_spec"):
        return [src.text(c) for c in node.children_by_field_name("name")], ""
    if kind == "type_definition":
        return [src.text(c) for c in node.children_by_field_name("declarator") if c.type == "type_identifier"], ""
    if kind == "impl_item":
        t = node.child_by_field_name("type")
        return ([src.text(t)] if t is not None else []), ""
    if kind == "macro_definition":
        n = node.child_by_field_name("name")
        return ([src.text(n)] if n is not None else []), ""
    n = node.child_by_field_name("name")
    if n is None:
        return [], ""
    return [src.text(n)], ""


def _leading_comment(node: Any, src: _Source) -> str:
    prev = node.prev_named_sibling
    parent = node.parent
    if prev is None and parent is not None and parent.type in ("export_statement", "template_declaration"):
        node, prev = parent, parent.prev_named_sibling  # the comment sits before `export`
    if prev is None or "comment" not in prev.type:
        return ""
    if node.start_point[0] - prev.end_point[0] > 1:
        return ""
    # A run of line comments: walk back to its first line.
    first = prev
    while True:
        p = first.prev_named_sibling
        if p is None or "comment" not in p.type or first.start_point[0] - p.end_point[0] > 1:
            break
        first = p
    return _first_doc_line(src.between(first.start_byte, prev.end_byte))


def _generic_walk(
    src: _Source,
    node: Any,
    spec: LanguageSpec,
    language: str,
    container: str,
    syms: list[Symbol],
    imps: list[Import],
    depth: int,
    in_namespace: bool = False,
) -> None:
    if depth > 8:
        return
    for child in node.named_children:
        kind = child.type
        if spec.imports is not None and spec.imports(src, child, imps):
            continue
        if kind in spec.transparent or kind == "template_declaration":
            _generic_walk(src, child, spec, language, container, syms, imps, depth + 1, in_namespace)
            continue
        sym_kind = spec.defs.get(kind)
        if sym_kind is None:
            continue
        names, qualifier = _generic_name(child, src, language)
        if kind in ("struct_specifier", "union_specifier", "enum_specifier", "class_specifier") and (
            not names or child.child_by_field_name("body") is None
        ):
            continue  # a use of the type, not its definition
        if not names:
            continue
        if kind in ("lexical_declaration", "variable_declaration"):
            if container or depth > 1:
                continue
            value = None
            for d in child.named_children:
                if d.type == "variable_declarator":
                    value = d.child_by_field_name("value")
                    break
            if value is not None and value.type in ("arrow_function", "function_expression", "function"):
                sym_kind = "function"
            elif names[0].isupper():
                sym_kind = "constant"
        body = child.child_by_field_name("body")
        if body is not None and body.type not in _BODY_TYPES and kind not in ("function_definition",):
            body = None if kind not in spec.containers else body
        if kind in spec.whole or body is None:
            sig = fold(src.text(child), MAX_SUMMARY_CHARS if kind in spec.whole else MAX_SIGNATURE_CHARS)
        else:
            sig = fold(src.between(child.start_byte, body.start_byte))
        cont = container
        if qualifier:
            qualifier = qualifier.replace("::", ".")
            cont = f"{container}.{qualifier}" if container else qualifier
        if kind in _GO_KEYWORD and not sig.startswith(_GO_KEYWORD[kind]):
            sig = _GO_KEYWORD[kind] + sig
        if kind == "method_declaration" and language == "go":
            recv = child.child_by_field_name("receiver")
            if recv is not None:
                types = [c for c in recv.named_children if c.type == "parameter_declaration"]
                if types:
                    t = types[0].child_by_field_name("type")
                    if t is not None:
                        cont = src.text(t).lstrip("*").split("[", 1)[0]
        doc = _leading_comment(child, src)
        if sym_kind == "function" and cont and not in_namespace:
            sym_kind = "method"
        if kind != "impl_item":
            for name in names:
                syms.append(
                    Symbol(
                        name=name,
                        kind=sym_kind,
                        signature=sig,
                        doc=doc,
                        line=child.start_point[0],
                        container=cont,
                        end_line=child.end_point[0],
                    )
                )
        if kind in spec.containers and body is not None:
            inner = names[0] if kind != "impl_item" else names[0].split("<", 1)[0]
            _generic_walk(
                src,
                body,
                spec,
                language,
                f"{cont}.{inner}" if cont else inner,
                syms,
                imps,
                depth + 1,
                kind in ("namespace_definition", "mod_item"),
            )


def _package_of(src: _Source, root: Any, language: str) -> str:
    for child in root.named_children:
        if language == "go" and child.type == "package_clause":
            for c in child.named_children:
                return src.text(c)
        if language == "java" and child.type == "package_declaration":
            for c in child.named_children:
                if c.type in ("scoped_identifier", "identifier"):
                    return src.text(c)
    return ""


def extract(data: bytes, tree: Any, language: str) -> tuple[tuple[Symbol, ...], tuple[Import, ...], str]:
    """(symbols, imports, package) of one parsed file."""
    src = _Source(data)
    root = tree.root_node
    if language == "python":
        syms, imps, package = _extract_python(src, root)
    else:
        spec = SPECS.get(language)
        if spec is None:
            return (), (), ""
        syms, imps = [], []
        _generic_walk(src, root, spec, language, "", syms, imps, 0)
        package = _package_of(src, root, language)
    return tuple(syms), tuple(imps), package


def imports_only(data: bytes, tree: Any, language: str) -> tuple[Import, ...]:
    """The imports of a file (the cheap part of :func:`extract`, for live documents)."""
    return extract(data, tree, language)[1]
