"""Recipes: YAML → typed config, overrides, extends, one-line errors."""

from pathlib import Path

import pytest
import torch
import yaml

from r3d.core.errors import R3DError
from r3d.core.recipe import StrictModel, load_recipe, save_resolved


class Train(StrictModel):
    lr: float = 1e-4
    steps: int = 10
    use_ema: bool = False
    widths: list[int] = [1, 2]


class Schema(StrictModel):
    name: str = "run"
    train: Train = Train()


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_overrides_are_typed(tmp_path):
    p = write(tmp_path, "r.yaml", {"name": "x"})
    cfg = load_recipe(
        p, Schema, ["train.lr=3e-4", "train.steps=7", "train.use_ema=true", "train.widths=[4, 5]"]
    )
    assert cfg.train.lr == 3e-4 and cfg.train.steps == 7 and cfg.train.use_ema is True
    assert cfg.train.widths == [4, 5]


def test_scientific_notation_in_yaml_is_a_float(tmp_path):
    cfg = load_recipe(write(tmp_path, "r.yaml", "train:\n  lr: 1e-3\n"), Schema)
    assert cfg.train.lr == 1e-3


def test_extends_merges_deeply(tmp_path):
    write(tmp_path, "base.yaml", {"name": "base", "train": {"lr": 0.5, "steps": 3}})
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "train": {"steps": 9}})
    cfg = load_recipe(child, Schema)
    assert (cfg.name, cfg.train.lr, cfg.train.steps) == ("base", 0.5, 9)


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(R3DError, match="cycle"):
        load_recipe(tmp_path / "a.yaml", Schema)


@pytest.mark.parametrize(
    "content,overrides,pattern",
    [
        ({"train": {"lrr": 1}}, [], r"unknown key 'train.lrr'; did you mean 'train.lr'\?"),
        ({"trian": {}}, [], r"unknown key 'trian'; did you mean 'train'\?"),
        ({"train": {"steps": "many"}}, [], r"'train.steps' = 'many'"),
        ({}, ["train.stpes=3"], r"did you mean 'train.steps'"),
        ("train: [unclosed\n", [], r"YAML syntax error .*line"),
        ("- a\n- b\n", [], r"must be a YAML mapping"),
        ({}, ["nonsense"], r"--set expects key.path=value"),
    ],
)
def test_bad_recipes_give_one_line_errors(tmp_path, content, overrides, pattern):
    p = write(tmp_path, "r.yaml", content)
    with pytest.raises(R3DError, match=pattern) as info:
        load_recipe(p, Schema, overrides)
    assert "\n" not in str(info.value)


def test_missing_recipe(tmp_path):
    with pytest.raises(R3DError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml", Schema)


def test_resolved_recipe_round_trips(tmp_path):
    cfg = load_recipe(write(tmp_path, "r.yaml", {"train": {"steps": 4}}), Schema, ["train.lr=0.25"])
    out = save_resolved(cfg, tmp_path / "run" / "recipe.yaml")
    assert load_recipe(out, Schema) == cfg


def test_run_device_reaches_factories_that_take_a_device_unless_the_recipe_sets_one():
    """run.device is passed to a policy / reward factory with a ``device`` argument the recipe left
    unset; 'auto' passes nothing (the factory's own default); an explicit option wins; a factory
    without a device argument never receives one (it would be an unknown option)."""
    from r3d.core.registry import POLICIES, REWARDS, with_run_device

    assert with_run_device("tiny_motion", POLICIES, "policy", {}, "cpu") == {"device": "cpu"}
    assert with_run_device("tiny_motion", POLICIES, "policy", {}, "auto") == {}
    assert with_run_device("tiny_motion", POLICIES, "policy", {"device": "meta"}, "cpu") == {"device": "meta"}
    assert with_run_device("geometry", REWARDS, "reward", {"binary_watertight": True}, "cuda") == {
        "binary_watertight": True
    }


def test_cuda_run_device_without_a_gpu_is_a_one_line_error(tmp_path):
    import torch

    from r3d.commands.runner import make_trainer
    from r3d.core.config import GRPORecipe

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    repo = Path(__file__).resolve().parent.parent
    cfg = load_recipe(repo / "recipes" / "tiny_mesh.yaml", GRPORecipe, ["run.device=cuda"])
    with pytest.raises(R3DError, match="no CUDA device"):
        make_trainer(cfg, tmp_path)


def test_two_rewards_of_one_type_under_their_own_labels():
    """`type:` makes the key a label: two `geometry` entries with other weights stay apart in the mix
    and in the logged components; an entry without `type` is its own type, as before."""
    from r3d.commands.runner import build_rewards
    from r3d.core.config import GRPORecipe

    cfg = GRPORecipe.model_validate(
        {
            "prompts": {"train": ["a cube"]},
            "rewards": {
                "geometry": {"weight": 1.0},
                "geometry_again": {"type": "geometry", "weight": 0.5},
            },
        }
    )
    assert [cfg.reward_type(k) for k in cfg.rewards] == ["geometry", "geometry"]
    mix = build_rewards(cfg)
    import trimesh

    total, comps = mix([trimesh.creation.box()], ["a cube"])
    assert torch.equal(comps["geometry"], comps["geometry_again"])
    assert "geometry_again/watertight" in comps
    assert torch.allclose(total, 1.5 * comps["geometry"])
