"""Session latency end to end: the real server and model (SmolLM2 through llama.cpp) over
a real LSP client.  What is asserted is behaviour (which prompt answered, how many prompt
tokens were evaluated, that idle-time work gives the answer a full prompt gives); the
timings are printed by benchmarks/session.py, not asserted here."""

from __future__ import annotations

import asyncio
import sys
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from benchmarks.harness import plain
from tests.lsp.test_completion import GUARD_S, end_of, inline, open_doc

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

WARM_TIMEOUT_S = 600  # a full 2,000-token prompt on a busy 2-core machine


def stdlib_case(name: str) -> tuple[str, int, int]:
    """A real file cut after a ``return `` two thirds of the way down: (text, line, col)."""
    lines = (Path(sysconfig.get_paths()["stdlib"]) / name).read_text(encoding="utf-8").split("\n")
    target = len(lines) * 2 // 3
    best = min((i for i, ln in enumerate(lines) if ln.strip().startswith("return ") and len(ln.strip()) > 12),
               key=lambda i: abs(i - target))
    col = lines[best].index("return ") + len("return ")
    lines[best] = lines[best][:col]
    return "\n".join(lines), best, col


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server", "--log-level", "warning"]),
    params=["visual_studio_code"],
    scope="module",
)
async def client(request, lsp_client: LanguageClient, tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        return None

    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
        # No confidence bar: these tests are about when suggestions come, not which are shown.
        initialization_options={"workspaceContext": False, "requestTimeoutS": 600, "minConfidence": 0,
                                "quickMinConfidence": 0},
    )
    refreshes: list[dict[str, Any]] = []

    @lsp_client.feature("quill/refreshInlineCompletion")
    def refresh(params: Any) -> None:
        refreshes.append(plain(params))

    lsp_client.init_result = await lsp_client.initialize_session(params)  # type: ignore[attr-defined]
    lsp_client.root = root  # type: ignore[attr-defined]
    lsp_client.refreshes = refreshes  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict[str, Any]:
    return plain(await asyncio.wait_for(client.protocol.send_request_async("quill/status", {}), GUARD_S))


async def last(client: LanguageClient) -> dict[str, Any]:
    return (await status(client))["session"]["lastCompletion"]


async def wait_ready(client: LanguageClient) -> dict[str, Any]:
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        st = await status(client)
        if st["state"] == "ready":
            return st
        await asyncio.sleep(0.2)
    raise AssertionError(f"model not ready: {st}")


async def wait_warm(client: LanguageClient, uri: str) -> None:
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        st = await status(client)
        if doc_state(st, uri) == "ready":
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{uri} never became warm: {doc_state(st, uri)}")


def doc_state(st: dict[str, Any], uri: str) -> str | None:
    return next((d["state"] for d in st["documents"] if d["uri"] == uri), None)


def configure(client: LanguageClient, **settings: Any) -> None:
    settings = {"minConfidence": 0, "quickMinConfidence": 0, **settings}
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"quill": settings}))


def move_cursor(client: LanguageClient, uri: str, line: int, character: int) -> None:
    client.protocol.notify(
        "quill/didMoveCursor", {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}
    )


async def test_status_reports_the_measured_speed_and_the_kv_cache(client: LanguageClient):
    st = await wait_ready(client)
    session = st["session"]
    assert session["perf"]["promptTokensPerS"] > 0 and session["perf"]["genMsPerToken"] > 0
    assert session["threads"] >= 1
    assert session["affordablePromptTokens"] >= 48
    assert session["kvCache"]["maxBytes"] == 512 * 1024 * 1024


async def test_a_cold_real_file_is_answered_from_a_quick_prompt_and_warmed_to_the_full_one(client: LanguageClient):
    await wait_ready(client)
    configure(client, cacheCompletions=True, workspaceContext=False, requestTimeoutS=600)
    text, line, col = stdlib_case("textwrap.py")
    uri = open_doc(client, text, f"cold_{uuid.uuid4().hex[:6]}.py")
    first = await inline(client, uri, line, col)
    info = await last(client)
    affordable = (await status(client))["session"]["affordablePromptTokens"]
    assert info["promptKind"] == "quick", info
    assert info["evaluatedTokens"] <= affordable * 3 // 2 + 2
    assert first.strip(), "the quick prompt gave no suggestion"
    # Idle time: the full prompt is evaluated, and the suggestion from it computed.
    await wait_warm(client, uri)
    warm = await inline(client, uri, line, col)
    info = await last(client)
    assert info["cached"] and info["promptKind"] == "full", info
    # What idle-time work computed is what the full prompt gives when asked directly,
    # and asking costs no prompt evaluation beyond the last token.
    configure(client, cacheCompletions=False, workspaceContext=False, requestTimeoutS=600)
    direct = await inline(client, uri, line, col)
    info = await last(client)
    assert info["promptKind"] == "full" and not info["cached"]
    assert info["evaluatedTokens"] <= 2, info
    assert info["promptTokens"] > affordable * 4  # it is the long prompt
    assert direct == warm


async def test_going_back_to_a_file_reuses_its_kv_state(client: LanguageClient):
    await wait_ready(client)
    configure(client, cacheCompletions=False, warmup=False, latencyTargetMs=0, workspaceContext=False, requestTimeoutS=600)
    docs = []
    for name in ("shlex.py", "graphlib.py"):
        text, line, col = stdlib_case(name)
        docs.append((open_doc(client, text, f"back_{uuid.uuid4().hex[:6]}.py"), line, col))
    answers = []
    for uri, line, col in docs:
        answers.append(await inline(client, uri, line, col))
        assert (await last(client))["evaluatedTokens"] > 200  # cold: the whole prompt
    uri, line, col = docs[0]
    again = await inline(client, uri, line, col)
    info = await last(client)
    assert info["evaluatedTokens"] <= 2, info  # restored, not evaluated again
    assert again == answers[0]
    st = await status(client)
    other = docs[1][0]
    assert any(other in s["slot"] for s in st["session"]["kvCache"]["slots"])  # the other file's state is kept


async def test_a_reported_cursor_gets_its_suggestion_before_the_request(client: LanguageClient):
    await wait_ready(client)
    configure(client, cacheCompletions=True, warmup=True, latencyTargetMs=1000, workspaceContext=False, requestTimeoutS=600)
    source = "def area(width, height):\n    return "
    uri = open_doc(client, source, f"cursor_{uuid.uuid4().hex[:6]}.py")
    move_cursor(client, uri, *end_of(source))
    await wait_warm(client, uri)
    text = await inline(client, uri, *end_of(source))
    info = await last(client)
    assert info["cached"] and info["speculative"], info
    assert text == info["text"]


async def test_with_the_features_off_every_switch_evaluates_the_whole_prompt(client: LanguageClient):
    await wait_ready(client)
    configure(client, cacheCompletions=False, warmup=False, latencyTargetMs=0, kvCacheMb=0, workspaceContext=False,
              requestTimeoutS=600)
    await asyncio.sleep(0.5)
    await wait_ready(client)  # kvCacheMb reloads the model
    docs = []
    for name in ("shlex.py", "graphlib.py"):
        text, line, col = stdlib_case(name)
        docs.append((open_doc(client, text, f"off_{uuid.uuid4().hex[:6]}.py"), line, col))
    for uri, line, col in docs + docs[:1]:
        await inline(client, uri, line, col)
        info = await last(client)
        assert info["promptKind"] == "full"
        assert info["evaluatedTokens"] > 200, info  # the old behaviour: nothing kept per file
    assert (await status(client))["session"]["kvCache"]["maxBytes"] == 0


def far_name_case() -> tuple[str, int, int]:
    """A module whose cursor needs a name defined far above it: the quick prompt (the lines
    near the cursor) cannot see the definition, the full prompt can."""
    filler = "".join(
        f"\n\ndef helper_{i}(values):\n    \"\"\"Step {i} of the pipeline.\"\"\"\n"
        f"    out = [v * {i + 2} for v in values if v > {i}]\n    return sorted(out)[:{i + 3}]\n"
        for i in range(24)
    )
    text = (
        "import statistics\n\n\ndef quarterly_revenue_projection(sales, months):\n"
        '    """Project the revenue of the next quarter from monthly sales."""\n'
        "    return statistics.fmean(sales[-months:]) * 3\n"
        + filler
        + "\n\ndef report(sales):\n    projected = quarterly_"
    )
    line, col = end_of(text)
    return text, line, col


async def test_the_full_prompts_answer_replaces_a_different_quick_one_on_a_refresh(client: LanguageClient):
    await wait_ready(client)
    # Quick prompts need per-document KV states (kvCacheMb, which an earlier test may have
    # turned off: changing it reloads the model).
    configure(client, cacheCompletions=True, warmup=True, latencyTargetMs=1000, kvCacheMb=512, workspaceContext=False,
              requestTimeoutS=600)
    await asyncio.sleep(0.5)
    await wait_ready(client)
    refreshes: list[dict[str, Any]] = client.refreshes  # type: ignore[attr-defined]
    text, line, col = far_name_case()
    uri = open_doc(client, text, f"refresh_{uuid.uuid4().hex[:6]}.py")
    refreshes.clear()
    quick = await inline(client, uri, line, col)
    assert (await last(client))["promptKind"] == "quick"
    await wait_warm(client, uri)
    await asyncio.sleep(0.5)  # the notification is sent before the state turns ready
    got = [r for r in refreshes if r["textDocument"]["uri"] == uri]
    full = await inline(client, uri, line, col)  # what a client asks on the refresh
    info = await last(client)
    assert info["promptKind"] == "full" and info["cached"], info
    # Told to ask again exactly when the full prompt's answer differs, once, at the cursor.
    assert (full != quick) == bool(got), (quick, full, got)
    if got:
        assert len(got) == 1 and got[0]["position"] == {"line": line, "character": col}
    assert full != quick, "this case is built so that the full prompt knows a name the quick one cannot see"
    st = await status(client)
    assert st["session"]["stats"]["upgrades"] >= 1
