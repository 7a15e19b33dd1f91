"""Motion gold measures: retrieval with the text–motion evaluator the recipe does not train on.

``t2m_retrieval`` uses a T2M evaluator (default r3d's tiny T2M; a published ``finest.tar`` with
``glove`` and ``stats_dir``), ``tmr_retrieval`` a TMR one (default r3d's tiny TMR). Per sample: whether
the prompt ranks first / in the top 3 among 31 distractor captions (R-precision), and the evaluator's
text–motion matching distance. The headline is the top-3 hit (its mean is R-precision@3).
:func:`r3d.commands.runner.build_gold` refuses one whose evaluator is also a reward's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from r3d.rewards.motion import MotionMatchingReward, MotionRPrecisionReward


def reward_evaluators(reward: Any) -> set[str]:
    """Evaluator specs a motion reward (or a combined one) scores with."""
    found = {getattr(reward, "evaluator_spec", None)}
    for part in ("matching", "rprecision"):
        found.add(getattr(getattr(reward, part, None), "evaluator_spec", None))
    return {f for f in found if f}


class _RetrievalGold:
    name = "retrieval"
    higher_is_better = True
    value_range = (0.0, 1.0)
    guarded = True
    default_evaluator = "tiny-t2m"

    def __init__(
        self,
        evaluator: str | None = None,
        glove: str | None = None,
        stats_dir: str | None = None,
        pool: Sequence[str] | str | None = "synthetic",
        batch_size: int = 64,
    ) -> None:
        spec = evaluator or self.default_evaluator
        files = {"glove": glove, "stats_dir": stats_dir, "batch_size": batch_size}
        self.rprecision = MotionRPrecisionReward(spec, mode="top3", pool=pool, **files)
        self.matching = MotionMatchingReward(spec, **files)
        self.evaluator_spec = self.rprecision.evaluator_spec

    def conflicts(self, rewards: Sequence[Any]) -> str | None:
        """A message when a training reward scores with this measure's evaluator, else None."""
        for reward in rewards:
            if self.evaluator_spec in reward_evaluators(reward):
                return f"reward {reward.name} scores with the same evaluator ({self.evaluator_spec})"
        return None

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Headline = top-3 hit; ``top1``; ``matching`` distance (lower is better), float32 (B,)."""
        r = self.rprecision(artifacts, prompts)
        m = self.matching(artifacts, prompts)
        return {self.name: r["top3"], "top1": r["top1"], "matching": m["distance"].float()}


class T2MRetrievalGold(_RetrievalGold):
    """R-precision and matching distance under a T2M evaluator (gold of TMR-trained recipes)."""

    name = "t2m_retrieval"
    default_evaluator = "tiny-t2m"


class TMRRetrievalGold(_RetrievalGold):
    """R-precision and matching distance under a TMR evaluator (gold of T2M-trained recipes)."""

    name = "tmr_retrieval"
    default_evaluator = "tiny-tmr"
