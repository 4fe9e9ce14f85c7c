"""The explain/refactor prompts (code actions) of each seed family, on its real vocabulary:
the family's chat format is picked (the manifest's name for it, else the GGUF's own
template), its markup's special tokens are the vocabulary's single ids, code that spells
them stays text, and the prompt is the chat prompt's text tokenized as a whole."""

from __future__ import annotations

import threading

import pytest

from lsp_server.backends.decoding import GgufVocab
from lsp_server.engine.actions.job import run_action
from lsp_server.engine.actions.prompts import SYSTEM_PROMPT, ActionRequest, plan_prompt
from lsp_server.engine.actions.spec import ActionKind
from lsp_server.families.chat import JinjaChatFormat, prompt_style

from .conftest import Built, load_by_manifest
from .seed import FAMILIES, Family

# Each seed manifest's chat format (by the model's card; None: a base model, plain prompt).
CHAT_STYLE = {
    "codellama-7b-instruct": "llama2",
    "codellama-7b": "llama2",
    "phind-codellama-34b-v2": "phind",
    "codellama-34b-instruct": "llama2",
    "deepseek-coder-6.7b-base": "deepseek",
    "deepseek-coder-1.3b-base": "deepseek",
    "starcoder-15b": None,  # a base model (StarChat's markup is not in StarCoder's vocabulary)
    "wizardcoder-15b": "alpaca",
    "starcoder2-3b": None,
    "starcoder2-7b": None,
    "qwen2.5-coder-0.5b": "chatml",
    "qwen2.5-coder-7b": "chatml",
}
CODE = 'def greet(name):\n    return "hi " + name\n'
# Code that spells chat markup: it must stay text.
SPELLED = 'def greet(name):\n    # <|im_end|> <|im_start|>assistant [/INST] </s> <|endoftext|>\n    return "hi"\n'
CASES = [(f.key, m) for f in FAMILIES for m in f.manifests]


@pytest.fixture(scope="module")
def manifest_models(built: Built):
    loaded: dict[str, object] = {}
    yield loaded
    for model in loaded.values():
        model.backend.close()  # type: ignore[attr-defined]


def _model(manifest_models, built: Built, key: str, manifest_id: str):
    if manifest_id not in manifest_models:
        fam = next(f for f in FAMILIES if f.key == key)
        manifest_models[manifest_id] = load_by_manifest(manifest_id, built.model(fam), built.root)
    return manifest_models[manifest_id]


def style_of(loaded):
    m = loaded.manifest
    return prompt_style(m.chat_template if m else None, loaded.backend.info.chat_template, has_manifest=m is not None)


def check_prompt(loaded, vocab: GgufVocab, kind: ActionKind) -> None:
    b = loaded.backend
    style = style_of(loaded)
    n_bos = len(b.bos_tokens())
    # The markup's special tokens are single ids of this vocabulary, each where the markup
    # has it; the look-alikes in the code are not.
    planned = plan_prompt(b, b.info.n_ctx, ActionRequest(kind, SPELLED, "python"), style)
    markup = [seg.text for seg in planned.prompt.segments if seg.kind == "control"]
    ids = {t: b.tokenize(t, special=True) for t in set(markup)}
    expected = [ids[t][0] for t in markup if len(ids[t]) == 1 and vocab.is_control(ids[t][0])]
    assert [t for t in planned.tokens[n_bos:] if vocab.is_control(t)] == expected
    if style is not None and "<|im_start|>" in markup:
        assert len(expected) == len(markup)  # ChatML on Qwen's vocabulary: all are tokens
    # The prompt is the chat prompt's text tokenized as a whole (special tokens parsed:
    # here only the markup spells any).
    planned = plan_prompt(b, b.info.n_ctx, ActionRequest(kind, CODE, "python"), style)
    text = "".join(seg.text for seg in planned.prompt.segments)
    if kind is not ActionKind.EXPLAIN:
        assert text.endswith("```python\n")  # the answer starts inside a code fence
    assert planned.tokens == b.bos_tokens() + b.tokenize(text, special=True)


@pytest.mark.parametrize("key, manifest_id", CASES)
@pytest.mark.parametrize("kind", [ActionKind.EXPLAIN, ActionKind.REFACTOR])
def test_the_action_prompt_uses_the_familys_chat_format(key, manifest_id, kind, manifest_models, built):
    loaded = _model(manifest_models, built, key, manifest_id)
    style = style_of(loaded)
    assert (style.name if style is not None else None) == CHAT_STYLE[manifest_id]
    vocab = GgufVocab(loaded.backend.info.path)
    try:
        check_prompt(loaded, vocab, kind)
    finally:
        vocab.close()


def test_without_a_manifest_the_gguf_template_decides(fam: Family, bare):
    style = style_of(bare)
    # Of these vocabulary files only Qwen's carries a chat template (ChatML).
    assert (style.name if style is not None else None) == ("chatml" if fam.vocab == "qwen2" else None)


def test_chatml_markup_is_qwens_own_template(manifest_models, built: Built):
    """Quill's ChatML is what the Jinja template in Qwen's vocabulary file renders."""
    loaded = _model(manifest_models, built, "qwen2.5-coder", "qwen2.5-coder-0.5b")
    jinja = loaded.backend.info.chat_template
    assert jinja and "<|im_start|>" in jinja
    theirs = JinjaChatFormat(jinja).segments(SYSTEM_PROMPT, "Explain this.")
    ours = style_of(loaded).segments(SYSTEM_PROMPT, "Explain this.")
    assert theirs is not None
    assert "".join(seg.text for seg in theirs) == "".join(seg.text for seg in ours)


@pytest.mark.parametrize("key", [f.key for f in FAMILIES])
def test_an_action_runs_through_the_real_vocabulary(key: str, manifest_models, built: Built):
    fam = next(f for f in FAMILIES if f.key == key)
    loaded = _model(manifest_models, built, key, fam.manifests[0])
    result = run_action(loaded, ActionRequest(ActionKind.EXPLAIN, CODE, "python"), threading.Event())
    assert result.style == (CHAT_STYLE[fam.manifests[0]] or "plain")
    assert result.prompt_tokens > 0 and result.stop_reason in ("eos", "stop", "length", "condition")
