"""Motion rewards: the Reward protocol, mappings, distractor rules and ranking of true vs wrong motions."""

from __future__ import annotations

import pytest
import torch

from r3d.core.errors import R3DError
from r3d.core.rewards import Reward, RewardMix
from r3d.motion.artifacts import Motion
from r3d.motion.synthetic import make_motion
from r3d.rewards.motion import (
    MotionCombinedReward,
    MotionMatchingReward,
    MotionRPrecisionReward,
    TMRCosineReward,
    TMRMatchingReward,
    map_distance,
)


@pytest.fixture(scope="module")
def pairs() -> tuple[list[Motion], list[str], list[Motion]]:
    """Motions with their own captions, and the same motions paired with mismatched actions."""
    actions = ["walk", "jump", "wave", "squat", "kick", "clap"]
    specs = [make_motion(100 + i, a) for i, a in enumerate(actions)]
    motions = [Motion(s.features) for s in specs]
    return motions, [s.caption for s in specs], motions[1:] + motions[:1]


def test_map_distance_shapes_and_ranges():
    d = torch.tensor([0.0, 1.0, 3.0, 10.0])
    assert torch.allclose(map_distance(d, "exp", 3.0, 3.0), torch.exp(-d / 3))
    lin = map_distance(d, "linear", 3.0, 1.0)
    assert lin.tolist() == [1.0, pytest.approx(2 / 3), 0.0, 0.0]  # clamped
    sig = map_distance(d, "sigmoid", 3.0, 0.75)
    assert sig[2] == 0.5 and torch.all(sig[:-1] > sig[1:])
    with pytest.raises(R3DError, match="mapping"):
        map_distance(d, "cubic", 1.0, 1.0)


@pytest.mark.parametrize(
    "cls",
    [MotionMatchingReward, MotionRPrecisionReward, TMRCosineReward, TMRMatchingReward, MotionCombinedReward],
)
def test_rewards_follow_the_protocol_and_prefer_the_true_motion(cls, pairs):
    motions, captions, wrong = pairs
    reward = cls()
    # differentiable: score_latents (the reward-gradient path, tests/test_motion_gradient.py)
    assert isinstance(reward, Reward) and reward.value_range == (0.0, 1.0) and reward.differentiable
    good = reward(motions, captions)
    bad = reward(wrong, captions)
    assert good[reward.name].shape == (6,) and good[reward.name].dtype == torch.float32
    assert torch.all((good[reward.name] >= 0) & (good[reward.name] <= 1))
    assert good[reward.name].mean() > bad[reward.name].mean()
    none = reward([None, *motions[1:]], captions)
    assert none[reward.name][0] == 0.0  # an empty artifact scores the minimum


def test_rprecision_distractors_exclude_the_prompt_and_are_shared_within_a_group():
    r = MotionRPrecisionReward(pool=[f"caption {i}" for i in range(40)] + ["a person walks"])
    group = ["a person walks"] * 4 + ["someone jumps"] * 4
    d = r.distractors_for("a person walks", group)
    assert len(d) == 31 and "a person walks" not in d and len(set(d)) == 31
    assert d == r.distractors_for("a person walks", group)  # same for every member of the group
    assert (
        MotionRPrecisionReward(pool=[f"caption {i}" for i in range(40)], seed=1).distractors_for(
            "a person walks", group
        )
        != d
    )
    with pytest.raises(R3DError, match="distractor"):
        MotionRPrecisionReward(pool=["x", "y"]).distractors_for("a person walks", group)
    with pytest.raises(R3DError, match="mode"):
        MotionRPrecisionReward(mode="best")


def test_reward_mix_logs_sub_scores(pairs):
    motions, captions, _ = pairs
    mix = RewardMix([MotionMatchingReward(mapping="sigmoid"), TMRCosineReward()], [1.0, 0.5])
    total, comps = mix(motions, captions)
    assert total.shape == (6,)
    assert {"motion_matching", "motion_matching/distance", "tmr_cosine", "tmr_cosine/cosine"} <= set(comps)
    assert torch.allclose(total, comps["motion_matching"] + 0.5 * comps["tmr_cosine"])


def test_published_t2m_evaluator_is_usable_as_a_reward_with_glove_and_statistics(tmp_path, pairs):
    """A finest.tar-layout evaluator (HumanML3D sizes) plus the GloVe folder and evaluator statistics,
    given as reward options, scores motions; without them the error names the missing options."""
    import pickle

    import numpy as np

    from r3d.motion.evaluators import T2MEvaluator

    torch.manual_seed(0)
    full = T2MEvaluator()  # HumanML3D sizes, random weights
    parts = ("text_encoder", "motion_encoder", "movement_encoder")
    torch.save({k: getattr(full, k).state_dict() for k in parts}, tmp_path / "finest.tar")
    words = ["unk", "a", "person", "walks", "jumps", "waves"]
    np.save(tmp_path / "our_vab_data.npy", np.random.default_rng(0).normal(size=(6, 300)).astype(np.float32))
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    np.save(tmp_path / "t2m_mean.npy", np.zeros(263, dtype=np.float32))
    np.save(tmp_path / "t2m_std.npy", np.ones(263, dtype=np.float32))
    motions, captions, _ = pairs
    with pytest.raises(R3DError, match="glove"):
        MotionMatchingReward(str(tmp_path / "finest.tar"))
    reward = MotionMatchingReward(str(tmp_path / "finest.tar"), glove=str(tmp_path), stats_dir=str(tmp_path))
    scores = reward(motions[:3], captions[:3])
    assert scores["motion_matching"].shape == (3,)
    assert torch.all((scores["motion_matching"] > 0) & (scores["motion_matching"] <= 1))
    assert torch.all(scores["distance"] > 0)
