"""engine/actions/job.py: run_action end to end on a fake backend."""

from __future__ import annotations

import threading

import pytest

from lsp_server.engine import actions as act
from lsp_server.engine.actions import ActionKind
from lsp_server.engine.model import LoadedModel
from lsp_server.families.completion import get_template
from tests.unit.fakes import FakeBackend
from tests.unit.test_actions_prompts import AREA
from tests.unit.test_families_chat import CHATML_JINJA


def _model(reply: str, step_s: float = 0.0, chat_template: str | None = None) -> LoadedModel:
    backend = FakeBackend(lambda prompt: reply, step_s=step_s)
    backend.info.chat_template = chat_template
    return LoadedModel(backend=backend, template=get_template("plain"), stop=("<|im_end|>",))


def test_run_action_rewrite_with_chat_template() -> None:
    model = _model("def f():\n    return 2\n```\n", chat_template=CHATML_JINJA)
    progress: list[tuple[int, int]] = []
    req = act.ActionRequest(ActionKind.SIMPLIFY, "def f():\n    x = 2\n    return x", "python", "m.py")
    result = act.run_action(model, req, threading.Event(), lambda n, m: progress.append((n, m)), progress_every=4)
    assert result.text == "def f():\n    return 2"
    assert result.style == "chatml"
    assert progress and progress[0][0] == 1
    prompt_text = model.backend.calls[0]  # type: ignore[attr-defined]
    assert prompt_text.max_tokens > 0


def test_run_action_explain_plain_prompt() -> None:
    model = _model("It returns two.\n<|im_end|>")
    req = act.ActionRequest(ActionKind.EXPLAIN, "def f():\n    return 2", "python")
    result = act.run_action(model, req, threading.Event())
    assert result.text == "It returns two." and result.style == "plain"


def test_run_action_cancel() -> None:
    model = _model("x = 2\n" * 200, step_s=0.001)
    req = act.ActionRequest(ActionKind.REFACTOR, "x = 1", "python")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(act.ActionCancelled):
        act.run_action(model, req, cancel)  # cancelled while queued: the model never runs
    assert not model.backend.calls  # type: ignore[attr-defined]

    cancel = threading.Event()

    def stop_after_first(n: int, m: int) -> None:
        cancel.set()

    with pytest.raises(act.ActionCancelled):
        act.run_action(model, req, cancel, stop_after_first, progress_every=1)


def test_run_action_continues_the_primer() -> None:
    model = _model('Area of a circle."""\n    return math.pi * radius ** 2\n```\n', chat_template=CHATML_JINJA)
    result = act.run_action(model, act.ActionRequest(ActionKind.DOCSTRING, AREA, "python"), threading.Event())
    assert result.text == 'def circle_area(radius):\n    """Area of a circle."""\n    return math.pi * radius ** 2'
