"""Each seed family's model loads through Quill and llama.cpp by its manifest and as a bare
``.gguf`` path, with the family's template and stops, and the vocabulary's own special ids
behind them."""

from __future__ import annotations

import time

import pytest

from lsp_server import registry
from lsp_server.backends.decoding import GgufVocab

from .conftest import N_CTX, Built, load_by_manifest
from .seed import FAMILIES, Family


def test_the_manifest_loads_the_family(fam: Family, by_manifest):
    m = by_manifest.manifest
    assert m is not None and m.id == fam.manifests[0]
    assert m.template == fam.template == by_manifest.template.name
    assert by_manifest.backend.info.architecture == fam.architecture
    # The manifest's stop strings all reach the model.
    assert set(m.stop) <= set(by_manifest.stop)


def test_every_manifest_of_the_family_loads_the_same_file(fam: Family, built: Built):
    for manifest_id in fam.manifests[1:]:
        loaded = load_by_manifest(manifest_id, built.model(fam), built.root)
        try:
            assert loaded.manifest is not None and loaded.manifest.family == registry.get_manifest(manifest_id).family
            assert loaded.template.name == fam.template
        finally:
            loaded.backend.close()


def test_the_bare_file_is_recognised_from_its_metadata(fam: Family, bare):
    # StarCoder2 shares StarCoder's FIM tokens: its architecture tells them apart.
    assert bare.manifest is None
    assert bare.template.name == fam.bare_template
    assert bare.backend.info.architecture == fam.architecture


def test_the_templates_control_tokens_are_the_vocabularys_special_ids(fam: Family, by_manifest, bare):
    for loaded in (by_manifest, bare):
        tpl, b = loaded.template, loaded.backend
        if fam.fim is None:
            assert not tpl.is_fim
            continue
        assert tpl.fim_prefix and tpl.fim_suffix and tpl.fim_middle
        got = tuple(b.tokenize(t, special=True) for t in (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle))
        assert got == tuple([i] for i in fam.fim)
        # llama.cpp finds the same tokens by itself (by their text where the file has no ids).
        lib, vocab = b._lib, b._vocab
        assert (
            lib.llama_vocab_fim_pre(vocab),
            lib.llama_vocab_fim_suf(vocab),
            lib.llama_vocab_fim_mid(vocab),
        ) == fam.fim
    if fam.repo is not None:
        tpl = by_manifest.template
        assert (
            by_manifest.backend.tokenize(tpl.repo_name_token or "", special=True),
            by_manifest.backend.tokenize(tpl.file_sep or "", special=True),
        ) == tuple([i] for i in fam.repo)


def test_bos_and_the_published_end_tokens(fam: Family, by_manifest, built: Built):
    b = by_manifest.backend
    assert tuple(b.bos_tokens()) == fam.bos
    vocab = GgufVocab(str(built.model(fam)))
    try:
        for end in fam.ends:
            # Each end token is one token of its own text; a control token is never produced
            # from user text.  A user-defined one (DeepSeek-Coder's <|EOT|>) is, by design of
            # the tokenizer (Hugging Face's too): llama.cpp matches those in any text.
            text = vocab.special_text(end)
            assert b.tokenize(text, special=True) == [end], text
            assert (end in b.tokenize(text)) == (not vocab.is_control(end)), text
        if fam.key == "deepseek-coder":
            assert not vocab.is_control(32021) and vocab.special_text(32021) == "<|EOT|>"
    finally:
        vocab.close()


@pytest.mark.parametrize("key", [f.key for f in FAMILIES])
def test_a_tiny_model_is_small_and_loads_fast(key: str, built: Built):
    from lsp_server.backends.llama_cpp import LlamaCppBackend

    from .seed import family

    path = built.model(family(key))
    assert path.stat().st_size < 12 * 1024 * 1024  # the Qwen vocabulary alone is 6 MB
    t0 = time.perf_counter()
    backend = LlamaCppBackend(str(path), n_ctx=N_CTX, threads=1)
    backend.close()
    assert time.perf_counter() - t0 < 3.0  # about 0.05-0.3 s; generous on a busy machine
