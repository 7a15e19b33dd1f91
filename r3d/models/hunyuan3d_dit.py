"""The Hunyuan3D-2.1 shape DiT (``HunYuanDiTPlain``), r3d's own weight-compatible implementation.

Architecture facts (DESIGN §5): the latent is an unordered set of N tokens (B, N, C) (2.1: 4096 × 64);
a timestep token is prepended and dropped again by the final layer; ``depth`` blocks (2.1: 21, hidden
2048, 16 heads) of self-attention → cross-attention to the image tokens (B, L, D) → MLP, pre-norm
residual; the second half of the blocks receives a long skip from the mirrored first-half block
(``skip_linear`` over [skip, x] + ``skip_norm``); the last ``num_moe_layers`` blocks replace the MLP by
a mixture of experts (top-k softmax gate without renormalisation plus an always-on shared expert).

Two details make it weight-compatible with the official checkpoint:

* attention head permutation — the q, k, v projections are concatenated and the concatenation is cut
  per head into [q | k | v] chunks of ``head_dim`` (cross-attention: k and v likewise), so head 0 takes
  its q, k and v all from the first 3·head_dim outputs of ``to_q``;
* native time convention — ``t ∈ [0, 1]`` with 0 = noise and 1 = data, and the network predicts
  x_data − ε (the policy adapter converts at its boundary).

The mixture of experts always runs one differentiable path (the routing weights carry gradients to
the gate, no auxiliary loss, identical in rollout and training, deterministic: outputs are assembled
by gathers, never by atomic scatter-adds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from r3d.core.errors import R3DError


@dataclass
class DiTConfig:
    """``model.params`` of the official config.yaml (defaults: those of the class, 2.1 overrides them)."""

    input_size: int = 1024
    in_channels: int = 4
    hidden_size: int = 1024
    context_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_type: str = "layer"
    qk_norm_type: str = "rms"
    qk_norm: bool = False
    text_len: int = 257
    with_decoupled_ca: bool = False
    use_pos_emb: bool = False
    use_attention_pooling: bool = True
    guidance_cond_proj_dim: int | None = None
    qkv_bias: bool = True
    num_moe_layers: int = 6
    num_experts: int = 8
    moe_top_k: int = 2

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DiTConfig:
        """Build from ``model.params``; options r3d does not implement raise R3DError."""
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in params.items() if k in known})
        unsupported = {
            "use_attention_pooling": cfg.use_attention_pooling,
            "with_decoupled_ca": cfg.with_decoupled_ca,
            "use_pos_emb": cfg.use_pos_emb,
            "guidance_cond_proj_dim": cfg.guidance_cond_proj_dim is not None,
        }
        bad = [k for k, on in unsupported.items() if on]
        if bad:
            raise R3DError(
                f"Hunyuan3D DiT option(s) {', '.join(bad)} are not supported by r3d "
                "(Hunyuan3D-2.1's config turns them off)"
            )
        if cfg.hidden_size % cfg.num_heads:
            raise R3DError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
        return cfg


def _norm(kind: str, dim: int, eps: float = 1e-6) -> nn.Module:
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else nn.RMSNorm(dim, eps=eps)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t (B,) → (B, dim) = [sin(t·ω_i), cos(t·ω_i)], ω_i = P^(−i/(dim/2)), t unscaled."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    """t (B,) → (B, 1, hidden): sinusoidal features of width ``hidden`` → Linear → GELU → Linear."""

    def __init__(self, hidden: int, freq_dim: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.mlp = nn.Sequential(nn.Linear(hidden, freq_dim), nn.GELU(), nn.Linear(freq_dim, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.hidden).to(self.mlp[0].weight.dtype)
        return self.mlp(feats).unsqueeze(1)


def _split_heads(parts: list[torch.Tensor], heads: int) -> list[torch.Tensor]:
    """Hunyuan's head permutation: concat the projections (B, S, n·D) and cut each head's n·head_dim
    slice into n pieces; returns n tensors (B, heads, S, head_dim)."""
    b, s, _ = parts[0].shape
    packed = torch.cat(parts, dim=-1).view(b, s, heads, len(parts), -1)
    return [p.transpose(1, 2) for p in packed.unbind(3)]


class SelfAttention(nn.Module):
    """Self-attention with the concatenate-then-split head permutation and optional RMS q/k norm."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, qk_norm: bool, qk_norm_type: str) -> None:
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.q_norm = _norm(qk_norm_type, head_dim) if qk_norm else nn.Identity()
        self.k_norm = _norm(qk_norm_type, head_dim) if qk_norm else nn.Identity()
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = _split_heads([self.to_q(x), self.to_k(x), self.to_v(x)], self.heads)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class CrossAttention(nn.Module):
    """Cross-attention to the context; k and v are concatenated and split per head like q, k, v above."""

    def __init__(
        self, dim: int, context_dim: int, heads: int, qkv_bias: bool, qk_norm: bool, qk_norm_type: str
    ) -> None:
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, dim, bias=qkv_bias)
        self.q_norm = _norm(qk_norm_type, head_dim) if qk_norm else nn.Identity()
        self.k_norm = _norm(qk_norm_type, head_dim) if qk_norm else nn.Identity()
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = _split_heads([self.to_k(context), self.to_v(context)], self.heads)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    """fc1 → GELU → fc2 with a 4× hidden width (the dense blocks' feed-forward)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * 4)
        self.fc2 = nn.Linear(dim * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Proj(nn.Module):
    """Linear followed by exact GELU (diffusers' ``GELU`` activation module layout: ``proj``)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """An expert: ``net.0`` (Linear + GELU), ``net.1`` (no-op dropout slot), ``net.2`` (Linear)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_Proj(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class MoEGate(nn.Module):
    """Softmax router: tokens (T, D) → (top-k expert indices (T, k), their softmax scores (T, k))."""

    def __init__(self, dim: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = F.linear(tokens, self.weight).softmax(dim=-1)
        weight, index = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        return index, weight


class MoEBlock(nn.Module):
    """Σ_k gate_k(x)·expert_{i_k}(x) + shared_expert(x) over top-k experts, on one differentiable path.

    Tokens are grouped by expert with a stable sort, each expert runs once on its tokens, and the
    outputs are put back with an inverse-permutation gather (deterministic on every device).
    """

    def __init__(self, dim: int, num_experts: int, top_k: int, inner: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.experts = nn.ModuleList(FeedForward(dim, inner) for _ in range(num_experts))
        self.gate = MoEGate(dim, num_experts, top_k)
        self.shared_experts = FeedForward(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        index, weight = self.gate(tokens)
        flat = index.reshape(-1)  # (T·k,), slot j belongs to token j // k
        order = torch.argsort(flat, stable=True)
        if flat.is_meta:  # routing is data-dependent: shape inference assumes balanced experts (same total)
            n, e = flat.numel(), len(self.experts)
            counts = [n // e + (i < n % e) for i in range(e)]
        else:
            counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
        routed = tokens[order // self.top_k]
        outs = [
            expert(chunk)
            for expert, chunk in zip(self.experts, routed.split(counts), strict=True)
            if chunk.shape[0] > 0
        ]
        y = torch.cat(outs)[torch.argsort(order)].to(x.dtype)
        y = (y.view(-1, self.top_k, shape[-1]) * weight.unsqueeze(-1)).sum(dim=1)
        return y.view(shape) + self.shared_experts(x)


class DiTBlock(nn.Module):
    """[skip_linear + skip_norm] → x + attn1(norm1 x) → x + attn2(norm2 x, ctx) → x + ffn(norm3 x)."""

    def __init__(self, cfg: DiTConfig, skip: bool, moe: bool) -> None:
        super().__init__()
        d = cfg.hidden_size
        attn = {"qkv_bias": cfg.qkv_bias, "qk_norm": cfg.qk_norm, "qk_norm_type": cfg.qk_norm_type}
        self.norm1 = _norm(cfg.norm_type, d)
        self.attn1 = SelfAttention(d, cfg.num_heads, **attn)
        self.norm2 = _norm(cfg.norm_type, d)
        self.attn2 = CrossAttention(d, cfg.context_dim, cfg.num_heads, **attn)
        self.norm3 = _norm(cfg.norm_type, d)
        if skip:
            self.skip_norm = _norm(cfg.norm_type, d)
            self.skip_linear = nn.Linear(2 * d, d)
        else:
            self.skip_linear = None
        if moe:
            self.moe = MoEBlock(d, cfg.num_experts, cfg.moe_top_k, d * 4)
        else:
            self.mlp = MLP(d)
        self.use_moe = moe

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_norm(self.skip_linear(torch.cat([skip, x], dim=-1)))
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        h = self.norm3(x)
        return x + (self.moe(h) if self.use_moe else self.mlp(h))


class FinalLayer(nn.Module):
    """LayerNorm → drop the timestep token → Linear to the latent channels."""

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6)
        self.linear = nn.Linear(dim, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x)[:, 1:])


class HunyuanDiT(nn.Module):
    """``dit(x (B, N, C), t (B,) ∈ [0, 1] with 0 = noise, context (B, L, D)) → (B, N, C)`` ≈ x_data − ε.

    ``gradient_checkpointing``: recompute each block in the backward pass (same numerics, less memory).
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.gradient_checkpointing = False
        d = cfg.hidden_size
        self.x_embedder = nn.Linear(cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d, d * 4)
        half = cfg.depth // 2
        self.blocks = nn.ModuleList(
            DiTBlock(cfg, skip=layer > half, moe=cfg.depth - layer <= cfg.num_moe_layers)
            for layer in range(cfg.depth)
        )
        self.final_layer = FinalLayer(d, cfg.in_channels)

    def checkpoint_units(self) -> list[nn.Module]:
        """The modules ``gradient_checkpointing`` recomputes in the backward pass (the blocks)."""
        return list(self.blocks)

    def _run(self, block: DiTBlock, *args: torch.Tensor | None) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.cfg.in_channels:
            raise R3DError(f"DiT input must be (B, N, {self.cfg.in_channels}), got {tuple(x.shape)}")
        h = torch.cat([self.t_embedder(t), self.x_embedder(x)], dim=1)
        half = self.cfg.depth // 2
        skips: list[torch.Tensor] = []
        for layer, block in enumerate(self.blocks):
            h = self._run(block, h, context, skips.pop() if layer > half else None)
            if layer < half:
                skips.append(h)
        return self.final_layer(h)
