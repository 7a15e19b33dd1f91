"""GRPO / PPO-clip policy loss and the closed-form Gaussian KL between two transitions."""

from __future__ import annotations

import torch


def grpo_policy_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip loss mean(max(−A·r, −A·clip(r, 1 − ε, 1 + ε))) with r = exp(log p − log p_old).

    All inputs (B,). Metrics (detached scalars): approx_kl = ½·mean((Δ log p)²), clipfrac
    (|r − 1| > ε), clipfrac_high (r > 1 + ε), clipfrac_low (r < 1 − ε), ratio_mean, ratio_std.
    """
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        metrics = {
            "approx_kl": 0.5 * (log_ratio**2).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "clipfrac_high": (ratio > 1.0 + clip_range).float().mean(),
            "clipfrac_low": (ratio < 1.0 - clip_range).float().mean(),
            "ratio_mean": ratio.mean(),
            "ratio_std": ratio.std(unbiased=False),
        }
    return loss, metrics


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std²) ‖ N(ref_mean, std²)) per dimension, averaged over non-batch dims → (B,).

    = mean over dims of (mean − ref_mean)² / (2·std²); ``std`` broadcastable to ``mean``.
    """
    kl = (mean - ref_mean) ** 2 / (2 * std**2)
    return kl.mean(dim=tuple(range(1, kl.ndim)))


def flow_grpo_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std_dev_t: torch.Tensor) -> torch.Tensor:
    """flow_grpo's (train_sd3.py) KL term → (B,): mean over non-batch dims of (mean − ref_mean)²,
    divided by 2·std_dev_t².

    ``std_dev_t`` (broadcastable to (B,)) is flow_grpo's σ_t: for flow_sde the transition std
    without its √(−dt) factor, so this is :func:`gaussian_kl` × (−dt); for CPS the transition std.
    """
    sq = ((mean - ref_mean) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    return sq / (2 * std_dev_t.reshape(-1) ** 2)
