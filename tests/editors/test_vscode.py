"""VS Code, for real: code-server with the packaged extension, driven by playwright-core.

The drivers are vscode/e2e.mjs and vscode/offer-e2e.mjs (Node, the first-run model offer
in an offer world, tests/offer_world.py); this wrapper runs them when their dependencies are
there (`make vscode-e2e-deps`, `make vscode-extension`) and reports their steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.editors.conftest import ARTIFACTS, REPO, quill_lsp

pytestmark = [pytest.mark.model, pytest.mark.slow]

E2E = REPO / "tests/editors/vscode"


def _node_or_skip() -> str:
    node = shutil.which("node")
    vsix = REPO / "editors/vscode/quill.vsix"
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    missing = [
        what
        for what, ok in (
            ("node", node),
            ("quill-lsp (make install)", quill_lsp()),
            ("editors/vscode/quill.vsix (make vscode-extension)", vsix.exists()),
            ("code-server (make vscode-e2e-deps)", (E2E / "node_modules/.bin/code-server").exists()),
            ("chromium (apt-get install chromium)", os.path.exists(chromium)),
        )
        if not ok
    ]
    if missing:
        pytest.skip("missing: " + ", ".join(missing))
    assert node
    return node


def _assert_driver_passed(proc: subprocess.CompletedProcess[str], result_name: str) -> None:
    """Print the driver's output; assert that it passed: exit 0, and in its result
    (artifacts/RESULT_NAME) every step ok and no error."""
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    result = json.loads((ARTIFACTS / result_name).read_text())
    failed = [s for s in result["steps"] if not s["ok"]]
    assert proc.returncode == 0 and not failed and not result.get("error"), json.dumps(failed or result, indent=2)[
        :4000
    ]


def test_vscode_extension_end_to_end() -> None:
    node = _node_or_skip()
    proc = subprocess.run([node, str(E2E / "e2e.mjs")], capture_output=True, text=True, timeout=900)
    _assert_driver_passed(proc, "vscode-result.json")


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_vscode_model_offer(tmp_path: Path, mode: str) -> None:
    """The first-run model offer in code-server, in an offer world (tests/offer_world.py).

    online: offer once, Download and Switch with progress, Cancel and Resume, quill.model set,
    the same server reports the new model ready, no offer after a restart.  offline: Show Manual Steps, no
    download (the fake hub saw no request), no offer after a restart, the command offers again.
    """
    node = _node_or_skip()
    from tests.offer_world import offer_world

    # A download long enough to see its progress and to cancel it, short enough to wait for.
    (ARTIFACTS / f"vscode-offer-{mode}-result.json").unlink(missing_ok=True)
    with offer_world(tmp_path, offline=mode == "offline", throttle_s=6.0) as world:
        env = dict(os.environ)
        env.update(
            QUILL_OFFER_MODE=mode,
            QUILL_OFFER_ENV=world.env_json(),
            QUILL_OFFER_MODEL_ID=world.model_id,
            QUILL_OFFER_MODEL_NAME=world.model_name,
        )
        proc = subprocess.run([node, str(E2E / "offer-e2e.mjs")], capture_output=True, text=True, timeout=900, env=env)
        requests = list(world.hub.requests)
        pulled = world.pulled.is_file()
    _assert_driver_passed(proc, f"vscode-offer-{mode}-result.json")
    if mode == "online":
        assert any(method == "GET" for method, _path, _range in requests), requests
        assert pulled, world.pulled
    else:
        assert requests == [], requests
        assert not pulled
