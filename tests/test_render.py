"""CPU ray-cast rendering: geometry of the camera, depth, normals, image conventions, contact sheets."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import trimesh
from PIL import Image

from r3d.mesh.render import (
    camera_points,
    contact_sheet,
    normal_image,
    normalize_unit_sphere,
    orbit_cameras,
    render_views,
    shaded_image,
)


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=4)


def test_sphere_silhouette_area_matches_projection(sphere):
    """The hit mask of a unit sphere covers the analytic projected disc: π·(tan(asin(1/d)) / tan(fov/2))² / 4."""
    fov, size = 40.0, 128
    view = render_views(sphere, n_views=1, size=size, fov_deg=fov)[0]
    distance = 1.02 / math.sin(math.radians(fov / 2))
    radius = math.tan(math.asin(1 / distance)) / math.tan(math.radians(fov / 2))
    assert view.mask.mean() == pytest.approx(math.pi * radius**2 / 4, abs=0.01)


def test_depth_and_normals_of_sphere(sphere):
    """Centre pixel: depth ≈ d − 1, camera normal ≈ +z; normals are unit on hits, zero off; world = R·cam."""
    view = render_views(sphere, n_views=1, size=64, elevation_deg=0.0)[0]
    distance = float(np.linalg.norm(view.camera.position))
    centre = (32, 32)
    assert view.depth[centre] == pytest.approx(distance - 1.0, abs=0.01)
    np.testing.assert_allclose(view.normals_cam[centre], [0, 0, 1], atol=0.05)
    norms = np.linalg.norm(view.normals_cam, axis=-1)
    np.testing.assert_allclose(norms[view.mask], 1.0, atol=1e-5)
    assert not norms[~view.mask].any() and not view.depth[~view.mask].any()
    np.testing.assert_allclose(view.normals_cam @ view.camera.rotation.T, view.normals_world, atol=1e-5)


def test_back_projected_depth_lies_on_hit_faces(sphere):
    """Points rebuilt from depth lie on their hit triangle's plane to float64 precision (not embree's float32)."""
    mesh = normalize_unit_sphere(sphere)
    view = render_views(sphere, n_views=1, size=48)[0]
    cam = view.camera
    world = camera_points(view)[view.mask] @ cam.rotation.T + cam.position
    faces = mesh.faces[view.face_index[view.mask]]
    v0 = mesh.vertices[faces[:, 0]]
    normal = mesh.face_normals[view.face_index[view.mask]]
    assert np.abs(np.einsum("ij,ij->i", world - v0, normal)).max() < 1e-9


def test_image_axes_x_right_y_up():
    """From azimuth 0 a bump at world +X appears on the image's right, one at +Y in the top rows."""
    body = trimesh.creation.icosphere(3)
    for offset, check in [
        ([1.5, 0, 0], lambda cols, rows: cols.mean() > 0.6),
        ([0, 1.5, 0], lambda cols, rows: rows.mean() < 0.4),
    ]:
        bump = trimesh.creation.icosphere(2, radius=0.4)
        bump.apply_translation(offset)
        view = render_views(trimesh.util.concatenate([body, bump]), n_views=1, size=64, elevation_deg=0)[0]
        bump_pixels = view.face_index >= len(body.faces)
        rows, cols = np.nonzero(bump_pixels)
        assert bump_pixels.any() and check(cols / 64, rows / 64)


def test_orbit_cameras_spacing_and_elevation():
    """Azimuths are offset + 360°·k/n; every camera sits at the requested elevation and looks at the origin."""
    cams = orbit_cameras(n_views=4, elevation_deg=30.0, azimuth_offset_deg=10.0)
    assert [c.azimuth_deg for c in cams] == [10.0, 100.0, 190.0, 280.0]
    for cam in cams:
        p = cam.position
        assert math.degrees(math.asin(p[1] / np.linalg.norm(p))) == pytest.approx(30.0)
        np.testing.assert_allclose(
            cam.rotation[:, 2], p / np.linalg.norm(p), atol=1e-12
        )  # camera +z = backward
        np.testing.assert_allclose(cam.rotation.T @ cam.rotation, np.eye(3), atol=1e-12)


def test_frontface_tracks_winding_but_normals_face_camera(sphere):
    """Inverting the winding flips ``frontface`` everywhere but the rendered normals still face the viewer."""
    inverted = sphere.copy()
    inverted.invert()
    out = render_views(sphere, n_views=1, size=32)[0]
    inv = render_views(inverted, n_views=1, size=32)[0]
    assert out.frontface[out.mask].all() and not inv.frontface[inv.mask].any()
    np.testing.assert_allclose(out.normals_cam, inv.normals_cam, atol=1e-6)
    assert (out.normals_cam[out.mask][:, 2] > 0).all()


def test_normal_and_shaded_images(sphere):
    """Normal map: white background, viewer-facing surface ≈ (128,128,255); shading differs front vs back."""
    view = render_views(sphere, n_views=1, size=64, elevation_deg=0)[0]
    rgb = normal_image(view)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert (rgb[~view.mask] == 255).all()
    np.testing.assert_allclose(rgb[32, 32], [128, 128, 255], atol=8)
    inverted = sphere.copy()
    inverted.invert()
    back = shaded_image(render_views(inverted, n_views=1, size=64, elevation_deg=0)[0])
    assert not np.array_equal(shaded_image(view)[view.mask], back[view.mask])


def test_contact_sheet_grid_and_empty_tile(tmp_path, sphere):
    """3 meshes at size 64 → a 2×2 grid of 64×(64+label) tiles; the None tile is grey, not blank."""
    path = contact_sheet(
        [sphere, None, trimesh.creation.box()], ["s", "none", "box"], tmp_path / "sheet.png", size=64
    )
    image = np.asarray(Image.open(path))
    label_h = max(12, 64 // 8)
    assert image.shape == (2 * (64 + label_h), 2 * 64, 3)
    empty_tile = image[:64, 64:128]
    assert (empty_tile == 232).all(axis=-1).mean() > 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]
    strip = contact_sheet([sphere], None, tmp_path / "strip.png", size=32, n_views=4, mode="normal")
    assert Image.open(strip).size == (4 * 32, 32 + 12)


def test_render_speed_four_views_of_20k_faces():
    """4 views at 128² of a 20k-face mesh take < 1 s even on a busy 2-core box (the numpy fallback takes far longer)."""
    mesh = trimesh.creation.icosphere(5)
    render_views(mesh, size=32)
    start = time.perf_counter()
    render_views(mesh, n_views=4, size=128)
    assert time.perf_counter() - start < 1.0
