"""Code actions (explain, refactor) glue.

(Filled in by the code-actions work; until then no code actions are offered.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lsp_server.protocol.server import QuillServer


def register(server: QuillServer) -> None:
    """Register code action handlers on ``server``."""
