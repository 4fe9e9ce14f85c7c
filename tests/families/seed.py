"""The seed families, each on its real tokenizer: which of llama.cpp's vocabulary files it
uses, in which architecture, under which manifest, and the token ids its model card and
tokenizer publish (the expectations the tests check Quill against)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from benchmarks.harness import REPO, RealVocab, codellama_vocab, qwen25_vocab


@dataclass(frozen=True)
class Family:
    key: str
    vocab: str  # llama.cpp's models/ggml-vocab-NAME.gguf
    architecture: str  # of the tiny model written with that vocabulary
    manifests: tuple[str, ...]  # models/*.toml of the family (the first one loads the model)
    template: str  # the completion template its manifests name
    bare_template: str  # the template Quill should pick from the .gguf alone
    fim: tuple[int, int, int] | None  # prefix, suffix, middle ids
    repo: tuple[int, int] | None = None  # repository-name and file-separator ids
    bos: tuple[int, ...] = ()  # what starts every prompt
    ends: tuple[int, ...] = ()  # the published end-of-text ids
    extend: Callable[[RealVocab], RealVocab] | None = None
    note: str = ""


FAMILIES = (
    # Code Llama 7B/13B: Llama 2's SentencePiece vocabulary grown to 32016 with the infilling
    # tokens at 32007-32010.
    Family(
        "codellama",
        "llama-spm",
        "llama",
        ("codellama-7b-instruct", "codellama-7b"),
        "codellama",
        "codellama",
        fim=(32007, 32008, 32009),
        bos=(1,),
        ends=(32010, 2),
        extend=codellama_vocab,
    ),
    # Code Llama 34B and its fine-tunes (Phind-CodeLlama-34B-v2): Llama 2's vocabulary as
    # it is (34B was not trained to infill), plain prompts.
    Family(
        "llama2-spm",
        "llama-spm",
        "llama",
        ("phind-codellama-34b-v2", "codellama-34b-instruct"),
        "plain",
        "plain",
        fim=None,
        bos=(1,),
        ends=(2,),
    ),
    # DeepSeek-Coder 6.7B base's tokenizer (llama.cpp's deepseek-coder file), llama arch.
    Family(
        "deepseek-coder",
        "deepseek-coder",
        "llama",
        ("deepseek-coder-6.7b-base", "deepseek-coder-1.3b-base"),
        "deepseek",
        "deepseek",
        fim=(32016, 32015, 32017),
        bos=(32013,),
        ends=(32014, 32021),
    ),
    # StarCoder 15B / WizardCoder 15B layout on GPT-BigCode (llama.cpp's "starcoder" arch).
    # llama.cpp's starcoder vocabulary is StarCoder2's (bigcode/starcoder2-3b): its ids
    # 0-4 (<|endoftext|>, <fim_prefix>, <fim_middle>, <fim_suffix>, <fim_pad>) are StarCoder
    # 1's too, the special tokens after them and the BPE merges are not.
    Family(
        "starcoder",
        "starcoder",
        "starcoder",
        ("starcoder-15b", "wizardcoder-15b"),
        "starcoder",
        "starcoder",
        fim=(1, 3, 2),
        ends=(0,),
        note="StarCoder 15B / WizardCoder 15B ship as GGML files for ctransformers; "
        "their manifests are loaded here with a GGUF file of the family's architecture",
    ),
    Family(
        "starcoder2",
        "starcoder",
        "starcoder2",
        ("starcoder2-3b", "starcoder2-7b"),
        "starcoder2",
        "starcoder2",
        fim=(1, 3, 2),
        repo=(5, 6),
        ends=(0,),
    ),
    # Qwen2.5-Coder: Qwen1.5's vocabulary (llama.cpp's qwen2 file) with Qwen2.5's FIM and
    # repository tokens at their published ids.
    Family(
        "qwen2.5-coder",
        "qwen2",
        "qwen2",
        ("qwen2.5-coder-0.5b", "qwen2.5-coder-7b"),
        "qwen25coder",
        "qwen25coder",
        fim=(151659, 151661, 151660),
        repo=(151663, 151664),
        ends=(151643,),
        extend=qwen25_vocab,
    ),
)
FAMILY_KEYS = tuple(f.key for f in FAMILIES)


def family(key: str) -> Family:
    return next(f for f in FAMILIES if f.key == key)


# ------------------------------------------------------------- manifests on a tiny file
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_on(manifest_id: str, model: Path) -> str:
    """The TOML of ``models/<manifest_id>.toml`` with its source pointed at ``model``: the
    family's data (template, stops, chat format, context length) as shipped, the file a
    tiny one.  A GGML manifest (ctransformers) becomes a GGUF one for llama.cpp."""
    data: dict[str, Any] = tomllib.loads((REPO / "models" / f"{manifest_id}.toml").read_text(encoding="utf-8"))
    data["source"] = {"type": "file", "file": str(model), "sha256": sha256(model)}
    if data.get("format") == "ggml":
        data.update(format="gguf", backend="llama_cpp")
        data.pop("model_type", None)
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class ManifestEnv:
    """``QUILL_MODELS_DIR`` / ``QUILL_CACHE_DIR`` set to folders of their own while a model
    loads by manifest id (the registry reads them then), restored after."""

    def __init__(self, models: Path, cache: Path) -> None:
        self.values = {"QUILL_MODELS_DIR": str(models), "QUILL_CACHE_DIR": str(cache)}
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> ManifestEnv:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
