"""The action job (:func:`run_action`): prompt, generate and clean one action.  It runs on
the engine's model worker thread (through ``CompletionEngine.run_exclusive``), checks a
cancel flag between tokens and reports progress; :class:`ActionResult` is what it returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lsp_server.engine.actions.errors import ActionCancelled
from lsp_server.engine.actions.hygiene import clean_explanation, clean_rewrite, looping
from lsp_server.engine.actions.prompts import ActionRequest, plan_prompt
from lsp_server.engine.actions.spec import ACTIONS
from lsp_server.families.chat import prompt_style

if TYPE_CHECKING:
    from lsp_server.engine.model import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class ActionResult:
    text: str  # cleaned code (rewrites, without the original indentation) or Markdown
    raw: str
    stop_reason: str
    prompt_tokens: int
    generated_tokens: int
    style: str
    timings_ms: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[int, int], None]  # (tokens generated, max tokens)


def run_action(
    model: LoadedModel,
    req: ActionRequest,
    cancel: threading.Event,
    on_progress: ProgressCallback | None = None,
    progress_every: int = 8,
) -> ActionResult:
    """Prompt, generate and clean one action.  Runs on the model worker thread.

    Raises ActionCancelled when ``cancel`` is set (also while still queued), ActionError
    subclasses with a message for the user.
    """
    import time

    from lsp_server.backends import GenerationRequest

    if cancel.is_set():
        raise ActionCancelled()
    t0 = time.perf_counter()
    backend = model.backend
    info = backend.info
    manifest = model.manifest
    style = prompt_style(
        manifest.chat_template if manifest is not None else None,
        info.chat_template,
        has_manifest=manifest is not None,
    )
    planned = plan_prompt(backend, info.n_ctx, req, style, info.name or "the model")
    prompt = planned.prompt
    spec = ACTIONS[req.kind]
    stops = tuple(dict.fromkeys(prompt.stop + tuple(model.stop)))
    # Markup to cut from the answer: the family's and the model's stop strings, not the
    # closing fence (an answer that re-opens a fence is unwrapped by extract_code).
    markup = tuple(
        s for s in dict.fromkeys(tuple(style.stop if style is not None else ()) + tuple(model.stop)) if "`" not in s
    )
    count = 0

    def should_stop(text: str) -> bool:
        nonlocal count
        count += 1
        if on_progress is not None and (count == 1 or count % progress_every == 0):
            try:
                on_progress(count, planned.max_tokens)
            except Exception:  # progress is cosmetic; never fail the job over it
                pass
        return (not spec.rewrite) and looping(text)

    t1 = time.perf_counter()
    gen = backend.generate(
        GenerationRequest(
            prompt=planned.tokens,
            max_tokens=planned.max_tokens,
            temperature=req.temperature,
            stop=stops,
            should_stop=should_stop,
        ),
        cancel,
    )
    if gen.stop_reason == "cancelled" or cancel.is_set():
        raise ActionCancelled()
    if spec.rewrite:
        text = clean_rewrite(
            prompt.answer_prefix + gen.text,
            fenced_answer=prompt.fenced_answer,
            original=req.code,
            stop_reason=gen.stop_reason,
            extra_markup=markup,
        )
    else:
        text = clean_explanation(gen.text, stop_reason=gen.stop_reason, extra_markup=markup)
    return ActionResult(
        text=text,
        raw=prompt.answer_prefix + gen.text,
        stop_reason=gen.stop_reason,
        prompt_tokens=len(planned.tokens),
        generated_tokens=len(gen.tokens),
        style=prompt.style,
        timings_ms={"prompt_build": (t1 - t0) * 1000, "prompt_eval": gen.prompt_ms, "generate": gen.generate_ms},
    )
