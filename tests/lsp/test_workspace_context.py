"""Workspace context end to end: the real server subprocess, driven by pytest-lsp.

Indexing at `initialized` with `$/progress`, live updates from the file system and from
`workspace/didChangeWatchedFiles`, multi-root through `workspace/didChangeWorkspaceFolders`,
the `workspaceContext` setting, and a completion that needs another file's definitions
(with the real default model).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.unit.test_context_index import make_workspace

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

GUARD_S = 120  # only against a hung server; no test asserts on time


class Session:
    def __init__(self, client: LanguageClient, workspace: Path) -> None:
        self.client = client
        self.workspace = workspace
        self.registrations: list[types.Registration] = []

    def open(self, uri: str, text: str) -> None:
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
            )
        )

    async def index(self, **params: Any) -> dict[str, Any]:
        result = await self.client.protocol.send_request_async("quill/workspaceIndex", params)
        return _plain(result)

    async def until(self, predicate: Callable[[dict[str, Any]], bool], **params: Any) -> dict[str, Any]:
        async def poll() -> dict[str, Any]:
            while True:
                status = await self.index(**params)
                if predicate(status):
                    return status
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(poll(), GUARD_S)

    async def defined_in(self, name: str) -> list[str]:
        status = await self.index(symbol=name)
        return sorted(os.path.relpath(d["path"], self.workspace.parent) for d in status.get("definitions", []))


def _plain(value: Any) -> Any:
    """pygls hands custom results over as namedtuples; make them dicts and lists."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):  # a namedtuple
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


async def start(
    workspace: Path, options: dict[str, Any] | None = None, caps: str = "visual_studio_code", env: dict[str, str] | None = None
) -> Session:
    client = await ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server"], server_env=env).start()
    assert isinstance(client, LanguageClient)
    session = Session(client, workspace)

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        session.registrations.extend(params.registrations)

    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(caps),
            root_uri=workspace.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name=workspace.name)],
            initialization_options=options or {},
        )
    )
    return session


async def stop(session: Session) -> None:
    await session.client.shutdown_session()
    await session.client.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    workspace = make_workspace(tmp_path_factory.mktemp("ctx"))
    s = await start(workspace)
    await s.until(lambda st: st["state"] == "ready")
    yield s
    await stop(s)


async def test_index_is_built_at_initialized_with_progress(session: Session) -> None:
    status = await session.index()
    assert status["state"] == "ready"
    assert status["files"] == 20  # see test_context_index.test_files_indexed_and_skipped
    assert status["watching"] is True
    reports = [r for rs in session.client.progress_reports.values() for r in rs]
    begins = [r for r in reports if isinstance(r, types.WorkDoneProgressBegin) and "indexing" in (r.message or "")]
    ends = [r for r in reports if isinstance(r, types.WorkDoneProgressEnd) and "indexed" in (r.message or "")]
    assert begins and begins[0].title == "Quill"
    assert ends and ends[0].message.startswith("indexed 20 files")
    # The client offered dynamic registration: the server asked for file events too.
    assert any(r.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES for r in session.registrations)


async def test_definitions_in_several_languages(session: Session) -> None:
    assert await session.defined_in("circle_area") == [
        os.path.join("ws", "c", "include", "geom.h"),
        os.path.join("ws", "pkg", "geometry.py"),
    ]
    assert await session.defined_in("Area") == [os.path.join("ws", "go", "shapes", "shapes.go")]


async def test_file_system_changes_reach_the_index(session: Session) -> None:
    ws = session.workspace
    (ws / "pkg" / "fresh.py").write_text("def brand_new_helper(x: int) -> int:\n    return x\n")
    await session.until(lambda st: bool(st.get("definitions")), symbol="brand_new_helper")
    os.rename(ws / "pkg" / "fresh.py", ws / "pkg" / "renamed.py")
    await session.until(
        lambda st: [d["path"] for d in st.get("definitions", [])] == [str(ws / "pkg" / "renamed.py")],
        symbol="brand_new_helper",
    )
    (ws / "pkg" / "renamed.py").unlink()
    await session.until(lambda st: not st.get("definitions"), symbol="brand_new_helper")


async def test_client_file_events(session: Session) -> None:
    ws = session.workspace
    (ws / "pkg" / "from_client.py").write_text("def told_by_the_client(): ...\n")
    session.client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            changes=[types.FileEvent(uri=(ws / "pkg" / "from_client.py").as_uri(), type=types.FileChangeType.Created)]
        )
    )
    await session.until(lambda st: bool(st.get("definitions")), symbol="told_by_the_client")


async def test_workspace_folders_added_and_removed(session: Session, tmp_path: Path) -> None:
    other = tmp_path / "second_root"
    other.mkdir()
    (other / "extra.py").write_text("def only_in_the_second_root(): ...\n")
    folder = types.WorkspaceFolder(uri=other.as_uri(), name="second_root")
    session.client.workspace_did_change_workspace_folders(
        types.DidChangeWorkspaceFoldersParams(event=types.WorkspaceFoldersChangeEvent(added=[folder], removed=[]))
    )
    status = await session.until(lambda st: bool(st.get("definitions")), symbol="only_in_the_second_root")
    assert str(other) in status["roots"]
    session.client.workspace_did_change_workspace_folders(
        types.DidChangeWorkspaceFoldersParams(event=types.WorkspaceFoldersChangeEvent(added=[], removed=[folder]))
    )
    status = await session.until(lambda st: not st.get("definitions"), symbol="only_in_the_second_root")
    assert str(other) not in status["roots"]


# ------------------------------------------------------- a cross-file completion
PRICING = '''"""Prices and shipping."""

FREE_SHIPPING_THRESHOLD = 50.0


def compute_shipping_cost_for_order(order_id: int, express: bool = False) -> float:
    """Shipping cost of one order, in euros."""
    return 4.5 if not express else 9.0


def apply_discount_code(total: float, code: str) -> float:
    """Total after a discount code."""
    return total * 0.9 if code else total
'''

CHECKOUT = "import shop.pricing as pricing\n\n\ndef order_total(order_id: int, subtotal: float) -> float:\n    shipping = pricing."


async def complete(session: Session, uri: str, text: str, invoked: bool = True) -> str:
    lines = text.split("\n")
    trigger = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    result = await session.client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=len(lines) - 1, character=len(lines[-1])),
            context=types.InlineCompletionContext(trigger_kind=trigger),
        )
    )
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return str(items[0].insert_text) if items else ""


@pytest.mark.model
async def test_completion_uses_a_definition_from_another_file(tmp_path: Path) -> None:
    ws = tmp_path / "shopws"
    (ws / "shop").mkdir(parents=True)
    (ws / "app").mkdir()
    (ws / "shop" / "__init__.py").write_text("")
    (ws / "shop" / "pricing.py").write_text(PRICING)
    (ws / "app" / "checkout.py").write_text(CHECKOUT)
    # One llama.cpp thread and a long request timeout: on a shared, busy CPU, two threads
    # spin-waiting on each other make generation many times slower (no timing is asserted).
    # latencyTargetMs 0: the full prompt from the first request (a cold file's first
    # suggestion otherwise comes from a quick prompt without retrieved context).
    # minConfidence 0: this is about what the prompt holds; which of pricing.py's
    # functions comes first is a guess the bar may hide (tests/lsp/test_completion.py has the bar).
    options = {"cacheCompletions": False, "threads": 1, "requestTimeoutS": 600, "latencyTargetMs": 0, "minConfidence": 0}
    s = await start(ws, options, caps="neovim")
    try:
        await s.until(lambda st: st["state"] == "ready")
        uri = (ws / "app" / "checkout.py").as_uri()
        s.open(uri, CHECKOUT)
        with_context = await complete(s, uri, CHECKOUT)
        # The name exists only in shop/pricing.py: the workspace context put it in the prompt.
        assert with_context.startswith("compute_shipping_cost_for_order(")

        s.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"quill": {"workspaceContext": False, "cacheCompletions": False}}
            )
        )
        await s.until(lambda st: st["state"] == "off")
        without = await complete(s, uri, CHECKOUT)
        assert "compute_shipping_cost_for_order" not in without

        s.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"quill": {"workspaceContext": True, "cacheCompletions": False}}
            )
        )
        await s.until(lambda st: st["state"] == "ready" and st["files"] == 3)
        assert (await complete(s, uri, CHECKOUT)).startswith("compute_shipping_cost_for_order(")
    finally:
        await stop(s)


def _shop_with_long_checkout(tmp_path: Path) -> tuple[Path, str]:
    """A workspace with shop/pricing.py, and the text of a long app/checkout.py (30 filler
    functions above CHECKOUT's body) that uses it, not written: the caller decides."""
    ws = tmp_path / "shopws"
    (ws / "shop").mkdir(parents=True)
    (ws / "app").mkdir()
    (ws / "shop" / "__init__.py").write_text("")
    (ws / "shop" / "pricing.py").write_text(PRICING)
    filler = "".join(
        f'\n\ndef step_{i}(values):\n    """Step {i} of the pipeline."""\n'
        f"    out = [v * {i + 2} for v in values if v > {i}]\n    return sorted(out)[:{i + 3}]\n"
        for i in range(30)
    )
    head, body = CHECKOUT.split("\n", 1)
    return ws, head + "\n" + filler + body


@pytest.mark.model
async def test_a_cold_files_first_answer_is_redone_once_its_context_is_evaluated(tmp_path: Path) -> None:
    """Asked at once in a long file just opened, the cursor region alone answers (it cannot
    know pricing.py's names); idle time then evaluates the retrieved context first and
    answers again from it and the cursor region, before the whole prompt is evaluated, and
    tells the client to ask again when that answer differs."""
    ws, text = _shop_with_long_checkout(tmp_path)
    (ws / "app" / "checkout.py").write_text(text)
    options = {"cacheCompletions": True, "threads": 1, "requestTimeoutS": 600, "minConfidence": 0,
               "quickMinConfidence": 0, "contextTokens": 1024}
    s = await start(ws, options, caps="neovim")
    refreshes: list[dict[str, Any]] = []

    @s.client.feature("quill/refreshInlineCompletion")
    def on_refresh(params: Any) -> None:
        refreshes.append(_plain(params))

    async def status() -> dict[str, Any]:
        return _plain(await asyncio.wait_for(s.client.protocol.send_request_async("quill/status", {}), GUARD_S))

    try:
        await s.until(lambda st: st["state"] == "ready" and st["files"] == 3)
        uri = (ws / "app" / "checkout.py").as_uri()
        s.open(uri, text)
        quick = await complete(s, uri, text, invoked=False)  # as an editor asks while the user types
        first = (await status())["session"]["lastCompletion"]
        assert first["promptKind"] == "quick" and first["contextChunks"] == 0, first
        # Wait at the cursor for the server's refresh, or for the whole prompt.
        state = "warming"
        for _ in range(int(GUARD_S * 10)):
            st = await status()
            state = next((d["state"] for d in st["documents"] if d["uri"] == uri), "")
            if refreshes or state == "ready":
                break
            await asyncio.sleep(0.1)
        again = await complete(s, uri, text, invoked=False)
        info = (await status())["session"]["lastCompletion"]
        assert info["cached"] and info["promptKind"] in ("context", "full"), info
        if refreshes and state != "ready":  # told before the whole prompt was evaluated
            assert info["promptKind"] == "context", info
        # pricing.py's name (the default model may change its first word) came with the context.
        assert "shipping_cost_for_order" in again and "shipping_cost_for_order" not in quick, (quick, again)
    finally:
        await stop(s)


@pytest.mark.model
async def test_the_workspaces_likely_context_is_ready_before_a_file_is_opened(tmp_path: Path) -> None:
    """Once the index is built, idle time evaluates what most files import (here pricing.py's
    outline: two other modules import it); the first request in a long file just opened
    then reads it at once, shifted into place from that state instead of evaluated (the
    same file's first answer without it comes from the cursor region alone: the test above)."""
    ws, text = _shop_with_long_checkout(tmp_path)
    for name in ("cart", "invoice"):
        (ws / "app" / f"{name}.py").write_text(
            f"import shop.pricing as pricing\n\n\ndef {name}_discount(total):\n"
            "    return pricing.apply_discount_code(total, 'SPRING')\n"
        )
    options = {"cacheCompletions": False, "threads": 1, "requestTimeoutS": 600, "minConfidence": 0,
               "quickMinConfidence": 0, "contextTokens": 1024}
    s = await start(ws, options, caps="neovim")

    async def status() -> dict[str, Any]:
        return _plain(await asyncio.wait_for(s.client.protocol.send_request_async("quill/status", {}), GUARD_S))

    try:
        await s.until(lambda st: st["state"] == "ready" and st["files"] == 4)
        for _ in range(int(GUARD_S * 10)):
            warm = (await status())["session"]["workspace"]
            if warm["state"] == "ready" and not warm["due"]:
                break
            await asyncio.sleep(0.1)
        assert warm["state"] == "ready" and warm["chunks"] >= 1 and warm["tokens"] > 0, warm
        # The file is written (and indexed) only now: nothing of it was evaluated before.
        (ws / "app" / "checkout.py").write_text(text)
        uri = (ws / "app" / "checkout.py").as_uri()
        s.open(uri, text)
        answer = await complete(s, uri, text, invoked=False)
        st = await status()
        info = st["session"]["lastCompletion"]
        assert info["promptKind"] in ("quick", "context") and info["contextChunks"] >= 1, info
        # The outline's tokens came from the workspace's state (at the same place: kept, not shifted).
        assert info["reusedTokens"] >= info["contextTokens"] // 2, info
        assert st["session"]["seeded"] >= 1
        assert "shipping_cost_for_order" in answer, answer
    finally:
        await stop(s)



def pinned_speed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, threads: int, prompt_tok_s: float = 276.0, gen_ms_per_token: float = 11.6
) -> dict[str, str]:
    """The server's environment with its speed figures for the default model given, not
    measured: how many tokens a quick prompt may hold follows from them, and measured
    figures move with the machine and its load (62 tokens on a busy one, too few here)."""
    from lsp_server.config import Settings
    from lsp_server.engine.session import Perf, perf_key, save_perf
    from lsp_server.registry import resolve_model

    settings = Settings()
    key = perf_key(settings.backend, str(resolve_model(settings.model).path), settings.gpu_layers, threads)
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    save_perf(key, Perf(prompt_tok_s, gen_ms_per_token, threads, time.time(), candidates="pinned by the test", batch_threads=threads))
    return dict(os.environ)


@pytest.mark.model
async def test_a_quick_prompt_asked_at_once_reads_how_the_file_uses_its_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked at once in a long file just opened, where a function far above the cursor
    calls pricing.py's function: the quick prompt carries that line (the full prompt's
    usage lines) before the cursor region, and the first answer calls the function too
    (the cursor region alone cannot know the name: the test above)."""
    ws, text = _shop_with_long_checkout(tmp_path)
    head, rest = text.split("\n", 1)
    usage = (
        "\n\ndef express_quote(order_id: int) -> float:\n"
        "    return pricing.compute_shipping_cost_for_order(order_id, express=True)\n"
    )
    body = "\n\ndef order_total(order_id: int, subtotal: float) -> float:\n    shipping = pricing."
    text = head + usage + rest.rsplit("\n\ndef order_total", 1)[0] + body
    (ws / "app" / "checkout.py").write_text(text)
    options = {"cacheCompletions": False, "threads": 1, "requestTimeoutS": 600, "minConfidence": 0,
               "quickMinConfidence": 0, "contextTokens": 1024, "workspaceWarmTokens": 0, "latencyTargetMs": 1000}
    s = await start(ws, options, caps="neovim", env=pinned_speed(monkeypatch, tmp_path, threads=1))
    try:
        await s.until(lambda st: st["state"] == "ready" and st["files"] == 3)
        uri = (ws / "app" / "checkout.py").as_uri()
        s.open(uri, text)
        answer = await complete(s, uri, text, invoked=False)
        st = _plain(await asyncio.wait_for(s.client.protocol.send_request_async("quill/status", {}), GUARD_S))
        info = st["session"]["lastCompletion"]
        assert st["session"]["perf"]["promptTokensPerS"] == 276.0, st["session"]["perf"]  # the pinned figures
        assert info["promptKind"] == "quick" and info["contextChunks"] >= 1, info
        assert info["reusedTokens"] == 0, info  # nothing of the file was evaluated before
        assert "compute_shipping_cost_for_order" in answer, answer
    finally:
        await stop(s)
