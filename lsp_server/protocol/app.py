"""The assembled server: the core handlers of ``server.py`` plus each feature module's.

Feature modules (``workspace_features``, ``code_actions``) import the server class and
register their handlers and hooks on it; the core never imports them, so dependencies
point one way.
"""

from __future__ import annotations

from lsp_server.config import Settings
from lsp_server.protocol import code_actions, hardening, lifeline, model_offer, workspace_features
from lsp_server.protocol.server import QuillServer, build_core


def create_server(settings: Settings | None = None) -> QuillServer:
    server = build_core(settings)
    workspace_features.register(server)
    code_actions.register(server)
    lifeline.register(server)
    model_offer.register(server)
    hardening.install(server)
    return server
