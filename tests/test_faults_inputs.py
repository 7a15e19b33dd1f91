"""Torn and corrupt files, hostile data sets and absurd options end in one line (or in a skipped
record), never a traceback or a silently lost result. Issue #19, items 3, 4 and 13."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_vqvae_train import voxels  # noqa: F401 (a fixture)
from test_vqvae_train import write_recipe as write_vqvae_recipe

from r3d.cli.main import main
from r3d.core.errors import R3DError
from r3d.core.io import append_jsonl, read_jsonl
from r3d.edit.dataset import SAMPLE_DIR, load_dataset
from r3d.vqvae.checkpoint import latest_checkpoint, load_trainer_state

FAST = ["--limit", "2", "--set", "editor.num_inference_steps=1"]


def one_line_error(capsys, argv: list[str], expected: str) -> str:
    """Run the CLI; assert exit 2 and a one-line ``error:`` holding ``expected``; return stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error:"), err
    assert expected in " ".join(err.split()), err
    return err


# ----------------------------------------------------------------------------- JSON lines (item 4)
def test_append_after_a_torn_last_line_keeps_the_new_record(tmp_path):
    """A crash mid-write leaves a line without its newline; the next append must start a new line
    (before, it glued onto the torn one and both were skipped: the new record was lost)."""
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "ok": true}\n{"id": "b", "ok": tr')
    append_jsonl(path, {"id": "c", "ok": True})
    assert read_jsonl(path) == [{"id": "a", "ok": True}, {"id": "c", "ok": True}]
    append_jsonl(path, {"id": "d"})  # an intact file gets no blank line
    assert path.read_text().endswith('{"id": "c", "ok": true}\n{"id": "d"}\n')


def test_non_utf8_and_non_object_lines_are_skipped_not_a_traceback(tmp_path, caplog):
    """Stray binary bytes or a line that is JSON but not an object are skipped with a warning."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"iteration": 0}\n\xff\xfe\x00garbage\n[1, 2]\n{"iteration": 1}\n')
    assert read_jsonl(path) == [{"iteration": 0}, {"iteration": 1}]
    assert "skipped 2 unreadable line(s)" in caplog.text


def test_bench_edit_resume_after_a_torn_last_record_reports_every_sample(tmp_path, capsys):
    """The issue's reproduction: a run whose last judge record was torn by a crash is resumed; the
    redone judgment must be readable, so the report has no "missing" sample (before: it glued onto
    the torn line, was lost, and the report showed the sample as not processed with exit 0)."""
    out = tmp_path / "bench"
    assert main(["bench-edit", "--out", str(out), *FAST]) == 0
    records = out / "records.jsonl"
    text = records.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    assert json.loads(last)["phase"] == "judge"
    records.write_text(text[: len(text) - len(last) // 2 - 1])  # cut the last record in half
    assert main(["bench-edit", "--out", str(out), *FAST, "--resume"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["failed_samples"] == [] and report["data"]["selected"] == 2


# ----------------------------------------------------------------------------- binary inputs (13)
def test_binary_recipe_is_a_one_line_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    one_line_error(capsys, ["grpo", str(recipe), "--out", str(tmp_path / "run")], "is not UTF-8 text")
    assert not (tmp_path / "run").exists()


def test_recipe_with_nul_bytes_is_a_one_line_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"run:\n  name: x\x00\x00\n")
    one_line_error(capsys, ["grpo", str(recipe)], "is not text")


def test_binary_data_file_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"id": 1}\n\xc3\x28\xa0\xa1')
    one_line_error(capsys, ["bench-edit", "--out", str(tmp_path / "o"), "--data", str(data)], "line 2")


# ----------------------------------------------------------------------------- data set images (3, 13)
def _png(path: Path, size=(8, 8)) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _bomb(path: Path, width: int, height: int) -> Path:
    """A valid 1×1 PNG whose header claims ``width × height`` pixels (what a bomb's header says)."""
    _png(path, (1, 1))
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def _record(i: int, image: str) -> str:
    return json.dumps({"id": i, "category": "physics", "instruction": "x", "image": image}) + "\n"


def test_decompression_bomb_fails_that_record_only(tmp_path):
    """Images over PIL's pixel limit (above 2× raises, above 1× warns) are invalid records; the others
    load (before: DecompressionBombError escaped validation and aborted the whole run)."""
    _png(tmp_path / "ok.png")
    _bomb(tmp_path / "bomb.png", 30_000, 30_000)  # 900 M pixels: PIL raises
    _bomb(tmp_path / "warn.png", 10_000, 10_000)  # 100 M pixels: PIL only warns, then would decode
    data = tmp_path / "data.jsonl"
    data.write_text(_record(1, "ok.png") + _record(2, "bomb.png") + _record(3, "warn.png"))
    loaded = load_dataset(data)
    assert [s.id for s in loaded.samples] == ["1"]
    assert len(loaded.issues) == 2 and all("too large" in i.message for i in loaded.issues)


def test_bench_edit_skips_a_bomb_with_skip_invalid_and_names_it_without(tmp_path, capsys):
    _png(tmp_path / "ok.png")
    _bomb(tmp_path / "bomb.png", 30_000, 30_000)
    data = tmp_path / "data.jsonl"
    data.write_text(_record(1, "ok.png") + _record(2, "bomb.png"))
    base = ["bench-edit", "--data", str(data), "--set", "editor.num_inference_steps=1"]
    one_line_error(capsys, [*base, "--out", str(tmp_path / "a")], "image too large")
    assert main([*base, "--out", str(tmp_path / "b"), "--skip-invalid", "--edit-only"]) == 0
    capsys.readouterr()
    edits = read_jsonl(tmp_path / "b" / "records.jsonl")
    assert [(r["id"], r["ok"]) for r in edits] == [("1", True)]


def test_image_paths_outside_the_data_folder_are_refused_unless_allowed(tmp_path, capsys):
    """``../`` and absolute image paths are invalid records (a data file from elsewhere must not make a
    remote judge send out local files); ``allow_outside_images`` accepts them."""
    folder = tmp_path / "data"
    folder.mkdir()
    _png(folder / "inside.png")
    outside = _png(tmp_path / "secret.png")
    data = folder / "data.jsonl"
    data.write_text(_record(1, "inside.png") + _record(2, "../secret.png") + _record(3, str(outside)))
    loaded = load_dataset(data)
    assert [s.id for s in loaded.samples] == ["1"]
    assert {i.kind for i in loaded.issues} == {"image outside data folder"}
    assert len(load_dataset(data, allow_outside_images=True).samples) == 3
    one_line_error(
        capsys,
        ["bench-edit", "--out", str(tmp_path / "o"), "--data", str(data)],
        "leaves the data file's folder",
    )


def test_shipped_sample_benchmark_is_still_valid():
    loaded = load_dataset(SAMPLE_DIR / "samples.jsonl")
    assert loaded.issues == [] and len(loaded.samples) == loaded.total


def test_bench_edit_out_pointing_at_a_file_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    one_line_error(capsys, ["bench-edit", "--out", str(target), *FAST], "is a file")
    one_line_error(capsys, ["bench-edit", "--out", str(target / "sub"), *FAST], "cannot create --out")
    assert target.read_text() == "keep me"


# ----------------------------------------------------------------------------- adapters and checkpoints (13)
@pytest.mark.parametrize(
    "config,expected",
    [
        (b"{", "is not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"r": "8", "lora_alpha": 8}', "'r' must be an integer"),
        (b'{"r": 8}', "'lora_alpha' must be a number"),
        (b'{"r": 8, "lora_alpha": 8, "target_modules": [1]}', "'target_modules'"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
)
def test_bad_adapter_config_is_a_one_line_error(tmp_path, capsys, config, expected):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_bytes(config)
    argv = ["sample", "-p", "a cube", "--out", str(tmp_path / "o"), "--adapter", str(adapter), "--n", "1"]
    one_line_error(capsys, argv, expected)


def test_truncated_trainer_state_is_a_one_line_error(tmp_path):
    """A trainer.pt cut short (disk full, copy interrupted) is an R3DError, not a zip traceback."""
    ckpt = tmp_path / "step-0000002"
    ckpt.mkdir()
    torch.save({"step": 2, "optimizer": {"state": {}, "param_groups": []}}, ckpt / "trainer.pt")
    data = (ckpt / "trainer.pt").read_bytes()
    (ckpt / "trainer.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(R3DError, match="is damaged"):
        load_trainer_state(ckpt)
    (ckpt / "trainer.pt").write_bytes(b"")
    with pytest.raises(R3DError, match="is damaged"):
        load_trainer_state(ckpt)


def test_train_vqvae_resume_from_a_truncated_trainer_state_is_a_one_line_error(voxels, tmp_path, capsys):  # noqa: F811
    """The issue's reproduction through the CLI: cut the newest checkpoint's trainer.pt in half, then
    ``train-vqvae --resume`` exits 2 with one line (before: a PytorchStreamReader traceback)."""
    recipe = write_vqvae_recipe(tmp_path, voxels, "vae", steps=2, ckpt_every=1)
    run = tmp_path / "run"
    assert main(["train-vqvae", str(recipe), "--out", str(run), "--json"]) == 0
    capsys.readouterr()
    state = latest_checkpoint(run) / "trainer.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    one_line_error(capsys, ["train-vqvae", "--resume", str(run)], "is damaged")


# ----------------------------------------------------------------------------- absurd sizes (13)
def test_eval_motion_refuses_an_impossible_sample_count_before_allocating(tmp_path, capsys, monkeypatch):
    """--num-samples 10^12 would need petabytes of noise: refused with one line naming the option
    (before: MemoryError traceback after loading everything). A sane count still passes the check."""
    monkeypatch.setenv("R3D_CACHE_DIR", str(tmp_path / "cache"))
    base = ["eval-motion", "--reference-size", "64", "--steps", "1"]
    one_line_error(capsys, [*base, "--num-samples", str(10**12)], "--num-samples 1000000000000")
    one_line_error(
        capsys, [*base, "--mm", "--mm-prompts", str(10**6), "--mm-repeats", str(10**6)], "--mm-prompts"
    )
