"""The motion metrics agree with an independent implementation of the MDM formulas (1e-6).

The reference values below are written from the formulas of MDM's eval (Guo et al. protocol), not
from r3d's code: brute-force pairwise norms, ranks by counting, FID through eigenvalues.
"""

from __future__ import annotations

import numpy as np
import pytest

from r3d.motion import metrics as M


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _ref_r_precision(t: np.ndarray, m: np.ndarray, bs: int, k: int) -> np.ndarray:
    hits, n = np.zeros(k), 0
    for s in range(0, len(t) - bs + 1, bs):  # only full batches
        d = _pairwise(t[s : s + bs], m[s : s + bs])
        for i in range(bs):
            rank = int((d[i] < d[i, i]).sum())  # how many motions are closer than the true one
            hits += np.array([rank < j + 1 for j in range(k)], dtype=float)
        n += bs
    return hits / n


def _ref_matching(t: np.ndarray, m: np.ndarray, bs: int) -> float:
    full = len(t) // bs * bs
    return float(np.mean([np.linalg.norm(t[i] - m[i]) for i in range(full)]))


def _ref_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S1 S2)^1/2) = Σ sqrt(eig(S1 S2)); the eigenvalues of a product of PSD matrices are real ≥ 0.
    tr = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


@pytest.fixture
def emb() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = rng.normal(size=(100, 16))  # 3 full batches of 32 + 4 dropped
    m = t + rng.normal(scale=1.2, size=t.shape)
    return t, m


def test_euclidean_distance_matrix_matches_brute_force(emb):
    t, m = emb
    np.testing.assert_allclose(M.euclidean_distance_matrix(t, m[:7]), _pairwise(t, m[:7]), atol=1e-6)


def test_r_precision_matches_rank_counting_over_full_batches(emb):
    t, m = emb
    got = M.r_precision(t, m, batch_size=32, top_k=3)
    np.testing.assert_allclose(got, _ref_r_precision(t, m, 32, 3), atol=1e-6)
    assert got[0] <= got[1] <= got[2] and 0 < got[0] < 1  # a real spread, not trivially 0 or 1


def test_matching_score_is_mean_pair_distance_of_full_batches(emb):
    t, m = emb
    assert abs(M.matching_score(t, m, 32) - _ref_matching(t, m, 32)) < 1e-6
    # the 4 samples past the last full batch are ignored, exactly like drop_last=True
    assert abs(M.matching_score(t[:96], m[:96], 32) - M.matching_score(t, m, 32)) < 1e-12


def test_frechet_distance_matches_eigenvalue_formula():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(loc=0.5, size=(300, 8)) @ rng.normal(size=(8, 8))
    assert abs(M.frechet_distance(a, b) - _ref_fid(a, b)) < 1e-6
    assert abs(M.frechet_distance(a, a)) < 1e-6


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    expected = 4 + 4 + (1 + 9 - 2 * 3) + (4 + 1 - 2 * 2)
    assert abs(M.frechet_distance_from_stats(mu1, s1, mu2, s2) - expected) < 1e-9


def test_frechet_singular_product_falls_back_to_offset(monkeypatch):
    calls = []
    real = M.linalg.sqrtm

    def fake_sqrtm(x):
        calls.append(x.copy())
        return np.full_like(x, np.inf) if len(calls) == 1 else real(x)

    monkeypatch.setattr(M.linalg, "sqrtm", fake_sqrtm)
    s = np.eye(3)
    assert abs(M.frechet_distance_from_stats(np.zeros(3), s, np.zeros(3), s)) < 1e-5
    assert len(calls) == 2 and np.allclose(calls[1], (s + 1e-6 * np.eye(3)) @ (s + 1e-6 * np.eye(3)))


def test_diversity_and_multimodality_follow_the_pair_draws():
    rng_data = np.random.default_rng(2)
    emb = rng_data.normal(size=(500, 6))
    r = np.random.default_rng(7)
    i, j = r.choice(500, 300, replace=False), r.choice(500, 300, replace=False)
    expected = np.mean([np.linalg.norm(emb[a] - emb[b]) for a, b in zip(i, j, strict=True)])
    assert abs(M.diversity(emb, 300, seed=7) - expected) < 1e-6

    mm = rng_data.normal(size=(20, 30, 6))
    r = np.random.default_rng(3)
    i, j = r.choice(30, 10, replace=False), r.choice(30, 10, replace=False)
    expected = np.mean(
        [np.linalg.norm(mm[p, a] - mm[p, b]) for p in range(20) for a, b in zip(i, j, strict=True)]
    )
    assert abs(M.multimodality(mm, 10, seed=3) - expected) < 1e-6


def test_metric_input_errors_are_clear():
    with pytest.raises(ValueError, match="more than 300"):
        M.diversity(np.zeros((300, 4)), 300)
    with pytest.raises(ValueError, match="full batch"):
        M.r_precision(np.zeros((10, 4)), np.zeros((10, 4)), 32)
    with pytest.raises(ValueError, match="prompts, repeats"):
        M.multimodality(np.zeros((10, 4)), 3)


def test_mean_confidence_is_196_std_over_sqrt_n():
    values = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
    mean, conf = M.mean_confidence(values)
    np.testing.assert_allclose(mean, [2.0, 3.0])
    np.testing.assert_allclose(conf, 1.96 * values.std(axis=0) / np.sqrt(3))
    assert M.mean_confidence([1.0, 1.0]) == (1.0, 0.0)
