"""Conformance: every registered policy and reward that builds offline goes through the adapter contract
of r3d.core.policy / r3d.core.rewards (docs/adapters.md); the others are named with the test file that
covers them on tiny weights, so a new backend cannot join the registry unexercised."""

import ast
import inspect
from pathlib import Path

import pytest
import torch

from r3d.core.errors import R3DError
from r3d.core.policy import (
    CheckpointedNetwork,
    DecodesField,
    DiffusionPolicy,
    FactoryHooks,
    FlowPolicy,
    HasExampleCond,
    RendersLatents,
    SavesPreview,
    declare_hooks,
    factory_hooks,
    policy_kind,
)
from r3d.core.registry import GOLD, POLICIES, REWARDS, build_policy, build_reward, resolve
from r3d.core.rewards import Reward
from r3d.core.rollout import make_schedule, sample

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
            artifacts = policy.decode(traj.latents[:, -1], cond)
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


POLICY_HOOKS = (SavesPreview, HasExampleCond, DecodesField, RendersLatents)


def _methods(protocol: type) -> list[str]:
    return [n for n, v in list(vars(protocol).items()) if not n.startswith("_") and callable(v)]


HOOK_NAMES = {
    *(n for hook in POLICY_HOOKS for n in _methods(hook)),
    "checkpoint_units",
    "gradient_checkpointing",
    *FactoryHooks.__dataclass_fields__,
}


def _signature_matches(method, protocol_method) -> bool:
    want = [p for p in inspect.signature(protocol_method).parameters if p != "self"]
    have = list(inspect.signature(method).parameters)
    return have[: len(want)] == want


@pytest.mark.parametrize("name", list(OFFLINE_POLICIES))
def test_optional_policy_hooks_have_the_declared_signatures(name, rollouts):
    """A policy member named like an optional hook is that hook: same parameter names as its protocol
    in r3d.core.policy (a hook with another signature would be called wrongly, not skipped)."""
    policy = rollouts[name][0]
    for hook in POLICY_HOOKS:
        for member in _methods(hook):
            if hasattr(policy, member):
                assert isinstance(policy, hook), (name, member)
                assert _signature_matches(getattr(policy, member), vars(hook)[member]), (name, member)
    if hasattr(policy.network, "checkpoint_units"):
        assert isinstance(policy.network, CheckpointedNetwork)


def test_factory_hooks_are_declared_typed_and_misspellings_fail():
    """Factory hooks are FactoryHooks dataclasses (a misspelt name is a TypeError at import, not a hook
    silently never used); every declared writer / check is callable."""
    declared = 0
    for table, kind in ((POLICIES, "policy"), (REWARDS, "reward"), (GOLD, "gold measure")):
        for name in table:
            try:
                factory = resolve(name, table, kind)
            except R3DError:  # an optional extra is missing here
                continue
            hooks = factory_hooks(factory)
            for field in FactoryHooks.__dataclass_fields__:
                value = getattr(hooks, field)
                if value is not None:
                    declared += 1
                    assert isinstance(value, str) if field == "weights_option" else callable(value), (
                        name,
                        field,
                    )
    assert declared >= 8  # tiny_shapes, tiny_motion, mdm, diffsplat ×2, hunyuan3d, uni3d, clip

    def factory():
        return None

    with pytest.raises(TypeError):
        declare_hooks(factory, save_merge=lambda *a: None)
    declare_hooks(factory, weights_option="path")
    declare_hooks(factory, save_merged=print)
    assert factory_hooks(factory) == FactoryHooks(save_merged=print, weights_option="path")


def test_no_hook_is_looked_up_by_a_string():
    """Consumers test hooks with isinstance / factory_hooks, never getattr(obj, "hook") or hasattr: the
    hook's name is written once, in r3d.core.policy."""
    root = TESTS.parent / "r3d"
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in HOOK_NAMES
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.args[1].value}")
    assert not found, found


def test_an_object_that_is_no_policy_is_a_one_line_error():
    """policy_kind names the protocol and the members missing, instead of an AttributeError mid-rollout."""

    class HalfFlow:
        network = torch.nn.Linear(1, 1)

        def velocity(self, x, sigma, cond):
            return x

    with pytest.raises(R3DError, match=r"as a FlowPolicy it lacks .*sigmas") as info:
        make_schedule(HalfFlow(), 2)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", list(OFFLINE_POLICIES))
def test_policy_kind_matches_the_protocol(name, rollouts):
    policy = rollouts[name][0]
    assert policy_kind(policy) == ("flow" if isinstance(policy, FlowPolicy) else "ddpm")
