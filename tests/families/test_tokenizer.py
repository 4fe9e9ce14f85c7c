"""Quill's tokenize path agrees with llama.cpp's tokenizer test vectors for each seed
vocabulary (``ggml-vocab-NAME.gguf.inp``/``.out``: texts and the token ids of the model's
own reference tokenizer, checked by llama.cpp's tests/test-tokenizer-0), both through the
in-process backend on the tiny model written with that vocabulary and through
``GgufVocab`` (the vocabulary-only loader the ctransformers and openai backends count with)
on llama.cpp's file itself."""

from __future__ import annotations

import pytest

from benchmarks.harness import read_tokenizer_tests
from lsp_server.backends.decoding import GgufVocab

from .conftest import require_vocab
from .seed import FAMILIES, Family

VOCABS = sorted({f.vocab for f in FAMILIES})


@pytest.mark.parametrize("name", VOCABS)
def test_vocabulary_only_loader_matches_the_test_vectors(name: str):
    path = require_vocab(name)
    cases = read_tokenizer_tests(path)
    assert len(cases) >= 40 and any("\n" in text for text, _ in cases)
    vocab = GgufVocab(str(path))
    try:
        wrong = [(text, ids, vocab.tokenize(text)) for text, ids in cases if vocab.tokenize(text) != ids]
    finally:
        vocab.close()
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, first: {wrong[0]}"


def test_the_backend_on_the_tiny_model_matches_the_test_vectors(fam: Family, bare):
    b = bare.backend
    cases = read_tokenizer_tests(require_vocab(fam.vocab))
    wrong = [(text, ids, b.tokenize(text)) for text, ids in cases if b.tokenize(text) != ids]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, first: {wrong[0]}"
    # And back: the tokens spell the text (SentencePiece puts its dummy-prefix space first).
    spm = b.info.metadata.get("tokenizer.ggml.model") == "llama"
    for text, ids in cases:
        if text:
            assert b.detokenize(ids) == (" " + text if spm else text), text


def test_the_reader_follows_llama_cpps_format(tmp_path):
    """Texts split on the separator line (an empty text included), one id line per text."""
    vocab = tmp_path / "ggml-vocab-x.gguf"
    vocab.with_name(vocab.name + ".inp").write_text(
        "a b\n__ggml_vocab_test__\n\n__ggml_vocab_test__\n x\n\n__ggml_vocab_test__\n"
    )
    vocab.with_name(vocab.name + ".out").write_text(" 1 2\n\n 7\n")
    assert read_tokenizer_tests(vocab) == [("a b", [1, 2]), ("", []), (" x\n", [7])]
    vocab.with_name(vocab.name + ".out").write_text(" 1 2\n")
    with pytest.raises(ValueError, match="3 texts"):
        read_tokenizer_tests(vocab)
