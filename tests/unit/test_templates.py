"""Each family's prompt layout, token by token (control tokens are single tokens).

The expected layouts are the published ones (model cards, papers, reference code; see
``templates.py``).  ``render`` spells a prompt as text with control tokens in ⟦⟧ so a
failure shows where the layout differs.
"""

import pytest

from lsp_server.engine.prompt import PromptBudget, PromptBuilder
from lsp_server.families.completion import (
    TEMPLATES,
    ContextChunk,
    comment_for,
    get_template,
    template_from_fim_tokens,
)

from .fakes import CharTokenizer

CHUNKS = [
    ContextChunk(path="pkg/util.py", text="def helper(x): ..."),
    ContextChunk(path="pkg/util.py", text="LIMIT = 3"),
    ContextChunk(path="pkg/model.py", text="class Model: ..."),
]


def build(name, prefix="x = ", suffix="\ny = 2", chunks=(), path="", repo="", heal=False, total=4000):
    tpl = get_template(name)
    specials = [t for t in (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle, tpl.file_sep, tpl.repo_name_token) if t]
    tok = CharTokenizer(specials)
    prompt = PromptBuilder(tok, tpl, heal=heal).build(
        prefix, suffix, PromptBudget(total=total, suffix_max=64, context_share=0.5), list(chunks), path, repo
    )
    return tok, prompt


def render(tok, tokens):
    out = []
    for t in tokens[1:]:  # BOS
        out.append(f"⟦{tok.rev[t]}⟧" if t in tok.rev else chr(t))
    return "".join(out)


# ----------------------------------------------------------- single file (FIM)
@pytest.mark.parametrize(
    "name, expected",
    [
        ("plain", "x = "),
        ("codellama", "⟦<PRE>⟧ x = ⟦<SUF>⟧\ny = 2⟦<MID>⟧"),
        ("starcoder", "⟦<fim_prefix>⟧x = ⟦<fim_suffix>⟧\ny = 2⟦<fim_middle>⟧"),
        ("wizardcoder", "⟦<fim_prefix>⟧x = ⟦<fim_suffix>⟧\ny = 2⟦<fim_middle>⟧"),
        ("starcoder2", "⟦<fim_prefix>⟧x = ⟦<fim_suffix>⟧\ny = 2⟦<fim_middle>⟧"),
        ("deepseek", "⟦<｜fim▁begin｜>⟧x = ⟦<｜fim▁hole｜>⟧\ny = 2⟦<｜fim▁end｜>⟧"),
        ("qwen25coder", "⟦<|fim_prefix|>⟧x = ⟦<|fim_suffix|>⟧\ny = 2⟦<|fim_middle|>⟧"),
        ("codegemma", "⟦<|fim_prefix|>⟧x = ⟦<|fim_suffix|>⟧\ny = 2⟦<|fim_middle|>⟧"),
        ("codestral", "⟦[SUFFIX]⟧\ny = 2⟦[PREFIX]⟧x = "),
    ],
)
def test_single_file_layout(name, expected):
    tok, prompt = build(name)
    assert render(tok, prompt.tokens) == expected
    assert prompt.tokens[0] == 1  # BOS from the tokenizer, once


# ------------------------------------------------------- with cross-file context
@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "plain",
            "# pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n\n# pkg/model.py\nclass Model: ...\n\n# app/main.py\nx = ",
        ),
        (
            # Context inside the prefix section, after <PRE> and its SentencePiece space.
            "codellama",
            "⟦<PRE>⟧ # pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n\n# pkg/model.py\nclass Model: ...\n\n"
            "# app/main.py\nx = ⟦<SUF>⟧\ny = 2⟦<MID>⟧",
        ),
        (
            "starcoder",
            "⟦<fim_prefix>⟧# pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n\n# pkg/model.py\nclass Model: ...\n\n"
            "# app/main.py\nx = ⟦<fim_suffix>⟧\ny = 2⟦<fim_middle>⟧",
        ),
        (
            # StarCoder2 paper: <repo_name>name<file_sep>path\ncode<file_sep><fim_prefix>path\npre<fim_suffix>...
            "starcoder2",
            "⟦<repo_name>⟧demo⟦<file_sep>⟧pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n"
            "⟦<file_sep>⟧pkg/model.py\nclass Model: ...\n"
            "⟦<file_sep>⟧⟦<fim_prefix>⟧app/main.py\nx = ⟦<fim_suffix>⟧\ny = 2⟦<fim_middle>⟧",
        ),
        (
            # DeepSeek-Coder README: files introduced by "#path" comments, inside the prefix.
            "deepseek",
            "⟦<｜fim▁begin｜>⟧#pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n\n#pkg/model.py\nclass Model: ...\n\n"
            "#app/main.py\nx = ⟦<｜fim▁hole｜>⟧\ny = 2⟦<｜fim▁end｜>⟧",
        ),
        (
            # Qwen2.5-Coder report: <|repo_name|>name\n<|file_sep|>path\ncontent\n...<|file_sep|>path\n<|fim_prefix|>
            "qwen25coder",
            "⟦<|repo_name|>⟧demo\n⟦<|file_sep|>⟧pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n"
            "⟦<|file_sep|>⟧pkg/model.py\nclass Model: ...\n"
            "⟦<|file_sep|>⟧app/main.py\n⟦<|fim_prefix|>⟧x = ⟦<|fim_suffix|>⟧\ny = 2⟦<|fim_middle|>⟧",
        ),
        (
            "codegemma",
            "⟦<|file_separator|>⟧pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n"
            "⟦<|file_separator|>⟧pkg/model.py\nclass Model: ...\n"
            "⟦<|file_separator|>⟧app/main.py\n⟦<|fim_prefix|>⟧x = ⟦<|fim_suffix|>⟧\ny = 2⟦<|fim_middle|>⟧",
        ),
        (
            "codestral",
            "⟦[SUFFIX]⟧\ny = 2⟦[PREFIX]⟧# pkg/util.py\ndef helper(x): ...\n\nLIMIT = 3\n\n# pkg/model.py\n"
            "class Model: ...\n\n# app/main.py\nx = ",
        ),
    ],
)
def test_cross_file_layout(name, expected):
    tok, prompt = build(name, chunks=CHUNKS, path="app/main.py", repo="demo")
    assert render(tok, prompt.tokens) == expected
    assert prompt.chunks_used == CHUNKS
    # Context and header tokens are counted as context.
    assert prompt.n_context_tokens > 0


def test_path_comment_follows_the_language():
    chunks = [ContextChunk(path="web/util.ts", text="export function f(): number;")]
    tok, prompt = build("starcoder", chunks=chunks, path="web/app.ts")
    text = render(tok, prompt.tokens)
    assert text.startswith("⟦<fim_prefix>⟧// web/util.ts\nexport function f(): number;\n\n// web/app.ts\n")
    assert comment_for("a.lua") == ("--", "")
    assert comment_for("x.html") == ("<!--", " -->")
    assert comment_for("Makefile") == ("#", "")


def test_no_header_without_context_or_path():
    tok, prompt = build("qwen25coder", path="app/main.py")
    assert render(tok, prompt.tokens).startswith("⟦<|fim_prefix|>⟧")
    tok, prompt = build("plain", chunks=CHUNKS[:1], path="")
    assert render(tok, prompt.tokens) == "# pkg/util.py\ndef helper(x): ...\n\nx = "


def test_user_text_never_becomes_a_control_token():
    tok, prompt = build(
        "qwen25coder",
        prefix="s = '<|fim_middle|>'",
        suffix="",
        chunks=[ContextChunk(path="a.py", text="X = '<|file_sep|>'")],
        path="b.py",
        repo="r",
    )
    specials = [t for t in prompt.tokens if t in tok.rev]
    assert [tok.rev[t] for t in specials] == [
        "<|repo_name|>",
        "<|file_sep|>",
        "<|file_sep|>",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
    ]


def test_every_template_has_stop_tokens_for_its_control_tokens():
    for name, tpl in TEMPLATES.items():
        if tpl.is_fim:
            assert tpl.stop, name
        if tpl.file_sep:
            assert tpl.file_sep in tpl.stop or name in ("qwen25coder", "codeqwen"), name


def test_codellama_vocabulary_spelling():
    # CodeLlama GGUF vocabularies spell the FIM tokens with SentencePiece's "▁".
    tpl = template_from_fim_tokens("▁<PRE>", "▁<SUF>", "▁<MID>", ("▁<EOT>",))
    assert tpl.name == "codellama"
    assert (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle) == ("▁<PRE>", "▁<SUF>", "▁<MID>")
    assert tpl.prefix_sep == " "
    assert template_from_fim_tokens("<fim_prefix>", "<fim_suffix>", "<fim_middle>", ()).name == "starcoder"
    assert template_from_fim_tokens(None, None, None, ()).name == "plain"
    custom = template_from_fim_tokens("<A>", "<B>", "<C>", ("<E>",))
    assert (custom.name, custom.stop) == ("gguf-fim", ("<E>",))


def test_manifest_template_names_stay():
    for name in ("plain", "codellama", "starcoder", "starcoder2", "deepseek", "qwen25coder", "codegemma", "codestral"):
        assert get_template(name).name == name
    with pytest.raises(KeyError, match="unknown prompt template"):
        get_template("nope")
