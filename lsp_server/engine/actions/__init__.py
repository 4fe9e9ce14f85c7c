"""Code actions on a selection: explain it, or rewrite it (refactor, docstring, type hints,
simplify).

Pure logic, no pygls and no file IO.  The modules, each depending only on those listed
before it:

* :mod:`.spec`: which actions there are and which are offered for a language
  (:data:`ACTIONS`, :func:`available_actions`, :func:`kind_matches`), and what each
  rewrite asks of the model (:func:`task_for`);
* :mod:`.errors`: the errors whose message goes to the user (:class:`ActionError`), and
  cancelling (:class:`CancelToken`; :class:`ActionSlot`, where a newer action cancels the
  one still running);
* :mod:`.region`: which code an action works on (the selection, or the enclosing
  function/class found in a tree-sitter tree) and how its indentation is taken off for
  the model and put back on the model's answer (:class:`CodeRegion`);
* :mod:`.prompts`: the prompt, per model family: the model's chat format for instruct
  models (from :mod:`lsp_server.families.chat`: the registry's ``chat_template`` name,
  else the GGUF's own Jinja template), a plain Markdown instruction prompt for base
  models; counted with the model's own tokenizer against its context window
  (:func:`plan_prompt`);
* :mod:`.hygiene`: output hygiene: chat markup and Markdown fences stripped, truncated
  rewrites refused with a message the user can act on (:func:`clean_rewrite`,
  :func:`clean_explanation`);
* :mod:`.checks`: unparseable rewrites refused (:func:`validate_rewrite`), and rewrites
  that did more (or less) than "Add docstring" / "Add type hints" promise
  (:func:`check_intent`);
* :mod:`.job`: :func:`run_action`, the job that runs on the engine's model worker thread
  (through ``CompletionEngine.run_exclusive``); it checks a cancel flag between tokens.

Everything public is re-exported here: ``from lsp_server.engine import actions as act``.
"""

from __future__ import annotations

from lsp_server.engine.actions.checks import (
    SyntaxCheck,
    check_intent,
    combined_check,
    first_error,
    python_check,
    tree_sitter_check,
    validate_rewrite,
)
from lsp_server.engine.actions.errors import (
    ActionCancelled,
    ActionError,
    ActionSlot,
    CancelToken,
    RewriteRejected,
    SelectionTooLarge,
)
from lsp_server.engine.actions.hygiene import (
    clean_explanation,
    clean_rewrite,
    extract_code,
    looping,
    strip_chat_markup,
)
from lsp_server.engine.actions.job import ActionResult, ProgressCallback, run_action
from lsp_server.engine.actions.prompts import (
    EXPLAIN_MAX_TOKENS,
    EXPLAIN_MIN_TOKENS,
    REWRITE_EXTRA_TOKENS,
    SYSTEM_PROMPT,
    ActionPrompt,
    ActionRequest,
    PlannedPrompt,
    build_prompt,
    fence_for,
    plan_prompt,
    python_docstring_primer,
    tokenize_segments,
)
from lsp_server.engine.actions.region import (
    DEFINITION_TYPES,
    CodeRegion,
    byte_to_index,
    enclosing_definition,
    index_to_byte,
    probe_offset,
    relocate_region,
)
from lsp_server.engine.actions.spec import (
    ACTIONS,
    LANGUAGE_NAMES,
    TYPE_HINT_LANGUAGES,
    ActionKind,
    ActionSpec,
    available_actions,
    kind_matches,
    task_for,
)

__all__ = [
    # spec
    "ACTIONS",
    "LANGUAGE_NAMES",
    "TYPE_HINT_LANGUAGES",
    "ActionKind",
    "ActionSpec",
    "available_actions",
    "kind_matches",
    "task_for",
    # errors
    "ActionCancelled",
    "ActionError",
    "ActionSlot",
    "CancelToken",
    "RewriteRejected",
    "SelectionTooLarge",
    # region
    "DEFINITION_TYPES",
    "CodeRegion",
    "byte_to_index",
    "enclosing_definition",
    "index_to_byte",
    "probe_offset",
    "relocate_region",
    # prompts
    "EXPLAIN_MAX_TOKENS",
    "EXPLAIN_MIN_TOKENS",
    "REWRITE_EXTRA_TOKENS",
    "SYSTEM_PROMPT",
    "ActionPrompt",
    "ActionRequest",
    "PlannedPrompt",
    "build_prompt",
    "fence_for",
    "plan_prompt",
    "python_docstring_primer",
    "tokenize_segments",
    # hygiene
    "clean_explanation",
    "clean_rewrite",
    "extract_code",
    "looping",
    "strip_chat_markup",
    # checks
    "SyntaxCheck",
    "check_intent",
    "combined_check",
    "first_error",
    "python_check",
    "tree_sitter_check",
    "validate_rewrite",
    # job
    "ActionResult",
    "ProgressCallback",
    "run_action",
]
