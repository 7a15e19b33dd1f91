"""A bounded per-prompt cache of encoded conditions, shared by the policy adapters.

Conditioners are frozen, so a prompt (or condition image path) is encoded once and its tensors kept;
a large prompt file would otherwise keep every encoding alive for the whole run. Entries beyond
``max_bytes`` are evicted least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of cached condition tensors per adapter


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _compact(value: T) -> T:
    """``value`` with every tensor that views a larger storage (a row of a batch) copied out, so an
    entry holds only its own bytes and eviction really frees them."""

    def own(t: torch.Tensor) -> torch.Tensor:
        return t.clone() if t.untyped_storage().nbytes() > t.nbytes else t

    if isinstance(value, torch.Tensor):
        return own(value)  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(_compact(v) for v in value)  # type: ignore[return-value]
    return value


class ConditionCache(Generic[T]):
    """prompt → encoded condition (a tensor or a tuple of tensors), at most ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, T] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, prompt: object) -> bool:
        return prompt in self._items

    def get(self, prompts: Sequence[str], encode: Callable[[list[str]], Sequence[T]]) -> list[T]:
        """Each prompt's condition, in order. ``encode`` is called once, with the distinct prompts not
        cached (first-seen order), and must return one value per prompt. This call's values are
        returned even when they alone exceed ``max_bytes``; older entries are evicted first."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._items]
        fresh: dict[str, T] = {}
        if missing:
            values = list(encode(missing))
            if len(values) != len(missing):
                raise ValueError(f"encode returned {len(values)} values for {len(missing)} prompts")
            fresh = {p: _compact(v) for p, v in zip(missing, values, strict=True)}
        found = {p: fresh[p] if p in fresh else self._items[p] for p in dict.fromkeys(prompts)}
        for prompt, value in found.items():
            self._put(prompt, value)
        self._evict(keep=len(found))
        return [found[p] for p in prompts]

    def _put(self, prompt: str, value: T) -> None:
        if prompt in self._items:
            self._items.move_to_end(prompt)
            return
        self._items[prompt] = value
        self._bytes[prompt] = size = sum(t.nbytes for t in _tensors(value))
        self.nbytes += size

    def _evict(self, keep: int) -> None:
        """Drop least recently used entries while over budget, never the ``keep`` most recent."""
        while self.nbytes > self.max_bytes and len(self._items) > keep:
            prompt, _ = self._items.popitem(last=False)
            self.nbytes -= self._bytes.pop(prompt)
