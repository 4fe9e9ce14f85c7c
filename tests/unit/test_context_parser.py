"""Incremental parsing: open documents (edits from the store) and snapshots (retrieval)."""

import random

from lsp_server.context.documents import DocumentStore, TextChange
from lsp_server.context.parser import DocumentParser, SnapshotTrees, get_parser, text_edit

SOURCE = '''import os


def area(r):
    """Area."""
    return 3.14 * r * r


class Box:
    def size(self):
        return 1
'''


def full_parse(text: str) -> str:
    parser = get_parser("python")
    assert parser is not None
    return str(parser.parse(text.encode()).root_node)


def test_text_edit_finds_the_one_changed_region() -> None:
    rng = random.Random(3)
    for _ in range(500):
        a = "".join(rng.choice("ab\n") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab\n") for _ in range(rng.randint(0, 12)))
        start, old_end, new_end = text_edit(a, b)
        assert a[:start] == b[:start]
        assert a[old_end:] == b[new_end:]
        assert b[:start] + b[start:new_end] + a[old_end:] == b


def test_snapshot_trees_match_a_full_parse_after_edits() -> None:
    trees = SnapshotTrees()
    rng = random.Random(7)
    text = SOURCE
    tree = trees.tree("file:///a.py", text, "python")
    assert str(tree.root_node) == full_parse(text)
    for _ in range(60):
        at = rng.randint(0, len(text))
        if rng.random() < 0.6:
            text = text[:at] + rng.choice(["x", " ", "\n", "(", "é", "def f():\n    pass\n"]) + text[at:]
        else:
            text = text[:at] + text[at + rng.randint(1, 5) :]
        tree = trees.tree("file:///a.py", text, "python")
        assert str(tree.root_node) == full_parse(text)


def test_document_parser_hint_still_works_with_edits() -> None:
    store = DocumentStore()
    parser = DocumentParser(store)
    doc = store.open("file:///b.py", "x = 1\n# note\n")
    assert parser.hint(doc, len("x = 1\n# no")).in_comment
    doc = store.change("file:///b.py", 2, [TextChange('s = "abc"\n', (2, 0), (2, 0))])
    assert parser.hint(doc, doc.text.index("abc") + 1).in_string
    assert not parser.hint(doc, len("x = 1")).in_string
