"""Live index updates: the real watchdog observer on a temporary workspace.

Each test waits (up to a generous guard, never asserting on time) until the index shows
the change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lsp_server.context.index import WorkspaceIndex
from lsp_server.context.watcher import IndexUpdater, WorkspaceWatcher

GUARD_S = 15.0


def until(predicate: Callable[[], object]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the index never showed the change")
        time.sleep(0.02)


def defined(index: WorkspaceIndex, name: str) -> list[str]:
    return [os.path.basename(f.path) for f, _ in index.definitions(name)]


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[Path, WorkspaceIndex, IndexUpdater]]:
    (tmp_path / "lib.py").write_text("def original(): ...\n")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    index = WorkspaceIndex([str(tmp_path)])
    index.build()
    updater = IndexUpdater(index)
    updater.start()
    watcher = WorkspaceWatcher(updater)
    assert watcher.start(index.roots), watcher.error
    yield tmp_path, index, updater
    watcher.stop()
    updater.stop()


def test_create_modify_delete(live: tuple[Path, WorkspaceIndex, IndexUpdater]) -> None:
    root, index, _ = live
    assert defined(index, "original") == ["lib.py"]
    (root / "new.py").write_text("def fresh(x): ...\n")
    until(lambda: defined(index, "fresh") == ["new.py"])
    (root / "lib.py").write_text("def changed(): ...\n")
    until(lambda: defined(index, "changed") == ["lib.py"])
    assert defined(index, "original") == []
    (root / "new.py").unlink()
    until(lambda: defined(index, "fresh") == [])
    assert defined(index, "changed") == ["lib.py"]  # untouched files stay


def test_rename_file_and_directory(live: tuple[Path, WorkspaceIndex, IndexUpdater]) -> None:
    root, index, _ = live
    os.rename(root / "lib.py", root / "renamed.py")
    until(lambda: defined(index, "original") == ["renamed.py"])
    (root / "pkg").mkdir()
    (root / "pkg" / "a.py").write_text("def in_pkg(): ...\n")
    until(lambda: defined(index, "in_pkg") == ["a.py"])
    os.rename(root / "pkg", root / "moved")
    until(lambda: [f.rel for f, _ in index.definitions("in_pkg")] == [os.path.join("moved", "a.py")])
    import shutil

    shutil.rmtree(root / "moved")
    until(lambda: defined(index, "in_pkg") == [])


def test_ignored_paths_stay_out(live: tuple[Path, WorkspaceIndex, IndexUpdater]) -> None:
    root, index, updater = live
    (root / "ignored").mkdir()
    (root / "ignored" / "x.py").write_text("def hidden(): ...\n")
    (root / "seen.py").write_text("def visible(): ...\n")
    until(lambda: defined(index, "visible") == ["seen.py"])
    assert updater.wait_idle(GUARD_S)
    assert defined(index, "hidden") == []


def test_client_file_events_without_watchdog(tmp_path: Path) -> None:
    """`workspace/didChangeWatchedFiles` alone keeps the index current."""
    (tmp_path / "a.py").write_text("def one(): ...\n")
    index = WorkspaceIndex([str(tmp_path)])
    index.build()
    updater = IndexUpdater(index)
    updater.start()
    try:
        (tmp_path / "a.py").write_text("def two(): ...\n")
        os.utime(tmp_path / "a.py", ns=(1, 1))
        (tmp_path / "b.py").write_text("def three(): ...\n")
        updater.submit([str(tmp_path / "a.py"), str(tmp_path / "b.py"), str(tmp_path / "a.py")])
        assert updater.wait_idle(GUARD_S)
        assert defined(index, "two") == ["a.py"] and defined(index, "three") == ["b.py"]
        assert defined(index, "one") == []
        (tmp_path / "b.py").unlink()
        updater.submit([str(tmp_path / "b.py")])
        assert updater.wait_idle(GUARD_S)
        assert defined(index, "three") == []
    finally:
        updater.stop()
