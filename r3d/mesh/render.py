"""CPU ray-cast rendering of meshes (no OpenGL): hit masks, depth and normal maps, contact sheets.

Conventions
-----------
* World space is Y-up (glTF). Meshes are first normalised to the unit sphere (bounding-box centre at
  the origin, farthest vertex at radius 1), so depths and scores do not depend on the mesh's units.
* Cameras orbit the origin: elevation above the XZ plane, azimuth about +Y measured from +Z (azimuth 0
  looks at the glTF front, from +Z towards −Z). Perspective pinhole, square images, vertical field of
  view ``fov_deg``; by default the camera distance makes the unit sphere just fill the frame.
* Camera space is OpenGL-like: x right, y up, the camera looks down −z. ``depth`` is the z-depth
  (distance along the viewing axis, > 0) in normalised mesh units; background pixels hold 0.
* Normals are the geometric (flat, per-face) normals, flipped where needed so that every visible
  normal faces the camera (surfaces are rendered two-sided); ``frontface`` records which pixels saw a
  face's front side (per its winding).
* Hit distances are recomputed in float64 from the hit triangle's plane, so the points back-projected
  from ``depth`` lie exactly on the rendered faces (embree itself works in float32).
* First hits are embree's, with exactly the float32 inputs trimesh's embree intersector would use, but
  a compiled float64 pre-pass (:mod:`r3d.mesh._raycast_jit`) settles every ray whose answer float32
  rounding cannot change, and embree casts only the rest (a few percent, near edges and silhouettes);
  the maps equal casting every ray.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write
from r3d.mesh import _embree
from r3d.mesh.io import check_mesh

try:  # embree is ~100x faster than trimesh's pure-numpy intersector
    from embreex import rtcore_scene as _embree_scene
    from embreex.mesh_construction import TriangleMesh as _EmbreeMesh
    from trimesh.ray.ray_pyembree import RayMeshIntersector as _Intersector
except ImportError:  # pragma: no cover - non-x86 machines without embreex
    from trimesh.ray.ray_triangle import RayMeshIntersector as _Intersector

    _embree_scene = None

BACKGROUND = 255
_FRONT_RGB = np.array([0.78, 0.80, 0.86])  # shaded front faces: light blue-grey
_BACK_RGB = np.array([0.90, 0.55, 0.45])  # shaded back faces (inside of open / inverted meshes): salmon
_LIGHT_CAM = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])  # key light, camera space


@dataclass(frozen=True)
class Camera:
    """A square pinhole camera. ``rotation`` is camera-to-world: its columns are the camera's x (right),
    y (up) and z (backward) axes in world coordinates; ``position`` is its centre in world space."""

    position: np.ndarray
    rotation: np.ndarray
    fov_deg: float
    size: int
    elevation_deg: float
    azimuth_deg: float


@dataclass
class RenderedView:
    """One rendered view, all maps (H, W) = (size, size), row 0 at the top of the image.

    mask: bool, a ray hit the mesh. depth: float64 z-depth (exact: back-projected points lie on the
    hit faces), 0 where no hit. normals_world /
    normals_cam: float32 (H, W, 3) unit normals facing the camera, 0 where no hit. face_index: int64
    index of the hit face, −1 where no hit. frontface: bool, the hit face's winding normal faced the
    camera.
    """

    camera: Camera
    mask: np.ndarray
    depth: np.ndarray
    normals_world: np.ndarray
    normals_cam: np.ndarray
    face_index: np.ndarray
    frontface: np.ndarray


def normalize_unit_sphere(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Copy of ``mesh`` (geometry only) with its bounding-box centre at 0 and farthest vertex at radius 1."""
    check_mesh(mesh)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2.0
    vertices = vertices - centre
    radius = float(np.linalg.norm(vertices, axis=1).max())
    if radius > 0:
        vertices = vertices / radius
    return trimesh.Trimesh(vertices, np.asarray(mesh.faces), process=False)


def _look_at(position: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation of a camera at ``position`` looking at the origin, world +Y up."""
    forward = -position / np.linalg.norm(position)
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight up/down: any horizontal right vector
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    return np.stack([right, true_up, -forward], axis=1)


def orbit_cameras(
    n_views: int = 4,
    size: int = 128,
    elevation_deg: float = 20.0,
    azimuth_offset_deg: float = 0.0,
    fov_deg: float = 40.0,
    distance: float | None = None,
) -> list[Camera]:
    """``n_views`` cameras evenly spaced in azimuth (offset + 360°·k/n) at one elevation, looking at 0.

    ``distance`` defaults to 1.02 / sin(fov/2): the unit sphere then just fits the frame.
    """
    if n_views < 1 or size < 2:
        raise ValueError(f"need n_views >= 1 and size >= 2, got {n_views}, {size}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    if distance is None:
        distance = 1.02 / math.sin(math.radians(fov_deg) / 2.0)
    cameras = []
    elev = math.radians(elevation_deg)
    for k in range(n_views):
        azimuth = azimuth_offset_deg + 360.0 * k / n_views
        az = math.radians(azimuth)
        position = distance * np.array(
            [math.cos(elev) * math.sin(az), math.sin(elev), math.cos(elev) * math.cos(az)]
        )
        cameras.append(Camera(position, _look_at(position), fov_deg, size, elevation_deg, azimuth))
    return cameras


@functools.lru_cache(maxsize=16)
def _camera_rays(size: int, fov_deg: float) -> np.ndarray:
    """(size·size, 3) unit ray directions in camera space through pixel centres, row-major, row 0 on top."""
    half = math.tan(math.radians(fov_deg) / 2.0)
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    x = np.broadcast_to(coords[None, :] * half, (size, size))
    y = np.broadcast_to(-coords[:, None] * half, (size, size))
    rays = np.stack([x, y, -np.ones((size, size))], axis=-1).reshape(-1, 3)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    rays.setflags(write=False)
    return rays


@functools.lru_cache(maxsize=16)
def _ray_directions(size: int, fov_deg: float, rotations: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World ray directions (n·size², 3) float64 of the cameras with these (n, 3, 3) ``rotations``, in
    render order; the same as trimesh hands them to embree (float32, unitised in float32); and these
    as float64."""
    rays_cam = _camera_rays(size, fov_deg)
    turn = np.frombuffer(rotations, dtype=np.float64).reshape(-1, 3, 3)
    directions = np.concatenate([rays_cam @ r.T for r in turn])
    unit = trimesh.util.unitize(np.array(directions, dtype=np.float32)).astype(np.float32)
    unit64 = unit.astype(np.float64)
    for array in (directions, unit, unit64):
        array.setflags(write=False)
    return directions, unit, unit64


_UNDECIDED = -2  # r3d.mesh._raycast_jit.UNDECIDED


@functools.cache
def _jit() -> ModuleType:
    """The compiled kernels, :mod:`r3d.mesh._raycast_jit` (imported on first use: numba loads in ~0.7 s)."""
    from r3d.mesh import _raycast_jit

    return _raycast_jit


def _trimesh_scale(vertices: np.ndarray, faces: np.ndarray) -> float:
    """``Trimesh.scale`` (diagonal of the referenced vertices' box, 1.0 if none or ~0) without its caches."""
    referenced = np.zeros(len(vertices), dtype=bool)
    referenced[faces] = True
    used = vertices[referenced]
    if len(used) == 0:
        return 1.0
    extents = np.ptp(np.array([used.min(axis=0), used.max(axis=0)]), axis=0)
    scale = float((extents**2).sum() ** 0.5)
    return 1.0 if scale < trimesh.tol.zero else scale


def _embree_frame(mesh: trimesh.Trimesh, cameras: Sequence[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """The scene as trimesh's ``_EmbreeWrap`` hands it to embree: float32 vertices (V, 3) and camera
    origins (n_views, 3), shifted to the vertices' minimum corner and scaled to ~100 units (100 /
    ``mesh.scale``)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    positions = np.stack([c.position for c in cameras]).astype(np.float64)
    origin = vertices.min(axis=0)
    scale = 100.0 / _trimesh_scale(vertices, np.asarray(mesh.faces))
    scaled = ((vertices - origin) * scale).astype(np.float32)
    origins = ((positions.astype(np.float32).astype(np.float64) - origin) * scale).astype(np.float32)
    return scaled, origins


def _decided_hits(
    mesh: trimesh.Trimesh,
    cameras: Sequence[Camera],
    unit64: np.ndarray,
    scaled: np.ndarray,
    origins: np.ndarray,
) -> np.ndarray:
    """(n_views·size²,) int64 first-hit faces that embree's float32 rounding cannot change (−1: a
    certain miss), −2 for the rays left undecided: :func:`r3d.mesh._raycast_jit.certain_hits` on the
    scene of :func:`_embree_frame` (``scaled``, ``origins``); ``unit64`` the float32 unit ray
    directions as float64."""
    return _jit().certain_hits(
        scaled.astype(np.float64),
        np.asarray(mesh.faces, dtype=np.int64),
        origins.astype(np.float64),
        unit64,
        np.ascontiguousarray(mesh.vertices, dtype=np.float64),
        np.stack([c.position for c in cameras]).astype(np.float64),
        np.stack([c.rotation for c in cameras]).astype(np.float64),
        cameras[0].size / (2.0 * math.tan(math.radians(cameras[0].fov_deg) / 2.0)),
    )


def _first_hits(
    mesh: trimesh.Trimesh,
    cameras: Sequence[Camera],
    directions: np.ndarray,
    unit: np.ndarray,
    unit64: np.ndarray,
) -> np.ndarray:
    """(n_views·size²,) int64 index of the first face each camera ray hits, −1 for none.

    The same hits as trimesh's embree ``intersects_first`` (the same float32 rays and scaled scene), but
    embree only casts the rays that :func:`_decided_hits` leaves undecided (near an edge, a silhouette
    or a second surface: a few percent); embree is not called when there are none.
    """
    n_pix = cameras[0].size ** 2
    if _embree_scene is None:  # pragma: no cover - no embree: trimesh's intersector, every ray
        origins = np.repeat(np.stack([c.position for c in cameras]), n_pix, axis=0)
        return np.asarray(_Intersector(mesh).intersects_first(origins, directions), dtype=np.int64)
    scaled, origins = _embree_frame(mesh, cameras)
    tri = _decided_hits(mesh, cameras, unit64, scaled, origins)
    rays = np.flatnonzero(tri == _UNDECIDED)
    if len(rays):
        faces = np.asarray(mesh.faces)
        ray_origins = np.repeat(origins, np.bincount(rays // n_pix, minlength=len(cameras)), axis=0)
        found = _embree.first_faces(scaled, faces, ray_origins, unit[rays])
        if found is None:  # pragma: no cover - embreex without its bundled library file
            scene = _embree_scene.EmbreeScene()
            _EmbreeMesh(scene=scene, vertices=scaled, indices=faces.astype(np.int32))
            found = scene.run(ray_origins, unit[rays])
        tri[rays] = found
    return tri


@dataclass(frozen=True)
class RayHits:
    """First hits of all camera rays of one render, rays in view-major, row-major pixel order.

    face: (n_views·size²,) int64 hit face, −1 for none. hit: (N,) indices of the rays that hit.
    t: (N,) float64 ray length to the hit (unit directions, recomputed from the face's plane).
    normals: (N, 3) float64 unit world normals turned towards the camera. front: (N,) the face's
    winding normal faced the camera.
    """

    face: np.ndarray
    hit: np.ndarray
    t: np.ndarray
    normals: np.ndarray
    front: np.ndarray


def _check_cameras(cameras: Sequence[Camera]) -> tuple[int, float]:
    size, fov = cameras[0].size, cameras[0].fov_deg
    if any(c.size != size or c.fov_deg != fov for c in cameras):
        raise ValueError("all cameras of one render must share size and fov")
    return size, fov


def cast_rays(mesh: trimesh.Trimesh, cameras: Sequence[Camera]) -> RayHits:
    """Cast every pixel ray of ``cameras`` (shared size and fov) at ``mesh`` (not normalised here).

    First hits from :func:`_first_hits`; per-hit quantities in float64 (compiled,
    :func:`r3d.mesh._raycast_jit.hit_geometry`), computed coordinate by coordinate with the summation
    order of the (N, 3) forms (``np.cross``, ``np.einsum``, ``np.linalg.norm``), so they are
    bit-identical to them.
    """
    size, fov = _check_cameras(cameras)
    rotations = np.stack([c.rotation for c in cameras]).astype(np.float64)
    directions, unit, unit64 = _ray_directions(size, fov, rotations.tobytes())
    positions = np.stack([c.position for c in cameras]).astype(np.float64)
    tri = _first_hits(mesh, cameras, directions, unit, unit64)
    hit, t, normals, front = _jit().hit_geometry(
        tri,
        np.asarray(mesh.faces, dtype=np.int64),
        np.ascontiguousarray(mesh.vertices, dtype=np.float64),
        positions,
        directions,
    )
    return RayHits(tri, hit, t, normals, front)


def render_views(
    mesh: trimesh.Trimesh,
    n_views: int = 4,
    size: int = 128,
    elevation_deg: float = 20.0,
    azimuth_offset_deg: float = 0.0,
    fov_deg: float = 40.0,
    distance: float | None = None,
    normalize: bool = True,
    cameras: Sequence[Camera] | None = None,
) -> list[RenderedView]:
    """Ray-cast ``mesh`` from orbiting cameras (see :func:`orbit_cameras`; or pass ``cameras``).

    All views are cast together (:func:`cast_rays`). With ``normalize`` (default) the mesh is
    first scaled to the unit sphere; without it, the caller is responsible for the mesh fitting the cameras.
    """
    if normalize:
        mesh = normalize_unit_sphere(mesh)
    else:
        check_mesh(mesh)
    if cameras is None:
        cameras = orbit_cameras(n_views, size, elevation_deg, azimuth_offset_deg, fov_deg, distance)
    size, fov = _check_cameras(cameras)
    hits = cast_rays(mesh, cameras)
    rays_cam = _camera_rays(size, fov)
    n_pix = size * size
    n_rays = len(hits.face)
    flat_tri = np.full(n_rays, -1, dtype=np.int64)
    flat_tri[hits.hit] = hits.face[hits.hit]
    flat_t = np.zeros(n_rays)
    flat_t[hits.hit] = hits.t
    flat_n = np.zeros((n_rays, 3))
    flat_n[hits.hit] = hits.normals
    flat_front = np.zeros(n_rays, dtype=bool)
    flat_front[hits.hit] = hits.front

    views = []
    for k, cam in enumerate(cameras):
        sl = slice(k * n_pix, (k + 1) * n_pix)
        mask = flat_tri[sl] >= 0
        depth = flat_t[sl] * -rays_cam[:, 2]  # ray length → distance along the viewing axis
        n_world = flat_n[sl]
        views.append(
            RenderedView(
                camera=cam,
                mask=mask.reshape(size, size),
                depth=np.where(mask, depth, 0.0).reshape(size, size),
                normals_world=n_world.astype(np.float32).reshape(size, size, 3),
                normals_cam=(n_world @ cam.rotation).astype(np.float32).reshape(size, size, 3),
                face_index=flat_tri[sl].reshape(size, size),
                frontface=flat_front[sl].reshape(size, size),
            )
        )
    return views


def camera_points(view: RenderedView, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """(H, W, 3) float64 camera-space points back-projected from ``view.depth`` (0 where no hit);
    only the pixels of ``window`` (rows, columns) when given, with the same values there."""
    size = view.camera.size
    window = window or (slice(None), slice(None))
    rays = _camera_rays(size, view.camera.fov_deg).reshape(size, size, 3)[window]
    points = rays * (view.depth[window] / -rays[..., 2])[..., None]
    return np.where(view.mask[window][..., None], points, 0.0)


def normal_image(view: RenderedView, space: str = "camera") -> np.ndarray:
    """(H, W, 3) uint8 normal map: RGB = 255·(n + 1)/2 of the ``camera`` or ``world`` normals, white background.

    In camera space a surface facing the viewer is (128, 128, 255) blue, +x right is red, +y up green.
    """
    if space not in ("camera", "world"):
        raise ValueError(f"space must be 'camera' or 'world', got {space!r}")
    normals = view.normals_cam if space == "camera" else view.normals_world
    rgb = np.round((normals * 0.5 + 0.5) * 255.0).clip(0, 255).astype(np.uint8)
    rgb[~view.mask] = BACKGROUND
    return rgb


def shaded_image(view: RenderedView) -> np.ndarray:
    """(H, W, 3) uint8 Lambert shading (ambient 0.3 + key light): front faces grey-blue, back faces
    salmon (so holes and inverted normals show), white background."""
    lambert = np.clip(view.normals_cam.astype(np.float64) @ _LIGHT_CAM, 0.0, 1.0)
    intensity = 0.3 + 0.7 * lambert
    base = np.where(view.frontface[..., None], _FRONT_RGB, _BACK_RGB)
    rgb = np.round(base * intensity[..., None] * 255.0).clip(0, 255).astype(np.uint8)
    rgb[~view.mask] = BACKGROUND
    return rgb


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(
    meshes: Sequence[trimesh.Trimesh | None],
    labels: Sequence[str] | None,
    path: str | os.PathLike,
    size: int = 128,
    n_views: int = 1,
    columns: int | None = None,
    elevation_deg: float = 20.0,
    azimuth_deg: float = 30.0,
    mode: str = "shaded",
) -> Path:
    """Write a PNG grid with one tile per mesh: ``n_views`` views side by side plus its label below.

    ``columns`` tiles per row (default: ⌈√n⌉ for single views, 1 — one mesh per row — for several).
    ``mode`` is ``shaded`` or ``normal``. A None mesh, or one that cannot be rendered, is an empty grey
    tile marked "empty" / "invalid". The file is written atomically; returns its path.
    """
    if mode not in ("shaded", "normal"):
        raise ValueError(f"mode must be 'shaded' or 'normal', got {mode!r}")
    if labels is not None and len(labels) != len(meshes):
        raise ValueError(f"{len(labels)} labels for {len(meshes)} meshes")
    if not meshes:
        raise ValueError("contact_sheet needs at least one mesh")
    n = len(meshes)
    columns = columns or (math.ceil(math.sqrt(n)) if n_views == 1 else 1)
    rows = math.ceil(n / columns)
    label_h = max(12, size // 8)
    font = ImageFont.load_default(size=max(9, label_h - 4))
    tile_w, tile_h = size * n_views, size + label_h
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(sheet)
    to_rgb = shaded_image if mode == "shaded" else normal_image
    for i, mesh in enumerate(meshes):
        x0, y0 = (i % columns) * tile_w, (i // columns) * tile_h
        status = "empty" if mesh is None else None
        if mesh is not None:
            try:
                views = render_views(mesh, n_views, size, elevation_deg, azimuth_deg)
            except R3DError:
                status = "invalid"
            else:
                for k, view in enumerate(views):
                    sheet.paste(Image.fromarray(to_rgb(view)), (x0 + k * size, y0))
        if status is not None:
            draw.rectangle(
                [x0 + 1, y0 + 1, x0 + tile_w - 2, y0 + size - 2],
                fill=(232, 232, 232),
                outline=(200, 200, 200),
            )
            draw.text((x0 + tile_w / 2, y0 + size / 2), status, fill=(120, 120, 120), font=font, anchor="mm")
        if labels is not None:
            text = _fit_label(draw, str(labels[i]), font, tile_w - 4)
            draw.text(
                (x0 + tile_w / 2, y0 + size + label_h / 2), text, fill=(20, 20, 20), font=font, anchor="mm"
            )
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
