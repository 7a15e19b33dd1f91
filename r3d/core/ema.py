"""Exponential moving average of the trainable (LoRA) weights, as flow_grpo and Flow-Factory keep it.

After optimizer step n (0-based), when (n + 1) % update_interval == 0, every tracked weight moves
toward the live one: ema ← ema + (1 − d)(θ − ema), with d = min((1 + n)/(10 + n), decay) when
``warmup`` (flow_grpo's schedule) and d = decay otherwise. The averages are kept in fp32 by parameter
name, so a checkpoint holds them independently of the parameter order and export can find them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from r3d.core.errors import R3DError


class ParameterEMA:
    """EMA of ``named`` parameters (name → tensor); ``step`` counts optimizer steps seen so far."""

    def __init__(
        self, named: dict[str, nn.Parameter], decay: float, update_interval: int = 1, warmup: bool = True
    ) -> None:
        self.params = named
        self.decay = float(decay)
        self.update_interval = int(update_interval)
        self.warmup = bool(warmup)
        self.step = 0
        self.weights = {k: p.detach().float().clone() for k, p in named.items()}

    def current_decay(self) -> float:
        """The decay d applied at the present step (warm-up ramp capped by ``decay``)."""
        if not self.warmup:
            return self.decay
        return min((1 + self.step) / (10 + self.step), self.decay)

    @torch.no_grad()
    def update(self) -> None:
        """Call once after every optimizer step."""
        if (self.step + 1) % self.update_interval == 0:
            keep = self.current_decay()
            for name, p in self.params.items():
                avg = self.weights[name]
                avg.add_(p.detach().to(avg.device, avg.dtype) - avg, alpha=1.0 - keep)
        self.step += 1

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Run the body with the averaged weights in the live parameters, restoring them after."""
        live = {k: p.detach().clone() for k, p in self.params.items()}
        copy_into(self.params, self.weights)
        try:
            yield
        finally:
            copy_into(self.params, live)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "weights": {k: v.clone() for k, v in self.weights.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state["weights"]
        if set(weights) != set(self.params):
            raise R3DError(
                f"checkpoint EMA has other weights than this adapter ({len(weights)} vs {len(self.params)})"
            )
        self.weights = {k: weights[k].float().clone() for k in self.params}
        self.step = int(state["step"])


@torch.no_grad()
def copy_into(params: dict[str, nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    """Copy ``values[name]`` into each parameter (cast to its dtype and device)."""
    missing = sorted(set(params) - set(values))
    if missing:
        raise R3DError(f"no stored weights for {missing[0]} (and {len(missing) - 1} more)")
    for name, p in params.items():
        p.copy_(values[name].to(p.device, p.dtype))


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable parameters of ``module`` by name (the LoRA weights of a peft model)."""
    return {k: p for k, p in module.named_parameters() if p.requires_grad}
