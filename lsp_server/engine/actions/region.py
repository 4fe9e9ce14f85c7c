"""Which code an action works on.

* The selection: its indentation taken off for the model and put back on the model's
  answer (:class:`CodeRegion`), found again after the user edited the document
  (:func:`relocate_region`).
* With no selection, the innermost function/method/class around the cursor in a
  tree-sitter tree (:func:`enclosing_definition`, :func:`probe_offset`), with the UTF-8
  byte / string index conversions that takes (:func:`byte_to_index`, :func:`index_to_byte`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _common_prefix(items: Iterable[str]) -> str:
    items = list(items)
    if not items:
        return ""
    lo, hi = min(items), max(items)
    n = 0
    while n < len(lo) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


@dataclass(frozen=True)
class CodeRegion:
    """The text an action works on, ``text[start:end]`` of a document.

    The model sees :attr:`code`: the selection without its surrounding blank lines and
    without the indentation it shares with its first line.  :meth:`replacement` maps the
    model's code back: the same indentation, the same leading and trailing whitespace, so
    that replacing ``[start, end)`` with it changes nothing outside the code itself.
    """

    document: str
    start: int
    end: int
    head: str  # leading blank lines of the selection, kept verbatim
    tail: str  # trailing whitespace of the selection, kept verbatim
    lead: str  # text of the first code line before the code starts (outside the selection)
    base: str  # indentation shared by the code's lines, taken off for the model
    inline: bool  # the code starts after other code on its line (an expression)
    code: str  # what the model sees ("\n" newlines)
    newline: str  # the document's newline

    @classmethod
    def from_document(cls, document: str, start: int, end: int) -> CodeRegion:
        start, end = max(0, min(start, end)), min(len(document), max(start, end))
        sel = document[start:end]
        stripped = sel.lstrip(" \t\r\n")
        lead_ws = sel[: len(sel) - len(stripped)]
        nl = lead_ws.rfind("\n")
        head = lead_ws[: nl + 1] if nl != -1 else ""
        body = sel[len(head) :]
        core = body.rstrip(" \t\r\n")
        tail = body[len(core) :]
        core_start = start + len(head)
        line_start = document.rfind("\n", 0, core_start) + 1
        lead = document[line_start:core_start]
        newline = "\r\n" if "\r\n" in document else "\n"
        lines = core.replace("\r\n", "\n").split("\n")
        inline = bool(lead.strip())
        rest = [ln for ln in lines[1:] if ln.strip()]
        if inline:
            indents = [leading_ws(lead)] + [leading_ws(ln) for ln in rest]
            base = _common_prefix(indents)
            first = lines[0]
        else:
            first = lead + lines[0]
            base = _common_prefix([leading_ws(first)] + [leading_ws(ln) for ln in rest])
        model_lines = [first if inline else first[len(base) :]]
        for ln in lines[1:]:
            model_lines.append(ln[len(base) :] if ln.strip() else "")
        return cls(
            document=document,
            start=start,
            end=end,
            head=head,
            tail=tail,
            lead=lead,
            base=base,
            inline=inline,
            code="\n".join(model_lines),
            newline=newline,
        )

    @property
    def selected(self) -> str:
        return self.document[self.start : self.end]

    @property
    def empty(self) -> bool:
        return not self.code.strip()

    def replacement(self, new_code: str) -> str:
        """The text to put in place of ``[start, end)`` for the model's ``new_code``."""
        lines = textwrap.dedent(new_code.replace("\r\n", "\n").strip("\n")).rstrip().split("\n")
        out: list[str] = []
        for i, ln in enumerate(lines):
            ln = ln.rstrip()
            if i == 0:
                if self.inline:
                    out.append(ln.lstrip())
                else:
                    full = self.base + ln
                    out.append(full[len(self.lead) :] if full.startswith(self.lead) else ln.lstrip())
            else:
                out.append(self.base + ln if ln else "")
        return self.head + self.newline.join(out) + self.tail

    def apply(self, replacement: str) -> str:
        """The document with ``[start, end)`` replaced."""
        return self.document[: self.start] + replacement + self.document[self.end :]


def relocate_region(region: CodeRegion, document: str) -> CodeRegion | None:
    """The same code in a newer version of the document (the user typed while the model
    ran): at the same offsets if it is still there, else its one occurrence; None when it
    was edited or is ambiguous."""
    selected = region.selected
    if document[region.start : region.end] == selected and document[: region.start] == region.document[: region.start]:
        return CodeRegion.from_document(document, region.start, region.end)
    first = document.find(selected)
    if first == -1 or document.find(selected, first + 1) != -1:
        return None
    return CodeRegion.from_document(document, first, first + len(selected))


# -------------------------------------------------------------- enclosing definition

# Tree-sitter node types that are a function, method or class, across the bundled grammars.
DEFINITION_TYPES = frozenset(
    {
        # Python
        "function_definition",
        "class_definition",
        "decorated_definition",
        # JavaScript / TypeScript
        "function_declaration",
        "generator_function_declaration",
        "method_definition",
        "class_declaration",
        "abstract_class_declaration",
        "interface_declaration",
        # Go
        "method_declaration",
        "type_declaration",
        # Rust
        "function_item",
        "impl_item",
        "trait_item",
        "struct_item",
        "enum_item",
        "mod_item",
        # Java / C# / Kotlin / Swift / PHP
        "constructor_declaration",
        "enum_declaration",
        "record_declaration",
        "struct_declaration",
        "local_function_statement",
        "object_declaration",
        "protocol_declaration",
        # C / C++
        "class_specifier",
        "struct_specifier",
        # Ruby / Scala / Lua
        "method",
        "singleton_method",
        "class",
        "module",
        "object_definition",
        "trait_definition",
    }
)
# Anonymous functions count when they are the value of a declaration (``const f = () => ...``).
_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "func_literal", "lambda"})
_DECLARATIONS = frozenset({"lexical_declaration", "variable_declaration", "short_var_declaration"})
# Wrappers that belong to the definition (decorators, export).
_WRAPPERS = frozenset({"decorated_definition", "export_statement"})


def _definition_of(node: Any) -> Any | None:
    if not node.is_named or node.parent is None:
        # The keyword `class` is an anonymous node of type "class"; Python's root node is
        # a "module" (Ruby's `module` definition is never the root).
        return None
    if node.type in DEFINITION_TYPES:
        return node
    if node.type in _FUNCTION_VALUES:
        parent = node.parent
        if parent is not None and parent.type in ("variable_declarator", "assignment"):
            grand = parent.parent
            if grand is not None and grand.type in _DECLARATIONS:
                return grand
    return None


def enclosing_definition(root: Any, byte: int) -> tuple[int, int] | None:
    """Byte range of the innermost function/method/class around ``byte`` (with its
    decorators), or None.  ``root`` is a tree-sitter root node."""
    node = root.descendant_for_byte_range(byte, byte)
    while node is not None:
        found = _definition_of(node)
        if found is not None and found.start_byte <= byte <= found.end_byte:
            while found.parent is not None and found.parent.type in _WRAPPERS:
                found = found.parent
            return found.start_byte, found.end_byte
        node = node.parent
    return None


def probe_offset(text: str, offset: int) -> int:
    """Where to look for the enclosing definition of a cursor at ``offset``: a cursor in a
    line's indentation (or at its end) belongs to that line's code."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end == -1 else line_end
    line = text[line_start:line_end]
    if not line.strip():
        return offset
    if not text[line_start:offset].strip():
        return line_start + len(leading_ws(line))
    if not text[offset:line_end].strip():
        return line_start + len(line.rstrip()) - 1
    return offset


def byte_to_index(text: str, byte: int, encoded: bytes | None = None) -> int:
    """String index of a UTF-8 byte offset into ``text``."""
    data = encoded if encoded is not None else text.encode("utf-8", "surrogatepass")
    return len(data[:byte].decode("utf-8", "surrogatepass"))


def index_to_byte(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))
