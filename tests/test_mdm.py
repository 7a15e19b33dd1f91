"""MDM: official names load strictly; the policy adapter honours lengths, padding, CFG and ratio = 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from r3d.core.errors import R3DError
from r3d.core.policy import DiffusionPolicy
from r3d.core.rollout import make_schedule, sample, transition
from r3d.models.mdm import MDM, MDMPolicy, beta_schedule, load_mdm, respaced_timesteps
from r3d.motion.text import sentence_features

SMALL = {
    "latent_dim": 32,
    "ff_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "clip_dim": 24,
    "mask_frames": True,
}


def test_full_size_official_state_dict_loads_strictly(tmp_path):
    """A random HumanML3D-sized MDM state dict with CLIP keys and pe tables (as saved) loads exactly."""
    torch.manual_seed(0)
    ref = MDM()
    state = ref.state_dict()
    for key in (
        "input_process.poseEmbedding.weight",
        "embed_text.weight",
        "output_process.poseFinal.bias",
        "embed_timestep.time_embed.2.weight",
        "seqTransEncoder.layers.7.self_attn.in_proj_weight",
        "seqTransEncoder.layers.0.linear1.weight",
        "sequence_pos_encoder.pe",
        "embed_timestep.sequence_pos_encoder.pe",
    ):
        assert key in state, key
    assert state["input_process.poseEmbedding.weight"].shape == (512, 263)
    state["clip_model.token_embedding.weight"] = torch.zeros(3, 4)  # present in official files, ignored
    torch.save({"model": state}, tmp_path / "model000475000.pt")
    (tmp_path / "args.json").write_text(
        json.dumps(
            {
                "arch": "trans_enc",
                "layers": 8,
                "latent_dim": 512,
                "dataset": "humanml",
                "diffusion_steps": 1000,
                "noise_schedule": "cosine",
            }
        )
    )
    model = load_mdm(tmp_path / "model000475000.pt")
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.randn(2, 263, 1, 10)
    out = model(x, torch.tensor([5, 900]), torch.randn(2, 512))
    assert out.shape == x.shape


def test_mismatched_or_unsupported_checkpoints_fail_clearly(tmp_path):
    small = MDM(**SMALL)
    torch.save(small.state_dict(), tmp_path / "m.pt")
    with pytest.raises(R3DError, match="not an MDM"):
        load_mdm(tmp_path / "m.pt")  # HumanML3D sizes expected
    assert load_mdm(tmp_path / "m.pt", **SMALL).latent_dim == 32
    (tmp_path / "args.json").write_text(json.dumps({"arch": "gru"}))
    with pytest.raises(R3DError, match="trans_enc"):
        load_mdm(tmp_path / "m.pt", **SMALL)


def test_cosine_schedule_and_respacing():
    betas = beta_schedule("cosine", 1000)
    ab = np.cumprod(1 - betas)
    t = np.arange(1001) / 1000
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(ab[:-1], f[1:-1] / f[0], rtol=1e-6)  # ᾱ_t = f(t+1)/f(0) before the cap
    assert betas[-1] == 0.999 and betas[:-1].max() < 0.999  # only the last β hits the 0.999 cap
    ts = respaced_timesteps(1000, 50)
    assert ts[0] == 0 and ts[-1] == 999 and len(ts) == 50 and np.all(np.diff(ts) > 0)
    assert respaced_timesteps(50, 50).tolist() == list(range(50))
    with pytest.raises(R3DError):
        respaced_timesteps(50, 51)


def _policy(scale: float = 2.5) -> MDMPolicy:
    torch.manual_seed(0)
    net = MDM(**SMALL)
    mean, std = torch.randn(263) * 0.1, torch.rand(263) + 0.5
    return MDMPolicy(
        net,
        lambda caps: sentence_features(caps, 24),
        mean,
        std,
        diffusion_steps=100,
        max_frames=16,
        guidance_scale=scale,
        default_length=12,
        lengths={"a man jumps": 8},
    )


def test_policy_protocol_schedule_and_masks():
    pol = _policy()
    assert isinstance(pol, DiffusionPolicy)
    ts, ab = pol.schedule(10)
    assert ts.dtype == torch.int64 and ts[0] == 99 and ts[-1] == 0 and torch.all(ts[:-1] > ts[1:])
    assert ab.shape == (11,) and ab[-1] == 1.0 and torch.all(ab[1:] > ab[:-1])
    cond = pol.encode_prompts(["a man jumps", "someone waves"])
    assert cond.lengths.tolist() == [8, 12]
    mask = pol.likelihood_mask(cond)
    assert mask.shape == (2, 1, 1, 16) and mask[0].sum() == 8 and mask[1].sum() == 12
    sub = pol.select_cond(cond, torch.tensor([1]))
    assert sub.prompts == ["someone waves"] and sub.lengths.tolist() == [12]
    with pytest.raises(R3DError, match="within 1..16"):
        pol.encode_prompts(["x"], lengths=[17])


def test_valid_frames_ignore_padding_content_and_cfg_formula():
    pol = _policy(scale=3.0)
    cond = pol.encode_prompts(["a man jumps", "someone waves"])
    x = torch.randn(2, 263, 1, 16)
    t = torch.tensor([50, 50])
    out = pol.predict(x, t, cond)
    x2 = x.clone()
    x2[0, ..., 8:] = 50.0  # change only padding frames of sample 0
    out2 = pol.predict(x2, t, cond)
    torch.testing.assert_close(out2[0, ..., :8], out[0, ..., :8])
    with torch.no_grad():
        mask = pol.frame_mask(cond)
        c = pol.network(x, t, cond.text, False, mask)
        u = pol.network(x, t, cond.text, True, mask)
    torch.testing.assert_close(out, u + 3.0 * (c - u), atol=1e-5, rtol=1e-5)


def test_rollout_log_probs_ignore_padding_and_reevaluate_to_ratio_one():
    pol = _policy()
    prompts = ["a man jumps"] * 2 + ["someone waves"] * 2
    cond = pol.encode_prompts(prompts)
    sched = make_schedule(pol, 6)
    gen = torch.Generator().manual_seed(0)
    noise = pol.initial_noise(4, gen)
    traj = sample(
        pol,
        sched,
        cond,
        noise,
        kernel="ddim",
        noise_level=1.0,
        sde_steps=torch.ones(6, dtype=torch.bool),
        generator=gen,
    )
    assert torch.isfinite(traj.log_probs).all()
    step = 2
    x, x_next = traj.latents[:, step], traj.latents[:, step + 1]
    with torch.enable_grad():  # the training path (grad on) must give the rollout's numbers exactly
        again = transition(pol, sched, step, x, cond, kernel="ddim", noise_level=1.0, prev_sample=x_next)
    assert torch.equal(again.log_prob.detach(), traj.log_probs[:, step])
    moved = x_next.clone()
    moved[:2, ..., 8:] += 10.0  # padding frames of the length-8 samples: no effect on the likelihood
    shifted = transition(pol, sched, step, x, cond, kernel="ddim", noise_level=1.0, prev_sample=moved)
    torch.testing.assert_close(shifted.log_prob, traj.log_probs[:, step])


def test_decode_crops_and_denormalises():
    pol = _policy()
    cond = pol.encode_prompts(["a man jumps", "someone waves"])
    feats = torch.randn(2, 16, 263)
    motions = pol.decode(pol.to_model_space(feats), cond)
    assert [m.length for m in motions] == [8, 12]
    np.testing.assert_allclose(motions[0].features, feats[0, :8].numpy(), atol=1e-5)
    assert pol.decode(pol.to_model_space(feats))[0].length == 8  # lengths of the last encode_prompts call


def test_generate_is_seeded_and_uses_lengths():
    from r3d.commands.eval_motion import generate

    pol = _policy()
    a = generate(pol, ["a man jumps", "someone waves"], n=2, seed=3, steps=4, lengths=[8, 10])
    b = generate(pol, ["a man jumps", "someone waves"], n=2, seed=3, steps=4, lengths=[8, 10])
    assert [m.length for m in a] == [8, 8, 10, 10]
    assert all(np.array_equal(x.features, y.features) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].features, a[1].features)  # different noise per sample
