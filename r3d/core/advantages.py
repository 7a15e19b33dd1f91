"""Group-relative advantages (GRPO): (r − mean of the prompt's group) / (std + eps)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor | Sequence,
    eps: float = 1e-4,
    global_std: bool = False,
) -> torch.Tensor:
    """Advantages (N,) from rewards (N,) and a group id per sample (ints or hashable prompts).

    A_i = (r_i − mean_{g(i)}) / (std + eps), with the population std (ddof = 0) of the sample's
    group, or of all N rewards when ``global_std``. Invariant to r → a·r + b for a > 0 (up to eps).
    Computed in float64 and returned as float32; a group whose rewards are all equal gets exactly 0
    (float32 rounding of its mean would otherwise leave ±6e-4 on every sample).
    """
    rewards = torch.as_tensor(rewards).to(torch.float64).reshape(-1)
    inverse = _group_index(group_ids, rewards.shape[0])
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    zeros = torch.zeros(n_groups, dtype=torch.float64)
    counts = zeros.clone().index_add_(0, inverse, torch.ones_like(rewards))
    means = zeros.clone().index_add_(0, inverse, rewards) / counts
    centred = rewards - means[inverse]
    if global_std:
        std = rewards.std(unbiased=False).expand_as(rewards)
    else:
        var = zeros.clone().index_add_(0, inverse, centred**2) / counts
        std = var.sqrt()[inverse]
    advantages = centred / (std + eps)
    constant = _constant_groups(rewards, inverse, n_groups)
    return advantages.masked_fill(constant[inverse], 0.0).to(torch.float32)


def _constant_groups(rewards: torch.Tensor, inverse: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(G,) bool: True for the groups whose rewards are all exactly equal."""
    lo = torch.full((n_groups,), math.inf, dtype=rewards.dtype).scatter_reduce(0, inverse, rewards, "amin")
    hi = torch.full((n_groups,), -math.inf, dtype=rewards.dtype).scatter_reduce(0, inverse, rewards, "amax")
    return lo == hi


def _group_index(group_ids: torch.Tensor | Sequence, n: int) -> torch.Tensor:
    """Map arbitrary group ids to 0..G−1 (first-appearance order)."""
    ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    if len(ids) != n:
        raise ValueError(f"{n} rewards but {len(ids)} group ids")
    index: dict = {}
    return torch.tensor([index.setdefault(g, len(index)) for g in ids], dtype=torch.long)


def zero_variance_fraction(
    rewards: torch.Tensor, group_ids: torch.Tensor | Sequence, tol: float = 1e-8
) -> float:
    """Fraction of groups whose rewards are all equal (they carry no learning signal)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)
    inverse = _group_index(group_ids, rewards.shape[0])
    flat = [rewards[inverse == g] for g in range(int(inverse.max()) + 1)] if inverse.numel() else []
    if not flat:
        return 0.0
    return sum(float(r.max() - r.min()) <= tol for r in flat) / len(flat)


@dataclass
class AdvantageStats:
    advantages: torch.Tensor
    zero_variance_fraction: float


class PerPromptStatTracker:
    """Per-prompt advantages with an optional cross-epoch buffer (DDPO's ``PerPromptStatTracker``).

    With ``buffer_size`` = 0 (default) statistics come from the current group only (GRPO). With
    ``buffer_size`` > 0 each prompt keeps its last ``buffer_size`` rewards across iterations and
    normalises with them once it has at least ``min_count`` (else with the batch statistics).
    ``clip`` clamps advantages to ±clip. Its state is saved in checkpoints (``state_dict``).
    """

    def __init__(
        self,
        buffer_size: int = 0,
        min_count: int = 16,
        eps: float = 1e-4,
        global_std: bool = False,
        clip: float | None = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.eps = eps
        self.global_std = global_std
        self.clip = clip
        self.buffers: dict[str, deque[float]] = {}

    def update(self, prompts: Sequence[str], rewards: torch.Tensor) -> AdvantageStats:
        rewards = torch.as_tensor(rewards).to(torch.float64).reshape(-1)
        prompts = list(prompts)
        zero_frac = zero_variance_fraction(rewards, prompts)
        if self.buffer_size <= 0:
            adv = group_advantages(rewards, prompts, eps=self.eps, global_std=self.global_std)
        else:
            adv = torch.empty_like(rewards)
            batch_std = rewards.std(unbiased=False)
            for prompt in dict.fromkeys(prompts):
                idx = torch.tensor([i for i, p in enumerate(prompts) if p == prompt])
                buf = self.buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
                buf.extend(rewards[idx].tolist())
                if len(buf) >= self.min_count:
                    hist = torch.tensor(list(buf), dtype=torch.float64)
                    mean, std = hist.mean(), hist.std(unbiased=False)
                else:
                    mean, std = rewards.mean(), batch_std
                if self.global_std:
                    std = batch_std
                adv[idx] = (rewards[idx] - mean) / (std + self.eps)
            adv = adv.to(torch.float32)
        if self.clip is not None:
            adv = adv.clamp(-self.clip, self.clip)
        return AdvantageStats(adv, zero_frac)

    def state_dict(self) -> dict:
        return {"buffers": {k: list(v) for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = {
            k: deque(v, maxlen=self.buffer_size or None) for k, v in state.get("buffers", {}).items()
        }
