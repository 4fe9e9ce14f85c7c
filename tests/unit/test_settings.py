from lsp_server.config import Settings, parse_settings


def test_defaults_when_nothing_sent():
    settings, problems = parse_settings(None)
    assert settings == Settings()
    assert problems == []


def test_camel_case_keys_from_a_client():
    raw = {
        "model": "/models/x.gguf",
        "backend": "openai",
        "endpoint": "http://127.0.0.1:8080",
        "gpuLayers": -1,
        "contextTokens": 4096,
        "maxTokens": 32,
        "temperature": 0.2,
        "debounceMs": 25,
        "workspaceContext": False,
    }
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings.model == "/models/x.gguf"
    assert settings.backend == "openai"
    assert settings.endpoint == "http://127.0.0.1:8080"
    assert settings.gpu_layers == -1
    assert settings.context_tokens == 4096
    assert settings.max_tokens == 32
    assert settings.temperature == 0.2
    assert settings.debounce_ms == 25
    assert settings.workspace_context is False


def test_section_wrapper_is_accepted():
    settings, problems = parse_settings({"quill": {"maxTokens": 10}})
    assert problems == [] and settings.max_tokens == 10


def test_invalid_values_keep_previous_and_say_why():
    base = Settings(max_tokens=20)
    settings, problems = parse_settings(
        {"maxTokens": "lots", "backend": "gpt5", "temperature": 9, "gpuLayers": 1.5, "endpoint": "ftp://x"}, base
    )
    assert settings.max_tokens == 20
    assert settings.backend == "llama_cpp"
    assert settings.temperature == 0.0
    assert settings.gpu_layers == 0
    assert settings.endpoint is None
    assert len(problems) == 5
    assert any("quill.maxTokens" in p and "keeping 20" in p for p in problems)
    assert any("quill.backend" in p and "llama_cpp, ctransformers, openai" in p for p in problems)


def test_unknown_key_is_reported_not_fatal():
    settings, problems = parse_settings({"modle": "x", "maxTokens": 5})
    assert settings.max_tokens == 5
    assert problems == ["unknown setting quill.modle (ignored)"]


def test_non_object_settings():
    settings, problems = parse_settings(["not", "an", "object"])
    assert settings == Settings()
    assert "must be an object" in problems[0]


def test_booleans_are_not_integers():
    settings, problems = parse_settings({"maxTokens": True, "workspaceContext": 1})
    assert settings.max_tokens == Settings().max_tokens
    assert settings.workspace_context is True
    assert len(problems) == 2


def test_model_settings_key_changes_only_for_model_fields():
    a = Settings()
    b, _ = parse_settings({"maxTokens": 10}, a)
    c, _ = parse_settings({"gpuLayers": 10}, a)
    assert a.model_settings() == b.model_settings()
    assert a.model_settings() != c.model_settings()
