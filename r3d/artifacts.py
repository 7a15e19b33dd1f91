"""Saving and previewing generated artifacts, by type (meshes today; motions and images later)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from r3d.core.errors import R3DError

MESH_FORMATS = ("glb", "obj", "ply")


def safe_name(text: str, limit: int = 48) -> str:
    """A file-name-safe slug of ``text`` ("a small cube!" → "a_small_cube")."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return slug[:limit] or "item"


def _is_mesh(artifact: Any) -> bool:
    return type(artifact).__module__.startswith("trimesh")


def save_artifact(artifact: Any, stem: Path, fmt: str) -> Path | None:
    """Write one artifact as ``stem.fmt``; None artifacts (empty decodes) are skipped."""
    if artifact is None:
        return None
    if _is_mesh(artifact):
        from r3d.mesh.io import save_mesh

        if fmt not in MESH_FORMATS:
            raise R3DError(f"unknown mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}")
        path = stem.with_suffix(f".{fmt}")
        save_mesh(artifact, path)
        return path
    saver = getattr(artifact, "save", None)
    if saver is None:
        raise R3DError(f"don't know how to save a {type(artifact).__name__}")
    path = stem.with_suffix(f".{fmt}")
    saver(path)
    return path


def preview(artifacts: list[Any], labels: list[str], path: Path, policy: Any = None) -> Path | None:
    """A contact sheet PNG of the artifacts: meshes rendered on the CPU, anything else drawn by the
    policy's own ``save_preview(artifacts, labels, path)`` when it has one."""
    if artifacts and all(a is None or _is_mesh(a) for a in artifacts):
        from r3d.mesh.render import contact_sheet

        return contact_sheet(artifacts, labels, path)
    saver = getattr(policy, "save_preview", None)
    return saver(artifacts, labels, path) if saver is not None else None
