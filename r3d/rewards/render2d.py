"""Differentiable 2D rewards on rendered views of 3D outputs (Nabla-R2D3's "pure 2D rewards").

Every reward here renders a batch of 3D outputs from a rig of orbiting cameras
(:func:`r3d.render.cameras.orbit_views`) and scores the rendered maps (:class:`r3d.render.views.Views`).
Two paths share the cameras and the 2D scoring code:

- ``__call__(artifacts, prompts)`` — the :class:`r3d.core.rewards.Reward` protocol, no gradient. Meshes
  are ray-cast exactly (:func:`r3d.render.views.render_meshes`), Gaussian clouds splatted, SDF grids
  volume-rendered.
- ``score_latents(policy, x0, prompts, ...)`` — the differentiable path used by ``train.algorithm:
  nabla``: clean latents → the policy's differentiable decode → differentiable renderer → score (B,).
  A policy either renders itself (``render_latents(x0, cameras) -> Views``, e.g. DiffSplat) or exposes
  a field (``decode_field(x0) -> (B, R, R, R)`` SDF grids; for tiny-shapes the cosine-series decode is
  applied here when the policy has no such hook) that :func:`r3d.render.field.render_field` renders.

Rewards:

- ``normal_consistency`` (DNC, Nabla-R2D3's ``normal_d2n_cons``): per view, the mean over foreground
  pixels (alpha > 0.5 with all four neighbours in the foreground) of cos(n_render, n_depth), n_depth the
  normal of the surface back-projected from the rendered depth (central differences, oriented towards
  the camera); averaged over views. ``detach_targets`` stops the gradient through n_depth (Nabla-R2D3's
  ``reward_context: inference``). Range [−1, 1].
- ``silhouette``: per view, the soft IoU Σ a·t / Σ (a + t − a·t) between the rendered alpha a and the
  target silhouette t of the prompt's shape class (the class prototype with mid-range parameters, axis
  along z, rendered from the same cameras), averaged over views. Range [0, 1].
- ``image_model``: an adapter slot for image reward models on shaded renders (Lambert shading of the
  rendered normals, white background): the LAION aesthetic predictor (CLIP ViT-L/14 + MLP) when its
  weights are on disk, or any ``module:callable`` scorer ``(images (N, 3, H, W) in [0, 1], prompts) →
  (N,)``. Views are averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from r3d.core.errors import R3DError
from r3d.core.policy import DecodesField, RendersLatents
from r3d.render.cameras import Cameras, orbit_views
from r3d.render.field import render_field
from r3d.render.views import Views, render_meshes, safe_normalize


def _is_mesh(a: Any) -> bool:
    return type(a).__module__.startswith("trimesh")


def decode_field(policy: Any, x0: torch.Tensor, resolution: int) -> torch.Tensor:
    """Differentiable SDF grids (B, R, R, R) over [−1, 1]³ from clean latents of a field policy.

    Uses the policy's ``decode_field(x0, resolution)`` hook (see docs/adapters.md).
    """
    if isinstance(policy, DecodesField):
        return policy.decode_field(x0, resolution)
    raise R3DError(
        f"policy {type(policy).__name__} has no differentiable decode (decode_field or render_latents); "
        "a render-based reward cannot be differentiated through it"
    )


class RenderReward:
    """Base of the render-based rewards: cameras, rendering of artifacts and latents, batching.

    Args:
        n_views, elevation_deg, azimuth_offset_deg, fov_deg, distance: the camera rig (distance None:
            the unit sphere just fills the frame).
        size: square render resolution in pixels.
        samples, tau: ray samples and softness of the field renderer (see r3d.render.field).
        resolution: grid resolution at which a field policy's latents are decoded.
    """

    name = "render"
    higher_is_better = True
    value_range: tuple[float, float] = (0.0, 1.0)
    differentiable = True

    def __init__(
        self,
        n_views: int = 4,
        size: int = 32,
        elevation_deg: float = 20.0,
        azimuth_offset_deg: float = 45.0,
        fov_deg: float = 40.0,
        distance: float | None = None,
        samples: int = 48,
        tau: float | None = None,
        resolution: int = 32,
    ) -> None:
        if n_views < 1 or size < 4 or resolution < 4:
            raise R3DError(
                f"{self.name} reward: need n_views >= 1, size >= 4, resolution >= 4 "
                f"(got {n_views}, {size}, {resolution})"
            )
        self.rig = {
            "n_views": n_views,
            "elevation_deg": elevation_deg,
            "azimuth_offset_deg": azimuth_offset_deg,
            "fov_deg": fov_deg,
            "size": size,
            "distance": distance,
        }
        self.samples = samples
        self.tau = tau
        self.resolution = resolution

    # ----------------------------------------------------------------- rendering
    def cameras(
        self,
        batch: int,
        jitter_deg: float = 0.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Cameras:
        return orbit_views(
            batch, jitter_deg=jitter_deg, generator=generator, dtype=dtype, device=device, **self.rig
        )

    def render_artifacts(self, artifacts: Sequence[Any], cameras: Cameras) -> Views:
        """Views of artifacts (no gradient): meshes ray-cast, Gaussian clouds splatted, grids rendered."""
        from r3d.render.splat import GaussianCloud, render_gaussians, stack_clouds

        if all(a is None or _is_mesh(a) for a in artifacts):
            return render_meshes(artifacts, cameras)
        if all(isinstance(a, GaussianCloud) for a in artifacts):
            with torch.no_grad():
                return render_gaussians(stack_clouds(artifacts), cameras)
        if all(isinstance(a, torch.Tensor) and a.ndim == 3 for a in artifacts):
            with torch.no_grad():
                return render_field(
                    torch.stack(list(artifacts)).float(), cameras, samples=self.samples, tau=self.tau
                )
        kinds = sorted({type(a).__name__ for a in artifacts})
        raise R3DError(f"{self.name} reward cannot render artifacts of type {', '.join(kinds)}")

    def render_latents(self, policy: Any, x0: torch.Tensor, cameras: Cameras) -> Views:
        """Differentiable views of clean latents ``x0`` (B, ...) through the policy's decode."""
        if isinstance(policy, RendersLatents):
            return policy.render_latents(x0, cameras)
        grid = decode_field(policy, x0, self.resolution)
        return render_field(grid, cameras, samples=self.samples, tau=self.tau)

    # ----------------------------------------------------------------- scoring
    def score_views(self, views: Views, prompts: Sequence[str], detach_targets: bool = False) -> torch.Tensor:
        """(B,) score of rendered views; differentiable where the views are."""
        raise NotImplementedError

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{name: float32 (B,)}`` on CPU; an empty decode (None) scores the reward's minimum (meshes:
        an empty view; other kinds: ``value_range[0]``)."""
        if all(a is None or _is_mesh(a) for a in artifacts):
            keep = list(range(len(artifacts)))
        else:
            keep = [i for i, a in enumerate(artifacts) if a is not None]
        score = torch.full((len(artifacts),), float(self.value_range[0]))
        if keep:
            views = self.render_artifacts([artifacts[i] for i in keep], self.cameras(len(keep)))
            with torch.no_grad():
                score[keep] = self.score_views(views, [prompts[i] for i in keep]).detach().float().cpu()
        return {self.name: score}

    def score_latents(
        self,
        policy: Any,
        x0: torch.Tensor,
        prompts: Sequence[str],
        *,
        generator: torch.Generator | None = None,
        view_jitter_deg: float = 0.0,
        detach_targets: bool = False,
    ) -> torch.Tensor:
        """Differentiable (B,) reward of clean latents ``x0``; cameras jittered by ``view_jitter_deg``."""
        cams = self.cameras(x0.shape[0], view_jitter_deg, generator, dtype=x0.dtype, device=x0.device)
        return self.score_views(self.render_latents(policy, x0, cams), list(prompts), detach_targets)


# --------------------------------------------------------------------------- normal consistency


def camera_points(depth: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """Camera-space points (B, V, H, W, 3) back-projected from z-depth maps (B, V, H, W)."""
    rays = cameras.rays_cam().to(depth)
    return rays * (depth / -rays[..., 2])[..., None]


def depth_normals(depth: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """Unit normals (B, V, H, W, 3) of the back-projected depth surface, central differences, facing
    the camera; zero on the one-pixel border."""
    p = camera_points(depth, cameras)
    dx = torch.zeros_like(p)
    dy = torch.zeros_like(p)
    dx[:, :, :, 1:-1] = p[:, :, :, 2:] - p[:, :, :, :-2]  # along +x (image right)
    dy[:, :, 1:-1] = p[:, :, :-2] - p[:, :, 2:]  # along +y (image up: rows decrease)
    n = safe_normalize(torch.linalg.cross(dx, dy, dim=-1))
    facing = (n * -p).sum(-1, keepdim=True)  # towards the camera at the origin of camera space
    return torch.where(facing < 0, -n, n)


def interior_mask(alpha: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B, V, H, W) bool: alpha > threshold at the pixel and its four neighbours (image border excluded)."""
    m = alpha > threshold
    inner = torch.zeros_like(m)
    inner[:, :, 1:-1, 1:-1] = (
        m[:, :, 1:-1, 1:-1] & m[:, :, :-2, 1:-1] & m[:, :, 2:, 1:-1] & m[:, :, 1:-1, :-2] & m[:, :, 1:-1, 2:]
    )
    return inner


def depth_normal_consistency(views: Views, detach_targets: bool = False) -> torch.Tensor:
    """Mean over views of the mean foreground cos(n_render, n_depth) → (B,); 0 for an empty view."""
    target = depth_normals(views.depth, views.cameras)
    if detach_targets:
        target = target.detach()
    mask = interior_mask(views.alpha).to(views.depth.dtype)
    cos = (views.normals * target).sum(-1)
    per_view = (cos * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1.0)
    return per_view.mean(1)


class NormalConsistencyReward(RenderReward):
    """Depth–normal consistency of the rendered views (see the module docstring)."""

    name = "normal_consistency"
    value_range = (-1.0, 1.0)

    def score_views(self, views: Views, prompts: Sequence[str], detach_targets: bool = False) -> torch.Tensor:
        return depth_normal_consistency(views, detach_targets)


# --------------------------------------------------------------------------- silhouette targets


class _Midpoint:
    """Stands in for ``numpy.random.Generator`` to draw the mid-range parameters of a shape class."""

    def uniform(self, low: float, high: float, size: int | None = None) -> Any:
        mid = 0.5 * (low + high)
        return mid if size is None else np.full(size, mid)


def prototype_grid(cls: int, resolution: int) -> torch.Tensor:
    """Exact SDF (R, R, R) of class ``cls``'s prototype: mid-range parameters, identity pose, no offset."""
    from r3d.mesh.shapes import CLASSES, Shape, _local_params, sdf_grid

    params = _local_params(CLASSES[cls], _Midpoint())
    shape = Shape(cls, {k: float(v) for k, v in params.items()})
    return torch.from_numpy(sdf_grid(shape, resolution))


def soft_iou(alpha: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per view soft IoU (B, V) of alpha maps against target maps in [0, 1], both (B, V, H, W)."""
    inter = (alpha * target).sum((2, 3))
    union = (alpha + target - alpha * target).sum((2, 3))
    return inter / union.clamp_min(1e-6)


class SilhouetteReward(RenderReward):
    """Soft IoU with the prompt class's prototype silhouette (see the module docstring).

    Extra arg: ``target_resolution`` of the prototype SDF grids whose marching-cubes meshes are
    ray-cast (exactly, with the same cameras) into the binary target silhouettes.
    """

    name = "silhouette"

    def __init__(self, target_resolution: int = 64, **rig: Any) -> None:
        super().__init__(**rig)
        self.target_resolution = target_resolution
        self._meshes: dict[int, Any] = {}
        self._cache: dict[tuple, torch.Tensor] = {}

    def _mesh(self, cls: int) -> Any:
        if cls not in self._meshes:
            from r3d.mesh.shapes import grid_to_mesh

            self._meshes[cls] = grid_to_mesh(prototype_grid(cls, self.target_resolution).numpy())
        return self._meshes[cls]

    @torch.no_grad()
    def targets(self, prompts: Sequence[str], cameras: Cameras) -> torch.Tensor:
        """Binary target silhouettes (B, V, H, W) of the prompts' classes seen by ``cameras``.

        One ray-casting call per class covers all its samples' cameras; rigs seen before are cached.
        """
        from r3d.mesh.render import render_views
        from r3d.mesh.shapes import parse_prompt

        v, size = cameras.views, cameras.size
        out: list[torch.Tensor | None] = [None] * len(prompts)
        keys, todo = [], {}
        for b, prompt in enumerate(prompts):
            cls = parse_prompt(prompt)
            angles = torch.cat([cameras.elevation_deg[b], cameras.azimuth_deg[b]]).double().cpu().numpy()
            key = (cls, np.round(angles, 6).tobytes(), size, cameras.fov_deg)
            keys.append(key)
            out[b] = self._cache.get(key)
            if out[b] is None:
                todo.setdefault(cls, []).append(b)
        for cls, samples in todo.items():
            cams = [c for b in samples for c in cameras.mesh_cameras(b)]
            views = render_views(self._mesh(cls), normalize=False, cameras=cams)
            masks = (
                torch.from_numpy(np.stack([view.mask for view in views])).float().reshape(-1, v, size, size)
            )
            for b, mask in zip(samples, masks, strict=True):
                out[b] = mask
                if len(self._cache) < 4096:
                    self._cache[keys[b]] = mask
        return torch.stack(out).to(cameras.c2w)

    def score_views(self, views: Views, prompts: Sequence[str], detach_targets: bool = False) -> torch.Tensor:
        target = self.targets(prompts, views.cameras).to(views.alpha)
        return soft_iou(views.alpha, target).mean(1)


# --------------------------------------------------------------------------- image reward models

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_LIGHT_CAM = (-0.35, 0.45, 0.82)  # key light in camera space, as r3d.mesh.render's shaded images


def shade(views: Views, base: float = 0.8) -> torch.Tensor:
    """Differentiable grey Lambert shading (ambient 0.3 + key light) of the normals, composited on white
    with alpha; or the views' own colours when present → (B·V, 3, H, W) in [0, 1]."""
    if views.rgb is not None:
        rgb = views.rgb
    else:
        light = torch.tensor(_LIGHT_CAM, dtype=views.normals.dtype, device=views.normals.device)
        lambert = (views.normals * (light / light.norm())).sum(-1).clamp(0.0, 1.0)
        grey = base * (0.3 + 0.7 * lambert)
        rgb = (grey * views.alpha + (1.0 - views.alpha))[..., None].expand(*grey.shape, 3)
    return rgb.flatten(0, 1).permute(0, 3, 1, 2)


class AestheticMLP(torch.nn.Module):
    """The LAION improved-aesthetic-predictor head on L2-normalised CLIP ViT-L/14 image embeddings (768-d).

    Layer layout matches the published ``sac+logos+ava1-l14-linearMSE.pth`` state dict (dropouts are
    identity at inference; they keep the indices of the Linear layers: 0, 2, 4, 6, 7).
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(768, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return self.layers(embed).squeeze(-1)


class AestheticScorer(torch.nn.Module):
    """CLIP ViT-L/14 (transformers) + :class:`AestheticMLP`; images (N, 3, H, W) in [0, 1] → (N,).

    Differentiable preprocessing: bicubic resize to 224², CLIP mean/std normalisation.
    """

    def __init__(self, clip: str, head: str | Path) -> None:
        super().__init__()
        from transformers import CLIPModel

        head = Path(head)
        if not head.is_file():
            raise R3DError(
                f"aesthetic head weights not found at {head} (the LAION improved-aesthetic-predictor "
                "'sac+logos+ava1-l14-linearMSE.pth'); pass image_model options head=PATH"
            )
        try:
            self.clip = CLIPModel.from_pretrained(clip, local_files_only=True)
        except OSError as exc:
            raise R3DError(
                f"CLIP model {clip!r} is not available locally ({exc}); download it first "
                "(e.g. huggingface-cli download openai/clip-vit-large-patch14)"
            ) from None
        self.mlp = AestheticMLP()
        state = torch.load(head, map_location="cpu", weights_only=True)
        self.mlp.load_state_dict(state)
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        mean = torch.tensor(_CLIP_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(_CLIP_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        x = F.interpolate(images, size=(224, 224), mode="bicubic", align_corners=False)
        embed = self.clip.get_image_features(pixel_values=(x - mean) / std)
        if not isinstance(embed, torch.Tensor):  # transformers ≥ 5 returns a model output
            embed = embed.pooler_output
        embed = embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)
        return self.mlp(embed)


class ImageModelReward(RenderReward):
    """An image reward model applied to shaded renders, averaged over views (adapter slot).

    Args:
        model: ``"aesthetic"`` (LAION predictor; needs ``head`` and a local CLIP ``clip``) or a
            ``package.module:callable`` returning a scorer ``(images, prompts) -> (N,)`` when called with
            ``**model_options``.
        head, clip: weights of the aesthetic predictor.
        value_range: the scorer's range (for reports).
    """

    name = "image_model"

    def __init__(
        self,
        model: str = "aesthetic",
        head: str | None = None,
        clip: str = "openai/clip-vit-large-patch14",
        model_options: dict[str, Any] | None = None,
        value_range: tuple[float, float] = (0.0, 10.0),
        **rig: Any,
    ) -> None:
        super().__init__(**rig)
        self.value_range = tuple(value_range)
        self.scorer = self._load(model, head, clip, model_options or {})

    @staticmethod
    def _load(model: str, head: str | None, clip: str, options: dict[str, Any]) -> Callable:
        if model == "aesthetic":
            if head is None:
                raise R3DError(
                    "image_model reward 'aesthetic' needs head=PATH to sac+logos+ava1-l14-linearMSE.pth"
                )
            return AestheticScorer(clip, head)
        if ":" not in model:
            raise R3DError(
                f"image_model: unknown model {model!r}; use 'aesthetic' or 'package.module:factory'"
            )
        from r3d.core.registry import resolve

        return resolve(model, {}, "image reward model")(**options)

    def score_views(self, views: Views, prompts: Sequence[str], detach_targets: bool = False) -> torch.Tensor:
        images = shade(views)
        per_image = [p for p in prompts for _ in range(views.cameras.views)]
        scores = torch.as_tensor(self.scorer(images, per_image))
        return scores.reshape(len(prompts), views.cameras.views).mean(1)
