"""The motion policy and the motion reward in the reward-gradient (Nabla) path."""

from pathlib import Path

import pytest
import torch

from r3d.commands.runner import make_trainer
from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.recipe import load_recipe
from r3d.core.rollout import predict_x0
from r3d.models.mdm import load_tiny_motion
from r3d.rewards.motion import (
    MotionCombinedReward,
    MotionMatchingReward,
    MotionRPrecisionReward,
    TMRCosineReward,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PROMPTS = ["someone jumps up twice", "a man waves his right hand"]


@pytest.fixture(scope="module")
def policy():
    return load_tiny_motion(default_length=40)


def _samples(policy, n: int = 4) -> torch.Tensor:
    return torch.randn(
        n, policy.network.njoints, 1, policy.max_frames, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: MotionCombinedReward(evaluator="tiny-tmr", matching_weight=0.5),
        lambda: MotionMatchingReward(evaluator="tiny-t2m"),
        lambda: TMRCosineReward(),
    ],
)
def test_score_latents_equals_scoring_the_decoded_motions(policy, make):
    """score_latents on x0 gives the same values as __call__ on policy.decode(x0) (the padded, uncropped
    features are masked by length): the gradient path optimises exactly the reward GRPO would log."""
    reward = make()
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1]]
    x0 = _samples(policy)
    cond = policy.encode_prompts(prompts)
    logged = reward(policy.decode(x0, cond), prompts)[reward.name]
    with torch.no_grad():
        latent = reward.score_latents(policy, x0, prompts)
    assert reward.differentiable
    assert torch.allclose(latent, logged, atol=1e-4), (latent, logged)


def test_rank_modes_are_not_differentiable():
    """R-precision by rank is a step function: the reward says so, and score_latents refuses in one line."""
    reward = MotionRPrecisionReward(evaluator="tiny-tmr", mode="top3")
    assert not reward.differentiable
    with pytest.raises(R3DError, match="not differentiable"):
        reward.score_embeddings(torch.zeros(1, 4), ["a man runs forward"])


def _trainer(tmp_path, extra=()):
    overrides = [
        "train.prompts_per_iteration=2",
        "train.group_size=2",
        "train.batch_size=4",
        "sampler.num_steps=4",
        "model.options.default_length=40",
        "prompts.train=[someone jumps up twice, a man waves his right hand]",
        "prompts.eval=[someone jumps up twice]",
        *extra,
    ]
    cfg = load_recipe(RECIPES / "motion_gradient_tiny.yaml", GRPORecipe, overrides)
    torch.manual_seed(0)
    return make_trainer(cfg, tmp_path / "run", log=lambda _: None)


def test_reward_gradient_reaches_the_lora(tmp_path):
    """One Nabla update on the tiny MDM: the reward's gradient w.r.t. x' is non-zero, and the LoRA
    parameters get non-zero gradients from the alignment loss (they would be zero if the target g, the
    only thing pulling the policy away from the reference, were lost, as the LoRA starts at the reference)."""
    trainer = _trainer(tmp_path)
    prompts = PROMPTS * 2
    cond = trainer.policy.encode_prompts(prompts)
    x = trainer.policy.initial_noise(4, torch.Generator().manual_seed(1))
    grad, value = trainer.reward_gradient(1, x, cond, prompts)
    assert grad.shape == x.shape and grad.flatten(1).norm(dim=1).min() > 0
    assert torch.isfinite(value).all()
    roll = trainer.rollout(
        prompts, x, trainer.cfg.sampler.kernel, trainer._sde_steps(), torch.Generator().manual_seed(2)
    )
    lora = [p for n, p in trainer.peft.named_parameters() if "lora_" in n and p.requires_grad]
    trainer.optimizer_step = lambda sums, weight: None  # keep the gradients to inspect them
    trainer.update(roll, torch.zeros(4), [0])
    norms = [p.grad.norm() for p in lora if p.grad is not None]
    assert norms and max(norms) > 0


def test_reward_gradient_steps_raise_the_reward_on_a_fixed_batch(tmp_path):
    """A few Nabla updates on one fixed rollout raise the motion reward of that batch's x̂₀ at the
    trained step (mean over the 4 samples, policy's own prediction): the update climbs the reward."""
    trainer = _trainer(tmp_path, ["train.lr=3e-3"])
    prompts = PROMPTS * 2
    cond = trainer.policy.encode_prompts(prompts)
    x = trainer.policy.initial_noise(4, torch.Generator().manual_seed(1))
    roll = trainer.rollout(
        prompts, x, trainer.cfg.sampler.kernel, trainer._sde_steps(), torch.Generator().manual_seed(2)
    )

    def reward_of_batch() -> float:
        with torch.no_grad():
            x_next = trainer.replay(0, roll.latents[:, 0], cond, roll.latents[:, 1]).mean
            x0 = predict_x0(trainer.policy, trainer.schedule, 1, x_next, cond)
            return float(trainer.log_reward(x0, prompts).mean())

    before = reward_of_batch()
    for _ in range(4):
        trainer.update(roll, torch.zeros(4), [0])
    after = reward_of_batch()
    assert after > before + 0.01, (before, after)
