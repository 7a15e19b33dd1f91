"""TRELLIS sparse-structure VAE modules, weight files and the quantizers."""

from __future__ import annotations

import json

import pytest
import torch

from r3d.core.errors import R3DError
from r3d.vqvae import (
    FSQ,
    SSVQVAE,
    SparseStructureDecoder,
    SparseStructureEncoder,
    VectorQuantizer,
    group_tokens,
    load_trellis_ss,
    save_trellis_ss,
    ungroup_tokens,
)
from r3d.vqvae.quantizers import code_stats, kmeans
from r3d.vqvae.ss_vae import (
    TRELLIS_DECODER_ARGS,
    TRELLIS_ENCODER_ARGS,
    ChannelLayerNorm32,
    build_ss,
    pixel_shuffle_3d,
)


@pytest.fixture(scope="module")
def trellis_pair():
    torch.manual_seed(0)
    return build_ss({"name": "SparseStructureEncoder", "args": TRELLIS_ENCODER_ARGS}, fp16=False), build_ss(
        {"name": "SparseStructureDecoder", "args": TRELLIS_DECODER_ARGS}, fp16=False
    )


def test_trellis_sizes_have_the_released_keys_and_shapes(trellis_pair):
    """Names/shapes that TRELLIS's ss_enc/ss_dec_conv3d_16l8_fp16 safetensors hold (strict loading)."""
    enc, dec = (m.state_dict() for m in trellis_pair)
    expect_enc = {
        "input_layer.weight": (32, 1, 3, 3, 3),
        "blocks.0.norm1.weight": (32,),
        "blocks.0.conv1.weight": (32, 32, 3, 3, 3),
        "blocks.2.conv.weight": (128, 32, 2, 2, 2),  # DownsampleBlock3d after 2 res blocks
        "blocks.5.conv.weight": (512, 128, 2, 2, 2),
        "blocks.7.conv2.bias": (512,),
        "middle_block.1.conv2.weight": (512, 512, 3, 3, 3),
        "out_layer.0.weight": (512,),
        "out_layer.2.weight": (16, 512, 3, 3, 3),  # mean ⊕ logvar, 8 + 8
    }
    expect_dec = {
        "input_layer.weight": (512, 8, 3, 3, 3),
        "middle_block.0.norm2.bias": (512,),
        "blocks.2.conv.weight": (1024, 512, 3, 3, 3),  # UpsampleBlock3d: 128 · 8 for the pixel shuffle
        "blocks.5.conv.weight": (256, 128, 3, 3, 3),
        "out_layer.2.weight": (1, 32, 3, 3, 3),
    }
    for state, expect in ((enc, expect_enc), (dec, expect_dec)):
        for k, shape in expect.items():
            assert tuple(state[k].shape) == shape, k
    assert len(enc) == 74 and len(dec) == 74  # 2 + 3·16 + 2·2 + 2·8 + 4
    assert not any("skip_connection" in k for k in (*enc, *dec))  # widths change only in down/up blocks


def test_trellis_sized_weights_round_trip_and_load_strictly(trellis_pair, tmp_path):
    """save → {prefix}.json + .safetensors (torso fp16 as released) → load strict, same outputs."""
    from safetensors.torch import load_file

    enc, dec = trellis_pair
    for module, name in ((enc, "ss_enc_conv3d_16l8_fp16"), (dec, "ss_dec_conv3d_16l8_fp16")):
        with torch.no_grad():
            for p in module.parameters():  # conv2 is zero-initialised; fill everything to see the weights
                p.copy_((torch.randn_like(p) * 0.02).half().float())
        save_trellis_ss(module, tmp_path / name)
        config = json.loads((tmp_path / f"{name}.json").read_text())
        assert config["name"] == type(module).__name__ and config["args"]["use_fp16"] is True
        state = load_file(str(tmp_path / f"{name}.safetensors"))
        assert state["blocks.0.conv1.weight"].dtype == torch.float16
        assert (
            state["input_layer.weight"].dtype == torch.float32
            and state["blocks.0.norm1.weight"].dtype == torch.float32
        )
        loaded = load_trellis_ss(tmp_path / name)
        assert not loaded.training and loaded.use_fp16 is False  # fp32 on CPU
        for k, v in module.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
    x = (torch.rand(1, 1, 16, 16, 16) < 0.2).float()
    enc2, dec2 = (
        load_trellis_ss(tmp_path / "ss_enc_conv3d_16l8_fp16"),
        load_trellis_ss(tmp_path / "ss_dec_conv3d_16l8_fp16"),
    )
    with torch.no_grad():
        z = enc2(x)
        assert z.shape == (1, 8, 4, 4, 4)
        assert torch.equal(z, enc(x)) and torch.equal(dec2(z), dec(z))
        assert dec2(z).shape == (1, 1, 16, 16, 16)


def test_loading_reports_mismatched_missing_and_corrupt_files(tmp_path):
    enc = SparseStructureEncoder(1, 8, 1, [8, 16])
    save_trellis_ss(enc, tmp_path / "e")
    cfg = json.loads((tmp_path / "e.json").read_text())
    cfg["args"]["channels"] = [8, 32]
    (tmp_path / "e.json").write_text(json.dumps(cfg))
    with pytest.raises(R3DError, match="does not match"):
        load_trellis_ss(tmp_path / "e")
    (tmp_path / "e.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(R3DError, match="unreadable safetensors"):
        load_trellis_ss(tmp_path / "e")
    with pytest.raises(R3DError, match="missing"):
        load_trellis_ss(tmp_path / "nothing")


def test_encoder_posterior_api():
    """encoder(x) is the mean; return_raw gives (z, mean, logvar); sampling adds exp(logvar/2)·ε."""
    torch.manual_seed(0)
    enc = SparseStructureEncoder(1, 4, 1, [4, 8]).eval()
    x = (torch.rand(2, 1, 8, 8, 8) < 0.3).float()
    z, mean, logvar = enc(x, sample_posterior=False, return_raw=True)
    assert (
        torch.equal(z, mean) and torch.equal(enc(x), mean) and logvar.shape == mean.shape == (2, 4, 4, 4, 4)
    )
    torch.manual_seed(1)
    zs, m2, lv2 = enc(x, sample_posterior=True, return_raw=True)
    torch.manual_seed(1)
    eps = torch.randn_like(m2)
    assert torch.allclose(zs, m2 + torch.exp(0.5 * lv2) * eps)


def test_pixel_shuffle_3d_places_channels_like_trellis():
    """Input channel c·8 + (i·2 + j)·2 + k lands at output (c, 2h + i, 2w + j, 2d + k)."""
    x = torch.arange(2 * 8 * 2 * 3 * 4, dtype=torch.float32).reshape(1, 16, 2, 3, 4)
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (1, 2, 4, 6, 8)
    for c, i, j, k, h, w, d in [(0, 0, 0, 0, 0, 0, 0), (1, 1, 0, 1, 1, 2, 3), (0, 1, 1, 0, 0, 1, 2)]:
        assert y[0, c, 2 * h + i, 2 * w + j, 2 * d + k] == x[0, c * 8 + (i * 2 + j) * 2 + k, h, w, d]


def test_channel_layernorm_normalises_channels_in_fp32():
    ln = ChannelLayerNorm32(6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, 6, 3, 4, 5) * 3 + 1
    mu, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    ref = (x - mu) / torch.sqrt(var + 1e-5) * ln.weight[:, None, None, None] + ln.bias[:, None, None, None]
    assert torch.allclose(ln(x), ref, atol=1e-5)
    assert ln(x.half()).dtype == torch.float16


def test_grouping_is_shapellm_layout_and_inverts():
    """group=4: token t holds 4 consecutive cells along z, channel fastest (ShapeLLM-Omni's view)."""
    z = torch.randn(2, 8, 4, 4, 8)
    t = group_tokens(z, 4)
    assert t.shape == (2, 4 * 4 * 2, 32)
    x, y, zz = 1, 2, 1  # token index of cells (x, y, 4..7)
    tok = t[1, (x * 4 + y) * 2 + zz]
    assert torch.equal(tok.reshape(4, 8), z[1, :, x, y, 4:8].t())
    assert torch.equal(ungroup_tokens(t, tuple(z.shape)), z)


def test_vector_quantizer_picks_nearest_code_with_straight_through_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, ema_decay=None).eval()
    z = torch.randn(100, 8, requires_grad=True)
    out = vq(z)
    ref = torch.cdist(z.detach(), vq.embedding.detach()).argmin(1)
    assert torch.equal(out.indices, ref)
    assert torch.allclose(out.z_q, vq.embedding[ref], atol=1e-6)
    out.z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # identity through the quantiser
    assert torch.allclose(out.losses["commitment"], ((z - vq.embedding[ref]) ** 2).mean())


def test_kmeans_init_beats_random_and_ema_tracks_the_data():
    torch.manual_seed(0)
    centres = torch.randn(16, 4) * 3
    data = (centres[torch.randint(16, (4000,))] + 0.05 * torch.randn(4000, 4)).float()
    vq = VectorQuantizer(16, 4, ema_decay=0.9).eval()
    random_loss = float(vq(data).losses["codebook"])
    vq.init_from(data, iters=10, generator=torch.Generator().manual_seed(0))
    init_loss = float(vq(data).losses["codebook"])
    assert init_loss < 0.05 * random_loss
    vq2 = VectorQuantizer(16, 4, ema_decay=0.9, dead_threshold=0.05).train()
    for _ in range(200):
        vq2(data[torch.randint(4000, (512,))])
    assert float(vq2.eval()(data).losses["codebook"]) < 0.1 * random_loss  # EMA + restarts fit the clusters
    assert int(vq2.restarts) > 0


def test_dead_codes_are_restarted_on_batch_tokens():
    vq = VectorQuantizer(8, 2, ema_decay=0.99, dead_threshold=0.5).train()
    with torch.no_grad():
        vq.embedding.copy_(torch.tensor([[0.0, 0.0]] + [[100.0 + i, 100.0] for i in range(7)]))
        vq.ema_sum.copy_(vq.embedding)
        vq.ema_count.fill_(1.0)
        vq.usage.copy_(torch.tensor([8.0] + [0.0] * 7))
    z = torch.randn(256, 2)
    vq(z)
    assert (vq.embedding[1:].abs() < 10).all()  # the 7 far codes now sit on data tokens
    assert int(vq.restarts) == 7


def test_code_stats():
    s = code_stats(torch.tensor([0, 1, 2, 3] * 5), 16)
    assert s["usage"] == 0.25 and abs(s["perplexity"] - 4) < 1e-9 and s["codes_used"] == 4


def test_kmeans_handles_fewer_distinct_points_than_codes():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(50, 1)
    c, counts = kmeans(x, 8, iters=3, generator=torch.Generator().manual_seed(0))
    assert c.shape == (8, 2) and int(counts.sum()) == 100 and int((counts > 0).sum()) == 2


def test_fsq_codes_round_trip():
    torch.manual_seed(0)
    fsq = FSQ(8, [8, 8, 8, 4, 4])
    assert fsq.codebook_size == 8192
    z = torch.randn(500, 8, requires_grad=True)
    out = fsq(z)
    assert out.indices.min() >= 0 and out.indices.max() < 8192
    assert torch.allclose(fsq.lookup(out.indices), out.z_q, atol=1e-6)
    out.z_q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_ssvqvae_shapes_and_index_decoding():
    torch.manual_seed(0)
    enc, dec = SparseStructureEncoder(1, 8, 1, [4, 8]), SparseStructureDecoder(1, 8, 1, [8, 4])
    model = SSVQVAE(enc, dec, VectorQuantizer(32, 32, ema_decay=None), group=4).eval()
    x = (torch.rand(2, 1, 16, 16, 16) < 0.2).float()
    out = model(x)
    assert out.indices.shape == (2, 8 * 8 * 2) and out.logits.shape == x.shape
    assert torch.allclose(model.decode_indices(model.encode(x), 8), out.logits, atol=1e-6)
    with pytest.raises(ValueError, match="quantizer dim"):
        SSVQVAE(enc, dec, VectorQuantizer(32, 8), group=4)
