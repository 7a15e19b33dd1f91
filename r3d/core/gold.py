"""Gold measures at evaluation time and the over-optimisation guard (no backend imports).

Gold measures (``eval.gold``; :mod:`r3d.gold`) judge the held-out samples with something the policy is
never trained on. :class:`GoldSet` calls them and turns their per-sample scores into metrics:
``eval/gold/<name>`` (the headline's mean), ``eval/gold/<name>/<component>`` (NaN-skipping means) and
``eval/gold/<name>/se`` (standard error of the headline, std/√n: the evaluation noise).

:class:`OverOptimisationGuard` reads evaluation records. For each guarded gold headline it keeps the best
evaluation so far; an evaluation is a *drop* when the gold is below that best by more than
``z·√(se² + se_best²)`` while the held-out reward (``eval/reward``, the training reward on the held-out
samples) is above the reward at that best. ``patience`` consecutive drops fire the guard. The guard is a
pure function of the records, so a resumed run and ``summary.json`` replay it from ``metrics.jsonl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from r3d.core.rewards import Reward

PREFIX = "eval/gold/"


@dataclass
class EvalContext:
    """What a ``needs_context`` gold measure gets besides the artifacts.

    ``latents``: the evaluation's clean latents (B, ...); ``cond``: their conditions; ``reference()``:
    (latents, artifacts) of the base model (adapter disabled) from the same noise, computed once.
    """

    latents: torch.Tensor
    cond: Any
    reference: Callable[[], tuple[torch.Tensor, list[Any]]]
    policy: Any = None


@dataclass
class GoldSet:
    """The recipe's gold measures, called at each evaluation (never during training)."""

    measures: list[Reward]

    @property
    def guarded(self) -> list[str]:
        """Headlines the guard watches, in recipe order (the first one selects the best-gold checkpoint)."""
        return [m.name for m in self.measures if getattr(m, "guarded", True)]

    def __call__(
        self, artifacts: Sequence[Any], prompts: Sequence[str], context: EvalContext
    ) -> dict[str, float]:
        """``eval/gold/...`` metrics of one evaluation (see the module docstring)."""
        out: dict[str, float] = {}
        for m in self.measures:
            kwargs = {"context": context} if getattr(m, "needs_context", False) else {}
            scores = m(artifacts, prompts, **kwargs)
            for key, value in scores.items():
                value = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
                name = m.name if key == m.name else f"{m.name}/{key}"
                finite = value[~torch.isnan(value)]
                out[PREFIX + name] = float(finite.mean()) if finite.numel() else math.nan
            head = torch.as_tensor(scores[m.name], dtype=torch.float64).reshape(-1)
            n = head.numel()
            out[f"{PREFIX}{m.name}/se"] = float(head.std() / math.sqrt(n)) if n > 1 else 0.0
        return out


@dataclass
class _Track:
    best: float
    best_se: float
    best_reward: float
    best_iteration: int
    streak: int = 0


@dataclass
class OverOptimisationGuard:
    """Watches guarded gold headlines against the held-out reward (see the module docstring).

    ``update(record)`` returns the guard events of that evaluation record (each a dict: ``gold``,
    ``iteration``, ``value``, ``best``, ``best_iteration``, ``noise``, ``reward``, ``best_reward``,
    ``streak``); an event is reported at every evaluation once the streak reaches ``patience``.
    """

    golds: list[str]
    patience: int = 2
    z: float = 2.0
    tracks: dict[str, _Track] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    new_best: bool = False  # whether the last update improved the first guarded gold

    def update(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Feed one evaluation record (with ``eval/reward`` and ``eval/gold/...``); returns its events."""
        self.new_best = False
        if "eval/reward" not in record:
            return []
        reward, it = float(record["eval/reward"]), int(record.get("iteration", 0))
        fired = []
        for n, gold in enumerate(self.golds):
            value = record.get(PREFIX + gold)
            if value is None or not math.isfinite(value):
                continue
            se = float(record.get(f"{PREFIX}{gold}/se", 0.0))
            track = self.tracks.get(gold)
            if track is None or value > track.best:
                self.tracks[gold] = _Track(value, se, reward, it)
                self.new_best = self.new_best or n == 0
                continue
            noise = self.z * math.sqrt(se**2 + track.best_se**2)
            dropping = track.best - value > noise and reward > track.best_reward
            track.streak = track.streak + 1 if dropping else 0
            if track.streak >= self.patience:
                event = {
                    "gold": gold,
                    "iteration": it,
                    "value": value,
                    "best": track.best,
                    "best_iteration": track.best_iteration,
                    "noise": noise,
                    "reward": reward,
                    "best_reward": track.best_reward,
                    "streak": track.streak,
                }
                fired.append(event)
        self.events.extend(fired)
        return fired

    def replay(self, records: Sequence[dict[str, Any]]) -> OverOptimisationGuard:
        """Feed every record in order (e.g. a resumed run's ``metrics.jsonl``); returns self."""
        for record in records:
            self.update(record)
        return self

    def summary(self) -> dict[str, Any]:
        """The ``guard`` entry of summary.json."""
        return {
            "watching": list(self.golds),
            "patience": self.patience,
            "z": self.z,
            "fired": bool(self.events),
            "first": self.events[0] if self.events else None,
            "events": self.events,
            "best": {g: {"value": t.best, "iteration": t.best_iteration} for g, t in self.tracks.items()},
        }


def describe(event: dict[str, Any]) -> str:
    """One log line for a guard event."""
    return (
        f"over-optimisation guard: gold {event['gold']} = {event['value']:.4f} at iteration "
        f"{event['iteration']}, below its best {event['best']:.4f} (iteration {event['best_iteration']}) by "
        f"more than the noise {event['noise']:.4f} for {event['streak']} evaluations while the held-out "
        f"reward rose {event['best_reward']:.4f} → {event['reward']:.4f}"
    )
