"""A bare JSON-RPC client over the server's stdio, for what a polite client cannot send
(bytes that are not UTF-8) and for watching every message in order."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any


class RawClient:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lsp_server", "--log-level", os.environ.get("QUILL_TEST_SERVER_LOG_LEVEL", "warning"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self._buf = b""
        self.messages: list[dict[str, Any]] = []

    def send_bytes(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, obj: dict[str, Any]) -> None:
        self.send_bytes(json.dumps(obj).encode("utf-8"))

    def request(self, msg_id: int, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def pump(self, timeout: float) -> list[dict[str, Any]]:
        """Read whatever arrives within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        out: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.02)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    break
                self._buf += chunk
            while b"\r\n\r\n" in self._buf:
                header, rest = self._buf.split(b"\r\n\r\n", 1)
                length = int(header.split(b"\r\n")[0].split(b":")[1])
                if len(rest) < length:
                    break
                out.append(json.loads(rest[:length]))
                self._buf = rest[length:]
        self.messages.extend(out)
        return out

    def wait_for(self, pred, timeout: float = 120.0) -> dict[str, Any]:
        for m in self.messages:
            if pred(m):
                return m
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.pump(0.1):
                if pred(m):
                    return m
        raise TimeoutError("no matching message")

    def response(self, msg_id: int, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m, timeout)

    def initialize(self, root: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        self.request(0, "initialize", {"capabilities": {}, "rootUri": f"file://{root}", "initializationOptions": options or {}})
        result = self.response(0)
        self.notify("initialized", {})
        return result

    def close(self) -> None:
        try:
            self.request(99999, "shutdown", None)
            self.response(99999, timeout=10)
            self.notify("exit", None)
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
