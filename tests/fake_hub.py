"""A local Hugging Face look-alike on 127.0.0.1, for the pull tests and the editors' model offer.

It speaks just enough of the Hub's file protocol for huggingface_hub:
``HEAD/GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``X-Linked-Etag``
(the LFS sha256), ``X-Linked-Size`` and ``Range`` support.  It can drop a connection
part-way and answer 503 afterwards (an interrupted download), and spread a body over
``throttle_s`` seconds (a download long enough to show progress and to be cancelled).
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

REPO = "quill-test/tiny-GGUF"
FILE = "tiny.Q4_K_M.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # ~1 MB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, content: bytes = PAYLOAD, repo: str = REPO, file: str = FILE) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repo, self.file = repo, file
        self.content = content
        self.etag = sha(content)
        self.drop_after: int | None = None  # bytes of the next GET before the connection drops
        self.fail_after_drop = False  # answer 503 to every GET after a drop
        self.dropped = False
        self.throttle_s = 0.0  # seconds a whole body takes to send
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _headers(self, size: int, status: int = 200, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{self.server.etag}"')
        self.send_header("X-Linked-Etag", f'"{self.server.etag}"')
        self.send_header("X-Linked-Size", str(len(self.server.content)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _known(self) -> bool:
        hub = self.server
        ok = self.path.split("?")[0] in (
            f"/{hub.repo}/resolve/main/{hub.file}",
            f"/{hub.repo}/resolve/{COMMIT}/{hub.file}",
        )
        if not ok:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
        return ok

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.requests.append(("HEAD", self.path, None))
        if self._known():
            self._headers(len(self.server.content))

    def do_GET(self) -> None:  # noqa: N802
        rng = self.headers.get("Range")
        self.server.requests.append(("GET", self.path, rng))
        if not self._known():
            return
        hub = self.server
        if hub.dropped and hub.fail_after_drop:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if rng:
            m = re.match(r"bytes=(\d+)-", rng)
            start = int(m.group(1)) if m else 0
        body = hub.content[start:]
        if start:
            self._headers(len(body), 206, {"Content-Range": f"bytes {start}-{len(hub.content) - 1}/{len(hub.content)}"})
        else:
            self._headers(len(body))
        if hub.drop_after is not None and not hub.dropped:
            self.wfile.write(body[: hub.drop_after])
            self.wfile.flush()
            hub.dropped = True
            self.close_connection = True
            return  # the client sees the connection close short of Content-Length
        if hub.throttle_s <= 0:
            self.wfile.write(body)
            return
        pieces = 50
        step = max(1, len(hub.content) // pieces)
        for i in range(0, len(body), step):
            try:
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
            except OSError:  # the client went away (a cancelled download)
                return
            time.sleep(hub.throttle_s / pieces)


@contextmanager
def running(hub: FakeHub) -> Iterator[FakeHub]:
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()
