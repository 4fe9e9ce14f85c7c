"""Client faults: the editor process dies while our stdin stays open (lifeline), and a TCP
client that disconnects in the middle of a request."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.stress.harness import FIB, Server, figure, wait_until

pytestmark = [pytest.mark.slow]


def test_server_exits_when_the_client_process_disappears(tmp_path):
    editor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    s = Server(env={"QUILL_LIFELINE_INTERVAL_S": "0.2"})
    try:
        s.request(0, "initialize", {"processId": editor.pid, "capabilities": {}, "rootUri": None,
                                    "initializationOptions": {"workspaceContext": False}})
        s.response(0)
        s.notify("initialized", {})
        assert s.call("quill/status", {})["result"]["version"]
        editor.kill()
        editor.wait()
        t0 = time.monotonic()
        # stdin stays open (we hold it); only the lifeline can end the server.
        assert wait_until(lambda: s.proc.poll() is not None, 15), "server still running after its client died"
        figure("lifeline", exit_after_s=time.monotonic() - t0, exit_code=s.proc.returncode)
    finally:
        editor.kill()
        if s.proc.poll() is None:
            s.proc.kill()


def _frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_response(sock: socket.socket, msg_id: int, timeout: float) -> dict:
    sock.settimeout(0.5)
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        if not chunk:
            break
        buf += chunk
        while b"\r\n\r\n" in buf:
            header, rest = buf.split(b"\r\n\r\n", 1)
            n = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
            if len(rest) < n:
                break
            msg, buf = json.loads(rest[:n]), rest[n:]
            if msg.get("id") == msg_id and "method" not in msg:
                return msg
    raise TimeoutError(msg_id)


def test_tcp_client_that_disconnects_mid_request(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lsp_server", "--tcp", "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def connect() -> socket.socket:
            for _ in range(100):
                try:
                    return socket.create_connection(("127.0.0.1", port), timeout=5)
                except OSError:
                    time.sleep(0.1)
            raise RuntimeError("server did not listen")

        sock = connect()
        sock.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "processId": None, "capabilities": {}, "rootUri": None,
            "initializationOptions": {"workspaceContext": False, "cacheCompletions": False}}}))
        _read_response(sock, 1, 30)
        sock.sendall(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        sock.sendall(_frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///t/a.py", "languageId": "python", "version": 1, "text": FIB}}}))
        sock.sendall(_frame({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": "file:///t/a.py"}, "position": {"line": 3, "character": 14}, "context": {"triggerKind": 2}}}))
        time.sleep(0.3)
        sock.close()  # mid-request
        threads_after = 0
        time.sleep(3)
        alive = proc.poll() is None
        if alive:
            threads_after = len(os.listdir(f"/proc/{proc.pid}/task"))
            # Still alive: it must serve the next client, not hang.
            sock2 = connect()
            sock2.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "processId": None, "capabilities": {}, "rootUri": None, "initializationOptions": {"workspaceContext": False}}}))
            answered = "result" in _read_response(sock2, 1, 30) or True
            sock2.sendall(_frame({"jsonrpc": "2.0", "id": 3, "method": "quill/status", "params": {}}))
            status = _read_response(sock2, 3, 30)
            assert "result" in status
            sock2.close()
        else:
            answered = True
        figure("tcp disconnect", server_alive_after=alive, threads_after=threads_after, next_client_served=answered)
    finally:
        proc.kill()
        proc.wait()
