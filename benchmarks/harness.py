"""What the benchmarks and the tests both set up: synthetic GGUF models (a made-up
SentencePiece vocabulary, or a real tokenizer from llama.cpp's vocabulary files), a real
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


# ------------------------------------------------------- real vocabularies
# llama.cpp ships vocabulary-only GGUF files of real tokenizers (``models/ggml-vocab-NAME.gguf``:
# the tokenizer of a published model and no weights), each with tokenizer test vectors
# beside it (``NAME.gguf.inp`` / ``NAME.gguf.out``).  ``make vocab`` takes the ones the tests
# use out of the llama-cpp-python sdist into ``build/vocab``; ``QUILL_VOCAB_DIR`` points
# elsewhere.  :func:`write_tiny_model` puts such a vocabulary on tiny random weights in the
# architecture the family uses, so that the real tokenizer runs through Quill and llama.cpp.
VOCAB_ENV = "QUILL_VOCAB_DIR"

# Code Llama's SentencePiece vocabulary is Llama 2's (32000 pieces) grown to 32016, with its
# infilling tokens at these ids (codellama/llama/tokenizer.py reads them with piece_to_id;
# transformers' CodeLlamaTokenizer names the same four).  The other twelve new ids are not
# used by Code Llama's prompts; they are placeholders here.
CODELLAMA_VOCAB_SIZE = 32016
CODELLAMA_INFILL = {32007: "▁<PRE>", 32008: "▁<SUF>", 32009: "▁<MID>", 32010: "▁<EOT>"}
# Qwen2.5 (and Qwen2.5-Coder) keeps the BPE tokens and merges of Qwen1.5, whose vocabulary
# llama.cpp ships as ``qwen2``, and adds these tokens at these ids (its tokenizer_config.json);
# in the Qwen1.5 file they are ``[PAD...]`` placeholders.  Types as convert_hf_to_gguf.py
# writes them: ``<|...|>`` tokens look special, so they are control tokens.
QWEN25_FIM = {
    151659: "<|fim_prefix|>",
    151660: "<|fim_middle|>",
    151661: "<|fim_suffix|>",
    151662: "<|fim_pad|>",
    151663: "<|repo_name|>",
    151664: "<|file_sep|>",
}
TOKEN_CONTROL, TOKEN_UNUSED = 3, 5  # GGUF token types


def vocab_dir() -> Path:
    """Where llama.cpp's vocabulary files are: ``$QUILL_VOCAB_DIR``, else ``build/vocab``."""
    env = os.environ.get(VOCAB_ENV)
    return Path(env) if env else REPO / "build" / "vocab"


def vocab_file(name: str) -> Path:
    """``ggml-vocab-NAME.gguf`` in :func:`vocab_dir` (it may not exist)."""
    return vocab_dir() / f"ggml-vocab-{name}.gguf"


def read_tokenizer_tests(vocab: Path) -> list[tuple[str, list[int]]]:
    """The test vectors beside a vocabulary file, as llama.cpp's tests/test-tokenizer-0
    reads them: the ``.inp`` file holds the texts separated by a line
    ``__ggml_vocab_test__``, the ``.out`` file one line of space-separated token ids per
    text (tokenized without BOS/EOS and without parsing special tokens)."""
    raw = Path(f"{vocab}.inp").read_bytes().decode("utf-8")
    sep = "\n__ggml_vocab_test__\n"
    texts: list[str] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(sep, pos)
        if end == -1:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:end])
        pos = end + len(sep)
    lines = Path(f"{vocab}.out").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise ValueError(f"{vocab}: {len(texts)} texts in .inp but {len(lines)} lines in .out")
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines, strict=True)]


@dataclass
class RealVocab:
    """Every ``tokenizer.*`` key of a GGUF file with its GGUF value type: tokens, their
    types, scores (SentencePiece) or merges (BPE), special token ids, pre-tokenizer,
    add-BOS flags, chat template -- whatever the file has, written back as it was."""

    source: Path
    keys: dict[str, tuple[Any, Any, Any]]  # key -> (value, GGUFValueType, array item type)

    def set_tokens(self, tokens: dict[int, tuple[str, int]], size: int | None = None, filler: str = "<unused{}>") -> None:
        """Put ``tokens`` (id -> (text, GGUF token type)) at their ids, first growing the
        vocabulary to ``size`` with ``filler`` pieces of type UNUSED (SentencePiece scores
        0 for all of them)."""
        toks = list(self.keys["tokenizer.ggml.tokens"][0])
        types = list(self.keys["tokenizer.ggml.token_type"][0])
        scores_entry = self.keys.get("tokenizer.ggml.scores")
        scores = list(scores_entry[0]) if scores_entry is not None else None
        while size is not None and len(toks) < size:
            toks.append(filler.format(len(toks)))
            types.append(TOKEN_UNUSED)
            if scores is not None:
                scores.append(0.0)
        for tid, (text, kind) in tokens.items():
            toks[tid], types[tid] = text, kind
            if scores is not None:
                scores[tid] = 0.0
        self._replace("tokenizer.ggml.tokens", toks)
        self._replace("tokenizer.ggml.token_type", types)
        if scores is not None:
            self._replace("tokenizer.ggml.scores", scores)

    def _replace(self, key: str, value: Any) -> None:
        _, vtype, sub = self.keys[key]
        self.keys[key] = (value, vtype, sub)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_ITEMS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_vocab(path: Path) -> RealVocab:
    """The tokenizer keys of a GGUF file (llama.cpp's vocabulary-only files, or a model).

    Read with plain ``struct`` rather than ``gguf.GGUFReader``, which takes about ten
    seconds over a 150k-token vocabulary and its merges."""
    import struct

    import gguf
    import numpy as np

    data = Path(path).read_bytes()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    _version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    pos = 24

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        text = data[pos + 8 : pos + 8 + n].decode("utf-8")
        pos += 8 + n
        return text

    def value(kind: int) -> Any:
        nonlocal pos
        if kind == _GGUF_STRING:
            return string()
        if kind == _GGUF_ARRAY:
            item, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item == _GGUF_STRING:
                return [string() for _ in range(count)]
            if item == _GGUF_ARRAY:
                return [value(item) for _ in range(count)]
            dtype = np.dtype(_NUMPY_ITEMS[item])
            out = np.frombuffer(data, dtype=dtype, count=count, offset=pos).tolist()
            pos += count * dtype.itemsize
            return out
        fmt = _GGUF_SCALARS[kind]
        (out,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return out

    keys: dict[str, tuple[Any, Any, Any]] = {}
    for _ in range(n_kv):
        name = string()
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        sub = struct.unpack_from("<I", data, pos)[0] if kind == _GGUF_ARRAY else None
        val = value(kind)
        if name.startswith("tokenizer."):
            keys[name] = (val, gguf.GGUFValueType(kind), None if sub is None else gguf.GGUFValueType(sub))
    if "tokenizer.ggml.tokens" not in keys:
        raise ValueError(f"{path} has no tokenizer")
    return RealVocab(source=Path(path), keys=keys)


def codellama_vocab(llama_spm: RealVocab) -> RealVocab:
    """Llama 2's SentencePiece vocabulary as Code Llama extends it: 32016 pieces, with the
    infilling tokens at their published ids as control tokens (what convert_hf_to_gguf.py
    writes for tokens the tokenizer marks special), and no ``eot_token_id`` key, like the
    GGUF files converted before that key existed: llama.cpp finds ``▁<PRE>``/``▁<SUF>``/
    ``▁<MID>`` by their text, ``▁<EOT>`` only through the stop list Quill gives it."""
    vocab = RealVocab(llama_spm.source, dict(llama_spm.keys))
    vocab.set_tokens({i: (t, TOKEN_CONTROL) for i, t in CODELLAMA_INFILL.items()}, size=CODELLAMA_VOCAB_SIZE)
    return vocab


def qwen25_vocab(qwen2: RealVocab) -> RealVocab:
    """Qwen1.5's vocabulary with Qwen2.5's fill-in-the-middle and repository tokens."""
    vocab = RealVocab(qwen2.source, dict(qwen2.keys))
    vocab.set_tokens({i: (t, TOKEN_CONTROL) for i, t in QWEN25_FIM.items()})
    return vocab


@dataclass(frozen=True)
class TinyShape:
    """Hyper-parameters of a tiny model: small enough that the weights of a 150k-token
    vocabulary take 5 MB (beside the vocabulary's own 6 MB) and the file loads in a fraction
    of a second."""

    n_embd: int = 32  # a multiple of 32: the vocabulary-sized matrices are Q8_0
    n_layer: int = 2
    n_head: int = 2
    n_head_kv: int = 1
    n_ff: int = 64
    context_length: int = 2048


TINY_ARCHITECTURES = ("llama", "qwen2", "starcoder", "starcoder2")


def write_tiny_model(
    path: Path,
    vocab: RealVocab,
    architecture: str,
    shape: TinyShape = TinyShape(),
    *,
    name: str,
    seed: int = 0,
    weight_scale: float = 0.2,
) -> Path:
    """A GGUF model of ``architecture`` with ``vocab`` and random weights: the tensors and
    hyper-parameters llama.cpp's loader requires for it (src/models/*.cpp in llama.cpp),
    the embedding in Q8_0 and shared with the output (every one of these architectures
    ties them when ``output.weight`` is absent), the rest F32.  It checks the tokenizer,
    prompts and decoding, not text."""
    import gguf
    import numpy as np
    from gguf.quants import quantize

    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r}; known: {', '.join(TINY_ARCHITECTURES)}")
    rng = np.random.default_rng(seed)
    n_embd, n_ff = shape.n_embd, shape.n_ff
    n_kv = n_embd // shape.n_head * shape.n_head_kv
    n_vocab = len(vocab.keys["tokenizer.ggml.tokens"][0])
    rms = architecture in ("llama", "qwen2")  # RMSNorm, no biases; else LayerNorm with biases
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name(name)
    w.add_context_length(shape.context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    if rms:
        w.add_layer_norm_rms_eps(1e-5)
    else:
        w.add_layer_norm_eps(1e-5)
    if architecture != "starcoder":  # learned positions, no RoPE
        w.add_rope_dimension_count(n_embd // shape.n_head)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for key, (value, vtype, sub) in vocab.keys.items():
        w.add_key_value(key, value, vtype, sub)

    def rand(*dims: int) -> Any:
        return (rng.standard_normal(dims) * weight_scale).astype(np.float32)

    def norm(prefix: str) -> None:
        w.add_tensor(f"{prefix}.weight", np.ones(n_embd, np.float32))
        if not rms:
            w.add_tensor(f"{prefix}.bias", np.zeros(n_embd, np.float32))

    def linear(prefix: str, n_out: int, n_in: int, bias: bool) -> None:
        w.add_tensor(f"{prefix}.weight", rand(n_out, n_in))
        if bias:
            w.add_tensor(f"{prefix}.bias", rand(n_out))

    q8 = gguf.GGMLQuantizationType.Q8_0
    w.add_tensor("token_embd.weight", quantize(rand(n_vocab, n_embd), q8), raw_dtype=q8)
    if architecture == "starcoder":
        w.add_tensor("position_embd.weight", rand(shape.context_length, n_embd))
    for layer in range(shape.n_layer):
        blk = f"blk.{layer}"
        norm(f"{blk}.attn_norm")
        if architecture == "starcoder":
            linear(f"{blk}.attn_qkv", n_embd + 2 * n_kv, n_embd, bias=True)
        else:
            qkv_bias = architecture in ("qwen2", "starcoder2")
            linear(f"{blk}.attn_q", n_embd, n_embd, qkv_bias)
            linear(f"{blk}.attn_k", n_kv, n_embd, qkv_bias)
            linear(f"{blk}.attn_v", n_kv, n_embd, qkv_bias)
        linear(f"{blk}.attn_output", n_embd, n_embd, bias=not rms)
        norm(f"{blk}.ffn_norm")
        if rms:
            linear(f"{blk}.ffn_gate", n_ff, n_embd, bias=False)
        linear(f"{blk}.ffn_up", n_ff, n_embd, bias=not rms)
        linear(f"{blk}.ffn_down", n_embd, n_ff, bias=not rms)
    norm("output_norm")
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


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server process: terminate, and kill it if it has not ended within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        end_process(self.proc)

    def stop(self) -> None:
        self._end()
        if self._own_log:
            self.log.unlink(missing_ok=True)


class NativeLlamaServer:
    """llama.cpp's own ``llama-server`` binary (``make llama-server``) on 127.0.0.1, as
    llama.vim / llama.vscode users run it: ``slots`` slots, ``--cache-reuse 256``, answering
    ``/health``.  :meth:`complete` sends llama.vim's request for a model without FIM
    tokens: the last :attr:`N_PREFIX` lines before the cursor through ``/completion`` with
    ``cache_prompt``, greedy, the rest of the line.  The blanks that end the prompt are
    sent as the answer's start instead (what a client must do for such a model: a prompt
    that ends in a space token makes SmolLM2 answer ``0`` or ``1`` after ``text = ``);
    an answer that does not begin with them is nothing to show."""

    N_PREFIX = 256

    def __init__(self, binary: str, model: Path | str, threads: int, *, slots: int = 4, timeout_s: float = 120) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), "-t", str(threads),
                    "-tb", str(threads), "-c", str(8192 * slots), "-np", str(slots), "--cache-reuse", "256", "--no-webui"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama-server did not start: {' '.join(self.cmd)}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def prefix(self, lines: Sequence[str], line: int, character: int) -> str:
        return "\n".join([*lines[max(0, line - self.N_PREFIX) : line], lines[line][:character]])

    def complete(self, prompt: str, timeout_s: float = 120.0, n_predict: int = 64) -> tuple[str, int]:
        """The suggestion's text and the prompt tokens the server evaluated for it."""
        blanks = prompt[len(prompt.rstrip(" \t")) :]
        body = {"prompt": prompt[: len(prompt) - len(blanks)], "n_predict": n_predict, "temperature": 0, "cache_prompt": True, "stop": ["\n"],
                "samplers": ["top_k"], "top_k": 1}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("POST", "/completion", body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = json.loads(resp.read())
            if resp.status != 200:
                raise RuntimeError(f"llama-server answered {resp.status}: {out}")
        finally:
            conn.close()
        content = str(out.get("content", ""))
        text = content[len(blanks) :] if content.startswith(blanks) else ""
        return text, int((out.get("timings") or {}).get("prompt_n", -1))

    def stop(self) -> None:
        end_process(self.proc)


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
