"""Saving and previewing generated artifacts, by type: meshes, motions, images (and anything with a
``save(path)`` method)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write, atomic_write_text
from r3d.core.policy import SavesPreview

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
    path = stem.with_suffix(f".{fmt}")
    if _is_image(artifact):  # PIL picks the format from the name, and a temporary name has none
        from PIL import Image

        image_format = Image.registered_extensions().get(f".{fmt.lower()}")
        if image_format is None:
            raise R3DError(f"unknown image format {fmt!r}; use png, jpg or webp")
        return atomic_write(path, lambda tmp: artifact.save(tmp, format=image_format))
    saver = getattr(artifact, "save", None)
    if saver is None:
        raise R3DError(f"don't know how to save a {type(artifact).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    saver(path)  # the artifact's own writer (Gaussian clouds and motions write atomically)
    return path


def _is_image(artifact: Any) -> bool:
    return type(artifact).__module__.startswith("PIL.")


def preview(artifacts: list[Any], labels: list[str], path: Path, policy: Any = None) -> Path | None:
    """A contact sheet PNG of the artifacts: meshes rendered on the CPU, anything else drawn by the
    policy's own ``save_preview(artifacts, labels, path)`` when it has one."""
    if artifacts and all(a is None or _is_mesh(a) for a in artifacts):
        from r3d.mesh.render import contact_sheet

        return contact_sheet(artifacts, labels, path)
    return policy.save_preview(artifacts, labels, path) if isinstance(policy, SavesPreview) else None


def sample_format(artifact: Any) -> str | None:
    """The file format evaluation samples of this type are kept in: glb (mesh), npy (motion
    features), png (image), ply (anything else that saves itself, e.g. Gaussian clouds); None
    for an empty decode."""
    if artifact is None:
        return None
    if _is_mesh(artifact):
        return "glb"
    if callable(getattr(artifact, "joints", None)):
        return "npy"
    if type(artifact).__module__.startswith("PIL."):
        return "png"
    return "ply" if callable(getattr(artifact, "save", None)) else None


def split_label(label: str) -> tuple[str, float | None]:
    """``"a cube | 1.02"`` (the trainer's evaluation label) → ("a cube", 1.02); no score → None."""
    prompt, sep, score = label.rpartition(" | ")
    if sep:
        try:
            return prompt, float(score)
        except ValueError:
            pass
    return label, None


def save_samples(artifacts: list[Any], labels: list[str], folder: Path) -> Path:
    """Keep one evaluation's samples: ``folder/NNN.<fmt>`` (see :func:`sample_format`) and
    ``folder/index.json`` (``{"samples": [{"file", "prompt", "score"}]}``, written last)."""
    if len(artifacts) != len(labels):
        raise R3DError(f"{len(artifacts)} samples but {len(labels)} labels")
    entries = []
    for i, (artifact, label) in enumerate(zip(artifacts, labels, strict=True)):
        fmt = sample_format(artifact)
        path = save_artifact(artifact, folder / f"{i:03d}", fmt) if fmt else None
        prompt, score = split_label(label)
        entries.append({"file": path.name if path else None, "prompt": prompt, "score": score})
    return atomic_write_text(folder / "index.json", json.dumps({"samples": entries}, indent=1) + "\n")
