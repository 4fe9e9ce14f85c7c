"""Stdio transport that survives bad bytes and bad frames.

pygls reads a frame as header lines (``Content-Length: N``), an empty line, then exactly
``N`` bytes of body, decoded with ``json.loads(bytes)``.  Left alone, that loses the rest
of the session on one bad frame:

- invalid UTF-8 in a body raises in ``json.loads`` and the message is dropped, so a client
  waiting on that request would hang: here the invalid bytes are replaced by U+FFFD;
- a ``Content-Length`` that is too *short* leaves the end of the body in the stream, glued
  to the next frame's header line (JSON bodies have no newline), and pygls skips that line,
  then the next, and so on: every later message was lost.  Here a line that carries a
  header after some garbage is handed over from the header on (resync);
- a ``Content-Length`` that is too *long* swallowed the following frames into the body.
  A raw ``Content-Length: N`` header line can never be part of a JSON text (JSON strings
  cannot hold a raw CR/LF), so the body is cut where the next frame starts; a body that
  stops short and then stays quiet for :data:`STALL_S` is handed over as it is when it is
  complete JSON (the client is waiting for the answer);
- a ``Content-Length`` beyond :data:`MAX_BODY_BYTES` is not allocated: the frame is
  reported and skipped, and the reader resyncs on the next header.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
from typing import BinaryIO

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024 * 1024  # a 20 MB file opened in the editor is ~20-40 MB of JSON
MAX_LINE_BYTES = 64 * 1024  # a header line longer than this is garbage
STALL_S = 2.0
CHUNK = 1 << 16
_HEADER = re.compile(rb"Content-Length: \d+\r\n")
_HEADER_NAME = b"Content-Length:"
# What pygls gets in place of a body that cannot be a message: it logs and drops it.
_DROPPED = b"null"


class SanitizingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._buf = bytearray()
        self._eof = False
        try:
            self._fd: int | None = raw.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self.frames_resynced = 0

    # ------------------------------------------------------------------ input
    def _fill(self, timeout: float | None = None) -> str:
        """Read what is available into the buffer: "data", "eof" or "timeout"."""
        if self._eof:
            return "eof"
        if self._fd is not None:
            if timeout is not None:
                ready, _, _ = select.select([self._fd], [], [], timeout)
                if not ready:
                    return "timeout"
            try:
                chunk = os.read(self._fd, CHUNK)
            except InterruptedError:
                return "data"
            except OSError:
                chunk = b""
        else:
            read1 = getattr(self._raw, "read1", None)
            chunk = read1(CHUNK) if read1 is not None else self._raw.read(1)
        if not chunk:
            self._eof = True
            return "eof"
        self._buf += chunk
        return "data"

    # ------------------------------------------------------------- pygls API
    def readline(self, *args: int) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                break
            if len(self._buf) > MAX_LINE_BYTES:
                # Garbage without a newline: drop it, keeping a possible header start.
                j = self._buf.rfind(_HEADER_NAME)
                keep = j if j > 0 else len(self._buf) - len(_HEADER_NAME)
                del self._buf[:keep]
                self.frames_resynced += 1
                continue
            if self._fill() == "eof":
                line = bytes(self._buf)
                self._buf.clear()
                return line
        j = line.rfind(_HEADER_NAME)
        if j > 0:
            # The end of a body that was longer than its Content-Length, glued to the
            # next frame's header: start again at the header.
            logger.warning("bad frame: %d stray bytes before a header skipped", j)
            self.frames_resynced += 1
            line = line[j:]
        return line

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            data = bytes(self._buf)
            self._buf.clear()
            return data + self._raw.read()
        if n > MAX_BODY_BYTES:
            logger.warning("frame of %d bytes refused (the limit is %d); skipping to the next header", n, MAX_BODY_BYTES)
            self.frames_resynced += 1
            return _DROPPED
        scanned = 0
        while True:
            end = min(len(self._buf), n + 32)
            m = _HEADER.search(self._buf, max(0, scanned - 24), end)
            if m is not None and m.start() < n:
                # The next frame starts inside this body: the declared length was too long.
                cut = m.start()
                data = bytes(self._buf[:cut])
                del self._buf[:cut]
                logger.warning("bad frame: Content-Length %d, but the next frame starts after %d bytes", n, cut)
                self.frames_resynced += 1
                return self._sanitize(data) if data.strip() else _DROPPED
            if len(self._buf) >= n + 32 or (len(self._buf) >= n and self._quiet()):
                break
            scanned = end
            got = self._fill(timeout=STALL_S if len(self._buf) < n else 0.05)
            if got == "eof":
                break
            if got == "timeout" and len(self._buf) < n and _complete_json(self._buf):
                logger.warning("bad frame: Content-Length %d, but the body stopped at %d bytes", n, len(self._buf))
                self.frames_resynced += 1
                break
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return self._sanitize(data)

    def _quiet(self) -> bool:
        """Nothing more to read right now (so the body's end cannot hide a header)."""
        if self._fd is None:
            return True
        ready, _, _ = select.select([self._fd], [], [], 0)
        return not ready

    @staticmethod
    def _sanitize(data: bytes) -> bytes:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("message with invalid UTF-8 received; invalid bytes replaced by U+FFFD")
            data = data.decode("utf-8", "replace").encode("utf-8")
        return data

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name: str):  # fileno() and friends
        return getattr(self._raw, name)


def _complete_json(buf: bytearray) -> bool:
    try:
        json.loads(bytes(buf).decode("utf-8", "replace"))
    except ValueError:
        return False
    return True
