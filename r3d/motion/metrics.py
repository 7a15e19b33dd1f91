"""Text-to-motion metrics exactly as MDM's ``eval_humanml.py`` computes them (Guo et al. protocol).

All functions take NumPy arrays of embeddings and return floats (or a float array for R-precision):

- R-precision and matching score are computed within consecutive batches of ``batch_size`` (32 in the
  protocol; an incomplete final batch is dropped, as the reference loaders use ``drop_last=True``).
- FID is the Fréchet distance between Gaussians fitted to two embedding sets, with the reference's
  fallback of adding 1e-6·I to both covariances when the matrix square root is not finite.
- Diversity / multimodality draw random index pairs without replacement.
- Replications are summarised as mean ± 1.96·std/√n (``mean_confidence``).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

__all__ = [
    "euclidean_distance_matrix",
    "r_precision",
    "matching_score",
    "activation_statistics",
    "frechet_distance",
    "frechet_distance_from_stats",
    "diversity",
    "multimodality",
    "mean_confidence",
]


def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N1, D), (N2, D) → (N1, N2) Euclidean distances, ‖a‖² − 2a·b + ‖b‖² as in the reference."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N1, D) and (N2, D) arrays, got {a.shape} and {b.shape}")
    sq = -2.0 * a @ b.T + np.sum(a * a, axis=1, keepdims=True) + np.sum(b * b, axis=1)
    return np.sqrt(np.maximum(sq, 0.0))


def _batches(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int) -> list[slice]:
    if text_emb.shape != motion_emb.shape or text_emb.ndim != 2:
        raise ValueError(
            f"text and motion embeddings must both be (N, D), got {text_emb.shape} and {motion_emb.shape}"
        )
    n_full = text_emb.shape[0] // batch_size
    if n_full == 0:
        raise ValueError(f"need at least one full batch of {batch_size} pairs, got {text_emb.shape[0]}")
    return [slice(i * batch_size, (i + 1) * batch_size) for i in range(n_full)]


def r_precision(
    text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = 32, top_k: int = 3
) -> np.ndarray:
    """Top-1..k retrieval rates (top_k,): within each batch, is motion i among the k nearest to text i?"""
    text_emb, motion_emb = np.asarray(text_emb), np.asarray(motion_emb)
    hits = np.zeros(top_k, dtype=np.float64)
    count = 0
    for sl in _batches(text_emb, motion_emb, batch_size):
        dist = euclidean_distance_matrix(text_emb[sl], motion_emb[sl])
        order = np.argsort(dist, axis=1)  # the reference's (unstable) argsort, ties as NumPy breaks them
        correct = order[:, :top_k] == np.arange(batch_size)[:, None]
        hits += np.cumsum(correct, axis=1).astype(bool).sum(axis=0)
        count += batch_size
    return hits / count


def matching_score(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = 32) -> float:
    """Mean ‖t_i − m_i‖ over the pairs of the full batches (trace of each batch's distance matrix)."""
    text_emb, motion_emb = np.asarray(text_emb), np.asarray(motion_emb)
    total, count = 0.0, 0
    for sl in _batches(text_emb, motion_emb, batch_size):
        total += float(np.trace(euclidean_distance_matrix(text_emb[sl], motion_emb[sl])))
        count += batch_size
    return total / count


def activation_statistics(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) embeddings."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"expected (N >= 2, D) embeddings, got {emb.shape}")
    return emb.mean(axis=0), np.cov(emb, rowvar=False)


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½); eps·I is added to both Σ if the root is not finite."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two sets of statistics have different dimensions")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"FID: imaginary component {np.max(np.abs(covmean.imag))} in the matrix square root"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FID between two (N, D) embedding sets (e.g. ground-truth and generated motion embeddings)."""
    return frechet_distance_from_stats(*activation_statistics(emb_a), *activation_statistics(emb_b))


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator | np.random.RandomState:
    """None → NumPy's global RandomState (as the reference, so ``np.random.seed`` governs it)."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def diversity(emb: np.ndarray, times: int = 300, seed: int | np.random.Generator | None = None) -> float:
    """Mean distance between ``times`` random pairs of (N, D) embeddings (two draws without replacement)."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"expected (N, D) embeddings, got {emb.shape}")
    if emb.shape[0] <= times:
        raise ValueError(f"diversity over {times} pairs needs more than {times} samples, got {emb.shape[0]}")
    rng = _rng(seed)
    first = rng.choice(emb.shape[0], times, replace=False)
    second = rng.choice(emb.shape[0], times, replace=False)
    return float(np.linalg.norm(emb[first] - emb[second], axis=1).mean())


def multimodality(emb: np.ndarray, times: int = 10, seed: int | np.random.Generator | None = None) -> float:
    """Mean distance between ``times`` random pairs of generations per prompt; emb (prompts, repeats, D)."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 3:
        raise ValueError(f"expected (prompts, repeats, D) embeddings, got {emb.shape}")
    if emb.shape[1] <= times:
        raise ValueError(
            f"multimodality over {times} pairs needs more than {times} repeats, got {emb.shape[1]}"
        )
    rng = _rng(seed)
    first = rng.choice(emb.shape[1], times, replace=False)
    second = rng.choice(emb.shape[1], times, replace=False)
    return float(np.linalg.norm(emb[:, first] - emb[:, second], axis=2).mean())


def mean_confidence(values: np.ndarray | list) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Replications (n, ...) → (mean, 1.96·std/√n) with the population std (ddof 0), as the reference."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    mean = values.mean(axis=0)
    conf = 1.96 * values.std(axis=0) / np.sqrt(n)
    if mean.ndim == 0:
        return float(mean), float(conf)
    return mean, conf
