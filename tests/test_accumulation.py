"""Gradient accumulation (train.samples_per_update): N accumulated passes equal one pass of N× the batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_distributed import LAUNCHERS, RECIPE
from test_grpo_trainer import recipe
from toy_policy import ToyReward, make

from r3d.cli.main import main
from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.grpo import GRPOTrainer
from r3d.core.io import read_jsonl
from r3d.core.rewards import RewardMix

ROOT = Path(__file__).resolve().parents[1]
TINY_MESH = ROOT / "recipes" / "tiny_mesh.yaml"
COMPARED = ("reward", "eval/reward", "policy_loss", "kl", "approx_kl", "grad_norm")


def toy_recipe(**train) -> GRPORecipe:
    """The trainer tests' toy recipe with 64 samples an iteration, 2 inner epochs and the KL on."""
    defaults = {"iterations": 3, "prompts_per_iteration": 8, "kl_beta": 0.1, "inner_epochs": 2}
    return recipe(**{**defaults, **train})


def train_toy(tmp_path, name, **train):
    trainer = GRPOTrainer(
        toy_recipe(**train), make("x0"), RewardMix([ToyReward()], [1.0]), tmp_path / name, log=lambda _: None
    )
    records = trainer.train()
    return [p.detach().clone() for p in trainer.params], records


def assert_same_run(m1, m2, rel=1e-5, abs_=1e-6):
    assert len(m1) == len(m2)
    for a, b in zip(m1, m2, strict=True):
        for key in COMPARED:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=rel, abs=abs_), (a["iteration"], key)


def test_four_accumulated_passes_of_16_equal_one_pass_of_64_on_the_toy_policy(tmp_path):
    """batch_size 16 + samples_per_update 64 == batch_size 64 (3 iterations, 2 inner epochs, KL on):
    same weights to 1e-5 and same logged metrics; without accumulation (4 steps of 16) the run
    differs — so the test sees a trainer that steps per chunk or mis-weights the chunks."""
    p64, m64 = train_toy(tmp_path, "one", batch_size=64)
    p16, m16 = train_toy(tmp_path, "acc", batch_size=16, samples_per_update=64)
    pst, _ = train_toy(tmp_path, "steps", batch_size=16)
    for a, b in zip(p64, p16, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert_same_run(m64, m16)
    assert all(r["ratio_first_step_maxdev"] == 0.0 for r in m16 if "ratio_first_step_maxdev" in r)
    assert max(float((a - b).abs().max()) for a, b in zip(p64, pst, strict=True)) > 1e-3


def test_uneven_chunks_are_weighted_by_their_size(tmp_path):
    """samples_per_update 64 from chunks of 24, 24 and 16 (batch_size 24) still equals one pass of 64:
    each chunk's mean loss is weighted by its share of the update, not 1/3 each."""
    p64, _ = train_toy(tmp_path, "one", batch_size=64, iterations=1, inner_epochs=1)
    p24, _ = train_toy(tmp_path, "acc", batch_size=24, samples_per_update=64, iterations=1, inner_epochs=1)
    for a, b in zip(p64, p24, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_samples_per_update_must_divide_the_iteration():
    """A value that does not split the iteration's samples into whole updates is a one-line recipe error."""
    with pytest.raises(Exception, match="must divide prompts_per_iteration × group_size = 64"):
        toy_recipe(samples_per_update=48)


def test_samples_per_update_must_divide_by_the_processes(tmp_path, monkeypatch):
    """Each process accumulates samples_per_update / processes samples: 3 processes cannot share 16."""
    import r3d.core.distributed as dist

    monkeypatch.setattr(dist, "world_size", lambda: 3)
    cfg = toy_recipe(prompts_per_iteration=6, group_size=8, samples_per_update=16)
    with pytest.raises(R3DError, match="samples_per_update = 16 must divide by the 3 processes"):
        GRPOTrainer(cfg, make("x0"), RewardMix([ToyReward()], [1.0]), tmp_path, log=lambda _: None)


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "adapter_model.safetensors"))


def metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")


def tiny_mesh_trainer(tmp_path, name, **train):
    from r3d.commands.runner import build_rewards
    from r3d.core.recipe import load_recipe
    from r3d.models.tiny_shapes import load_tiny_shapes

    sets = [f"train.{k}={v}" for k, v in train.items()]
    cfg = load_recipe(TINY_MESH, GRPORecipe, [*sets, "sampler.num_steps=4"])
    return GRPOTrainer(cfg, load_tiny_shapes(), build_rewards(cfg), tmp_path / name, log=lambda _: None)


def test_tiny_mesh_gradient_of_4_accumulated_passes_of_16_equals_one_pass_of_64(tmp_path):
    """tiny_mesh (tiny-shapes + LoRA, KL on): on the same 64 rollouts and advantages, the update's
    gradient from 4 accumulated chunks of 16 equals that of one chunk of 64 to float rounding (1e-5),
    and so do the logged loss, KL and gradient norm."""
    one = tiny_mesh_trainer(tmp_path, "one", batch_size=64)
    acc = tiny_mesh_trainer(tmp_path, "acc", batch_size=16, samples_per_update=64)
    prompts = [p for p in ["a cube", "a pyramid", "a prism", "an octahedron"] for _ in range(16)]
    noise = one.policy.initial_noise(64, torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    with torch.no_grad():
        roll = one.rollout(prompts, noise, "flow_sde", torch.ones(4, dtype=torch.bool), gens)
    advantages = torch.randn(64, generator=torch.Generator().manual_seed(1))
    steps = [0, 1, 2, 3]
    m_one, m_acc = one.update(roll, advantages, steps), acc.update(roll, advantages, steps)
    for a, b in zip(one.params, acc.params, strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5 * float(a.grad.abs().max()))
    for key in ("policy_loss", "kl", "grad_norm"):
        assert m_acc[key] == pytest.approx(m_one[key], rel=1e-5, abs=1e-7), key


def test_tiny_mesh_short_run_accumulated_matches_one_pass(tmp_path):
    """A short CLI run of tiny_mesh: batch_size 2 × 4 accumulated == batch_size 8. Rollouts in chunks
    of 2 differ from chunks of 8 by float rounding, which rewards and group normalisation amplify, so
    this end-to-end check is to 1e-3; a trainer stepping per chunk would be off by far more."""
    base = ["--set", "train.iterations=1", "--set", "train.prompts_per_iteration=2", "--set",
            "train.group_size=4", "--set", "eval.samples_per_prompt=1", "--set", "eval.every=0",
            "--set", "sampler.num_steps=4"]  # fmt: skip
    one, acc, steps = tmp_path / "one", tmp_path / "acc", tmp_path / "steps"
    assert main(["grpo", str(TINY_MESH), "--out", str(one), *base, "--set", "train.batch_size=8"]) == 0
    extra = ["--set", "train.batch_size=2", "--set", "train.samples_per_update=8"]
    assert main(["grpo", str(TINY_MESH), "--out", str(acc), *base, *extra]) == 0
    assert main(["grpo", str(TINY_MESH), "--out", str(steps), *base, "--set", "train.batch_size=2"]) == 0
    m_one, m_acc, m_steps = (metrics(d)[1] for d in (one, acc, steps))
    for key in ("reward", "policy_loss", "grad_norm"):
        assert m_acc[key] == pytest.approx(m_one[key], rel=1e-3, abs=1e-6), key
    assert m_steps["grad_norm"] != pytest.approx(m_one["grad_norm"], rel=0.05)


def test_two_processes_accumulating_reach_the_recipes_global_batch(tmp_path):
    """torchrun, 32 samples an iteration, samples_per_update 32: 2 processes × 4 accumulated chunks of 4
    == 1 process, one pass of 32 (rewards, losses, KL, gradient norm, adapter to 1e-5): the ranks'
    accumulated gradients are weighted and averaged into the recipe's global batch."""
    launcher = LAUNCHERS["torchrun"]
    if not Path(launcher[0]).exists():
        pytest.skip("torchrun missing")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}
    env["OMP_NUM_THREADS"] = "1"
    runs = {}
    for name, cmd, train in (
        ("one", [sys.executable], {"batch_size": 32}),
        ("two", launcher, {"batch_size": 4, "samples_per_update": 32}),
    ):
        folder = tmp_path / name
        folder.mkdir()
        train = {**RECIPE["train"], **train, "iterations": 2, "prompts_per_iteration": 4, "kl_beta": 0.1}
        recipe = {**RECIPE, "train": train, "checkpoint": {"every": 2}}
        recipe["eval"] = {"every": 0, "samples_per_prompt": 4}
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        proc = subprocess.run(
            [*cmd, "-m", "r3d", "grpo", "recipe.yaml", "--out", "run"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = metrics(folder / "run")
    assert_same_run(runs["one"], runs["two"])
    one, two = adapter(tmp_path / "one" / "run"), adapter(tmp_path / "two" / "run")
    assert one.keys() == two.keys()
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-6)


def test_each_process_accumulates_its_share_of_samples_per_update(tmp_path):
    """With 2 processes and samples_per_update 16, a process's 16 local samples make 2 optimizer steps
    of 8 local samples (2 chunks of 4) each, i.e. 16 samples a step globally — not 16 per process."""
    trainer = GRPOTrainer(
        toy_recipe(prompts_per_iteration=4, batch_size=4, samples_per_update=16),
        make("x0"),
        RewardMix([ToyReward()], [1.0]),
        tmp_path,
        log=lambda _: None,
    )
    trainer.world = 2
    updates = trainer._updates(16)
    assert [[idx.tolist() for idx in chunks] for chunks in updates] == [
        [[0, 1, 2, 3], [4, 5, 6, 7]],
        [[8, 9, 10, 11], [12, 13, 14, 15]],
    ]
