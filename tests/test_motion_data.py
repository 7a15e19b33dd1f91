"""HumanML3D feature layout, its inverse, the synthetic data set, text features, motion folders, rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r3d.core.errors import R3DError
from r3d.motion import representation as R
from r3d.motion.artifacts import Motion, batch_motions, load_motion_folder, save_motion_folder
from r3d.motion.synthetic import ACTIONS, MAX_LENGTH, MIN_LENGTH, build_dataset, make_motion
from r3d.motion.text import sentence_features, tag_word, token_sequences


def test_feature_layout_and_exact_inverse_for_a_straight_walk():
    spec = make_motion(3, "walk")
    assert spec.features.shape == (len(spec.joints), 263) and R.FOOT_CONTACT[1] == 263
    if "left" in spec.label or "right" in spec.label:  # a curving walk: the inverse is exact up to a yaw
        pytest.skip("seed 3 gave a curving walk")
    rec = R.recover_from_ric(spec.features)
    np.testing.assert_allclose(rec, spec.joints, atol=5e-3)


def test_inverse_is_exact_up_to_the_smoothed_initial_heading_for_turns():
    spec = make_motion(0, "circle")
    rec = R.recover_from_ric(spec.features)
    # pairwise joint distances are rotation invariant: equal, although the heading is smoothed
    d_rec = np.linalg.norm(rec[:, :, None] - rec[:, None], axis=-1)
    d_ref = np.linalg.norm(spec.joints[:, :, None] - spec.joints[:, None], axis=-1)
    np.testing.assert_allclose(d_rec, d_ref, atol=5e-3)
    np.testing.assert_allclose(rec[:, :, 1], spec.joints[:, :, 1], atol=5e-3)  # heights exact


def test_feature_semantics():
    spec = make_motion(0, "stand")
    f = spec.features
    assert np.abs(f[:, R.ROOT_LIN_VEL[0] : R.ROOT_LIN_VEL[1]]).max() < 0.01  # standing still
    assert f[:, R.FOOT_CONTACT[0] : R.FOOT_CONTACT[1]].mean() > 0.9  # feet on the ground
    ric = f[:, R.RIC[0] : R.RIC[1]].reshape(-1, 21, 3)
    head_height = ric[:, R.JOINT_NAMES.index("head") - 1, 1]
    assert np.all(head_height > 0.4)  # ric is relative to the root xz, y is absolute above the floor
    walk = make_motion(11, "run").features
    assert walk[:, 2].mean() > 0.05  # running forward: +z velocity in the body frame


def test_quaternion_helpers():
    rng = np.random.default_rng(0)
    v0, v1 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    q = R.qbetween(v0, v1)
    got = R.qrot(q, v0)
    np.testing.assert_allclose(
        got / np.linalg.norm(got, axis=1, keepdims=True),
        v1 / np.linalg.norm(v1, axis=1, keepdims=True),
        atol=1e-9,
    )
    np.testing.assert_allclose(R.qrot(R.qinv(q), R.qrot(q, v0)), v0, atol=1e-9)
    opp = R.qbetween(np.array([[0.0, -1.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(R.qrot(opp, np.array([[0.0, -1.0, 0.0]])), [[0.0, 1.0, 0.0]], atol=1e-9)


def test_synthetic_set_is_deterministic_varied_and_in_range():
    ds = build_dataset(48, seed=2)
    again = build_dataset(48, seed=2)
    assert np.array_equal(ds.features, again.features) and ds.captions == again.captions
    assert ds.features.shape == (48, MAX_LENGTH, 263) and np.isfinite(ds.features).all()
    assert ds.lengths.min() >= MIN_LENGTH and ds.lengths.max() <= MAX_LENGTH and np.all(ds.lengths % 4 == 0)
    for f, n in zip(ds.features, ds.lengths, strict=True):
        assert not f[n:].any()  # padding is zero
    assert len({label.split("/")[0] for label in ds.labels}) >= 10
    assert len(set(ds.captions)) >= 40  # varied text
    captions = {make_motion(s, "walk").caption for s in range(30)}
    assert len(captions) >= 15  # many phrasings of one action
    with pytest.raises(R3DError, match="unknown synthetic action"):
        make_motion(0, "fly")
    assert len(ACTIONS) == 16


def test_text_features():
    assert (
        tag_word("walks") == ("walk", "Act_VIP")
        and tag_word("left")[1] == "Loc_VIP"
        and tag_word("zebra") == ("zebra", "OTHER")
    )
    a, b, c = sentence_features(["a man walks left", "a man walks right", "a man walks left"], 64)
    assert torch.allclose(a, c) and abs(float(a.norm()) - 1) < 1e-6 and not torch.allclose(a, b)
    x, mask = token_sequences(["jump", "walk forward slowly"], 8)
    assert x.shape == (2, 3, 8) and mask.tolist() == [[True, False, False], [True, True, True]]


def test_motion_folder_round_trip_and_errors(tmp_path):
    motions = [Motion(np.random.default_rng(i).normal(size=(40 + 4 * i, 263))) for i in range(3)]
    save_motion_folder(tmp_path / "m", motions, ["a", "b", "c"], [0, 0, 1])
    loaded, caps, groups = load_motion_folder(tmp_path / "m")
    assert caps == ["a", "b", "c"] and groups == [0, 0, 1]
    assert all(np.array_equal(x.features, y.features) for x, y in zip(loaded, motions, strict=True))
    feats, lens = batch_motions(loaded)
    assert feats.shape == (3, 48, 263) and lens.tolist() == [40, 44, 48] and not feats[0, 40:].any()
    (tmp_path / "m" / "000001.npy").unlink()
    with pytest.raises(R3DError, match="missing"):
        load_motion_folder(tmp_path / "m")
    with pytest.raises(R3DError, match="motions.jsonl"):
        load_motion_folder(tmp_path)
    with pytest.raises(R3DError, match="263"):
        Motion(np.zeros((4, 12)))
    saved = motions[0].save(tmp_path / "one.npy")
    assert np.array_equal(np.load(saved), motions[0].features)
    with pytest.raises(R3DError, match="npy, gif or mp4"):
        motions[0].save(tmp_path / "one.glb")


def test_render_gif_and_strip(tmp_path):
    from PIL import Image

    from r3d.motion.render import render_motion, render_strip

    joints = make_motion(1, "wave", length=40).joints
    gif = render_motion(joints, tmp_path / "wave.gif", "a wave", size=96, stride=8)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.size == (96, 96)
    png = render_strip([joints, joints], tmp_path / "sheet.png", ["a", "b"], n_frames=3, size=64)
    with Image.open(png) as im:
        assert im.size == (192, 2 * (64 + 14))
    with pytest.raises(R3DError, match="format"):
        render_motion(joints, tmp_path / "x.avi")


def test_humanml3d_reference_reader(tmp_path):
    from r3d.commands.eval_motion import humanml3d_reference

    (tmp_path / "new_joint_vecs").mkdir()
    (tmp_path / "texts").mkdir()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "new_joint_vecs" / "000001.npy", rng.normal(size=(150, 263)).astype(np.float32))
    np.save(
        tmp_path / "new_joint_vecs" / "000002.npy", rng.normal(size=(30, 263)).astype(np.float32)
    )  # too short
    (tmp_path / "texts" / "000001.txt").write_text(
        "a man walks forward.#a/DET man/NOUN walk/VERB forward/ADV#0.0#0.0\n"
        "then he jumps.#then/ADV he/PRON jump/VERB#2.0#5.0\n"
    )
    (tmp_path / "texts" / "000002.txt").write_text("short#short/ADJ#0.0#0.0\n")
    (tmp_path / "test.txt").write_text("000001\n000002\n000003\n")
    ref = humanml3d_reference(tmp_path)
    assert [m.length for m in ref.motions] == [148, 60]  # full clip rounded to ×4; 2 s–5 s sub-clip
    assert ref.captions[1] == ["then/ADV", "he/PRON", "jump/VERB"]
    assert ref.texts[0] == "a man walk forward"
    with pytest.raises(R3DError, match="not found"):
        humanml3d_reference(tmp_path, split="val")


def test_glove_tables_load_without_running_pickled_code(tmp_path):
    import pickle

    from r3d.motion.text import GloveWordVectors, t2m_text_inputs

    words = ["unk", "sos", "eos", "walk", "forward"]
    np.save(tmp_path / "our_vab_data.npy", np.arange(5 * 3, dtype=np.float32).reshape(5, 3))
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    glove = GloveWordVectors(tmp_path)
    w, p, c = t2m_text_inputs([["walk/VERB", "quickly/ADV"]], glove)
    np.testing.assert_array_equal(w[0, 1].numpy(), [9, 10, 11])  # 'walk'
    np.testing.assert_array_equal(w[0, 2].numpy(), [0, 1, 2])  # unknown 'quickly' → unk
    assert p[0, 2, 14] == 1 and c.tolist() == [4]  # ...tagged OTHER
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps(np.zeros(2)))  # a pickle that imports numpy
    with pytest.raises(R3DError, match="word-list pickle"):
        GloveWordVectors(tmp_path)


def test_renormalize_between_model_and_evaluator_statistics():
    rng = np.random.default_rng(0)
    raw = torch.from_numpy(rng.normal(size=(2, 5, 263)).astype(np.float32))
    m1, s1, m2, s2 = (torch.from_numpy(rng.uniform(0.5, 2, 263).astype(np.float32)) for _ in range(4))
    model_space = (raw - m1) / s1
    torch.testing.assert_close(
        R.renormalize(model_space, m1, s1, m2, s2), (raw - m2) / s2, atol=1e-5, rtol=1e-5
    )
