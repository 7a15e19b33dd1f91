"""The over-optimisation guard: unit behaviour, a hackable reward that trips it, tiny_mesh that does not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import trimesh

from r3d.commands.runner import build_gold_set, finish_run, load_adapter, make_trainer
from r3d.core.checkpoint import load_state
from r3d.core.config import GRPORecipe
from r3d.core.gold import OverOptimisationGuard, describe
from r3d.core.grpo import GRPOTrainer
from r3d.core.recipe import read_yaml, validate
from r3d.core.registry import build_policy
from r3d.core.rewards import RewardMix
from r3d.gold.shapes import mesh_occupancy

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


class VolumeReward:
    """A deliberately hackable reward: the occupied volume of the mesh alone (world units³)."""

    name = "volume"
    higher_is_better = True
    value_range = (0.0, 8.0)
    differentiable = False

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        vol = [
            float(mesh_occupancy(m, 16).sum()) * (2 / 16) ** 3 if isinstance(m, trimesh.Trimesh) else 0.0
            for m in artifacts
        ]
        return {self.name: torch.tensor(vol, dtype=torch.float32)}


def _record(it: int, reward: float, gold: float, se: float = 0.01) -> dict[str, float]:
    return {"iteration": it, "eval/reward": reward, "eval/gold/g": gold, "eval/gold/g/se": se}


def test_guard_fires_after_k_drops_beyond_noise_while_the_reward_rises() -> None:
    """K = 2 consecutive drops larger than 2·√(se² + se_best²) with the reward above its value at the
    best fire the guard; a drop within the noise, a drop while the reward fell, or an interrupted
    streak do not."""
    guard = OverOptimisationGuard(["g"], patience=2, z=2.0)
    assert guard.update(_record(0, 1.0, 0.80)) == [] and guard.new_best
    assert guard.update(_record(1, 1.1, 0.79)) == []  # within the noise (0.028)
    assert guard.tracks["g"].streak == 0
    assert guard.update(_record(2, 1.2, 0.70)) == []  # first drop
    events = guard.update(_record(3, 1.3, 0.69))  # second: fires
    assert [e["gold"] for e in events] == ["g"] and events[0]["best_iteration"] == 0
    assert "held-out reward rose" in describe(events[0])

    quiet = OverOptimisationGuard(["g"], patience=2)
    quiet.replay([_record(0, 1.0, 0.8), _record(1, 0.9, 0.6), _record(2, 0.8, 0.5)])  # reward fell too
    assert not quiet.events
    broken = OverOptimisationGuard(["g"], patience=2)
    broken.replay([_record(0, 1.0, 0.8), _record(1, 1.2, 0.6), _record(2, 1.3, 0.8), _record(3, 1.4, 0.6)])
    assert not broken.events  # the streak was interrupted by a recovery
    assert broken.summary()["best"]["g"]["value"] == 0.8


def _hack_recipe(out: Path) -> GRPORecipe:
    data = {
        "run": {"seed": 0},
        "prompts": {"train": ["a cone", "a pyramid"], "eval": ["a cone", "a pyramid"]},
        "rewards": {"geometry": {"weight": 1.0}},  # replaced by VolumeReward below
        "sampler": {"num_steps": 6},
        "train": {
            "iterations": 20,
            "prompts_per_iteration": 2,
            "group_size": 8,
            "batch_size": 16,
            "lr": 1e-2,
            "stop_on_gold_drop": 2,
        },
        "eval": {"every": 2, "samples_per_prompt": 4, "gold": ["shape_fit", "mesh_sanity"]},
        "checkpoint": {"every": 100},
    }
    return validate(data, GRPORecipe, source="test")


def test_guard_stops_a_run_that_hacks_a_volume_reward(tmp_path: Path) -> None:
    """Trained on volume alone, cones and pyramids bloat: the reward climbs while the analytic fit and
    the mesh sanity fall. The guard fires, the run stops early, summary.json says so, and the best-gold
    adapter (an earlier iteration) is a checkpoint that sample --adapter and export read."""
    from r3d.commands.export import export_run

    torch.set_num_threads(1)
    cfg = _hack_recipe(tmp_path)
    rewards = RewardMix([VolumeReward()], [1.0])
    run = tmp_path / "run"
    trainer = GRPOTrainer(cfg, build_policy("tiny_shapes"), rewards, run, gold=build_gold_set(cfg, rewards))
    records = trainer.train()
    evals = [r for r in records if "eval/reward" in r]
    assert trainer.iteration < cfg.train.iterations  # stopped by the guard
    assert evals[-1]["eval/reward"] > evals[0]["eval/reward"] + 0.5
    assert evals[-1]["eval/gold/shape_fit"] < max(r["eval/gold/shape_fit"] for r in evals) - 0.05
    guard = finish_run(run)["guard"]
    assert guard["fired"] and guard["stopped"] and guard["first"]["iteration"] == trainer.iteration
    best = run / "checkpoint_best_gold"
    assert guard["best_gold_checkpoint"] == str(best)
    assert guard["best"]["shape_fit"]["iteration"] < trainer.iteration
    state = load_state(best)
    assert state["iteration"] == guard["best"]["shape_fit"]["iteration"]
    load_adapter(build_policy("tiny_shapes"), best)  # what r3d sample --adapter does
    exported = export_run(best, tmp_path / "exported")
    assert Path(exported["adapter"], "adapter_model.safetensors").is_file()


def test_guard_stays_quiet_on_a_short_tiny_mesh_run(tmp_path: Path) -> None:
    """The shipped tiny_mesh recipe (semantic + geometry rewards), shortened: its gold measures do not
    fall beyond their noise while the reward rises, so the guard never fires."""
    torch.set_num_threads(1)
    data = read_yaml(RECIPES / "tiny_mesh.yaml")
    data["train"].update({"iterations": 8, "group_size": 8, "batch_size": 32})
    data["eval"].update({"every": 2, "samples_per_prompt": 4})
    cfg = validate(data, GRPORecipe, source="tiny_mesh.yaml")
    run = tmp_path / "tiny_mesh"
    trainer = make_trainer(cfg, run, log=lambda _: None)
    trainer.train()
    guard = finish_run(run)["guard"]
    assert guard["watching"] == ["shape_fit", "mesh_sanity"]
    assert not guard["fired"], guard["events"]
