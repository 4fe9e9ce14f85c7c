"""Tokenizing the pieces of one prompt as the text they make together.

Prompts are tokenized piece by piece: control tokens may only come from markup, and the
builder counts context, prefix and suffix apart.  Most vocabularies tokenize a piece on
its own as they would in place (up to pre-token boundaries).  SentencePiece vocabularies
(Llama 2, Code Llama, Mistral, Codestral; GGUF ``tokenizer.ggml.add_space_prefix``) do not:
llama.cpp, like SentencePiece's ``encode``, puts a space (the "dummy prefix") before every
text it tokenizes on its own, so a prompt tokenized piece by piece gets a space at each
piece boundary.  :func:`continuation` tokenizes a piece that continues the text before it
without that space, the way Code Llama's reference ``encode_infilling`` does: the text
after a sentinel, whose own tokens are then dropped.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Protocol


class TextTokenizer(Protocol):
    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...


class PromptTokenizer(TextTokenizer, Protocol):
    def bos_tokens(self) -> list[int]: ...


# Put before a piece to tokenize it as a continuation, in this order: the first whose own
# tokens come back unchanged in front of the piece's (no token spans the two) is used.
# "\n" is a byte token in Llama's and Mistral's vocabularies; "☺" is Meta's choice.
SENTINELS = ("\n", "\u263a", "\x1e")

_space_prefix: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()


def adds_space_prefix(tok: TextTokenizer) -> bool:
    """Whether ``tok`` puts a space before a text it tokenizes on its own (SentencePiece's
    dummy prefix): a ``space_prefix`` attribute says so, else the tokenizer is asked, once
    (the tokens of "a" spell " a")."""
    flag = getattr(tok, "space_prefix", None)
    if isinstance(flag, bool):
        return flag
    try:
        return _space_prefix[tok]
    except (KeyError, TypeError):
        pass
    flag = tok.detokenize(tok.tokenize("a")) == " a"
    try:
        _space_prefix[tok] = flag
    except TypeError:  # not weakly referable: asked again next time
        pass
    return flag


def continuation(tok: TextTokenizer, text: str, *, special: bool = False) -> list[int]:
    """The tokens of ``text`` where it continues other text: as the vocabulary tokenizes it
    inside a longer text, without the space a SentencePiece vocabulary puts before a text
    of its own.  Special-token text (``special``) is parsed as llama.cpp does in a whole
    prompt: a text right after a special token does get the space there."""
    if not text:
        return []
    if not adds_space_prefix(tok):
        return tok.tokenize(text, special=special)
    if special:
        tokens = tok.tokenize(text, special=True)
        if len(tokens) == 1 and not tok.detokenize(tokens):
            return tokens  # one control token: no text, no space
    elif len(text) > 1 and text[0] == " ":
        return tok.tokenize(text[1:])  # the text's own space is the one the vocabulary adds
    for sentinel in SENTINELS:
        head = tok.tokenize(sentinel)
        tokens = tok.tokenize(sentinel + text, special=special)
        # The sentinel's tokens unchanged in front: no token spans the boundary, and what
        # follows is the text tokenized on its own, less the space (SentencePiece's merges
        # and unigram segmentation are local: they cannot see across a fixed boundary).
        if head and tokens[: len(head)] == head:
            return tokens[len(head) :]
    return tok.tokenize(text, special=special)


class ContinuationTokenizer:
    """``tok`` whose ``tokenize`` tokenizes every text as a continuation (see
    :func:`continuation`): for assembling a prompt from pieces on a vocabulary that adds a
    space prefix, where the space goes only where the template puts it."""

    space_prefix = False  # its texts get no space in front

    def __init__(self, tok: PromptTokenizer) -> None:
        self.inner = tok

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return continuation(self.inner, text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.inner.detokenize(tokens)

    def bos_tokens(self) -> list[int]:
        return self.inner.bos_tokens()
