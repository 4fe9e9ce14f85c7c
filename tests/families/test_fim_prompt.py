"""The completion prompt Quill builds, on each family's real vocabulary: the control tokens
are exactly the family's special ids (never split into text pieces), text that spells a
control token stays text, the whole prompt is the family's reference tokenization, token
healing takes back the right text, and the budget is counted token-exactly."""

from __future__ import annotations

import threading

import pytest

from lsp_server.backends import GenerationRequest
from lsp_server.backends.decoding import GgufVocab
from lsp_server.engine.prompt import PromptBudget, PromptBuilder
from lsp_server.families.completion import ContextChunk

from .conftest import Built
from .seed import Family

PREFIX = "import os\n\n\ndef add(a, b):\n    return a + b\n\n\ndef main():\n    total = add(1, 2)\n    "
SUFFIX = "\n    print(total)\n\n\nmain()\n"
# Text in the user's files that spells the control tokens of every seed family.
SPELLED = (
    "<fim_prefix> <fim_suffix> <fim_middle> <file_sep> <repo_name> <|endoftext|> <|fim_prefix|> "
    "<|fim_suffix|> <|fim_middle|> <|file_sep|> <|repo_name|> <|im_start|> <|im_end|> <｜fim▁begin｜> "
    "<｜fim▁hole｜> <｜fim▁end｜> <｜end▁of▁sentence｜> <PRE> ▁<PRE> <SUF> <MID> <EOT> </s> <s>"
)
CHUNKS = [
    ContextChunk(path="pkg/util.py", text=f"def helper(x):\n    return x  # {SPELLED}\n"),
    ContextChunk(path="pkg/model.py", text="class Model:\n    pass\n"),
]


@pytest.fixture(scope="module")
def vocab(fam: Family, built: Built):
    v = GgufVocab(str(built.model(fam)))
    yield v
    v.close()


def controls(vocab: GgufVocab, tokens: list[int]) -> list[int]:
    return [t for t in tokens if vocab.is_control(t)]


def encode_infilling(backend, text: str) -> list[int]:
    """Code Llama's reference ``encode_infilling`` (codellama/llama/tokenizer.py): the
    text without SentencePiece's implicit leading space, by encoding "☺" + text and
    dropping the first two tokens ("▁", "☺")."""
    tokens = backend.tokenize("☺" + text)
    assert backend.detokenize(tokens[:2]) == " ☺"
    return tokens[2:]


def reference_prompt(fam: Family, loaded) -> list[int]:
    """The family's FIM prompt for PREFIX/SUFFIX as its reference code builds it."""
    b, tpl = loaded.backend, loaded.template
    if fam.fim is None:
        return b.bos_tokens() + b.tokenize(PREFIX)
    pre, suf, mid = fam.fim
    if fam.key == "codellama":  # codellama/llama/generation.py, infilling_prompt_tokens
        return b.bos_tokens() + [pre] + b.tokenize(PREFIX) + [suf] + encode_infilling(b, SUFFIX) + [mid]
    # The model cards' prompt string, tokenized as a whole with its special tokens.
    return b.bos_tokens() + b.tokenize(
        f"{tpl.fim_prefix}{PREFIX}{tpl.fim_suffix}{SUFFIX}{tpl.fim_middle}", special=True
    )


def build(loaded, prefix=PREFIX, suffix=SUFFIX, chunks=(), *, heal=False, total=400, quantum=16, path="pkg/app.py"):
    budget = PromptBudget(total=total, suffix_max=128, context_share=0.5, line_quantum=quantum)
    return PromptBuilder(loaded.backend, loaded.template, heal=heal).build(
        prefix, suffix, budget, list(chunks), path, "repo"
    )


def test_the_prompt_is_the_familys_reference_tokenization(fam: Family, by_manifest):
    assert build(by_manifest).tokens == reference_prompt(fam, by_manifest)


def test_control_tokens_are_exactly_the_familys_special_ids(fam: Family, by_manifest, vocab):
    prompt = build(by_manifest, PREFIX + f"# {SPELLED}\n    ", f"  # {SPELLED}" + SUFFIX, CHUNKS, total=1500)
    assert prompt.tokens[: len(fam.bos)] == list(fam.bos)
    got = controls(vocab, prompt.tokens[len(fam.bos) :])
    if fam.fim is None:
        assert got == []
        return
    pre, suf, mid = fam.fim
    if fam.repo is None:
        # Context goes inside the prefix section, under path comments: no other control token.
        assert got == [pre, suf, mid]
    else:
        repo, sep = fam.repo
        # <repo_name>, one <file_sep> per context file and one for the current file, then FIM.
        assert got == [repo, sep, sep, sep, pre, suf, mid]
    assert prompt.tokens[-1] == mid
    assert len(prompt.chunks_used) == len(CHUNKS)


def test_text_spelling_a_control_token_stays_text(fam: Family, by_manifest, vocab):
    b, tpl = by_manifest.backend, by_manifest.template
    spelled = " ".join([SPELLED, *(t for t in (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle, tpl.file_sep) if t)])
    assert controls(vocab, b.tokenize(spelled)) == []
    # ... while the same text parsed as markup holds the family's control tokens.
    if fam.fim is not None:
        assert set(fam.fim) <= set(b.tokenize(spelled, special=True))


def test_token_healing_takes_back_the_last_token(fam: Family, by_manifest):
    b = by_manifest.backend
    prefix = PREFIX + "print(tot"
    plain = build(by_manifest, prefix)
    healed = build(by_manifest, prefix, heal=True)
    assert healed.forced_prefix and prefix.endswith(healed.forced_prefix)
    # The prompt is the unhealed one less the prefix's last token(s), nothing else moved.
    n = len(plain.tokens) - len(healed.tokens)
    assert n == 1
    cut = plain.tokens.index(fam.fim[1]) if fam.fim else len(plain.tokens)
    assert healed.tokens == plain.tokens[: cut - n] + plain.tokens[cut:]
    assert b.detokenize(plain.tokens[cut - n : cut]).endswith(healed.forced_prefix)
    # The backend re-spells the text taken back before anything else, on this vocabulary.
    out = b.generate(
        GenerationRequest(prompt=healed.tokens, max_tokens=4, forced_prefix=healed.forced_prefix),
        threading.Event(),
    )
    assert out.text.startswith(healed.forced_prefix)


@pytest.mark.parametrize("total", [48, 96])
def test_the_budget_is_counted_with_the_real_tokenizer(fam: Family, by_manifest, vocab, total: int):
    b = by_manifest.backend
    lines = [f"value_{i} = compute({i}, 'text {i}')  # line {i}\n" for i in range(60)]
    prefix = "".join(lines) + "result = "
    prompt = build(by_manifest, prefix, SUFFIX, total=total, quantum=1)
    assert 0 < prompt.n_tokens <= total
    start = prompt.prefix_start_line
    assert 0 < start < len(lines)  # the file is cut, on a line
    # Every token is accounted for: BOS, the template's control tokens, the prefix window
    # and the suffix as this vocabulary tokenizes them.
    window = b.tokenize("".join(lines[start:]) + "result = ")
    assert prompt.n_prefix_tokens == len(window)
    tpl = PromptBuilder(b, by_manifest.template).template  # as the builder lays the prompt out
    n_controls = len(controls(vocab, prompt.tokens)) - len(fam.bos)
    n_markup = sum(len(b.tokenize(t)) for t in (tpl.prefix_sep, tpl.suffix_sep, tpl.middle_sep) if t)
    n_text = prompt.n_prefix_tokens + prompt.n_suffix_tokens
    assert prompt.n_tokens == len(fam.bos) + n_controls + n_markup + n_text
    # The suffix as the reference tokenizes it (Code Llama: encode_infilling, without
    # SentencePiece's leading space).
    suffix = encode_infilling(b, SUFFIX) if fam.key == "codellama" else b.tokenize(SUFFIX)
    assert prompt.n_suffix_tokens == 0 or prompt.n_suffix_tokens == len(suffix)
    # The model sees exactly the tokens counted.
    out = b.generate(GenerationRequest(prompt=prompt.tokens, max_tokens=1), threading.Event())
    assert out.prompt_tokens == prompt.n_tokens
    assert list(b.llama.input_ids[: prompt.n_tokens]) == prompt.tokens


def test_context_and_prefix_are_one_text_on_sentencepiece(fam: Family, by_manifest):
    """Context goes inside the prefix section (Code Llama) or before the prefix (plain):
    on a SentencePiece vocabulary the section is tokenized as one text, with the one
    leading space SentencePiece gives a text, not one per piece."""
    if by_manifest.backend.info.metadata.get("tokenizer.ggml.model") != "llama":
        pytest.skip("a SentencePiece vocabulary's leading space")
    b = by_manifest.backend
    chunks = [
        ContextChunk(path="pkg/util.py", text="def helper(x):\n    return x\n"),
        ContextChunk(path="pkg/model.py", text="class Model:\n    pass\n"),
    ]
    prompt = build(by_manifest, chunks=chunks, total=1500)
    assert prompt.chunks_used == chunks
    context = "# pkg/util.py\ndef helper(x):\n    return x\n\n# pkg/model.py\nclass Model:\n    pass\n\n"
    section = b.tokenize(context + "# pkg/app.py\n" + PREFIX)
    if fam.fim is None:
        assert prompt.tokens == b.bos_tokens() + section
    else:
        pre, suf, mid = fam.fim
        assert prompt.tokens == b.bos_tokens() + [pre] + section + [suf] + encode_infilling(b, SUFFIX) + [mid]
    # The counts the budget used are the tokens the prompt has.
    n_fim = 3 if fam.fim else 0
    n_text = prompt.n_context_tokens + prompt.n_prefix_tokens + prompt.n_suffix_tokens
    assert prompt.n_tokens == len(b.bos_tokens()) + n_fim + n_text
    # Healing after context: the prefix continues the header, no leading space to keep.
    healed = build(by_manifest, PREFIX + "print(tot", chunks=chunks, total=1500, heal=True)
    assert healed.forced_prefix and "print(tot".endswith(healed.forced_prefix)
