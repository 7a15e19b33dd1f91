"""The transition kernels: deterministic limits, exact Gaussian log-probs, marginal preservation."""

import math

import pytest
import torch

from r3d.core.kernels import (
    dance_sde_step,
    ddim_step,
    flow_cps_step,
    flow_sde_step,
    gaussian_log_prob,
    ode_step,
    standard_normal,
)

torch.manual_seed(0)
B = 4
X = torch.randn(B, 3, 5, 5)
V = torch.randn(B, 3, 5, 5)
SIGMAS = [(0.9, 0.8), (0.5, 0.3), (0.2, 0.0)]


def _flow_kernels():
    return {
        "flow_sde": lambda lvl, **kw: flow_sde_step(V, X, kw["s"], kw["sn"], noise_level=lvl, **kw["extra"]),
        "flow_cps": lambda lvl, **kw: flow_cps_step(V, X, kw["s"], kw["sn"], noise_level=lvl, **kw["extra"]),
        "dance_sde": lambda lvl, **kw: dance_sde_step(V, X, kw["s"], kw["sn"], eta=lvl, **kw["extra"]),
    }


@pytest.mark.parametrize("name", ["flow_sde", "flow_cps", "dance_sde"])
@pytest.mark.parametrize("s,sn", SIGMAS)
def test_noise_level_zero_equals_euler_step(name, s, sn):
    """Every stochastic flow kernel at noise level 0 returns exactly the Euler (ODE) step."""
    out = _flow_kernels()[name](0.0, s=s, sn=sn, extra={"generator": torch.Generator().manual_seed(1)})
    euler = ode_step(V, X, s, sn)
    torch.testing.assert_close(out.prev_sample, euler.prev_sample, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.mean, euler.mean, rtol=0, atol=1e-6)
    assert torch.all(out.std == 0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddim_eta_zero_is_deterministic_ddim(prediction_type):
    """DDIM with η = 0 has zero std and equals the closed-form deterministic DDIM update."""
    ab, ab_prev = 0.3, 0.6
    out = ddim_step(V, X, ab, ab_prev, eta=0.0, prediction_type=prediction_type)
    a, b = math.sqrt(ab), math.sqrt(1 - ab)
    if prediction_type == "epsilon":
        x0, eps = (X - b * V) / a, V
    elif prediction_type == "sample":
        x0, eps = V, (X - a * V) / b
    else:
        x0, eps = a * X - b * V, a * V + b * X
    expected = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    torch.testing.assert_close(out.prev_sample, expected, rtol=0, atol=1e-5)
    assert torch.all(out.std == 0)


def test_ddim_prediction_types_agree_on_the_same_x0():
    """ε, x₀ and v predictions that describe the same (x₀, ε) give the same transition."""
    ab, ab_prev = 0.4, 0.7
    x0, eps = torch.randn_like(X), torch.randn_like(X)
    x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    v = math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0
    outs = [
        ddim_step(p, x, ab, ab_prev, eta=1.0, prediction_type=t, generator=torch.Generator().manual_seed(3))
        for p, t in [(eps, "epsilon"), (x0, "sample"), (v, "v_prediction")]
    ]
    for o in outs[1:]:
        torch.testing.assert_close(o.mean, outs[0].mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(o.prev_sample, outs[0].prev_sample, rtol=0, atol=1e-5)


def _all_stochastic(prev_sample=None, generator=None, reduce="mean"):
    kw = {"prev_sample": prev_sample, "generator": generator, "reduce": reduce}
    return {
        "flow_sde": flow_sde_step(V, X, 0.7, 0.6, 0.7, **kw),
        "flow_sde_at_one": flow_sde_step(V, X, 1.0, 0.95, 0.7, sigma_max=0.95, **kw),
        "flow_cps": flow_cps_step(V, X, 0.7, 0.6, 0.7, **kw),
        "dance_sde": dance_sde_step(V, X, 0.7, 0.6, 0.3, **kw),
        "ddim": ddim_step(V, X, 0.3, 0.5, 1.0, "epsilon", **kw),
        "flow_sde_tensor_sigma": flow_sde_step(
            V, X, torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.8, 0.6, 0.4, 0.1]), 0.7, **kw
        ),
    }


@pytest.mark.parametrize("name", list(_all_stochastic(generator=torch.Generator())))
def test_log_prob_equals_torch_normal(name):
    """log_prob is torch.distributions.Normal(mean, std).log_prob averaged (mean) or summed over dims."""
    out = _all_stochastic(generator=torch.Generator().manual_seed(0))[name]
    ref = torch.distributions.Normal(out.mean, out.std.expand_as(out.mean)).log_prob(out.prev_sample)
    torch.testing.assert_close(out.log_prob, ref.mean(dim=(1, 2, 3)), rtol=1e-5, atol=1e-5)
    summed = _all_stochastic(prev_sample=out.prev_sample, reduce="sum")[name]
    torch.testing.assert_close(summed.log_prob, ref.sum(dim=(1, 2, 3)), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", list(_all_stochastic(generator=torch.Generator())))
def test_reevaluating_own_sample_is_bit_identical(name):
    """Evaluating the log-prob of the kernel's own sample with the same inputs gives ratio exactly 1."""
    sampled = _all_stochastic(generator=torch.Generator().manual_seed(5))[name]
    again = _all_stochastic(prev_sample=sampled.prev_sample)[name]
    assert torch.equal(sampled.log_prob, again.log_prob)
    assert torch.equal(torch.exp(again.log_prob - sampled.log_prob), torch.ones(B))


def test_sampling_uses_the_generator():
    """The same generator seed gives the same sample; another seed a different one."""
    a = flow_sde_step(V, X, 0.5, 0.4, generator=torch.Generator().manual_seed(7)).prev_sample
    b = flow_sde_step(V, X, 0.5, 0.4, generator=torch.Generator().manual_seed(7)).prev_sample
    c = flow_sde_step(V, X, 0.5, 0.4, generator=torch.Generator().manual_seed(8)).prev_sample
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flow_sde_at_sigma_one_needs_sigma_max():
    """At σ = 1 the Flow-GRPO std divides by 1 − sigma_max; without it the call fails loudly."""
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sde_step(V, X, 1.0, 0.9)
    out = flow_sde_step(V, X, 1.0, 0.9, noise_level=0.7, sigma_max=0.9, generator=torch.Generator())
    expected_std = 0.7 * math.sqrt(1.0 / (1 - 0.9)) * math.sqrt(0.1)
    torch.testing.assert_close(out.std.flatten(), torch.full((B,), expected_std), rtol=1e-6, atol=0)


def test_flow_sde_matches_the_written_formula():
    """mean and std follow DESIGN §3 term by term for a (B,) tensor of sigmas."""
    s, sn, a = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.8, 0.6, 0.45, 0.0]), 0.7
    out = flow_sde_step(V, X, s, sn, a, generator=torch.Generator())
    s4, sn4 = s.view(-1, 1, 1, 1), sn.view(-1, 1, 1, 1)
    dt = sn4 - s4
    st = a * torch.sqrt(s4 / (1 - s4))
    mean = X * (1 + st**2 / (2 * s4) * dt) + V * (1 + st**2 * (1 - s4) / (2 * s4)) * dt
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.std, st * torch.sqrt(-dt))


def test_gradient_flows_through_mean_not_sample():
    """log_prob is differentiable in the velocity (policy gradient) while prev_sample is detached."""
    v = V.clone().requires_grad_(True)
    prev = torch.randn_like(X).requires_grad_(True)
    out = flow_sde_step(v, X, 0.5, 0.4, prev_sample=prev)
    out.log_prob.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert prev.grad is None


def test_deterministic_transition_has_zero_log_prob():
    lp = gaussian_log_prob(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2, 1))
    assert torch.equal(lp, torch.zeros(2))


def _gaussian_velocity(m: float, s: float):
    """Exact v(x, σ) = E[ε − x₀ | x_σ = x] for data x₀ ~ N(m, s²)."""

    def v(x, sigma):
        mean_x = (1 - sigma) * m
        var_x = (1 - sigma) ** 2 * s**2 + sigma**2
        e_x0 = m + (1 - sigma) * s**2 / var_x * (x - mean_x)
        e_eps = sigma / var_x * (x - mean_x)
        return e_eps - e_x0

    return v


@pytest.mark.parametrize("kernel", ["flow_sde", "dance_sde", "ode"])
def test_sampling_with_exact_velocity_reproduces_data_distribution(kernel):
    """With the exact velocity of 1-D Gaussian data, many-step sampling preserves the marginals."""
    m, s, steps, n = 1.5, 0.5, 400, 100_000
    velocity = _gaussian_velocity(m, s)
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).float()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, generator=gen)
    for i in range(steps):
        sig, sig_next = float(sigmas[i]), float(sigmas[i + 1])
        v = velocity(x, sig)
        if kernel == "flow_sde":
            x = flow_sde_step(v, x, sig, sig_next, 0.7, generator=gen, sigma_max=float(sigmas[1])).prev_sample
        elif kernel == "dance_sde":
            x = dance_sde_step(v, x, sig, sig_next, 0.5, generator=gen).prev_sample
        else:
            x = ode_step(v, x, sig, sig_next).prev_sample
    assert abs(x.mean().item() - m) < 0.02
    assert abs(x.std().item() - s) < 0.02


def test_cps_preserves_the_noise_coefficient():
    """CPS: with the oracle velocity v = ε − x₀, x' = (1 − σ')·x₀ + σ'·ε' with ε' of unit variance."""
    n, s, sn = 200_000, 0.8, 0.5
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), 2.0)
    eps = torch.randn(n, 1, generator=gen)
    x = (1 - s) * x0 + s * eps
    out = flow_cps_step(eps - x0, x, s, sn, noise_level=0.6, generator=gen)
    residual = (out.prev_sample - (1 - sn) * x0) / sn
    assert abs(residual.mean().item()) < 0.01
    assert abs(residual.std().item() - 1.0) < 0.01


def test_a_kernel_that_cannot_drive_the_model_is_a_one_line_error():
    """A DDPM schedule under flow_sde once ran DDIM silently; a flow schedule under ddim was a ValueError."""
    from r3d.core.errors import R3DError
    from r3d.core.rollout import Schedule, check_kernel

    flow = Schedule("flow", torch.linspace(1, 0, 5))
    ddpm = Schedule("ddpm", torch.linspace(0.1, 1, 5), torch.arange(5))
    for kernel in ("ode", "flow_sde", "flow_cps", "dance_sde"):
        check_kernel(flow, kernel)
    for kernel in ("ode", "ddim"):
        check_kernel(ddpm, kernel)
    with pytest.raises(R3DError, match="'flow_sde' does not apply to tiny_motion, a DDPM"):
        check_kernel(ddpm, "flow_sde", "tiny_motion")
    with pytest.raises(R3DError, match="'ddim' does not apply to the policy, a flow-matching"):
        check_kernel(flow, "ddim")


def test_per_sample_generators_draw_what_randn_draws():
    """Noise from one generator per sample: row i is exactly torch.randn(row shape, generator=g_i)
    (a 1000-value row: not a multiple of torch's 16-value normal blocks)."""
    gens = [torch.Generator().manual_seed(i) for i in range(5)]
    noise = standard_normal(torch.Size((5, 10, 10, 10)), gens)
    for i, row in enumerate(noise):
        assert torch.equal(row, torch.randn((10, 10, 10), generator=torch.Generator().manual_seed(i)))


def _kernel_calls():
    return {
        "flow_sde": lambda v, s, sn, **kw: flow_sde_step(v, X, s, sn, 0.7, sigma_max=0.9, **kw),
        "flow_cps": lambda v, s, sn, **kw: flow_cps_step(v, X, s, sn, 0.7, **kw),
        "dance_sde": lambda v, s, sn, **kw: dance_sde_step(v, X, s, sn, 0.3, **kw),
        "ddim": lambda v, s, sn, **kw: ddim_step(v, X, 1 - s, 1 - sn, 1.0, "v_prediction", **kw),
        "ode": lambda v, s, sn, **kw: ode_step(v, X, s, sn),
    }


@pytest.mark.parametrize("name", list(_kernel_calls()))
@pytest.mark.parametrize("s,sn", [(1.0, 0.9), (0.5, 0.3), (0.2, 0.0)])
def test_float_times_give_the_floats_of_tensor_times(name, s, sn):
    """Float times (cached factors, as transition passes them) and (B,) tensor times give bitwise the
    same sample, mean, std, log-prob and gradient, at the first and at a repeated (cached) call."""
    if name == "ddim" and s == 1.0:
        return  # ᾱ = 0: no DDIM step starts from pure noise
    results = []
    for times in [(torch.full((B,), s), torch.full((B,), sn)), (s, sn), (s, sn)]:
        v = V.clone().requires_grad_()
        out = _kernel_calls()[name](v, *times, generator=[torch.Generator().manual_seed(i) for i in range(B)])
        (out.log_prob.sum() + out.prev_sample.square().sum()).backward()
        results.append([out.prev_sample.detach(), out.mean.detach(), out.std, out.log_prob.detach(), v.grad])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_log_prob_is_the_written_formula_bit_for_bit():
    """The in-place log-density equals −(x − μ)²/(2σ²) − log σ − ½·log 2π, its gradient too."""
    mean = torch.randn(B, 3, 5, 5, requires_grad=True)
    std = torch.rand(B, 1, 1, 1) + 0.1
    lp = gaussian_log_prob(X, mean, std)
    lp.sum().backward()
    mean_ref = mean.detach().clone().requires_grad_()
    ref = (-((X - mean_ref) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).mean(
        dim=(1, 2, 3)
    )
    ref.sum().backward()
    assert torch.equal(lp, ref) and torch.equal(mean.grad, mean_ref.grad)


def test_deferred_log_prob_keeps_the_grad_mode_of_the_kernel_call():
    """log_prob is computed at its first read, under the grad mode the kernel ran in."""
    v = V.clone().requires_grad_()
    with torch.no_grad():
        quiet = flow_sde_step(v, X, 0.5, 0.4, prev_sample=X)
    assert quiet.log_prob.grad_fn is None
    tracked = flow_sde_step(v, X, 0.5, 0.4, prev_sample=X)
    with torch.no_grad():
        lp = tracked.log_prob
    assert lp.grad_fn is not None and torch.equal(lp, quiet.log_prob)
