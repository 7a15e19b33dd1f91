"""Semantic reward: a small PointNet classifier of the procedural shape classes (r3d's CPU stand-in for
Uni3D).

A mesh is turned into ``num_points`` surface points (area-weighted, with a fixed seed so a score is
deterministic), centred on their mean and scaled into the unit sphere (as Uni3D does), then classified
by a shared per-point MLP, a max pool over points and an MLP head (Linear and per-point LayerNorm; no
batch statistics). The headline score is the probability of the class the prompt names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from torch import nn

from r3d.core.errors import R3DError
from r3d.core.io import read_safetensors, write_safetensors
from r3d.mesh.shapes import CLASSES, parse_prompt

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "semantic_pointnet.safetensors"


@dataclass
class PointNetConfig:
    """Classifier architecture (stored in the weights' metadata)."""

    n_classes: int = len(CLASSES)
    point_widths: tuple[int, ...] = (64, 128, 256)
    head_width: int = 128


class PointNetClassifier(nn.Module):
    """Points (B, N, 3) in the unit sphere → class logits (B, n_classes): shared per-point MLP
    (Linear → LayerNorm → GELU; per-point norms, no batch statistics), max over points, MLP head."""

    def __init__(self, cfg: PointNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = (3, *cfg.point_widths)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
        self.point_mlp = nn.Sequential(*layers[:-2])  # no norm/activation before the max pool
        self.head = nn.Sequential(
            nn.LayerNorm(dims[-1]),
            nn.GELU(),
            nn.Linear(dims[-1], cfg.head_width),
            nn.LayerNorm(cfg.head_width),
            nn.GELU(),
            nn.Linear(cfg.head_width, cfg.n_classes),
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.point_mlp(points).amax(dim=1))


def normalize_points(points: np.ndarray) -> np.ndarray:
    """Centre (N, 3) points on their mean and scale the farthest to radius 1."""
    points = points - points.mean(axis=0)
    return points / max(float(np.linalg.norm(points, axis=1).max()), 1e-9)


def mesh_points(mesh: Any, num_points: int, seed: int) -> np.ndarray | None:
    """``num_points`` area-weighted surface samples (float32, unit sphere), or None for an empty mesh."""
    if mesh is None:
        return None
    if isinstance(mesh, trimesh.Scene):
        mesh = mesh.to_geometry() if hasattr(mesh, "to_geometry") else mesh.dump(concatenate=True)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or not mesh.area > 0:
        return None
    points, _ = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    return normalize_points(np.asarray(points, dtype=np.float64)).astype(np.float32)


def save_pointnet(
    path: str | Path, model: PointNetClassifier, extra_metadata: dict[str, Any] | None = None
) -> None:
    """Write the classifier (fp16) with its config and class names in the safetensors metadata."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": asdict(model.cfg), "classes": list(CLASSES), **(extra_metadata or {})}
    write_safetensors(path, tensors, metadata)


def load_pointnet(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> PointNetClassifier:
    """The trained classifier (the shipped weights by default), fp32, eval mode, frozen."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    what = "semantic classifier weights"
    tensors, meta = read_safetensors(path, what, f"python -m r3d.rewards.train_semantic --out {path}")
    state = {k: v.float() for k, v in tensors.items()}
    try:
        raw = json.loads(meta["config"])
        cfg = PointNetConfig(**{**raw, "point_widths": tuple(raw["point_widths"])})
    except (KeyError, TypeError, ValueError) as exc:
        raise R3DError(f"{path} is not a {what} file ({exc})") from exc
    if json.loads(meta.get("classes", "[]")) != list(CLASSES):
        raise R3DError(f"{path} was trained on other shape classes than {', '.join(CLASSES)}")
    model = PointNetClassifier(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise R3DError(f"{path} does not match the PointNet architecture: {exc}") from exc
    return model.eval().requires_grad_(False).to(device)


class SemanticReward:
    """Probability that a mesh shows the shape class its prompt names (r3d's Uni3D stand-in).

    Options: ``weights`` (default: the shipped classifier), ``num_points`` surface samples per mesh,
    ``seed`` of the surface sampling, ``device``. Returns ``{"semantic": p(prompt class),
    "correct": 1 if it is the top class}``, (B,) fp32; a None or empty mesh scores 0.
    """

    name = "semantic"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __init__(
        self,
        weights: str | Path | None = None,
        num_points: int = 1024,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_points < 16:
            raise R3DError(f"semantic reward: num_points must be ≥ 16, got {num_points}")
        self.model = load_pointnet(weights, device)
        self.num_points = int(num_points)
        self.seed = int(seed)
        self.device = torch.device(device)

    @torch.no_grad()
    def probabilities(self, meshes: Sequence[Any]) -> torch.Tensor:
        """Class probabilities (B, n_classes) fp32 on CPU; all-zero rows for None/empty meshes."""
        clouds = [mesh_points(m, self.num_points, self.seed) for m in meshes]
        probs = torch.zeros(len(clouds), len(CLASSES))
        valid = [i for i, c in enumerate(clouds) if c is not None]
        if valid:
            batch = torch.from_numpy(np.stack([clouds[i] for i in valid])).to(self.device)
            probs[valid] = self.model(batch).float().softmax(dim=-1).cpu()
        return probs

    def classify(self, meshes: Sequence[Any]) -> list[tuple[str, float]]:
        """(top class name, its probability) per mesh; ("none", 0.0) for a None/empty mesh."""
        probs = self.probabilities(meshes)
        out = []
        for row in probs:
            p, i = row.max(dim=0)
            out.append((CLASSES[int(i)], float(p)) if float(p) > 0 else ("none", 0.0))
        return out

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        if len(artifacts) != len(prompts):
            raise R3DError(f"semantic reward: {len(artifacts)} meshes but {len(prompts)} prompts")
        target = torch.tensor([parse_prompt(p) for p in prompts], dtype=torch.long)
        probs = self.probabilities(artifacts)
        score = probs.gather(1, target[:, None])[:, 0]
        correct = ((probs.argmax(dim=1) == target) & (probs.sum(dim=1) > 0)).float()
        return {self.name: score, "correct": correct}
