"""``semantic_prob``: the PointNet class probability as a gold measure, for recipes that do not train on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from r3d.rewards.semantic import SemanticReward


class SemanticGold(SemanticReward):
    """Probability (and top-1 accuracy) of the prompt's class under r3d's PointNet classifier.

    A gold measure only where the recipe's rewards do not include ``semantic`` (the same classifier):
    :func:`r3d.commands.runner.build_gold_set` refuses it otherwise. Options are those of
    :class:`r3d.rewards.semantic.SemanticReward`.
    """

    name = "semantic_prob"
    guarded = True
    conflicts_with = ("semantic",)

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``semantic_prob`` = p(prompt class), ``accuracy`` = top-1 hit, float32 (B,)."""
        scores = super().__call__(artifacts, prompts)
        return {self.name: scores[self.name], "accuracy": scores["correct"]}
