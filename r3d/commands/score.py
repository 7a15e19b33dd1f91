"""The library side of ``r3d score``: choosing rewards by name and scoring mesh files, one record per
file (a file that cannot be read or scored is reported in its record, the batch goes on)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from r3d.core.errors import R3DError, did_you_mean
from r3d.core.io import atomic_write_json, atomic_write_text
from r3d.core.registry import REWARDS, build_reward
from r3d.core.rewards import Reward

#: Reward name → "module:Class" (the registry lives in r3d.core.registry; every class takes keyword options).
REGISTRY: dict[str, str] = REWARDS
#: Rewards that need a text prompt (they are skipped by ``r3d score`` without ``--prompt``).
NEEDS_PROMPT: frozenset[str] = frozenset({"semantic", "uni3d", "silhouette", "vlm_judge"})


def available_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(REGISTRY)


def _check_name(name: str) -> None:
    if name not in REGISTRY:
        raise R3DError(
            f"unknown reward {name!r}{did_you_mean(name, REGISTRY)}; available: {', '.join(available_rewards())}"
        )


def select_rewards(spec: str | Sequence[str], has_prompt: bool) -> tuple[list[str], list[str]]:
    """Parse ``"geometry,normal,semantic"`` into (names to run, names skipped for lack of a prompt).

    Names are validated, stripped and de-duplicated in order. Raises R3DError for an unknown name or
    when nothing is left to run.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if name and name not in names:
            _check_name(name)
            names.append(name)
    if not names:
        raise R3DError("no reward given (e.g. --rewards geometry,normal)")
    skipped = [n for n in names if n in NEEDS_PROMPT and not has_prompt]
    run = [n for n in names if n not in skipped]
    if not run:
        raise R3DError(f"reward(s) {', '.join(skipped)} need --prompt TEXT")
    return run, skipped


@dataclass
class ScoreRecord:
    """Scores of one mesh file. ``scores`` maps a reward's name to its headline and ``name/sub`` to its
    sub-scores; ``label``/``label_prob`` hold a classifying reward's top class. ``ok`` is False when the
    file could not be loaded or a reward failed on it (``error`` says why)."""

    path: str
    ok: bool
    error: str | None = None
    faces: int | None = None
    vertices: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    label_prob: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict: scores rounded to 6 decimals (they are float32), non-finite ones None."""
        record = asdict(self)
        record["scores"] = {k: (round(v, 6) if math.isfinite(v) else None) for k, v in self.scores.items()}
        return record


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split()) if not isinstance(exc, R3DError) else str(exc)


def _per_item(
    fn: Callable[[list[Any], list[str]], list[Any]], meshes: list[Any], prompts: list[str], what: str
) -> list[Any]:
    """``fn(meshes, prompts)`` → one result per mesh, or an error string for a mesh it failed on.

    The batch runs in one call; if that call raises, each mesh is retried alone to isolate the culprit.
    """
    try:
        return fn(meshes, prompts)
    except Exception as exc:
        if len(meshes) == 1:
            return [f"{what} failed: {_one_line(exc)}"]
    results = []
    for mesh, prompt in zip(meshes, prompts, strict=True):
        try:
            results.append(fn([mesh], [prompt])[0])
        except Exception as exc:
            results.append(f"{what} failed: {_one_line(exc)}")
    return results


def _reward_rows(reward: Reward) -> Callable[[list[Any], list[str]], list[dict[str, float]]]:
    """Wrap ``reward`` to return per-mesh ``{name: headline, name/sub: value}`` dicts."""

    def run(meshes: list[Any], prompts: list[str]) -> list[dict[str, float]]:
        out = {k: v.reshape(-1).tolist() for k, v in reward(meshes, prompts).items()}
        keys = {k: reward.name if k == reward.name else f"{reward.name}/{k}" for k in out}
        return [{keys[k]: float(v[i]) for k, v in out.items()} for i in range(len(meshes))]

    return run


def score_files(
    paths: Sequence[str | os.PathLike],
    rewards: Sequence[Reward],
    prompt: str | None = None,
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> list[ScoreRecord]:
    """Load and score mesh files in batches; one record per path, in order.

    A file that cannot be loaded, or that a reward fails on, gets ``ok=False`` and a one-line ``error``;
    the others are unaffected. ``on_progress(n)`` is called after each batch with the number of files
    it held. Rewards with a ``classify(meshes) -> [(label, prob)]`` method also fill ``label``.
    """
    from r3d.mesh.io import load_mesh

    records: list[ScoreRecord] = []
    for start in range(0, len(paths), batch_size):
        batch = [ScoreRecord(path=os.fspath(p), ok=True) for p in paths[start : start + batch_size]]
        loaded: list[tuple[ScoreRecord, Any]] = []
        for record in batch:
            try:
                mesh = load_mesh(record.path)
            except R3DError as exc:  # the message starts with the path, which the record already holds
                record.ok, record.error = False, str(exc).removeprefix(f"{record.path}: ")
                continue
            record.faces, record.vertices = len(mesh.faces), len(mesh.vertices)
            loaded.append((record, mesh))
        meshes = [m for _, m in loaded]
        prompts = [prompt or ""] * len(meshes)
        for reward in rewards if meshes else ():
            rows = _per_item(_reward_rows(reward), meshes, prompts, f"reward {reward.name!r}")
            classify = getattr(reward, "classify", None)
            labels = (
                _per_item(
                    lambda ms, _ps, fn=classify: list(fn(ms)), meshes, prompts, f"{reward.name} classify"
                )
                if callable(classify)
                else [None] * len(meshes)
            )
            for (record, _), row, label in zip(loaded, rows, labels, strict=True):
                for result in (row, label):
                    if isinstance(result, str):
                        record.ok = False
                        record.error = result if record.error is None else f"{record.error}; {result}"
                if isinstance(row, dict):
                    record.scores.update(row)
                if isinstance(label, tuple | list):
                    record.label, record.label_prob = str(label[0]), float(label[1])
        records.extend(batch)
        if on_progress is not None:
            on_progress(len(batch))
    return records


def write_records(records: Sequence[ScoreRecord], path: str | os.PathLike) -> None:
    """Write score records atomically: CSV for a ``.csv`` suffix (one column per score), else JSON list."""
    path = os.fspath(path)
    if not path.lower().endswith(".csv"):
        atomic_write_json(path, [r.as_dict() for r in records])
        return
    import csv
    import io

    keys = list(dict.fromkeys(k for r in records for k in r.scores))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "ok", "error", "faces", "vertices", *keys, "label", "label_prob"])
    for r in records:
        row = r.as_dict()
        scores = [row["scores"].get(k) for k in keys]
        writer.writerow([r.path, r.ok, r.error, r.faces, r.vertices, *scores, r.label, r.label_prob])
    atomic_write_text(path, buffer.getvalue())


def records_json(records: Sequence[ScoreRecord]) -> str:
    """The records as a JSON list (the ``--json`` output)."""
    return json.dumps([r.as_dict() for r in records], indent=2)


__all__ = [
    "NEEDS_PROMPT",
    "REGISTRY",
    "ScoreRecord",
    "records_json",
    "available_rewards",
    "build_reward",
    "score_files",
    "select_rewards",
    "write_records",
]
