"""Out-of-band errors are logged, and shown to the user at most once a minute.

pygls shows every message it cannot parse or handle as a ``window/showMessage`` popup
("Error in server: ..."), each with the details in it, so a client that sends a burst of
bad frames (or a fuzzer) would flood the editor with popups.  Here the details go to the
log, and the user sees one generic line per kind of error per minute (``Notifier``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types

if TYPE_CHECKING:
    from lsp_server.protocol.server import QuillServer

logger = logging.getLogger(__name__)


def install(server: QuillServer) -> None:
    def report_server_error(error: Exception, source: Any) -> None:
        name = getattr(source, "__name__", str(source))
        if name == "FeatureRequestError":
            return  # the request's own error response says it
        logger.warning("server error (%s): %s: %s", name, type(error).__name__, error)
        server.notifier.show(
            f"ignored a message it could not handle ({type(error).__name__}); details are in the server log",
            types.MessageType.Warning,
        )

    server.report_server_error = report_server_error  # type: ignore[method-assign]
