"""The values retrieval works with: scored candidates and the kinds of context they come
from, what the previous request of a document got (its session), statistics, and the order
newly chosen chunks are presented in."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from lsp_server.families.completion import ContextChunk


@dataclass
class Candidate:
    key: tuple[object, ...]  # stable identity across requests
    path: str  # shown to the model
    text: str
    score: float
    kind: str
    source: str = ""  # for ablations (CONTEXT_SOURCES); "" = from the key


# The kinds of retrieved context, for measuring what each adds (benchmarks/quality.py
# --ablation): definitions of imported names, definitions of other names near the cursor
# found elsewhere in the workspace, the file's own imports, the headers of the enclosing
# scopes, definitions in this file outside the prefix window, similar snippets.
CONTEXT_SOURCES = ("imported", "workspace", "imports", "scope", "same-file", "snippet", "usage")
_SOURCE_OF_KEY = {"outline": "imported", "imports": "imports", "imports-ext": "imports", "scope": "scope",
                  "self": "same-file", "snippet": "snippet", "def": "imported", "usage": "usage",
                  "hint": "usage"}


def source_of(c: Candidate) -> str:
    return c.source or _SOURCE_OF_KEY.get(str(c.key[0]), "")


def excluded_sources() -> frozenset[str]:
    """Kinds of context left out, from ``QUILL_CONTEXT_EXCLUDE`` (comma-separated names
    of CONTEXT_SOURCES): a benchmark knob for ablations, not a user setting."""
    raw = os.environ.get("QUILL_CONTEXT_EXCLUDE", "")
    return frozenset(x.strip() for x in raw.split(",") if x.strip())


@dataclass
class _Session:
    """What the previous request of one document got, for hysteresis and stable order."""

    keys: list[tuple[object, ...]] = field(default_factory=list)
    chunks: dict[tuple[object, ...], ContextChunk] = field(default_factory=dict)
    chars_per_token: float = 0.0
    requests: int = 0
    counts: Counter[str] | None = None
    counts_len: int = 0


@dataclass
class RetrievalStats:
    calls: int = 0
    last_ms: float = 0.0
    last_candidates: int = 0
    last_chunks: int = 0


def _group_new(
    new: list[tuple[object, ...]],
    chosen: dict[tuple[object, ...], tuple[Candidate, int]],
    kept: list[tuple[object, ...]],
) -> list[tuple[object, ...]]:
    """Order new chunks by their file's best score (ascending), chunks of one file together,
    a file continuing the last kept chunk's file first (its header is then shared)."""
    if len(new) <= 1:
        return new
    by_path: dict[str, list[tuple[object, ...]]] = {}
    for k in new:
        by_path.setdefault(chosen[k][0].path, []).append(k)
    last_path = chosen[kept[-1]][0].path if kept else None

    def group_rank(item: tuple[str, list[tuple[object, ...]]]) -> tuple[int, float]:
        path, keys = item
        return (0 if path == last_path else 1, max(chosen[k][0].score for k in keys))

    out: list[tuple[object, ...]] = []
    for _, keys in sorted(by_path.items(), key=group_rank):
        out.extend(keys)
    return out
