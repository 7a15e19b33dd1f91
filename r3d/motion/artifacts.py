"""Motion artifacts (what a motion generator decodes to) and folders of generated motions.

A folder of motions holds one ``NNNNNN.npy`` per motion — de-normalised HumanML3D features
(length, 263), float32 — and ``motions.jsonl`` with one record per motion:
``{"file": "000000.npy", "caption": "...", "group": 0}``; ``group`` ties repeated generations of one
prompt together (multimodality), and defaults to the record's index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write, atomic_write_text
from r3d.motion.representation import FEATURE_DIM, FPS, recover_from_ric


@dataclass
class Motion:
    """One generated or reference motion: de-normalised 263-d features (length, 263) at ``fps``."""

    features: np.ndarray
    fps: int = FPS

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[1] != FEATURE_DIM or self.features.shape[0] < 1:
            raise R3DError(
                f"a motion must be (length >= 1, {FEATURE_DIM}) features, got {self.features.shape}"
            )

    @property
    def length(self) -> int:
        return int(self.features.shape[0])

    def joints(self) -> np.ndarray:
        """(length, 22, 3) joint positions recovered from the root and ric features."""
        return recover_from_ric(self.features)

    def save(self, path: str | Path, title: str = "") -> Path:
        """``.npy`` (the features), or a stick-figure ``.gif`` / ``.mp4`` animation."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return atomic_write(path, lambda tmp: _save_npy(tmp, self.features))
        if suffix in (".gif", ".mp4"):
            from r3d.motion.render import render_motion

            return render_motion(self.joints(), path, title, fps=self.fps)
        raise R3DError(f"unsupported motion format '{path.suffix}'; use npy, gif or mp4")


def batch_motions(
    motions: Sequence[Motion | None], pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded features (B, T, 263) and lengths (B,); a None motion becomes one zero frame."""
    feats = [m.features if m is not None else np.zeros((1, FEATURE_DIM), np.float32) for m in motions]
    t = max([f.shape[0] for f in feats] + [pad_to or 0])
    out = np.zeros((len(feats), t, FEATURE_DIM), dtype=np.float32)
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return torch.from_numpy(out), torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)


def save_motion_folder(
    directory: str | Path,
    motions: Sequence[Motion],
    captions: Sequence[str],
    groups: Sequence[int] | None = None,
) -> Path:
    """Write motions + ``motions.jsonl`` (atomically per file) and return the folder."""
    directory = Path(directory)
    if len(motions) != len(captions):
        raise ValueError("one caption per motion is required")
    groups = list(groups) if groups is not None else list(range(len(motions)))
    lines = []
    for i, (motion, caption, group) in enumerate(zip(motions, captions, groups, strict=True)):
        name = f"{i:06d}.npy"
        atomic_write(directory / name, lambda tmp, f=motion.features: _save_npy(tmp, f))
        lines.append(json.dumps({"file": name, "caption": caption, "group": int(group)}))
    atomic_write_text(directory / "motions.jsonl", "\n".join(lines) + "\n")
    return directory


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a temporary name
        np.save(fh, array)


def load_motion_folder(directory: str | Path) -> tuple[list[Motion], list[str], list[int]]:
    """Read a folder written by :func:`save_motion_folder` → (motions, captions, groups)."""
    directory = Path(directory)
    index = directory / "motions.jsonl"
    if not index.is_file():
        raise R3DError(f"{directory} has no motions.jsonl (expected a folder written by r3d)")
    motions, captions, groups = [], [], []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            path = directory / rec["file"]
            caption = str(rec["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise R3DError(f"{index}:{n + 1}: bad record ({exc})") from None
        if not path.is_file():
            raise R3DError(f"{index}:{n + 1}: motion file {path.name} is missing")
        try:
            features = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise R3DError(f"{path}: not a .npy array ({exc})") from None
        motions.append(Motion(features))
        captions.append(caption)
        groups.append(int(rec.get("group", n)))
    if not motions:
        raise R3DError(f"{index} lists no motions")
    return motions, captions, groups
