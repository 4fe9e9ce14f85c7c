"""The real server with a fault injected into generation, for test_local_faults.py.

``LlamaCppBackend.generate`` raises RuntimeError in the middle of generation (from inside
the decode loop, after the first token) whenever the prompt contains TRIGGER; any other
prompt runs as usual.  Then it runs ``lsp_server.cli.main`` with the command line given:

    python tests/stress/faulty_server.py --log-level warning
"""

from __future__ import annotations

import sys
import threading

from lsp_server.backends.base import GenerationRequest, GenerationResult
from lsp_server.backends.llama_cpp import LlamaCppBackend
from lsp_server.cli import main

TRIGGER = "QUILL_INJECT_FAULT"
_generate = LlamaCppBackend.generate


def _boom(text: str) -> bool:
    raise RuntimeError(f"injected fault in generation after {len(text)} characters")


def generate(self: LlamaCppBackend, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
    if TRIGGER in self.detokenize(request.prompt):
        request.should_stop = _boom
    return _generate(self, request, cancel)


LlamaCppBackend.generate = generate  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
