"""Conformance: every registered policy and reward that builds offline goes through the adapter contract
of r3d.core.policy / r3d.core.rewards (docs/adapters.md); the others are named with the test file that
covers them on tiny weights, so a new backend cannot join the registry unexercised."""

from pathlib import Path

import pytest
import torch

from r3d.core.policy import DiffusionPolicy, FlowPolicy
from r3d.core.registry import POLICIES, REWARDS, build_policy, build_reward
from r3d.core.rewards import Reward
from r3d.core.rollout import decode, make_schedule, sample

TESTS = Path(__file__).resolve().parent

# policy → (factory options, prompts)
OFFLINE_POLICIES = {
    "tiny_shapes": ({}, ["a cube", "a torus"]),
    "tiny_motion": ({}, ["a person walks forward", "someone jumps up twice"]),
    "tiny_diffsplat": ({}, ["a chair", "a lamp"]),
}
# built from weights a test makes itself (tiny random checkpoints) or needing a GPU-size download
COVERED_ELSEWHERE = {
    "hunyuan3d": "test_hunyuan3d.py",
    "diffsplat": "test_diffsplat.py",
    "uni3d": "test_uni3d.py",
    "image_model": "test_render_diff.py",
    "remote": "test_remote_rewards.py",
    "vlm_judge": "test_remote_rewards.py",
}
# reward → the policy whose artifacts it scores
OFFLINE_REWARDS = {
    "geometry": "tiny_shapes",
    "normal": "tiny_shapes",
    "semantic": "tiny_shapes",
    "silhouette": "tiny_shapes",
    "normal_consistency": "tiny_diffsplat",
    "motion_matching": "tiny_motion",
    "motion_rprecision": "tiny_motion",
    "motion_combined": "tiny_motion",
    "tmr_cosine": "tiny_motion",
    "tmr_matching": "tiny_motion",
}


def test_every_registered_backend_is_exercised():
    for name in [*POLICIES, *REWARDS]:
        assert name in OFFLINE_POLICIES or name in OFFLINE_REWARDS or name in COVERED_ELSEWHERE, name
    for name, test_file in COVERED_ELSEWHERE.items():
        assert (TESTS / test_file).read_text().count(name.split("_")[0]) > 0, (name, test_file)


@pytest.fixture(scope="module")
def rollouts():
    """name → (policy, prompts, artifacts) of a 2-step deterministic rollout, built once."""
    out = {}
    for name, (options, prompts) in OFFLINE_POLICIES.items():
        policy = build_policy(name, **options)
        cond = policy.encode_prompts(prompts)
        noise = policy.initial_noise(len(prompts), torch.Generator().manual_seed(0))
        with torch.no_grad():
            schedule = make_schedule(policy, 2)
            traj = sample(
                policy, schedule, cond, noise, kernel="ode", noise_level=0.0, sde_steps=None, generator=None
            )
            artifacts = decode(policy, traj.latents[:, -1], cond)
        out[name] = (policy, prompts, cond, noise, traj, artifacts)
    return out


@pytest.mark.parametrize("name", list(OFFLINE_POLICIES))
def test_policy_follows_the_contract(name, rollouts):
    """The protocol's members exist; noise, schedule, conditions and decode have the documented shapes;
    LoRA's target modules exist in the network; select_cond picks samples."""
    policy, prompts, cond, noise, traj, artifacts = rollouts[name]
    assert isinstance(policy, FlowPolicy) or isinstance(policy, DiffusionPolicy)
    assert isinstance(policy.network, torch.nn.Module)
    names = [n for n, _ in policy.network.named_modules()]
    for target in policy.lora_target_modules:  # peft matches a target as the end of a module's name
        assert any(n == target or n.endswith("." + target) for n in names), target
    assert noise.shape[0] == len(prompts) and noise.dtype == torch.float32
    assert traj.latents.shape[:2] == (len(prompts), 3) and torch.isfinite(traj.latents).all()
    assert len(artifacts) == len(prompts)
    picked = policy.select_cond(cond, torch.tensor([1]))
    again = policy.select_cond(cond, torch.tensor([0, 1]))
    assert type(picked) is type(again)


@pytest.mark.parametrize("name", list(OFFLINE_REWARDS))
def test_reward_follows_the_contract(name, rollouts):
    """A dict holding the headline ``name`` and sub-scores, float32 tensors of shape (B,), finite; a None
    artifact (an empty decode) scores without an error; the metadata the trainer reads exists."""
    reward = build_reward(name)
    assert isinstance(reward, Reward)
    _, prompts, *_, artifacts = rollouts[OFFLINE_REWARDS[name]]
    scores = reward(artifacts, prompts)
    assert reward.name in scores
    for value in scores.values():
        value = torch.as_tensor(value)
        assert value.shape == (len(prompts),) and torch.isfinite(value).all()
    low, high = reward.value_range
    assert low <= float(scores[reward.name].min()) and float(scores[reward.name].max()) <= high
    with_empty = reward([None, *artifacts[1:]], prompts)
    assert torch.isfinite(torch.as_tensor(with_empty[reward.name])).all()
