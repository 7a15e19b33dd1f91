"""A tiny flow policy and reward for trainer tests (runs in milliseconds).

Latents are 2-D points; prompt "right" wants x₀ > 0 on the first coordinate, "left" wants x₀ < 0.
"""

from __future__ import annotations

import torch
from torch import nn

from r3d.core.errors import R3DError

PROMPTS = ("left", "right")


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(2 + 1 + 2, 32)
        self.out = nn.Linear(32, 2)

    def forward(self, x, sigma, onehot):
        h = torch.tanh(self.inp(torch.cat([x, sigma[:, None], onehot], dim=1)))
        return self.out(h)


class ToyPolicy:
    """``predict="x0"``: the net outputs x̂₀ (v = (x − x̂₀)/σ), so x̂₀ is meaningful at every step (Nabla
    tests). ``predict="velocity"``: the net outputs v as SD3/Flux do, so the final deterministic step
    of a kernel without noise there (flow_cps) changes x by only σ_last·v; with an untrained x̂₀ net that
    untrained step would decide the result and GRPO's gradient (which cannot see it) points downhill."""

    lora_target_modules = ["inp", "out"]

    def __init__(self, predict: str = "x0") -> None:
        self.network = ToyNet()
        self.predict = predict

    def encode_prompts(self, prompts):
        for p in prompts:
            if p not in PROMPTS:
                raise R3DError(f"unknown toy prompt {p!r}")
        return torch.nn.functional.one_hot(torch.tensor([PROMPTS.index(p) for p in prompts]), 2).float()

    def select_cond(self, cond, index):
        return cond[index]

    def initial_noise(self, batch, generator):
        return torch.randn(batch, 2, generator=generator)

    def sigmas(self, num_steps):
        return torch.linspace(1.0, 0.0, num_steps + 1)

    def velocity(self, x, sigma, cond):
        if self.predict == "velocity":
            return self.network(x, sigma, cond)
        x0 = self.network(x, sigma, cond)
        return (x - x0) / sigma[:, None]

    def decode(self, x, cond=None):
        return [row.clone() for row in x]


def make(predict: str = "x0", **_: object) -> ToyPolicy:
    return ToyPolicy(predict)


class ToyReward:
    name = "side"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __call__(self, artifacts, prompts):
        x = torch.stack(list(artifacts))[:, 0]
        sign = torch.tensor([1.0 if p == "right" else -1.0 for p in prompts])
        score = torch.sigmoid(2 * sign * x)
        return {"side": score, "raw": sign * x}


def make_reward(**_: object) -> ToyReward:
    return ToyReward()
