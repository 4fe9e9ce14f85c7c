"""engine/actions/region.py: regions and indentation, relocation, enclosing definitions."""

from __future__ import annotations

from tree_sitter_language_pack import get_parser

from lsp_server.engine import actions as act
from lsp_server.engine.actions import CodeRegion

SOURCE = '''import os


class Store:
    """A store."""

    @staticmethod
    def load(path):
        with open(path) as fh:
            return fh.read()

    def total(self, items):
        t = 0
        for i in range(len(items)):
            t = t + items[i]
        return t


def main():
    print(Store().total([1, 2]))
'''


def region_of(text: str, needle: str, *, whole_lines: bool = False) -> CodeRegion:
    start = text.index(needle)
    end = start + len(needle)
    if whole_lines:
        start = text.rfind("\n", 0, start) + 1
    return CodeRegion.from_document(text, start, end)


# ----------------------------------------------------------------------- regions


def test_region_strips_shared_indentation_and_puts_it_back() -> None:
    method = SOURCE[SOURCE.index("    def total") : SOURCE.index("\n\n\ndef main")]
    region = region_of(SOURCE, method)
    assert region.code.startswith("def total(self, items):\n    t = 0")
    assert region.base == "    "
    new = "def total(self, items):\n    return sum(items)"
    replacement = region.replacement(new)
    assert replacement == "    def total(self, items):\n        return sum(items)"
    out = region.apply(replacement)
    assert out[: region.start] == SOURCE[: region.start]
    assert out[region.start + len(replacement) :] == SOURCE[region.end :]


def test_selection_starting_after_the_indentation_keeps_the_indentation_outside_it() -> None:
    # Empty-selection targets start at `def` (the indentation is not part of the range).
    start = SOURCE.index("def total")
    end = SOURCE.index("return t") + len("return t")
    region = CodeRegion.from_document(SOURCE, start, end)
    assert region.lead == "    " and region.base == "    "
    assert region.code.startswith("def total(self, items):\n    t = 0\n")
    replacement = region.replacement("def total(self, items):\n    return sum(items)\n")
    assert replacement == "def total(self, items):\n        return sum(items)"


def test_model_output_indented_like_the_file_is_normalised() -> None:
    region = region_of(SOURCE, "        t = 0\n        for i", whole_lines=True)
    # The model echoed the absolute indentation: dedent, then re-indent once.
    assert region.replacement("        t = 0\n        for i") == "        t = 0\n        for i"


def test_selection_keeps_leading_blank_lines_and_trailing_whitespace() -> None:
    text = "x = 1\n\n\ndef f():\n    return 1\n\n\ny = 2\n"
    start = text.index("\n\n\ndef") + 1
    end = text.index("y = 2")
    region = CodeRegion.from_document(text, start, end)
    assert region.head == "\n\n" and region.tail == "\n\n\n"
    assert region.code == "def f():\n    return 1"
    replacement = region.replacement("```python\nignored\n```" if False else "def f() -> int:\n    return 1")
    assert replacement == "\n\ndef f() -> int:\n    return 1\n\n\n"


def test_inline_expression_selection() -> None:
    text = "def f(a, b):\n    return a + b  # sum\n"
    region = region_of(text, "a + b")
    assert region.inline and region.code == "a + b"
    assert region.replacement("  (a + b)\n") == "(a + b)"
    multi = region.replacement("sum(\n    [a, b]\n)")
    assert multi == "sum(\n        [a, b]\n    )"


def test_crlf_documents_keep_crlf() -> None:
    text = "def f():\r\n    x = 1\r\n    return x\r\n"
    region = CodeRegion.from_document(text, 0, len(text))
    assert "\r" not in region.code
    replacement = region.replacement("def f():\n    return 1")
    assert replacement == "def f():\r\n    return 1\r\n"


def test_tabs_are_kept_as_the_base_indentation() -> None:
    text = "class A:\n\tdef f(self):\n\t\treturn 1\n"
    region = region_of(text, "\tdef f(self):\n\t\treturn 1")
    assert region.base == "\t" and region.code == "def f(self):\n\treturn 1"
    assert region.replacement("def f(self) -> int:\n\treturn 1") == "\tdef f(self) -> int:\n\t\treturn 1"


def test_relocate_region_after_edits() -> None:
    region = region_of(SOURCE, "def main():\n    print(Store().total([1, 2]))")
    same = act.relocate_region(region, SOURCE)
    assert same is not None and same.start == region.start
    shifted = act.relocate_region(region, "# header\n" + SOURCE)
    assert shifted is not None and shifted.start == region.start + len("# header\n")
    assert act.relocate_region(region, SOURCE.replace("print(", "log(")) is None
    after = act.relocate_region(region, SOURCE + "# footer\n")  # edits after the code do not move it
    assert after is not None and after.start == region.start
    assert act.relocate_region(region, "# x\n" + SOURCE + SOURCE) is None  # moved, and ambiguous


# --------------------------------------------------------------- enclosing code


def _definition(text: str, needle: str, language: str = "python") -> str | None:
    tree = get_parser(language).parse(text.encode())  # type: ignore[arg-type]
    offset = act.probe_offset(text, text.index(needle))
    found = act.enclosing_definition(tree.root_node, act.index_to_byte(text, offset))
    if found is None:
        return None
    return text[act.byte_to_index(text, found[0]) : act.byte_to_index(text, found[1])]


def test_enclosing_definition_python() -> None:
    assert _definition(SOURCE, "t = t + items").startswith("def total(self, items):")  # type: ignore[union-attr]
    assert _definition(SOURCE, "with open").startswith("@staticmethod\n    def load")  # type: ignore[union-attr]
    assert _definition(SOURCE, "class Store").startswith("class Store:")  # type: ignore[union-attr]
    assert _definition(SOURCE, '"""A store."""').startswith("class Store:")  # type: ignore[union-attr]
    assert _definition(SOURCE, "import os") is None


def test_cursor_in_indentation_belongs_to_the_line() -> None:
    text = SOURCE
    line_start = text.index("    def total")
    assert act.probe_offset(text, line_start) == text.index("def total")
    tree = get_parser("python").parse(text.encode())
    found = act.enclosing_definition(tree.root_node, act.probe_offset(text, line_start))
    assert found is not None and text[found[0] : found[1]].startswith("def total")


def test_enclosing_definition_javascript_arrow_function() -> None:
    text = "const add = (a, b) => {\n  return a + b;\n};\n\nfunction g() {\n  return 1;\n}\n"
    assert _definition(text, "return a + b", "javascript") == "const add = (a, b) => {\n  return a + b;\n};"
    assert _definition(text, "return 1", "javascript") == "function g() {\n  return 1;\n}"


def test_unicode_offsets_round_trip() -> None:
    text = "s = 'é🙂'\ndef f():\n    return 'ü'\n"
    byte = act.index_to_byte(text, text.index("return"))
    assert act.byte_to_index(text, byte) == text.index("return")
    assert _definition(text, "return") == "def f():\n    return 'ü'"
