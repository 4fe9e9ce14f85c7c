"""engine/actions/errors.py: cancel tokens and the "latest wins" action slot."""

from __future__ import annotations

from lsp_server.engine import actions as act


def test_action_slot_latest_wins() -> None:
    slot = act.ActionSlot()
    first = slot.start()
    second = slot.start()
    assert first.cancelled and first.reason == act.ActionSlot.SUPERSEDED
    assert not second.cancelled
    slot.finish(first)  # finishing a superseded action leaves the current one alone
    slot.cancel_all("shutdown")
    assert second.cancelled and second.reason == "shutdown"
