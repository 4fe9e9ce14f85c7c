"""Model backends behind one interface (see ``base.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from lsp_server.backends.base import (
    Backend,
    BackendError,
    FimTokens,
    GenerationRequest,
    GenerationResult,
    ModelFileError,
    ModelInfo,
)
from lsp_server.config import Settings
from lsp_server.engine.templates import PromptTemplate, get_template, template_from_fim_tokens
from lsp_server.registry import Manifest, resolve_model

__all__ = [
    "Backend",
    "BackendError",
    "FimTokens",
    "GenerationRequest",
    "GenerationResult",
    "LoadedModel",
    "ModelFileError",
    "ModelInfo",
    "load_model",
]


@dataclass
class LoadedModel:
    """A backend plus what the engine needs to prompt it."""

    backend: Backend
    template: PromptTemplate
    stop: tuple[str, ...]
    manifest: Manifest | None = None

    @property
    def description(self) -> str:
        info = self.backend.info
        return f"{info.name} on {info.device} ({self.template.name} prompt, {info.n_ctx} tokens of context)"


def load_model(settings: Settings) -> LoadedModel:
    """Load the model the settings name.  Raises BackendError with a user-facing message."""
    if settings.backend != "llama_cpp":
        raise BackendError(f"backend {settings.backend!r} is not available in this build")
    resolved = resolve_model(settings.model)
    from lsp_server.backends.llama_cpp import LlamaCppBackend

    manifest = resolved.manifest
    n_ctx = settings.context_tokens
    if manifest is not None:
        n_ctx = min(n_ctx, manifest.context_length)
    backend = LlamaCppBackend(
        resolved.path,
        n_ctx=n_ctx,
        gpu_layers=settings.gpu_layers,
        threads=settings.threads,
        name=manifest.name if manifest else "",
    )
    if manifest is not None:
        template = get_template(manifest.template)
        stop = tuple(dict.fromkeys(template.stop + manifest.stop))
    else:
        fim = backend.info.fim
        template = template_from_fim_tokens(fim.prefix, fim.suffix, fim.middle, fim.eot)
        stop = tuple(dict.fromkeys(template.stop + fim.eot))
    return LoadedModel(backend=backend, template=template, stop=stop, manifest=manifest)
