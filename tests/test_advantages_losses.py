"""Group advantages and the GRPO / KL losses."""

import pytest
import torch

from r3d.core.advantages import PerPromptStatTracker, group_advantages, zero_variance_fraction
from r3d.core.losses import gaussian_kl, grpo_policy_loss


def test_group_advantages_formula_population_std():
    """A = (r − group mean) / (population std + eps), computed per group."""
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 16.0])
    g = ["a", "a", "a", "b", "b", "b"]
    adv = group_advantages(r, g, eps=1e-4)
    for idx in ([0, 1, 2], [3, 4, 5]):
        grp = r[idx]
        expected = (grp - grp.mean()) / (grp.std(unbiased=False) + 1e-4)
        torch.testing.assert_close(adv[idx], expected)


def test_group_advantages_invariant_to_affine_rescaling():
    """r → a·r + b (a > 0) leaves advantages unchanged (up to eps)."""
    r = torch.randn(24)
    g = torch.arange(24) // 6
    base = group_advantages(r, g, eps=1e-8)
    scaled = group_advantages(3.7 * r - 11.0, g, eps=1e-8)
    torch.testing.assert_close(base, scaled, rtol=1e-4, atol=1e-4)


def test_group_advantages_global_std_and_zero_variance():
    """global_std divides by the std of all rewards; a constant group gets advantage 0."""
    r = torch.tensor([1.0, 1.0, 0.0, 4.0])
    g = [0, 0, 1, 1]
    adv = group_advantages(r, g, global_std=True, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([0.0, 0.0, -2.0, 2.0]) / r.std(unbiased=False))
    assert torch.equal(group_advantages(r, g)[:2], torch.zeros(2))
    assert zero_variance_fraction(r, g) == 0.5


def test_tracker_buffer_uses_history_and_clips():
    """With a buffer, later iterations normalise with the prompt's stored rewards; clip bounds |A|."""
    t = PerPromptStatTracker(buffer_size=8, min_count=4, clip=1.0)
    t.update(["p"] * 4, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    stats = t.update(["p"] * 2, torch.tensor([1.0, 5.0]))
    hist = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 5.0])
    expected = ((torch.tensor([1.0, 5.0]) - hist.mean()) / (hist.std(unbiased=False) + 1e-4)).clamp(-1, 1)
    torch.testing.assert_close(stats.advantages, expected)
    state = t.state_dict()
    t2 = PerPromptStatTracker(buffer_size=8, min_count=4, clip=1.0)
    t2.load_state_dict(state)
    assert t2.state_dict() == state


def test_policy_loss_ratio_one_is_minus_mean_advantage():
    """On-policy (ratio 1) the loss is −mean(A) and nothing is clipped."""
    lp = torch.randn(8)
    adv = torch.randn(8)
    loss, m = grpo_policy_loss(lp, lp.clone(), adv, clip_range=0.2)
    torch.testing.assert_close(loss, -adv.mean())
    assert m["clipfrac"] == 0 and m["approx_kl"] == 0 and m["ratio_mean"] == 1


def test_policy_loss_sign_and_gradient_direction():
    """Gradient descent on the loss raises log p of positive-advantage samples, lowers negative ones."""
    lp = torch.zeros(2, requires_grad=True)
    loss, _ = grpo_policy_loss(lp, torch.zeros(2), torch.tensor([1.0, -1.0]), clip_range=0.2)
    loss.backward()
    assert lp.grad[0] < 0 < lp.grad[1]


@pytest.mark.parametrize(
    "adv,log_ratio,clipped", [(1.0, 0.5, True), (1.0, -0.5, False), (-1.0, -0.5, True), (-1.0, 0.5, False)]
)
def test_policy_loss_clipping(adv, log_ratio, clipped):
    """PPO clipping: the gradient vanishes exactly when the ratio left [1−ε, 1+ε] in the advantage's direction."""
    lp = torch.tensor([log_ratio], requires_grad=True)
    loss, m = grpo_policy_loss(lp, torch.zeros(1), torch.tensor([adv]), clip_range=0.2)
    loss.backward()
    assert (lp.grad.abs().item() == 0) == clipped
    assert m["clipfrac"].item() == 1.0
    expected = -adv * (
        min(max(torch.exp(torch.tensor(log_ratio)).item(), 0.8), 1.2)
        if clipped
        else torch.exp(torch.tensor(log_ratio)).item()
    )
    assert abs(loss.item() - expected) < 1e-6


def test_gaussian_kl_closed_form():
    """gaussian_kl equals torch's KL between the two Gaussians, averaged over dims; zero for equal means."""
    mean, ref = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    std = torch.rand(3, 1, 1) + 0.1
    p = torch.distributions.Normal(mean, std.expand_as(mean))
    q = torch.distributions.Normal(ref, std.expand_as(mean))
    torch.testing.assert_close(
        gaussian_kl(mean, ref, std), torch.distributions.kl_divergence(p, q).mean(dim=(1, 2))
    )
    assert torch.equal(gaussian_kl(mean, mean, std), torch.zeros(3))


def test_a_group_of_equal_rewards_gets_exactly_zero_advantage_even_for_float64_input():
    """float32 rounding of the mean of 8 × 0.7 used to leave +5.96e-4 on every sample."""
    rewards = torch.tensor([0.7] * 8 + [0.1, 0.3] * 4, dtype=torch.float64)
    groups = [0] * 8 + [1] * 8
    adv = group_advantages(rewards, groups)
    assert adv.dtype == torch.float32
    assert torch.equal(adv[:8], torch.zeros(8))
    assert torch.allclose(adv[8:].abs(), torch.full((8,), 0.1 / (0.1 + 1e-4)), atol=1e-6)
    tracked = PerPromptStatTracker().update(["a"] * 8 + ["b"] * 8, rewards).advantages
    assert torch.equal(tracked, adv)
