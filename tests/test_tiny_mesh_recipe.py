"""The main job end to end on the shipped tiny-shapes model: recipe → GRPO → adapter → r3d sample."""

import json
from pathlib import Path

import pytest

from r3d.cli.main import main
from r3d.core.io import read_jsonl

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_mesh.yaml"
SMALL = [
    "--set", "train.iterations=1",
    "--set", "train.prompts_per_iteration=2",
    "--set", "train.group_size=4",
    "--set", "train.batch_size=8",
    "--set", "eval.samples_per_prompt=1",
    "--set", "eval.every=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["grpo", str(RECIPE), "--out", str(out), *SMALL]) == 0
    return out


def test_tiny_mesh_recipe_runs_with_ratio_one(run_dir):
    """One iteration of the shipped recipe trains, logs every reward component, and has ratio exactly 1."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    it = records[1]
    assert it["ratio_first_step_maxdev"] == 0.0
    for key in ("reward/semantic", "reward/geometry", "reward/geometry/watertight", "eval/semantic"):
        assert key in it, key
    for name in (
        "checkpoint/adapter_model.safetensors",
        "samples_start.png",
        "samples_end.png",
        "reward_curve.png",
    ):
        assert (run_dir / name).is_file(), name


def test_sample_with_and_without_adapter(run_dir, tmp_path):
    """r3d sample writes meshes + a contact sheet; the same seed gives the same noise with the adapter."""
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert (
        main(
            [
                "sample",
                "-p",
                "a cube",
                "-n",
                "2",
                "--out",
                str(base),
                "--format",
                "obj",
                "--score",
                "semantic",
            ]
        )
        == 0
    )
    assert main(["sample", "-p", "a cube", "-n", "2", "--out", str(tuned), "--adapter", str(run_dir)]) == 0
    items = json.loads((base / "samples.json").read_text())["items"]
    assert len(items) == 2 and all(Path(i["path"]).suffix == ".obj" for i in items)
    assert "semantic" in items[0]
    assert (base / "contact_sheet.png").is_file() and (tuned / "contact_sheet.png").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["sample", "-p", "a teapot", "--out", "{tmp}/s"], "unknown shape class"),
        (
            ["sample", "-p", "a cube", "--out", "{tmp}/s", "--adapter", "{tmp}/nowhere"],
            "no adapter_config.json",
        ),
        (
            ["grpo", str(RECIPE), "--out", "{tmp}/g", "--set", "prompts.train=[a teapot]"],
            "unknown shape class",
        ),
    ],
)
def test_bad_prompt_and_missing_checkpoint_are_one_line_errors(tmp_path, capsys, args, message):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err
