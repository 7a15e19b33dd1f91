"""Reward-gradient alignment (Nabla-R2D3 / ∇-GFlowNet residual) as pure functions.

Notation: one sampler transition x → x' is the Gaussian N(μ, s²) of :mod:`r3d.core.kernels`; its score
with respect to the next sample is s(x'|x) = ∇_{x'} log N(x'; μ, s²) = (μ − x') / s². Nabla-R2D3
fine-tunes the policy so that its transition score matches the reference model's plus the scaled reward
gradient at the next sample,

    s_θ(x'|x)  ≟  s_ref(x'|x) + g(x'),     g = β · ∇_{x'} log R(x̂₀(x')),

i.e. p_θ(x'|x) ∝ p_ref(x'|x)·R(x')^β to first order: the per-step tilt of the reference towards high
reward. The reward value is used as log R (as the reference implementation does). With the same x' and
the same s for both models (true of every r3d kernel: s does not depend on the network output) the
residual is (μ_θ − μ_ref)/s² − g, so with β = 0 the loss is minimised exactly by μ_θ = μ_ref, the
reference model.
"""

from __future__ import annotations

import torch


def _dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, t.ndim))


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, *([1] * (like.ndim - 1)))


def transition_score(next_sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """∇_{x'} log N(x'; mean, std²) = (mean − x') / std², same shape as ``next_sample``."""
    return (mean - next_sample) / std**2


def reward_score(
    grad: torch.Tensor,
    beta: float,
    clip_norm: float | None = None,
    signal: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The target's reward term g from the raw reward gradient ``grad`` (B, ...), as Nabla-R2D3 builds it.

    g = β·grad; with ``clip_norm`` each sample's g is rescaled to an L2 norm (over all non-batch dims)
    of at most ``clip_norm``; then multiplied by the per-sample ``signal`` (B,) when given (ᾱ-adaptive
    scaling). Returns g (detached) and per-sample stats: ``norm`` of β·grad before clipping, ``clipped``
    (1 where the clip was active).
    """
    g = beta * grad.detach()
    norm = g.flatten(1).norm(dim=1)
    clipped = torch.zeros_like(norm)
    if clip_norm is not None:
        factor = torch.clamp(clip_norm / norm.clamp_min(1e-30), max=1.0)
        clipped = (factor < 1.0).to(norm.dtype)
        g = g * _per_sample(factor, g)
    if signal is not None:
        g = g * _per_sample(signal.to(g), g)
    return g, {"norm": norm, "clipped": clipped}


def nabla_loss(
    mean: torch.Tensor,
    ref_mean: torch.Tensor,
    std: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample squared score residual, mean over non-batch dims: ((μ_θ − μ_ref)/s² − g)² → (B,).

    ``mean`` (with grad) and ``ref_mean`` are the transition means of the policy and the reference at
    the same x; ``std`` broadcastable (B, 1, ...); ``target`` g from :func:`reward_score`. Also returns
    the per-sample L2 norm of the residual s_θ − s_ref (detached) for logging.
    """
    residual = (mean - ref_mean.detach()) / std**2
    loss = (residual - target.detach()).pow(2).mean(dim=_dims(residual))
    return loss, residual.detach().flatten(1).norm(dim=1)
