"""Gold measures: analytic shape fit, mesh sanity, prior preservation, metrics, recipe wiring."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from r3d.commands.runner import build_gold_set, gold_names
from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.gold import EvalContext, GoldSet
from r3d.core.recipe import read_yaml, validate
from r3d.core.registry import GOLD, GOLD_DEFAULTS, build_policy, resolve
from r3d.core.rewards import RewardMix
from r3d.gold.prior import PriorPreservationGold
from r3d.gold.shapes import MeshSanityGold, ShapeFitGold, family_occupancy, fit_families, mesh_occupancy
from r3d.mesh.shapes import CLASSES, Shape, grid_points, random_shape, shape_mesh

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _recipe(**eval_section: object) -> GRPORecipe:
    data = {"prompts": {"train": ["a cube"]}, "rewards": {"geometry": {}}, "eval": eval_section}
    return validate(data, GRPORecipe, source="test")


def test_family_occupancy_is_the_generator_solid() -> None:
    """The fit's fast inside tests are exactly the procedural solids (sdf < 0) of every class, in any
    pose: a wrong inequality (e.g. a cone's apex at the wrong end) would be caught here."""
    points = grid_points(24)
    rng = np.random.default_rng(3)
    for cls, name in enumerate(CLASSES):
        for _ in range(2):
            shape = random_shape(cls, rng, max_tilt_deg=None)
            local = (points - shape.offset) @ shape.rotation
            fast = family_occupancy(name, shape.params, local)
            assert np.array_equal(fast, shape.sdf(points) < 0), name


def test_mesh_occupancy_matches_the_sdf() -> None:
    """Ray-parity occupancy of a marching-cubes mesh agrees with its SDF up to discretisation: every
    cell where they differ lies within one cell (2/24) of the surface. A stray column filled to the top
    by a ray through an edge, or an axis-order mistake, puts disagreements far from it."""
    points = grid_points(24)
    rng = np.random.default_rng(0)
    for cls in range(len(CLASSES)):
        shape = random_shape(cls, rng)
        occ = mesh_occupancy(shape_mesh(shape, 32), 24).reshape(-1)
        sdf = shape.sdf(points)
        assert np.abs(sdf[occ != (sdf < 0)]).max(initial=0.0) < 2 / 24, CLASSES[cls]
        assert occ.sum() > 0.8 * (sdf < 0).sum()
    assert not mesh_occupancy(None).any()


def test_analytic_class_of_clean_shapes_is_their_class() -> None:
    """Analytic accuracy ≈ 1 on clean procedural shapes of every class (2 random poses/sizes each, all
    right), with the prompt's family fitting at IoU ≥ 0.7; a fit that confuses families fails."""
    rng = np.random.default_rng(1)
    for cls, name in enumerate(CLASSES):
        for _ in range(2):
            fits = fit_families(shape_mesh(random_shape(cls, rng), 32), always=name)
            best = max(fits, key=lambda n: fits[n].iou)
            assert best == name, (name, {n: round(f.iou, 3) for n, f in fits.items()})
            assert fits[name].iou >= 0.7


def test_shape_fit_components() -> None:
    """shape_fit scores the prompt's family, a None mesh scores 0, acc/<class> is NaN off-class so its
    mean is the per-class analytic accuracy."""
    cube = shape_mesh(Shape(1, {"ax": 0.5, "ay": 0.45, "az": 0.4}), 32)
    out = ShapeFitGold()([cube, cube, None], ["a cube", "a sphere", "a torus"])
    assert out["shape_fit"][0] > 0.9 and out["analytic_acc"][0] == 1
    assert out["shape_fit"][1] < out["shape_fit"][0] and out["analytic_acc"][1] == 0
    assert out["shape_fit"][2] == 0 and out["analytic_acc"][2] == 0
    assert out["acc/cube"][0] == 1 and math.isnan(float(out["acc/cube"][1]))
    assert set(out) >= {"acc/cube", "acc/sphere", "acc/torus", "best_iou"}
    with pytest.raises(R3DError, match="tiny-shapes prompts"):
        ShapeFitGold()([cube], ["a chair"])


def test_mesh_sanity_catches_what_the_geometry_reward_does_not() -> None:
    """Clean shapes pass every check; an inverted (inside-out) mesh fails orientation, a sphere asked
    for as a torus fails genus, a blown-up cube fails volume, a needle fails aspect."""
    gold = MeshSanityGold()
    cube = shape_mesh(Shape(1, {"ax": 0.4, "ay": 0.35, "az": 0.4}), 32)
    assert gold.check(cube, CLASSES.index("cube")) == dict.fromkeys(
        ("orientation", "aspect", "genus", "volume"), 1.0
    )
    inverted = cube.copy()
    inverted.invert()
    assert gold.check(inverted, 1)["orientation"] == 0
    sphere = shape_mesh(Shape(0, {"r": 0.6}), 32)
    assert gold.check(sphere, CLASSES.index("torus"))["genus"] == 0
    big = shape_mesh(Shape(1, {"ax": 0.9, "ay": 0.9, "az": 0.9}), 32)
    assert gold.check(big, 1)["volume"] == 0
    needle = shape_mesh(Shape(3, {"r": 0.06, "half_h": 0.8}), 64)
    assert gold.check(needle, None)["aspect"] == 0
    out = gold([cube, None], ["a cube", "a cube"])
    assert out["mesh_sanity"].tolist() == [1.0, 0.0]


def test_prior_preservation_is_one_at_the_base_and_falls_away_from_it() -> None:
    """Identical samples score 1 (IoU and exp(−0)); a different shape from the same noise scores less."""
    a = shape_mesh(Shape(0, {"r": 0.6}), 32)
    b = shape_mesh(Shape(1, {"ax": 0.5, "ay": 0.5, "az": 0.2}), 32)
    lat = torch.zeros(2, 4)
    ref = EvalContext(lat, None, lambda: (lat, [a, a]))
    out = PriorPreservationGold()([a, b], ["x", "y"], context=ref)
    assert out["prior_preservation"][0] == 1.0 and out["prior_preservation"][1] < 0.8
    motions = [torch.zeros(3), torch.zeros(3)]  # not meshes: the latent distance decides
    moved = EvalContext(lat + 1.0, None, lambda: (lat, motions))
    out = PriorPreservationGold()(motions, ["x", "y"], context=moved)
    assert torch.allclose(out["prior_preservation"], torch.exp(torch.tensor(-1.0)).expand(2))


class _Fixed:
    name = "fixed"
    higher_is_better = True
    value_range = (0.0, 1.0)

    def __call__(self, artifacts: list, prompts: list) -> dict[str, torch.Tensor]:
        return {
            "fixed": torch.tensor([0.0, 1.0, 1.0, 0.0]),
            "part": torch.tensor([1.0, math.nan, 3.0, math.nan]),
        }


def test_gold_set_logs_mean_components_and_standard_error() -> None:
    """eval/gold/<name> is the mean, components skip NaN, /se is std/√n (the guard's noise)."""
    ctx = EvalContext(torch.zeros(4, 1), None, lambda: (torch.zeros(4, 1), [None] * 4))
    out = GoldSet([_Fixed()])([None] * 4, ["p"] * 4, ctx)
    assert out["eval/gold/fixed"] == 0.5
    assert out["eval/gold/fixed/part"] == 2.0
    assert out["eval/gold/fixed/se"] == pytest.approx(float(torch.tensor([0.0, 1, 1, 0]).std()) / 2)
    assert GoldSet([_Fixed()]).guarded == ["fixed"]


def test_gold_names_are_validated_like_reward_names() -> None:
    """A misspelt gold name is a one-line R3DError with a suggestion; options for an unlisted measure
    and duplicates are refused by the schema."""
    with pytest.raises(R3DError, match="did you mean 'shape_fit'"):
        build_gold_set(_recipe(gold=["shape_fitt"]), RewardMix([], []))
    with pytest.raises(R3DError, match="gold_options"):
        _recipe(gold=["shape_fit"], gold_options={"mesh_sanity": {}})
    with pytest.raises(R3DError, match="twice"):
        _recipe(gold=["shape_fit", "shape_fit"])
    with pytest.raises(R3DError, match="no option 'resolutio'"):
        build_gold_set(
            _recipe(gold=["shape_fit"], gold_options={"shape_fit": {"resolutio": 8}}), RewardMix([], [])
        )


def test_a_gold_measure_may_not_be_a_trained_reward() -> None:
    """semantic_prob is refused next to the semantic reward (same classifier); t2m_retrieval next to a
    reward scoring with the same T2M evaluator. Weight-0 (logged only) rewards do not count."""
    from r3d.rewards.motion import MotionMatchingReward
    from r3d.rewards.semantic import SemanticReward

    semantic = RewardMix([SemanticReward()], [1.0])
    with pytest.raises(R3DError, match="semantic"):
        build_gold_set(_recipe(gold=["semantic_prob"]), semantic)
    assert build_gold_set(_recipe(gold=["semantic_prob"]), RewardMix([SemanticReward()], [0.0])).measures
    t2m = RewardMix([MotionMatchingReward("tiny-t2m")], [1.0])
    with pytest.raises(R3DError, match="same evaluator"):
        build_gold_set(_recipe(gold=["t2m_retrieval"]), t2m)
    assert build_gold_set(_recipe(gold=["tmr_retrieval"]), t2m).measures[0].name == "tmr_retrieval"


def test_every_shipped_recipe_names_gold_measures_that_resolve() -> None:
    """Each GRPO recipe has gold measures (its own eval.gold or its model's default), all registered,
    and none shares its name with one of the recipe's rewards."""
    for path in sorted(RECIPES.glob("*.yaml")):
        data = read_yaml(path)
        if "rewards" not in data or "prompts" not in data:
            continue  # not a GRPO recipe (bench-edit, VQ-VAE)
        cfg = validate(data, GRPORecipe, source=str(path))
        names = gold_names(cfg)
        assert names, path.name
        for name in names:
            assert name in GOLD and name not in cfg.rewards, (path.name, name)
            resolve(name, GOLD, "gold measure")
    assert set(GOLD_DEFAULTS) <= {"tiny_shapes", "tiny_motion", "hunyuan3d", "diffsplat", "tiny_diffsplat"}


def test_base_model_samples_are_scored_by_the_trainer_with_reference(tmp_path: Path) -> None:
    """Through the trainer: eval/gold/* appear in an evaluation, prior preservation of the base is 1
    (the adapter starts at zero), and the base samples are computed once."""
    from r3d.core.grpo import GRPOTrainer

    cfg = validate(
        {
            "prompts": {"train": ["a cube"], "eval": ["a cube"]},
            "rewards": {"geometry": {}},
            "sampler": {"num_steps": 3},
            "eval": {"samples_per_prompt": 2, "gold": ["mesh_sanity", "prior_preservation"]},
        },
        GRPORecipe,
        source="test",
    )
    from r3d.rewards.geometry import GeometryReward

    rewards = RewardMix([GeometryReward()], [1.0])
    trainer = GRPOTrainer(
        cfg, build_policy("tiny_shapes"), rewards, tmp_path / "run", gold=build_gold_set(cfg, rewards)
    )
    metrics = trainer._evaluate("t")
    assert metrics["eval/gold/prior_preservation"] == 1.0
    assert metrics["eval/gold/prior_preservation/latent_rms"] == 0.0
    assert "eval/gold/mesh_sanity/se" in metrics
    first = trainer._reference
    trainer._evaluate("t")
    assert trainer._reference is first


@pytest.mark.parametrize("name", ["t2m_retrieval", "tmr_retrieval"])
def test_motion_retrieval_gold_prefers_the_true_motion(name: str) -> None:
    """With the evaluator that is not the reward: true caption–motion pairs retrieve their caption
    (top-3 hit) more often and match closer than the same motions with shifted captions; a None motion
    misses."""
    from r3d.motion.artifacts import Motion
    from r3d.motion.synthetic import make_motion

    specs = [make_motion(100 + i, a) for i, a in enumerate(["walk", "jump", "wave", "squat", "kick", "clap"])]
    motions, captions = [Motion(s.features) for s in specs], [s.caption for s in specs]
    gold = resolve(name, GOLD, "gold measure")()
    right = gold(motions, captions)
    wrong = gold(motions[1:] + motions[:1], captions)
    assert right[name].mean() > wrong[name].mean()
    assert right["matching"].mean() < wrong["matching"].mean()
    assert gold([None], captions[:1])[name].tolist() == [0.0]


def test_clip_views_is_declared_for_real_backends_and_names_missing_weights(tmp_path: Path) -> None:
    """The real-backend recipes list clip_views (a CLIP that is not their reward); a local CLIP folder
    that is not there is reported by the dry-run hook, a present one or a hub id is not."""
    from r3d.gold.clip import ClipViewsGold

    for recipe in ("mesh_uni3d.yaml", "diffsplat_nabla_normal.yaml"):
        cfg = validate(read_yaml(RECIPES / recipe), GRPORecipe, source=recipe)
        assert "clip_views" in gold_names(cfg) and "clip_views" not in cfg.rewards
    missing = ClipViewsGold.missing_weights(model=str(tmp_path / "clip"))
    assert missing and "not found" in missing[0]
    (tmp_path / "clip").mkdir()
    assert ClipViewsGold.missing_weights(model=str(tmp_path / "clip")) == []
    assert ClipViewsGold.missing_weights(model="openai/clip-vit-base-patch32") == []
