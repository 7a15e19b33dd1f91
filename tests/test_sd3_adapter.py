"""The worked example of docs/adapters.md: a diffusers SD3-style model (tests/sd3_flow_policy.py) is an
r3d flow policy with no trainer change — its ODE rollout is StableDiffusion3Pipeline's, bit for bit,
and GRPO trains it from a recipe with the on-policy ratio exactly 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from PIL import Image
from sd3_flow_policy import make

from r3d.commands.runner import make_trainer
from r3d.core.config import GRPORecipe
from r3d.core.recipe import load_recipe
from r3d.core.rollout import make_schedule, sample

PROMPTS = ["a bright square", "a dark square"]


class BrightnessReward:
    """Mean pixel value of the decoded image for prompts with "bright", 1 − mean otherwise."""

    name = "brightness"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __call__(self, artifacts: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        mean = torch.tensor([np.asarray(a, dtype=np.float32).mean() / 255 for a in artifacts])
        bright = torch.tensor(["bright" in p for p in prompts])
        return {self.name: torch.where(bright, mean, 1 - mean)}


def pipeline(policy) -> StableDiffusion3Pipeline:
    """diffusers' own pipeline around the policy's transformer, scheduler and VAE (no text encoders:
    the prompt embeddings are given)."""
    none = dict.fromkeys(
        ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3"]
    )
    pipe = StableDiffusion3Pipeline(
        transformer=policy.network, scheduler=policy.scheduler, vae=policy.vae, **none
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_ode_rollout_equals_the_diffusers_pipeline_bitwise(shift):
    """Same noise, same embeddings, guidance 4.5: every latent of r3d's ODE rollout (make_schedule +
    sample, kernel "ode") equals StableDiffusion3Pipeline's latent after the same step exactly (0.0, not
    a tolerance), and the adapter's decode gives the pipeline's PIL images pixel for pixel.
    Catches a missing or doubled ×1000 timestep scaling, a schedule that is not the scheduler's (shift),
    flipped CFG halves or a sign error in the velocity."""
    policy = make(guidance_scale=4.5, shift=shift, latent_size=8)
    n_steps, b = 4, len(PROMPTS)
    noise = policy.initial_noise(b, torch.Generator().manual_seed(7))
    cond = policy.encode_prompts(PROMPTS)
    schedule = make_schedule(policy, n_steps)
    traj = sample(
        policy, schedule, cond, noise, kernel="ode", noise_level=0.0, sde_steps=None, generator=None
    )

    steps: list[torch.Tensor] = []

    def record(pipe, i, t, kwargs):
        steps.append(kwargs["latents"].clone())
        return {}

    neg = policy.negative_cond(b)
    out = pipeline(policy)(
        prompt_embeds=cond["embeds"],
        pooled_prompt_embeds=cond["pooled"],
        negative_prompt_embeds=neg["embeds"],
        negative_pooled_prompt_embeds=neg["pooled"],
        latents=noise.clone(),
        num_inference_steps=n_steps,
        guidance_scale=4.5,
        height=8,
        width=8,
        output_type="pil",
        callback_on_step_end=record,
    )
    assert torch.equal(schedule.points, policy.scheduler.sigmas)  # the scheduler's σ, shift included
    assert torch.equal(schedule.points[:-1] * 1000, policy.scheduler.timesteps)
    assert torch.equal(torch.stack(steps, dim=1), traj.latents[:, 1:])
    ours = policy.decode(traj.latents[:, -1], cond)
    assert [np.asarray(a).tolist() for a in ours] == [np.asarray(a).tolist() for a in out.images]


def test_diffusers_noising_is_r3d_sigma_convention():
    """FlowMatchEulerDiscreteScheduler.scale_noise(x₀, t, ε) is r3d's x_σ = (1 − σ)·x₀ + σ·ε at σ = t/1000:
    the σ convention is shared as is (only the ×1000 timestep scale differs)."""
    policy = make(shift=3.0)
    sched = policy.scheduler
    sched.set_timesteps(5)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    for t in sched.timesteps:
        sigma = t / sched.config.num_train_timesteps
        got = sched.scale_noise(x0, t.expand(3), eps)
        torch.testing.assert_close(got, (1 - sigma) * x0 + sigma * eps, rtol=0, atol=1e-6)


RECIPE = """
run: {seed: 1}
model:
  name: sd3_flow_policy:make
  options: {guidance_scale: 3.0, latent_size: 4, shift: 3.0}
prompts:
  train: ["a bright square", "a dark square"]
sampler: {num_steps: 4, kernel: flow_sde, noise_level: 0.7}
rewards:
  test_sd3_adapter:BrightnessReward: {weight: 1.0}
train:
  iterations: 3
  prompts_per_iteration: 2
  group_size: 4
  batch_size: 4
  lr: 1.0e-2
  lora: {rank: 4, alpha: 4}
eval: {every: 0, samples_per_prompt: 2}
checkpoint: {every: 3}
"""


def test_grpo_from_a_recipe_trains_the_sd3_policy_with_ratio_exactly_one(tmp_path):
    """A recipe naming the example by ``module:factory`` (model and reward) trains 3 GRPO iterations
    through GRPOTrainer: every iteration's first inner step has ratio exactly 1 (max |r − 1| = 0.0),
    the LoRA on the diffusers attention projections moves the velocity, the checkpoint is written and
    the policy's save_preview hook draws the evaluation samples. Catches a velocity that differs
    between rollout and training (batch composition, eval-only branch) and LoRA targets that miss."""
    path = tmp_path / "sd3.yaml"
    path.write_text(RECIPE)
    cfg = load_recipe(path, GRPORecipe, None)
    trainer = make_trainer(cfg, tmp_path / "run", log=lambda _: None)
    records = trainer.train()
    iterations = [r for r in records if r["iteration"] > 0]
    assert [r["iteration"] for r in iterations] == [1, 2, 3]
    for r in iterations:
        assert r["ratio_first_step_maxdev"] == 0.0
        assert r["ratio_first_step_mean"] == 1.0
    policy = trainer.policy
    x = policy.initial_noise(2, torch.Generator().manual_seed(0))
    sigma, cond = torch.full((2,), 0.5), policy.encode_prompts(PROMPTS)
    with torch.no_grad():
        tuned = policy.velocity(x, sigma, cond)
        with trainer.peft.disable_adapter():
            base = policy.velocity(x, sigma, cond)
    assert not torch.equal(tuned, base)
    assert (tmp_path / "run" / "checkpoint" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "samples_start.png").is_file() and (
        tmp_path / "run" / "samples_end.png"
    ).is_file()
