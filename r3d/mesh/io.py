"""Mesh files: load (any common format, validated), save (atomic) and expand CLI inputs to file lists.

``load_mesh`` never lets a trimesh exception escape: a missing, empty, unreadable or corrupt file
becomes an :class:`R3DError` with a one-line reason, so a batch command can report it per item.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import trimesh

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write

#: Suffixes ``load_mesh`` reads (lower case, with the dot).
MESH_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
#: Suffixes ``save_mesh`` writes.
SAVE_SUFFIXES: tuple[str, ...] = (".glb", ".obj", ".ply", ".stl", ".off")

_GLOB_CHARS = frozenset("*?[")


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read one triangle mesh from OBJ, PLY, STL, OFF, GLB or glTF.

    Scenes (glTF/GLB with several nodes, multi-object OBJ) are flattened into one mesh with every node
    transform applied. Vertices are kept exactly as stored (``process=False``: no merging, no
    re-ordering); welding for topology measures happens in :mod:`r3d.mesh.measures`.

    Raises:
        R3DError: the file is missing, empty, of an unknown format, unreadable, holds no triangle
            faces, or has non-finite vertices / out-of-range face indices.
    """
    path = Path(path)
    if not path.exists():
        raise R3DError(f"{path}: no such file")
    if not path.is_file():
        raise R3DError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise R3DError(
            f"{path}: unsupported mesh format {suffix or '(none)'!r} (use one of {', '.join(MESH_SUFFIXES)})"
        )
    if path.stat().st_size == 0:
        raise R3DError(f"{path}: empty file")
    try:
        scene = trimesh.load_scene(str(path), file_type=suffix[1:], process=False)
    except Exception as exc:  # trimesh raises anything from JSONDecodeError to IndexError on corrupt input
        raise R3DError(
            f"{path}: corrupt or unreadable {suffix[1:].upper()} file ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    kinds = {type(g).__name__ for g in scene.geometry.values()}
    if not any(isinstance(g, trimesh.Trimesh) for g in scene.geometry.values()):
        if kinds:
            raise R3DError(f"{path}: no triangle mesh in file (only {', '.join(sorted(kinds))})")
        raise R3DError(f"{path}: no triangle faces found (corrupt or not a {suffix[1:].upper()} file)")
    try:
        mesh = scene.to_mesh()
    except Exception as exc:
        raise R3DError(
            f"{path}: cannot merge the scene's meshes ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    check_mesh(mesh, name=str(path))
    return mesh


def check_mesh(mesh: trimesh.Trimesh, name: str = "mesh") -> None:
    """Raise R3DError unless ``mesh`` has ≥1 face, finite vertices and in-range (V, 3) face indices."""
    vertices = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.faces)
    if faces.size == 0 or len(vertices) == 0:
        raise R3DError(f"{name}: mesh has no faces")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise R3DError(f"{name}: faces must be triangles, got shape {tuple(faces.shape)}")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices).all(axis=1)).sum())
        raise R3DError(f"{name}: {bad} vertices are NaN or infinite")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise R3DError(f"{name}: face indices out of range (vertex count {len(vertices)})")


def save_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` atomically; the format follows the suffix (glb, obj, ply, stl, off).

    OBJ is written as geometry only (no .mtl / texture files); use GLB to keep materials.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise R3DError(
            f"{path}: cannot save as {suffix or '(no suffix)'!r} (use one of {', '.join(SAVE_SUFFIXES)})"
        )
    if suffix == ".obj":
        data = trimesh.exchange.obj.export_obj(mesh, include_texture=False, include_normals=False)
    else:
        data = mesh.export(file_type=suffix[1:])
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def _is_mesh_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MESH_SUFFIXES


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Turn CLI arguments into a sorted, de-duplicated list of mesh files.

    A file is taken as given (its format is checked when loaded); a folder contributes every mesh file
    below it (recursively, by suffix); a pattern with ``* ? [`` is globbed (``**`` recursive), keeping
    mesh files and expanding matched folders.

    Raises:
        R3DError: an argument is neither an existing path nor a pattern, or nothing matched at all.
    """
    found: dict[Path, Path] = {}

    def add(path: Path) -> None:
        found.setdefault(path.resolve(), path)

    def add_folder(folder: Path) -> None:
        for child in folder.rglob("*"):
            if _is_mesh_file(child):
                add(child)

    items = list(items)
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_file():
            add(path)
        elif path.is_dir():
            add_folder(path)
        elif _GLOB_CHARS & set(text):
            for match in glob.glob(text, recursive=True):
                match_path = Path(match)
                if match_path.is_dir():
                    add_folder(match_path)
                elif _is_mesh_file(match_path):
                    add(match_path)
        else:
            raise R3DError(f"no such file or folder: {text}")
    if not found:
        shown = ", ".join(os.fspath(i) for i in items[:3]) + (" ..." if len(items) > 3 else "")
        raise R3DError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) found in: {shown or '(no inputs)'}")
    return sorted(found.values(), key=lambda p: os.fspath(p))
