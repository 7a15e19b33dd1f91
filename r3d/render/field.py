"""Differentiable volume rendering of signed-distance / occupancy grids in plain torch (CPU or GPU).

Grid convention (that of r3d's tiny-shapes and of :mod:`r3d.mesh.shapes`): a (B, R, R, R)
tensor indexed (x, y, z), cell-centred samples x_n = −b + (2n + 1)·b/R over the cube [−b, b]³
(``bound`` b = 1), values trilinearly interpolated (``grid_sample``, border padding). An SDF is negative
inside; occupancy logits are positive inside (``kind="logits"``).

Rendering (NeuS-style unbiased opacity from a field, Wang et al. 2021): along each camera ray, the
segment inside the cube is sampled at ``samples`` midpoints t_0 < … < t_{N−1}; with
Φ(f) = sigmoid(f / τ) (for logits Φ = sigmoid(−ℓ)), each interval gets the opacity
α_k = clamp((Φ(f_k) − Φ(f_{k+1})) / Φ(f_k), 0, 1), transmittance T_k = Π_{j<k} (1 − α_j) and weight
w_k = T_k·α_k. Outputs per pixel: alpha = Σ w_k; depth = Σ w_k·z_k / alpha (z-depth of the interval
midpoints); normals = normalise(Σ w_k·n_k) in camera space, n_k the unit field gradient ∇f / |∇f|
(central differences on the grid, interpolated like f) — the outward normal, which faces the camera
on visible surfaces. Every output is differentiable with respect to the grid; τ sets the width of the
soft silhouette (default: a quarter of a cell).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from r3d.core.errors import R3DError
from r3d.render.cameras import Cameras
from r3d.render.views import Views, safe_normalize

FieldKind = Literal["sdf", "logits"]


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (...,) of rays with the cube [−bound, bound]³ (slab test); t_far ≤
    t_near where a ray misses. Entry is clamped to ≥ 0 (cameras sit outside the cube)."""
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t1 = (-bound - origins) / safe
    t2 = (bound - origins) / safe
    t_near = torch.minimum(t1, t2).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t1, t2).amin(-1)
    return t_near, t_far


def _field_volume(grid: torch.Tensor, bound: float, kind: FieldKind) -> tuple[torch.Tensor, float]:
    """(B, 4, R, R, R): the signed field f (negative inside) and its gradient (∂x, ∂y, ∂z); and τ's unit."""
    f = grid if kind == "sdf" else -grid
    spacing = 2.0 * bound / grid.shape[-1]
    gx, gy, gz = torch.gradient(f, spacing=spacing, dim=(1, 2, 3))
    return torch.stack([f, gx, gy, gz], dim=1), spacing


def sample_volume(volume: torch.Tensor, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear samples of a (B, C, R, R, R) (x, y, z)-indexed volume at world points (B, ..., 3)
    → (B, ..., C)."""
    b, c = volume.shape[:2]
    shape = points.shape[1:-1]
    # grid_sample's last coordinate axis is (W, H, D) = (z, y, x) for a volume indexed (x, y, z).
    coords = (points / bound).flip(-1).reshape(b, 1, 1, -1, 3)
    out = F.grid_sample(volume, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, c, -1).transpose(1, 2).reshape(b, *shape, c)


def render_field(
    grid: torch.Tensor,
    cameras: Cameras,
    *,
    samples: int = 48,
    tau: float | None = None,
    kind: FieldKind = "sdf",
    bound: float = 1.0,
) -> Views:
    """Render grids (B, R, R, R) from ``cameras`` (B rigs × V views); see the module docstring.

    ``tau``: softness of the SDF → opacity map in world units (default 0.25 × cell size); ignored for
    logits. Memory grows as B·V·size²·samples.
    """
    if grid.ndim != 4 or not grid.shape[1] == grid.shape[2] == grid.shape[3]:
        raise R3DError(f"expected cubic grids (B, R, R, R), got shape {tuple(grid.shape)}")
    if grid.shape[0] != cameras.batch:
        raise R3DError(f"{grid.shape[0]} grids for {cameras.batch} camera rigs")
    if samples < 2:
        raise R3DError(f"need at least 2 samples per ray, got {samples}")
    if kind not in ("sdf", "logits"):
        raise R3DError(f"kind must be 'sdf' or 'logits', got {kind!r}")
    volume, spacing = _field_volume(grid, bound, kind)
    scale = 1.0 if kind == "logits" else (0.25 * spacing if tau is None else float(tau))
    if scale <= 0:
        raise R3DError(f"tau must be > 0, got {tau}")

    origins, dirs = cameras.rays_world()  # (B, V, H, W, 3)
    origins, dirs = origins.to(grid), dirs.to(grid)
    t_near, t_far = ray_box(origins, dirs, bound)
    hit = t_far > t_near
    t_far = torch.where(hit, t_far, t_near)
    u = (torch.arange(samples, dtype=grid.dtype, device=grid.device) + 0.5) / samples
    t = t_near[..., None] + (t_far - t_near)[..., None] * u  # (B, V, H, W, N)
    points = origins[..., None, :] + t[..., None] * dirs[..., None, :]
    values = sample_volume(volume, points, bound)  # (B, V, H, W, N, 4)
    f, grad = values[..., 0], values[..., 1:]

    phi = torch.sigmoid(f / scale)
    alpha_k = ((phi[..., :-1] - phi[..., 1:]) / phi[..., :-1].clamp_min(1e-10)).clamp(0.0, 1.0)
    alpha_k = alpha_k * hit[..., None]
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha_k[..., :1]), 1.0 - alpha_k], -1), -1)[..., :-1]
    w = trans * alpha_k  # (B, V, H, W, N − 1)
    alpha = w.sum(-1)

    z_per_t = -cameras.rays_cam().to(grid)[..., 2]  # z-depth per unit ray length, (H, W)
    t_mid = 0.5 * (t[..., :-1] + t[..., 1:])
    depth = (w * t_mid).sum(-1) * z_per_t / alpha.clamp_min(1e-6)
    depth = torch.where(alpha > 1e-6, depth, torch.zeros_like(depth))

    n_mid = safe_normalize(0.5 * (grad[..., :-1, :] + grad[..., 1:, :]))
    n_world = (w[..., None] * n_mid).sum(-2)  # (B, V, H, W, 3)
    n_cam = torch.einsum("bvji,bvhwj->bvhwi", cameras.c2w.to(grid), n_world)  # R^T n
    normals = safe_normalize(n_cam) * (alpha[..., None] > 1e-6)
    return Views(alpha, depth, normals, cameras)
