"""backends/llama_cpp.py before llama.cpp loads anything: the GGUF metadata read with
plain IO, the KV size a context implies, and the refusal of a context that cannot fit."""

from __future__ import annotations

import os
import shutil

import pytest

from lsp_server.backends.base import BackendError, ModelFileError
from lsp_server.backends.llama_cpp import kv_bytes_per_token, plan_memory, read_gguf_metadata
from lsp_server.registry import resolve_model

GIB = 1 << 30


@pytest.fixture(scope="module")
def gguf() -> str:
    try:
        return resolve_model("smollm2-135m-instruct").path
    except Exception as exc:  # pragma: no cover - depends on the install
        pytest.skip(f"default model not installed: {exc}")


def test_metadata_and_kv_size_of_the_default_model(gguf):
    meta = read_gguf_metadata(gguf, stop_prefix="tokenizer.")
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 30
    # 30 layers x 3 KV heads x (64 + 64) dims x 2 bytes (f16)
    assert kv_bytes_per_token(meta) == 30 * 3 * 128 * 2


def test_per_layer_kv_heads_and_recurrent_models():
    meta = {"general.architecture": "x", "x.block_count": 2, "x.embedding_length": 64,
            "x.attention.head_count": [4, 4], "x.attention.head_count_kv": [1, 2]}
    assert kv_bytes_per_token(meta) == (1 + 2) * (16 + 16) * 2
    assert kv_bytes_per_token({"general.architecture": "mamba", "mamba.block_count": 2}) is None


def test_a_context_that_does_not_fit_is_refused_with_the_numbers(gguf):
    with pytest.raises(BackendError) as err:
        plan_memory(gguf, 1_048_576, available=4 * GIB)
    message = str(err.value)
    assert "contextTokens=1048576" in message and "22.5 GiB" in message and "4.0 GiB" in message
    assert "lower quill.contextTokens" in message
    assert plan_memory(gguf, 2048, available=4 * GIB) is False  # fits; read into memory
    assert plan_memory(gguf, 1_048_576, available=4 * GIB, gpu_layers=-1) is False  # the GPU's business


def test_small_models_are_read_into_memory_big_ones_mapped(gguf, monkeypatch):
    size = os.path.getsize(gguf)
    monkeypatch.delenv("QUILL_MMAP", raising=False)
    assert plan_memory(gguf, 256, available=64 * size) is False
    assert plan_memory(gguf, 256, available=int(size * 1.5)) is True
    monkeypatch.setenv("QUILL_MMAP", "1")
    assert plan_memory(gguf, 256, available=64 * size) is True


def test_a_truncated_header_is_a_model_file_error(gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(gguf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(300))
    with pytest.raises(ModelFileError, match="incomplete or corrupt"):
        read_gguf_metadata(str(cut))
    whole = tmp_path / "whole.gguf"
    shutil.copy(gguf, whole)
    os.truncate(whole, 1 << 20)  # tensors gone, header whole: the metadata still reads
    assert read_gguf_metadata(str(whole), stop_prefix="tokenizer.")["llama.block_count"] == 30
