"""How each model family wants its prompts: data below the engine.

- ``completion``: completion layouts (FIM control tokens, where retrieved context goes,
  stop strings) and the choice of one for a loaded model.
- ``chat``: chat formats for the code actions, and the choice of one for a model.

The registry (which manifest names which layout) and the engine (which builds prompts)
both read these; nothing here imports from ``engine/``, ``protocol/`` or ``backends/``.
"""
