"""train.kl_type: the exact transition KL (default) and flow_grpo's train_sd3.py term."""

import math

import pytest
import torch
from toy_policy import ToyReward, make

from r3d.core.config import GRPORecipe
from r3d.core.grpo import GRPOTrainer
from r3d.core.kernels import flow_cps_step, flow_sde_step
from r3d.core.rewards import RewardMix

A = 0.7  # noise level


def trainer(tmp_path, kernel="flow_sde", kl_type="exact") -> GRPOTrainer:
    cfg = GRPORecipe.model_validate(
        {
            "model": {"name": "toy_policy:make"},
            "prompts": {"train": ["left", "right"]},
            "sampler": {"num_steps": 10, "kernel": kernel, "noise_level": A},
            "rewards": {"toy_policy:make_reward": {"weight": 1.0}},
            "train": {"kl_beta": 0.04, "kl_type": kl_type, "prompts_per_iteration": 2, "group_size": 4},
        }
    )
    return GRPOTrainer(cfg, make("x0"), RewardMix([ToyReward()], [1.0]), tmp_path, log=lambda _: None)


def fixed_steps(kernel, sigmas, step):
    """Two transitions (policy and reference velocities) from the same x at ``step``, fixed tensors."""
    g = torch.Generator().manual_seed(step)
    x, v, v_ref = (torch.randn(3, 4, 5, generator=g) for _ in range(3))
    s, s_next = sigmas[step].expand(3), sigmas[step + 1].expand(3)
    if kernel == "flow_sde":
        kw = {"sigma_max": float(sigmas[1])}
        return flow_sde_step(v, x, s, s_next, A, **kw), flow_sde_step(v_ref, x, s, s_next, A, **kw)
    return flow_cps_step(v, x, s, s_next, A), flow_cps_step(v_ref, x, s, s_next, A)


def flow_grpo_formula(mean, ref_mean, sigma, sigma_max):
    """flow_grpo train_sd3.py, in float64: ((μ − μ_ref)²).mean(dims) / (2·std_dev_t²) with
    std_dev_t = a·√(σ / (1 − σ̃)), σ̃ = sigma_max at σ = 1 (its sde_step_with_logprob)."""
    denom = sigma_max if sigma == 1 else sigma
    std_dev_t = A * math.sqrt(sigma / (1 - denom))
    return ((mean.double() - ref_mean.double()) ** 2).mean(dim=(1, 2)) / (2 * std_dev_t**2)


@pytest.mark.parametrize("step", [0, 3, 6, 8, 9])
def test_flow_grpo_kl_reproduces_flow_grpos_term_and_exact_is_it_over_minus_dt(tmp_path, step):
    """kl_type flow_grpo equals flow_grpo's formula on fixed tensors (rel 1e-5) at every step, the σ = 1
    step included; the default (exact) KL is that term × 1/(−dt) — the exact Gaussian KL."""
    flow = trainer(tmp_path / "f", kl_type="flow_grpo")
    exact = trainer(tmp_path / "e")
    sigmas = flow.schedule.points
    out, ref = fixed_steps("flow_sde", sigmas, step)
    expected = flow_grpo_formula(out.mean, ref.mean, float(sigmas[step]), float(sigmas[1]))
    got = flow._kl(step, out, ref)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)
    dt = float(sigmas[step + 1] - sigmas[step])
    exact_formula = ((out.mean - ref.mean) ** 2 / (2 * out.std**2)).mean(dim=(1, 2))
    torch.testing.assert_close(exact._kl(step, out, ref), exact_formula)
    torch.testing.assert_close(exact._kl(step, out, ref).double(), expected / -dt, rtol=1e-5, atol=0)


def test_flow_grpo_and_exact_agree_for_cps(tmp_path):
    """For flow_cps flow_grpo divides by the transition std itself: both kl_types give the same KL."""
    flow = trainer(tmp_path / "f", kernel="flow_cps", kl_type="flow_grpo")
    exact = trainer(tmp_path / "e", kernel="flow_cps")
    out, ref = fixed_steps("flow_cps", flow.schedule.points, 4)
    torch.testing.assert_close(flow._kl(4, out, ref), exact._kl(4, out, ref), rtol=1e-6, atol=0)


def test_default_is_exact_and_flow_grpo_needs_a_flow_kernel(tmp_path):
    """Today's recipes keep the exact KL; flow_grpo with a kernel flow_grpo has no term for is refused."""
    assert trainer(tmp_path).cfg.train.kl_type == "exact"
    for kernel in ("dance_sde", "ddim"):
        with pytest.raises(Exception, match="kl_type flow_grpo applies to kernels flow_sde and flow_cps"):
            trainer(tmp_path, kernel=kernel, kl_type="flow_grpo")


def test_flow_grpo_kl_is_used_in_training(tmp_path):
    """A short run with kl_type flow_grpo trains and logs a KL; so the option reaches the update loop."""
    t = trainer(tmp_path, kl_type="flow_grpo")
    t.cfg.train.iterations = 2
    records = t.train()
    assert records[-1]["kl"] > 0
