"""The policy-adapter protocol: what the trainer needs from a generative backend.

Canonical time convention (SD3 / Flow-GRPO): σ ∈ [0, 1], σ = 1 is pure noise, σ = 0 is data,
x_σ = (1 − σ)·x₀ + σ·ε and the velocity is v = ε − x₀. An adapter converts its model's native
convention at its boundary; nothing else in r3d knows about it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class FlowPolicy(Protocol):
    """A flow-matching generator the trainer can roll out and fine-tune.

    ``network`` is the ``nn.Module`` that LoRA wraps (``lora_target_modules`` names its layers);
    every call that runs the network must go through :meth:`velocity`, in both rollout and
    training, so that the on-policy ratio is exactly 1.
    """

    network: nn.Module
    lora_target_modules: list[str]

    def encode_prompts(self, prompts: list[str]) -> Any:
        """Conditions for ``prompts`` (cached by the adapter; conditioners are frozen).

        Raises ``R3DError`` for a prompt the model cannot condition on.
        """

    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Noise x at σ = 1, shape (batch, *latent_shape), fp32."""

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """Decreasing schedule of ``num_steps + 1`` sigmas from 1 to 0 (fp32, on CPU)."""

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """Canonical velocity v = ε − x₀ at noise level ``sigma`` (B,), CFG applied inside."""

    def decode(self, x: torch.Tensor) -> list[Any]:
        """Final latents (σ = 0) → artifacts (e.g. ``trimesh.Trimesh``, or None when empty)."""

    def select_cond(self, cond: Any, index: torch.Tensor) -> Any:
        """The conditions of the samples at ``index`` (B',) — used to form mini-batches."""


@runtime_checkable
class DiffusionPolicy(Protocol):
    """A discrete-time DDPM-family model (ε / x₀ / v prediction) driven with DDIM transitions.

    ``schedule(num_steps)`` returns ``(timesteps, alpha_bar)``: the model timesteps to visit
    (num_steps,), int64, decreasing, and ᾱ at each of them followed by ᾱ of the final target
    (num_steps + 1,), fp32, with the last entry 1.0 (clean data).
    """

    network: nn.Module
    lora_target_modules: list[str]
    prediction_type: str  # "epsilon" | "sample" | "v_prediction"

    def encode_prompts(self, prompts: list[str]) -> Any: ...

    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor: ...

    def schedule(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, cond: Any) -> torch.Tensor:
        """Model output at integer ``timestep`` (B,), CFG applied inside, same layout as ``x``."""

    def likelihood_mask(self, cond: Any) -> torch.Tensor | None:
        """1 where an element of x counts in the log-likelihood, 0 for padding; broadcastable to x."""

    def decode(self, x: torch.Tensor) -> list[Any]: ...

    def select_cond(self, cond: Any, index: torch.Tensor) -> Any: ...
