"""The decoder side of the Hunyuan3D-2.1 shape VAE (``ShapeVAE``), weight-compatible, and mesh extraction.

latents (B, N, C) ·(1/scale_factor) → ``post_kl`` (C → width) → ``transformer`` (self-attention blocks)
→ decoded tokens (B, N, width). ``geo_decoder`` turns query points (B, P, 3) into occupancy logits
(B, P, 1) by one cross-attention block from Fourier-embedded points to the decoded tokens.

Mesh extraction (Hunyuan3D's vanilla volume decoding + marching cubes): logits on the (R+1)³ grid
``linspace(−b, b, R+1)`` per axis (b = 1.01, ``ij`` order), decoded in chunks of ``num_chunks`` points;
marching cubes (skimage, Lewiner) at level 0; vertices mapped with index/(R+1)·2b − b — note R+1, not
R, so meshes come out shrunk by R/(R+1), as in the reference; face winding reversed.

Attention layout as in the reference: ``c_qkv`` outputs are cut per head into [q | k | v] (``c_kv``:
[k | v]); q/k LayerNorms over the head dimension (eps 1e-6) when ``qk_norm``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import trimesh
from torch import nn
from torch.nn import functional as F

from r3d.core.errors import R3DError


@dataclass
class VAEConfig:
    """``vae.params`` of the official config.yaml (encoder-only options are accepted and unused)."""

    num_latents: int = 4096
    embed_dim: int = 64
    width: int = 1024
    heads: int = 16
    num_decoder_layers: int = 16
    num_freqs: int = 8
    include_pi: bool = True
    qkv_bias: bool = True
    qk_norm: bool = False
    scale_factor: float = 1.0
    geo_decoder_mlp_expand_ratio: int = 4
    geo_decoder_downsample_ratio: int = 1
    geo_decoder_ln_post: bool = True
    label_type: str = "binary"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in params.items() if k in known})
        if cfg.geo_decoder_downsample_ratio != 1:
            raise R3DError("Hunyuan3D VAE with geo_decoder_downsample_ratio != 1 is not supported by r3d")
        if cfg.width % cfg.heads:
            raise R3DError(f"VAE width {cfg.width} is not divisible by heads {cfg.heads}")
        return cfg


def fourier_embed(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[x, sin(x_i·f_j), cos(x_i·f_j)] over the last dim, (…, d) → (…, d·(2F + 1)), i-major order."""
    angles = (x[..., None] * freqs).flatten(-2)
    return torch.cat([x, angles.sin(), angles.cos()], dim=-1)


def _head_chunks(packed: torch.Tensor, heads: int, n: int) -> list[torch.Tensor]:
    """(B, S, heads·n·hd) → n tensors (B, heads, S, hd): each head's slice holds its n parts in order."""
    b, s, _ = packed.shape
    return [p.transpose(1, 2) for p in packed.view(b, s, heads, n, -1).unbind(3)]


class _QKNorm(nn.Module):
    """Holds the optional per-head q/k LayerNorms (the reference nests them under ``attention``)."""

    def __init__(self, head_dim: int, qk_norm: bool) -> None:
        super().__init__()
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return out.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)
        self.attention = _QKNorm(width // heads, qk_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = _head_chunks(self.c_qkv(x), self.heads, 3)
        return self.c_proj(self.attention.attend(q, k, v))


class CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.c_q = nn.Linear(width, width, bias=qkv_bias)
        self.c_kv = nn.Linear(width, width * 2, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)
        self.attention = _QKNorm(width // heads, qk_norm)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.c_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = _head_chunks(self.c_kv(data), self.heads, 2)
        return self.c_proj(self.attention.attend(q, k, v))


class MLP(nn.Module):
    def __init__(self, width: int, expand: int = 4) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, width * expand)
        self.c_proj = nn.Linear(width * expand, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads, qkv_bias, qk_norm)
        self.ln_1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, qkv_bias, qk_norm) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ResidualCrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, expand: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.attn = CrossAttention(width, heads, qkv_bias, qk_norm)
        self.ln_1 = nn.LayerNorm(width, eps=1e-6)
        self.ln_2 = nn.LayerNorm(width, eps=1e-6)
        self.ln_3 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MLP(width, expand)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), self.ln_2(data))
        return x + self.mlp(self.ln_3(x))


class GeoDecoder(nn.Module):
    """Query points (B, P, 3) + decoded tokens (B, N, width) → occupancy logits (B, P, 1)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.num_freqs, self.include_pi = cfg.num_freqs, cfg.include_pi
        self.query_proj = nn.Linear(3 * (2 * cfg.num_freqs + 1), cfg.width)
        qk_norm = cfg.qk_norm and cfg.geo_decoder_ln_post
        self.cross_attn_decoder = ResidualCrossAttentionBlock(
            cfg.width, cfg.heads, cfg.geo_decoder_mlp_expand_ratio, cfg.qkv_bias, qk_norm
        )
        self.ln_post = nn.LayerNorm(cfg.width) if cfg.geo_decoder_ln_post else nn.Identity()
        self.output_proj = nn.Linear(cfg.width, 1)

    def forward(self, points: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        freqs = 2.0 ** torch.arange(self.num_freqs, dtype=torch.float32, device=points.device)
        freqs = (freqs * torch.pi if self.include_pi else freqs).to(points.dtype)
        query = self.query_proj(fourier_embed(points, freqs).to(latents.dtype))
        return self.output_proj(self.ln_post(self.cross_attn_decoder(query, latents)))


class ShapeVAEDecoder(nn.Module):
    """``decode(latents)`` → tokens; ``occupancy(tokens, points)`` → logits; see the module docstring.

    Parameter names follow the official ``vae`` state dict; its encoder (``encoder.*``, ``pre_kl.*``)
    is not needed to generate and is not built.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.scale_factor = float(cfg.scale_factor)
        self.latent_shape = (cfg.num_latents, cfg.embed_dim)
        self.post_kl = nn.Linear(cfg.embed_dim, cfg.width)
        self.transformer = Transformer(
            cfg.width, cfg.num_decoder_layers, cfg.heads, cfg.qkv_bias, cfg.qk_norm
        )
        self.geo_decoder = GeoDecoder(cfg)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion latents (B, N, C) → decoded tokens (B, N, width); applies 1/scale_factor first."""
        return self.transformer(self.post_kl((1.0 / self.scale_factor) * latents))

    def occupancy(self, decoded: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Occupancy logits (B, P, 1) (> 0 inside) of points (B, P, 3) or (P, 3) for decoded tokens."""
        if points.ndim == 2:
            points = points.expand(decoded.shape[0], -1, -1)
        return self.geo_decoder(points.to(decoded.dtype), decoded)


def grid_points(resolution: int, bound: float = 1.01) -> torch.Tensor:
    """The (R+1)³ query grid over [−bound, bound]³ in ``ij`` order, (R+1)³ × 3 fp32."""
    axis = torch.from_numpy(np.linspace(-bound, bound, resolution + 1, dtype=np.float32))
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


@torch.no_grad()
def volume_logits(
    vae: ShapeVAEDecoder,
    decoded: torch.Tensor,
    resolution: int,
    bound: float = 1.01,
    num_chunks: int = 8000,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Occupancy logits on the (R+1)³ grid, (B, R+1, R+1, R+1) fp32, decoded ``num_chunks`` points at a time."""
    if resolution < 2 or num_chunks < 1:
        raise R3DError(f"decode resolution must be ≥ 2 and num_chunks ≥ 1, got {resolution}, {num_chunks}")
    pts = grid_points(resolution, bound).to(decoded.device, decoded.dtype)
    out = []
    for start in range(0, pts.shape[0], num_chunks):
        out.append(vae.occupancy(decoded, pts[start : start + num_chunks]).float())
        if progress is not None:
            progress(min(start + num_chunks, pts.shape[0]), pts.shape[0])
    n = resolution + 1
    return torch.cat(out, dim=1).view(decoded.shape[0], n, n, n)


def logits_to_mesh(grid: np.ndarray, bound: float = 1.01, level: float = 0.0) -> trimesh.Trimesh | None:
    """Marching cubes (Lewiner) of one (R+1)³ logit grid → mesh in [−bound, bound]³, None if no surface."""
    from skimage.measure import marching_cubes

    if not np.isfinite(grid).all() or not (grid.min() < level < grid.max()):
        return None
    verts, faces, _, _ = marching_cubes(grid, level, method="lewiner")
    verts = verts / grid.shape[0] * (2 * bound) - bound  # / (R+1), as Hunyuan3D does
    return trimesh.Trimesh(verts.astype(np.float32), np.ascontiguousarray(faces[:, ::-1]))
