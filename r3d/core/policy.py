"""The policy-adapter protocol: what the trainer needs from a generative backend.

Canonical time convention (SD3 / Flow-GRPO): σ ∈ [0, 1], σ = 1 is pure noise, σ = 0 is data,
x_σ = (1 − σ)·x₀ + σ·ε and the velocity is v = ε − x₀. An adapter converts its model's native
convention at its boundary; nothing else in r3d knows about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from r3d.core.errors import R3DError


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


Policy = FlowPolicy | DiffusionPolicy


def policy_kind(policy: Any) -> Literal["flow", "ddpm"]:
    """Which protocol ``policy`` implements — the one place r3d tells flow from DDPM models.

    A policy with ``velocity`` is a flow policy, otherwise a DDPM-family one; an object that fully
    implements neither is a one-line R3DError naming the members it lacks.
    """
    kind, protocol = ("flow", FlowPolicy) if hasattr(policy, "velocity") else ("ddpm", DiffusionPolicy)
    if not isinstance(policy, protocol):
        missing = [m for m in _members(protocol) if not hasattr(policy, m)]
        raise R3DError(
            f"{type(policy).__name__} is not a policy: as a {protocol.__name__} it lacks {', '.join(missing)} "
            "(see docs/adapters.md)"
        )
    return kind  # type: ignore[return-value]


def _members(protocol: type) -> list[str]:
    names = set(getattr(protocol, "__annotations__", {})) | {
        n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")
    }
    return sorted(names)


# ----------------------------------------------------------------------------- optional hooks
# Each optional member of an adapter is one small protocol; consumers test ``isinstance(obj, Hook)``
# (never a string lookup), so the hook's name and signature are written here once.


@runtime_checkable
class SavesPreview(Protocol):
    """Policy hook: draw evaluation samples that are not meshes (meshes get a CPU-rendered sheet).

    Used by the trainer's evaluation (``samples_<tag>.png``) and ``r3d sample``; absent: no preview.
    """

    def save_preview(self, artifacts: list[Any], labels: list[str], path: Path) -> Path | None: ...


@runtime_checkable
class HasExampleCond(Protocol):
    """Policy hook: conditions for ``batch`` samples without real inputs (e.g. condition images are
    missing, or a meta-device build). Used by the dry run when ``encode_prompts`` raises R3DError;
    absent: the dry run reports the prompt error."""

    def example_cond(self, batch: int) -> Any: ...


@runtime_checkable
class DecodesField(Protocol):
    """Policy hook: differentiable SDF grids (B, R, R, R) over [−1, 1]³ from clean latents x0 (B, ...).
    Used by the render-based rewards' ``score_latents`` (Nabla); absent: those rewards cannot
    differentiate through the policy (a one-line error) unless it has :class:`RendersLatents`."""

    def decode_field(self, x0: torch.Tensor, resolution: int) -> torch.Tensor: ...


@runtime_checkable
class RendersLatents(Protocol):
    """Policy hook: differentiable views of clean latents x0 (B, ...) for ``cameras``
    (``r3d.render.cameras.Cameras`` → ``r3d.render.views.Views``); preferred over
    :class:`DecodesField` by the render-based rewards."""

    def render_latents(self, x0: torch.Tensor, cameras: Any) -> Any: ...


@runtime_checkable
class CheckpointedNetwork(Protocol):
    """Hook of ``policy.network``: a network that implements gradient checkpointing itself. The dry
    run adds the recomputation of the largest unit to its memory estimate when the flag is on."""

    gradient_checkpointing: bool

    def checkpoint_units(self) -> list[nn.Module]: ...


@dataclass(frozen=True)
class FactoryHooks:
    """What a policy (or reward / gold) factory offers besides building, declared with :func:`declare_hooks`.

    missing_weights(**options) → list[str]: one message per missing weight set, naming the
        ``r3d fetch-weights`` command, checked without loading anything (dry run); default: the
        dry run tries the build and reports its error.
    save_merged(policy, folder, options, dtype) → Path: write ``policy.network`` (after peft's
        ``merge_and_unload``) as the backend's own weight files (``r3d export --merge``); default:
        ``--merge`` is a one-line error.
    weights_option: the factory option that loads ``save_merged``'s output (``r3d sample
        --model-weights``); default: that flag is a one-line error.
    validate_prompt(prompt) → None: raise R3DError for a prompt the model cannot use, without
        loading weights (``r3d grpo`` checks every distinct prompt, naming file and line); default:
        prompts are first checked when ``encode_prompts`` sees them.
    """

    missing_weights: Callable[..., list[str]] | None = None
    save_merged: Callable[[Any, Path, dict[str, Any], torch.dtype | None], Path] | None = None
    weights_option: str | None = None
    validate_prompt: Callable[[str], None] | None = None


_NO_HOOKS = FactoryHooks()


def declare_hooks(factory: Callable[..., Any], **hooks: Any) -> None:
    """Attach :class:`FactoryHooks` to ``factory`` (a misspelt hook name is a TypeError here)."""
    factory.r3d_hooks = FactoryHooks(**{**vars(factory_hooks(factory)), **hooks})  # type: ignore[attr-defined]


def factory_hooks(factory: Any) -> FactoryHooks:
    """The hooks declared on ``factory`` (all defaults when none were)."""
    hooks = getattr(factory, "r3d_hooks", _NO_HOOKS)
    return hooks if isinstance(hooks, FactoryHooks) else _NO_HOOKS


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
