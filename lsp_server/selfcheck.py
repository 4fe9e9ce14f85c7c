"""``python -m lsp_server.selfcheck``: load the default model and run a few tokens.

Used by ``make install`` to catch a llama.cpp build that crashes on this CPU (a wheel
cached from a native build crashes with SIGSEGV on CPUs that report AMX).  Exit 0 when a
real completion ran.
"""

from __future__ import annotations

import sys
import threading


def main() -> int:
    from lsp_server.backends import GenerationRequest
    from lsp_server.config import Settings
    from lsp_server.engine.model import load_model

    model = load_model(Settings(context_tokens=512))
    backend = model.backend
    prompt = backend.bos_tokens() + backend.tokenize("def add(a, b):\n    return")
    result = backend.generate(GenerationRequest(prompt=prompt, max_tokens=4), threading.Event())
    print(f"self-check: {model.description}; generated {len(result.tokens)} tokens: {result.text!r}")
    return 0 if result.tokens else 1


if __name__ == "__main__":
    sys.exit(main())
