"""Geometry measures, the geometry and normal rewards, and the reward registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from conftest import shared_meshes_dir

from r3d.commands.score import available_rewards, build_reward, select_rewards
from r3d.core.errors import R3DError
from r3d.core.rewards import Reward
from r3d.mesh.io import load_mesh
from r3d.mesh.measures import SCORE_NAMES, measure
from r3d.mesh.render import render_views
from r3d.rewards.geometry import DEFAULT_WEIGHTS, GeometryReward
from r3d.rewards.normal import NormalReward, normals_from_depth


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=3)


def test_closed_sphere_is_clean(sphere):
    """A closed icosphere scores 1 on every sub-score."""
    m = measure(sphere)
    assert m.scores() == dict.fromkeys(SCORE_NAMES, 1.0)
    assert (m.n_components, m.n_boundary_edges, m.n_nonmanifold_edges) == (1, 0, 0)


def test_floater_lowers_components_by_its_area(sphere):
    """Sphere + small far sphere: components = big area / total area; still watertight."""
    small = trimesh.creation.icosphere(2, radius=0.2)
    small.apply_translation([3, 0, 0])
    m = measure(trimesh.util.concatenate([sphere, small]))
    assert m.components == pytest.approx(sphere.area / (sphere.area + small.area))
    assert m.components < 0.97 and m.watertight == 1.0 and m.n_components == 2


def test_hole_lowers_watertight_not_manifold(sphere):
    """Deleting faces opens boundary edges: watertight < 1 (binary mode: 0), manifold stays 1."""
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[5:], process=False)
    m = measure(holed)
    assert m.watertight < 1.0 and m.n_boundary_edges > 0 and m.manifold == 1.0
    scores = GeometryReward(binary_watertight=True)([holed])
    assert scores["watertight"].item() == 0.0


def test_unwelded_seams_are_not_holes(sphere):
    """A mesh whose faces each own their vertices (UV-seam style) is welded before measuring."""
    soup = trimesh.Trimesh(
        sphere.triangles.reshape(-1, 3), np.arange(3 * len(sphere.faces)).reshape(-1, 3), process=False
    )
    assert measure(soup).watertight == 1.0


def test_non_manifold_edge_and_flipped_winding(sphere):
    """A fin on an edge (3 faces) and a face with reversed winding both count as non-manifold edges."""
    fin_vertex = len(sphere.vertices)
    a, b = sphere.faces[0, :2]
    fin = trimesh.Trimesh(
        np.vstack([sphere.vertices, [[2.0, 2.0, 2.0]]]), np.vstack([sphere.faces, [[a, b, fin_vertex]]])
    )
    assert measure(fin).manifold < 1.0 and measure(fin).n_nonmanifold_edges >= 1
    flipped_faces = sphere.faces.copy()
    flipped_faces[0] = flipped_faces[0, ::-1]
    m = measure(trimesh.Trimesh(sphere.vertices, flipped_faces, process=False))
    assert m.n_nonmanifold_edges == 3 and m.watertight == 1.0
    assert m.smoothness == 1.0  # the flipped normal is compensated in the dihedral angle


def test_degenerate_counts_zero_area_faces(sphere):
    """Adding k zero-area faces to F faces gives degenerate = 1 − k/(F + k)."""
    v = len(sphere.vertices)
    extra = np.array([[0, 1, 1], [2, 2, 2], [3, 4, 3]])
    assert v > 4
    m = measure(trimesh.Trimesh(sphere.vertices, np.vstack([sphere.faces, extra]), process=False))
    assert m.degenerate == pytest.approx(1 - 3 / (len(sphere.faces) + 3))


def test_smoothness_of_box_and_noise(sphere):
    """A triangulated box: only the 6 diagonals (length √2) are flat, so smoothness = 6√2 / (12 + 6√2);
    vertex noise lowers a sphere's smoothness."""
    assert measure(trimesh.creation.box()).smoothness == pytest.approx(
        6 * math.sqrt(2) / (12 + 6 * math.sqrt(2))
    )
    rng = np.random.default_rng(0)
    noisy = trimesh.Trimesh(sphere.vertices + rng.normal(0, 0.05, sphere.vertices.shape), sphere.faces)
    assert measure(noisy).smoothness < 0.9


def test_geometry_reward_contract(sphere):
    """Tensors (B,) float32 in [0,1]; None and broken meshes score 0; headline is the weighted mean."""
    broken = trimesh.Trimesh(
        np.array([[0, 0, 0], [1, 0, np.nan], [0, 1, 0]]), np.array([[0, 1, 2]]), process=False
    )
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[5:], process=False)
    reward = GeometryReward()
    assert isinstance(reward, Reward)
    out = reward([sphere, None, broken, holed], ["a"] * 4)
    assert set(out) == {"geometry", *SCORE_NAMES}
    for value in out.values():
        assert value.dtype == torch.float32 and value.shape == (4,)
        assert ((value >= 0) & (value <= 1)).all()
    assert out["geometry"][:3].tolist() == [1.0, 0.0, 0.0]
    expected = sum(DEFAULT_WEIGHTS[k] * out[k][3] for k in SCORE_NAMES) / sum(DEFAULT_WEIGHTS.values())
    assert out["geometry"][3].item() == pytest.approx(expected.item(), abs=1e-6)
    only = GeometryReward(weights={"watertight": 1.0})([holed])
    assert only["geometry"].item() == pytest.approx(only["watertight"].item())
    with pytest.raises(R3DError, match="unknown weight"):
        GeometryReward(weights={"watertite": 1.0})


def test_depth_normals_of_plane_are_exact():
    """A flat quad facing the camera: normals from depth equal the rendered normal (cos = 1)."""
    quad = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    view = render_views(quad, n_views=1, size=32, elevation_deg=10.0)[0]
    est, valid = normals_from_depth(view)
    assert valid.sum() > 0.5 * view.mask.sum()
    cos = np.einsum("ijk,ijk->ij", est, view.normals_cam)[valid]
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)


def test_normal_reward_prefers_clean_surface():
    """Vertex noise on a sphere lowers the normal-consistency score; a clean sphere scores ≈ 1."""
    clean = trimesh.creation.icosphere(4)
    rng = np.random.default_rng(0)
    noisy = trimesh.Trimesh(clean.vertices + rng.normal(0, 0.01, clean.vertices.shape), clean.faces)
    reward = NormalReward(n_views=2, size=96)
    assert isinstance(reward, Reward)
    scores = reward([clean, noisy, None], [""] * 3)["normal"]
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    assert scores[0] > 0.99 and scores[1] < scores[0] - 0.005 and scores[2] == 0.0


def test_registry():
    """Names resolve lazily; unknown names/options are R3DErrors with a suggestion; semantic needs a prompt."""
    assert {"geometry", "normal", "semantic", "uni3d"} <= set(available_rewards())
    assert available_rewards() == sorted(available_rewards())
    assert isinstance(build_reward("normal", size=32), NormalReward)
    with pytest.raises(R3DError, match="did you mean 'geometry'"):
        build_reward("geometri")
    with pytest.raises(R3DError, match="did you mean 'n_views'"):
        build_reward("normal", n_view=2)
    assert select_rewards("geometry, normal,semantic,geometry", has_prompt=False) == (
        ["geometry", "normal"],
        ["semantic"],
    )
    assert select_rewards(["semantic"], has_prompt=True) == (["semantic"], [])
    with pytest.raises(R3DError, match="need --prompt"):
        select_rewards("semantic", has_prompt=False)


@pytest.mark.skipif(shared_meshes_dir() is None, reason="shared real meshes not present")
def test_real_meshes_known_properties():
    """On the real test meshes: closed models (cow, spot after welding UV seams) are watertight, the
    teapot's separate lid/parts lower components, the open bunny is not closed, all scores in [0, 1]."""
    folder = shared_meshes_dir()
    meshes = {p.stem: load_mesh(p) for p in sorted(folder.glob("*.obj"))}
    results = {name: measure(mesh) for name, mesh in meshes.items()}
    for m in results.values():
        assert all(0.0 <= v <= 1.0 for v in m.scores().values())
    assert results["cow"].watertight == 1.0 and results["spot"].watertight == 1.0
    assert results["teapot"].components < 0.9
    assert results["stanford-bunny"].n_boundary_edges > 0
