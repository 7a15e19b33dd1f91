"""A DiffusionPolicy may end at its scheduler's own final ᾱ (SD-style DDIM, set_alpha_to_one=False)."""

import pytest
import torch
from diffusers import DDIMScheduler
from torch import nn

from r3d.core.errors import R3DError
from r3d.core.policy import DiffusionPolicy, ddim_scheduler_schedule
from r3d.core.rollout import make_schedule, sample, transition

STEPS = 10


def sd_scheduler() -> DDIMScheduler:
    """Stable Diffusion's DDIM configuration: ends at alphas_cumprod[0] = 0.99915, not 1."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
    )


class EpsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4 + 1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return torch.tanh(self.conv(torch.cat([x, tt], 1)))


class TinySD:
    """An ε-prediction DiffusionPolicy on (4, 8, 8) latents scheduled by a diffusers DDIMScheduler."""

    lora_target_modules = ["conv"]
    prediction_type = "epsilon"

    def __init__(self, final_alpha_one: bool = False) -> None:
        self.network = EpsNet().requires_grad_(False)
        self.scheduler = sd_scheduler()
        self.final_alpha_one = final_alpha_one

    def encode_prompts(self, prompts):
        return torch.zeros(len(prompts))

    def select_cond(self, cond, index):
        return cond[index]

    def initial_noise(self, batch, generator):
        return torch.randn(batch, 4, 8, 8, generator=generator)

    def schedule(self, num_steps):
        timesteps, alpha_bar = ddim_scheduler_schedule(self.scheduler, num_steps)
        if self.final_alpha_one:  # what the protocol used to require
            alpha_bar[-1] = 1.0
        return timesteps, alpha_bar

    def predict(self, x, timestep, cond):
        return self.network(x, timestep)

    def likelihood_mask(self, cond):
        return None

    def decode(self, x, cond=None):
        return list(x)


def scheduler_loop(policy: TinySD, x: torch.Tensor, eta: float, generator=None) -> torch.Tensor:
    """The scheduler's own sampling loop (as StableDiffusionPipeline runs it, without guidance)."""
    sched = sd_scheduler()
    sched.set_timesteps(STEPS)
    for t in sched.timesteps:
        eps = policy.network(x, t.expand(x.shape[0]))
        x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return x


def test_schedule_ends_at_the_schedulers_final_alpha():
    """ᾱ ends at final_alpha_cumprod (alphas_cumprod[0] ≈ 0.99915), every other point at a timestep."""
    policy = TinySD()
    assert isinstance(policy, DiffusionPolicy)
    timesteps, alpha_bar = policy.schedule(STEPS)
    sched = sd_scheduler()
    assert float(alpha_bar[-1]) == pytest.approx(float(sched.alphas_cumprod[0]), abs=1e-7)
    assert float(alpha_bar[-1]) < 1.0
    assert torch.allclose(alpha_bar[:-1], sched.alphas_cumprod[timesteps].float())


def test_eta0_rollout_equals_the_schedulers_loop_and_alpha_one_does_not():
    """η = 0 (deterministic DDIM): r3d's rollout equals DDIMScheduler's loop to float rounding; the old
    convention (last ᾱ = 1.0) misses it by far more — the bug this pins."""
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = scheduler_loop(TinySD(), noise, 0.0)
    for final_one, close in ((False, True), (True, False)):
        policy = TinySD(final_alpha_one=final_one)
        schedule = make_schedule(policy, STEPS)
        traj = sample(
            policy, schedule, None, noise, kernel="ode", noise_level=0.0, sde_steps=None, generator=None
        )
        err = float((traj.latents[:, -1] - expected).abs().max())
        assert (err < 1e-5) if close else (err > 1e-3), (final_one, err)


def test_eta1_rollout_equals_the_schedulers_loop_and_the_last_step_trains():
    """η = 1 with the same generator: the same samples as the scheduler's stochastic loop; the last
    step now has a density (std > 0) and replaying it reproduces its log-prob (ratio 1)."""
    policy = TinySD()
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = scheduler_loop(policy, noise, 1.0, torch.Generator().manual_seed(7))
    schedule = make_schedule(policy, STEPS)
    sde = torch.ones(STEPS, dtype=torch.bool)
    traj = sample(
        policy,
        schedule,
        torch.zeros(2),
        noise,
        kernel="ddim",
        noise_level=1.0,
        sde_steps=sde,
        generator=torch.Generator().manual_seed(7),
    )
    assert float((traj.latents[:, -1] - expected).abs().max()) < 1e-5
    assert bool(traj.has_density[-1])
    last = STEPS - 1
    out = transition(
        policy,
        schedule,
        last,
        traj.latents[:, last],
        torch.zeros(2),
        kernel="ddim",
        noise_level=1.0,
        prev_sample=traj.latents[:, -1],
    )
    assert torch.equal(out.log_prob, traj.log_probs[:, last])


def test_schedule_outside_unit_interval_is_refused():
    """A final ᾱ above 1 (or ≤ 0) is a broken adapter: one-line R3DError, not NaNs in the rollout."""

    class Broken(TinySD):
        def schedule(self, num_steps):
            timesteps, alpha_bar = super().schedule(num_steps)
            alpha_bar[-1] = 1.5
            return timesteps, alpha_bar

    with pytest.raises(R3DError, match="outside"):
        make_schedule(Broken(), STEPS)
