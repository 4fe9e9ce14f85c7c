"""Shared bits of the real-editor tests (Neovim headless, VS Code in code-server).

The real-editor tests (marked `model`) start real editors and the real server with the
real default model, so they are opt-in: `make test-editors` (or QUILL_EDITOR_TESTS=1) runs
them; a plain `pytest` skips them.  The fast checks here (settings in step) always run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("QUILL_EDITOR_ARTIFACTS", REPO / "tests" / "editors" / "artifacts"))

# The file the tests edit: the cursor goes to a new last line, where they type.
SAMPLE = '''import math


def circle_area(radius: float) -> float:
    """Area of a circle of the given radius."""
    return math.pi * radius ** 2


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
'''


def quill_lsp() -> str | None:
    """The server the editors start: the repo's venv, else PATH."""
    venv = REPO / ".venv" / "bin" / "quill-lsp"
    if venv.exists():
        return str(venv)
    return shutil.which("quill-lsp")


def isolated_env(tmp: Path) -> dict[str, str]:
    """HOME and XDG dirs in `tmp`: editors write config, state and logs there, not in ~."""
    env = dict(os.environ)
    for name in ("home", "config", "data", "state", "cache"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(tmp / "home"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_STATE_HOME=str(tmp / "state"),
        XDG_CACHE_HOME=str(tmp / "cache"),
    )
    env.pop("NVIM", None)
    env.pop("VIMINIT", None)
    return env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("QUILL_EDITOR_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="real-editor test: run with `make test-editors` (QUILL_EDITOR_TESTS=1)")
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here) and item.get_closest_marker("model"):
            item.add_marker(skip)
