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

    def decode(self, x: torch.Tensor, cond: Any = None) -> list[Any]:
        """Final latents (σ = 0) → artifacts (e.g. ``trimesh.Trimesh``, or None when empty); ``cond``
        are the samples' conditions, for adapters whose decode needs them (motion lengths)."""

    def select_cond(self, cond: Any, index: torch.Tensor) -> Any:
        """The conditions of the samples at ``index`` (B',) — used to form mini-batches."""


@runtime_checkable
class DiffusionPolicy(Protocol):
    """A discrete-time DDPM-family model (ε / x₀ / v prediction) driven with DDIM transitions.

    ``schedule(num_steps)`` returns ``(timesteps, alpha_bar)``: the model timesteps to visit
    (num_steps,), int64, decreasing, and ᾱ at each of them followed by ᾱ of the final target
    (num_steps + 1,), fp32. The last entry is the scheduler's own final ᾱ: 1.0 (clean data) for
    guided-diffusion models such as MDM, or ``final_alpha_cumprod`` for SD-style DDIM schedulers
    (``set_alpha_to_one=False`` ends at ``alphas_cumprod[0]``); see :func:`ddim_scheduler_schedule`.
    With a final ᾱ < 1 and η > 0 the last step has a density and is trained like the others.
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

    def decode(self, x: torch.Tensor, cond: Any = None) -> list[Any]: ...

    def select_cond(self, cond: Any, index: torch.Tensor) -> Any: ...


def ddim_scheduler_schedule(scheduler: Any, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``DiffusionPolicy.schedule`` of a diffusers DDIM-style scheduler (``DDIMScheduler``).

    Calls ``scheduler.set_timesteps(num_steps)``; returns its timesteps (num_steps,) int64 and
    ᾱ (num_steps + 1,) fp32: ᾱ at each timestep, then the target ᾱ of the last step exactly as the
    scheduler's ``step`` takes it (``alphas_cumprod[t − T/num_steps]``, or ``final_alpha_cumprod``
    below timestep 0). Raises ValueError when the scheduler's steps do not chain (a step's target
    is not the next timestep), which a ᾱ list cannot express.
    """
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.long().cpu()
    alphas = scheduler.alphas_cumprod.double().cpu()
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64).reshape(())
    prev = timesteps - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    targets = torch.where(prev >= 0, alphas[prev.clamp(min=0)], final)
    alpha_bar = torch.cat([alphas[timesteps], targets[-1:]])
    if not torch.equal(targets[:-1], alpha_bar[1:-1]):
        raise ValueError(
            "the scheduler's DDIM steps do not chain: a step's target ᾱ is not the next timestep's"
        )
    return timesteps, alpha_bar.float()
