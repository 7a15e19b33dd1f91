"""T2M / TMR evaluators: official names load strictly, lengths and ordering are handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from r3d.core.errors import R3DError
from r3d.motion.evaluators import (
    T2M_HUMANML_DIMS,
    T2MEvaluator,
    TMREvaluator,
    load_t2m_evaluator,
    load_tmr,
    save_evaluator,
)
from r3d.motion.text import HashedWordVectors, t2m_text_inputs, token_sequences

SMALL = {
    "dim_word": 16,
    "dim_text_hidden": 24,
    "dim_coemb_hidden": 12,
    "dim_motion_hidden": 20,
    "dim_movement_enc_hidden": 18,
    "dim_movement_latent": 14,
}


def test_full_size_finest_tar_loads_strictly(tmp_path):
    """A randomly initialised HumanML3D-sized checkpoint with the official keys loads with no mismatch."""
    torch.manual_seed(0)
    ref = T2MEvaluator()
    ckpt = {
        "text_encoder": ref.text_encoder.state_dict(),
        "motion_encoder": ref.motion_encoder.state_dict(),
        "movement_encoder": ref.movement_encoder.state_dict(),
        "epoch": 123,
    }
    keys = set(ckpt["movement_encoder"])
    assert {"main.0.weight", "main.3.weight", "out_net.weight"} <= keys
    assert {
        "hidden",
        "pos_emb.weight",
        "input_emb.weight",
        "gru.weight_hh_l0_reverse",
        "output_net.3.bias",
    } <= set(ckpt["text_encoder"])
    assert ckpt["motion_encoder"]["input_emb.weight"].shape == (1024, 512)
    assert ckpt["motion_encoder"]["gru.weight_ih_l0"].shape == (3 * 1024, 1024)
    path = tmp_path / "finest.tar"
    torch.save(ckpt, path)
    ev = load_t2m_evaluator(path)
    for name in ("text_encoder", "motion_encoder", "movement_encoder"):
        for k, v in getattr(ref, name).state_dict().items():
            assert torch.equal(getattr(ev, name).state_dict()[k], v)
    assert ev.dims == T2M_HUMANML_DIMS


def test_wrong_size_checkpoint_is_a_clear_error(tmp_path):
    small = T2MEvaluator(SMALL)
    torch.save(
        {k: getattr(small, k).state_dict() for k in ("text_encoder", "motion_encoder", "movement_encoder")},
        tmp_path / "finest.tar",
    )
    with pytest.raises(R3DError, match="weights do not match the architecture"):
        load_t2m_evaluator(tmp_path / "finest.tar")  # HumanML3D sizes by default
    assert load_t2m_evaluator(tmp_path / "finest.tar", **SMALL).dims["dim_word"] == 16
    torch.save({"text_encoder": {}}, tmp_path / "bad.tar")
    with pytest.raises(R3DError, match="missing"):
        load_t2m_evaluator(tmp_path / "bad.tar")


def _batch(n: int = 6, t: int = 48):
    g = torch.Generator().manual_seed(0)
    motions = torch.randn(n, t, 263, generator=g)
    m_lens = torch.tensor([40, 24, 48, 16, 32, 44])[:n]
    caps = [
        "a person walks forward",
        "someone waves the left hand",
        "a man jumps twice",
        "the person turns right",
        "a figure kicks",
        "a woman squats slowly",
    ][:n]
    return motions, m_lens, caps


def test_co_embeddings_come_back_in_input_order_and_match_the_sorted_reference():
    torch.manual_seed(1)
    ev = T2MEvaluator(SMALL, word_vectors=HashedWordVectors(16))
    motions, m_lens, caps = _batch()
    w, p, c = t2m_text_inputs(caps, ev.word_vectors)
    text, motion = ev.get_co_embeddings(w, p, c, motions, m_lens)

    # The reference procedure: sort by motion length (descending), encode with packed sorted sequences.
    order = torch.argsort(m_lens, descending=True)
    with torch.no_grad():
        mov = ev.movement_encoder(motions[order][..., :-4])
        enc = ev.motion_encoder
        packed = pack_padded_sequence(enc.input_emb(mov), (m_lens[order] // 4).tolist(), batch_first=True)
        _, last = enc.gru(packed, enc.hidden.repeat(1, len(order), 1))
        ref_sorted = enc.output_net(torch.cat([last[0], last[1]], -1))
    torch.testing.assert_close(motion[order], ref_sorted, atol=1e-5, rtol=1e-5)

    # Permuting the inputs permutes the outputs: ordering never leaks between samples.
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    text_p, motion_p = ev.get_co_embeddings(w[perm], p[perm], c[perm], motions[perm], m_lens[perm])
    torch.testing.assert_close(text_p, text[perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(motion_p, motion[perm], atol=1e-5, rtol=1e-5)


def test_padding_beyond_the_length_does_not_change_embeddings():
    ev = T2MEvaluator(SMALL, word_vectors=HashedWordVectors(16))
    motions, m_lens, _ = _batch()
    a = ev.embed_motions(motions, m_lens)
    noisy = motions.clone()
    for i, n in enumerate(m_lens):
        noisy[i, n:] = 100.0  # garbage in the padding
    torch.testing.assert_close(ev.embed_motions(noisy, m_lens), a)
    # odd padded length is padded up to a multiple of unit_length
    assert ev.prepare_motions(motions[:, :45], m_lens.clamp(max=45)).shape[1] == 48


def test_text_inputs_layout():
    wv = HashedWordVectors(16)
    w, p, c = t2m_text_inputs(["a man walks left", ["walk/VERB", "forward/ADV"]], wv)
    assert w.shape == (2, 22, 16) and p.shape == (2, 22, 15)
    assert c.tolist() == [6, 4]  # sos + words + eos
    np.testing.assert_allclose(w[0, 0].numpy(), wv("sos"))
    np.testing.assert_allclose(w[0, 5].numpy(), wv("eos"))
    np.testing.assert_allclose(w[0, 6].numpy(), wv("unk"))
    assert p[0, 4, 9] == 1  # 'left' is a Loc_VIP word
    assert p[1, 2, 9] == 1  # 'forward' overrides ADV with Loc_VIP


def test_tmr_names_and_score(tmp_path):
    torch.manual_seed(0)
    dims = {"latent_dim": 32, "ff_size": 64, "num_layers": 1, "text_nfeats": 20}
    tmr = TMREvaluator(dims, text_features=lambda caps: token_sequences(caps, 20, "x"))
    keys = set(tmr.state_dict())
    assert {
        "motion_encoder.projection.weight",
        "motion_encoder.tokens",
        "text_encoder.tokens",
        "motion_encoder.seqTransEncoder.layers.0.self_attn.in_proj_weight",
    } <= keys
    assert not any(k.endswith(".pe") for k in keys)  # TMR's positional table is not persistent
    # A Lightning checkpoint with a decoder loads (the decoder is ignored).
    state = {f"{k}": v for k, v in tmr.state_dict().items() if k not in ("mean", "std")}
    state["motion_decoder.final.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "last.ckpt")
    loaded = load_tmr(tmp_path / "last.ckpt", text_features=tmr.text_features, **dims)
    motions, m_lens, caps = _batch()
    t = loaded.embed_texts(caps)
    m = loaded.embed_motions(motions, m_lens)
    sim = loaded.similarity(t, m)
    assert sim.shape == (6, 6) and float(sim.min()) >= 0 and float(sim.max()) <= 1
    cos = torch.nn.functional.cosine_similarity(t[0], m[0], dim=0)
    assert abs(float(sim[0, 0]) - float(cos / 2 + 0.5)) < 1e-6
    # r3d's own format round-trips with its metadata
    save_evaluator(
        loaded,
        tmp_path / "tmr.safetensors",
        {"kind": "tmr", "text_features": {"type": "hashed", "dim": 20, "salt": "x"}},
    )
    again = load_tmr(tmp_path / "tmr.safetensors")
    torch.testing.assert_close(again.embed_texts(caps), t)
    with pytest.raises(R3DError, match="not a T2M"):
        load_t2m_evaluator(tmp_path / "tmr.safetensors")


def test_shipped_tiny_evaluators_separate_matching_from_mismatched_pairs():
    from r3d.motion.evaluators import resolve_evaluator
    from r3d.motion.synthetic import build_dataset

    ds = build_dataset(32, seed=5)
    for spec in ("tiny-t2m", "tiny-tmr"):
        ev = resolve_evaluator(spec)
        t = ev.embed_texts(ds.captions)
        m = ev.embed_motions(torch.from_numpy(ds.features), torch.from_numpy(ds.lengths))
        sim = ev.similarity(t, m)
        diag = sim.diagonal().mean()
        off = (sim.sum() - sim.diagonal().sum()) / (32 * 31)
        assert diag > off, spec  # the true caption is closer than the others on average
