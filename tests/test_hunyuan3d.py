"""Hunyuan3D-2.1 adapter on tiny random configs: loading, official names, conventions, GRPO step."""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_uni3d import FakeClip, tiny_uni3d

from r3d.core.checkpoint import load_strict
from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.grpo import GRPOTrainer
from r3d.core.policy import FlowPolicy
from r3d.core.recipe import load_recipe
from r3d.core.rewards import RewardMix
from r3d.core.rollout import make_schedule, sample
from r3d.models.hunyuan3d import (
    HUNYUAN3D_21_CONFIG,
    VAE_ENCODER_PREFIXES,
    build_modules,
    load_hunyuan3d_policy,
    load_shape_model,
    preprocess_image,
)
from r3d.models.hunyuan3d_dit import MoEBlock, _split_heads
from r3d.models.hunyuan3d_keys import DINO_KEY_RENAMES, map_dino_keys
from r3d.models.hunyuan3d_vae import logits_to_mesh
from r3d.rewards.uni3d import Uni3DReward

REPO = Path(__file__).resolve().parents[1]
#: The official hunyuan3d-dit-v2-1/config.yaml.
REAL_21 = HUNYUAN3D_21_CONFIG
#: sha256[:16] and count of the sorted "name:shape" lists of the reference modules (Tencent's
#: HunYuanDiTPlain, ShapeVAE minus its encoder, SingleImageEncoder in transformers-4 key naming),
#: built from REAL_21 on the meta device outside the repo.
REFERENCE_DIGESTS = {
    "model": ("3e7f7a6a3d706f9c", 752),
    "vae": ("9a2237d0a4ae16de", 266),
    "conditioner": ("ab3b7015ecf11008", 439),
}


def tiny_config() -> dict:
    cfg = copy.deepcopy(REAL_21)
    cfg["model"]["params"].update(
        input_size=32,
        in_channels=8,
        hidden_size=64,
        context_dim=32,
        depth=7,
        num_heads=4,
        text_len=5,
        num_moe_layers=2,
        num_experts=4,
    )
    cfg["vae"]["params"].update(
        num_latents=32, embed_dim=8, heads=4, width=64, num_decoder_layers=2, num_encoder_layers=1, pc_size=64
    )
    enc = cfg["conditioner"]["params"]["main_image_encoder"]["kwargs"]
    enc["config"].update(hidden_size=32, image_size=28, num_attention_heads=2, num_hidden_layers=2)
    enc["image_size"] = 28  # (28 // 14)² + cls = 5 tokens
    cfg["image_processor"] = {"params": {"size": 32, "border_ratio": 0.15}}
    return cfg


def to_v4_names(state: dict) -> dict:
    """The conditioner state dict in the checkpoint's transformers-4 naming."""
    back = {new: old for old, new in DINO_KEY_RENAMES.items()}
    out = {}
    for key, value in state.items():
        for new, old in back.items():
            key = key.replace(new, old)
        out[key] = value
    return out


def write_model_dir(folder: Path, seed: int = 0) -> dict:
    """A tiny random Hunyuan3D-2.1 in the official layout (config.yaml + model.fp16.ckpt); returns the
    fp16-rounded fp32 state dicts. The occupancy bias is centred so that sampled latents give surfaces."""
    torch.manual_seed(seed)
    cfg = tiny_config()
    dit, vae, cond = build_modules(cfg)
    with torch.no_grad():
        logits = vae.occupancy(vae.decode(torch.randn(4, 32, 8)), torch.rand(512, 3) * 2 - 1)
        vae.geo_decoder.output_proj.bias -= logits.median()
    vae_sd = {
        **vae.state_dict(),
        "pre_kl.weight": torch.zeros(16, 64),
        "encoder.input_proj.weight": torch.zeros(1),
    }
    ckpt = {
        "model": {k: v.half() for k, v in dit.state_dict().items()},
        "vae": {k: v.half() for k, v in vae_sd.items()},
        "conditioner": {k: v.half() for k, v in to_v4_names(cond.state_dict()).items()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.save(ckpt, folder / "model.fp16.ckpt")
    return {"model": dit.state_dict(), "vae": vae.state_dict(), "conditioner": cond.state_dict()}


def write_image(path: Path, colour=(200, 120, 60), size=(48, 40)) -> str:
    yy, xx = np.mgrid[: size[1], : size[0]]
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    disc = (yy - size[1] / 2) ** 2 + (xx - size[0] / 2) ** 2 < (min(size) / 3) ** 2
    rgba[disc] = (*colour, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hy") / "hunyuan3d-dit-v2-1"
    write_model_dir(folder)
    return folder.parent


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("img")
    return [write_image(d / "a.png"), write_image(d / "b.png", (30, 90, 220), (40, 56))]


def policy_of(model_dir: Path, **kw):
    return load_hunyuan3d_policy(str(model_dir), device="cpu", decode_resolution=8, num_chunks=300, **kw)


def test_checkpoint_loads_with_transformers4_dino_names_and_skips_the_vae_encoder(tmp_path):
    """config.yaml + model.fp16.ckpt (found in the hunyuan3d-dit-v2-1 subfolder) load strictly into fp32
    modules equal to the saved ones; DINOv2 keys are renamed to the installed transformers' naming."""
    saved = write_model_dir(tmp_path / "hunyuan3d-dit-v2-1", seed=3)
    model = load_shape_model(tmp_path)
    for part, module in (("model", model.dit), ("vae", model.vae), ("conditioner", model.conditioner)):
        got = module.state_dict()
        assert set(got) == set(saved[part])
        assert all(torch.equal(got[k], saved[part][k].half().float()) for k in got), part
        assert all(not p.requires_grad for p in module.parameters()) and not module.training
    assert (model.image_size, model.border_ratio, model.shift) == (32, 0.15, 1.0)
    tokens = model.conditioner(torch.zeros(2, 3, 40, 40))
    assert tokens.shape == (2, 5, 32)


def test_weight_mismatches_are_one_line_errors(tmp_path):
    dit, _, cond = build_modules(tiny_config())
    sd = dit.state_dict()
    with pytest.raises(R3DError, match=r"1 missing \(blocks.0.attn1.to_q.weight\)"):
        load_strict(
            dit, {k: v for k, v in sd.items() if k != "blocks.0.attn1.to_q.weight"}, "DiT", assign=False
        )
    with pytest.raises(R3DError, match="1 unexpected"):
        load_strict(dit, {**sd, "pooler.k_proj.weight": torch.zeros(1)}, "DiT", assign=False)
    bad = dict(sd)
    bad["x_embedder.weight"] = torch.zeros(3, 3)
    with pytest.raises(R3DError, match="do not match"):
        load_strict(dit, bad, "DiT", assign=False)
    with pytest.raises(R3DError, match="fetch-weights hunyuan3d-2.1"):
        load_shape_model(tmp_path)
    cfg = tiny_config()
    cfg["model"]["params"]["use_attention_pooling"] = True
    with pytest.raises(R3DError, match="use_attention_pooling"):
        build_modules(cfg)


def _digest(state: dict) -> tuple[str, int]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16], len(state)


def test_full_size_modules_have_the_official_names_and_load_strictly():
    """At full 2.1 size (meta device) r3d's DiT / VAE decoder / conditioner have exactly the reference's
    parameter names and shapes, and official-name state dicts load strictly (DINOv2 from 4.x names)."""
    with torch.device("meta"):
        dit, vae, cond = build_modules(REAL_21)
        again = build_modules(REAL_21)
    states = {
        "model": dit.state_dict(),
        "vae": vae.state_dict(),
        "conditioner": to_v4_names(cond.state_dict()),
    }
    for part, state in states.items():
        assert _digest(state) == REFERENCE_DIGESTS[part], part
    assert math.isclose(sum(v.numel() for v in states["model"].values()) / 1e9, 3.0508, abs_tol=1e-4)
    vae_official = {**states["vae"], **{p + "w": torch.empty(1, device="meta") for p in VAE_ENCODER_PREFIXES}}
    load_strict(again[0], states["model"], "DiT")
    load_strict(
        again[1], {k: v for k, v in vae_official.items() if not k.startswith(VAE_ENCODER_PREFIXES)}, "VAE"
    )
    load_strict(again[2], map_dino_keys(states["conditioner"], again[2]), "conditioner")


def test_attention_heads_take_q_k_v_from_one_concatenated_slice():
    """Hunyuan's permutation: head 0 gets its q, k and v from the first 3·head_dim outputs of to_q."""
    q, k, v = (torch.randn(1, 2, 8) for _ in range(3))  # 2 heads × head_dim 4 → concat width 24
    hq, hk, hv = _split_heads([q, k, v], heads=2)
    assert torch.equal(hq[0, 0], q[0, :, 0:4]) and torch.equal(hk[0, 0], q[0, :, 4:8])
    assert torch.equal(hv[0, 0], k[0, :, 0:4]) and torch.equal(hq[0, 1], k[0, :, 4:8])


def test_moe_is_one_differentiable_path_equal_to_the_dense_formula():
    """Σ_k softmax-score_k · expert_{i_k}(x) + shared(x), per token; gradients reach gate and experts."""
    torch.manual_seed(0)
    moe = MoEBlock(16, num_experts=4, top_k=2, inner=32)
    x = torch.randn(2, 7, 16)
    y = moe(x)
    tokens = x.reshape(-1, 16)
    scores = torch.softmax(tokens @ moe.gate.weight.T, -1)
    w, idx = scores.topk(2, dim=-1)
    dense = torch.stack(
        [
            sum(w[t, j] * moe.experts[int(idx[t, j])](tokens[t]) for j in range(2))
            + moe.shared_experts(tokens[t])
            for t in range(tokens.shape[0])
        ]
    )
    assert torch.allclose(y.reshape(-1, 16), dense, atol=1e-6)
    y.square().sum().backward()
    assert moe.gate.weight.grad.abs().sum() > 0
    assert any(e.net[0].proj.weight.grad is not None for e in moe.experts)
    moe.eval()
    assert torch.equal(moe(x), y.detach())  # no eval-only branch


def test_canonical_schedule_drops_the_dt0_step_and_matches_hunyuan_sampling(model_dir, images):
    """sigmas(T) = 1 − linspace(0, 1, T+1); Euler over it equals Hunyuan's own loop (t = linspace(0, 1,
    T+1) plus a duplicated final 1, x += (t' − t)·output with CFG on zeros) run on the same DiT."""
    policy = policy_of(model_dir, cfg_scale=3.0)
    assert isinstance(policy, FlowPolicy)
    sig = policy.sigmas(4)
    assert torch.allclose(sig, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])) and sig[0] == 1 and sig[-1] == 0
    assert bool(make_schedule(policy, 4).moving().all())
    x = policy.sample(images, num_steps=4, generator=torch.Generator().manual_seed(0))
    # Hunyuan's native loop, 5 inference steps
    cond = policy.encode_prompts(images)
    lat = policy.initial_noise(2, torch.Generator().manual_seed(0))
    ts = list(np.linspace(0, 1, 5)) + [1.0]
    with torch.no_grad():
        for t, t_next in zip(ts[:-1], ts[1:], strict=True):
            tt = torch.full((4,), t, dtype=torch.float32)
            out = policy.network(torch.cat([lat, lat]), tt, torch.cat([cond, torch.zeros_like(cond)]))
            c, u = out.chunk(2)
            lat = lat + (t_next - t) * (u + 3.0 * (c - u))
    assert torch.allclose(x, lat, atol=1e-5)


def test_sde_at_noise_level_zero_is_exactly_the_adapters_euler_ode(model_dir, images):
    policy = policy_of(model_dir)
    schedule = make_schedule(policy, 4)
    cond = policy.encode_prompts(images)
    noise = policy.initial_noise(2, torch.Generator().manual_seed(1))
    common = {"sde_steps": torch.ones(4, dtype=torch.bool), "generator": torch.Generator().manual_seed(2)}
    sde = sample(policy, schedule, cond, noise, kernel="flow_sde", noise_level=0.0, **common)
    ode = sample(policy, schedule, cond, noise, kernel="ode", noise_level=0.0, **common)
    assert torch.equal(sde.latents, ode.latents)
    own = policy.sample(images, num_steps=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sde.latents[:, -1], own)


def test_decode_uses_the_r_plus_1_grid_and_reversed_winding():
    """Marching cubes on the (R+1)³ grid over ±1.01 maps index/(R+1): a centred sphere of radius r comes
    out with radius ≈ r·R/(R+1) centred at −1.01/(R+1); winding is outward (positive volume)."""
    R, b, r = 40, 1.01, 0.6
    axis = np.linspace(-b, b, R + 1)
    grid = r - np.linalg.norm(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1), axis=-1)
    mesh = logits_to_mesh(grid.astype(np.float32), b)
    centre = mesh.vertices.mean(0)
    radius = np.linalg.norm(mesh.vertices - centre, axis=1).mean()
    assert np.allclose(centre, -b / (R + 1), atol=2e-3)
    assert math.isclose(radius, r * R / (R + 1), rel_tol=5e-3)
    assert mesh.is_watertight and mesh.volume > 0
    assert logits_to_mesh(np.full((5, 5, 5), -1.0, np.float32)) is None


def test_preprocess_recentres_on_white_and_rejects_empty_images(tmp_path):
    path = write_image(tmp_path / "x.png", size=(60, 30))
    img = preprocess_image(path, size=64, border_ratio=0.15)
    assert img.shape == (1, 3, 64, 64) and img.min() >= -1 and img.max() <= 1
    assert torch.allclose(img[0, :, 0, 0], torch.ones(3))  # white border
    fg = (img[0] < 0.9).any(0)
    rows, cols = fg.nonzero()[:, 0], fg.nonzero()[:, 1]
    assert abs(int(cols.max() - cols.min()) + 1 - 0.85 * 64) <= 3  # longer side fills 85 %
    assert abs(float(rows.float().mean()) - 31.5) <= 1.5 and abs(float(cols.float().mean()) - 31.5) <= 1.5
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(tmp_path / "empty.png")
    with pytest.raises(R3DError, match="empty"):
        preprocess_image(tmp_path / "empty.png")


def test_grpo_step_runs_with_ratio_one_and_uni3d_reward(model_dir, images, tmp_path):
    """A full rollout → decode → Uni3D + geometry reward → LoRA update through GRPOTrainer; the first
    inner step's ratio is exactly 1 and the adapter receives gradients."""
    policy = policy_of(model_dir)
    with pytest.raises(R3DError, match="image paths"):
        policy.encode_prompts(["a chair"])
    recipe = GRPORecipe.model_validate(
        {
            "model": {"name": "r3d.models.hunyuan3d:load_hunyuan3d_policy"},
            "prompts": {"train": images},
            "sampler": {"num_steps": 2, "kernel": "flow_sde", "noise_level": 0.7},
            "rewards": {"uni3d": {"weight": 1.0}},
            "train": {
                "iterations": 1,
                "prompts_per_iteration": 2,
                "group_size": 2,
                "batch_size": 2,
                "lr": 1e-3,
            },
            "eval": {"every": 0, "samples_per_prompt": 1, "num_steps": 1},
        }
    )
    reward = Uni3DReward.from_modules(tiny_uni3d(), FakeClip(), num_points=256)
    trainer = GRPOTrainer(recipe, policy, RewardMix([reward], [1.0]), tmp_path / "run", log=lambda _: None)
    records = trainer.train()
    step = records[1]
    assert step["ratio_first_step_maxdev"] == 0.0 and step["ratio_first_step_mean"] == 1.0
    assert step["reward/uni3d"] > -1.0  # meshes were decoded and scored
    assert (tmp_path / "run" / "checkpoint" / "adapter_model.safetensors").is_file()


def test_recipe_validates():
    cfg = load_recipe(REPO / "recipes" / "mesh_uni3d.yaml", GRPORecipe, [])
    assert cfg.model.name == "hunyuan3d"
    assert {"geometry", "uni3d"} <= set(cfg.rewards)


def test_gradient_checkpointing_and_bf16_keep_the_same_path(model_dir, images):
    """Checkpointing recomputes blocks with identical outputs and gradients; a bf16 policy returns fp32
    velocities on the latents' device."""
    torch.manual_seed(0)
    dit = build_modules(tiny_config())[0]
    x, t, ctx = torch.randn(2, 32, 8), torch.rand(2), torch.randn(2, 5, 32)
    grads = []
    for on in (False, True):
        dit.zero_grad()
        dit.gradient_checkpointing = on
        out = dit(x, t, ctx)
        out.square().sum().backward()
        grads.append((out.detach(), dit.blocks[0].attn1.to_q.weight.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    policy = policy_of(model_dir, dtype="bfloat16")
    v = policy.velocity(torch.randn(2, 32, 8), torch.tensor([0.5, 0.5]), policy.encode_prompts(images))
    assert v.dtype == torch.float32 and v.device.type == "cpu" and torch.isfinite(v).all()


# ----------------------------------------------------------------------------- meta build, official code
def test_meta_build_has_the_full_size_shapes_without_weights(tmp_path):
    """device="meta" with no weights builds Hunyuan3D-2.1's full-size modules from the published config
    (3.05 B DiT parameters, nothing allocated); conditioner and guided velocity give full-size shapes;
    the dry-run hook names the download."""
    from r3d.models.hunyuan3d import missing_weights

    policy = load_hunyuan3d_policy(
        str(tmp_path), device="meta", dtype="bfloat16", gradient_checkpointing=True
    )
    params = list(policy.network.parameters())
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in params)
    assert sum(p.numel() for p in params) == 3_050_758_720
    cond = policy.example_cond(2)
    assert cond.shape == (2, 1370, 1024) and cond.is_meta
    x = policy.initial_noise(2, torch.Generator().manual_seed(0)).to("meta")
    assert policy.velocity(x, torch.tensor([1.0, 0.5]), cond).shape == (2, 4096, 64)
    assert len(policy.network.checkpoint_units()) == 21
    problems = missing_weights(str(tmp_path))
    assert len(problems) == 1 and "r3d fetch-weights hunyuan3d-2.1" in problems[0]


def test_meta_build_follows_the_config_of_a_weights_folder(model_dir):
    policy = load_hunyuan3d_policy(str(model_dir), device="meta")
    assert policy.latent_shape == (32, 8) and policy.example_cond(1).shape == (1, 5, 32)


def test_official_implementation_without_hy3dshape_is_a_one_line_error(model_dir, monkeypatch):
    """implementation: official with no importable hy3dshape: one R3DError line saying what to install,
    from the loader and from the dry-run hook."""
    import sys

    from r3d.models.hunyuan3d import missing_weights

    monkeypatch.setitem(sys.modules, "hy3dshape", None)  # makes `import hy3dshape` raise ImportError
    with pytest.raises(R3DError, match="needs Tencent's hy3dshape package") as info:
        load_hunyuan3d_policy(str(model_dir), device="cpu", implementation="official")
    assert "\n" not in str(info.value)
    assert any("hy3dshape" in p for p in missing_weights(str(model_dir), implementation="official"))
    with pytest.raises(R3DError, match="implementation must be one of"):
        load_hunyuan3d_policy(str(model_dir), implementation="tencent")


def _hy3dshape_importable() -> bool:
    try:
        import hy3dshape  # noqa: F401
    except Exception:  # noqa: BLE001 — a broken installation (e.g. torchvision ops) counts as absent
        return False
    return True


@pytest.mark.skipif(not _hy3dshape_importable(), reason="Tencent's hy3dshape is not importable here")
def test_official_implementation_matches_r3d_through_the_adapter(model_dir, images):
    """With hy3dshape installed, Tencent's own classes (built from the config's targets) behind the same
    adapter give r3d's outputs: condition tokens, DiT, one guided step, a full ODE sample, decoding and
    the LoRA gradients agree within 1e-5 (fp32); the MoE keeps one differentiable path in eval mode."""
    from r3d.core.grpo import attach_lora

    kw = {"device": "cpu", "decode_resolution": 8, "num_chunks": 300}
    ours = load_hunyuan3d_policy(str(model_dir), **kw)
    theirs = load_hunyuan3d_policy(str(model_dir), implementation="official", **kw)
    assert type(theirs.network.model).__module__.startswith("hy3dshape")
    cond = ours.encode_prompts(images)
    assert torch.allclose(theirs.encode_prompts(images), cond, atol=1e-5)
    x, t = torch.randn(2, 32, 8), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        assert torch.allclose(ours.network(x, t, cond), theirs.network(x, t, cond), atol=1e-5)
        gen = {"num_steps": 6}
        a = ours.sample(images, generator=torch.Generator().manual_seed(4), **gen)
        b = theirs.sample(images, generator=torch.Generator().manual_seed(4), **gen)
        assert torch.allclose(a, b, atol=1e-5)
        pts = torch.rand(200, 3) * 2 - 1
        assert torch.allclose(
            ours.model.vae.occupancy(ours.model.vae.decode(a), pts),
            theirs.model.vae.occupancy(theirs.model.vae.decode(a), pts),
            atol=1e-5,
        )
    assert theirs.network.model.training  # the differentiable MoE path, also after .eval()
    pairs = [attach_lora(p, 2, 4) for p in (ours, theirs)]
    named = [
        {
            k.split("base_model.model.")[-1].removeprefix("model."): v
            for k, v in p.named_parameters()
            if v.requires_grad
        }
        for p in pairs
    ]
    assert set(named[0]) == set(named[1]) and named[0]
    with torch.no_grad():
        for k, v in named[0].items():
            v.normal_(0, 0.1)
            named[1][k].copy_(v)
    for policy in (ours, theirs):
        policy.velocity(x, torch.tensor([0.9, 0.4]), cond).square().mean().backward()
    assert all(torch.allclose(named[0][k].grad, named[1][k].grad, atol=1e-5) for k in named[0])
