"""What the benchmarks and the tests both set up: synthetic GGUF models, a real
``python -m llama_cpp.server`` on 127.0.0.1, the installed default model, and the dev set's
cases with their scoring.

It lives here, beside the benchmarks, rather than under ``tests/``: it is tooling for
running real models (nothing in it needs pytest), the benchmarks are its main users, and
the tests reach it the way they reach each other, from the repository root
(``from benchmarks.harness import ...``; pytest puts the root on ``sys.path`` since
``tests`` is a package, and ``benchmarks/__init__.py`` keeps a same-named installed
package from shadowing this one).  The benchmarks, run as scripts, put the root on
``sys.path`` first.  Heavy imports (``gguf``, ``numpy``, the registry) wait until a function needs them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The dev set (``shared/eval/dev``): beside this checkout, else the shared one.
DEV_DIRS = (REPO.parent / "shared" / "eval" / "dev", Path("/work/shared/eval/dev"))


# ----------------------------------------------------------------- models
def installed_model(name: str) -> Path | None:
    """The file of registry model ``name`` when it is installed, else None."""
    from lsp_server import registry

    try:
        return registry.installed_path(registry.get_manifest(name))
    except Exception:
        return None


@dataclass
class SpmVocab:
    """A SentencePiece vocabulary as GGUF stores it."""

    tokens: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)  # 1 normal, 2 unknown, 3 control, 6 byte

    def add(self, token: str, score: float, kind: int) -> None:
        self.tokens.append(token)
        self.scores.append(score)
        self.types.append(kind)


def spm_vocab(pieces: Iterable[str], control: Sequence[str] = (), size: int | None = None) -> SpmVocab:
    """``<unk> <s> </s>``, the 256 byte-fallback pieces (every text is representable),
    ``pieces`` (scored 0, -1, -2 ... in order, repeats dropped, as many as ``size``
    leaves room for), the ``control`` tokens, then filler pieces up to ``size``."""
    vocab = SpmVocab()
    for token, kind in (("<unk>", 2), ("<s>", 3), ("</s>", 3)):
        vocab.add(token, 0.0, kind)
    for b in range(256):
        vocab.add(f"<0x{b:02X}>", 0.0, 6)
    room = None if size is None else size - len(control)
    for i, piece in enumerate(dict.fromkeys(pieces)):
        if room is not None and len(vocab.tokens) >= room:
            break
        vocab.add(piece, -float(i), 1)
    for token in control:
        vocab.add(token, 0.0, 3)
    while size is not None and len(vocab.tokens) < size:
        vocab.add(f"▁pad{len(vocab.tokens)}", -1e6, 1)
    return vocab


@dataclass(frozen=True)
class LlamaShape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int  # fewer than n_head: grouped-query attention
    n_ff: int
    context_length: int


def write_llama_gguf(
    path: Path,
    vocab: SpmVocab,
    shape: LlamaShape,
    *,
    name: str,
    q8_0: bool,
    weight_scale: float,
    seed: int = 0,
    fim: tuple[str, str, str, str] | None = None,
) -> Path:
    """A GGUF ``llama`` model with ``vocab`` and random weights (F32, or Q8_0 with
    ``q8_0``): it checks mechanics and speed, not text.  ``fim`` names the vocabulary's
    prefix, suffix, middle and end-of-text control tokens, recorded as its FIM tokens."""
    import gguf
    import numpy as np
    from gguf.quants import quantize

    n_embd, n_layer, n_head, n_head_kv, n_ff = shape.n_embd, shape.n_layer, shape.n_head, shape.n_head_kv, shape.n_ff
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(shape.context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8_0 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if fim is not None:
        pre, suf, mid, eot = (vocab.tokens.index(t) for t in fim)
        w.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, pre)
        w.add_uint32(gguf.Keys.Tokenizer.FIM_SUF_ID, suf)
        w.add_uint32(gguf.Keys.Tokenizer.FIM_MID_ID, mid)
        w.add_eot_token_id(eot)
    n_vocab = len(vocab.tokens)

    def weights(tensor: str, *shape: int) -> None:
        data = (rng.standard_normal(shape) * weight_scale).astype(np.float32)
        if q8_0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(tensor, quantize(data, q8), raw_dtype=q8)
        else:
            w.add_tensor(tensor, data)

    weights("token_embd.weight", n_vocab, n_embd)
    kv = n_embd // n_head * n_head_kv
    for layer in range(n_layer):
        w.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(n_embd, np.float32))
        weights(f"blk.{layer}.attn_q.weight", n_embd, n_embd)
        weights(f"blk.{layer}.attn_k.weight", kv, n_embd)
        weights(f"blk.{layer}.attn_v.weight", kv, n_embd)
        weights(f"blk.{layer}.attn_output.weight", n_embd, n_embd)
        w.add_tensor(f"blk.{layer}.ffn_norm.weight", np.ones(n_embd, np.float32))
        weights(f"blk.{layer}.ffn_gate.weight", n_ff, n_embd)
        weights(f"blk.{layer}.ffn_up.weight", n_ff, n_embd)
        weights(f"blk.{layer}.ffn_down.weight", n_embd, n_ff)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    weights("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ----------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) on
    127.0.0.1, started and answering ``/v1/models``.  Its output goes to ``log`` (by
    default a temporary file, removed by :meth:`stop`; kept when the start fails)."""

    def __init__(
        self,
        model: Path | str,
        threads: int,
        *,
        threads_batch: int | None = None,
        api_key: str | None = None,
        log: Path | None = None,
        timeout_s: float = 120,
    ) -> None:
        self.port = free_port()
        self._own_log = log is None
        if log is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--n_ctx", "2048", "--n_threads", str(threads)]
        if threads_batch is not None:
            cmd += ["--n_threads_batch", str(threads_batch)]
        if api_key is not None:
            cmd += ["--api_key", api_key]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        try:
            self._wait(timeout_s)
        except Exception:
            self._end()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited; see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v1/models", headers=self.headers)
                status = conn.getresponse().status
                conn.close()
                if status < 500:
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("llama_cpp.server did not start")

    def _end(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self._end()
        if self._own_log:
            self.log.unlink(missing_ok=True)


# ---------------------------------------------------------------- dev set
def dev_dir() -> Path:
    """The dev set's directory: the first of :data:`DEV_DIRS` there is (else the last)."""
    return next((d for d in DEV_DIRS if d.is_dir()), DEV_DIRS[-1])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fim_passes(case: dict[str, Any], middle: str, timeout: float = 5.0) -> bool:
    """pass@1 of one fill-in-the-middle case completed with ``middle``: the case's
    ``prefix + middle + suffix``, its test and ``check(entry_point)`` run in a fresh
    interpreter."""
    program = case["prefix"] + middle + case["suffix"] + "\n" + case["test"] + f"\ncheck({case['entry_point']})\n"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(program)
        name = fh.name
    try:
        proc = subprocess.run([sys.executable, name], capture_output=True, timeout=timeout, cwd=tempfile.gettempdir())
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(name)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated; NaN for none."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def plain(obj: Any) -> Any:
    """A custom LSP result as plain data: pygls gives objects (namedtuple-like) for results
    of methods it does not know, such as ``quill/status``."""
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj
