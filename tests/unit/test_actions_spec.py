"""engine/actions/spec.py: which actions are offered, kind filtering, task wording."""

from __future__ import annotations

from lsp_server.engine import actions as act
from lsp_server.engine.actions import ActionKind


def test_task_wording_per_language() -> None:
    assert "PEP 257" in act.task_for(ActionKind.DOCSTRING, "python")
    assert "JSDoc" in act.task_for(ActionKind.TYPE_HINTS, "javascript")
    assert ActionKind.TYPE_HINTS in {s.kind for s in act.available_actions("python")}
    assert ActionKind.TYPE_HINTS not in {s.kind for s in act.available_actions("go")}
    assert len(act.available_actions(None)) == 4


def test_kind_filter() -> None:
    assert act.kind_matches("refactor.rewrite", ["refactor"])
    assert act.kind_matches("refactor.rewrite", None)
    assert not act.kind_matches("refactor.rewrite", ["quickfix"])
    assert not act.kind_matches("", ["refactor"])
    assert act.kind_matches("", [""])
