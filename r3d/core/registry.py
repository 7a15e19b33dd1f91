"""Name → factory lookup for policies and rewards, resolved lazily so core imports no backend.

A name is either a registered short name or a ``package.module:factory`` path, so a new backend
plugs in from a recipe without touching r3d (``model: {name: mypkg.policy:load}``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from r3d.core.errors import R3DError, did_you_mean

POLICIES: dict[str, str] = {
    "tiny_shapes": "r3d.models.tiny_shapes:load_tiny_shapes",
    "tiny_motion": "r3d.models.mdm:load_tiny_motion",
    "hunyuan3d": "r3d.models.hunyuan3d:load_hunyuan3d_policy",
    "diffsplat": "r3d.models.diffsplat:load_diffsplat",
    "tiny_diffsplat": "r3d.models.diffsplat:load_tiny_diffsplat",
}

REWARDS: dict[str, str] = {
    "geometry": "r3d.rewards.geometry:GeometryReward",
    "normal": "r3d.rewards.normal:NormalReward",
    "semantic": "r3d.rewards.semantic:SemanticReward",
    "uni3d": "r3d.rewards.uni3d:Uni3DReward",
    "silhouette": "r3d.rewards.render2d:SilhouetteReward",
    "normal_consistency": "r3d.rewards.render2d:NormalConsistencyReward",
    "image_model": "r3d.rewards.render2d:ImageModelReward",
    "motion_matching": "r3d.rewards.motion:MotionMatchingReward",
    "motion_rprecision": "r3d.rewards.motion:MotionRPrecisionReward",
    "motion_combined": "r3d.rewards.motion:MotionCombinedReward",
    "tmr_cosine": "r3d.rewards.motion:TMRCosineReward",
    "tmr_matching": "r3d.rewards.motion:TMRMatchingReward",
    "remote": "r3d.rewards.remote:RemoteReward",
    "vlm_judge": "r3d.rewards.vlm:VLMJudgeReward",
}

#: Gold measures (``eval.gold``): judges used at evaluation only, never as a training reward.
GOLD: dict[str, str] = {
    "shape_fit": "r3d.gold.shapes:ShapeFitGold",
    "mesh_sanity": "r3d.gold.shapes:MeshSanityGold",
    "semantic_prob": "r3d.gold.semantic:SemanticGold",
    "prior_preservation": "r3d.gold.prior:PriorPreservationGold",
    "t2m_retrieval": "r3d.gold.motion:T2MRetrievalGold",
    "tmr_retrieval": "r3d.gold.motion:TMRRetrievalGold",
    "clip_views": "r3d.gold.clip:ClipViewsGold",
}

#: Gold measures of a recipe that leaves ``eval.gold`` unset, by policy name.
GOLD_DEFAULTS: dict[str, list[str]] = {
    "tiny_shapes": ["shape_fit", "mesh_sanity"],
    "tiny_motion": ["t2m_retrieval"],
    "hunyuan3d": ["mesh_sanity", "clip_views"],
    "diffsplat": ["clip_views", "prior_preservation"],
    "tiny_diffsplat": ["prior_preservation"],
}


def resolve(name: str, table: dict[str, str], kind: str) -> Callable[..., Any]:
    """The factory for ``name`` (a key of ``table`` or a ``module:attr`` path)."""
    target = table.get(name, name if ":" in name else None)
    if target is None:
        more = did_you_mean(name, table) or f"; known: {', '.join(sorted(table))}"
        raise R3DError(f"unknown {kind} '{name}'{more}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise R3DError(f"{kind} '{name}' could not be imported ({module_name}): {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise R3DError(f"{kind} '{name}': {module_name} has no attribute {attr}") from None


def check_options(factory: Callable[..., Any], options: dict[str, Any], what: str) -> None:
    """Unknown keyword options of ``factory`` → R3DError with a did-you-mean."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in options:
        if key not in params:
            more = did_you_mean(key, params) or f"; options: {', '.join(params) or '(none)'}"
            raise R3DError(f"{what} has no option '{key}'{more}")


def build_policy(name: str, **options: Any) -> Any:
    factory = resolve(name, POLICIES, "policy")
    check_options(factory, options, f"policy '{name}'")
    return factory(**options)


def build_reward(name: str, **options: Any) -> Any:
    factory = resolve(name, REWARDS, "reward")
    check_options(factory, options, f"reward '{name}'")
    return factory(**options)


def build_gold(name: str, **options: Any) -> Any:
    factory = resolve(name, GOLD, "gold measure")
    check_options(factory, options, f"gold measure '{name}'")
    return factory(**options)


def with_run_device(
    name: str, table: dict[str, str], kind: str, options: dict[str, Any], device: str
) -> dict[str, Any]:
    """``options`` plus ``device`` (the recipe's ``run.device``) when the factory takes a ``device``
    argument the recipe left unset; ``auto`` adds nothing, so each factory keeps its own default."""
    if device == "auto" or "device" in options:
        return dict(options)
    if "device" not in inspect.signature(resolve(name, table, kind)).parameters:
        return dict(options)
    return {**options, "device": device}
