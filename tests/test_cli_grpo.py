"""``r3d grpo`` end to end on the toy policy, and its one-line errors."""

import json

import pytest
import yaml

from r3d.cli.main import main

RECIPE = {
    "run": {"name": "toy", "seed": 1},
    "model": {"name": "toy_policy:make"},
    "prompts": {"train": ["left", "right"], "eval": ["left", "right"]},
    "sampler": {"num_steps": 4},
    "rewards": {"toy_policy:make_reward": {"weight": 1.0}},
    "train": {"iterations": 2, "prompts_per_iteration": 2, "group_size": 4, "batch_size": 8},
    "eval": {"every": 1, "samples_per_prompt": 2},
    "checkpoint": {"every": 1},
}


def write_recipe(tmp_path, **changes):
    data = json.loads(json.dumps(RECIPE))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data[section][field] = value
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grpo_cli_runs_and_writes_the_run_folder(tmp_path):
    run = tmp_path / "run"
    assert main(["grpo", str(write_recipe(tmp_path)), "--out", str(run)]) == 0
    for name in (
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "reward_curve.png",
        "checkpoint/adapter_model.safetensors",
    ):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2 and "reward" in summary["eval"]
    # continuing with more iterations from the saved recipe
    assert main(["grpo", "--resume", str(run), "--set", "train.iterations=3"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "args,message",
    [
        (["grpo", "missing.yaml"], "recipe not found"),
        (["grpo", "{recipe}", "--set", "train.iteratons=3"], "did you mean 'train.iterations'"),
        (["grpo", "{recipe}", "--set", "train.iterations=many"], "train.iterations"),
        (["grpo", "{recipe}", "--set", "prompts.train=[up]"], "unknown toy prompt"),
        (["grpo", "{recipe}", "--set", "model.name=tiny_shapez"], "did you mean 'tiny_shapes'"),
        (["grpo", "--resume", "{tmp}/nothing"], "not a run folder"),
        (["grpo"], "give a RECIPE"),
    ],
)
def test_grpo_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    recipe = write_recipe(tmp_path)
    args = [a.format(recipe=recipe, tmp=tmp_path) for a in args]
    assert main([*args, "--out", str(tmp_path / "o")] if args[1:2] != ["--resume"] else args) == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ") or message in " ".join(err.split())
    assert "Traceback" not in err
