"""Workspace context glue: indexing at `initialized`, watched files, retrieval hook-up.

(Filled in by the workspace-context work; until then completions use in-file context only.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lsp_server.protocol.server import QuillServer


def register(server: QuillServer) -> None:
    """Register workspace handlers and hooks on ``server``."""
