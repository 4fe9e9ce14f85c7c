"""engine/actions/prompts.py: prompts per family, the docstring primer, the token budget."""

from __future__ import annotations

import pytest

from lsp_server.engine import actions as act
from lsp_server.engine.actions import ActionKind
from lsp_server.families import chat
from tests.unit.fakes import FakeBackend

AREA = "def circle_area(radius):\n    return math.pi * radius ** 2"


def test_rewrite_prompt_opens_a_fence_longer_than_any_in_the_code() -> None:
    req = act.ActionRequest(ActionKind.SIMPLIFY, 'doc = """```py\nx\n```"""', "python", "a.py")
    prompt = act.build_prompt(req, chat.CHAT_FORMATS["chatml"])
    assert prompt.fenced_answer and prompt.segments[-1].text == "````python\n"
    assert "````" in prompt.stop
    plain = act.build_prompt(req, None)
    assert plain.fenced_answer and plain.segments[-1].text.endswith("````python\n")
    explain = act.build_prompt(act.ActionRequest(ActionKind.EXPLAIN, "x = 1", "python"), chat.CHAT_FORMATS["chatml"])
    assert not explain.fenced_answer and explain.segments[-1].text == "assistant\n"


def test_docstring_primer_opens_the_docstring() -> None:
    assert act.python_docstring_primer(AREA) == 'def circle_area(radius):\n    """'
    assert act.python_docstring_primer("@cache\ndef f(x):\n\treturn x") == '@cache\ndef f(x):\n\t"""'
    assert act.python_docstring_primer('def f():\n    """Has one."""\n') == ""
    assert act.python_docstring_primer("def f(\n    a,\n):\n    pass") == ""  # multi-line header
    assert act.python_docstring_primer("x = 1") == ""
    req = act.ActionRequest(ActionKind.DOCSTRING, AREA, "python")
    prompt = act.build_prompt(req, chat.CHAT_FORMATS["chatml"])
    assert prompt.segments[-1].text.endswith('def circle_area(radius):\n    """')
    assert prompt.answer_prefix == 'def circle_area(radius):\n    """'


# ------------------------------------------------------------------------- budget


def test_selection_too_large_for_the_window() -> None:
    backend = FakeBackend(lambda p: "", n_ctx=512)  # one token per character
    req = act.ActionRequest(ActionKind.REFACTOR, "x = 1\n" * 80, "python")
    with pytest.raises(act.SelectionTooLarge) as info:
        act.plan_prompt(backend, 512, req, None, "Fake")
    message = str(info.value)
    assert "480 tokens" in message and "context window of 512 tokens" in message
    small = act.plan_prompt(backend, 2048, act.ActionRequest(ActionKind.REFACTOR, "x = 1\n", "python"), None)
    assert small.code_tokens == 6
    assert len(small.tokens) + small.max_tokens <= 2048


def test_explain_budget_is_capped() -> None:
    backend = FakeBackend(lambda p: "", n_ctx=4096)
    planned = act.plan_prompt(backend, 4096, act.ActionRequest(ActionKind.EXPLAIN, "x = 1", "python"), None)
    assert planned.max_tokens == act.EXPLAIN_MAX_TOKENS
