"""Text-to-motion rewards from a text–motion evaluator (T2M co-embeddings or TMR).

Artifacts are :class:`r3d.motion.artifacts.Motion` (de-normalised 263-d features, cropped to their
length; None scores the minimum). Every reward is in [0, 1], higher is better.

Reward-gradient path (``train.algorithm: nabla``): ``score_latents(policy, x0, prompts)`` scores a
motion policy's clean samples x0 (B, 263, 1, T) differentiably — the policy's ``reward_features`` hook
(de-normalised, uncropped, with lengths) → the evaluator's motion encoder with gradients → the same
mapping as ``__call__`` (equal values, tested). Differentiable: ``motion_matching``, ``tmr_matching``,
``tmr_cosine``, and ``motion_rprecision`` / ``motion_combined`` in ``softmax`` mode (rank and topK are
step functions); text embeddings carry no gradient.

- ``motion_matching``: the evaluator distance d = ‖t − m‖ mapped to a score — ``exp``: e^(−d/s);
  ``sigmoid``: σ((c − d)/s); ``linear``: clamp(1 − d/c, 0, 1) (a linear map without clamping changes
  nothing after per-group normalisation). ``c`` defaults to the evaluator's held-out ground-truth
  matching distance (3.0 for HumanML3D's T2M if unknown) and ``s`` to c/4 (sigmoid) or c (exp).
- ``motion_rprecision``: the prompt against 31 distractor captions drawn from *other* prompts (a
  caption pool minus anything identical to the prompt); the distractors are a deterministic function
  of (prompt, seed), so all samples of a GRPO group face the same ones. ``mode``: ``softmax`` (the
  probability of the true caption under softmax(−d/τ), default), ``rank`` (1 − rank/31) or ``topK``
  (1 if the true caption ranks in the top K, e.g. ``top3``).
- ``motion_combined``: weighted mean of the two above.
- A published T2M ``finest.tar`` as ``evaluator`` also needs the options ``glove`` (the GloVe folder)
  and ``stats_dir`` (``t2m_mean.npy`` / ``t2m_std.npy``), as ``r3d eval-motion --glove --evaluator-stats``.
- ``tmr_cosine``: TMR score cos/2 + 0.5; ``tmr_matching``: the distance between unit TMR embeddings
  (∈ [0, 2]) through the same linear / exp / sigmoid maps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from r3d.core.errors import R3DError
from r3d.motion.artifacts import Motion, batch_motions

_MAPPINGS = ("exp", "sigmoid", "linear")


@lru_cache(maxsize=8)
def _evaluator(spec: str, glove: str | None = None, stats_dir: str | None = None) -> Any:
    from r3d.motion.evaluators import resolve_evaluator

    return resolve_evaluator(spec, glove, stats_dir)


def map_distance(d: torch.Tensor, mapping: str, center: float, scale: float) -> torch.Tensor:
    """Distance (B,) → score in [0, 1] (see the module docstring)."""
    if mapping == "exp":
        return torch.exp(-d / scale)
    if mapping == "sigmoid":
        return torch.sigmoid((center - d) / scale)
    if mapping == "linear":
        return (1 - d / center).clamp(0.0, 1.0)
    raise R3DError(f"unknown distance mapping '{mapping}'; use one of {', '.join(_MAPPINGS)}")


def _reference_distance(evaluator: Any, default: float) -> float:
    source = getattr(evaluator, "source", "")
    if str(source).endswith(".safetensors"):
        from r3d.motion.evaluators import _read_meta

        gt = _read_meta(source).get("held_out_gt", {})
        if "matching" in gt:
            return float(gt["matching"])
    return default


def _grad_embed_motions(evaluator: Any) -> Any:
    """The evaluator's ``embed_motions`` without its no-grad wrapper, or None where it has none."""
    if not isinstance(evaluator, torch.nn.Module):
        return None
    return getattr(getattr(type(evaluator), "embed_motions", None), "__wrapped__", None)


def latent_motion_embeddings(
    evaluator: Any, policy: Any, x0: torch.Tensor, prompts: Sequence[str]
) -> torch.Tensor:
    """Differentiable evaluator motion embeddings (B, D) of a motion policy's clean samples x0 (B, 263, 1, T)."""
    embed = _grad_embed_motions(evaluator)
    if embed is None:
        raise R3DError(f"evaluator {type(evaluator).__name__} has no differentiable motion encoder")
    if not hasattr(policy, "reward_features"):
        raise R3DError(f"policy {type(policy).__name__} has no reward_features (x0 → motion features) hook")
    evaluator.requires_grad_(False)  # gradients flow to x0 only
    feats, lengths = policy.reward_features(x0, list(prompts))
    return embed(evaluator, feats, lengths.to(feats.device)).float()


class _LatentMotionReward:
    """The latent-reward protocol of the motion rewards: x0 → ``evaluator`` embeddings → ``score_embeddings``."""

    name = "motion"
    higher_is_better = True
    value_range = (0.0, 1.0)
    evaluator: Any

    @property
    def differentiable(self) -> bool:
        """Whether ``score_latents`` can differentiate through the evaluator."""
        return _grad_embed_motions(self.evaluator) is not None

    def score_embeddings(self, motion: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Reward (B,) from motion embeddings (B, D), differentiable in them."""
        raise NotImplementedError

    def score_latents(
        self, policy: Any, x0: torch.Tensor, prompts: Sequence[str], **options: Any
    ) -> torch.Tensor:
        """Differentiable (B,) reward of a motion policy's clean samples x0 (B, 263, 1, T). ``options``: the
        latent-reward protocol's generator / view_jitter_deg / detach_targets, which do not apply to motions."""
        return self.score_embeddings(latent_motion_embeddings(self.evaluator, policy, x0, prompts), prompts)


class _MotionReward(_LatentMotionReward):
    """Shared plumbing: evaluator loading, None handling, batched embeddings."""

    def __init__(
        self,
        evaluator: str = "tiny-t2m",
        batch_size: int = 64,
        glove: str | None = None,
        stats_dir: str | None = None,
    ) -> None:
        self.evaluator_spec = str(evaluator)
        self.evaluator = _evaluator(
            self.evaluator_spec,
            None if glove is None else str(glove),
            None if stats_dir is None else str(stats_dir),
        )
        self.batch_size = batch_size

    def _embed(
        self, artifacts: Sequence[Motion | None], texts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(text_emb, motion_emb) (B, D) in input order; None motions get a one-frame placeholder."""
        t, m = [], []
        for i in range(0, len(artifacts), self.batch_size):
            feats, lens = batch_motions(artifacts[i : i + self.batch_size])
            m.append(self.evaluator.embed_motions(feats, lens))
            t.append(self.evaluator.embed_texts(list(texts[i : i + self.batch_size])))
        return torch.cat(t).float(), torch.cat(m).float()

    def _distance(self, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if getattr(self.evaluator, "kind", "distance") == "cosine":
            t, m = torch.nn.functional.normalize(t, dim=-1), torch.nn.functional.normalize(m, dim=-1)
        return (t - m).norm(dim=-1)

    @staticmethod
    def _none_to_min(
        scores: dict[str, torch.Tensor], artifacts: Sequence[Motion | None], low: float = 0.0
    ) -> None:
        missing = torch.tensor([a is None for a in artifacts])
        for key in scores:
            if key not in ("distance",):
                scores[key] = torch.where(missing, torch.full_like(scores[key], low), scores[key])


class MotionMatchingReward(_MotionReward):
    """Mapped evaluator distance between the prompt and the motion (``motion_matching``)."""

    name = "motion_matching"

    def __init__(
        self,
        evaluator: str = "tiny-t2m",
        mapping: str = "exp",
        center: float | None = None,
        scale: float | None = None,
        batch_size: int = 64,
        glove: str | None = None,
        stats_dir: str | None = None,
    ) -> None:
        super().__init__(evaluator, batch_size, glove, stats_dir)
        if mapping not in _MAPPINGS:
            raise R3DError(f"unknown distance mapping '{mapping}'; use one of {', '.join(_MAPPINGS)}")
        self.mapping = mapping
        default = 2.0**0.5 if getattr(self.evaluator, "kind", "") == "cosine" else 3.0
        self.center = float(center) if center is not None else _reference_distance(self.evaluator, default)
        self.scale = (
            float(scale) if scale is not None else (self.center / 4 if mapping == "sigmoid" else self.center)
        )

    def __call__(self, artifacts: Sequence[Motion | None], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        t, m = self._embed(artifacts, prompts)
        d = self._distance(t, m)
        out = {self.name: map_distance(d, self.mapping, self.center, self.scale).float(), "distance": d}
        self._none_to_min(out, artifacts)
        return out

    def score_embeddings(self, motion: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        text = self.evaluator.embed_texts(list(prompts)).float().to(motion.device)
        return map_distance(self._distance(text, motion), self.mapping, self.center, self.scale)


class MotionRPrecisionReward(_MotionReward):
    """How well the motion retrieves its prompt among 31 distractors (``motion_rprecision``)."""

    name = "motion_rprecision"

    def __init__(
        self,
        evaluator: str = "tiny-t2m",
        distractors: int = 31,
        pool: Sequence[str] | str | None = "synthetic",
        mode: str = "softmax",
        temperature: float | None = None,
        seed: int = 0,
        batch_size: int = 64,
        glove: str | None = None,
        stats_dir: str | None = None,
    ) -> None:
        super().__init__(evaluator, batch_size, glove, stats_dir)
        if mode not in ("softmax", "rank") and not (mode.startswith("top") and mode[3:].isdigit()):
            raise R3DError(f"unknown R-precision mode '{mode}'; use softmax, rank or topK (e.g. top3)")
        self.mode, self.distractors, self.seed = mode, int(distractors), int(seed)
        if pool == "synthetic":  # captions of r3d's synthetic training motions
            from r3d.motion.synthetic import caption_pool

            pool = caption_pool(512, 0)
        self.pool = sorted(set(pool or []))
        kind = getattr(self.evaluator, "kind", "distance")
        self.temperature = (
            float(temperature)
            if temperature is not None
            else (0.1 if kind == "cosine" else _reference_distance(self.evaluator, 3.0) / 10)
        )
        self._text_cache: dict[str, torch.Tensor] = {}

    def _texts(self, captions: list[str]) -> torch.Tensor:
        todo = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            self._text_cache.update(zip(chunk, self.evaluator.embed_texts(chunk).float(), strict=True))
        return torch.stack([self._text_cache[c] for c in captions])

    def distractors_for(self, prompt: str, batch_prompts: Sequence[str]) -> list[str]:
        """31 captions ≠ ``prompt`` from the batch's other prompts and the pool, fixed by (prompt, seed)."""
        candidates = sorted({p for p in batch_prompts if p != prompt} | {p for p in self.pool if p != prompt})
        if len(candidates) < self.distractors:
            raise R3DError(
                f"R-precision reward needs {self.distractors} distractor captions, "
                f"only {len(candidates)} available; "
                "give a larger caption pool"
            )
        digest = hashlib.blake2b(f"{self.seed}\x00{prompt}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        return [candidates[i] for i in rng.choice(len(candidates), self.distractors, replace=False)]

    @property
    def differentiable(self) -> bool:
        return self.mode == "softmax" and super().differentiable

    def candidate_distances(self, motion: torch.Tensor, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Per sample, the distances (1 + distractors,) of its motion embedding to [prompt, *distractors]."""
        out = []
        for i, prompt in enumerate(prompts):
            cand = [prompt, *self.distractors_for(prompt, prompts)]
            out.append(
                self._distance(self._texts(cand).to(motion.device), motion[i : i + 1].expand(len(cand), -1))
            )
        return out

    def score_embeddings(self, motion: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if self.mode != "softmax":
            raise R3DError(f"motion_rprecision mode '{self.mode}' is not differentiable; use mode softmax")
        return torch.stack(
            [
                torch.softmax(-d / self.temperature, dim=0)[0]
                for d in self.candidate_distances(motion, prompts)
            ]
        )

    def __call__(self, artifacts: Sequence[Motion | None], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        feats, lens = batch_motions(artifacts)
        motion = torch.cat(
            [
                self.evaluator.embed_motions(feats[i : i + self.batch_size], lens[i : i + self.batch_size])
                for i in range(0, len(artifacts), self.batch_size)
            ]
        ).float()
        scores, ranks = [], []
        for d in self.candidate_distances(motion, prompts):
            rank = int((d[1:] < d[0]).sum())
            ranks.append(rank)
            if self.mode == "softmax":
                scores.append(torch.softmax(-d / self.temperature, dim=0)[0])
            elif self.mode == "rank":
                scores.append(torch.tensor(1 - rank / self.distractors))
            else:
                scores.append(torch.tensor(float(rank < int(self.mode[3:]))))
        out = {
            self.name: torch.stack(scores).float(),
            "rank": torch.tensor(ranks, dtype=torch.float32),
            "top1": torch.tensor([float(r < 1) for r in ranks]),
            "top3": torch.tensor([float(r < 3) for r in ranks]),
        }
        self._none_to_min(out, artifacts)
        return out


class MotionCombinedReward(_LatentMotionReward):
    """w·matching + (1 − w)·R-precision with one shared evaluator (``motion_combined``)."""

    name = "motion_combined"

    def __init__(
        self,
        evaluator: str = "tiny-t2m",
        matching_weight: float = 0.5,
        mapping: str = "exp",
        mode: str = "softmax",
        pool: Sequence[str] | str | None = "synthetic",
        seed: int = 0,
        glove: str | None = None,
        stats_dir: str | None = None,
    ) -> None:
        if not 0 <= matching_weight <= 1:
            raise R3DError("matching_weight must be within [0, 1]")
        self.w = float(matching_weight)
        files = {"glove": glove, "stats_dir": stats_dir}
        self.matching = MotionMatchingReward(evaluator, mapping, **files)
        self.rprecision = MotionRPrecisionReward(evaluator, mode=mode, pool=pool, seed=seed, **files)
        self.evaluator = self.matching.evaluator

    def __call__(self, artifacts: Sequence[Motion | None], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        a = self.matching(artifacts, prompts)
        b = self.rprecision(artifacts, prompts)
        return {
            self.name: self.w * a["motion_matching"] + (1 - self.w) * b["motion_rprecision"],
            "matching": a["motion_matching"],
            "distance": a["distance"],
            "rprecision": b["motion_rprecision"],
            "top1": b["top1"],
        }

    @property
    def differentiable(self) -> bool:
        """Whether ``score_latents`` can differentiate through the evaluator (softmax R-precision)."""
        return self.matching.differentiable and self.rprecision.differentiable

    def score_embeddings(self, motion: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """w·matching + (1 − w)·R-precision (B,) from one motion encoding (B, D)."""
        a = self.matching.score_embeddings(motion, prompts)
        return self.w * a + (1 - self.w) * self.rprecision.score_embeddings(motion, prompts)


class TMRCosineReward(_MotionReward):
    """TMR score cos(text, motion)/2 + 0.5 (``tmr_cosine``)."""

    name = "tmr_cosine"

    def __init__(self, evaluator: str = "tiny-tmr", batch_size: int = 64) -> None:
        super().__init__(evaluator, batch_size)
        if getattr(self.evaluator, "kind", "") != "cosine":
            raise R3DError(f"tmr_cosine needs a TMR evaluator, got {evaluator}")

    def __call__(self, artifacts: Sequence[Motion | None], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        t, m = self._embed(artifacts, prompts)
        cos = torch.nn.functional.cosine_similarity(t, m, dim=-1)
        out = {self.name: (cos / 2 + 0.5).float(), "cosine": cos}
        self._none_to_min(out, artifacts)
        return out

    def score_embeddings(self, motion: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        text = self.evaluator.embed_texts(list(prompts)).float().to(motion.device)
        return torch.nn.functional.cosine_similarity(text, motion, dim=-1) / 2 + 0.5


class TMRMatchingReward(MotionMatchingReward):
    """Distance between unit TMR embeddings mapped linear / exp / sigmoid (``tmr_matching``)."""

    name = "tmr_matching"

    def __init__(
        self,
        evaluator: str = "tiny-tmr",
        mapping: str = "linear",
        center: float | None = None,
        scale: float | None = None,
        batch_size: int = 64,
    ) -> None:
        super().__init__(evaluator, mapping, center if center is not None else 2.0**0.5, scale, batch_size)
        if getattr(self.evaluator, "kind", "") != "cosine":
            raise R3DError(f"tmr_matching needs a TMR evaluator, got {evaluator}")
