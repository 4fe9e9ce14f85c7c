"""Any OpenAI-compatible ``/v1/completions`` server: llama.cpp's llama-server,
llama-cpp-python's ``llama_cpp.server``, vLLM, Ollama, TGI.

This is how a team shares one GPU server.  Settings: ``endpoint`` (``http://host:port``
or ``.../v1``), ``apiKeyEnv`` (the NAME of the environment variable that holds the API
key; the key itself never sits in settings), ``requestTimeoutS``.  Only the configured
endpoint is contacted, and only once the user configured it.

Token budget.  The engine counts the prompt with the model's own tokenizer, never chars/4:

1. If ``model`` names a manifest id that is installed, or a local ``.gguf`` file, its
   vocabulary is loaded locally (vocabulary only: milliseconds, a few MB) and used to
   count.  No network round trip per keystroke.  This is the recommended set-up.
2. Otherwise the server's own tokenizer is used over HTTP (cached): llama-cpp-python's
   ``/extras/tokenize``, llama-server's ``/tokenize`` or vLLM's ``/tokenize``.
3. A server with neither (Ollama, TGI) and no local vocabulary is refused with a message
   that says how to fix it (point ``model`` at the GGUF or manifest id of the served
   model).

Transport.  The prompt goes as text (every server above takes text; not all take token
ids): our tokens are spelled back out, control tokens included, and the server parses
them again, as llama.cpp's servers do for completions.  Token healing cannot constrain a
remote sampler, so the healed characters are put back at the end of the prompt and the
returned text starts with them (the contract of ``GenerationRequest.forced_prefix``).

Streaming and cancellation.  The completion is streamed (server-sent events).  A cancel
(newer keystroke, ``$/cancelRequest``, timeout), a stop string or a syntax stop closes the
HTTP connection at once, which makes llama.cpp-family servers and vLLM stop generating.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lsp_server.backends.base import (
    BackendError,
    FimTokens,
    GenerationRequest,
    GenerationResult,
    ModelFileError,
    ModelInfo,
)
from lsp_server.backends.decoding import GgufVocab, common_prefix_len, find_stop, gguf_version

if TYPE_CHECKING:
    from lsp_server.config import Settings
    from lsp_server.registry import Manifest

logger = logging.getLogger(__name__)


class EndpointError(BackendError):
    """The server could not be reached or answered with an error."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    base_path: str  # path prefix before /v1 ("" usually)
    url: str  # as the user wrote it, for messages

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"quill.endpoint {url!r} is not an http:// or https:// URL")
        path = parts.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[: -len("/v1")]
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, path, url)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class HttpClient:
    """Small JSON-over-HTTP client (stdlib only) with clear errors."""

    def __init__(self, endpoint: Endpoint, api_key: str | None, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(timeout_s, 10.0)

    def headers(self, stream: bool = False) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def unreachable(self, exc: BaseException) -> EndpointError:
        return EndpointError(
            f"cannot reach the completion server at {self.endpoint.url} ({type(exc).__name__}: {exc}); "
            "start it, or fix quill.endpoint"
        )

    def open(
        self, method: str, path: str, body: Any = None, *, stream: bool = False, timeout: float | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self.endpoint.connection(self.connect_timeout_s)
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(timeout or self.timeout_s)
            conn.request(method, self.endpoint.base_path + path, body=data, headers=self.headers(stream))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self.unreachable(exc) from exc
        return conn, resp

    def json(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> tuple[int, Any]:
        conn, resp = self.open(method, path, body, timeout=timeout)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self.unreachable(exc) from exc
        finally:
            conn.close()
        try:
            payload = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return resp.status, payload

    def check(self, status: int, payload: Any, what: str) -> Any:
        if status == 401 or status == 403:
            raise EndpointError(
                f"the completion server at {self.endpoint.url} refused the request ({status}): check the API key"
            )
        if status >= 400:
            detail = payload if isinstance(payload, str) else json.dumps(payload)[:400]
            raise EndpointError(f"the completion server at {self.endpoint.url} answered {status} to {what}: {detail}")
        return payload


class RemoteTokenizer:
    """The server's own tokenizer over HTTP, with a cache (for servers that offer one)."""

    KINDS = ("llama-cpp-python", "llama-server", "vllm")

    def __init__(self, client: HttpClient, kind: str, model: str) -> None:
        self.client = client
        self.kind = kind
        self.model = model
        self._cache: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self._control_text: dict[int, str] = {}
        self._bos: tuple[int, ...] = ()
        # Applied to every text sent to be tokenized (see OpenAIBackend.set_redaction).
        self.redact: Callable[[str], str] | None = None
        if kind == "llama-cpp-python":
            # /extras/tokenize always adds BOS (where the model wants one): learn it once.
            self._bos = tuple(self._remote("", True))

    @classmethod
    def probe(cls, client: HttpClient, model: str) -> RemoteTokenizer | None:
        for kind in cls.KINDS:
            try:
                tok = cls(client, kind, model)
                if tok._remote("def", False):
                    return tok
            except EndpointError:
                continue
        return None

    def _remote(self, text: str, special: bool) -> list[int]:
        if self.redact is not None and not special:
            text = self.redact(text)
        if self.kind == "llama-cpp-python":
            status, payload = self.client.json("POST", "/extras/tokenize", {"input": text, "model": self.model})
        elif self.kind == "llama-server":
            status, payload = self.client.json(
                "POST", "/tokenize", {"content": text, "add_special": False, "parse_special": special}
            )
        else:
            status, payload = self.client.json(
                "POST", "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
            )
        payload = self.client.check(status, payload, "tokenize")
        if not isinstance(payload, dict) or not isinstance(payload.get("tokens"), list):
            raise EndpointError(f"unexpected tokenize answer from {self.client.endpoint.url}")
        tokens = [t["id"] if isinstance(t, dict) else int(t) for t in payload["tokens"]]
        return tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        if not text:
            return []
        key = (text, special)
        hit = self._cache.get(key)
        if hit is None:
            tokens = self._remote(text, special)
            if self._bos and tuple(tokens[: len(self._bos)]) == self._bos:
                tokens = tokens[len(self._bos) :]
            hit = tuple(tokens)
            self._cache[key] = hit
            if len(self._cache) > 4096:
                self._cache.popitem(last=False)
            if special and len(hit) == 1:
                self._control_text[hit[0]] = text
        else:
            self._cache.move_to_end(key)
        return list(hit)

    def detokenize(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        if self.kind == "llama-cpp-python":
            status, payload = self.client.json(
                "POST", "/extras/detokenize", {"tokens": list(tokens), "model": self.model}
            )
            key = "text"
        elif self.kind == "llama-server":
            status, payload = self.client.json("POST", "/detokenize", {"tokens": list(tokens)})
            key = "content"
        else:
            status, payload = self.client.json("POST", "/detokenize", {"model": self.model, "tokens": list(tokens)})
            key = "prompt"
        payload = self.client.check(status, payload, "detokenize")
        return str(payload.get(key, "")) if isinstance(payload, dict) else ""

    def render(self, tokens: Sequence[int]) -> str:
        """Tokens to prompt text, control tokens spelled as they were given."""
        out: list[str] = []
        run: list[int] = []
        for t in tokens:
            if t in self._control_text:
                out.append(self.detokenize(run))
                run = []
                out.append(self._control_text[t])
            else:
                run.append(t)
        out.append(self.detokenize(run))
        return "".join(out)

    def bos_tokens(self) -> list[int]:
        return list(self._bos)

    def close(self) -> None:
        self._cache.clear()


class OpenAIBackend:
    """Completions from an OpenAI-compatible server, streamed, cancellable."""

    def __init__(
        self,
        endpoint: str,
        *,
        model: str = "",
        api_key: str | None = None,
        timeout_s: float = 30.0,
        n_ctx: int = 2048,
        vocab: GgufVocab | None = None,
        name: str = "",
        require_tokenizer: bool = True,
    ) -> None:
        self.endpoint = Endpoint.parse(endpoint)
        self.client = HttpClient(self.endpoint, api_key, timeout_s)
        served = self._served_models()
        self.model = self._pick_model(model, served)
        self._vocab = vocab
        self._remote: RemoteTokenizer | None = None
        if vocab is None:
            self._remote = RemoteTokenizer.probe(self.client, self.model)
            if self._remote is None and require_tokenizer:
                raise BackendError(
                    f"cannot count prompt tokens for {self.model!r}: the server at {endpoint} offers no tokenize endpoint "
                    "and the model is not available locally; set quill.model to the served model's manifest id "
                    "(installed) or its .gguf file: only its vocabulary is loaded, to count tokens"
                )
        self._last_prompt: list[int] = []
        self._redact: Callable[[str], str] | None = None
        server_ctx = served.get(self.model) or 0
        self.info = ModelInfo(
            name=name or self.model,
            path=vocab.path if vocab is not None else "",
            n_ctx=min(n_ctx, server_ctx) if server_ctx else n_ctx,
            n_vocab=vocab.n_vocab if vocab is not None else 0,
            architecture=vocab.metadata.get("general.architecture", "") if vocab is not None else "",
            fim=vocab.fim_tokens() if vocab is not None else FimTokens(),
            eos_token_ids=vocab.eog_ids() if vocab is not None else (),
            chat_template=vocab.metadata.get("tokenizer.chat_template") if vocab is not None else None,
            device=f"remote server {endpoint}",
            metadata=dict(vocab.metadata) if vocab is not None else {},
        )
        logger.info(
            "using %s at %s (tokens counted by %s)",
            self.model,
            endpoint,
            "the local vocabulary"
            if vocab is not None
            else f"the server ({self._remote.kind if self._remote else 'none'})",
        )

    # ---------------------------------------------------------------- discovery
    def _served_models(self) -> dict[str, int]:
        status, payload = self.client.json("GET", "/v1/models")
        payload = self.client.check(status, payload, "GET /v1/models")
        models: dict[str, int] = {}
        for entry in (payload or {}).get("data", []) if isinstance(payload, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                models[entry["id"]] = int(entry.get("max_model_len") or entry.get("context_length") or 0)
        return models

    def _pick_model(self, wanted: str, served: dict[str, int]) -> str:
        if wanted in served:
            return wanted
        if len(served) == 1:
            return next(iter(served))
        if not served:
            return wanted  # some servers do not list models; send the configured name
        raise BackendError(
            f"the server at {self.endpoint.url} serves {', '.join(sorted(served))}; set quill.model to one of them"
        )

    def set_redaction(self, redact: Callable[[str], str] | None) -> None:
        """Pass every text that leaves the machine through ``redact`` first: the prompt
        of each completion, and each text the server is asked to tokenize.  engine/model.py
        installs context/secrets.py's ``mask_secrets`` here (this layer may not import it)."""
        self._redact = redact
        if self._remote is not None:
            self._remote.redact = redact
            self._remote._cache.clear()

    # ---------------------------------------------------------------- tokenizer
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        if self._vocab is not None:
            return self._vocab.tokenize(text, special=special)
        if self._remote is not None:
            return self._remote.tokenize(text, special=special)
        raise BackendError("no tokenizer for this model")

    def detokenize(self, tokens: Sequence[int]) -> str:
        if self._vocab is not None:
            return self._vocab.detokenize(tokens)
        if self._remote is not None:
            return self._remote.detokenize(tokens)
        raise BackendError("no tokenizer for this model")

    def bos_tokens(self) -> list[int]:
        if self._vocab is not None:
            return self._vocab.bos_tokens()
        return self._remote.bos_tokens() if self._remote is not None else []

    def prompt_text(self, prompt: Sequence[int]) -> str:
        """The prompt as the text we send (the server adds its own BOS)."""
        tokens = list(prompt)
        bos = self.bos_tokens()
        if bos and tokens[: len(bos)] == bos:
            tokens = tokens[len(bos) :]
        if self._vocab is not None:
            return self._vocab.render(tokens)
        assert self._remote is not None
        return self._remote.render(tokens)

    # ---------------------------------------------------------------- generation
    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        if not request.prompt:
            raise BackendError("empty prompt")
        t0 = time.perf_counter()
        prompt_text = self.prompt_text(request.prompt) + request.forced_prefix
        if self._redact is not None:
            prompt_text = self._redact(prompt_text)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt_text,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
        }
        stops = [s for s in request.stop if s][:4]  # the OpenAI API takes at most 4
        if stops:
            body["stop"] = stops
        if request.seed:
            body["seed"] = request.seed
        reused = common_prefix_len(self._last_prompt, request.prompt)
        self._last_prompt = list(request.prompt)
        if cancel.is_set():
            return GenerationResult("", [], len(request.prompt), reused, 0.0, 0.0, "cancelled")
        conn, resp = self.client.open("POST", "/v1/completions", body, stream=True)
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(conn, cancel, done), name="quill-openai-cancel", daemon=True
        )
        watcher.start()
        text = request.forced_prefix
        chunks = 0
        t_first: float | None = None
        stop_reason = "length"
        ended = False  # the stream said it was done ([DONE] or a finish_reason), or we stopped it
        try:
            if resp.status != 200:
                raw = resp.read().decode("utf-8", "replace")
                if resp.status in (401, 403):
                    raise EndpointError(
                        f"the completion server at {self.endpoint.url} refused the API key ({resp.status})"
                    )
                raise EndpointError(f"the completion server at {self.endpoint.url} answered {resp.status}: {raw[:400]}")
            for event in _sse_events(resp):
                if cancel.is_set():
                    stop_reason = "cancelled"
                    break
                if event == "[DONE]":
                    ended = True
                    break
                try:
                    payload = json.loads(event)
                except ValueError:
                    continue
                if isinstance(payload, dict) and payload.get("error"):
                    raise EndpointError(f"the completion server reported: {payload['error']}")
                choice = (payload.get("choices") or [{}])[0] if isinstance(payload, dict) else {}
                piece = choice.get("text") or ""
                if t_first is None:
                    t_first = time.perf_counter()
                if piece:
                    chunks += 1
                    text += piece
                    hit = find_stop(text[len(request.forced_prefix) :], request.stop)
                    if hit is not None:
                        text = text[: len(request.forced_prefix) + hit]
                        stop_reason, ended = "stop", True
                        break
                    if request.should_stop is not None and request.should_stop(text):
                        stop_reason, ended = "condition", True
                        break
                finish = choice.get("finish_reason")
                if finish:
                    stop_reason = "length" if finish == "length" else "eos"
                    ended = True
                    break
            if not ended and not cancel.is_set():
                # The connection closed before the server said the completion was done: the
                # text is a fragment (a line cut in the middle), never a suggestion.
                raise EndpointError(
                    f"the completion server at {self.endpoint.url} closed the stream before the completion "
                    f"ended ({chunks} chunks received); the partial text was dropped"
                )
        except EndpointError:
            raise
        except Exception as exc:  # a dropped connection surfaces as any of several errors
            if not cancel.is_set():
                if isinstance(exc, (OSError, http.client.HTTPException, ValueError)):
                    raise self.client.unreachable(exc) from exc
                raise
            stop_reason = "cancelled"
        finally:
            done.set()
            _close(conn)  # closing the stream is what stops the server generating
        if cancel.is_set() and stop_reason not in ("stop", "condition", "eos"):
            stop_reason = "cancelled"
        t2 = time.perf_counter()
        t1 = t_first or t2
        return GenerationResult(
            text=text,
            # The stream carries text, not token ids: one entry per streamed chunk (llama.cpp's
            # servers stream one token per chunk), -1 as the id.
            tokens=[-1] * chunks,
            prompt_tokens=len(request.prompt),
            reused_tokens=reused,
            prompt_ms=(t1 - t0) * 1000,
            generate_ms=(t2 - t1) * 1000,
            stop_reason=stop_reason,
        )

    @staticmethod
    def _watch(conn: http.client.HTTPConnection, cancel: threading.Event, done: threading.Event) -> None:
        """Close the connection as soon as ``cancel`` is set (a blocked read returns)."""
        while not done.is_set():
            if cancel.wait(0.02):
                if not done.is_set():
                    _shutdown(conn)  # the reading thread sees EOF and closes the connection
                return

    def close(self) -> None:
        if self._vocab is not None:
            self._vocab.close()
            self._vocab = None
        if self._remote is not None:
            self._remote.close()


def _shutdown(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _close(conn: http.client.HTTPConnection) -> None:
    _shutdown(conn)
    try:
        conn.close()
    except OSError:
        pass


def _sse_events(resp: http.client.HTTPResponse):  # type: ignore[no-untyped-def]
    """The ``data:`` payloads of a server-sent event stream."""
    data: list[str] = []
    while True:
        line = resp.readline()
        if not line:
            if data:
                yield "\n".join(data)
            return
        s = line.decode("utf-8", "replace").rstrip("\r\n")
        if not s:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if s.startswith(":"):
            continue  # a comment / keep-alive ping
        if s.startswith("data:"):
            data.append(s[5:].lstrip(" "))


def _local_vocab(model: str, manifest: Manifest | None) -> GgufVocab | None:
    """The served model's vocabulary from a local file, when there is one (no network)."""
    from lsp_server.registry import installed_path, looks_like_path

    path: str | None = None
    if looks_like_path(model):
        p = os.path.expanduser(model)
        if os.path.isfile(p):
            path = p
    elif manifest is not None:
        found = installed_path(manifest)
        path = str(found) if found is not None else None
    if path is None or gguf_version(path) is None:
        return None
    try:
        return GgufVocab(path)
    except ModelFileError as exc:
        logger.warning("could not read the vocabulary of %s: %s", path, exc)
        return None


def load_openai(settings: Settings) -> tuple[OpenAIBackend, Manifest | None]:
    """The openai backend for ``settings`` (raises BackendError with a clear message)."""
    from lsp_server.registry import ManifestError, get_manifest, looks_like_path

    if not settings.endpoint:
        raise BackendError('quill.backend is "openai" but quill.endpoint is not set (e.g. "http://127.0.0.1:8080")')
    manifest = None
    if not looks_like_path(settings.model):
        try:
            manifest = get_manifest(settings.model)
        except (ModelFileError, ManifestError):
            manifest = None  # a name only the server knows
    api_key = os.environ.get(settings.api_key_env) or None
    vocab = _local_vocab(settings.model, manifest)
    n_ctx = settings.context_tokens if manifest is None else min(settings.context_tokens, manifest.context_length)
    try:
        backend = OpenAIBackend(
            settings.endpoint,
            model=settings.model,
            api_key=api_key,
            timeout_s=settings.request_timeout_s,
            n_ctx=n_ctx,
            vocab=vocab,
            name=manifest.name if manifest else "",
        )
    except BaseException:
        if vocab is not None:
            vocab.close()
        raise
    return backend, manifest
