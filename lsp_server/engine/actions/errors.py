"""How an action fails or stops: the errors whose message goes to the user as is
(:class:`ActionError` and its subclasses), :class:`ActionCancelled`, and the cancel flag of
one action (:class:`CancelToken`) with the "latest wins" slot that sets it
(:class:`ActionSlot`).
"""

from __future__ import annotations

import threading


class ActionError(Exception):
    """An action could not produce a result; the message is for the user as is."""


class SelectionTooLarge(ActionError):
    pass


class RewriteRejected(ActionError):
    pass


class ActionCancelled(Exception):
    """Generation stopped because the cancel flag was set (``reason`` says by whom)."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


class CancelToken:
    """A cancel flag for one action, with the reason it was set (first reason wins)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if not self.event.is_set():
                self.reason = reason
                self.event.set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


class ActionSlot:
    """At most one code action at a time: starting one cancels the one still running.

    The model runs one job at a time anyway (the engine's single worker thread); this adds
    "latest wins" on top, so a forgotten long explanation never holds up the action the
    user just picked (nor the completions queued behind it) for more than one token.
    """

    SUPERSEDED = "superseded by a newer Quill action"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: CancelToken | None = None

    def start(self) -> CancelToken:
        token = CancelToken()
        with self._lock:
            if self._current is not None:
                self._current.cancel(self.SUPERSEDED)
            self._current = token
        return token

    def finish(self, token: CancelToken) -> None:
        with self._lock:
            if self._current is token:
                self._current = None

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            if self._current is not None:
                self._current.cancel(reason)
