"""Runs under faults: adapters without tensors, saves killed between renames, SIGTERM from a
scheduler, two processes on one output folder. Issue #19, items 5-8."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import toy_policy
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from test_cli_grpo import write_recipe

from r3d.cli.main import main
from r3d.commands.bench_edit import _lock_output
from r3d.commands.runner import load_adapter
from r3d.core.checkpoint import (
    ADAPTER_FILE,
    load_adapter_weights,
    load_state,
    previous_copy,
    save_checkpoint,
)
from r3d.core.errors import R3DError
from r3d.core.io import read_jsonl
from r3d.core.lock import LOCK_FILE, FolderLock

REPO = Path(__file__).resolve().parents[1]


def cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, " ".join(capsys.readouterr().err.split())


def toy_run(tmp_path: Path, capsys, iterations: int = 2) -> tuple[Path, Path]:
    recipe = write_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["grpo", str(recipe), "--out", str(run), "--set", f"train.iterations={iterations}"]) == 0
    capsys.readouterr()
    return recipe, run


def iterations(run: Path) -> list[int]:
    return [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")]


# ----------------------------------------------------------------------------- item 5
@pytest.mark.parametrize("keep", [0, 1], ids=["no tensors", "one tensor"])
def test_resume_and_sample_refuse_an_adapter_with_missing_lora_tensors(tmp_path, capsys, keep):
    """An adapter file that lacks LoRA tensors is an error for --resume and for sample --adapter
    (before: set_peft_model_state_dict ignored missing keys; the run resumed from a fresh LoRA, KL 0)."""
    _, run = toy_run(tmp_path, capsys)
    path = run / "checkpoint" / ADAPTER_FILE
    tensors = load_file(str(path))
    assert len(tensors) > keep
    save_file(dict(list(tensors.items())[:keep]), str(path))
    code, err = cli(capsys, ["grpo", "--resume", str(run), "--set", "train.iterations=3"])
    assert code == 2 and "LoRA tensor(s) missing" in err
    assert iterations(run) == [0, 1, 2], "nothing may be trained from the reset adapter"
    argv = [
        "sample",
        "-p",
        "left",
        "--model",
        "toy_policy:make",
        "--adapter",
        str(run),
        "--out",
        str(tmp_path / "s"),
    ]
    code, err = cli(capsys, argv)
    assert code == 2 and "LoRA tensor(s) missing" in err


# ----------------------------------------------------------------------------- item 6
def _tiny_peft(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    peft = get_peft_model(net, LoraConfig(r=2, lora_alpha=2, target_modules=["0", "2"]))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    return peft


def _lora(peft) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in peft.state_dict().items() if "lora_" in k}


def test_save_killed_between_its_renames_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Interrupted after the old checkpoint moved aside and before the new one moved in, the folder is
    gone but loading falls back to the previous copy (before: it sat in .checkpoint.old, ignored, and
    resume said "no checkpoint"); the next save puts it back first and cleans up."""
    ckpt = tmp_path / "checkpoint"
    first = _tiny_peft(0)
    save_checkpoint(ckpt, first, {"iteration": 1})
    real_rename = Path.rename

    def killed_on_the_second_rename(self, target):
        if Path(target) == ckpt:
            raise KeyboardInterrupt  # the process dies here: the new copy never arrives
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt, _tiny_peft(1), {"iteration": 2})
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not ckpt.exists() and previous_copy(ckpt).is_dir()
    assert load_state(ckpt)["iteration"] == 1
    fresh = _tiny_peft(2)
    load_adapter_weights(fresh, ckpt)
    assert all(torch.equal(a, b) for a, b in zip(_lora(fresh).values(), _lora(first).values(), strict=True))
    save_checkpoint(ckpt, _tiny_peft(3), {"iteration": 3})
    assert load_state(ckpt)["iteration"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"], "no stale copies may remain"


def test_grpo_resumes_a_run_whose_checkpoint_was_left_in_the_previous_copy(tmp_path, capsys):
    """End to end: the on-disk state of a save killed between renames; loading an --adapter reads the
    previous copy without touching the run, --resume moves it back and continues."""
    _, run = toy_run(tmp_path, capsys)
    (run / "checkpoint").rename(previous_copy(run / "checkpoint"))
    (run / ".checkpoint.abc123").mkdir()  # the half-written temporary of the killed save
    policy = toy_policy.make()
    load_adapter(policy, run)  # what sample / eval-motion --adapter do
    assert any("lora_" in k for k in policy.network.state_dict())
    assert not (run / "checkpoint").exists(), "a reader must not rename inside a run folder"
    assert main(["grpo", "--resume", str(run), "--set", "train.iterations=3"]) == 0
    capsys.readouterr()
    assert iterations(run) == [0, 1, 2, 3]
    assert load_state(run / "checkpoint")["iteration"] == 3
    assert not previous_copy(run / "checkpoint").exists() and not (run / ".checkpoint.abc123").exists()


# ----------------------------------------------------------------------------- items 7 and 8
def _start_grpo(recipe: Path, run: Path, *sets: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    cmd = [sys.executable, "-m", "r3d", "grpo", str(recipe), "--out", str(run)]
    cmd += [a for s in ("train.iterations=100000", *sets) for a in ("--set", s)]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_iteration(proc: subprocess.Popen, run: Path, at_least: int = 1, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if max(iterations(run), default=-1) >= at_least:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not reach iteration {at_least}: {proc.communicate()[0][-2000:]}")


def test_sigterm_finishes_the_iteration_saves_and_resume_continues(tmp_path, capsys):
    """SIGTERM (what SLURM / Kubernetes send) stops like Ctrl-C: exit 0 with a checkpoint at the last
    logged iteration (before: the process died at once; with checkpoints every 10^5 iterations,
    nothing was saved)."""
    recipe, run = write_recipe(tmp_path), tmp_path / "run"
    proc = _start_grpo(recipe, run, "checkpoint.every=100000")
    try:
        _wait_for_iteration(proc, run)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-2000:]
    assert "SIGTERM: finishing this iteration" in output
    done = iterations(run)
    assert load_state(run / "checkpoint")["iteration"] == done[-1] >= 1
    code, _ = cli(capsys, ["grpo", "--resume", str(run), "--set", f"train.iterations={done[-1] + 1}"])
    assert code == 0 and iterations(run) == list(range(done[-1] + 2))


def test_second_grpo_on_a_busy_run_folder_exits_2_naming_the_holder(tmp_path, capsys):
    """Two ``grpo --out D`` at once: the second (new run or --resume) exits 2 with one line naming the
    first one's pid and writes nothing (before: both ran and interleaved metrics.jsonl). Once the holder
    is SIGKILLed, its lock file blocks nobody."""
    recipe, run = write_recipe(tmp_path), tmp_path / "run"
    proc = _start_grpo(recipe, run, "checkpoint.every=1")
    try:
        _wait_for_iteration(proc, run)
        for argv in (["grpo", str(recipe), "--out", str(run)], ["grpo", "--resume", str(run)]):
            code, err = cli(capsys, argv)
            assert code == 2 and f"is in use by another r3d process (pid {proc.pid})" in err, err
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert (run / LOCK_FILE).is_file()
    done = load_state(run / "checkpoint")["iteration"]
    code, err = cli(capsys, ["grpo", "--resume", str(run), "--set", f"train.iterations={done + 1}"])
    assert code == 0, err
    assert iterations(run)[-1] == done + 1


def test_bench_edit_folder_locks_let_distinct_shards_share_a_folder(tmp_path, capsys):
    """Shards 0/2 and 1/2 may write into one folder at once; the same shard twice, or an unsharded run
    beside a shard, exits 2 naming the folder."""
    out = tmp_path / "bench"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from r3d.commands.bench_edit import _lock_output; from pathlib import Path; "
            "locks = _lock_output(Path(sys.argv[1]), (0, 2)); print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        base = ["bench-edit", "--out", str(out), "--limit", "2"]
        code, err = cli(capsys, [*base, "--shard", "0/2"])
        assert code == 2 and "shard 0/2 of bench-edit folder" in err and "in use" in err
        code, err = cli(capsys, base)
        assert code == 2 and f"bench-edit folder {out} is in use" in err
        _lock_output(out, (1, 2)).close()  # the other shard is welcome
    finally:
        holder.kill()
        holder.wait()
    with _lock_output(out, None):  # the holder is gone: an unsharded run may start
        with pytest.raises(R3DError, match="in use"):
            FolderLock(out, shared=True).acquire("bench-edit folder")
    assert not (out / "records.jsonl").exists()
