import pytest

from lsp_server.context.documents import Document, DocumentNotOpen, DocumentStore, TextChange


def test_offsets_clamp_past_end_of_line_and_file():
    doc = Document("file:///a.py", "ab\ncd\n")
    assert doc.offset_at(0, 1) == 1
    assert doc.offset_at(0, 99) == 2  # past the end of the line: its end
    assert doc.offset_at(99, 0) == len(doc.text)  # past the end of the file
    assert doc.offset_at(-1, 5) == 0


def test_utf16_positions_count_surrogate_pairs():
    doc = Document("file:///a.py", "x = '😀é' + y\n")
    # 😀 is two UTF-16 units, é one: character 9 is after the closing quote.
    offset = doc.offset_at(0, 9)
    assert doc.text[offset - 1] == "'"
    assert doc.position_at(offset) == (0, 9)
    assert doc.offset_at(0, 8, "utf-32") == 8  # code points
    assert doc.offset_at(0, 9, "utf-8") == 6  # "x = '" is 5 bytes, the emoji 4 more


def test_incremental_changes_and_listener_edits():
    store = DocumentStore()
    seen = []
    store.add_listener(lambda doc, edits: seen.append(edits))
    store.open("file:///a.py", "def f():\n    pass\n", 1)
    store.change("file:///a.py", 2, [TextChange("return 1", (1, 4), (1, 8))])
    assert store.get("file:///a.py").text == "def f():\n    return 1\n"
    assert seen[-1] == [(13, 17, 21, "pass")]
    store.change("file:///a.py", 3, [TextChange("x")])  # full replacement
    assert store.get("file:///a.py").text == "x"


def test_snapshot_is_not_changed_by_later_edits():
    store = DocumentStore()
    store.open("file:///a.py", "abc")
    snap = store.snapshot("file:///a.py")
    store.change("file:///a.py", 2, [TextChange("Z", (0, 0), (0, 0))])
    assert snap.text == "abc"


def test_unopened_document_is_a_clear_error():
    store = DocumentStore()
    with pytest.raises(DocumentNotOpen) as info:
        store.get("file:///nope.py")
    assert "not open" in str(info.value) and "nope.py" in str(info.value)


def test_crlf_lines():
    doc = Document("file:///a.py", "a\r\nbc\r\n")
    assert doc.line_text(1) == "bc"
    assert doc.offset_at(1, 2) == 5
