"""From the demo model to a code model over LSP: the real server (SmolLM2 through llama.cpp)
offers the code model that fits (once per machine), downloads it from a Hugging Face
look-alike on 127.0.0.1 with ``$/progress``, and switches to it on ``didChangeConfiguration``
without a restart; cancelled, offline and unreachable downloads end with a clear error and
the manual steps, never a hang.  The world: tests/offer_world.py."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants as hf_constants
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from benchmarks.harness import plain
from tests.fake_hub import sha
from tests.offer_world import HUB_FILE, offer_world

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="function")]

GUARD_S = 120.0


@asynccontextmanager
async def quill(env: dict[str, str], root: Path, **options: Any) -> AsyncIterator[LanguageClient]:
    """The real server as the editors start it, with ``env``."""
    config = ClientServerConfig(
        server_command=[sys.executable, "-m", "lsp_server", "--log-level", "info"], server_env=env
    )
    client = await config.start()
    states: list[str] = []

    @client.feature("quill/modelState")
    def model_state(params: Any) -> None:
        states.append(plain(params)["state"])

    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual_studio_code"),
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
            initialization_options={"workspaceContext": False, **options},
        )
    )
    client.states = states  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.shutdown_session()


async def request(client: LanguageClient, method: str, params: Any, timeout: float = GUARD_S) -> Any:
    return plain(await asyncio.wait_for(client.protocol.send_request_async(method, params), timeout))


async def wait_model(client: LanguageClient, model: str) -> dict[str, Any]:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        st = await request(client, "quill/status", {})
        if st["state"] == "ready" and st["model"] == model:
            return st
        if st["state"] == "error":
            raise AssertionError(f"model failed: {st}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"{model} not ready: {st}")


def kinds(client: LanguageClient, token: str) -> list[dict[str, Any]]:
    convert = client.protocol._converter
    return [convert.unstructure(v) for v in client.progress_reports.get(token, [])]


async def test_offer_download_and_switch_without_a_restart(tmp_path: Path) -> None:
    with offer_world(tmp_path, throttle_s=1.5) as world:
        async with quill(world.env, tmp_path) as client:
            await wait_model(client, "smollm2-135m-instruct")
            offer = await request(client, "quill/modelOffer", {})
            assert offer["model"] == world.model_id and offer["name"] == world.model_name
            assert not offer["offline"] and not offer["installed"]
            assert world.model_name in offer["message"] and "demo model" in offer["message"]
            assert offer["settings"] == {"model": world.model_id}
            assert await request(client, "quill/modelOffer", {}) is None  # said once
            assert world.hub.requests == []  # an offer downloads nothing

            client.progress_reports["pull-1"] = []  # a token of the client's (no create request)
            result = await request(client, "quill/pullModel", {"model": world.model_id, "workDoneToken": "pull-1"})
            assert Path(result["path"]) == world.pulled
            assert sha(world.pulled.read_bytes()) == world.hub.etag
            steps = kinds(client, "pull-1")
            assert steps[0]["kind"] == "begin" and world.model_name in steps[0]["title"] and steps[0]["cancellable"]
            reports = [s for s in steps if s["kind"] == "report" and s.get("percentage") is not None]
            assert reports and reports[-1]["percentage"] == 100 and " of " in reports[-1]["message"]
            assert len({r["percentage"] for r in reports}) >= 2  # it moved while the bytes came
            assert steps[-1]["kind"] == "end"
            # The file and nothing else: huggingface_hub's telemetry (its /api/agent-harnesses
            # registry, its User-Agent probes) is off.
            assert {(m, p.rsplit("/", 1)[-1]) for m, p, _ in world.hub.requests} == {("HEAD", HUB_FILE), ("GET", HUB_FILE)}

            # The client applies the offer's settings; the server reloads, no restart.
            client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(settings={"quill": {"workspaceContext": False, **offer["settings"]}})
            )
            st = await request(client, "quill/status", {})  # at once: never the new id with the old model ready
            assert st["model"] == world.model_id and (st["state"] == "loading" or "SmolLM2" not in st["detail"]), st
            st = await wait_model(client, world.model_id)
            assert st["description"] and "loading" in client.states  # type: ignore[attr-defined]
            uri = (tmp_path / "a.py").as_uri()
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(
                    text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text="def add(a, b):\n    return ")
                )
            )
            answer = await asyncio.wait_for(
                client.text_document_inline_completion_async(
                    types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=uri),
                        position=types.Position(line=1, character=11),
                        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
                    )
                ),
                GUARD_S,
            )
            assert answer is None or isinstance(answer, (list, types.InlineCompletionList))  # served by the new model

        # A new server on this machine does not offer it again; asked, it says it is here.
        async with quill(world.env, tmp_path) as client:
            await wait_model(client, "smollm2-135m-instruct")
            assert await request(client, "quill/modelOffer", {}) is None
            again = await request(client, "quill/modelOffer", {"again": True})
            assert again["model"] == world.model_id and again["installed"]
            assert "already on this machine" in again["message"]


async def test_cancel_keeps_the_part_and_the_next_pull_resumes(tmp_path: Path) -> None:
    # huggingface_hub hands over the body in chunks of DOWNLOAD_CHUNK_SIZE and progress is
    # told once a chunk is written: four chunks put the cancel in the middle of the file.
    four_chunks = 4 * hf_constants.DOWNLOAD_CHUNK_SIZE - 1
    with offer_world(tmp_path, throttle_s=8.0, pad_to=four_chunks) as world:
        async with quill(world.env, tmp_path) as client:
            await wait_model(client, "smollm2-135m-instruct")
            client.progress_reports["pull-c"] = []
            pull = asyncio.ensure_future(
                request(client, "quill/pullModel", {"model": world.model_id, "workDoneToken": "pull-c"})
            )
            deadline = time.monotonic() + 30
            while not any(s["kind"] == "report" and (s.get("percentage") or 0) > 0 for s in kinds(client, "pull-c")):
                assert time.monotonic() < deadline, kinds(client, "pull-c")
                await asyncio.sleep(0.05)
            client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token="pull-c"))
            t0 = time.monotonic()
            with pytest.raises(JsonRpcException, match="cancelled"):
                await pull
            assert time.monotonic() - t0 < 5
            part = world.pulled.with_name(HUB_FILE + ".part")
            assert part.exists() and 0 < part.stat().st_size < len(world.hub.content)
            assert not world.pulled.exists()
            assert kinds(client, "pull-c")[-1]["kind"] == "end"

            world.hub.throttle_s = 0
            result = await request(client, "quill/pullModel", {"model": world.model_id})
            assert Path(result["path"]) == world.pulled and sha(world.pulled.read_bytes()) == world.hub.etag
            ranges = [r for (method, _path, r) in world.hub.requests if method == "GET" and r]
            assert ranges and ranges[-1] != "bytes=0-"  # resumed, not started over


async def test_offline_gets_the_manual_steps_and_no_download(tmp_path: Path) -> None:
    with offer_world(tmp_path, offline=True) as world:
        async with quill(world.env, tmp_path) as client:
            await wait_model(client, "smollm2-135m-instruct")
            offer = await request(client, "quill/modelOffer", {})
            assert offer["offline"] and str(world.pulled) in offer["manualSteps"]
            assert "/resolve/" in offer["manualSteps"] and world.model_id in offer["manualSteps"]
            t0 = time.monotonic()
            with pytest.raises(JsonRpcException, match="HF_HUB_OFFLINE") as err:
                await request(client, "quill/pullModel", {"model": world.model_id})
            assert time.monotonic() - t0 < 5 and str(world.pulled) in str(err.value)
            assert world.hub.requests == []


async def test_an_unreachable_host_fails_fast_with_the_manual_steps(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with offer_world(tmp_path) as world:
        env = dict(world.env, HF_ENDPOINT=dead)
        async with quill(env, tmp_path) as client:
            await wait_model(client, "smollm2-135m-instruct")
            t0 = time.monotonic()
            with pytest.raises(JsonRpcException, match="cannot reach") as err:
                await request(client, "quill/pullModel", {"model": world.model_id})
            assert time.monotonic() - t0 < 30
            assert "On a machine with network access" in str(err.value)
            # The server keeps serving.
            assert (await request(client, "quill/status", {}))["state"] == "ready"
            with pytest.raises(JsonRpcException, match="unknown model"):
                await request(client, "quill/pullModel", {"model": "no-such-model"})
