"""``geometry`` reward: mesh-quality measures (closedness, floaters, manifoldness, smoothness, slivers).

Every sub-score is in [0, 1] (formulas in :mod:`r3d.mesh.measures`); the headline ``geometry`` is their
weighted mean Σ wᵢ·sᵢ / Σ wᵢ. A None mesh (failed decode), a mesh without faces or with non-finite
vertices scores 0 on everything. Not differentiable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import trimesh

from r3d.core.errors import R3DError
from r3d.mesh.measures import SCORE_NAMES, MeshMeasures, measure, measure_many

#: Default sub-score weights: closedness and floaters matter most for generated shapes.
DEFAULT_WEIGHTS: dict[str, float] = {
    "watertight": 0.3,
    "components": 0.25,
    "manifold": 0.2,
    "smoothness": 0.15,
    "degenerate": 0.1,
}


class GeometryReward:
    """Scores trimesh meshes on topology and surface quality; see module docstring.

    Args:
        weights: sub-score → weight for the headline (missing names weigh 0; at least one > 0).
        smooth_angle_deg: dihedral threshold θ₀ of ``smoothness``.
        sliver_quality: quality threshold q₀ of ``degenerate``.
        binary_watertight: ``watertight`` is 1/0 (closed or not) instead of the fraction of edges with
            exactly two faces.
    """

    name = "geometry"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        smooth_angle_deg: float = 30.0,
        sliver_quality: float = 0.01,
        binary_watertight: bool = False,
    ) -> None:
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = sorted(set(weights) - set(SCORE_NAMES))
        if unknown:
            raise R3DError(f"geometry reward: unknown weight(s) {unknown}; valid: {', '.join(SCORE_NAMES)}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise R3DError(f"geometry reward: weights must be >= 0 with a positive sum, got {weights}")
        if not 0.0 < smooth_angle_deg < 180.0:
            raise R3DError(f"geometry reward: smooth_angle_deg must be in (0, 180), got {smooth_angle_deg}")
        if not 0.0 <= sliver_quality < 1.0:
            raise R3DError(f"geometry reward: sliver_quality must be in [0, 1), got {sliver_quality}")
        self.weights = {k: float(weights.get(k, 0.0)) for k in SCORE_NAMES}
        self.smooth_angle_deg = smooth_angle_deg
        self.sliver_quality = sliver_quality
        self.binary_watertight = binary_watertight

    def _row(self, measures: MeshMeasures) -> dict[str, float]:
        """Sub-scores and headline from one mesh's measures."""
        scores = measures.scores()
        if self.binary_watertight:
            scores["watertight"] = float(scores["watertight"] == 1.0)
        total = sum(self.weights.values())
        headline = sum(self.weights[k] * scores[k] for k in SCORE_NAMES) / total
        return {self.name: headline, **scores}

    def _check(self, mesh: Any) -> None:
        if mesh is not None and not isinstance(mesh, trimesh.Trimesh):
            raise TypeError(f"geometry reward scores trimesh.Trimesh or None, got {type(mesh).__name__}")

    def score_one(self, mesh: trimesh.Trimesh | None) -> dict[str, float]:
        """Sub-scores and headline of one mesh (all 0 for None)."""
        self._check(mesh)
        if mesh is None:
            return dict.fromkeys((self.name, *SCORE_NAMES), 0.0)
        return self._row(measure(mesh, self.smooth_angle_deg, self.sliver_quality))

    def __call__(
        self, artifacts: Sequence[Any], prompts: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{geometry, watertight, components, manifold, smoothness, degenerate}`` → float32 (B,).

        All meshes are measured in one vectorised pass (:func:`r3d.mesh.measures.measure_many`), with
        the same values as :meth:`score_one` of each.
        """
        for mesh in artifacts:
            self._check(mesh)
        meshes = [m for m in artifacts if m is not None]
        measured = iter(measure_many(meshes, self.smooth_angle_deg, self.sliver_quality))
        zero = dict.fromkeys((self.name, *SCORE_NAMES), 0.0)
        rows = [zero if m is None else self._row(next(measured)) for m in artifacts]
        keys = (self.name, *SCORE_NAMES)
        return {k: torch.tensor([r[k] for r in rows], dtype=torch.float32) for k in keys}
