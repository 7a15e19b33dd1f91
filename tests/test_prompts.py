"""Prompt datasets: prompts.train / prompts.eval as files, folders, globs and HumanML3D splits."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import r3d.commands.runner
from r3d.cli.main import main
from r3d.commands.runner import check_prompts, policy_options
from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.prompts import read_prompts

ROOT = Path(__file__).resolve().parents[1]
TINY_MESH = ROOT / "recipes" / "tiny_mesh.yaml"
CLASSES = ["a cube", "a pyramid", "a prism", "an octahedron", "a sphere", "a torus"]
SMALL = ["--set", "train.iterations=1", "--set", "train.prompts_per_iteration=2", "--set",
         "train.group_size=4", "--set", "train.batch_size=8", "--set", "eval.samples_per_prompt=1",
         "--set", "eval.every=0", "--set", "sampler.num_steps=4"]  # fmt: skip


def big_file(path: Path, n: int = 3000, bad_line: int | None = None) -> Path:
    """``n`` tiny-shapes prompts (with a comment and a blank line); line ``bad_line`` names no class."""
    lines = ["# 3 000 generated prompts", ""]
    lines += [f"{CLASSES[i % len(CLASSES)]} number {i}" for i in range(n - 2)]
    if bad_line is not None:
        lines[bad_line - 1] = "a teapot"
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe(**prompts) -> GRPORecipe:
    return GRPORecipe.model_validate(
        {"model": {"name": "tiny_shapes"}, "prompts": prompts, "rewards": {"geometry": {}}}
    )


def error_of(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


def test_txt_skips_comments_and_blank_lines_and_names_lines(tmp_path):
    """A .txt file: one prompt a line, '#' lines and blank lines skipped, each prompt's line kept."""
    path = tmp_path / "p.txt"
    path.write_text("# header\na cube\n\n  a torus  \n# a sphere\n")
    found = read_prompts(str(path))
    assert found.prompts == ["a cube", "a torus"]
    assert found.where == [f"{path} line 2", f"{path} line 4"]


def test_3000_prompt_file_runs_and_recipe_keeps_path_and_sha256(tmp_path):
    """--set prompts.train=FILE with 3 000 prompts: a run trains on them, and its recipe.yaml holds the
    path and the file's sha256 — not 3 000 copied prompts."""
    prompts = big_file(tmp_path / "prompts.txt")
    run = tmp_path / "run"
    assert main(["grpo", str(TINY_MESH), "--out", str(run), *SMALL, "--set", f"prompts.train={prompts}"]) == 0
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["prompts"]["train"] == str(prompts)
    assert len(saved["prompts"]["sha256"]["train"]) == 64
    assert len((run / "recipe.yaml").read_text()) < 5000
    loaded = recipe(train=str(prompts), eval=["a cube"]).prompts.train
    assert loaded[0] == "a cube number 0" and len(loaded) == 2998


def test_bad_line_in_a_3000_line_file_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    """An unknown tiny-shapes class on line 2718 of 3 000: exit 2, one line naming the file and the line,
    and no model was built (build_policy is never reached)."""

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the prompts were checked")

    monkeypatch.setattr(r3d.commands.runner, "build_policy", no_model)
    prompts = big_file(tmp_path / "prompts.txt", bad_line=2718)
    err = error_of(
        ["grpo", str(TINY_MESH), "--out", str(tmp_path / "o"), "--set", f"prompts.train={prompts}"], capsys
    )
    assert f"{prompts} line 2718" in err and "unknown shape class" in err


def test_unreadable_line_is_named(tmp_path, capsys):
    """A line that is not UTF-8 text: exit 2 with the file and line number."""
    path = tmp_path / "p.txt"
    path.write_bytes(b"a cube\na pyramid\n\xff\xfe broken\n")
    err = error_of(
        ["grpo", str(TINY_MESH), "--out", str(tmp_path / "o"), "--set", f"prompts.train={path}"], capsys
    )
    assert f"{path} line 3: not valid UTF-8" in err


def test_a_string_that_is_no_file_suggests_a_list(tmp_path, capsys):
    """prompts.train: "a cube" (a string, not a list) is read as a path: the error says so."""
    err = error_of(
        ["grpo", str(TINY_MESH), "--out", str(tmp_path / "o"), "--set", "prompts.train=a cube"], capsys
    )
    assert "is not a file, folder or glob" in err and '["a cube"]' in err


def test_jsonl_prompt_image_caption_fields(tmp_path):
    """.jsonl: 'prompt' text, 'image' paths relative to the file, 'caption' + 'length' motion lengths."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"png")
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "a cube"}, {"image": "img/a.png"}, {"caption": "a person walks", "length": 120}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    found = read_prompts(str(path))
    assert found.prompts == ["a cube", str(tmp_path / "img" / "a.png"), "a person walks"]
    assert found.lengths == {"a person walks": 120}


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a cube"]', "line 2: expected a JSON object"),
        ('{"image": "missing.png"}', "line 2: image"),
        ('{"caption": "walks", "length": 0}', "line 2: 'length' must be a positive integer"),
        ('{"prompt": "a cube", "length": 30}', "line 2: 'length' must be a positive integer"),
        ('{"prompt": "a", "caption": "b"}', "line 2: needs exactly one of"),
        ('{"text": "a cube"}', "line 2: needs exactly one of"),
    ],
)
def test_jsonl_bad_line_is_one_error_naming_the_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cube"}\n' + line + "\n")
    with pytest.raises(R3DError, match=message) as info:
        read_prompts(str(path))
    assert str(path) in str(info.value)


def test_image_folder_and_glob(tmp_path):
    """A folder (or glob) of images: sorted image paths, other files ignored; none → one-line error."""
    folder = tmp_path / "cond"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "notes.md"):
        (folder / name).write_bytes(b"x")
    assert read_prompts(str(folder)).prompts == [str(folder / "a.jpg"), str(folder / "b.png")]
    assert read_prompts(str(folder / "*.png")).prompts == [str(folder / "b.png")]
    assert read_prompts(str(folder)).sha256 != read_prompts(str(folder / "*.png")).sha256
    with pytest.raises(R3DError, match="no images"):
        read_prompts(str(folder / "*.webp"))


def humanml3d(root: Path) -> Path:
    """A 3-id HumanML3D-layout folder: split file, texts/ and (for two ids) new_joint_vecs/."""
    (root / "texts").mkdir(parents=True)
    (root / "new_joint_vecs").mkdir()
    (root / "train.txt").write_text("000001\n000002\n\n000003\n")
    (root / "texts" / "000001.txt").write_text(
        "a person walks forward.#a/DET person/NOUN walk/VERB#0.0#0.0\n"
        "someone strides ahead#someone/PRON stride/VERB#1.0#4.0\n"
    )
    (root / "texts" / "000002.txt").write_text("a man jumps.#a/DET man/NOUN jump/VERB#0.0#0.0\n")
    (root / "texts" / "000003.txt").write_text("a person waves#a/DET person/NOUN wave/VERB#0.0#0.0\n")
    np.save(root / "new_joint_vecs" / "000001.npy", np.zeros((250, 263), np.float32))
    np.save(root / "new_joint_vecs" / "000002.npy", np.zeros((30, 263), np.float32))
    return root / "train.txt"


def test_humanml3d_split_reads_captions_and_lengths(tmp_path):
    """HumanML3D's layout: captions of every listed id; lengths from new_joint_vecs (a from/to span is
    its sub-clip: 1 s–4 s = 60 frames; a clip of 250 frames is skipped as MDM's loader does, one of 30
    too; an id without motion keeps its caption without a length)."""
    found = read_prompts(str(humanml3d(tmp_path / "HumanML3D")))
    assert found.prompts == ["someone strides ahead", "a person waves"]
    assert found.lengths == {"someone strides ahead": 60}
    assert found.where[0].endswith("000001.txt line 2")


def test_humanml3d_errors_name_the_file_and_line(tmp_path):
    split = humanml3d(tmp_path / "H")
    (tmp_path / "H" / "texts" / "000002.txt").write_text("a man jumps without tokens\n")
    with pytest.raises(R3DError, match=r"000002.txt line 1: expected caption#tokens#from#to"):
        read_prompts(str(split))
    (tmp_path / "H" / "texts" / "000003.txt").unlink()
    (tmp_path / "H" / "texts" / "000002.txt").write_text("a man jumps.#a/DET#0.0#0.0\n")
    with pytest.raises(R3DError, match=r"train.txt line 4: .*000003.txt not found"):
        read_prompts(str(split))


def test_motion_lengths_reach_a_motion_model_and_are_refused_elsewhere(tmp_path):
    """jsonl lengths go to the motion policy's ``lengths`` option; a model without one refuses them,
    naming the line (checked without loading it)."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"caption": "a person walks", "length": 80}\n')
    cfg = GRPORecipe.model_validate(
        {"model": {"name": "tiny_motion"}, "prompts": {"train": str(path)}, "rewards": {"geometry": {}}}
    )
    check_prompts(cfg)
    assert policy_options(cfg)["lengths"] == {"a person walks": 80}
    with pytest.raises(R3DError, match=r"m.jsonl line 1: model tiny_shapes takes no motion lengths"):
        check_prompts(recipe(train=str(path)))


def test_resume_refuses_a_changed_prompt_file(tmp_path, capsys):
    """A run keeps the file's sha256: --resume after the file changed is one line, exit 2; unchanged, it
    resumes."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cube\na pyramid\n")
    run = tmp_path / "run"
    assert main(["grpo", str(TINY_MESH), "--out", str(run), *SMALL, "--set", f"prompts.eval={prompts}"]) == 0
    assert main(["grpo", "--resume", str(run), "--set", "train.iterations=2"]) == 0
    capsys.readouterr()
    prompts.write_text("a cube\na prism\n")
    err = error_of(["grpo", "--resume", str(run), "--set", "train.iterations=3"], capsys)
    assert f"prompts.eval: {prompts} changed since the run started" in err


def test_inline_lists_are_unchanged(tmp_path):
    """Inline lists stay inline in the saved recipe and get no sha256 (today's recipes unchanged)."""
    cfg = recipe(train=["a cube"], eval=["a torus"])
    dumped = cfg.model_dump(mode="json")["prompts"]
    assert dumped == {"train": ["a cube"], "eval": ["a torus"], "sha256": {}}


def test_a_large_train_file_needs_held_out_prompts(tmp_path):
    """Evaluation falls back to the train prompts; for a 3 000-prompt file that would sample all of
    them, so the recipe must give prompts.eval (one line); up to 256 the fallback stays."""
    with pytest.raises(R3DError, match="prompts.eval: .* holds 2998 prompts"):
        recipe(train=str(big_file(tmp_path / "big.txt")))
    assert len(recipe(train=str(big_file(tmp_path / "small.txt", n=200))).prompts.train) == 198


def test_a_list_assigned_over_a_file_is_saved_as_the_list(tmp_path):
    """Replacing a file's prompts by a list (validate_assignment) saves the list, not the stale path
    and sha256 of the file."""
    path = tmp_path / "p.txt"
    path.write_text("a cube\na torus\n")
    cfg = recipe(train=str(path), eval=["a cube"])
    cfg.prompts.train = ["a prism"]
    dumped = cfg.model_dump(mode="json")["prompts"]
    assert dumped["train"] == ["a prism"] and dumped["sha256"] == {}
    assert cfg.prompts.where("train", 0) == "prompts.train[0]"
