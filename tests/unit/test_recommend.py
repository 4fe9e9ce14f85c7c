"""`quill-lsp models recommend`: the choice for handed machine profiles, the reasoning, the
JSON shape, GPU detection, and the real console entry.  No model is loaded: every speed
figure is handed in (the embedded model's, as `quill/status` reports them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsp_server import recommend as rc
from lsp_server.engine.engine import EXPECTED_GEN_TOKENS
from lsp_server.engine.session import Perf, affordable_prompt_tokens, perf_key, save_perf
from lsp_server.recommend import GIB, Gpu, Machine, Target
from lsp_server.registry import get_manifest, installed_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("QUILL_MODELS_DIR", raising=False)
    return tmp_path / "cache"


def machine(ram: float, total: float, gpu: float = 0, prompt: float = 600, gen: float = 10) -> Machine:
    speed = rc.reference_speed(prompt, gen, measure=False)
    g = Gpu("Test GPU", int(gpu * GIB), True, "given") if gpu else None
    return Machine(int(ram * GIB), int(total * GIB), "given", g, "given", speed)


# name: (RAM available, RAM total, GPU GiB, embedded model's prompt tok/s, ms/token) -> (model, device)
PROFILES = {
    "cpu laptop 8 GB, slow": ((5, 8, 0, 600, 10), ("smollm2-135m-instruct", "cpu")),
    "cpu laptop 16 GB, mid": ((12, 16, 0, 3000, 3), ("qwen2.5-coder-0.5b", "cpu")),
    "cpu workstation 32 GB, fast": ((24, 32, 0, 10000, 2), ("qwen2.5-coder-1.5b", "cpu")),
    "gpu 8 GB": ((12, 16, 8, 1500, 5), ("qwen2.5-coder-1.5b", "gpu")),
    "gpu 24 GB": ((48, 64, 24, 3000, 3), ("qwen2.5-coder-7b", "gpu")),
    "tiny 2 GB": ((1.2, 2, 0, 800, 8), ("smollm2-135m-instruct", "cpu")),
}


@pytest.mark.parametrize("name", list(PROFILES))
def test_choice_per_machine_profile(name):
    figures, (model, device) = PROFILES[name]
    rec = rc.recommend(machine(*figures), Target(1000))
    assert (rec.chosen.id, rec.chosen.device) == (model, device)
    assert rec.embedded == (model == "smollm2-135m-instruct")
    # Every larger rung was rejected, for a stated reason; the choice fits.
    larger = [c for c in rec.candidates if c.params_b > rec.chosen.params_b]
    assert all(c.verdict == "rejected" and c.reason and not c.fits for c in larger)
    assert bool(larger) == (model != "qwen2.5-coder-7b")
    if not rec.embedded:
        assert rec.chosen.fits and rec.chosen.verdict == "recommended"


def test_ladder_is_the_qwen_family_largest_first():
    ids = [m.id for m in rc.ladder(rc.load_manifests())]
    assert ids == ["qwen2.5-coder-7b", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]


def test_reasoning_names_each_rejected_candidate_and_why():
    fast = rc.recommend(machine(24, 32, 0, 10000, 2), Target(1000))
    (seven,) = [r for r in fast.reasoning if r.startswith("qwen2.5-coder-7b rejected")]
    assert "latency target" in seven and "of RAM" not in seven  # memory fits: it is too slow
    assert any(r.startswith("qwen2.5-coder-1.5b fits") for r in fast.reasoning)

    tiny = rc.recommend(machine(1.2, 2, 0, 800, 8), Target(1000))
    (half,) = [r for r in tiny.reasoning if r.startswith("qwen2.5-coder-0.5b rejected")]
    assert "of RAM" in half and "1.0 GiB usable" in half and "kvCacheMb" in half

    gpu8 = rc.recommend(machine(12, 16, 8, 1500, 5), Target(1000))
    (seven,) = [r for r in gpu8.reasoning if r.startswith("qwen2.5-coder-7b rejected")]
    assert "does not fit the GPU" in seven and "on the CPU" in seven

    text = rc.render_text(gpu8)
    assert text.startswith("Recommended: qwen2.5-coder-1.5b")
    assert "quill-lsp models pull qwen2.5-coder-1.5b" in text
    assert '"gpuLayers": -1' in text and "1.6 GB file, Q8_0" in text
    assert "qwen2.5-coder-7b rejected: does not fit the GPU" in text
    assert "GPU speed assumed, not measured" in text


def test_embedded_fallback_says_so_and_why():
    rec = rc.recommend(machine(5, 8, 0, 150, 20), Target(1000))
    assert rec.embedded and rec.chosen.id == "smollm2-135m-instruct" and rec.chosen.verdict == "fallback"
    assert rc.pull_command(rec) is None
    text = rc.render_text(rec)
    assert "No code model of the registry fits this machine" in text
    for rung in ("qwen2.5-coder-7b", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"):
        assert f"{rung} rejected" in text
    # Even the embedded model is over the target here: the note says what the engine does.
    assert any("shorter prompt" in n for n in rec.notes)


def test_latency_target_and_settings_move_the_choice():
    fast = machine(24, 32, 0, 10000, 2)
    assert rc.recommend(fast, Target(4000)).chosen.id == "qwen2.5-coder-7b"
    assert rc.recommend(fast, Target(300)).chosen.id == "qwen2.5-coder-0.5b"
    assert rc.recommend(fast, Target(100)).embedded
    # kvCacheMb is host memory Quill may use for KV states: on a small machine it decides.
    small = machine(1.2, 2, 0, 3000, 3)
    assert rc.recommend(small, Target(1000, kv_cache_mb=512)).embedded
    assert rc.recommend(small, Target(1000, kv_cache_mb=64)).chosen.id == "qwen2.5-coder-0.5b"


def test_estimates_scale_the_embedded_models_speed_by_size():
    m = machine(24, 32, 0, 1000, 4)
    c = rc.estimate(get_manifest("qwen2.5-coder-1.5b"), m, Target(1000), gpu_usable=False)
    assert c.prompt_tok_s == pytest.approx(1000 * 0.135 / 1.5)  # parameters
    assert c.gen_ms == pytest.approx(4 * 1650e6 / m.speed.size_bytes)  # bytes of weights per token
    assert c.first_ms == pytest.approx(
        rc.OVERHEAD_MS + 256 / (c.prompt_tok_s * rc.DEPTH_DISCOUNT) * 1000 + 10 * c.gen_ms
    )


def test_fit_agrees_with_the_engines_prompt_budget():
    """A candidate fits the target exactly when the engine's own rule would give it a
    quick prompt of at least the useful size."""
    assert rc.GEN_TOKENS == EXPECTED_GEN_TOKENS
    for figures, _ in PROFILES.values():
        for c in rc.recommend(machine(*figures), Target(1000)).candidates:
            perf = Perf(c.prompt_tok_s, c.gen_ms, 1, 0.0)
            budget = affordable_prompt_tokens(perf, 1000, EXPECTED_GEN_TOKENS)
            if 1000 - rc.OVERHEAD_MS - 10 * c.gen_ms > 250:  # the budget is not at its floor
                assert c.fits_latency == (budget >= rc.PROMPT_TOKENS), c


def test_json_shape():
    rec = rc.recommend(machine(12, 16, 8, 1500, 5), Target(1000))
    data = json.loads(json.dumps(rc.as_json(rec)))
    assert set(data) == {"recommended", "machine", "target", "candidates", "reasoning", "notes", "notRanked"}
    r = data["recommended"]
    assert r["id"] == "qwen2.5-coder-1.5b" and r["quant"] == "Q8_0" and r["sizeBytes"] == 1650000000
    assert r["pullCommand"] == "quill-lsp models pull qwen2.5-coder-1.5b"
    assert r["settings"] == {"model": "qwen2.5-coder-1.5b", "gpuLayers": -1} and r["embedded"] is False
    assert data["machine"]["gpu"] == {"name": "Test GPU", "freeGiB": 8.0, "usable": True, "source": "given"}
    assert data["machine"]["reference"]["model"] == "smollm2-135m-instruct"
    assert data["target"]["latencyTargetMs"] == 1000 and data["target"]["promptTokens"] == 256
    keys = {"id", "params", "quant", "sizeBytes", "installed", "device", "memory", "memoryNeedGiB",
            "memoryUsableGiB", "promptTokensPerS", "genMsPerToken", "firstSuggestionMs", "fitsMemory",
            "fitsLatency", "verdict", "reason"}
    assert [c["id"] for c in data["candidates"]] == ["qwen2.5-coder-7b", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]
    assert all(set(c) == keys for c in data["candidates"])
    assert [c["verdict"] for c in data["candidates"]] == ["rejected", "recommended", "smaller"]
    # Every other registry model is accounted for, with a reason.
    others = {i for ids in data["notRanked"].values() for i in ids}
    assert "starcoder2-3b" in others and "codestral-22b" in others and "qwen2.5-coder-7b" not in others

    fallback = rc.as_json(rc.recommend(machine(1.2, 2, 0, 800, 8), Target(1000)))
    assert fallback["recommended"]["embedded"] is True and fallback["recommended"]["pullCommand"] is None
    assert fallback["candidates"][-1]["verdict"] == "fallback"


def test_parse_params():
    assert rc.parse_params("135M") == pytest.approx(0.135)
    assert rc.parse_params("1.5B") == 1.5 and rc.parse_params("6.7b") == 6.7
    assert rc.parse_params("") is None and rc.parse_params("big") is None


def fake_nvidia_smi(tmp_path: Path, monkeypatch, output: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in output.splitlines()))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_gpu_from_nvidia_smi(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA GeForce RTX 3060, 12288, 11000\nNVIDIA T400, 2048, 1900")
    monkeypatch.setattr(rc, "gpu_offload_supported", lambda: True)
    gpu, note = rc.detect_gpu(8 * GIB, 16 * GIB)
    assert gpu is not None and gpu.usable and gpu.name == "NVIDIA GeForce RTX 3060"
    assert gpu.free_bytes == 11000 << 20 and "nvidia-smi" in note and "of 2" in note


def test_gpu_seen_but_llama_cpp_built_without_it(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA GeForce RTX 4090, 24564, 23000")
    monkeypatch.setattr(rc, "gpu_offload_supported", lambda: False)
    gpu, note = rc.detect_gpu(8 * GIB, 16 * GIB)
    assert gpu is not None and not gpu.usable and "no GPU support" in note
    m = machine(12, 16, 0, 1500, 5)
    m.gpu, m.gpu_note = gpu, note
    rec = rc.recommend(m, Target(1000))
    assert rec.chosen.device == "cpu"  # llama.cpp cannot use it
    assert any("GPU build of llama.cpp" in n and "qwen2.5-coder-7b" in n for n in rec.notes)


def test_no_gpu_without_nvidia_smi_or_offload(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(rc, "gpu_offload_supported", lambda: False)
    gpu, note = rc.detect_gpu(8 * GIB, 16 * GIB)
    assert gpu is None and "no GPU support" in note
    monkeypatch.setattr(rc, "gpu_offload_supported", lambda: True)
    monkeypatch.setattr(rc.sys, "platform", "linux")
    gpu, note = rc.detect_gpu(8 * GIB, 16 * GIB)
    assert gpu is None and "--gpu-gb" in note


def test_speed_from_the_engines_cache_or_an_error(cache_dir):
    path = installed_path(get_manifest("smollm2-135m-instruct"))
    if path is None:
        pytest.skip("the embedded model is not installed")
    with pytest.raises(rc.RecommendError, match="--prompt-tok-s"):
        rc.reference_speed(None, None, measure=False)
    save_perf(perf_key("llama_cpp", str(path), 0, 1), Perf(321.0, 7.5, 1, time.time()))
    speed = rc.reference_speed(None, None, measure=False)
    assert (speed.prompt_tok_s, speed.gen_ms) == (321.0, 7.5) and speed.source.startswith("cached in")
    assert rc.reference_speed(None, 9.0, measure=False).source.startswith("partly given")


# ---------------------------------------------------------------- the console entry
def quill(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("quill-lsp")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lsp_server"]
    env = {**os.environ, "QUILL_CACHE_DIR": str(cache)}
    env.pop("QUILL_MODELS_DIR", None)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


FAST = ["--ram-gb", "24", "--ram-total-gb", "32", "--gpu-gb", "0", "--prompt-tok-s", "10000", "--gen-ms", "2"]


def test_cli_json(cache_dir):
    out = quill("models", "recommend", *FAST, "--json", cache=cache_dir)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["recommended"]["id"] == "qwen2.5-coder-1.5b"
    assert data["recommended"]["pullCommand"] == "quill-lsp models pull qwen2.5-coder-1.5b"
    assert data["machine"]["ramAvailableGiB"] == 24.0 and data["machine"]["gpu"] is None
    assert data["candidates"][0]["verdict"] == "rejected" and "latency target" in data["candidates"][0]["reason"]


def test_cli_text_settings_and_errors(cache_dir):
    out = quill("models", "recommend", "--ram-gb", "12", "--ram-total-gb", "16", "--gpu-gb", "8",
                "--prompt-tok-s", "1500", "--gen-ms", "5", cache=cache_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Recommended: qwen2.5-coder-1.5b")
    assert "Get it:      quill-lsp models pull qwen2.5-coder-1.5b" in out.stdout
    assert "qwen2.5-coder-7b rejected: does not fit the GPU" in out.stdout
    # latencyTargetMs from the settings, and the flag over it.
    out = quill("--settings", '{"latencyTargetMs": 4000}', "models", "recommend", *FAST, "--json", cache=cache_dir)
    assert json.loads(out.stdout)["recommended"]["id"] == "qwen2.5-coder-7b"
    out = quill("--settings", '{"latencyTargetMs": 4000}', "models", "recommend", *FAST, "--latency-target-ms",
                "300", "--json", cache=cache_dir)
    assert json.loads(out.stdout)["recommended"]["id"] == "qwen2.5-coder-0.5b"
    # No figures and nothing to measure with: a clear error, nothing on stdout.
    if installed_path(get_manifest("smollm2-135m-instruct")) is not None:
        out = quill("models", "recommend", "--ram-gb", "8", "--gpu-gb", "0", "--no-measure", cache=cache_dir)
        assert out.returncode == 1 and out.stdout == "" and "--prompt-tok-s and --gen-ms" in out.stderr
