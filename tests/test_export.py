"""r3d export: peft adapter folders, merged weights in each backend's own format, sample --model-weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from test_cli_grpo import write_recipe
from test_hunyuan3d import REAL_21, REFERENCE_DIGESTS, _digest, to_v4_names, write_image, write_model_dir

from r3d.cli.main import main
from r3d.commands.export import export_run, model_weights_options
from r3d.core.checkpoint import load_state
from r3d.core.errors import R3DError
from r3d.core.grpo import attach_lora
from r3d.core.policy import factory_hooks
from r3d.models.diffsplat import load_tiny_diffsplat
from r3d.models.hunyuan3d import (
    VAE_ENCODER_PREFIXES,
    Hunyuan3DPolicy,
    load_hunyuan3d_policy,
    merged_checkpoint,
    meta_shape_model,
    read_checkpoint,
)
from r3d.models.mdm import MDM, load_mdm, load_mdm_policy, load_tiny_motion
from r3d.models.tiny_shapes import load_tiny_shapes

TOL = 1e-5


def randomize_lora(peft_model, seed: int = 0, scale: float = 0.05) -> None:
    """LoRA starts as the identity (B = 0); give B random values so the adapter changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def merge_roundtrip(policy, forward, write, load, rank: int = 4):
    """(adapter-enabled output, merged-and-reloaded output, path written) for ``forward(policy)``."""
    peft_model = attach_lora(policy, rank, 2.0 * rank)
    randomize_lora(peft_model)
    with torch.no_grad():
        with peft_model.disable_adapter():
            base = forward(policy)
        adapted = forward(policy)
    assert float((adapted - base).abs().max()) > 1e-3  # the adapter matters
    peft_model.merge_and_unload()
    path = write(policy)
    with torch.no_grad():
        merged = forward(load(path))
    return adapted, merged, path


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# ----------------------------------------------------------------------------- per backend
def test_tiny_shapes_merged_safetensors_equal_the_adapter(tmp_path):
    """The merged tiny-shapes file (shipped layout, fp32) predicts what base + adapter predicts (≤ 1e-5)."""
    x = torch.randn(3, 10, 10, 10, generator=torch.Generator().manual_seed(1))
    sigma, labels = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0, 1, 2])
    writer = factory_hooks(load_tiny_shapes).save_merged
    adapted, merged, path = merge_roundtrip(
        load_tiny_shapes(),
        lambda p: p.network(x, sigma, labels),
        lambda p: writer(p, tmp_path / "merged", {}, None),
        lambda path: load_tiny_shapes(**model_weights_options("tiny_shapes", path)),
    )
    assert path == tmp_path / "merged" / "tiny_shapes.safetensors"
    assert max_diff(adapted, merged) <= TOL
    stored = load_file(str(path))
    assert stored["net.x_in.weight"].dtype == torch.float32 and not any("lora" in k for k in stored)


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hy") / "hunyuan3d-dit-v2-1"
    write_model_dir(folder, seed=5)
    return folder.parent


def test_hunyuan3d_merged_checkpoint_equals_the_adapter_and_keeps_the_official_layout(hunyuan_dir, tmp_path):
    """merged/hunyuan3d-dit-v2-1/model.ckpt (fp32) loads strictly through r3d's loader and predicts what
    the adapter-enabled DiT predicts (≤ 1e-5); its sections hold exactly the source file's keys (VAE
    encoder and transformers-4 DINOv2 names included). The default writes fp16 model.fp16.ckpt."""
    image = write_image(tmp_path / "a.png")

    def load(path):
        return load_hunyuan3d_policy(**model_weights_options("hunyuan3d", path), device="cpu", cfg_scale=3.0)

    policy = load(hunyuan_dir)
    cond = policy.encode_prompts([image, image])
    x = torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.8, 0.3])
    writer = factory_hooks(load_hunyuan3d_policy).save_merged
    options = {"model_dir": str(hunyuan_dir)}
    adapted, merged, path = merge_roundtrip(
        policy,
        lambda p: p.velocity(x, sigma, cond),
        lambda p: writer(p, tmp_path / "merged", options, torch.float32),
        load,
    )
    assert max_diff(adapted, merged) <= TOL
    source = read_checkpoint(hunyuan_dir / "hunyuan3d-dit-v2-1" / "model.fp16.ckpt")
    written = read_checkpoint(path / "hunyuan3d-dit-v2-1" / "model.ckpt")
    assert {part: set(sd) for part, sd in written.items()} == {part: set(sd) for part, sd in source.items()}
    assert all(torch.equal(written["vae"][k].half(), v) for k, v in source["vae"].items())
    assert (path / "hunyuan3d-dit-v2-1" / "config.yaml").read_bytes() == (
        hunyuan_dir / "hunyuan3d-dit-v2-1" / "config.yaml"
    ).read_bytes()
    half = writer(policy, tmp_path / "half", options, None) / "hunyuan3d-dit-v2-1" / "model.fp16.ckpt"
    assert read_checkpoint(half)["model"]["x_embedder.weight"].dtype == torch.float16
    assert max_diff(load(tmp_path / "half").velocity(x, sigma, cond), merged) < 1e-2  # fp16 rounding only
    with pytest.raises(R3DError, match="float16 or float32"):
        writer(policy, tmp_path / "bf", options, torch.bfloat16)


def test_hunyuan3d_merged_key_set_equals_the_official_manifest_at_full_size():
    """At full 2.1 size (meta device, LoRA attached and merged) the merged checkpoint's names and shapes
    hash to the official manifest (Tencent's DiT, VAE decoder, SingleImageEncoder in 4.x names), and
    the VAE keeps the encoder keys of the source file."""
    policy = Hunyuan3DPolicy(meta_shape_model())
    peft_model = attach_lora(policy, 8, 16)
    assert any("lora_A" in k for k in policy.network.state_dict())
    peft_model.merge_and_unload()
    encoder = {p + "weight": torch.empty(1, device="meta") for p in VAE_ENCODER_PREFIXES}
    base = {
        "model": meta_shape_model().dit.state_dict(),
        "vae": {**policy.model.vae.state_dict(), **encoder},
        "conditioner": to_v4_names(policy.model.conditioner.state_dict()),
    }
    ckpt = merged_checkpoint(policy.network, base)
    assert _digest(ckpt["model"]) == REFERENCE_DIGESTS["model"]
    assert _digest(ckpt["conditioner"]) == REFERENCE_DIGESTS["conditioner"]
    decoder = {k: v for k, v in ckpt["vae"].items() if not k.startswith(VAE_ENCODER_PREFIXES)}
    assert _digest(decoder) == REFERENCE_DIGESTS["vae"] and set(encoder) <= set(ckpt["vae"])
    assert REAL_21["model"]["params"]["depth"] == 21  # the manifest is the real 2.1 size
    with pytest.raises(R3DError, match="missing"):
        merged_checkpoint(
            policy.network,
            {**base, "model": {**base["model"], "extra.weight": encoder[VAE_ENCODER_PREFIXES[0] + "weight"]}},
        )


def _mdm_forward(prompts: list[str], frames: int):
    def forward(policy):
        cond = policy.encode_prompts(prompts)
        x = torch.randn(
            len(prompts), policy.network.njoints, 1, frames, generator=torch.Generator().manual_seed(3)
        )
        return policy.predict(x, torch.tensor([40] * len(prompts)), cond)

    return forward


def test_tiny_motion_merged_safetensors_equal_the_adapter(tmp_path):
    """The merged tiny MDM file (shipped layout: no pe tables, mean/std, config metadata) equals base +
    adapter (≤ 1e-5) through load_tiny_motion."""
    writer = factory_hooks(load_tiny_motion).save_merged
    policy = load_tiny_motion(guidance_scale=1.0)  # the network's own output, not CFG's amplified difference
    adapted, merged, path = merge_roundtrip(
        policy,
        _mdm_forward(["a person walks forward", "someone jumps"], policy.max_frames),
        lambda p: writer(p, tmp_path / "merged", {}, None),
        lambda path: load_tiny_motion(**model_weights_options("tiny_motion", path), guidance_scale=1.0),
    )
    assert max_diff(adapted, merged) <= TOL
    assert not any(k.endswith(".pe") or "lora" in k for k in load_file(str(path)))


def test_official_mdm_merged_pt_has_the_official_names_and_equals_the_adapter(tmp_path):
    """An official-layout MDM (model000475000.pt + args.json) merged: a plain state dict with exactly the
    source's keys minus clip_model.* (pe tables included, as MDM's load_model_wo_clip wants), args.json
    beside it, equal to base + adapter (≤ 1e-5) when read back by load_mdm_policy."""
    torch.manual_seed(0)
    state = MDM().state_dict()
    source = tmp_path / "src" / "model000475000.pt"
    source.parent.mkdir()
    torch.save({"model": {**state, "clip_model.token_embedding.weight": torch.zeros(3, 4)}}, source)
    args = {"arch": "trans_enc", "layers": 8, "latent_dim": 512, "dataset": "humanml", "diffusion_steps": 50}
    (source.parent / "args.json").write_text(json.dumps(args))

    def text(captions):
        return torch.stack(
            [torch.randn(512, generator=torch.Generator().manual_seed(len(c))) for c in captions]
        )

    stats = {"mean": np.zeros(263, np.float32), "std": np.ones(263, np.float32), "text_encoder": text}

    def load(path):
        return load_mdm_policy(path, **stats, default_length=12)

    writer = factory_hooks(load_mdm_policy).save_merged
    adapted, merged, path = merge_roundtrip(
        load(source),
        _mdm_forward(["a man walks", "a woman dances"], 196),
        lambda p: writer(p, tmp_path / "merged", {"path": str(source)}, None),
        lambda path: load(model_weights_options("r3d.models.mdm:load_mdm_policy", path)["path"]),
    )
    assert path.name == "model000475000.pt" and json.loads(path.with_name("args.json").read_text()) == args
    assert max_diff(adapted, merged) <= TOL
    written = torch.load(path, weights_only=True)
    assert set(written) == set(state) and "sequence_pos_encoder.pe" in written
    assert all(
        torch.equal(written[k], state[k]) for k in state if "linear" not in k and "embed_text" not in k
    )
    load_mdm(path)  # r3d's strict loader


def test_tiny_diffsplat_merged_diffusers_folder_equals_the_adapter(tmp_path):
    """The merged PixArt transformer saved with diffusers save_pretrained (transformer_ema/) loads with
    from_pretrained and predicts what base + adapter predicts (≤ 1e-5)."""
    x = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([501, 101])

    def forward(policy):
        return policy.predict(x, t, policy.encode_prompts(["a chair", "a lamp"]))

    writer = factory_hooks(load_tiny_diffsplat).save_merged
    adapted, merged, path = merge_roundtrip(
        load_tiny_diffsplat(seed=0),
        forward,
        lambda p: writer(p, tmp_path / "merged", {"seed": 0}, None),
        lambda path: load_tiny_diffsplat(seed=0, **model_weights_options("tiny_diffsplat", path)),
    )
    assert (path / "transformer_ema" / "config.json").is_file()
    assert max_diff(adapted, merged) <= TOL
    with pytest.raises(R3DError, match="transformer not available"):
        load_tiny_diffsplat(transformer=str(tmp_path / "nothing"))


# ----------------------------------------------------------------------------- export_run / CLI
def tiny_mesh_recipe(tmp_path: Path) -> Path:
    """A two-iteration tiny-shapes run with the EMA on (seconds on one core)."""
    data = {
        "run": {"seed": 0, "threads": 1},
        "model": {"name": "tiny_shapes"},
        "prompts": {"train": ["a cube", "a prism"], "eval": ["a cube"]},
        "sampler": {"num_steps": 6},
        "rewards": {"geometry": {"weight": 1.0}},
        "train": {
            "iterations": 2,
            "prompts_per_iteration": 2,
            "group_size": 4,
            "batch_size": 8,
            "lr": 0.05,
            "ema": {"enabled": True, "decay": 0.5, "update_interval": 1},
        },
        "eval": {"every": 0, "samples_per_prompt": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def meshes(folder: Path) -> list[trimesh.Trimesh]:
    return [trimesh.load(p) for p in sorted(folder.glob("*.ply"))]


def test_export_merge_then_sample_model_weights_equals_sample_adapter(tmp_path):
    """End to end through the CLI on a short real run: export --merge, then sample --model-weights gives
    the meshes sample --adapter gives (same vertices to float rounding); the exported adapter folder
    loads with peft.PeftModel.from_pretrained and samples exactly like the run folder; --ema exports
    the checkpoint's EMA weights."""
    run, out = tmp_path / "run", tmp_path / "exported"
    assert main(["grpo", str(tiny_mesh_recipe(tmp_path)), "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(out), "--merge"]) == 0
    merged = out / "merged" / "tiny_shapes.safetensors"
    assert (out / "adapter_config.json").is_file() and merged.is_file()
    common = ["sample", "-p", "a cube", "-p", "a prism", "-n", "2", "--steps", "6", "--format", "ply"]
    assert main([*common, "--adapter", str(run), "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--model-weights", str(merged), "--out", str(tmp_path / "m")]) == 0
    assert main([*common, "--adapter", str(out), "--out", str(tmp_path / "e")]) == 0
    ref, got, again = meshes(tmp_path / "a"), meshes(tmp_path / "m"), meshes(tmp_path / "e")
    assert len(ref) == len(got) == 4
    for a, b, c in zip(ref, got, again, strict=True):
        assert a.vertices.shape == b.vertices.shape and np.abs(a.vertices - b.vertices).max() < 1e-4
        assert np.array_equal(a.vertices, c.vertices)

    policy = load_tiny_shapes()
    x, sigma, labels = torch.randn(2, 10, 10, 10), torch.tensor([0.7, 0.2]), torch.tensor([1, 3])
    with torch.no_grad():
        base = policy.network(x, sigma, labels)
        peft_net = PeftModel.from_pretrained(policy.network, str(out))
        with_adapter = peft_net(x, sigma, labels)
        merged_out = load_tiny_shapes(weights=merged).network(x, sigma, labels)
    assert max_diff(with_adapter, base) > 1e-3 and max_diff(with_adapter, merged_out) <= TOL

    assert main(["export", str(run), "--out", str(tmp_path / "ema"), "--ema"]) == 0
    ema = load_state(run / "checkpoint")["ema"]["weights"]
    exported = load_file(str(tmp_path / "ema" / "adapter_model.safetensors"))
    live = load_file(str(run / "checkpoint" / "adapter_model.safetensors"))
    assert set(exported) == set(live)
    for key, value in exported.items():  # peft drops the adapter name ("default") from saved keys
        assert torch.equal(value, ema[key.removesuffix(".weight") + ".default.weight"]), key
    assert any(not torch.equal(exported[k], live[k]) for k in live)


def test_export_errors_are_one_line_with_exit_2(tmp_path, capsys):
    """Not a run folder, --ema on a run without EMA, --merge on a model without a writer, a bad --dtype:
    one line each, exit 2. Without --merge a model without a writer still exports its adapter."""
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    run = tmp_path / "toy"
    assert main(["grpo", str(write_recipe(tmp_path)), "--out", str(run)]) == 0
    for extra, message in (
        (["--ema"], "without train.ema"),
        (["--merge"], "no merged-weights writer"),
        (["--dtype", "float8"], "--dtype must be"),
    ):
        capsys.readouterr()
        assert main(["export", str(run), "--out", str(tmp_path / "o"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    result = export_run(run, tmp_path / "adapter")
    assert result["merged"] is None and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(R3DError, match="cannot load merged weights"):
        model_weights_options("toy_policy:make", tmp_path)
    with pytest.raises(R3DError, match="no such file"):
        model_weights_options("tiny_shapes", tmp_path / "missing.safetensors")
