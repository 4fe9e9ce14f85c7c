"""engine/actions/hygiene.py: chat markup, code extraction, cleaning, loop detection."""

from __future__ import annotations

import pytest

from lsp_server.engine import actions as act


def test_strip_chat_markup() -> None:
    assert act.strip_chat_markup("assistant\ndef f(): pass<|im_end|>\n<|im_start|>user") == "def f(): pass"
    assert act.strip_chat_markup("x = '</s>'") == "x = '</s>'"  # not this model's stop: code
    assert act.strip_chat_markup("x = 1</s>junk", ["</s>"]) == "x = 1"


@pytest.mark.parametrize(
    ("raw", "fenced", "expected"),
    [
        ("def f():\n    return 1\n", True, "def f():\n    return 1"),
        ("```python\ndef f():\n    return 1\n```\nThis works.", True, "def f():\n    return 1"),
        ("def f():\n    return 1\n````\nmore", True, "def f():\n    return 1"),
        ("Here is the simplified code:\n```py\nx = 2\n```\nDone.", False, "x = 2"),
        ("Sure, here it is:\nx = 2\n", False, "x = 2"),
        ("```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```", False, "x = 2"),
        ("```python\nx = 3\n", False, "x = 3"),  # unclosed
    ],
)
def test_extract_code(raw: str, fenced: bool, expected: str) -> None:
    assert act.extract_code(raw, fenced_answer=fenced, original="x = 1") == expected


def test_clean_rewrite_refuses_what_cannot_be_used() -> None:
    with pytest.raises(act.RewriteRejected, match="cut off"):
        act.clean_rewrite("x = 2", fenced_answer=True, original="x = 1", stop_reason="length")
    with pytest.raises(act.RewriteRejected, match="no code"):
        act.clean_rewrite("<|im_end|>", fenced_answer=True, original="x = 1", stop_reason="stop")
    with pytest.raises(act.RewriteRejected, match="no change"):
        act.clean_rewrite("    x = 1   \n", fenced_answer=True, original="x = 1", stop_reason="stop")
    assert act.clean_rewrite("x = 2   \n<|im_end|>", fenced_answer=True, original="x = 1", stop_reason="eos") == "x = 2"


def test_clean_explanation() -> None:
    raw = "assistant\nIt adds.\nIt adds.\nIt adds.\n\n\n\n```python\nx = 1\n<|im_end|>ignored"
    text = act.clean_explanation(raw, stop_reason="stop")
    assert text == "It adds.\n\n```python\nx = 1\n```"
    assert "cut off" in act.clean_explanation("Partial", stop_reason="length")
    with pytest.raises(act.ActionError):
        act.clean_explanation("  <|im_end|>", stop_reason="stop")


def test_looping_detection() -> None:
    assert act.looping("a\nThe list.\nThe list.\nThe list.\n")
    assert not act.looping("a\nb\nc\n")
    assert not act.looping("x\nx\nx\n")  # too short to call a loop
