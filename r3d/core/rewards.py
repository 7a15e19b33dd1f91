"""The reward-adapter protocol and the weighted mix of several rewards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from r3d.core.errors import R3DError


@runtime_checkable
class Reward(Protocol):
    """Scores a batch of artifacts.

    ``__call__(artifacts, prompts)`` returns ``{component: tensor (B,)}``, float32 on CPU, higher is
    better. The component named exactly ``name`` is the reward's headline score (the one a recipe
    weights); the others are its sub-scores, logged as ``{name}/{component}``. An artifact that is
    None (e.g. an empty decode) scores the reward's minimum, never an error.
    """

    name: str
    higher_is_better: bool
    value_range: tuple[float, float]
    differentiable: bool

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class LatentReward(Protocol):
    """Optional reward hook: the reward of a policy's clean latents x0 (B, ...) → (B,), differentiable
    with respect to x0 (decode and rendering inside, e.g. through the policy's ``DecodesField``).

    Required by ``train.algorithm: nabla`` for every reward with a non-zero weight whose
    ``differentiable`` is True. ``generator`` and ``view_jitter_deg`` randomise the reward's cameras
    (``nabla.random_view``); ``detach_targets`` stops the gradient through targets built from the
    renders (``nabla.reward_context: false``).
    """

    name: str
    differentiable: bool

    def score_latents(
        self,
        policy: Any,
        x0: torch.Tensor,
        prompts: Sequence[str],
        *,
        generator: torch.Generator | None = None,
        view_jitter_deg: float = 0.0,
        detach_targets: bool = False,
    ) -> torch.Tensor: ...


@dataclass
class RewardMix:
    """Weighted sum of several rewards; every component is kept for logging, under the reward's
    label (default: its ``name``; a recipe's entry key, so two rewards of one type stay apart)."""

    rewards: list[Reward]
    weights: list[float]
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = list(self.labels) if self.labels is not None else [r.name for r in self.rewards]
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"reward labels must be unique, got {self.labels}")

    def __call__(
        self, artifacts: Sequence[Any], prompts: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns (total (B,), components) where components maps ``name`` and ``name/sub`` → (B,)."""
        total = torch.zeros(len(artifacts), dtype=torch.float32)
        components: dict[str, torch.Tensor] = {}
        for reward, weight, label in zip(self.rewards, self.weights, self.labels, strict=True):
            scores = reward(artifacts, prompts)
            if reward.name not in scores:
                raise R3DError(
                    f"reward {label!r} returned {sorted(scores)} but no headline score {reward.name!r}"
                )
            for key, value in scores.items():
                value = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
                components[label if key == reward.name else f"{label}/{key}"] = value
            total = total + weight * components[label]
        return total, components
