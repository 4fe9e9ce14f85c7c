import ctypes

import numpy as np
import pytest

from lsp_server.backends.kv_store import Snapshot, SnapshotStore, best_seed, plan_reuse


def apply(cached: list[int], plan) -> list[int]:
    """What the cache holds after the plan, by position (a model of llama.cpp's ops)."""
    cells = {pos: tok for pos, tok in enumerate(cached)}
    for (p0, p1), shift in zip(plan.removals, plan.shifts, strict=True):
        cells = {p: t for p, t in cells.items() if not p0 <= p < p1}
        cells = {(p + shift.delta if shift.start <= p < shift.end else p): t for p, t in cells.items()}
    return [cells[p] for p in range(plan.keep)]


def test_common_prefix_and_the_last_token_is_always_evaluated_again():
    plan = plan_reuse([1, 2, 3, 4], [1, 2, 3, 4])
    assert plan.keep == 3 and plan.common == 3 and not plan.shifts
    plan = plan_reuse([1, 2, 3], [1, 2, 3, 4, 5])
    assert plan.keep == 3
    assert plan_reuse([], [7, 8]).keep == 0
    assert plan_reuse([1, 2], []).keep == 0


def test_without_chunk_reuse_only_the_common_prefix_counts():
    cached = list(range(100))
    prompt = [0, 1] + list(range(50, 100)) + [500]
    assert plan_reuse(cached, prompt, 0).keep == 2


def test_a_window_that_slid_forward_is_shifted_not_evaluated_again():
    cached = [1] + list(range(100, 300))  # bos + 200 tokens
    prompt = [1] + list(range(150, 300)) + [900, 901]  # the start moved 50 tokens on
    plan = plan_reuse(cached, prompt, 32)
    assert plan.common == 1
    assert plan.keep == 1 + 150
    assert plan.shifted == 150
    assert apply(cached, plan) == prompt[: plan.keep]


def test_deleted_lines_in_the_middle_keep_what_follows_them():
    a, b, c = list(range(10, 60)), list(range(60, 70)), list(range(70, 140))
    cached = a + b + c
    prompt = a + c + [999]
    plan = plan_reuse(cached, prompt, 32)
    assert plan.keep == len(a) + len(c)
    assert apply(cached, plan) == prompt[: plan.keep]


def test_runs_shorter_than_the_minimum_are_evaluated_again():
    cached = list(range(100))
    prompt = [0, 1, 2] + list(range(40, 60)) + [777]  # a 20-token run
    assert plan_reuse(cached, prompt, 32).keep == 3


def test_inserted_text_stops_the_reuse_at_the_insertion():
    cached = list(range(200))
    prompt = list(range(100)) + [5000, 5001] + list(range(100, 200))
    assert plan_reuse(cached, prompt, 32).keep == 100


@pytest.mark.parametrize("seed", range(20))
def test_random_edits_give_a_plan_that_spells_the_prompt(seed: int):
    rng = np.random.default_rng(seed)
    cached = list(rng.integers(0, 50, size=300))
    prompt = list(cached)
    for _ in range(3):  # delete some spans and append a tail
        i = int(rng.integers(0, len(prompt) - 10))
        del prompt[i : i + int(rng.integers(1, 40))]
    prompt += list(rng.integers(0, 50, size=5))
    plan = plan_reuse(cached, prompt, 8)
    assert 0 <= plan.keep < len(prompt)
    assert apply(cached, plan) == prompt[: plan.keep]


def snap(n_bytes: int, n_tokens: int = 4) -> Snapshot:
    return Snapshot(tokens=np.zeros(n_tokens, dtype=np.intc), data=(ctypes.c_uint8 * n_bytes)())


def test_snapshot_store_keeps_the_most_recent_within_its_bytes():
    store = SnapshotStore(1000)
    assert store.put("a", snap(400)) and store.put("b", snap(400))
    assert store.put("c", snap(400))  # "a" goes
    assert set(store.slots()) == {"b", "c"} and store.evicted == 1
    assert store.nbytes <= 1000
    taken = store.take("b")
    assert taken is not None and "b" not in store.slots()
    assert store.take("b") is None
    assert not store.put("huge", snap(5000))
    assert SnapshotStore(0).enabled is False


def test_a_new_slot_starts_from_the_state_that_serves_most_of_its_prompt():
    workspace = np.array([1] + list(range(100, 300)))  # bos + the workspace's likely context
    other = np.array([1] + list(range(500, 560)))  # another document
    prompt = [1] + list(range(200, 260)) + list(range(900, 950))  # reads part of the first
    name, keep = best_seed({"workspace:": workspace, "full:b": other}, prompt, 32)
    assert name == "workspace:" and keep == 61
    # A run shorter than the minimum is not worth copying a state for.
    assert best_seed({"full:b": other}, [1] + list(range(500, 510)) + [7] * 40, 32) == (None, 0)
    assert best_seed({}, prompt, 32) == (None, 0)


def test_a_seed_stays_in_the_store_and_counts_as_recently_used():
    store = SnapshotStore(1000)
    assert store.put("workspace:", snap(400)) and store.put("b", snap(400))
    assert store.get("workspace:") is not None and store.get("nothing") is None
    assert set(store.tokens()) == {"workspace:", "b"}
    assert store.put("c", snap(400))  # "b", not the seed just used, goes
    assert set(store.slots()) == {"workspace:", "c"}
