"""Stdio transport that survives bad bytes.

pygls decodes each message body with ``json.loads(bytes)``; a body with invalid UTF-8
raises there and the message is dropped, so a client waiting on that request would hang.
This reader hands pygls a body whose invalid bytes are replaced by U+FFFD instead.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

logger = logging.getLogger(__name__)


class SanitizingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def readline(self, *args: int) -> bytes:
        return self._raw.readline(*args)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
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
