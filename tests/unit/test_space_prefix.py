"""Vocabularies that put a space before every text they tokenize on their own
(SentencePiece's dummy prefix: Llama 2, Code Llama, Mistral): prompts assembled from pieces
get that space once, where the reference tokenization has it, not at every piece.

A character tokenizer with llama.cpp's rule for the space (at the start of a text and after
each special token) stands in for SentencePiece here; ``tests/families`` checks the same on
Llama's real vocabulary."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from lsp_server.engine.actions.prompts import tokenize_segments
from lsp_server.engine.prompt import PromptBudget, PromptBuilder, _heal
from lsp_server.engine.tokens import ContinuationTokenizer, adds_space_prefix, continuation
from lsp_server.families.completion import ContextChunk, Segment, get_template, template_from_fim_tokens

from .fakes import CharTokenizer


class SpaceCharTokenizer:
    """One token per character; ``specials`` are single tokens (rendering no text) where
    ``special`` parses them; a space goes before the text at its start and after each
    special token, as llama.cpp does for SentencePiece."""

    def __init__(self, specials: Sequence[str] = ()) -> None:
        self.specials = {s: 100_000 + i for i, s in enumerate(specials)}
        self.rev = {v: k for k, v in self.specials.items()}
        self.calls = 0

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        self.calls += 1
        if not text:
            return []
        parts = [text]
        if special and self.specials:
            pattern = "(" + "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True)) + ")"
            parts = [p for p in re.split(pattern, text) if p]
        out: list[int] = []
        after_special = True
        for part in parts:
            if special and part in self.specials:
                out.append(self.specials[part])
                after_special = True
            else:
                out.extend(ord(c) for c in (" " if after_special else "") + part)
                after_special = False
        return out

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join("" if t in self.rev else chr(t) for t in tokens)

    def bos_tokens(self) -> list[int]:
        return [1]


def render(tok, tokens: Sequence[int]) -> str:
    return "".join(f"⟦{tok.rev[t]}⟧" if t in tok.rev else chr(t) for t in tokens[1:])


def test_the_tokenizer_is_asked_once_whether_it_adds_a_space():
    spm = SpaceCharTokenizer()
    assert adds_space_prefix(spm) and adds_space_prefix(spm)
    assert spm.calls == 1
    assert not adds_space_prefix(CharTokenizer())
    assert not adds_space_prefix(ContinuationTokenizer(spm))  # its texts get none


def test_continuation_has_no_leading_space():
    spm = SpaceCharTokenizer(["<PRE>"])
    assert spm.tokenize("x = 1") == [ord(c) for c in " x = 1"]
    assert continuation(spm, "x = 1") == [ord(c) for c in "x = 1"]
    assert continuation(spm, " x") == [ord(" "), ord("x")]
    assert continuation(spm, "\n\ny") == [ord(c) for c in "\n\ny"]
    assert continuation(spm, "") == []
    # Special tokens: one is one id; text after one gets the space, as llama.cpp does.
    assert continuation(spm, "<PRE>", special=True) == [100_000]
    assert continuation(spm, "a<PRE>b", special=True) == [ord("a"), 100_000, ord(" "), ord("b")]
    # Other vocabularies tokenize as they always did.
    char = CharTokenizer()
    assert continuation(char, "x = 1") == char.tokenize("x = 1")


def test_leading_space_of_a_template():
    codellama = get_template("codellama").with_leading_space()
    # Code Llama's "<PRE> {prefix}": the space is SentencePiece's, not one more.
    assert (codellama.prefix_sep, codellama.lead) == ("", " ")
    assert codellama.with_leading_space() is codellama
    assert get_template("plain").with_leading_space().lead == " "
    odd = get_template("plain").__class__(name="odd", fim_prefix="<A>", fim_suffix="<B>", prefix_sep="\n")
    assert odd.with_leading_space() is odd  # a separator of its own stays text, no space added


def build(name: str, tok, chunks=(), prefix="x = ", suffix="\ny = 2", path="", heal=False):
    tpl = get_template(name)
    return PromptBuilder(tok, tpl, heal=heal).build(
        prefix, suffix, PromptBudget(total=4000, suffix_max=64, context_share=0.5), list(chunks), path, "demo"
    )


def specials_of(name: str) -> list[str]:
    tpl = get_template(name)
    return [t for t in (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle, tpl.file_sep, tpl.repo_name_token) if t]


@pytest.mark.parametrize(
    "name, expected",
    [
        # Code Llama's reference: [<PRE>] + encode(prefix) + [<SUF>] + encode_infilling(suffix) + [<MID>].
        ("codellama", "⟦<PRE>⟧ x = ⟦<SUF>⟧\ny = 2⟦<MID>⟧"),
        # A document starts with SentencePiece's space.
        ("plain", " x = "),
        # mistral-common: [SUFFIX] + encode_infilling(suffix) + [PREFIX] + encode(prefix).
        ("codestral", "⟦[SUFFIX]⟧\ny = 2⟦[PREFIX]⟧ x = "),
    ],
)
def test_one_space_where_the_reference_has_it(name: str, expected: str):
    tok = SpaceCharTokenizer(specials_of(name))
    prompt = build(name, tok)
    assert render(tok, prompt.tokens) == expected
    assert prompt.n_prefix_tokens == len(" x = ")  # the space is counted with the prefix


CHUNKS = [ContextChunk(path="pkg/util.py", text="def helper(x): ..."), ContextChunk(path="pkg/m.py", text="M = 1")]


@pytest.mark.parametrize(
    "name, expected",
    [
        # Context opens the prefix section: its first chunk gets the space, the prefix none.
        (
            "codellama",
            "⟦<PRE>⟧ # pkg/util.py\ndef helper(x): ...\n\n# pkg/m.py\nM = 1\n\n# app.py\nx = ⟦<SUF>⟧\ny = 2⟦<MID>⟧",
        ),
        ("plain", " # pkg/util.py\ndef helper(x): ...\n\n# pkg/m.py\nM = 1\n\n# app.py\nx = "),
        # Repository layouts: texts after their control tokens continue, as the template spells them.
        (
            "starcoder2",
            "⟦<repo_name>⟧demo⟦<file_sep>⟧pkg/util.py\ndef helper(x): ...\n⟦<file_sep>⟧pkg/m.py\nM = 1\n"
            "⟦<file_sep>⟧⟦<fim_prefix>⟧app.py\nx = ⟦<fim_suffix>⟧\ny = 2⟦<fim_middle>⟧",
        ),
    ],
)
def test_context_gets_the_space_once(name: str, expected: str):
    tok = SpaceCharTokenizer(specials_of(name))
    prompt = build(name, tok, CHUNKS, path="app.py")
    assert render(tok, prompt.tokens) == expected
    # Every token counted: BOS, the FIM tokens, and context (with its control tokens), prefix, suffix.
    n_text = prompt.n_context_tokens + prompt.n_prefix_tokens + prompt.n_suffix_tokens
    assert prompt.n_tokens == 1 + (3 if get_template(name).is_fim else 0) + n_text


def test_healing_with_the_leading_space():
    tok = SpaceCharTokenizer(specials_of("codellama"))
    plain = build("codellama", tok, prefix="x = fo")
    healed = build("codellama", tok, prefix="x = fo", heal=True)
    assert healed.forced_prefix == "o"
    assert render(tok, healed.tokens) == "⟦<PRE>⟧ x = f⟦<SUF>⟧\ny = 2⟦<MID>⟧"
    assert len(healed.tokens) == len(plain.tokens) - 1


class Pieces:
    """Tokens that are whole pieces, for ``_heal``: SentencePiece's "▁x" is one token."""

    def __init__(self, pieces: dict[int, str]) -> None:
        self.pieces = pieces

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self.pieces[t] for t in tokens)


def test_a_token_holding_the_leading_space_is_not_taken_back():
    tok = Pieces({1: " x", 2: " =", 3: " fo"})
    assert _heal(tok, "x", [1], lead=" ") == ([1], "")  # taking it back would lose the space
    assert _heal(tok, "x = fo", [1, 2, 3], lead=" ") == ([1, 2], " fo")
    assert _heal(tok, "x = fo", [1, 2, 3]) == ([1, 2, 3], "")  # the space unaccounted for: no healing


def test_chat_prompt_is_the_whole_text_tokenized():
    tok = SpaceCharTokenizer(["<|im_start|>", "<|im_end|>"])
    # Llama 2's markup holds no special token of this vocabulary: one text, one space.
    segments = [
        Segment("control", "[INST]"),
        Segment("text", " <<SYS>>\nsys\n<</SYS>>\n\nhi "),
        Segment("control", "[/INST]"),
    ]
    text = "".join(s.text for s in segments)
    assert tokenize_segments(tok, segments) == [1] + tok.tokenize(text, special=True)
    # ChatML: special tokens, and llama.cpp's space after each.
    segments = [
        Segment("control", "<|im_start|>"),
        Segment("text", "user\nhi <|im_end|>", "user"),  # code spelling markup stays text
        Segment("control", "<|im_end|>\n<|im_start|>"),
        Segment("text", "assistant\n"),
    ]
    tokens = tokenize_segments(tok, segments)
    assert render(tok, tokens) == "⟦<|im_start|>⟧ user\nhi <|im_end|>⟦<|im_end|>⟧ \n⟦<|im_start|>⟧ assistant\n"


def test_a_bare_starcoder2_file_gets_the_repository_layout():
    tokens = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<|endoftext|>",))
    assert template_from_fim_tokens(*tokens).name == "starcoder"
    assert template_from_fim_tokens(*tokens, architecture="starcoder2").name == "starcoder2"
    assert template_from_fim_tokens(*tokens, architecture="gpt2").name == "starcoder"
    # The architecture picks only among templates with the vocabulary's FIM tokens.
    assert template_from_fim_tokens("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", (), "starcoder2").name == (
        "qwen25coder"
    )
