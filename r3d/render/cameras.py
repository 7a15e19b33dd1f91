"""Batched pinhole cameras in torch, with the conventions of :mod:`r3d.mesh.render`.

World space is Y-up. A camera orbits the origin at ``elevation`` above the XZ plane and ``azimuth`` about
+Y measured from +Z: position = d·(cos e·sin a, sin e, cos e·cos a), looking at the origin. Camera space
is OpenGL-like (x right, y up, the camera looks down −z); ``c2w`` holds the camera's x, y and z axes in
world coordinates as columns. Images are square, ``size`` pixels, vertical field of view ``fov_deg``,
row 0 at the top, rays through pixel centres. Depth is z-depth (distance along the viewing axis).

The same cameras drive the differentiable field renderer (:mod:`r3d.render.field`), the Gaussian
splatter (:mod:`r3d.render.splat`) and, through :meth:`Cameras.mesh_cameras`, the CPU ray caster of
meshes, so every renderer sees the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from r3d.core.errors import R3DError


def default_distance(fov_deg: float, radius: float = 1.0) -> float:
    """Camera distance at which a sphere of ``radius`` at the origin just fills the frame (2 % margin)."""
    return 1.02 * radius / math.sin(math.radians(fov_deg) / 2.0)


@dataclass
class Cameras:
    """B × V cameras. ``position`` (B, V, 3) and ``c2w`` (B, V, 3, 3) share one dtype and device;
    ``elevation_deg`` / ``azimuth_deg`` (B, V) record the orbit angles."""

    position: torch.Tensor
    c2w: torch.Tensor
    elevation_deg: torch.Tensor
    azimuth_deg: torch.Tensor
    fov_deg: float
    size: int

    @property
    def batch(self) -> int:
        return self.position.shape[0]

    @property
    def views(self) -> int:
        return self.position.shape[1]

    @property
    def focal(self) -> float:
        """Focal length in pixels: (size / 2) / tan(fov / 2)."""
        return 0.5 * self.size / math.tan(math.radians(self.fov_deg) / 2.0)

    def rays_cam(self) -> torch.Tensor:
        """Unit ray directions in camera space through the pixel centres, (H, W, 3), row 0 on top."""
        half = math.tan(math.radians(self.fov_deg) / 2.0)
        coords = (torch.arange(self.size, dtype=self.c2w.dtype, device=self.c2w.device) + 0.5) / self.size
        coords = (coords * 2.0 - 1.0) * half
        y, x = torch.meshgrid(-coords, coords, indexing="ij")
        rays = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
        return rays / rays.norm(dim=-1, keepdim=True)

    def rays_world(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(origins, directions), both (B, V, H, W, 3); directions are unit vectors."""
        d = torch.einsum("bvij,hwj->bvhwi", self.c2w, self.rays_cam())
        o = self.position[:, :, None, None, :].expand_as(d)
        return o, d

    def mesh_cameras(self, b: int) -> list:
        """The V cameras of sample ``b`` as :class:`r3d.mesh.render.Camera` (for ray casting meshes)."""
        from r3d.mesh.render import Camera

        pos = self.position[b].detach().double().cpu().numpy()
        rot = self.c2w[b].detach().double().cpu().numpy()
        return [
            Camera(
                pos[v],
                rot[v],
                self.fov_deg,
                self.size,
                float(self.elevation_deg[b, v]),
                float(self.azimuth_deg[b, v]),
            )
            for v in range(self.views)
        ]


def look_at_origin(position: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotations (..., 3, 3) of cameras at ``position`` (..., 3) looking at 0, +Y up."""
    forward = -position / position.norm(dim=-1, keepdim=True)
    up = torch.zeros_like(position)
    up[..., 1] = 1.0
    right = torch.linalg.cross(forward, up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-9  # looking straight up or down
    fallback = torch.zeros_like(right)
    fallback[..., 0] = 1.0
    right = torch.where(degenerate, fallback, right)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    return torch.stack([right, true_up, -forward], dim=-1)


def orbit(
    elevation_deg: torch.Tensor,
    azimuth_deg: torch.Tensor,
    distance: float,
    fov_deg: float,
    size: int,
) -> Cameras:
    """Cameras at the given orbit angles (B, V) in degrees, all at ``distance`` from the origin."""
    if not 0.0 < fov_deg < 180.0:
        raise R3DError(f"fov_deg must be in (0, 180), got {fov_deg}")
    if size < 2:
        raise R3DError(f"image size must be >= 2 pixels, got {size}")
    if distance <= 0:
        raise R3DError(f"camera distance must be > 0, got {distance}")
    e, a = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    position = distance * torch.stack([e.cos() * a.sin(), e.sin(), e.cos() * a.cos()], dim=-1)
    return Cameras(position, look_at_origin(position), elevation_deg, azimuth_deg, float(fov_deg), int(size))


def orbit_views(
    batch: int,
    n_views: int = 4,
    elevation_deg: float = 20.0,
    azimuth_offset_deg: float = 0.0,
    fov_deg: float = 40.0,
    size: int = 32,
    distance: float | None = None,
    jitter_deg: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Cameras:
    """``n_views`` cameras per sample, evenly spaced in azimuth (offset + 360°·k/n) at one elevation.

    ``jitter_deg`` > 0 perturbs each sample's rig (Nabla-R2D3's random views): one azimuth offset
    ~ U(−j, j) shared by its views (so they stay evenly spaced) and one elevation offset ~ U(−j/2, j/2),
    drawn from ``generator``.
    """
    if n_views < 1 or batch < 1:
        raise R3DError(f"need batch >= 1 and n_views >= 1, got {batch} and {n_views}")
    base_az = azimuth_offset_deg + 360.0 * torch.arange(n_views, dtype=torch.float64) / n_views
    az = base_az.expand(batch, n_views).clone()
    el = torch.full((batch, n_views), float(elevation_deg), dtype=torch.float64)
    if jitter_deg > 0:
        u = torch.rand(batch, 2, generator=generator, dtype=torch.float64) * 2.0 - 1.0
        az = az + jitter_deg * u[:, :1]
        el = el + 0.5 * jitter_deg * u[:, 1:]
    dist = default_distance(fov_deg) if distance is None else float(distance)
    return orbit(el.to(device, dtype), az.to(device, dtype), dist, fov_deg, size)
