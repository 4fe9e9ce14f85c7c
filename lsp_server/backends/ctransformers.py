"""Legacy model files through ctransformers (optional: ``pip install 'quill-lsp[ctransformers]'``).

ctransformers 0.2.27 (its last release, September 2023) bundles the GGML implementations
of that time.  It runs:

- legacy GGML files (``.bin``) of the types it knows (gpt2, gptj, gpt_neox, llama, falcon,
  mpt, starcoder, dolly-v2, replit), e.g. StarCoder and WizardCoder-15B, which llama.cpp
  can no longer read;
- GGUF files only of the ``llama`` architecture with a SentencePiece vocabulary (Code Llama,
  Mistral, their fine-tunes).

It cannot run GGUF models of other architectures (Gemma, Qwen2, StarCoder2, ...) or
llama-architecture GGUFs with a BPE vocabulary (SmolLM2, DeepSeek-Coder): those are
refused before loading, with the reason, and ``quill-lsp models list`` says it per model.

Tokens: for a GGUF file the prompt is tokenized by llama.cpp's vocabulary-only loader
(ctransformers' tokenizer cannot parse control tokens such as ``<PRE>`` and always adds a
leading space); for a GGML file ctransformers' own tokenizer is used, with control tokens
(``<fim_prefix>`` ...) split out and mapped to their ids first.  Generation is our own
loop, as in the llama_cpp backend: greedy by default, a cancel check between tokens, token
healing, and the KV cache reused for the longest common prefix with the previous prompt.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lsp_server.backends.base import (
    BackendError,
    FimTokens,
    GenerationRequest,
    GenerationResult,
    ModelFileError,
    ModelInfo,
)
from lsp_server.backends.decoding import (
    GgufVocab,
    PieceIndex,
    StopTokens,
    check_request,
    common_prefix_len,
    decode,
    gguf_version,
)

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'quill-lsp[ctransformers]' (or: pip install ctransformers)"
_CONTROL = re.compile(r"^(<\|?[A-Za-z_][A-Za-z0-9_.\-▁｜]*\|?>|\[[A-Z_]+\])$")


def check_ctransformers_can_load(path: str, manifest: Any = None) -> None:
    """Refuse, with the reason, a model ctransformers cannot run (before loading it)."""
    from lsp_server.registry import ctransformers_support

    if manifest is not None:
        ok, why = manifest.ctransformers
        if not ok:
            raise BackendError(
                f'the ctransformers backend cannot run {manifest.id}: {why}; use quill.backend "llama_cpp" or "openai"'
            )
        return
    if gguf_version(path) is None:
        raise BackendError(
            f"{path} is not a GGUF file; a legacy GGML file needs a manifest with its model_type "
            "(see models/wizardcoder-15b.toml) for the ctransformers backend"
        )
    vocab = GgufVocab(path)
    try:
        arch = vocab.metadata.get("general.architecture", "")
        tok_model = vocab.metadata.get("tokenizer.ggml.model", "")
    finally:
        vocab.close()
    ok, why = ctransformers_support("gguf", arch, "spm" if tok_model == "llama" else "bpe")
    if not ok:
        raise BackendError(
            f'the ctransformers backend cannot run {path}: {why}; use quill.backend "llama_cpp" or "openai"'
        )


class CTransformersBackend:
    """A GGML/GGUF model in this process through ctransformers."""

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int = 2048,
        gpu_layers: int = 0,
        threads: int = 0,
        name: str = "",
        model_type: str | None = None,
        batch_size: int = 256,
    ) -> None:
        if not os.path.isfile(path):
            raise ModelFileError(f"model file not found: {path}")
        try:
            from ctransformers import LLM, Config
        except ImportError as exc:
            raise BackendError(f"the ctransformers backend is not installed: {INSTALL_HINT}") from exc
        from lsp_server.backends.llama_cpp import default_threads

        self._threads = threads or default_threads()
        self._batch = batch_size
        self._vocab: GgufVocab | None = GgufVocab(path) if gguf_version(path) is not None else None
        if self._vocab is None and not model_type:
            raise BackendError(f"{path} is a legacy GGML file: its manifest must name the model_type")
        t0 = time.perf_counter()
        device = "cpu"
        layers = 10**6 if gpu_layers < 0 else gpu_layers
        llm = None
        if layers:
            try:
                llm = LLM(
                    path,
                    model_type or "gguf",
                    config=Config(context_length=n_ctx, gpu_layers=layers, threads=self._threads),
                )
                device = f"gpu ({'all' if gpu_layers < 0 else gpu_layers} layers offloaded, ctransformers CUDA)"
            except (OSError, RuntimeError) as exc:
                logger.warning(
                    "ctransformers GPU offload unavailable (%s): running on the CPU; "
                    "`pip install ctransformers[cuda]` brings the CUDA libraries",
                    exc,
                )
        if llm is None:
            try:
                llm = LLM(
                    path, model_type or "gguf", config=Config(context_length=n_ctx, gpu_layers=0, threads=self._threads)
                )
            except (OSError, RuntimeError, ValueError) as exc:
                raise ModelFileError(f"ctransformers could not load {path}: {exc}") from exc
        self._llm: Any = llm
        self.load_ms = (time.perf_counter() - t0) * 1000
        self._n_vocab = int(llm.vocab_size)
        self._pieces: dict[int, bytes] = {}
        self._specials: dict[str, int] | None = None
        self._piece_index: PieceIndex | None = None
        self._stop_tokens = StopTokens(self.tokenize, self.piece)
        self._rng = np.random.default_rng(0)
        meta = dict(self._vocab.metadata) if self._vocab is not None else {}
        fim = self._vocab.fim_tokens() if self._vocab is not None else self._fim_from_specials()
        self.info = ModelInfo(
            name=name or meta.get("general.name", os.path.basename(path)),
            path=path,
            n_ctx=int(llm.context_length) or n_ctx,
            n_vocab=self._n_vocab,
            architecture=meta.get("general.architecture", llm.model_type),
            fim=fim,
            eos_token_ids=(int(llm.eos_token_id),),
            chat_template=meta.get("tokenizer.chat_template"),
            device=device,
            metadata=meta,
        )
        logger.info(
            "loaded %s (%s via ctransformers, n_ctx=%d, %d threads) on %s in %.0f ms",
            self.info.name,
            self.info.architecture,
            self.info.n_ctx,
            self._threads,
            device,
            self.load_ms,
        )

    # ------------------------------------------------------------------ tokenizer
    def _special_map(self) -> dict[str, int]:
        """Control-token text -> id for a GGML vocabulary (found by spelling every id)."""
        if self._specials is None:
            specials: dict[str, int] = {}
            for tok in range(self._n_vocab):
                text = self.piece(tok).decode("utf-8", "replace")
                if _CONTROL.match(text):
                    specials.setdefault(text, tok)
            self._specials = specials
        return self._specials

    def _fim_from_specials(self) -> FimTokens:
        sp = self._special_map()
        for pre, suf, mid in (
            ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
            ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
        ):
            if pre in sp and suf in sp and mid in sp:
                return FimTokens(pre, suf, mid, tuple(t for t in ("<|endoftext|>",) if t in sp))
        return FimTokens(eot=tuple(t for t in ("<|endoftext|>",) if t in sp))

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        if not text:
            return []
        if self._vocab is not None:
            return self._vocab.tokenize(text, special=special)
        if not special:
            return list(self._llm.tokenize(text, add_bos_token=False))
        specials = self._special_map()
        if not specials:
            return list(self._llm.tokenize(text, add_bos_token=False))
        pattern = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")
        out: list[int] = []
        for part in pattern.split(text):
            if not part:
                continue
            if part in specials:
                out.append(specials[part])
            else:
                out.extend(self._llm.tokenize(part, add_bos_token=False))
        return out

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        if self._vocab is not None:
            data = self._vocab.piece(token)
        else:
            raw = self._llm.ctransformers_llm_detokenize(token)
            data = bytes(raw) if raw else b""
        self._pieces[token] = data
        return data

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def bos_tokens(self) -> list[int]:
        if self._vocab is not None:
            return self._vocab.bos_tokens()
        return []

    def is_eog(self, token: int) -> bool:
        if self._vocab is not None and self._vocab.is_eog(token):
            return True
        return bool(self._llm.is_eos_token(token))

    def allowed_tokens(self, remaining: bytes) -> np.ndarray:
        if self._piece_index is None:
            self._piece_index = PieceIndex(self._n_vocab, self.piece, self.is_eog)
        return self._piece_index.allowed(remaining)

    # ----------------------------------------------------------------- generation
    def _logits(self) -> np.ndarray:
        ptr = self._llm.ctransformers_llm_logits_data()
        size = int(self._llm.ctransformers_llm_logits_size())
        return np.ctypeslib.as_array(ptr, shape=(size,))[-self._n_vocab :]

    def _eval(self, tokens: Sequence[int]) -> None:
        if tokens:
            self._llm.eval(list(tokens), batch_size=self._batch, threads=self._threads)

    def _eval_prompt(self, prompt: list[int]) -> int:
        """Bring the model state to ``prompt``, reusing the common prefix: ctransformers
        writes the KV cache at ``n_past = len(context)``, so cutting its context list back
        to the common prefix makes the next eval overwrite only the changed tail."""
        llm = self._llm
        common = common_prefix_len(llm._context, prompt)
        if common >= len(prompt):
            common = len(prompt) - 1  # re-evaluate the last token to get fresh logits
        llm._context = list(llm._context[:common])
        self._eval(prompt[common:])
        return common

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        check_request(request, self.info.n_ctx)
        if request.seed:
            self._rng = np.random.default_rng(request.seed)
        t0 = time.perf_counter()
        try:
            reused = self._eval_prompt(list(request.prompt))
        except RuntimeError as exc:
            self._llm._context = []
            raise BackendError(f"ctransformers failed to evaluate the prompt: {exc}") from exc
        t1 = time.perf_counter()
        out = decode(
            request,
            cancel,
            self._rng,
            logits=self._logits,
            eval_token=lambda token: self._eval([token]),
            piece=self.piece,
            is_eog=self._stop_tokens.end_check(request.stop, self.is_eog),
            allowed_tokens=self.allowed_tokens,
        )
        t2 = time.perf_counter()
        return GenerationResult(
            text=out.text,
            tokens=out.tokens,
            prompt_tokens=len(request.prompt),
            reused_tokens=reused,
            prompt_ms=(t1 - t0) * 1000,
            generate_ms=(t2 - t1) * 1000,
            stop_reason=out.stop_reason,
            logprobs=out.logprobs,
            token_ends=out.token_ends,
            top=out.top,
        )

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            try:
                llm.ctransformers_llm_delete()
                llm._llm = None  # its __del__ must not free it twice
            except Exception:  # pragma: no cover - best effort
                logger.debug("closing ctransformers model failed", exc_info=True)
            self._llm = None
        if self._vocab is not None:
            self._vocab.close()
            self._vocab = None
