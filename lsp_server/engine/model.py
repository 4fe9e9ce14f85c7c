"""A loaded model paired with the prompt layout of its family.

``backends/`` loads a model and streams tokens; ``families/`` says how each family wants
its prompt.  This module joins the two for the engine: the template and stop strings come
from the registry's manifest when there is one, else from the FIM tokens in the model's
own vocabulary (and its architecture, where families share those tokens).  Where a
SentencePiece vocabulary's leading space goes is the prompt builder's to decide
(``engine/prompt.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lsp_server.backends import Backend, load_backend
from lsp_server.config import Settings
from lsp_server.families.completion import PromptTemplate, get_template, template_from_fim_tokens

if TYPE_CHECKING:
    from lsp_server.registry import Manifest


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


def prompt_setup(backend: Backend, manifest: Manifest | None) -> tuple[PromptTemplate, tuple[str, ...]]:
    """The template and stop strings: from the manifest, else from the model's own vocab."""
    fim = backend.info.fim
    if manifest is not None:
        # Spell the control tokens as this file's vocabulary does (CodeLlama: "▁<PRE>").
        template = get_template(manifest.template).with_control_tokens(fim.prefix, fim.suffix, fim.middle)
        stop = tuple(dict.fromkeys(template.stop + manifest.stop))
    else:
        template = template_from_fim_tokens(fim.prefix, fim.suffix, fim.middle, fim.eot, backend.info.architecture)
        stop = tuple(dict.fromkeys(template.stop + fim.eot))
    return template, stop


def load_model(settings: Settings) -> LoadedModel:
    """Load the model the settings name, with its prompt layout.  Raises BackendError."""
    backend, manifest = load_backend(settings)
    set_redaction = getattr(backend, "set_redaction", None)
    if set_redaction is not None:
        # A remote backend: likely secrets in the current file and the retrieved context
        # are masked before anything leaves the machine.
        from lsp_server.context.secrets import mask_secrets

        set_redaction(mask_secrets)
    template, stop = prompt_setup(backend, manifest)
    return LoadedModel(backend=backend, template=template, stop=stop, manifest=manifest)
