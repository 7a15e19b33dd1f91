"""``r3d eval-motion`` end to end on small inputs: folders of motions, the tiny model, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r3d.cli.main import main
from r3d.motion.artifacts import Motion, save_motion_folder
from r3d.motion.synthetic import build_dataset

pytestmark = pytest.mark.usefixtures("cache_dir")  # conftest: a fresh R3D_CACHE_DIR per test


def _folder(path, shuffle_captions: bool):
    ds = build_dataset(64, seed=7)
    caps = list(ds.captions)
    if shuffle_captions:
        caps = caps[1:] + caps[:1]
    motions = [Motion(f[:n]) for f, n in zip(ds.features, ds.lengths, strict=True)]
    return save_motion_folder(path, motions, caps)


def _run(capsys, *args: str) -> dict:
    code = main(["eval-motion", "--json", "--reference-size", "64", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_folder_of_true_pairs_scores_far_better_than_mismatched_captions(tmp_path, capsys):
    good = _run(capsys, "--motions", str(_folder(tmp_path / "good", False)), "--replications", "2")
    bad = _run(capsys, "--motions", str(_folder(tmp_path / "bad", True)))
    g, b = good["summary"], bad["summary"]
    assert set(g) >= {"R_precision_top1", "R_precision_top3", "Matching_score", "FID", "Diversity"}
    assert len(good["replications"]) == 2 and good["settings"]["num_samples"] == 64
    assert g["R_precision_top3"]["generated"][0] > 0.6 > b["R_precision_top3"]["generated"][0]
    assert g["Matching_score"]["generated"][0] < b["Matching_score"]["generated"][0]
    assert g["FID"]["generated"][0] == pytest.approx(b["FID"]["generated"][0])  # same motions, same FID
    mean, conf = g["R_precision_top1"]["ground truth"]
    assert 0 <= mean <= 1 and conf >= 0


def test_tiny_model_generation_with_multimodality_and_report_file(tmp_path, capsys):
    report = tmp_path / "report.json"
    out = _run(
        capsys,
        "--num-samples",
        "32",
        "--steps",
        "2",
        "--mm",
        "--mm-prompts",
        "3",
        "--mm-repeats",
        "11",
        "--evaluator",
        "tiny-tmr",
        "--out",
        str(report),
    )
    assert out["settings"]["source"] == "tiny_motion" and out["settings"]["evaluator"] == "tiny-tmr"
    assert np.isfinite(out["summary"]["FID"]["generated"][0])
    assert out["summary"]["MultiModality"]["generated"][0] > 0
    assert json.loads(report.read_text())["summary"] == out["summary"]


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["eval-motion", "--motions", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "motions.jsonl" in err
    assert (
        main(["eval-motion", "--evaluator", "tiny-xyz", "--motions", str(_folder(tmp_path / "m", False))])
        == 2
    )
    assert "evaluator" in capsys.readouterr().err


def test_published_t2m_checkpoint_needs_glove_and_statistics(tmp_path, capsys):
    import torch

    from r3d.motion.evaluators import T2MEvaluator

    small = T2MEvaluator(
        {
            "dim_word": 8,
            "dim_text_hidden": 8,
            "dim_coemb_hidden": 8,
            "dim_motion_hidden": 8,
            "dim_movement_enc_hidden": 8,
            "dim_movement_latent": 8,
        }
    )
    torch.save(
        {k: getattr(small, k).state_dict() for k in ("text_encoder", "motion_encoder", "movement_encoder")},
        tmp_path / "finest.tar",
    )
    folder = _folder(tmp_path / "m", False)
    assert (
        main(
            [
                "eval-motion",
                "--reference-size",
                "64",
                "--evaluator",
                str(tmp_path / "finest.tar"),
                "--motions",
                str(folder),
            ]
        )
        == 2
    )
    assert "--glove" in capsys.readouterr().err


def _adapter(path, scale_b: float):
    """A LoRA adapter folder for the tiny MDM; lora_B = 0 (scale 0) leaves the model unchanged."""
    import torch

    from r3d.core.checkpoint import save_checkpoint
    from r3d.core.grpo import attach_lora
    from r3d.models.mdm import load_tiny_motion

    policy = load_tiny_motion()
    peft_model = attach_lora(policy, 2, 4.0, ["embed_text"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(scale_b * torch.randn(p.shape, generator=gen))
    save_checkpoint(path / "checkpoint", peft_model, {"iteration": 0})
    return path


def test_baseline_pairs_base_and_adapter_on_the_same_captions_and_noise(tmp_path, capsys):
    """--baseline: with an adapter that changes nothing (lora_B = 0) every paired difference is exactly
    0 — so base and adapter saw identical captions, lengths and noise; a real change shows up in the
    differences and in the adapter's own summary."""
    args = ["--num-samples", "32", "--steps", "2", "--replications", "2", "--evaluator", "tiny-tmr"]
    same = _run(capsys, "--adapter", str(_adapter(tmp_path / "zero", 0.0)), "--baseline", *args)
    assert same["paired"]["Matching_score"] == [0.0, 0.0] and same["paired"]["FID"] == [0.0, 0.0]
    assert same["baseline"]["summary"] == same["summary"]
    moved = _run(capsys, "--adapter", str(_adapter(tmp_path / "big", 0.5)), "--baseline", *args)
    diff = moved["paired"]["Matching_score"][0]
    assert diff != 0.0
    own = moved["summary"]["Matching_score"]["generated"][0]
    base = moved["baseline"]["summary"]["Matching_score"]["generated"][0]
    assert diff == pytest.approx(own - base)


def test_baseline_without_adapter_is_a_one_line_error(capsys):
    assert main(["eval-motion", "--baseline", "--num-samples", "32"]) == 2
    assert "--adapter" in capsys.readouterr().err


def test_option_objects_are_keyword_only_and_default_like_the_cli():
    """run_eval_motion / evaluate_protocol take small keyword-only option objects (a positional call is
    a TypeError, so a reordered argument cannot silently land in the wrong slot), and every field's
    default equals the default of the CLI option that sets it (library and CLI cannot drift)."""
    import dataclasses
    import inspect

    from r3d.cli.eval_motion import eval_motion
    from r3d.commands.eval_motion import (
        MeasureOptions,
        ModelOptions,
        ProtocolOptions,
        evaluate_protocol,
        run_eval_motion,
    )

    with pytest.raises(TypeError):
        run_eval_motion("tiny_motion")  # type: ignore[misc]
    for cls in (ModelOptions, MeasureOptions, ProtocolOptions):
        with pytest.raises(TypeError):
            cls(1)  # type: ignore[call-arg]
    after_options = list(inspect.signature(evaluate_protocol).parameters.values())[3:]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in after_options)
    cli = {name: p.default for name, p in inspect.signature(eval_motion).parameters.items()}
    renamed = {"guidance_scale": "guidance"}
    checked = 0
    for cls in (ModelOptions, MeasureOptions, ProtocolOptions):
        for f in dataclasses.fields(cls):
            name = renamed.get(f.name, f.name)
            if name in cli:
                assert f.default == cli[name], (cls.__name__, f.name)
                checked += 1
    assert checked == 19  # every CLI option that feeds an option object
