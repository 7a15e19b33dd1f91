"""The adapters' bounded condition cache (r3d.core.cache.ConditionCache)."""

import torch

from r3d.core.cache import ConditionCache


def encoder(calls):
    def encode(prompts):
        calls.append(list(prompts))
        return torch.stack([torch.full((4,), float(len(p))) for p in prompts])  # rows of one batch tensor

    return encode


def test_each_prompt_is_encoded_once_and_values_come_back_in_order():
    calls = []
    cache = ConditionCache(max_bytes=1 << 20)
    first = cache.get(["aa", "b", "aa"], encoder(calls))
    again = cache.get(["b", "ccc", "aa"], encoder(calls))
    assert calls == [["aa", "b"], ["ccc"]]  # distinct missing prompts only, first-seen order
    assert [float(v[0]) for v in first] == [2, 1, 2] and [float(v[0]) for v in again] == [1, 3, 2]


def test_entries_beyond_the_budget_are_evicted_least_recently_used_first():
    """16 bytes per entry, 40-byte budget: at most two entries stay; the one used last survives."""
    calls = []
    cache = ConditionCache(max_bytes=40)
    cache.get(["a", "b"], encoder(calls))
    cache.get(["a"], encoder(calls))  # "a" is now more recent than "b"
    cache.get(["c"], encoder(calls))
    assert "b" not in cache and "a" in cache and "c" in cache and cache.nbytes == 32
    cache.get(["b"], encoder(calls))
    assert calls[-1] == ["b"]  # evicted entries are encoded again


def test_a_batch_larger_than_the_budget_is_still_returned_whole():
    cache = ConditionCache(max_bytes=20)
    values = cache.get(["a", "b", "c"], encoder([]))
    assert len(values) == 3 and len(cache) == 3  # this call's entries are never evicted by itself
    cache.get(["d"], encoder([]))
    assert len(cache) == 1 and "d" in cache


def test_rows_of_a_batch_are_stored_as_their_own_tensors():
    """A cached row must not keep its whole batch alive (eviction would then free nothing)."""
    cache = ConditionCache()
    (row,) = cache.get(["x"], lambda ps: torch.zeros(1000, 4)[: len(ps)])
    assert row.untyped_storage().nbytes() == row.nbytes == 16


def test_tuple_values_are_sized_and_compacted():
    cache = ConditionCache()
    emb, mask = torch.zeros(3, 5, 2), torch.ones(3, 5, dtype=torch.long)
    out = cache.get(["a", "b", "c"], lambda ps: list(zip(emb, mask, strict=True)))
    assert cache.nbytes == 3 * (5 * 2 * 4 + 5 * 8)
    assert torch.equal(out[1][0], emb[1]) and out[1][0].untyped_storage().nbytes() == 40
