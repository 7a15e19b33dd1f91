"""One code path for sampling and for re-evaluating log-probabilities (rollout = training).

Supports flow policies (``FlowPolicy``: canonical velocity, kernels flow_sde / flow_cps /
dance_sde / ode) and DDPM-family policies (``DiffusionPolicy``: ε / x₀ / v prediction, DDIM with η).
This module is the one place that dispatches on the kind of model: :func:`network_output` runs the
network, :func:`transition` takes a step, :func:`predict_x0` gives the clean-sample prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from r3d.core.errors import R3DError
from r3d.core.kernels import (
    Generators,
    StepOutput,
    dance_sde_step,
    ddim_step,
    flow_cps_step,
    flow_sde_step,
    ode_step,
    predict_x0_eps,
)
from r3d.core.policy import Policy, policy_kind


@dataclass
class Schedule:
    """The discretisation of one sampling run.

    kind "flow": ``points`` are sigmas (T+1,) from 1 to 0. kind "ddpm": ``points`` are ᾱ (T+1,)
    ending at the scheduler's final ᾱ (1.0, or e.g. ``final_alpha_cumprod`` < 1 for SD-style DDIM)
    and ``timesteps`` (T,) are the model's integer timesteps.
    """

    kind: Literal["flow", "ddpm"]
    points: torch.Tensor
    timesteps: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return self.points.shape[0] - 1

    def moving(self) -> torch.Tensor:
        """(T,) bool: steps that move (dt ≠ 0); a duplicated point (dt = 0) is never trained."""
        return self.points[1:] != self.points[:-1]


def make_schedule(policy: Policy, num_steps: int) -> Schedule:
    """The policy's discretisation for ``num_steps`` steps (its kind decided by :func:`policy_kind`)."""
    if policy_kind(policy) == "flow":
        return Schedule("flow", policy.sigmas(num_steps).float())
    timesteps, alpha_bar = policy.schedule(num_steps)
    alpha_bar = alpha_bar.float()
    if not bool(((alpha_bar > 0) & (alpha_bar <= 1)).all()):
        raise R3DError(f"the policy's schedule has ᾱ outside (0, 1]: {alpha_bar.tolist()}")
    return Schedule("ddpm", alpha_bar, timesteps.long())


FLOW_KERNELS = ("flow_sde", "flow_cps", "dance_sde")
DDPM_KERNELS = ("ddim",)


def check_kernel(schedule: Schedule, kernel: str, policy_name: str = "the policy") -> None:
    """A sampler kernel that cannot drive this kind of model is a one-line R3DError (a DDPM model
    under ``flow_sde`` once silently ran DDIM)."""
    allowed = ("ode", *(FLOW_KERNELS if schedule.kind == "flow" else DDPM_KERNELS))
    if kernel not in allowed:
        kind = "a flow-matching" if schedule.kind == "flow" else "a DDPM (ε / x₀ / v-prediction)"
        raise R3DError(
            f"sampler.kernel {kernel!r} does not apply to {policy_name}, {kind} model; use one of {', '.join(allowed)}"
        )


def network_output(
    policy: Policy, schedule: Schedule, point: int, x: torch.Tensor, cond: Any
) -> torch.Tensor:
    """The network's output at schedule point ``point`` for x (B, ...): the canonical velocity of a
    flow policy, the ``prediction_type`` output of a DDPM one (CFG applied inside either way)."""
    b = x.shape[0]
    if schedule.kind == "flow":
        return policy.velocity(x, schedule.points[point].expand(b), cond)
    return policy.predict(x, schedule.timesteps[point].expand(b), cond)


def predict_x0(policy: Policy, schedule: Schedule, point: int, x: torch.Tensor, cond: Any) -> torch.Tensor:
    """The policy's clean-sample prediction x̂₀ (B, ...) from x at schedule point ``point``: x − σ·v
    (flow), the DDPM parameterisation's x̂₀ (DDPM); x itself at the last point or at σ = 0."""
    if point == schedule.num_steps or (schedule.kind == "flow" and float(schedule.points[point]) == 0.0):
        return x
    out = network_output(policy, schedule, point, x, cond)
    if schedule.kind == "flow":
        return x - schedule.points[point] * out
    alpha_bar = schedule.points[point].to(x).reshape(1, *([1] * (x.ndim - 1)))
    return predict_x0_eps(out, x, alpha_bar, policy.prediction_type)[0]


def signal_level(schedule: Schedule, point: int) -> float:
    """The signal fraction at schedule point ``point``: (1 − σ)² (flow) or ᾱ (DDPM); 1 at clean data."""
    p = float(schedule.points[point])
    return (1.0 - p) ** 2 if schedule.kind == "flow" else p


def transition(
    policy: Policy,
    schedule: Schedule,
    step: int,
    x: torch.Tensor,
    cond: Any,
    *,
    kernel: str,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
) -> StepOutput:
    """Step ``step`` (x at points[step] → points[step + 1]) for a batch; kernel "ode" is deterministic.

    For DDPM policies "ode" means DDIM with η = 0 and any other kernel means DDIM with
    η = ``noise_level``; a ``likelihood_mask`` of the policy restricts the log-prob mean.
    """
    out = network_output(policy, schedule, step, x, cond)
    # The kernels get the times as floats (the same fp32 values), so that they reuse the factors
    # they computed for this step before (kernels._factors) instead of rebuilding them each call.
    s, s_next = float(schedule.points[step]), float(schedule.points[step + 1])
    if schedule.kind == "flow":
        v = out
        if kernel == "ode":
            return ode_step(v, x, s, s_next)
        common = {"prev_sample": prev_sample, "generator": generator}
        if kernel == "flow_sde":
            return flow_sde_step(v, x, s, s_next, noise_level, sigma_max=float(schedule.points[1]), **common)
        if kernel == "flow_cps":
            return flow_cps_step(v, x, s, s_next, noise_level, **common)
        if kernel == "dance_sde":
            return dance_sde_step(v, x, s, s_next, noise_level, **common)
        raise ValueError(f"kernel {kernel!r} does not apply to a flow model")
    if kernel not in ("ode", *DDPM_KERNELS):
        raise ValueError(f"kernel {kernel!r} does not apply to a DDPM model")
    eta = 0.0 if kernel == "ode" else noise_level
    mask = policy.likelihood_mask(cond)
    step_out = ddim_step(
        out,
        x,
        s,
        s_next,
        eta,
        policy.prediction_type,
        prev_sample=prev_sample,
        generator=generator,
        reduce="mean" if mask is None else "none",
    )
    if mask is not None:
        mask = mask.to(step_out.log_prob.dtype).expand_as(step_out.log_prob)
        dims = tuple(range(1, mask.ndim))
        step_out.log_prob = (step_out.log_prob * mask).sum(dims) / mask.sum(dims).clamp(min=1)
    return step_out


@dataclass
class Trajectory:
    """A batch of sampled trajectories.

    latents: (B, T+1, ...) x at every point of the schedule; log_probs: (B, T) (0 on ODE steps);
    has_density: (T,) bool, the steps sampled stochastically with std > 0 — the only steps with a
    trainable log-probability (e.g. flow_sde's final step to σ = 0 has one, flow_cps's and DDIM's
    final step onto clean data have std = 0 and do not).
    """

    latents: torch.Tensor
    log_probs: torch.Tensor
    has_density: torch.Tensor


@torch.no_grad()
def sample(
    policy: Policy,
    schedule: Schedule,
    cond: Any,
    noise: torch.Tensor,
    *,
    kernel: str,
    noise_level: float,
    sde_steps: torch.Tensor | None,
    generator: Generators,
) -> Trajectory:
    """Run the sampler from ``noise``; steps where ``sde_steps`` is True use ``kernel``, others ODE."""
    t_count = schedule.num_steps
    if sde_steps is None:
        sde_steps = torch.zeros(t_count, dtype=torch.bool)
    x = noise.float()
    latents = [x]
    log_probs = []
    has_density = []
    steps = zip(sde_steps.tolist(), schedule.moving().tolist(), strict=True)
    for step, (stochastic, moving) in enumerate(steps):
        k = kernel if stochastic else "ode"
        out = transition(
            policy, schedule, step, x, cond, kernel=k, noise_level=noise_level, generator=generator
        )
        x = out.prev_sample
        latents.append(x)
        log_probs.append(out.log_prob)
        has_density.append(stochastic and moving and bool((out.std > 0).all()))
    return Trajectory(
        torch.stack(latents, dim=1),
        torch.stack(log_probs, dim=1).cpu(),
        torch.tensor(has_density, dtype=torch.bool),
    )


@dataclass
class Rollout:
    """What the trainer keeps of a batch of B sampled trajectories, from the rollout to the update.

    prompts: the B prompts (a prompt repeated ``group_size`` times is B entries); cond: their
    conditions as ``encode_prompts`` made them (opaque, indexed with ``select_cond``); latents,
    log_probs, has_density: as in :class:`Trajectory`, the chunks concatenated.
    """

    prompts: list[str]
    cond: Any
    latents: torch.Tensor
    log_probs: torch.Tensor
    has_density: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        """The clean latents (B, ...) at the end of the schedule."""
        return self.latents[:, -1]
