"""train.overlap_rewards: chunk k is decoded and scored in a worker thread while chunk k+1 is sampled."""

import time

import pytest
from pydantic import ValidationError
from toy_policy import ToyPolicy, ToyReward

from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.grpo import GRPOTrainer
from r3d.core.rewards import RewardMix


def recipe(**train) -> GRPORecipe:
    return GRPORecipe.model_validate(
        {
            "run": {"seed": 7},
            "prompts": {"train": ["left", "right"], "eval": ["left", "right"]},
            "sampler": {"num_steps": 4},
            "rewards": {"toy": {"weight": 1.0}},
            "train": {"iterations": 2, "prompts_per_iteration": 2, "group_size": 8, "batch_size": 4, **train},
            "eval": {"every": 0, "samples_per_prompt": 2},
            "checkpoint": {"every": 10},
        }
    )


class SlowPolicy(ToyPolicy):
    """The toy policy with a fixed delay per network evaluation (a stand-in for a big model)."""

    delay = 0.0

    def velocity(self, x, sigma, cond):
        time.sleep(self.delay)
        return super().velocity(x, sigma, cond)


class SlowReward(ToyReward):
    """The toy reward with a fixed delay per sample; records the thread and batch size of every call."""

    def __init__(self, delay=0.0, fail_on_call=None):
        self.delay, self.fail_on_call = delay, fail_on_call
        self.calls: list[tuple[str, int]] = []

    def __call__(self, artifacts, prompts):
        import threading

        self.calls.append((threading.current_thread().name, len(artifacts)))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise R3DError("reward server unreachable")
        time.sleep(self.delay * len(artifacts))
        return super().__call__(artifacts, prompts)


def train(tmp_path, name, overlap, policy_delay=0.0, reward=None, **train):
    policy = SlowPolicy()
    policy.delay = policy_delay
    reward = reward or SlowReward()
    cfg = recipe(overlap_rewards=overlap, **train)
    trainer = GRPOTrainer(cfg, policy, RewardMix([reward], [1.0]), tmp_path / name, log=lambda _: None)
    return trainer.train(), reward


class PerSampleReward(SlowReward):
    """The toy reward computed one sample at a time: its value cannot depend on the batch it is in."""

    def __call__(self, artifacts, prompts):
        import torch

        parts = [
            super(PerSampleReward, self).__call__([a], [p]) for a, p in zip(artifacts, prompts, strict=True)
        ]
        self.calls[-len(parts) :] = [(self.calls[-1][0], len(parts))]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def test_overlapped_rewards_are_bit_identical_to_the_sequential_path(tmp_path):
    """Same rewards, advantages, losses and evaluation, bit for bit, with and without overlap, for a
    reward whose value for a sample does not depend on its batch; in the overlapped run the reward
    runs off the main thread once per chunk of train.batch_size samples."""
    seq, seq_reward = train(tmp_path, "seq", overlap=False, reward=PerSampleReward())
    ovl, ovl_reward = train(tmp_path, "ovl", overlap=True, reward=PerSampleReward())
    assert without_times(seq) == without_times(ovl)
    assert "reward/side/raw" in ovl[1] and ovl[1]["ratio_first_step_maxdev"] == 0.0
    # training: one call of 16 per iteration on the main thread, or 4 chunks of 4 in the worker thread;
    # evaluation (first and last call) stays on the main thread in both
    assert [n for _, n in seq_reward.calls] == [4, 16, 16, 4]
    worker = [(name.startswith("r3d-rewards"), n) for name, n in ovl_reward.calls]
    assert worker == [(False, 4)] + [(True, 4)] * 8 + [(False, 4)]
    assert "time/reward_worker_s" in ovl[1] and "time/decode_s" in seq[1]


def test_a_batched_reward_agrees_to_float_rounding(tmp_path):
    """A batched reward (one torch.sigmoid over the whole call) sees 16 samples at once sequentially and
    chunks of 4 overlapped. PyTorch's vectorised kernels compute full SIMD vectors and the tail of a
    tensor with different code (on AVX2: a batch of 16 is two 8-wide vectors, a batch of 4 only a tail),
    so the same sample may differ in its last bit (this once made the bit-identity test above fail on
    AVX2 machines; reproduce with ATEN_CPU_CAPABILITY=avx2). The runs then agree to rounding."""
    seq, _ = train(tmp_path, "seq", overlap=False, iterations=1)
    ovl, _ = train(tmp_path, "ovl", overlap=True, iterations=1)
    for a, b in zip(without_times(seq), without_times(ovl), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_overlap_hides_the_reward_time_behind_sampling(tmp_path):
    """4 chunks, 0.12 s of sampling and 0.12 s of reward per chunk: sequentially the loop spends
    ~0.48 s in rewards; overlapped it waits only for the last chunk's reward (~0.12 s)."""
    seq, _ = train(tmp_path, "seq", False, policy_delay=0.03, reward=SlowReward(0.03), iterations=1)
    ovl, _ = train(tmp_path, "ovl", True, policy_delay=0.03, reward=SlowReward(0.03), iterations=1)
    assert seq[1]["time/reward_s"] >= 0.48
    assert ovl[1]["time/reward_worker_s"] >= 0.48
    assert ovl[1]["time/reward_s"] < 0.3
    assert ovl[1]["time/sample_s"] + ovl[1]["time/reward_s"] < seq[1]["time/sample_s"] + 0.3


def test_a_failing_reward_in_the_worker_reaches_the_caller(tmp_path):
    """An error raised while scoring chunk 2 in the worker is raised by the training loop, unchanged."""
    with pytest.raises(R3DError, match="reward server unreachable"):
        train(tmp_path, "fail", True, reward=SlowReward(fail_on_call=3))


def test_overlap_is_refused_for_nabla():
    """Nabla reads the whole rollout's rewards at once, so the option is a recipe error there."""
    with pytest.raises(ValidationError, match="overlap_rewards"):
        recipe(overlap_rewards=True, algorithm="nabla")


def test_overlap_is_off_by_default():
    """Existing recipes keep the sequential path (and so their exact results)."""
    assert recipe().train.overlap_rewards is False
