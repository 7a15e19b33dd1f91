"""Two CPU processes (gloo; launched by torchrun, accelerate or mpirun) reproduce the one-process run with
the same global batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from toy_policy import ToyPolicy, ToyReward

from r3d.core.config import GRPORecipe
from r3d.core.grpo import GRPOTrainer
from r3d.core.io import read_jsonl
from r3d.core.rewards import RewardMix

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent
RECIPE = {
    "run": {"name": "toy", "seed": 5},
    "model": {"name": "toy_policy:make"},
    "prompts": {"train": ["left", "right"], "eval": ["left", "right"]},
    "sampler": {"num_steps": 4},
    "rewards": {"test_distributed:RankReward": {"weight": 1.0}},
    "train": {"iterations": 3, "prompts_per_iteration": 2, "group_size": 8, "lr": 3e-2, "clip_range": 0.5},
    "eval": {"every": 1, "samples_per_prompt": 4},
    "checkpoint": {"every": 3},
}
ACCELERATE = [str(BIN / "accelerate"), "launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"],
    # plain --cpu would start ONE process: --multi_gpu runs torchrun (r3d picks gloo without CUDA), and
    # --cpu with an MPI hostfile runs mpirun (r3d reads the MPI ranks)
    "accelerate": [*ACCELERATE, "--multi_gpu", "--main_process_port", "0"],
    "accelerate-mpirun": [*ACCELERATE, "--cpu", "--mpirun_hostfile", "hosts"],
}


class RankReward(ToyReward):
    """The toy reward, also appending "RANK WORLD_SIZE pid" of the scoring process to ranks.txt."""

    def __call__(self, artifacts, prompts):
        with open("ranks.txt", "a") as fh:
            fh.write(f"{os.environ.get('RANK', '-')} {os.environ.get('WORLD_SIZE', '-')} {os.getpid()}\n")
        return super().__call__(artifacts, prompts)


def run(cmd, cwd):
    # the checkout under test first (not whichever r3d is installed), then the toy policy's folder
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    if os.geteuid() == 0:  # Open MPI refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def metrics(run_dir):
    return read_jsonl(run_dir / "metrics.jsonl")


def launch(cmd, folder, recipe):
    folder.mkdir(exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run([*cmd, "-m", "r3d", "grpo", "recipe.yaml", "--out", "run"], folder)
    ranks = {tuple(line.split()) for line in (folder / "ranks.txt").read_text().splitlines()}
    return metrics(folder / "run"), ranks


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    recipe = dict(RECIPE, train={**RECIPE["train"], "batch_size": 16})
    return launch([sys.executable], tmp_path_factory.mktemp("one"), recipe)


@pytest.mark.parametrize(
    "launcher",
    ["accelerate", "torchrun", pytest.param("accelerate-mpirun", marks=pytest.mark.slow)],
)
def test_two_processes_equal_one_process_with_the_same_global_batch(launcher, one_process, tmp_path):
    """Per-sample noise streams + gathered rewards + averaged gradients: 2 ranks × 8 == 1 rank × 16.

    Both ranks really ran (two pids, RANK 0 and 1 of WORLD_SIZE 2). Sampling and rewards of the first
    iteration agree to float rounding (1e-6 relative): each sample has its own noise stream, but the
    network runs on chunks of 8 instead of 16, and PyTorch's vectorised CPU kernels may round the two
    batch sizes differently in the last bit (seen on an Intel AVX-512 machine; bit-identical on AMD).
    Later iterations agree to 1e-5 (the 2-process gradient is the mean of two 8-sample means, summed
    in another order). A rank that drew another rank's noise or skipped the gather would differ by far more.
    """
    if not Path(LAUNCHERS[launcher][0]).exists() or ("mpirun" in launcher and not shutil.which("mpirun")):
        pytest.skip(f"{launcher} missing")
    m1, ranks1 = one_process
    two = dict(RECIPE, train={**RECIPE["train"], "batch_size": 8})
    (tmp_path / launcher).mkdir()
    (tmp_path / launcher / "hosts").write_text("localhost slots=2\n")
    m2, ranks2 = launch(LAUNCHERS[launcher], tmp_path / launcher, two)
    assert {(r, w) for r, w, _ in ranks1} == {("-", "-")}
    assert {(r, w) for r, w, _ in ranks2} == {("0", "2"), ("1", "2")}
    assert len({pid for _, _, pid in ranks2}) == 2
    assert [r["iteration"] for r in m2] == [0, 1, 2, 3]
    assert m2[1]["reward"] == pytest.approx(m1[1]["reward"], rel=1e-6, abs=0)
    for a, b in zip(m1, m2, strict=True):
        for key in ("reward", "eval/reward", "policy_loss", "ratio_first_step_maxdev"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["iteration"], key)


class UnseededPolicy(ToyPolicy):
    """The toy policy without its fixed torch.manual_seed: LoRA's init sees whatever global RNG state."""

    def __init__(self):
        state = torch.random.get_rng_state()
        super().__init__()
        torch.random.set_rng_state(state)


def test_lora_init_depends_on_run_seed_only(tmp_path):
    """torch's default seed differs per process, so without seeding every rank (and every rerun) would
    start from a different random LoRA A matrix; the trainer draws it from run.seed alone."""

    def lora(global_seed, run_seed):
        torch.manual_seed(global_seed)
        cfg = GRPORecipe.model_validate({**RECIPE, "run": {"seed": run_seed}})
        trainer = GRPOTrainer(cfg, UnseededPolicy(), RewardMix([ToyReward()], [1.0]), tmp_path, log=print)
        return [p.detach().clone() for p in trainer.params]

    a, b, c = lora(1, run_seed=5), lora(2, run_seed=5), lora(1, run_seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate", path=str(BIN)) is None, reason="accelerate missing")
def test_tiny_mesh_recipe_on_two_accelerate_processes(tmp_path):
    """The shipped tiny-shapes recipe (semantic + geometry rewards): 2 processes × 4 samples match
    1 × 8 to 1e-5 (the PointNet scores batches of 4 instead of 8: float rounding only)."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny_mesh.yaml"
    small = {"iterations": 2, "prompts_per_iteration": 2, "group_size": 4}
    sets = [f"train.{k}={v}" for k, v in small.items()] + [
        "eval.every=0", "eval.samples_per_prompt=1", "sampler.num_steps=4", "checkpoint.every=2"
    ]  # fmt: skip
    for cmd, out, batch in (([sys.executable], "one", 8), (LAUNCHERS["accelerate"], "two", 4)):
        args = [a for s in [*sets, f"train.batch_size={batch}"] for a in ("--set", s)]
        run([*cmd, "-m", "r3d", "grpo", str(recipe), "--out", out, *args], tmp_path)
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for a, b in zip(m1, m2, strict=True):
        for key in ("reward", "reward/semantic", "reward/geometry", "eval/reward", "kl"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["iteration"], key)


def test_init_from_env_is_idempotent(monkeypatch):
    """A second call in the same process does nothing: accelerate's one-process --cpu warning comes
    once per run, not once per caller (catches a join that is repeated by every layer)."""
    from r3d.core import distributed

    monkeypatch.setattr(distributed, "_joined", False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.warns(UserWarning, match="started a single process") as record:
        distributed.init_from_env()
        distributed.init_from_env()
    assert len(record) == 1 and distributed.world_size() == 1


def test_a_launched_process_that_never_joined_is_refused(monkeypatch, tmp_path):
    """Under a launcher (WORLD_SIZE 2) a trainer built without init_from_env would train alone and
    share the run folder with its siblings: it is a one-line R3DError instead."""
    from r3d.core.errors import R3DError

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = GRPORecipe.model_validate(RECIPE)
    with pytest.raises(R3DError, match="init_from_env"):
        GRPOTrainer(cfg, ToyPolicy(), RewardMix([ToyReward()], [1.0]), tmp_path, log=print)
