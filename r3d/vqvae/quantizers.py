"""Quantizers for the sparse-structure VQ-VAE: a vector quantizer (VQ-VAE) and FSQ.

Both take tokens ``z`` of shape (N, D) and return a :class:`QuantizerOutput` whose ``z_q`` carries the
straight-through gradient (forward value = quantised, gradient = identity to ``z``).

**VectorQuantizer** (van den Oord et al. 2017; Razavi et al. 2019 for EMA): codebook (K, D),
nearest code by squared Euclidean distance; losses ``codebook = ‖sg(z) − e‖²`` and
``commitment = ‖z − sg(e)‖²`` (means over elements; the trainer weighs the commitment by β = 0.25).
With ``ema_decay`` the codebook is not a parameter but follows exponential moving averages of the
assigned counts ``N_k`` and sums ``m_k`` (Laplace-smoothed counts, ``e_k = m_k / N_k``) and the
codebook loss is only reported. ``kmeans_init`` fits the codebook to encoder latents (k-means++ seeding
then Lloyd iterations). Dead codes (EMA usage below ``dead_threshold`` times the uniform rate) are
restarted on random tokens of the current batch. Statistics: usage (share of codes used), perplexity (exp of the
entropy of the code histogram), dead codes.

**FSQ** (Mentzer et al. 2023, "Finite Scalar Quantization"): project D → d = len(levels), bound each
channel with ``tanh`` to ``L_i`` levels, round with a straight-through estimator, project back;
codebook size ``∏ L_i`` (default [8, 8, 8, 4, 4] = 8192) with no codebook loss and no dead codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class QuantizerOutput:
    """z_q: (N, D) straight-through quantised tokens; indices: (N,) int64 codes; losses: scalars."""

    z_q: torch.Tensor
    indices: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


def code_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage (fraction of codes hit), perplexity exp(H(p)) and the number of codes hit, for a batch."""
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).double()
    return stats_from_counts(counts)


def stats_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Codebook statistics from a histogram (K,) of code assignments."""
    total = counts.sum().clamp_min(1)
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {"usage": used / counts.numel(), "perplexity": float(entropy.exp()), "codes_used": float(used)}


def _sq_dist_argmin(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """argmin_k ‖z_n − e_k‖² for z (N, D), codebook (K, D); chunked over N to bound memory (N·K)."""
    e2 = (codebook * codebook).sum(1)
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for s in range(0, z.shape[0], chunk):
        zc = z[s : s + chunk]
        d = torch.addmm(e2[None, :], zc, codebook.t(), alpha=-2.0)  # ‖z‖² is constant per row
        out[s : s + chunk] = d.argmin(1)
    return out


def _min_sq_dist(x: torch.Tensor, c: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """min_k ‖x_n − c_k‖² for x (N, D), c (K, D); chunked over N."""
    c2 = (c * c).sum(1)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]
        d = torch.addmm(c2[None, :], xc, c.t(), alpha=-2.0) + (xc * xc).sum(1, keepdim=True)
        out[s : s + chunk] = d.min(1).values.clamp_min(0)
    return out


def kmeans(
    x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None, rounds: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on x (N, D) → (centres (k, D), counts (k,)).

    Seeding is k-means++ in ``rounds`` batches (each round draws ~k/rounds new centres with probability
    ∝ squared distance to the current ones, without replacement; as in k-means‖), then Lloyd updates.
    Empty clusters are re-seeded on the points farthest from their centre; with fewer distinct points
    than ``k`` the surplus centres repeat points (dead codes until restarted).
    """
    x = x.float()
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one point")
    g = generator
    first = int(torch.randint(n, (1,), generator=g).item())
    c = x[first : first + 1]
    d2 = _min_sq_dist(x, c)
    per_round = max(1, math.ceil((k - 1) / rounds))
    while c.shape[0] < k:
        positive = int((d2 > 0).sum())
        if positive == 0:  # every point coincides with a centre
            break
        m = min(per_round, k - c.shape[0], positive)
        picks = torch.multinomial(d2.cpu(), m, replacement=False, generator=g).to(x.device)
        new = x[picks]
        c = torch.cat([c, new])
        d2 = torch.minimum(d2, _min_sq_dist(x, new))
    if c.shape[0] < k:
        extra = x[torch.randint(n, (k - c.shape[0],), generator=g).to(x.device)]
        c = torch.cat([c, extra])
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        assign = _sq_dist_argmin(x, c)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
        empty = int((~filled).sum())
        if empty:
            far = ((x - c[assign]) ** 2).sum(1).topk(min(empty, n)).indices
            c[(~filled).nonzero().squeeze(1)[: len(far)]] = x[far]
    return c, counts


class VectorQuantizer(nn.Module):
    """Codebook of ``codebook_size`` × ``dim`` vectors; see the module docstring.

    ema_decay: None trains the codebook by gradient (codebook loss); a float (e.g. 0.99) uses EMA updates
    in training mode. dead_threshold: codes whose EMA count (tokens per step) falls below it are
    restarted from batch tokens (0 disables). usage_decay: decay of that EMA. Usage is measured relative to
    uniform use: 1.0 means a code takes 1/K of the tokens, so ``dead_threshold=0.01`` restarts codes used
    at less than 1 % of the uniform rate.
    """

    def __init__(
        self,
        codebook_size: int = 8192,
        dim: int = 8,
        ema_decay: float | None = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 0.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.ema_decay, self.eps = ema_decay, eps
        self.dead_threshold, self.usage_decay = dead_threshold, usage_decay
        init = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        if ema_decay is None:
            self.embedding = nn.Parameter(init)
        else:
            self.register_buffer("embedding", init)
            self.register_buffer("ema_count", torch.zeros(codebook_size))
            self.register_buffer("ema_sum", init.clone())
        self.register_buffer("usage", torch.zeros(codebook_size))  # EMA of tokens per step, per code
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("restarts", torch.tensor(0, dtype=torch.long))

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    @torch.no_grad()
    def init_from(
        self, latents: torch.Tensor, iters: int = 20, generator: torch.Generator | None = None
    ) -> None:
        """k-means initialisation from encoder latents (N, dim)."""
        centres, counts = kmeans(latents.reshape(-1, self.dim), self.codebook_size, iters, generator)
        self.embedding.data.copy_(centres)
        if self.ema_decay is not None:
            n = latents.reshape(-1, self.dim).shape[0]
            self.ema_count.copy_(counts * (self.codebook_size / max(n, 1)))  # same units as `usage`
            self.ema_sum.copy_(centres * self.ema_count[:, None])
        self.usage.copy_(counts * (self.codebook_size / max(latents.reshape(-1, self.dim).shape[0], 1)))
        self.initialized.fill_(True)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (…) → vectors (…, dim)."""
        return F.embedding(indices, self.embedding)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (N, dim) float → z_q (N, dim) straight-through, indices (N,), losses (codebook, commitment)."""
        flat = z.reshape(-1, self.dim)
        idx = _sq_dist_argmin(flat.detach().float(), self.embedding.detach().float())
        e = self.lookup(idx).to(flat.dtype)
        codebook_loss = F.mse_loss(e, flat.detach())
        commitment = F.mse_loss(flat, e.detach())
        if self.training:
            self._update(flat.detach().float(), idx)
        z_q = flat + (e - flat).detach()
        return QuantizerOutput(
            z_q.reshape(z.shape), idx, {"codebook": codebook_loss, "commitment": commitment}
        )

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        per_step = counts * (self.codebook_size / max(flat.shape[0], 1))  # normalised to K tokens
        self.usage.mul_(self.usage_decay).add_(per_step, alpha=1 - self.usage_decay)
        if self.ema_decay is not None:
            d = self.ema_decay
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
            self.ema_count.mul_(d).add_(per_step, alpha=1 - d)
            self.ema_sum.mul_(d).add_(sums * (self.codebook_size / max(flat.shape[0], 1)), alpha=1 - d)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
            self.embedding.copy_(self.ema_sum / smoothed[:, None])
        if self.dead_threshold > 0:
            dead = (self.usage < self.dead_threshold).nonzero().squeeze(1)
            if dead.numel():
                pick = torch.randint(flat.shape[0], (dead.numel(),), device=flat.device)
                new = flat[pick] + 1e-4 * flat.std() * torch.randn_like(flat[pick])
                self.embedding.data[dead] = new.to(self.embedding.dtype)
                self.usage[dead] = 2 * self.dead_threshold
                if self.ema_decay is not None:
                    self.ema_count[dead] = 1.0
                    self.ema_sum[dead] = new
                self.restarts += dead.numel()

    def dead_codes(self) -> int:
        """Codes whose EMA usage is below the threshold (or never used when the threshold is 0)."""
        return int((self.usage < max(self.dead_threshold, 1e-12)).sum())


class FSQ(nn.Module):
    """Finite scalar quantisation of (N, dim) tokens; ``levels`` per projected channel."""

    def __init__(self, dim: int = 8, levels: list[int] | None = None, eps: float = 1e-3) -> None:
        super().__init__()
        levels = list(levels or [8, 8, 8, 4, 4])
        self.dim, self.levels, self.eps = dim, levels, eps
        self.codebook_size = int(math.prod(levels))
        self.project_in = nn.Linear(dim, len(levels)) if dim != len(levels) else nn.Identity()
        self.project_out = nn.Linear(len(levels), dim) if dim != len(levels) else nn.Identity()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("_levels", lv, persistent=False)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1]), 0)
        self.register_buffer("_basis", basis, persistent=False)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        half = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        h = self.project_in(z.reshape(-1, self.dim).float())
        bounded = self._bound(h)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        codes = rounded / half_width  # in [-1, 1]
        idx = ((torch.round(bounded) + half_width).long() * self._basis).sum(-1)
        out = self.project_out(codes).to(z.dtype).reshape(z.shape)
        return QuantizerOutput(out, idx, {})

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (…) → vectors (…, dim)."""
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        digits = (indices[..., None] // self._basis) % self._levels.long()
        return self.project_out((digits - half_width) / half_width)

    def dead_codes(self) -> int:
        return 0
