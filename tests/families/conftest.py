"""Fixtures for the seed families on their real tokenizers.

Each family's vocabulary comes from llama.cpp's vocabulary-only GGUF files (``make vocab``
takes them out of the llama-cpp-python sdist into ``build/vocab``); ``benchmarks/harness.py``
puts it on tiny random weights in the family's architecture, once per session.  The model
is loaded through Quill (``engine.model.load_model``) as a bare ``.gguf`` path and by the
family's manifest.  Without the vocabulary files the tests skip, unless ``make test`` runs
them (it sets ``QUILL_VOCAB_DIR`` and must have fetched the files first: then they fail).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness import VOCAB_ENV, read_vocab, vocab_file, write_tiny_model
from lsp_server.config import Settings
from lsp_server.engine.model import LoadedModel, load_model

from .seed import FAMILY_KEYS, Family, ManifestEnv, family, manifest_on

N_CTX = 512


def require_vocab(name: str) -> Path:
    path = vocab_file(name)
    if not path.is_file():
        if os.environ.get(VOCAB_ENV):
            pytest.fail(f"{path} is missing although {VOCAB_ENV} is set: `make vocab` should have extracted it")
        pytest.skip(f"llama.cpp's vocabulary file {path.name} is not in {path.parent}: run `make vocab`")
    return path


class Built:
    """The tiny model files of the session, by family key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: dict[str, Path] = {}

    def model(self, fam: Family) -> Path:
        if fam.key not in self.paths:
            pytest.importorskip("gguf")
            vocab = read_vocab(require_vocab(fam.vocab))
            if fam.extend is not None:
                vocab = fam.extend(vocab)
            path = self.root / f"tiny-{fam.key}.gguf"
            write_tiny_model(path, vocab, fam.architecture, name=f"tiny {fam.key}")
            self.paths[fam.key] = path
        return self.paths[fam.key]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session", params=FAMILY_KEYS)
def fam(request: pytest.FixtureRequest) -> Family:
    return family(request.param)


def _load(model: str, **kw: object) -> LoadedModel:
    return load_model(Settings(model=model, context_tokens=N_CTX, threads=1, kv_cache_mb=0, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def bare(fam: Family, built: Built) -> Iterator[LoadedModel]:
    """The family's tiny model loaded from its bare ``.gguf`` path (no manifest)."""
    loaded = _load(str(built.model(fam)))
    yield loaded
    loaded.backend.close()


def load_by_manifest(manifest_id: str, model: Path, root: Path) -> LoadedModel:
    """Load ``model`` by the id of a manifest that is ``models/<manifest_id>.toml`` with its
    source pointed at ``model``."""
    models = root / "manifests" / manifest_id
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{manifest_id}.toml").write_text(manifest_on(manifest_id, model), encoding="utf-8")
    with ManifestEnv(models, root / "cache"):
        return _load(manifest_id)


@pytest.fixture(scope="session")
def by_manifest(fam: Family, built: Built) -> Iterator[LoadedModel]:
    """The family's tiny model loaded by the id of its first manifest."""
    loaded = load_by_manifest(fam.manifests[0], built.model(fam), built.root)
    yield loaded
    loaded.backend.close()
