"""Transition kernels with log-probabilities: one reverse step of a diffusion / flow sampler.

Every kernel is a pure fp32 function of its inputs and returns a :class:`StepOutput`. Conventions:

- Flow kernels use the canonical time (σ = 1 noise, σ = 0 data, x_σ = (1 − σ)·x₀ + σ·ε,
  v = ε − x₀) and step from ``sigma`` to ``sigma_next`` < ``sigma`` (dt = σ_next − σ < 0).
- ``sigma``, ``sigma_next``, ``alpha_bar`` and ``alpha_bar_prev`` are floats or (B,) tensors.
- ``log_prob`` is the Gaussian log-density of ``prev_sample`` under N(mean, std²), reduced over
  all non-batch dimensions by ``reduce``: ``"mean"`` (default, as Flow-GRPO / DDPO do; it makes
  the clip range independent of the latent size), ``"sum"`` or ``"none"`` (elementwise, e.g. for a
  masked mean by the caller). ``prev_sample`` is detached inside the log-density, as in the
  reference implementations: gradients flow through ``mean`` and ``std`` only.
- Given ``prev_sample`` the kernel evaluates its log-probability instead of sampling; otherwise
  the noise comes from ``generator`` (one ``torch.Generator``, or one per sample).
- A deterministic transition (std = 0, e.g. noise level 0) has no density: ``log_prob`` is zero.
- Times given as Python floats (as :func:`r3d.core.rollout.transition` passes them) reuse cached
  per-sample factors: the small tensors a kernel computes from the times alone are built once per
  (times, batch size, latent rank, device), not at every call. They are the same floats as with
  (B,) tensors of those times; being shared (e.g. ``StepOutput.std``), they must not be modified
  in place.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

Reduce = Literal["mean", "sum", "none"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class StepOutput:
    """Result of one transition x_σ → x_σ'.

    prev_sample: (B, ...) the next sample; log_prob: (B,) (or (B, ...) with reduce="none");
    mean, std: the Gaussian transition N(mean, std²); std broadcastable to mean (B, 1, ..., 1).
    The kernels defer ``log_prob`` to its first read (a KL reference step never reads it); it is
    computed then under the grad mode of the kernel call, from that call's tensors.
    """

    def __init__(
        self,
        prev_sample: torch.Tensor,
        log_prob: torch.Tensor | Callable[[], torch.Tensor],
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        self.prev_sample, self.mean, self.std = prev_sample, mean, std
        self._log_prob = log_prob

    @property
    def log_prob(self) -> torch.Tensor:
        if callable(self._log_prob):
            self._log_prob = self._log_prob()
        return self._log_prob

    @log_prob.setter
    def log_prob(self, value: torch.Tensor) -> None:
        self._log_prob = value


def _per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float or (B,) tensor as fp32 shaped (B, 1, ..., 1) to broadcast against ``like``."""
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"expected a float or a ({like.shape[0]},) tensor, got shape {tuple(t.shape)}")
    return t.view(-1, *([1] * (like.ndim - 1)))


Density = tuple[bool, torch.Tensor, torch.Tensor, torch.Tensor]


def _density(std: torch.Tensor) -> Density:
    """The log-density's factors of ``std``: (any std == 0, where std == 0, −2·s², log s) with
    s = std, or 1 where std == 0 (a delta)."""
    deterministic = std == 0
    has_delta = bool(deterministic.any())
    safe_std = torch.where(deterministic, torch.ones_like(std), std) if has_delta else std
    return has_delta, deterministic, -2 * safe_std**2, torch.log(safe_std)


def gaussian_log_prob(
    sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduce: Reduce = "mean"
) -> torch.Tensor:
    """log N(sample; mean, std²), reduced over non-batch dims; zero where std == 0 (a delta)."""
    return _log_density(sample, mean, _density(std), reduce)


def _log_density(sample: torch.Tensor, mean: torch.Tensor, density: Density, reduce: Reduce) -> torch.Tensor:
    """:func:`gaussian_log_prob` from the factors of std (:func:`_density`).

    −d²/(2s²) is computed as d²/(−2s²) (the same float: negation is exact), in place on the fresh
    temporaries; the delta mask is applied only when some std is 0.
    """
    has_delta, deterministic, neg_two_var, log_std = density
    diff = sample.detach() - mean
    log_prob = diff**2 if diff.requires_grad else diff.pow_(2)  # autograd keeps diff for backward
    log_prob = log_prob.div_(neg_two_var).sub_(log_std).sub_(_LOG_SQRT_2PI)
    if has_delta:
        log_prob = torch.where(deterministic, torch.zeros_like(log_prob), log_prob)
    if reduce == "none":
        return log_prob
    dims = tuple(range(1, log_prob.ndim))
    return log_prob.mean(dim=dims) if reduce == "mean" else log_prob.sum(dim=dims)


Generators = torch.Generator | Sequence[torch.Generator] | None


def standard_normal(
    shape: torch.Size, generator: Generators, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """N(0, I) noise of ``shape``; a sequence of generators draws sample i from generator i.

    Per-sample generators make a sample's noise independent of how a batch is split into chunks
    or across processes (multi-process runs reproduce single-process ones).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    noise = torch.empty(shape, dtype=torch.float32)
    for row, g in zip(noise, generator, strict=True):
        row.normal_(generator=g)  # = torch.randn(shape[1:], generator=g): rows are contiguous
    return noise.to(device)


Factors = tuple[torch.Tensor, ...]


def _factors(
    fn: Callable[..., Factors], like: torch.Tensor, times: tuple, params: tuple = ()
) -> tuple[Factors, Density]:
    """``fn(*times, *params)`` with each time as a (B, 1, ..., 1) fp32 tensor (B, rank and device of
    ``like``), and the density factors of its last output (the std); cached for float times."""
    if all(isinstance(t, float | int) for t in times):
        return _cached_factors(fn, times, params, like.shape[0], like.ndim, like.device)
    out = fn(*(_per_sample(t, like) for t in times), *params)
    return out, _density(out[-1])


@functools.lru_cache(maxsize=4096)
def _cached_factors(
    fn: Callable[..., Factors], times: tuple, params: tuple, batch: int, ndim: int, device: torch.device
) -> tuple[Factors, Density]:
    like = torch.empty((batch,) + (1,) * (ndim - 1), device=device)
    with torch.inference_mode(False), torch.no_grad():  # plain constants, usable under autograd
        out = fn(*(_per_sample(t, like) for t in times), *params)
        return out, _density(out[-1])


def _finish(
    mean: torch.Tensor,
    std: torch.Tensor,
    density: Density,
    prev_sample: torch.Tensor | None,
    generator: Generators,
    reduce: Reduce,
) -> StepOutput:
    if prev_sample is None:  # mean + std·ε, in place on the fresh noise (the same floats)
        prev_sample = standard_normal(mean.shape, generator, mean.device).mul_(std).add_(mean)
    else:
        prev_sample = prev_sample.float()
    grad = torch.is_grad_enabled()

    def log_prob() -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return _log_density(prev_sample, mean, density, reduce)

    return StepOutput(prev_sample, log_prob, mean, std)


def _ode_factors(s: torch.Tensor, s_next: torch.Tensor) -> Factors:
    dt = s_next - s
    return dt, torch.zeros_like(dt)


def ode_step(v: torch.Tensor, x: torch.Tensor, sigma, sigma_next) -> StepOutput:
    """Deterministic Euler step x' = x + v·(σ' − σ); log_prob is zero, std is zero."""
    v, x = v.float(), x.float()
    (dt, zero), _ = _factors(_ode_factors, x, (sigma, sigma_next))
    mean = x + v * dt
    return StepOutput(mean, torch.zeros(x.shape[0], device=x.device), mean, zero)


def _flow_sde_factors(
    s: torch.Tensor, s_next: torch.Tensor, noise_level: float, sigma_max: float | None
) -> Factors:
    """(1 + σ_t²·dt/(2σ), 1 + σ_t²·(1 − σ)/(2σ), dt, std) of :func:`flow_sde_step`."""
    dt = s_next - s
    at_one = s == 1
    if bool(at_one.any()):
        if sigma_max is None:
            raise ValueError("flow_sde_step at sigma = 1 needs sigma_max (the schedule's second sigma)")
        denom_sigma = torch.where(at_one, torch.full_like(s, float(sigma_max)), s)
    else:
        denom_sigma = s
    sigma_t = noise_level * torch.sqrt(s / (1 - denom_sigma))
    var, two_s = sigma_t**2, 2 * s
    return 1 + var / two_s * dt, 1 + var * (1 - s) / two_s, dt, sigma_t * torch.sqrt(-dt)


def flow_sde_step(
    v: torch.Tensor,
    x: torch.Tensor,
    sigma,
    sigma_next,
    noise_level: float = 0.7,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
    sigma_max: float | None = None,
    reduce: Reduce = "mean",
) -> StepOutput:
    """Flow-GRPO's SDE step (marginal-preserving reverse SDE of a rectified flow).

    σ_t = a·√(σ / (1 − σ̃)) with σ̃ = σ except where σ = 1, where σ̃ = ``sigma_max`` (the
    schedule's second sigma; required when a step starts at σ = 1);
    mean = x·(1 + σ_t²·dt / (2σ)) + v·(1 + σ_t²·(1 − σ) / (2σ))·dt;  std = σ_t·√(−dt).
    """
    v, x = v.float(), x.float()
    (c_x, c_v, dt, std), density = _factors(
        _flow_sde_factors, x, (sigma, sigma_next), (noise_level, sigma_max)
    )
    mean = (v * c_v).mul_(dt).add_(x * c_x)  # x·c_x + (v·c_v)·dt, the same floats
    return _finish(mean, std, density, prev_sample, generator, reduce)


def _flow_cps_factors(s: torch.Tensor, s_next: torch.Tensor, noise_level: float) -> Factors:
    """(σ, 1 − σ, 1 − σ', √(σ'² − std²), std) of :func:`flow_cps_step`."""
    std = s_next * math.sin(noise_level * math.pi / 2)
    return s, 1 - s, 1 - s_next, torch.sqrt(torch.clamp(s_next**2 - std**2, min=0)), std


def flow_cps_step(
    v: torch.Tensor,
    x: torch.Tensor,
    sigma,
    sigma_next,
    noise_level: float = 0.7,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
    reduce: Reduce = "mean",
) -> StepOutput:
    """Coefficients-preserving sampling (Flow-GRPO ``sde_type="cps"``).

    std = σ'·sin(aπ/2); x̂₀ = x − σ·v; x̂₁ = x + (1 − σ)·v; mean = (1 − σ')·x̂₀ + √(σ'² − std²)·x̂₁.
    Unlike Flow-GRPO (which keeps only −(x' − mean)²), ``log_prob`` is the full Gaussian density.
    """
    v, x = v.float(), x.float()
    (s, one_minus_s, c0, c1, std), density = _factors(
        _flow_cps_factors, x, (sigma, sigma_next), (noise_level,)
    )
    x0_hat = x - s * v
    x1_hat = x + one_minus_s * v
    mean = c0 * x0_hat + c1 * x1_hat
    return _finish(mean, std, density, prev_sample, generator, reduce)


def _dance_sde_factors(s: torch.Tensor, s_next: torch.Tensor, eta: float) -> Factors:
    """(σ, 1 − σ, σ², dt, std) of :func:`dance_sde_step`."""
    dt = s_next - s
    return s, 1 - s, s**2, dt, eta * torch.sqrt(-dt)


def dance_sde_step(
    v: torch.Tensor,
    x: torch.Tensor,
    sigma,
    sigma_next,
    eta: float = 0.3,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
    reduce: Reduce = "mean",
) -> StepOutput:
    """DanceGRPO's SDE step.

    std = η·√(−dt); x̂₀ = x − σ·v; score ŝ = −(x − (1 − σ)·x̂₀) / σ²; mean = x + v·dt − ½·η²·ŝ·dt.
    """
    v, x = v.float(), x.float()
    (s, one_minus_s, s2, dt, std), density = _factors(_dance_sde_factors, x, (sigma, sigma_next), (eta,))
    x0_hat = x - s * v
    score = -(x - one_minus_s * x0_hat) / s2
    mean = x + v * dt - 0.5 * eta**2 * score * dt
    return _finish(mean, std, density, prev_sample, generator, reduce)


def predict_x0_eps(
    model_output: torch.Tensor, x: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: PredictionType
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂₀, ε̂) from an ε / x₀ (``"sample"``) / v prediction at ᾱ (broadcastable to x)."""
    return _x0_eps(model_output, x, alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), prediction_type)


def _x0_eps(
    model_output: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`predict_x0_eps` given a = √ᾱ and b = √(1 − ᾱ)."""
    if prediction_type == "epsilon":
        return (x - b * model_output) / a, model_output
    if prediction_type == "sample":
        return model_output, (x - a * model_output) / b
    if prediction_type == "v_prediction":
        return a * x - b * model_output, a * model_output + b * x
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use epsilon, sample or v_prediction")


def _ddim_factors(ab: torch.Tensor, ab_prev: torch.Tensor, eta: float) -> Factors:
    """(√ᾱ, √(1 − ᾱ), √ᾱ_prev, √(1 − ᾱ_prev − σ_t²), σ_t) of :func:`ddim_step`."""
    variance = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
    std = eta * variance.clamp(min=0).sqrt()
    return ab.sqrt(), (1 - ab).sqrt(), ab_prev.sqrt(), (1 - ab_prev - std**2).clamp(min=0).sqrt(), std


def ddim_step(
    model_output: torch.Tensor,
    x: torch.Tensor,
    alpha_bar,
    alpha_bar_prev,
    eta: float,
    prediction_type: PredictionType = "epsilon",
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
    reduce: Reduce = "mean",
    clip_sample: float | None = None,
) -> StepOutput:
    """DDIM step (Song et al.; DDPO's ``ddim_step_with_logprob``) from ᾱ_t to ᾱ_prev.

    σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev));
    mean = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ_t²)·ε̂;  std = σ_t.  η = 0 is deterministic DDIM,
    η = 1 the DDPM ancestral step. ``clip_sample`` clamps x̂₀ to ±value (diffusers' option).
    """
    model_output, x = model_output.float(), x.float()
    (a, b, c_x0, c_eps, std), density = _factors(_ddim_factors, x, (alpha_bar, alpha_bar_prev), (eta,))
    x0_hat, eps_hat = _x0_eps(model_output, x, a, b, prediction_type)
    if clip_sample is not None:
        x0_hat = x0_hat.clamp(-clip_sample, clip_sample)  # ε̂ kept, as diffusers does by default
    mean = c_x0 * x0_hat + c_eps * eps_hat
    return _finish(mean, std, density, prev_sample, generator, reduce)
