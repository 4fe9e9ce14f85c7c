"""KV-cache bookkeeping for an in-process model: which tokens a context holds, what can
be reused for a new prompt, and snapshots of the states of recently used documents.

One llama.cpp context holds the KV state of one token sequence at a time: the *active
slot*.  A slot is a name the engine gives a prompt lineage (one per document, and a short
"quick" one while the full prompt of a cold document is still being evaluated).  When the
engine asks for another slot, the active state is copied out to host memory
(``llama_state_seq_get_data``) and the other one copied in, so that going back to a file
costs a memory copy instead of a full prompt evaluation.  The snapshots live in an LRU
bounded in bytes (setting ``kvCacheMb``).

:func:`plan_reuse` decides what of the cached tokens serves a new prompt: the common
prefix, then (like llama-server's ``--cache-reuse``) runs of at least ``min_chunk`` tokens
that are still in the cache further on, shifted to their new positions, so that a prompt
whose start moved (the prefix window slid forward, the retrieved context shrank, lines
were deleted above the cursor) does not re-evaluate what it still holds.  A shifted run
was computed after text that is no longer before it, so its state is close to, not equal
to, a fresh evaluation: the same trade llama-server makes.

:func:`best_seed` lets a slot that holds nothing yet (a document just opened) start from
another kept state instead of from nothing: the one whose tokens serve most of its first
prompt (another document's retrieved context, the workspace's likely context evaluated in
idle time), so that those runs are shifted into place instead of evaluated again.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Shift:
    """Move the cached cells at positions [start, end) by ``delta`` (negative: left)."""

    start: int
    end: int
    delta: int


@dataclass
class ReusePlan:
    """How to turn the cached tokens into a prompt.

    Apply in order: remove the cells in each ``removals`` range, apply each ``shifts``
    entry, then remove everything from ``keep`` on; the first ``keep`` prompt tokens are
    then in the cache and ``prompt[keep:]`` is what must be evaluated."""

    keep: int
    common: int  # of which a plain common prefix
    removals: list[tuple[int, int]] = field(default_factory=list)
    shifts: list[Shift] = field(default_factory=list)

    @property
    def shifted(self) -> int:
        return self.keep - self.common


def _match_len(a: np.ndarray, i: int, b: np.ndarray, j: int) -> int:
    n = min(len(a) - i, len(b) - j)
    if n <= 0:
        return 0
    neq = np.flatnonzero(a[i : i + n] != b[j : j + n])
    return int(neq[0]) if neq.size else n


def plan_reuse(cached: Sequence[int] | np.ndarray, prompt: Sequence[int] | np.ndarray, min_chunk: int = 0) -> ReusePlan:
    """What of ``cached`` (the tokens whose KV state the context holds, positions 0..n-1)
    serves ``prompt``.  ``min_chunk`` 0 turns chunk reuse off (common prefix only).

    At least the last prompt token is always left to evaluate, for fresh logits."""
    a = np.asarray(cached, dtype=np.int64)
    b = np.asarray(prompt, dtype=np.int64)
    if len(b) == 0:
        return ReusePlan(keep=0, common=0)
    common = _match_len(a, 0, b, 0)
    limit = len(b) - 1  # the last token is evaluated again for its logits
    common = min(common, limit)
    plan = ReusePlan(keep=common, common=common)
    if min_chunk <= 0 or common >= limit:
        return plan
    head_c, head_p = common, common
    # Candidate starts: cache positions whose token equals the prompt token we need next.
    while head_c < len(a) and head_p < limit:
        n = _match_len(a, head_c, b, head_p)
        n = min(n, limit - head_p)
        if n >= min_chunk:
            if head_c > head_p:
                plan.removals.append((head_p, head_c))
                plan.shifts.append(Shift(head_c, head_c + n, head_p - head_c))
            head_c += n
            head_p += n
            continue
        # Jump to the next cache position holding the token we need.
        rest = np.flatnonzero(a[head_c + 1 :] == b[head_p])
        if not rest.size:
            break
        head_c += 1 + int(rest[0])
    plan.keep = head_p
    return plan


def best_seed(
    states: dict[str, np.ndarray], prompt: Sequence[int] | np.ndarray, min_chunk: int
) -> tuple[str | None, int]:
    """The kept state (slot name -> its tokens) that serves most of ``prompt`` by
    :func:`plan_reuse`, and how many prompt tokens it keeps; (None, 0) when none keeps at
    least ``min_chunk`` (a copy of a state is not worth a few tokens)."""
    best, keep = None, 0
    for name, tokens in states.items():
        if len(tokens):
            k = plan_reuse(tokens, prompt, min_chunk).keep
            if k > keep:
                best, keep = name, k
    return (best, keep) if keep >= max(1, min_chunk) else (None, 0)


@dataclass
class Snapshot:
    tokens: np.ndarray
    data: Any  # a ctypes byte array from llama_state_seq_get_data

    @property
    def nbytes(self) -> int:
        return ctypes.sizeof(self.data) + self.tokens.nbytes


class SnapshotStore:
    """Saved KV states by slot name, least recently used dropped first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Snapshot] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # read from the status request's thread too
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, slot: str, snap: Snapshot) -> bool:
        """Keep ``snap`` (dropping older ones to make room); False when it is too big."""
        with self._lock:
            self._remove(slot)
            if snap.nbytes > self.max_bytes:
                return False
            while self._items and self._bytes + snap.nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
                self.evicted += 1
            self._items[slot] = snap
            self._bytes += snap.nbytes
            return True

    def take(self, slot: str) -> Snapshot | None:
        """Remove and return the snapshot of ``slot`` (it goes back into the context)."""
        with self._lock:
            snap = self._items.get(slot)
            if snap is not None:
                self._remove(slot)
            return snap

    def get(self, slot: str) -> Snapshot | None:
        """The snapshot of ``slot``, kept (a seed for another slot); marks it recently used."""
        with self._lock:
            snap = self._items.get(slot)
            if snap is not None:
                self._items.move_to_end(slot)
            return snap

    def tokens(self) -> dict[str, np.ndarray]:
        """Slot name -> the tokens its snapshot holds."""
        with self._lock:
            return {k: v.tokens for k, v in self._items.items()}

    def peek_tokens(self, slot: str) -> np.ndarray | None:
        with self._lock:
            snap = self._items.get(slot)
            return None if snap is None else snap.tokens

    def drop(self, slot: str) -> None:
        with self._lock:
            self._remove(slot)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def slots(self) -> dict[str, int]:
        """Slot name -> cached tokens, oldest first."""
        with self._lock:
            return {k: len(v.tokens) for k, v in self._items.items()}

    def _remove(self, slot: str) -> None:
        old = self._items.pop(slot, None)
        if old is not None:
            self._bytes -= old.nbytes
