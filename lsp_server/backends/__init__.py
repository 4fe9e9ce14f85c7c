"""Model backends behind one interface (see ``base.py``).

``load_backend(settings)`` loads the model the settings name with the backend they name:

- ``llama_cpp`` (default): a GGUF file in this process through llama-cpp-python.
- ``ctransformers`` (optional extra): legacy GGML files and GGUF Llama models with a
  SentencePiece vocabulary (Code Llama, Mistral); other models are refused with a message
  that says why.
- ``openai``: any OpenAI-compatible ``/v1/completions`` server at ``endpoint``.

A backend only loads a model and streams tokens.  Which prompt layout a model family
wants is data in ``lsp_server/families``; the engine pairs the two (``engine/model.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from lsp_server.registry import Manifest

__all__ = [
    "Backend",
    "BackendError",
    "FimTokens",
    "GenerationRequest",
    "GenerationResult",
    "ModelFileError",
    "ModelInfo",
    "load_backend",
]

logger = logging.getLogger(__name__)


def _n_ctx(settings: Settings, manifest: Manifest | None) -> int:
    n_ctx = settings.context_tokens
    if manifest is not None:
        n_ctx = min(n_ctx, manifest.context_length)
    return n_ctx


def load_backend(settings: Settings) -> tuple[Backend, Manifest | None]:
    """Load the model the settings name, and its manifest where the registry knows it.
    Raises BackendError with a user-facing message."""
    if settings.backend == "openai":
        from lsp_server.backends.openai import load_openai

        return load_openai(settings)

    from lsp_server.registry import resolve_model

    resolved = resolve_model(settings.model)
    manifest = resolved.manifest
    name = manifest.name if manifest else ""
    backend_impl: Backend
    if settings.backend == "ctransformers":
        from lsp_server.backends.ctransformers import CTransformersBackend, check_ctransformers_can_load

        check_ctransformers_can_load(resolved.path, manifest)
        backend_impl = CTransformersBackend(
            resolved.path,
            n_ctx=_n_ctx(settings, manifest),
            gpu_layers=settings.gpu_layers,
            threads=settings.threads,
            name=name,
            model_type=manifest.model_type if manifest else None,
        )
    elif settings.backend == "llama_cpp":
        if manifest is not None and manifest.format != "gguf":
            raise BackendError(
                f"model {manifest.id} is a legacy {manifest.format.upper()} file that llama.cpp cannot read; "
                "set quill.backend to \"ctransformers\" (pip install 'quill-lsp[ctransformers]')"
            )
        from lsp_server.backends.llama_cpp import LlamaCppBackend

        backend_impl = LlamaCppBackend(
            resolved.path,
            n_ctx=_n_ctx(settings, manifest),
            gpu_layers=settings.gpu_layers,
            threads=settings.threads,
            name=name,
            kv_cache_mb=settings.kv_cache_mb,
        )
    else:
        raise BackendError(f"unknown backend {settings.backend!r}; expected llama_cpp, ctransformers or openai")
    return backend_impl, manifest
