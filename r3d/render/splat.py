"""3D Gaussian splatting: a pure-torch EWA splatter (CPU, tests) and the gsplat rasterizer (CUDA).

A Gaussian has a mean (world), per-axis standard deviations ``scales``, a rotation (unit quaternion
w, x, y, z), an opacity in [0, 1] and an RGB colour. Its world covariance is R·diag(s²)·Rᵀ; projected to
the image with the Jacobian J of the pinhole projection at its mean (EWA splatting, Zwicker et al. 2002;
Kerbl et al. 2023): Σ₂ = J·W·Σ·Wᵀ·Jᵀ + 0.3·I (the 0.3-pixel² low-pass filter of 3DGS / gsplat's
``eps2d``), W the world→camera rotation. Per pixel the Gaussians are composited front to back by depth:
α_i = min(0.99, o_i·exp(−½ dᵀΣ₂⁻¹d)), w_i = α_i·Π_{j<i}(1 − α_j). Outputs (:class:`Views`): alpha = Σ w;
rgb = Σ w·c + (1 − alpha)·background; depth = Σ w·z / alpha (expected z-depth); normals = normalise(Σ w·n),
n_i the Gaussian's shortest axis in camera space flipped towards the camera. Cameras follow
:mod:`r3d.render.cameras` (OpenGL camera space); gsplat's OpenCV view matrices are derived from them.

The torch splatter evaluates every (pixel, Gaussian) pair densely: right for tests and small renders;
``backend="auto"`` uses gsplat (``pip install gsplat``) for CUDA tensors when it is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write
from r3d.render.cameras import Cameras
from r3d.render.views import Views, safe_normalize

LOW_PASS = 0.3  # pixel² added to every projected covariance (3DGS; gsplat eps2d)
MAX_ALPHA = 0.99


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from quaternions (..., 4) in (w, x, y, z) order (normalised here)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


@dataclass
class GaussianCloud:
    """One object's N Gaussians: means, scales (N, 3), rotations (N, 4) wxyz, opacities (N,), colors (N, 3)."""

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def save(self, path: str | Path) -> Path:
        """Write ``path`` as a binary little-endian PLY in the 3DGS layout (x y z nx ny nz f_dc_0..2
        opacity scale_0..2 rot_0..3; opacity as a logit, scales as logs, colours as degree-0 SH)."""
        c0 = 0.28209479177387814  # Y_0^0
        eps = 1e-6
        op = self.opacities.detach().double().clamp(eps, 1 - eps)
        fields = [
            self.means.detach().double(),
            torch.zeros_like(self.means, dtype=torch.float64),
            (self.colors.detach().double() - 0.5) / c0,
            torch.log(op / (1 - op))[:, None],
            torch.log(self.scales.detach().double().clamp_min(1e-12)),
            self.rotations.detach().double(),
        ]
        data = torch.cat(fields, 1).float().cpu().numpy().astype("<f4")
        names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
        names += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
        header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {len(data)}\n"
        header += "".join(f"property float {n}\n" for n in names) + "end_header\n"

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                f.write(header.encode("ascii"))
                f.write(np.ascontiguousarray(data).tobytes())

        return atomic_write(Path(path), write)


@dataclass
class Gaussians:
    """A batch of B clouds with N Gaussians each: the fields of :class:`GaussianCloud` with a leading B."""

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def cloud(self, b: int) -> GaussianCloud:
        return GaussianCloud(
            self.means[b], self.scales[b], self.rotations[b], self.opacities[b], self.colors[b]
        )


def stack_clouds(clouds: Sequence[GaussianCloud]) -> Gaussians:
    """Batch clouds; shorter clouds are padded with transparent Gaussians."""
    n = max(c.means.shape[0] for c in clouds)

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        extra = n - t.shape[0]
        return t if extra == 0 else torch.cat([t, t.new_full((extra, *t.shape[1:]), value)])

    fields = {
        "means": [pad(c.means, 0.0) for c in clouds],
        "scales": [pad(c.scales, 1e-3) for c in clouds],
        "rotations": [pad(c.rotations, 0.5) for c in clouds],
        "opacities": [pad(c.opacities, 0.0) for c in clouds],
        "colors": [pad(c.colors, 0.0) for c in clouds],
    }
    return Gaussians(**{k: torch.stack(v) for k, v in fields.items()})


def _render_view_torch(
    means: torch.Tensor,
    scales: torch.Tensor,
    rot: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    position: torch.Tensor,
    c2w: torch.Tensor,
    size: int,
    focal: float,
    near: float,
    background: float,
) -> tuple[torch.Tensor, ...]:
    """One cloud, one camera → alpha (H, W), rgb (H, W, 3), depth (H, W), normals (H, W, 3)."""
    cam = (means - position) @ c2w  # camera-space coordinates (N, 3), OpenGL: looking down −z
    z = -cam[:, 2]
    visible = z > near
    zs = torch.where(visible, z, torch.ones_like(z))
    x, y = cam[:, 0], cam[:, 1]
    centre = 0.5 * size
    mu = torch.stack([focal * x / zs + centre, -focal * y / zs + centre], -1)  # pixel coords (u, v)
    zero = torch.zeros_like(zs)
    jac = torch.stack(  # ∂(u, v)/∂(x, y, z_cam) with z_cam = −z
        [
            torch.stack([focal / zs, zero, focal * x / zs**2], -1),
            torch.stack([zero, -focal / zs, -focal * y / zs**2], -1),
        ],
        -2,
    )  # (N, 2, 3)
    cov_world = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    cov_cam = c2w.T @ cov_world @ c2w
    cov2 = jac @ cov_cam @ jac.transpose(-1, -2) + LOW_PASS * torch.eye(2, dtype=means.dtype)
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] * cov2[:, 1, 0]
    inv = torch.stack([cov2[:, 1, 1], -cov2[:, 0, 1], -cov2[:, 1, 0], cov2[:, 0, 0]], -1) / det[:, None]

    order = torch.argsort(torch.where(visible, z, torch.full_like(z, float("inf"))))
    mu, inv, z, visible = mu[order], inv[order], z[order], visible[order]
    pix = torch.arange(size, dtype=means.dtype) + 0.5
    pv, pu = torch.meshgrid(pix, pix, indexing="ij")
    d = torch.stack([pu.reshape(-1), pv.reshape(-1)], -1)[:, None, :] - mu[None]  # (P, N, 2)
    power = -0.5 * (inv[None, :, 0] * d[..., 0] ** 2 + 2 * inv[None, :, 1] * d[..., 0] * d[..., 1])
    power = power - 0.5 * inv[None, :, 3] * d[..., 1] ** 2
    alpha = (opacities[order][None] * torch.exp(power.clamp(max=0.0))).clamp(max=MAX_ALPHA) * visible[None]
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], 1), 1)
    w = alpha * trans  # (P, N)
    acc = w.sum(1)

    short = torch.argmin(scales, dim=-1)  # each Gaussian's normal: its shortest axis
    axis = torch.gather(rot, 2, short[:, None, None].expand(-1, 3, 1))[..., 0]
    n_cam = (axis @ c2w)[order]
    n_cam = torch.where(((n_cam * -cam[order]).sum(-1, keepdim=True)) < 0, -n_cam, n_cam)
    rgb = w @ colors[order] + (1.0 - acc)[:, None] * background
    depth = (w @ z) / acc.clamp_min(1e-6)
    depth = torch.where(acc > 1e-6, depth, torch.zeros_like(depth))
    normals = safe_normalize(w @ n_cam) * (acc > 1e-6)[:, None]
    hw = (size, size)
    return acc.reshape(hw), rgb.reshape(*hw, 3), depth.reshape(hw), normals.reshape(*hw, 3)


def _render_torch(g: Gaussians, cameras: Cameras, near: float, background: float) -> Views:
    rot = quat_to_rotmat(g.rotations)
    outs = [
        [
            _render_view_torch(
                g.means[b],
                g.scales[b],
                rot[b],
                g.opacities[b],
                g.colors[b],
                cameras.position[b, v].to(g.means),
                cameras.c2w[b, v].to(g.means),
                cameras.size,
                cameras.focal,
                near,
                background,
            )
            for v in range(cameras.views)
        ]
        for b in range(cameras.batch)
    ]
    alpha, rgb, depth, normals = (
        torch.stack([torch.stack([o[k] for o in row]) for row in outs]) for k in range(4)
    )
    return Views(alpha, depth, normals, cameras, rgb)


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _render_gsplat(g: Gaussians, cameras: Cameras, near: float, background: float) -> Views:
    """gsplat rasterization (CUDA). View matrices: OpenCV world→camera from our OpenGL camera-to-world."""
    from gsplat import rasterization

    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], device=g.means.device))
    size, f = cameras.size, cameras.focal
    k = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]], device=g.means.device)
    rot = quat_to_rotmat(g.rotations)
    short = torch.argmin(g.scales, dim=-1)
    axis = torch.gather(rot, 3, short[..., None, None].expand(-1, -1, 3, 1))[..., 0]  # (B, N, 3)
    views = []
    for b in range(cameras.batch):
        c2w = cameras.c2w[b].to(g.means)  # (V, 3, 3)
        pos = cameras.position[b].to(g.means)
        r_cv = c2w @ flip
        viewmats = torch.zeros(cameras.views, 4, 4, device=g.means.device, dtype=g.means.dtype)
        viewmats[:, :3, :3] = r_cv.transpose(1, 2)
        viewmats[:, :3, 3] = -(r_cv.transpose(1, 2) @ pos[..., None])[..., 0]
        viewmats[:, 3, 3] = 1.0
        n_cam = torch.einsum("nj,vji->vni", axis[b], c2w)  # per view, OpenGL camera space
        to_cam = -torch.einsum("vnj,vji->vni", g.means[b][None] - pos[:, None], c2w)
        n_cam = torch.where((n_cam * to_cam).sum(-1, keepdim=True) < 0, -n_cam, n_cam)
        colors = torch.cat([g.colors[b][None].expand(cameras.views, -1, -1), n_cam], -1)
        out, acc, _ = rasterization(
            g.means[b],
            g.rotations[b],
            g.scales[b],
            g.opacities[b],
            colors,
            viewmats,
            k[None].expand(cameras.views, -1, -1),
            size,
            size,
            near_plane=near,
            render_mode="RGB+ED",
            packed=False,
        )
        acc = acc[..., 0]
        rgb = out[..., :3] + (1.0 - acc[..., None]) * background
        normals = safe_normalize(out[..., 3:6]) * (acc[..., None] > 1e-6)
        views.append((acc, rgb, out[..., 6], normals))
    alpha, rgb, depth, normals = (torch.stack([v[k] for v in views]) for k in range(4))
    return Views(alpha, depth, normals, cameras, rgb)


def render_gaussians(
    g: Gaussians,
    cameras: Cameras,
    *,
    near: float = 0.01,
    background: float = 1.0,
    backend: Literal["auto", "torch", "gsplat"] = "auto",
) -> Views:
    """Splat a batch of clouds (B = cameras.batch) into every view; differentiable on both backends."""
    if g.means.shape[0] != cameras.batch:
        raise R3DError(f"{g.means.shape[0]} Gaussian clouds for {cameras.batch} camera rigs")
    use_gsplat = backend == "gsplat" or (backend == "auto" and g.means.is_cuda and _gsplat_available())
    if backend == "gsplat" and not _gsplat_available():
        raise R3DError("render backend gsplat requested but gsplat is not installed (pip install gsplat)")
    if use_gsplat:
        return _render_gsplat(g, cameras, near, background)
    return _render_torch(g, cameras, near, background)


def gaussian_sheet(
    clouds: Sequence[GaussianCloud | None],
    labels: Sequence[str],
    path: str | Path,
    cameras: Callable[[int], Cameras],
    size: int = 96,
) -> Path:
    """A PNG with one row per cloud: its RGB views from ``cameras(1)`` side by side, label on the left
    (the preview of Gaussian-splat policies). Rendered on the CPU with the torch splatter; atomic."""
    from PIL import Image, ImageDraw, ImageFont

    rows = []
    for cloud in clouds:
        if cloud is None:
            rows.append(None)
            continue
        with torch.no_grad():
            views = render_gaussians(stack_clouds([cloud]), cameras(1), backend="torch")
        rgb = views.rgb if views.rgb is not None else views.alpha[..., None].expand(*views.alpha.shape, 3)
        rows.append((rgb[0].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy())
    n_views = next((r.shape[0] for r in rows if r is not None), 1)
    label_w = size
    sheet = Image.new("RGB", (label_w + n_views * size, max(1, len(rows)) * size), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        draw.text((4, i * size + size // 2 - 6), label[:18], fill=(0, 0, 0), font=font)
        if row is None:
            draw.text((label_w + 4, i * size + size // 2 - 6), "empty", fill=(128, 128, 128), font=font)
            continue
        for v, view in enumerate(row):
            tile = Image.fromarray(view).resize((size, size), Image.NEAREST)
            sheet.paste(tile, (label_w + v * size, i * size))

    def write(tmp: Path) -> None:
        sheet.save(tmp, format="PNG")

    return atomic_write(Path(path), write)
