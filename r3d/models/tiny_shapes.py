"""tiny-shapes: a small class-conditioned flow-matching generator of 3D shapes (r3d's stand-in for
Hunyuan3D on a CPU).

Representation. A shape is its signed distance function f (negative inside) on [−1, 1]³, written as a
truncated 3D cosine series f(x) = Σ_{ijk < K} c_ijk · cos(πi(x+1)/2) · cos(πj(y+1)/2) · cos(πk(z+1)/2).
The K³ coefficients, standardised per coefficient with the training set's mean and std, are the
latent: z = (c − μ) / s, shape (K, K, K). The basis costs no weights, any decode resolution works, and
K = 10 keeps the procedural surfaces within ≈ 0.01 (mean distance, world units) of the exact ones.

Network. A residual MLP (nn.Linear layers, per-sample LayerNorm without affine; no batch statistics,
no dropout): the flattened latent is embedded; the σ embedding (sinusoidal → MLP) plus the class
embedding form a condition vector c; each pre-LayerNorm MLP block adds its own projection of c to its
normalised input; the head predicts the clean latent x̂₀. Class index ``n_classes`` is the empty (unconditional) class
used for classifier-free guidance (trained with condition dropout).

Canonical flow convention (r3d.core.policy): x_σ = (1 − σ)·x₀ + σ·ε and v = ε − x₀, so from the x₀
prediction v = (x_σ − x̂₀)/σ; CFG mixes x̂₀ (equivalently v, which is affine in x̂₀ at fixed x, σ).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import trimesh
from torch import nn

from r3d.core.errors import R3DError
from r3d.core.io import read_safetensors, write_safetensors
from r3d.core.policy import declare_hooks
from r3d.mesh.shapes import CLASSES, grid_coords, grid_to_mesh, parse_prompt

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "tiny_shapes.safetensors"
SIGMA_MIN = 1e-4  # velocity() clamps σ to this floor: v = (x − x̂₀)/σ is undefined at σ = 0


@dataclass
class TinyShapesConfig:
    """Architecture and representation of a tiny-shapes model (stored in the weights' metadata)."""

    n_classes: int = len(CLASSES)
    latent_size: int = 10  # K: cosine coefficients per axis; latent shape (K, K, K)
    width: int = 384
    depth: int = 4
    mlp_ratio: int = 1
    time_dim: int = 128
    guidance_scale: float = 1.0  # default CFG scale of the shipped policy (1 = conditional only)
    decode_resolution: int = 32  # grid samples per axis for marching cubes


def cosine_basis(n: int, k: int) -> torch.Tensor:
    """cos(πj(x_i + 1)/2) at the n cell-centred positions x_i of [−1, 1]: (n, k) fp64."""
    x = torch.as_tensor(grid_coords(n), dtype=torch.float64)
    j = torch.arange(k, dtype=torch.float64)
    return torch.cos(math.pi * j[None] * (x[:, None] + 1) / 2)


def grid_to_coeffs(grid: torch.Tensor, k: int) -> torch.Tensor:
    """Least-squares cosine coefficients of cell-centred grids (B, n, n, n) → (B, k, k, k).

    On cell-centred samples the basis columns are orthogonal (a DCT-II), so the projection is exact.
    """
    basis = cosine_basis(grid.shape[-1], k).to(grid)
    norm = (basis * basis).sum(0)
    c = torch.einsum("bxyz,xi,yj,zk->bijk", grid, basis, basis, basis)
    return c / (norm[:, None, None] * norm[None, :, None] * norm[None, None, :])


def coeffs_to_grid(coeffs: torch.Tensor, n: int) -> torch.Tensor:
    """Evaluate cosine series (B, k, k, k) on the cell-centred n³ grid: (B, n, n, n)."""
    basis = cosine_basis(n, coeffs.shape[-1]).to(coeffs)
    return torch.einsum("bijk,xi,yj,zk->bxyz", coeffs, basis, basis, basis)


def timestep_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of σ ∈ [0, 1] (B,) → (B, dim), frequencies 1 … 1000/(2π) over 1000·σ."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half
    )
    args = 1000.0 * sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Block(nn.Module):
    """Pre-LayerNorm residual MLP block with an additive per-block condition."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.cond = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.act = nn.GELU()

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.norm(h) + self.cond(c))))


class TinyShapesNet(nn.Module):
    """x̂₀ = net(x_σ (B, K, K, K), σ (B,), class (B,) long) → (B, K, K, K)."""

    def __init__(self, cfg: TinyShapesConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.latent_size**3
        self.x_in = nn.Linear(dim, cfg.width)
        self.t_fc1 = nn.Linear(cfg.time_dim, cfg.width)
        self.t_fc2 = nn.Linear(cfg.width, cfg.width)
        self.class_emb = nn.Embedding(cfg.n_classes + 1, cfg.width)  # last index: unconditional
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.width * cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width, elementwise_affine=False)
        self.x_out = nn.Linear(cfg.width, dim)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = self.t_fc2(nn.functional.silu(self.t_fc1(timestep_embedding(sigma, self.cfg.time_dim))))
        c = nn.functional.silu(t + self.class_emb(labels))
        h = self.x_in(x.flatten(1))
        for block in self.blocks:
            h = block(h, c)
        return self.x_out(self.norm_out(h)).view_as(x)


class TinyShapesPolicy:
    """The tiny-shapes generator as an :class:`r3d.core.policy.FlowPolicy`.

    Conditions are class indices (B,) long; latents are (B, K, K, K) fp32 standardised cosine
    coefficients; ``decode`` returns ``trimesh.Trimesh`` in world units inside [−1, 1]³ (or None).
    """

    def __init__(
        self,
        network: TinyShapesNet,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        guidance_scale: float | None = None,
        decode_resolution: int | None = None,
    ) -> None:
        self.network = network
        self.cfg = network.cfg
        self.latent_mean = latent_mean.float()
        self.latent_std = latent_std.float()
        self.guidance_scale = self.cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        self.decode_resolution = decode_resolution or self.cfg.decode_resolution
        self.lora_target_modules = [n for n, m in network.named_modules() if isinstance(m, nn.Linear)]
        self._cond_cache: dict[str, int] = {}

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        k = self.cfg.latent_size
        return (k, k, k)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Class indices (B,) long for prompts like "a cube" (R3DError when no single class is named)."""
        for p in prompts:
            if p not in self._cond_cache:
                self._cond_cache[p] = parse_prompt(p)
        return torch.tensor([self._cond_cache[p] for p in prompts], dtype=torch.long, device=self.device)

    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """ε ~ N(0, I), (batch, K, K, K) fp32 on the generator's device."""
        return torch.randn((batch, *self.latent_shape), generator=generator, device=generator.device)

    def sigmas(self, num_steps: int, shift: float = 1.0) -> torch.Tensor:
        """σ from 1 to 0 in ``num_steps`` steps: linspace, optionally shifted σ' = sσ/(1 + (s − 1)σ)."""
        if num_steps < 1:
            raise R3DError(f"num_steps must be ≥ 1, got {num_steps}")
        s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)
        return shift * s / (1 + (shift - 1) * s)

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Guided clean-latent prediction x̂₀ (B, K, K, K); one batched pass [cond; uncond] when CFG > 1."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        if self.guidance_scale == 1.0:
            return self.network(x, sigma, cond)
        null = torch.full_like(cond, self.cfg.n_classes)
        both = self.network(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, null]))
        x0_cond, x0_uncond = both.chunk(2)
        return x0_uncond + self.guidance_scale * (x0_cond - x0_uncond)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Canonical velocity v = (x − x̂₀)/σ, σ (B,) clamped to ≥ SIGMA_MIN; CFG applied inside."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        x0 = self.predict_x0(x, sigma, cond)
        return (x - x0) / sigma.clamp_min(SIGMA_MIN).view(-1, 1, 1, 1)

    def decode_field(self, x0: torch.Tensor, resolution: int) -> torch.Tensor:
        """Differentiable SDF grids (B, R, R, R) over [−1, 1]³ of clean latents x0 (B, 10, 10, 10): the
        render-based rewards' hook; the same cosine basis as :meth:`to_grid`, without detaching."""
        coeffs = x0 * self.latent_std.to(x0) + self.latent_mean.to(x0)
        return coeffs_to_grid(coeffs, resolution)

    def to_grid(self, x: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """Latents (B, K, K, K) → SDF grids (B, R, R, R) over [−1, 1]³ (cell-centred)."""
        coeffs = x.detach().float().cpu() * self.latent_std + self.latent_mean
        return coeffs_to_grid(coeffs, resolution or self.decode_resolution)

    def decode(self, x: torch.Tensor, cond: Any = None) -> list[trimesh.Trimesh | None]:
        """Marching cubes of each decoded SDF grid; None where the grid has no surface."""
        return [grid_to_mesh(g) for g in self.to_grid(x).numpy()]

    def select_cond(self, cond: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return cond[index.to(cond.device)]

    @torch.no_grad()
    def sample(
        self, prompts: list[str], num_steps: int = 16, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Deterministic Euler (ODE) sampling from σ = 1 to 0: final latents (B, K, K, K)."""
        generator = generator or torch.Generator(self.device).manual_seed(0)
        cond = self.encode_prompts(prompts)
        x = self.initial_noise(len(prompts), generator).to(self.device)
        sig = self.sigmas(num_steps).tolist()
        for s, s_next in zip(sig[:-1], sig[1:], strict=True):
            x = x + (s_next - s) * self.velocity(x, torch.full((len(prompts),), s, device=x.device), cond)
        return x


def save_tiny_shapes(
    path: str | Path,
    policy: TinyShapesPolicy,
    extra_metadata: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write the network (``dtype``, fp16 as shipped) and the latent statistics (fp32) to one
    safetensors file, config in metadata."""
    tensors = {f"net.{k}": v.detach().to(dtype).contiguous() for k, v in policy.network.state_dict().items()}
    tensors["latent_mean"] = policy.latent_mean.contiguous()
    tensors["latent_std"] = policy.latent_std.contiguous()
    metadata = {"config": asdict(policy.cfg), "classes": list(CLASSES), **(extra_metadata or {})}
    write_safetensors(path, tensors, metadata)


def validate_prompt(prompt: str) -> None:
    """R3DError unless ``prompt`` names exactly one known shape class (checked before loading weights)."""
    parse_prompt(prompt)


def load_tiny_shapes(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    guidance_scale: float | None = None,
    decode_resolution: int | None = None,
) -> TinyShapesPolicy:
    """Load a tiny-shapes policy (the shipped weights by default) in fp32 eval mode on ``device``."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    what = "tiny-shapes weights"
    tensors, meta = read_safetensors(path, what, f"python -m r3d.models.train_tiny_shapes --out {path}")
    try:
        cfg = TinyShapesConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise R3DError(f"{path} is not a {what} file ({exc})") from exc
    if json.loads(meta.get("classes", "[]")) != list(CLASSES):
        raise R3DError(f"{path} was trained on other shape classes than {', '.join(CLASSES)}")
    net = TinyShapesNet(cfg)
    state = {k.removeprefix("net."): v.float() for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise R3DError(f"{path} does not match the tiny-shapes architecture: {exc}") from exc
    net.eval().requires_grad_(False).to(device)
    return TinyShapesPolicy(
        net, tensors["latent_mean"], tensors["latent_std"], guidance_scale, decode_resolution
    )


def save_merged_tiny_shapes(
    policy: TinyShapesPolicy, folder: str | Path, options: dict[str, Any], dtype: torch.dtype | None = None
) -> Path:
    """``r3d export --merge`` writer: ``folder/tiny_shapes.safetensors`` in the shipped layout (fp32 by
    default, so the merged network equals the adapter-enabled one); load it with ``weights=``."""
    path = Path(folder) / "tiny_shapes.safetensors"
    save_tiny_shapes(path, policy, dtype=dtype or torch.float32)
    return path


declare_hooks(
    load_tiny_shapes,
    save_merged=save_merged_tiny_shapes,
    weights_option="weights",
    validate_prompt=validate_prompt,
)
