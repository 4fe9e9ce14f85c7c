"""VS Code, for real: code-server with the packaged extension, driven by playwright-core.

The driver is vscode/e2e.mjs (Node); this wrapper runs it when its dependencies are there
(`make vscode-e2e-deps`, `make vscode-extension`) and reports its steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.editors.conftest import ARTIFACTS, REPO, quill_lsp

pytestmark = [pytest.mark.model, pytest.mark.slow]

E2E = REPO / "tests/editors/vscode"


def test_vscode_extension_end_to_end() -> None:
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
    proc = subprocess.run([node, str(E2E / "e2e.mjs")], capture_output=True, text=True, timeout=900)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    result = json.loads((ARTIFACTS / "vscode-result.json").read_text())
    failed = [s for s in result["steps"] if not s["ok"]]
    assert proc.returncode == 0 and not failed and not result.get("error"), json.dumps(failed or result, indent=2)[
        :4000
    ]
