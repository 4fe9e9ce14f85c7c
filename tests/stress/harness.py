"""Shared pieces of the stress tests: sizes (short in CI, full with QUILL_STRESS=1), a
server process with RSS readings, and the figures printed at the end of the run."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from tests.lsp.rawclient import RawClient

FULL = os.environ.get("QUILL_STRESS") == "1"
FIGURES: list[str] = []


def size(short: int, full: int) -> int:
    """``short`` in the normal test run, ``full`` under ``make stress`` (QUILL_STRESS=1);
    QUILL_STRESS_SCALE multiplies either."""
    scale = float(os.environ.get("QUILL_STRESS_SCALE", "1") or 1)
    return max(1, int((full if FULL else short) * scale))


def figure(name: str, **values: Any) -> None:
    """One line of figures, printed in the terminal summary (and appended to
    $QUILL_STRESS_REPORT as JSON when set)."""
    parts = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    FIGURES.append(f"{name}: {parts}")
    path = os.environ.get("QUILL_STRESS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": name, **values}) + "\n")


def rss_kb(pid: int, field: str = "VmHWM") -> int:
    """Peak (VmHWM) or current (VmRSS) resident memory of ``pid`` in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[-1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


class Server(RawClient):
    """The real server over stdio, with an id counter and timed calls."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        """``command``: start this instead of ``python -m lsp_server`` (a wrapper that
        injects a fault, e.g. faulty_server.py), with ``args`` after it."""
        if command is None:
            super().__init__(*args, env=env)
        else:
            self.proc = subprocess.Popen(
                [*command, "--log-level", "warning", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
            self._buf = b""
            self.messages = []
        self.next_id = 1000
        self.answer_server_requests = True

    def pump(self, timeout: float) -> list[dict[str, Any]]:
        """As RawClient.pump, answering the server's own requests as an editor does
        (workDoneProgress/create, registerCapability, applyEdit, showDocument)."""
        out = super().pump(timeout)
        for m in out:
            if "method" in m and "id" in m and self.answer_server_requests:
                self.send({"jsonrpc": "2.0", "id": m["id"], "result": None})
        return out

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def call(self, method: str, params: Any, timeout: float = 60.0) -> dict[str, Any]:
        msg_id = self.new_id()
        self.request(msg_id, method, params)
        return self.response(msg_id, timeout=timeout)

    def open(self, uri: str, text: str, version: int = 1, language: str = "python") -> None:
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language, "version": version, "text": text}},
        )

    def change(self, uri: str, version: int, text: str) -> None:
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )

    def inline(self, uri: str, line: int, character: int, msg_id: int | None = None) -> int:
        msg_id = msg_id if msg_id is not None else self.new_id()
        self.request(
            msg_id,
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, "context": {"triggerKind": 2}},
        )
        return msg_id

    def timed_completion(self, uri: str, line: int, character: int, timeout: float = 60.0) -> tuple[float, list]:
        t0 = time.perf_counter()
        response = self.response(self.inline(uri, line, character), timeout=timeout)
        return (time.perf_counter() - t0) * 1000, items(response)

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.wait_for(lambda m: m.get("method") == "quill/modelState" and m["params"]["state"] in ("ready", "error"), timeout)

    def responses(self, ids: set[int], timeout: float) -> dict[int, dict[str, Any]]:
        """The responses to ``ids`` that arrive within ``timeout`` seconds."""
        got: dict[int, dict[str, Any]] = {}
        for m in self.messages:
            if "method" not in m and isinstance(m.get("id"), int) and m["id"] in ids:
                got[m["id"]] = m
        end = time.monotonic() + timeout
        while len(got) < len(ids) and time.monotonic() < end:
            for m in self.pump(0.05):
                if "method" not in m and isinstance(m.get("id"), int) and m["id"] in ids:
                    got[m["id"]] = m
        return got

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mb(self) -> float:
        return rss_kb(self.proc.pid) / 1024

    def drop_messages(self) -> None:
        """Forget what was read so far (long runs keep memory flat)."""
        self.messages.clear()


def items(response: dict[str, Any]) -> list:
    result = response.get("result") or {}
    return result.get("items", []) if isinstance(result, dict) else (result or [])


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


FIB = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib"
FIB_CURSOR = (3, 14)
