"""DiffSplat adapter on tiny random configs: multi-view attention, cameras, splatter decoding, DDIM
rollouts with log-probabilities, GSVAE loading, and a rollout → reward → update with Nabla and GRPO."""

import pytest
import torch

from r3d.core.config import GRPORecipe
from r3d.core.grpo import GRPOTrainer
from r3d.core.nabla import NablaTrainer
from r3d.core.rewards import RewardMix
from r3d.core.rollout import make_schedule, sample, transition
from r3d.models.diffsplat import (
    DiffSplatConfig,
    input_cameras,
    load_gsvae,
    load_tiny_diffsplat,
    plucker_rays,
    splatter_to_gaussians,
)
from r3d.render.splat import GaussianCloud
from r3d.rewards.render2d import NormalConsistencyReward


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return load_tiny_diffsplat(seed=0)


def test_self_attention_mixes_views_and_cross_attention_reads_the_prompt(policy):
    """Changing one view's latent changes the other views' predictions (multi-view attention); a
    different prompt changes the prediction (text conditioning reaches the output)."""
    cond = policy.encode_prompts(["a chair"])
    x = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([501])
    with torch.no_grad():
        base = policy.predict(x, t, cond)
        x2 = x.clone()
        x2[:, 3] += 1.0
        moved = policy.predict(x2, t, cond)
        other = policy.predict(x, t, policy.encode_prompts(["a red sports car"]))
    assert float((moved[:, 0] - base[:, 0]).abs().max()) > 1e-4
    assert float((other - base).abs().max()) > 1e-4


def test_prediction_does_not_depend_on_the_batch_composition(policy):
    """A sample's prediction is the same alone or batched (rollout and training batches may differ)."""
    cond = policy.encode_prompts(["a chair", "a lamp"])
    x = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([251, 251])
    with torch.no_grad():
        both = policy.predict(x, t, cond)
        one = policy.predict(x[1:], t[1:], policy.select_cond(cond, torch.tensor([1])))
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


def test_input_cameras_and_plucker_rays_follow_diffsplat():
    """4 views at azimuth 0/90/180/270°, elevation 10°, distance 1.4, fov 2·atan(0.5/fx); unit Plücker
    directions with moment o × d orthogonal to d; without the pixel-grid bug the centre ray hits 0."""
    cfg = DiffSplatConfig()
    cams = input_cameras(cfg, 16)
    torch.testing.assert_close(cams.position[0].norm(dim=-1), torch.full((4,), 1.4))
    assert abs(cfg.fov_deg - 39.6) < 0.1
    rays = plucker_rays(cfg, 16)
    assert rays.shape == (4, 6, 16, 16)
    d, m = rays[:, 3:], rays[:, :3]
    torch.testing.assert_close(d.norm(dim=1), torch.ones(4, 16, 16))
    assert float((m * d).sum(1).abs().max()) < 1e-5
    straight = plucker_rays(DiffSplatConfig(plucker_bug=False), 2)  # pixel centres ±0.25 around the axis
    centre_dir = straight[:, 3:].mean((2, 3))
    toward_origin = -cams.position[0] / 1.4
    assert float((centre_dir / centre_dir.norm(dim=1, keepdim=True) * toward_origin).sum(1).min()) > 0.999


def test_splatter_decoding_places_zero_depth_on_the_plane_through_the_origin():
    """depth = 0 means z-depth = camera distance: the Gaussians of a view lie on the plane through the
    origin facing that camera; rgb/opacity/scale use DiffSplat's activations."""
    cfg = DiffSplatConfig()
    splatter = torch.zeros(1, 4, 12, 5, 5)
    splatter[:, :, 6] = 1.0  # identity quaternion
    g = splatter_to_gaussians(splatter, cfg)
    cams = input_cameras(cfg, 5)
    axis = cams.position[0] / cams.position[0].norm(dim=-1, keepdim=True)  # (V, 3)
    means = g.means.reshape(4, 25, 3)
    assert float((means * axis[:, None]).sum(-1).abs().max()) < 1e-5
    torch.testing.assert_close(means[:, 12], torch.zeros(4, 3), atol=1e-5, rtol=0)  # centre pixel
    torch.testing.assert_close(g.colors, torch.full_like(g.colors, 0.5))
    torch.testing.assert_close(g.opacities, torch.full_like(g.opacities, 0.5))
    torch.testing.assert_close(g.scales, torch.full_like(g.scales, 0.5 * (cfg.scale_min + cfg.scale_max)))


def test_schedule_is_leading_ddim_and_rollouts_have_log_probs(policy):
    """20 steps → t = 951 … 1 and ᾱ ending at 1; a DDIM η = 1 rollout re-evaluates its own
    log-probabilities exactly (ratio 1) and decodes to Gaussian clouds."""
    t, ab = policy.schedule(20)
    assert t.tolist() == list(range(951, 0, -50)) and float(ab[-1]) == 1.0
    sched = make_schedule(policy, 4)
    cond = policy.encode_prompts(["a chair", "a lamp"])
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    traj = sample(
        policy,
        sched,
        cond,
        policy.initial_noise(2, torch.Generator().manual_seed(3)),
        kernel="ddim",
        noise_level=1.0,
        sde_steps=torch.ones(4, dtype=torch.bool),
        generator=gens,
    )
    assert traj.has_density.tolist() == [True, True, True, False]
    with torch.no_grad():
        again = transition(
            policy,
            sched,
            1,
            traj.latents[:, 1],
            cond,
            kernel="ddim",
            noise_level=1.0,
            prev_sample=traj.latents[:, 2],
        )
    torch.testing.assert_close(again.log_prob, traj.log_probs[:, 1])
    clouds = policy.decode(traj.latents[:, -1])
    assert isinstance(clouds[0], GaussianCloud) and clouds[0].means.shape == (4 * 16 * 16, 3)


def test_gsvae_loads_diffsplat_state_dicts(tmp_path, policy):
    """load_gsvae reads a ``vae.``-prefixed safetensors (DiffSplat's GSAutoencoderKL) into a 12-channel
    AutoencoderKL built from a local config, ignoring the tiny decoder; wrong keys are an R3DError."""
    from safetensors.torch import save_file

    from r3d.core.errors import R3DError

    policy.vae.save_config(tmp_path / "vae")
    state = {f"vae.{k}": v.contiguous() for k, v in policy.vae.state_dict().items()}
    state["tiny_decoder.layers.0.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "gsvae.safetensors"))
    vae = load_gsvae(tmp_path / "gsvae.safetensors", tmp_path / "vae")
    for k, v in policy.vae.state_dict().items():
        assert torch.equal(vae.state_dict()[k], v)
    save_file({"vae.bogus": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(R3DError, match="GSVAE"):
        load_gsvae(tmp_path / "bad.safetensors", tmp_path / "vae")


def recipe(algorithm: str) -> GRPORecipe:
    return GRPORecipe.model_validate(
        {
            "run": {"seed": 0},
            "model": {"name": "r3d.models.diffsplat:load_tiny_diffsplat"},
            "prompts": {"train": ["a chair", "a lamp"], "eval": ["a chair"]},
            "sampler": {"num_steps": 3, "kernel": "ddim", "noise_level": 1.0},
            "rewards": {"normal_consistency": {"weight": 1.0}},
            "train": {
                "algorithm": algorithm,
                "iterations": 1,
                "prompts_per_iteration": 2,
                "group_size": 2,
                "batch_size": 4,
                "timestep_fraction": 1.0,
                "lr": 1e-3,
            },
            "nabla": {
                "reward_scale": 100.0,
                "reward_norm_value": 10.0,
                "unet_reg_scale": 1.0,
                "alpha_adaptive": True,
            },
            "eval": {"every": 0, "samples_per_prompt": 1},
        }
    )


@pytest.mark.parametrize("algorithm", ["nabla", "grpo"])
def test_tiny_rollout_reward_update_on_cpu(tmp_path, algorithm):
    """One training iteration (rollout → splat render → normal-consistency reward → LoRA update) runs on
    the CPU, changes the adapter, and writes a checkpoint."""
    torch.manual_seed(0)
    pol = load_tiny_diffsplat(seed=0)
    reward = NormalConsistencyReward(n_views=2, size=12)
    cls = NablaTrainer if algorithm == "nabla" else GRPOTrainer
    trainer = cls(
        recipe(algorithm), pol, RewardMix([reward], [1.0]), tmp_path / algorithm, log=lambda _: None
    )
    before = {n: p.detach().clone() for n, p in trainer.peft.named_parameters() if p.requires_grad}
    records = trainer.train()
    after = {n: p.detach() for n, p in trainer.peft.named_parameters() if p.requires_grad}
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert "reward" in records[1] and (tmp_path / algorithm / "checkpoint").is_dir()
    for tag in ("start", "end"):  # the policy's own preview: rendered views of the Gaussian samples
        assert (tmp_path / algorithm / f"samples_{tag}.png").stat().st_size > 500
    if algorithm == "nabla":
        assert records[1]["reward_grad_norm"] > 0 and records[1]["train_steps"] == 2
