"""Differentiable rendering (SDF volume rendering, Gaussian splatting) and the 2D rewards on it."""

import math

import numpy as np
import pytest
import torch

from r3d.mesh.render import orbit_cameras
from r3d.mesh.shapes import CLASSES, grid_coords, grid_to_mesh
from r3d.models.tiny_shapes import TinyShapesPolicy
from r3d.render.cameras import orbit, orbit_views
from r3d.render.field import render_field
from r3d.render.splat import GaussianCloud, Gaussians, render_gaussians
from r3d.render.views import Views, render_meshes
from r3d.rewards.render2d import (
    NormalConsistencyReward,
    SilhouetteReward,
    decode_field,
    depth_normal_consistency,
    depth_normals,
    prototype_grid,
)


def camera(elevation: float, azimuth: float, distance: float, size: int):
    """One float64 camera (batch 1, 1 view) with a 40° field of view."""
    t = torch.tensor([[elevation]], dtype=torch.float64), torch.tensor([[azimuth]], dtype=torch.float64)
    return orbit(*t, distance, 40.0, size)


def ellipsoid(res: int, dtype=torch.float32) -> torch.Tensor:
    c = torch.tensor(grid_coords(res), dtype=dtype)
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    return (torch.sqrt((x - 0.2) ** 2 + y**2 + (1.5 * z) ** 2) - 0.6)[None]


def test_cameras_are_those_of_the_mesh_ray_caster():
    """orbit_views reproduces r3d.mesh.render.orbit_cameras (positions, rotations), so all renderers
    see the same pixels."""
    ours = orbit_views(1, 4, 20.0, 30.0, 40.0, 32, dtype=torch.float64).mesh_cameras(0)
    ref = orbit_cameras(4, 32, 20.0, 30.0, 40.0)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a.position, b.position, atol=1e-9)
        np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-9)


def test_field_render_agrees_with_ray_casting_its_mesh():
    """Volume rendering an SDF grid and ray casting its marching-cubes mesh give the same silhouette,
    z-depth and normals (the two reward paths see the same geometry)."""
    grid = ellipsoid(32)
    cams = orbit_views(1, 2, 20.0, 10.0, 40.0, 32)
    soft = render_field(grid, cams)
    hard = render_meshes([grid_to_mesh(grid[0].numpy())], cams)
    a, m = soft.alpha[0] > 0.5, hard.alpha[0] > 0.5
    assert float((a & m).sum() / (a | m).sum()) > 0.97
    inner = (soft.alpha[0] > 0.99) & m
    assert float((soft.depth[0] - hard.depth[0])[inner].abs().mean()) < 0.01
    assert float((soft.normals[0] * hard.normals[0]).sum(-1)[inner].mean()) > 0.99


def test_field_render_gradients_match_finite_differences():
    """gradcheck (float64) of alpha, depth and normals with respect to every grid value."""
    noise = 0.05 * torch.randn(1, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = (ellipsoid(4, torch.float64) + noise).requires_grad_()
    cams = camera(15.0, 25.0, 3.0, 5)

    def fn(g):
        v = render_field(g, cams, samples=8, tau=0.1)
        return v.alpha, v.depth, v.normals

    assert torch.autograd.gradcheck(fn, (grid,), eps=1e-6, atol=1e-5)


class CosinePolicy:
    """The decode of tiny-shapes (standardised cosine coefficients → SDF), without a network."""

    def __init__(self, k: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.latent_std = 0.05 + 0.05 * torch.rand(k, k, k, generator=g, dtype=torch.float64)
        self.latent_mean = torch.zeros(k, k, k, dtype=torch.float64)
        self.latent_mean[0, 0, 0] = 0.2  # a blob: negative inside near the centre
        self.latent_mean[1, 1, 1] = 0.45

    decode_field = TinyShapesPolicy.decode_field  # the render rewards' hook, tiny-shapes' cosine series


@pytest.mark.parametrize("reward_cls", [SilhouetteReward, NormalConsistencyReward])
def test_reward_gradient_reaching_the_latents_matches_finite_differences(reward_cls):
    """d/dε R(decode(z + ε·u)) by autograd equals the central finite difference (float64): the gradient
    that Nabla feeds to the policy is the true gradient of the rendered 2D reward."""
    policy = CosinePolicy()
    extra = {"target_resolution": 24} if reward_cls is SilhouetteReward else {}
    reward = reward_cls(n_views=2, size=12, samples=16, resolution=12, tau=0.08, **extra)
    prompts = ["a cube", "a torus"]
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64) * 0.5
    u = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    value = reward.score_latents(policy, zz, prompts)
    (grad,) = torch.autograd.grad(value.sum(), zz)
    analytic = (grad * u).flatten(1).sum(1)
    h = 1e-5
    plus = reward.score_latents(policy, z + h * u, prompts)
    minus = reward.score_latents(policy, z - h * u, prompts)
    numeric = (plus - minus) / (2 * h)
    assert float(analytic.abs().max()) > 1e-4  # the check is not vacuous
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-7)


def test_decode_field_uses_the_tiny_shapes_cosine_series():
    """Without a decode_field hook, latents decode as coeffs_to_grid(z·std + mean) (tiny-shapes' to_grid)."""
    from r3d.models.tiny_shapes import coeffs_to_grid

    policy = CosinePolicy()
    z = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    expected = coeffs_to_grid(z * policy.latent_std + policy.latent_mean, 10)
    torch.testing.assert_close(decode_field(policy, z, 10), expected)


def test_depth_normals_recover_a_tilted_plane():
    """Normals from the depth of a plane n·p = c (camera space) equal n, oriented to the camera."""
    cams = orbit_views(1, 1, 0.0, 0.0, 40.0, 16, dtype=torch.float64)
    n = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    n = n / n.norm()
    rays = cams.rays_cam()
    t = -3.0 / (rays @ n)  # ray length to the plane n·p = −3
    depth = (t * -rays[..., 2])[None, None]
    est = depth_normals(depth, cams)[0, 0, 1:-1, 1:-1]
    torch.testing.assert_close(est, n.expand_as(est), atol=1e-9, rtol=0)


def test_normal_consistency_is_high_for_consistent_views_and_drops_for_wrong_normals():
    """DNC ≈ 1 when rendered normals agree with the rendered depth; perturbed normals lower it; and
    detach_targets stops the gradient through the depth branch."""
    cams = orbit_views(1, 2, 20.0, 0.0, 40.0, 24)
    views = render_field(ellipsoid(24), cams)
    assert float(depth_normal_consistency(views)) > 0.97
    noisy = views.normals + 0.8 * torch.randn(views.normals.shape, generator=torch.Generator().manual_seed(0))
    noisy = noisy / noisy.norm(dim=-1, keepdim=True)
    assert float(depth_normal_consistency(Views(views.alpha, views.depth, noisy, cams))) < 0.8
    depth = views.depth.clone().requires_grad_(True)
    normals = views.normals.clone().requires_grad_(True)
    depth_normal_consistency(Views(views.alpha, depth, normals, cams), detach_targets=True).sum().backward()
    assert depth.grad is None and float(normals.grad.abs().max()) > 0


def test_silhouette_reward_prefers_the_prompted_class():
    """A class prototype's mesh matches its own target silhouette (IoU ≈ 1) better than another class's."""
    reward = SilhouetteReward(n_views=3, size=24)
    cube = grid_to_mesh(prototype_grid(CLASSES.index("cube"), 32).numpy())
    scores = reward([cube, cube], ["a cube", "a torus"])["silhouette"]
    assert float(scores[0]) > 0.9 and float(scores[1]) < float(scores[0]) - 0.2


def test_render_meshes_renders_none_as_empty():
    """A failed generation (None) renders empty views instead of raising."""
    views = render_meshes([None], orbit_views(1, 2, size=8))
    assert float(views.alpha.abs().sum()) == 0.0


# ----------------------------------------------------------------------------- Gaussian splatting


def one_gaussian(scale, opacity=0.8, dtype=torch.float64) -> Gaussians:
    return Gaussians(
        means=torch.zeros(1, 1, 3, dtype=dtype),
        scales=torch.tensor([[scale]], dtype=dtype),
        rotations=torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=dtype),
        opacities=torch.tensor([[opacity]], dtype=dtype),
        colors=torch.tensor([[[1.0, 0.0, 0.0]]], dtype=dtype),
    )


def test_splat_projects_a_gaussian_with_the_ewa_footprint():
    """An isotropic Gaussian at the origin seen from distance d: peak alpha = opacity at the centre pixel,
    footprint variance (f·s/d)² + 0.3 px², z-depth d, red on white."""
    d, s, size = 3.0, 0.1, 33
    cams = camera(0.0, 0.0, d, size)
    v = render_gaussians(one_gaussian([s, s, s]), cams, backend="torch")
    c = size // 2
    assert abs(float(v.alpha[0, 0, c, c]) - 0.8) < 1e-9
    var = (cams.focal * s / d) ** 2 + 0.3
    for k in (1, 3):
        expected = 0.8 * math.exp(-(k**2) / (2 * var))
        assert abs(float(v.alpha[0, 0, c, c + k]) - expected) < 1e-3 * expected + 1e-9
    assert abs(float(v.depth[0, 0, c, c]) - d) < 1e-9
    torch.testing.assert_close(v.rgb[0, 0, c, c], torch.tensor([1.0, 0.2, 0.2], dtype=torch.float64))


def test_splat_normal_is_the_shortest_axis_facing_the_camera():
    """A flat Gaussian (disc in the XY plane) seen from +Z renders normal (0, 0, 1) in camera space."""
    cams = camera(0.0, 0.0, 3.0, 9)
    v = render_gaussians(one_gaussian([0.3, 0.3, 0.01]), cams, backend="torch")
    torch.testing.assert_close(v.normals[0, 0, 4, 4], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_splat_gradients_match_finite_differences():
    """gradcheck (float64) of the torch splatter w.r.t. means, scales, opacities and colours."""
    g = torch.Generator().manual_seed(0)
    means = (0.3 * torch.randn(1, 3, 3, generator=g, dtype=torch.float64)).requires_grad_()
    scales = (0.2 + 0.1 * torch.rand(1, 3, 3, generator=g, dtype=torch.float64)).requires_grad_()
    rot = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    opac = (0.3 + 0.4 * torch.rand(1, 3, generator=g, dtype=torch.float64)).requires_grad_()
    cols = torch.rand(1, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    cams = camera(10.0, 30.0, 3.0, 6)

    def fn(m, s, o, c):
        v = render_gaussians(Gaussians(m, s, rot, o, c), cams, backend="torch")
        return v.alpha, v.rgb, v.depth, v.normals

    assert torch.autograd.gradcheck(fn, (means, scales, opac, cols), eps=1e-6, atol=1e-5)


def test_gaussian_cloud_saves_a_3dgs_ply(tmp_path):
    """The PLY has the 3DGS vertex layout (17 float properties) and N vertices."""
    cloud = one_gaussian([0.1, 0.2, 0.3]).cloud(0)
    path = cloud.save(tmp_path / "g.ply")
    head = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "element vertex 1" in head and head.count("property float") == 17
    assert path.stat().st_size == len(head) + len("end_header\n") + 17 * 4
    assert isinstance(cloud, GaussianCloud)


def make_brightness(**_):
    """An image 'reward model' for the adapter slot: mean brightness of (N, 3, H, W) images."""
    return lambda images, prompts: images.mean((1, 2, 3))


def test_image_model_slot_scores_shaded_renders_differentiably():
    """image_model with a module:callable scorer: per-sample mean over views of the scorer on shaded
    renders (white background: an empty render scores 1), with gradients reaching the latents; the
    aesthetic model without its weights is a one-line R3DError; the predictor head has the published
    state-dict layout."""
    from r3d.core.errors import R3DError
    from r3d.rewards.render2d import AestheticMLP, ImageModelReward

    reward = ImageModelReward(model="test_render_diff:make_brightness", n_views=2, size=10, samples=12)
    assert float(reward([None], ["a cube"])["image_model"][0]) == pytest.approx(1.0)
    z = (torch.randn(1, 4, 4, 4, dtype=torch.float64) * 0.3).requires_grad_(True)
    value = reward.score_latents(CosinePolicy(), z, ["a cube"])
    value.sum().backward()
    assert float(value.detach()) < 1.0 and float(z.grad.abs().sum()) > 0
    with pytest.raises(R3DError, match="head"):
        ImageModelReward(model="aesthetic")
    keys = {k for k in AestheticMLP().state_dict() if k.endswith("weight")}
    assert keys == {f"layers.{i}.weight" for i in (0, 2, 4, 6, 7)}
