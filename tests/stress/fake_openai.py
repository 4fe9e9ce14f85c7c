"""A fake OpenAI-compatible completion server on 127.0.0.1 that records every prompt and
can be told to misbehave (hang, close mid-stream, answer garbage, 500, 429)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "hang", "close", "garbage", "500", "429", "slow-first-token")


class FakeOpenAI:
    def __init__(self, completion: str = "return n\n", port: int = 0) -> None:
        self.mode = "ok"
        self.completion = completion
        self.prompts: list[str] = []
        self.bodies: list[dict[str, Any]] = []  # every JSON body received, any path
        self.requests = 0
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/v1/models"):
                    self._json(200, {"data": [{"id": "smollm2-135m-instruct", "context_length": 2048}]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                fake.bodies.append(body)
                if not self.path.startswith("/v1/completions"):
                    self._json(404, {"error": "not found"})
                    return
                fake.requests += 1
                fake.prompts.append(str(body.get("prompt", "")))
                mode = fake.mode
                if mode == "500":
                    self._json(500, {"error": {"message": "internal failure"}})
                    return
                if mode == "429":
                    self._json(429, {"error": {"message": "rate limited"}})
                    return
                if mode == "hang":
                    fake._release.wait(60)  # never answers (until the test ends)
                    return
                if mode == "garbage":
                    data = b"\x00\xffthis is not http at all\r\n\r\n{{{{"
                    self.wfile.write(data)
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                if mode == "slow-first-token":
                    time.sleep(1.0)
                pieces = [fake.completion[i : i + 3] for i in range(0, len(fake.completion), 3)]
                for n, piece in enumerate(pieces):
                    if mode == "close" and n == 1:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    event = {"choices": [{"text": piece, "index": 0, "finish_reason": None}]}
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.flush()
                done = {"choices": [{"text": "", "index": 0, "finish_reason": "stop"}]}
                self.wfile.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
