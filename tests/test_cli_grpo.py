"""``r3d grpo`` end to end on the toy policy, and its one-line errors."""

import json
from pathlib import Path

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


# ----------------------------------------------------------------------------- --dry-run
REPO = Path(__file__).resolve().parents[1]


def test_dry_run_checks_the_pipeline_prints_a_memory_table_and_writes_nothing(tmp_path, capsys):
    """--dry-run on the toy recipe: one rollout → reward → update pass, a memory table with the
    LoRA/AdamW/activation rows and totals against this machine's RAM; exit 0; no run folder."""
    run = tmp_path / "run"
    assert main(["grpo", str(write_recipe(tmp_path)), "--out", str(run), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("memory estimate on cpu", "LoRA", "AdamW", "activations", "total", "fits", "dry run OK"):
        assert text in out, text
    assert "first-step ratio max |r − 1| = 0" in out
    assert not run.exists()


def test_dry_run_json_report(tmp_path, capsys):
    assert (
        main(["grpo", str(write_recipe(tmp_path)), "--dry-run", "--json", "--out", str(tmp_path / "o")]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["problems"] == []
    rows = {r["component"]: r for r in report["memory"]["rows"]}
    assert rows["AdamW"]["bytes"] == 2 * rows["LoRA adapter"]["bytes"] > 0
    assert rows["activations"]["bytes"] > 0
    assert report["memory"]["budget"][0]["device"] == "cpu" and report["memory"]["budget"][0]["fits"]


def test_dry_run_of_the_gpu_recipe_without_weights_names_the_downloads_and_estimates(
    tmp_path, capsys, monkeypatch
):
    """recipes/mesh_uni3d.yaml on a machine with neither the weights nor a GPU: the report names the
    `r3d fetch-weights` commands, still prints the full-size memory table (DiT built on the meta
    device: 3 050 758 720 parameters in bf16) and exits 2 with a one-line error, no traceback.

    Exit 2 rather than stopping at the first missing file: the user learns every problem and the
    memory need before downloading ≈ 20 GB, and a script still sees that the recipe cannot run."""
    monkeypatch.setenv("R3D_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["grpo", str(REPO / "recipes" / "mesh_uni3d.yaml"), "--dry-run", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    out, err = " ".join(captured.out.split()), " ".join(captured.err.split())
    assert rc == 2 and "Traceback" not in out + err
    assert "r3d fetch-weights hunyuan3d-2.1" in out and "r3d fetch-weights uni3d-g" in out
    assert "memory estimate" in out and "3,050,758,720" in out and "checkpoint recompute" in out
    assert "dry run found" in err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name", ["tiny_mesh", "nabla_tiny", "motion_tiny", "diffsplat_nabla_normal", "motion_mdm_humanml3d"]
)
def test_every_grpo_recipe_dry_runs_without_a_traceback(name, tmp_path, capsys, monkeypatch):
    """Each GRPO recipe in recipes/: the CPU ones pass (exit 0), the GPU ones without weights report
    their problems (exit 2); all print a memory estimate (or say that nothing could be built)."""
    monkeypatch.setenv("R3D_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["grpo", str(REPO / "recipes" / f"{name}.yaml"), "--dry-run", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == (0 if "tiny" in name else 2)
    assert "memory estimate" in captured.out and "Traceback" not in captured.out + captured.err


def test_dry_run_of_a_large_prompt_file_validates_all_but_encodes_a_bounded_number(tmp_path, capsys):
    """A 1 000-prompt file: the dry run checks every line (a bad one at line 900 is named) but encodes at
    most MAX_ENCODED_PROMPTS distinct prompts (it once encoded and cached the whole file at once)."""
    from r3d.commands.dry_run import MAX_ENCODED_PROMPTS

    lines = [f"a cube number {i}" for i in range(1000)]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(lines) + "\n")
    recipe = Path(__file__).parents[1] / "recipes" / "tiny_mesh.yaml"
    argv = ["grpo", str(recipe), "--dry-run", "--json", "--set", f"prompts.train={prompts}"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    report = json.loads(capsys.readouterr().out)
    detail = dict((c["item"], c["detail"]) for c in report["checks"])["prompts"]
    assert detail.startswith(f"{MAX_ENCODED_PROMPTS} distinct prompts encoded (of 1004")
    lines[899] = "a teapot"
    prompts.write_text("\n".join(lines) + "\n")
    assert main([*argv, "--out", str(tmp_path / "p")]) != 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any("prompts.txt line 900" in p and "teapot" in p for p in problems), problems
