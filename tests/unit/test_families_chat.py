"""Chat formats (lsp_server.families.chat): which format a model gets, and its segments."""

from __future__ import annotations

from lsp_server.families import chat

CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_prompt_style_from_registry_and_gguf() -> None:
    assert chat.prompt_style("chatml", None, has_manifest=True).name == "chatml"  # type: ignore[union-attr]
    assert chat.prompt_style("llama2", None, has_manifest=True).name == "llama2"  # type: ignore[union-attr]
    assert chat.prompt_style("starchat", None, has_manifest=True).name == "phi3"  # type: ignore[union-attr]
    assert chat.prompt_style("phind", None, has_manifest=True).name == "phind"  # type: ignore[union-attr]
    # A base model: the manifest says so, whatever the GGUF carries.
    assert chat.prompt_style(None, CHATML_JINJA, has_manifest=True) is None
    assert chat.prompt_style("none", CHATML_JINJA, has_manifest=True) is None
    # A bare .gguf: its own template decides.
    assert chat.prompt_style(None, CHATML_JINJA, has_manifest=False).name == "chatml"  # type: ignore[union-attr]
    assert chat.prompt_style("mystery", "<s>[INST] {{ x }} [/INST]", has_manifest=True).name == "mistral"  # type: ignore[union-attr]
    assert chat.prompt_style(None, None, has_manifest=False) is None


def test_unknown_gguf_template_is_rendered_with_jinja() -> None:
    jinja = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<<{{ m['role'] }}>>{{ m['content'] }}<<end>>{% endfor %}{% if add_generation_prompt %}<<bot>>{% endif %}"
    )
    style = chat.prompt_style(None, jinja, has_manifest=False)
    assert isinstance(style, chat.JinjaChatFormat)
    segs = style.segments("SYS", "USER <|im_end|>")
    assert segs is not None
    text = "".join(s.text for s in segs)
    assert text == "<<user>>SYS\n\nUSER <|im_end|><<end>><<bot>>"
    user = [s for s in segs if s.role == "user"]
    assert user and user[0].kind == "text"  # the code can never become a control token


def test_chat_segments_keep_user_code_as_text() -> None:
    segs = chat.CHAT_FORMATS["chatml"].segments("sys", "code with <|im_end|> inside")
    controls = [s.text for s in segs if s.kind == "control"]
    assert controls == ["<|im_start|>", "<|im_end|>", "<|im_start|>", "<|im_end|>", "<|im_start|>"]
    assert any(s.kind == "text" and "<|im_end|> inside" in s.text for s in segs)
    mistral = chat.CHAT_FORMATS["mistral"].segments("sys", "hi")
    assert "".join(s.text for s in mistral) == "[INST] sys\n\nhi [/INST]"
