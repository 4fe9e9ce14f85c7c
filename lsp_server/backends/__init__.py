"""Model backends behind one interface (see ``base.py``).

``load_model(settings)`` picks the backend the settings name:

- ``llama_cpp`` (default): a GGUF file in this process through llama-cpp-python.
- ``ctransformers`` (optional extra): legacy GGML files and GGUF Llama models with a
  SentencePiece vocabulary (Code Llama, Mistral); other models are refused with a message
  that says why.
- ``openai``: any OpenAI-compatible ``/v1/completions`` server at ``endpoint``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
from lsp_server.engine.templates import PromptTemplate, get_template, template_from_fim_tokens

if TYPE_CHECKING:
    from lsp_server.registry import Manifest

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

logger = logging.getLogger(__name__)


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


def _prompt_setup(backend: Backend, manifest: Manifest | None) -> tuple[PromptTemplate, tuple[str, ...]]:
    """The template and stop strings: from the manifest, else from the model's own vocab."""
    if manifest is not None:
        fim = backend.info.fim
        # Spell the control tokens as this file's vocabulary does (CodeLlama: "▁<PRE>").
        template = get_template(manifest.template).with_control_tokens(fim.prefix, fim.suffix, fim.middle)
        return template, tuple(dict.fromkeys(template.stop + manifest.stop))
    fim = backend.info.fim
    template = template_from_fim_tokens(fim.prefix, fim.suffix, fim.middle, fim.eot)
    return template, tuple(dict.fromkeys(template.stop + fim.eot))


def _n_ctx(settings: Settings, manifest: Manifest | None) -> int:
    n_ctx = settings.context_tokens
    if manifest is not None:
        n_ctx = min(n_ctx, manifest.context_length)
    return n_ctx


def load_model(settings: Settings) -> LoadedModel:
    """Load the model the settings name.  Raises BackendError with a user-facing message."""
    if settings.backend == "openai":
        from lsp_server.backends.openai import load_openai

        backend, manifest = load_openai(settings)
        template, stop = _prompt_setup(backend, manifest)
        return LoadedModel(backend=backend, template=template, stop=stop, manifest=manifest)

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
        )
    else:
        raise BackendError(f"unknown backend {settings.backend!r}; expected llama_cpp, ctransformers or openai")
    template, stop = _prompt_setup(backend_impl, manifest)
    return LoadedModel(backend=backend_impl, template=template, stop=stop, manifest=manifest)
