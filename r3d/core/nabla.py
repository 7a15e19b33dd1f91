"""The Nabla trainer (``train.algorithm: nabla``): reward-gradient alignment of a diffusion / flow policy.

Same loop as :class:`r3d.core.grpo.GRPOTrainer` (rollout → rewards → update → eval → checkpoint, the
same ``transition`` for sampling and training, resumable, multi-process); only the update differs. For
each mini-batch and each selected step x → x' of the rollout:

1. reward gradient: x̂₀(x') by the current policy (x̂₀ = x' at the last point), differentiable decode
   and rendering, log R = Σ_k w_k·R_k (the recipe's weighted rewards, each with ``score_latents``),
   g = β·∇_{x'} log R with per-sample norm clipping, optionally scaled by the signal level of x'
   ((1 − σ')² for flows, ᾱ' for DDPM models: Nabla-R2D3's ᾱ-adaptive "squared" mode);
2. the reference transition (LoRA disabled, no grad) and the policy transition at the same x, x';
3. loss = mean((μ_θ − μ_ref)/s² − g)²  (:func:`r3d.core.nabla_loss.nabla_loss`)
   + ``unet_reg_scale`` · KL(N(μ_θ, s²) ‖ N(μ_prev, s²)), the proximal term to the previous iterate
   (μ_prev: the transition means of the rollout policy, computed before the first optimizer step).

Steps are chosen by stratified sampling: ``round(timestep_fraction × n)`` strata of the trainable steps,
one step drawn in each (Nabla-R2D3's low-variance subsampling). ``nabla.random_view`` jitters the
reward cameras, ``nabla.memo_efficient_mode`` evaluates the reward gradient two samples at a time,
``nabla.reward_context: false`` stops the gradient through reward targets built from the renders
(e.g. the depth normals of normal consistency), ``nabla.apply_reward_threshold`` drops samples whose
rollout reward is below ``reward_threshold`` from the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from r3d.core.checkpoint import load_state
from r3d.core.errors import R3DError
from r3d.core.grpo import GRPOTrainer, StepLoss
from r3d.core.lora import adapter_disabled
from r3d.core.losses import gaussian_kl
from r3d.core.nabla_loss import nabla_loss, reward_score
from r3d.core.rewards import LatentReward, RewardMix
from r3d.core.rollout import Rollout, predict_x0, signal_level


class _RecordedMix:
    """A RewardMix that remembers its last totals (the rollout rewards, read by the update)."""

    def __init__(self, mix: RewardMix) -> None:
        self.mix = mix
        self.last_total: torch.Tensor | None = None

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> Any:
        total, comps = self.mix(artifacts, prompts)
        self.last_total = total
        return total, comps


def stratified_steps(candidates: torch.Tensor, fraction: float, generator: torch.Generator) -> list[int]:
    """``round(fraction·n)`` (≥ 1) of the n ``candidates``: one drawn uniformly in each of as many
    contiguous, near-equal strata, so high- and low-noise steps are both always represented."""
    n = candidates.numel()
    k = min(n, max(1, round(fraction * n)))
    picked = []
    for stratum in torch.arange(n).tensor_split(k):
        j = int(torch.randint(len(stratum), (1,), generator=generator))
        picked.append(int(candidates[stratum[j]]))
    return picked


class NablaTrainer(GRPOTrainer):
    """GRPOTrainer with the Nabla-R2D3 update (see the module docstring)."""

    def __init__(self, recipe: Any, policy: Any, rewards: RewardMix, *args: Any, **kwargs: Any) -> None:
        super().__init__(recipe, policy, rewards, *args, **kwargs)
        self.nabla = recipe.nabla
        self.rewards = _RecordedMix(rewards)
        self.grad_rewards = [(r, w) for r, w in zip(rewards.rewards, rewards.weights, strict=True) if w != 0]
        for reward, _ in self.grad_rewards:
            if not isinstance(reward, LatentReward) or not reward.differentiable:
                raise R3DError(
                    f"train.algorithm nabla needs differentiable rewards; '{reward.name}' has no score_latents "
                    "(give it weight 0 to only log it, or use a render-based reward such as silhouette)"
                )
        self.view_gen = torch.Generator().manual_seed(recipe.run.seed + 2_000_003)
        self.reward_evals = 0
        self._weights = torch.ones(0)  # per update: 1 for a sample in the loss, 0 for one dropped
        self._steps: list[int] = []
        self._previous: dict[tuple[int, int], torch.Tensor] | None = None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["view_gen"] = self.view_gen.get_state()
        state["reward_evals"] = self.reward_evals
        return state

    def resume(self) -> None:
        super().resume()
        state = load_state(self.run_dir / "checkpoint")
        self.view_gen.set_state(state["view_gen"])
        self.reward_evals = int(state["reward_evals"])

    def _train_steps(self, has_density: torch.Tensor) -> list[int]:
        candidates = torch.nonzero(has_density).flatten()
        if candidates.numel() == 0:
            return super()._train_steps(has_density)  # raises the one-line "no trainable steps" error
        return stratified_steps(candidates, self.cfg.train.timestep_fraction, self.train_gen)

    # ----------------------------------------------------------------- reward gradient
    def log_reward(self, x0: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Σ_k w_k·R_k(x0) (B,), differentiable through the rewards' ``score_latents``."""
        nb = self.nabla
        total = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for reward, weight in self.grad_rewards:
            total = total + weight * reward.score_latents(
                self.policy,
                x0,
                prompts,
                generator=self.view_gen,
                view_jitter_deg=nb.random_view,
                detach_targets=not nb.reward_context,
            )
        return total

    def reward_gradient(
        self, point: int, x: torch.Tensor, cond: Any, prompts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇_x log R(x̂₀(x)) (B, ...), log R (B,)) at schedule point ``point``; no parameter gradients."""
        size = 2 if self.nabla.memo_efficient_mode else x.shape[0]
        grads, values = [], []
        for sub in torch.arange(x.shape[0]).split(size):
            xs = x[sub].detach().requires_grad_(True)
            with torch.enable_grad():
                x0 = predict_x0(self.policy, self.schedule, point, xs, self.policy.select_cond(cond, sub))
                value = self.log_reward(x0, [prompts[int(i)] for i in sub])
                (grad,) = torch.autograd.grad(value.sum(), xs)
            grads.append(grad)
            values.append(value.detach())
        self.reward_evals += x.shape[0] * self.world
        return torch.cat(grads), torch.cat(values)

    # ----------------------------------------------------------------- update
    def _keep(self, n: int) -> torch.Tensor:
        nb = self.nabla
        if not nb.apply_reward_threshold:
            return torch.ones(n)
        if self.rewards.last_total is None or self.rewards.last_total.shape[0] != n:
            raise R3DError("nabla.apply_reward_threshold: the rollout rewards are not available")
        return (self.rewards.last_total >= nb.reward_threshold).float()

    @torch.no_grad()
    def _previous_means(self, roll: Rollout, steps: list[int]) -> dict[tuple[int, int], torch.Tensor]:
        """The rollout policy's transition means, keyed by (first sample of the chunk, step)."""
        means = {}
        for idx in (i for chunks in self._updates(roll.latents.shape[0]) for i in chunks):
            cond = self.policy.select_cond(roll.cond, idx)
            for step in steps:
                out = self.replay(step, roll.latents[idx, step], cond, roll.latents[idx, step + 1])
                means[int(idx[0]), step] = out.mean
        return means

    def update(self, roll: Rollout, advantages: torch.Tensor, steps: list[int]) -> dict[str, float]:
        """GRPO's update loop with :meth:`step_loss` below; advantages are not used (only the rollout's
        rewards, through ``nabla.apply_reward_threshold``)."""
        n = advantages.shape[0]
        self._weights = self._keep(n)
        self._steps = steps
        self.reward_evals += n * self.world  # the rollout's rewards
        self._previous = self._previous_means(roll, steps) if self.nabla.unet_reg_scale > 0 else None
        metrics = super().update(roll, advantages, steps)
        metrics["reward_evals"] = float(self.reward_evals)
        return metrics

    def update_metrics(self) -> dict[str, float]:
        return {"kept_fraction": float(self._weights.mean()), "train_steps": float(len(self._steps))}

    def step_loss(
        self, roll: Rollout, idx: torch.Tensor, cond: Any, step: int, advantages: torch.Tensor
    ) -> StepLoss:
        """The Nabla loss at ``step`` for the samples ``idx`` (see the module docstring), averaged over
        the samples kept by ``nabla.apply_reward_threshold``."""
        nb = self.nabla
        prompts = [roll.prompts[int(i)] for i in idx]
        weight = self._weights[idx].to(roll.latents.device)
        x, x_next = roll.latents[idx, step], roll.latents[idx, step + 1]
        m: dict[str, torch.Tensor] = {}
        if nb.reward_scale > 0:
            grad, value = self.reward_gradient(step + 1, x_next, cond, prompts)
            signal = None
            if nb.alpha_adaptive:
                level = signal_level(self.schedule, step + 1)
                signal = torch.full((len(idx),), level, device=grad.device)
            clip = nb.reward_norm_value if nb.reward_norm_clip else None
            target, stats = reward_score(grad, nb.reward_scale, clip, signal)
            m["reward_pred"] = value.mean()
            m["reward_grad_norm"] = stats["norm"].mean()
            m["reward_clip_frac"] = stats["clipped"].mean()
        else:
            target = torch.zeros_like(x_next)
        with torch.no_grad(), adapter_disabled(self.peft):
            ref = self.replay(step, x, cond, x_next)
        out = self.replay(step, x, cond, x_next)
        per_sample, residual_norm = nabla_loss(out.mean, ref.mean, out.std, target)
        m["nabla_loss"] = per_sample.detach().mean()
        m["score_residual_norm"] = residual_norm.mean()
        m["target_norm"] = target.flatten(1).norm(dim=1).mean()
        if self._previous is not None:
            prox = gaussian_kl(out.mean, self._previous[int(idx[0]), step], out.std)
            per_sample = per_sample + nb.unet_reg_scale * prox
            m["proximal_kl"] = prox.detach().mean()
        loss = (per_sample * weight).sum() / weight.sum().clamp_min(1.0)
        m["loss"] = loss.detach()
        return StepLoss(loss, m, out)
