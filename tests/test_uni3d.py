"""The Uni3D reward: pointnet2-exact FPS, strict checkpoint loading, official key names, the reward."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
import trimesh
from safetensors.torch import save_file

from r3d.core.errors import R3DError
from r3d.core.rewards import Reward
from r3d.rewards.uni3d import (
    EvaConfig,
    EvaTrunk,
    PointcloudEncoder,
    Uni3D,
    Uni3DReward,
    build_uni3d,
    cuda_fps_threads,
    farthest_point_sample,
    load_templates,
    load_uni3d,
    mesh_to_cloud,
)

GIANT = EvaConfig(1408, 40, 16, 6144, "gelu", False, True, True, False, False, False, False, True)
LARGE = EvaConfig(1024, 24, 16, 2730, "swiglu", True, False, True, False, False, False, False, True)
#: sha256[:16] of the sorted "name:shape" list of the reference Uni3D (baaivision/Uni3D PointcloudEncoder
#: around timm 1.0.31's eva_giant_patch14_560 / eva02_large_patch14_448), computed outside the repo.
REFERENCE_DIGESTS = {"g": ("077c6aecb8110d44", 557), "l": ("e4e56a29aaf69fe9", 493)}
UNUSED_G = {
    "cls_token": (1, 1, 1408),
    "pos_embed": (1, 1601, 1408),
    "patch_embed.proj.weight": (1408, 3, 14, 14),
    "patch_embed.proj.bias": (1408,),
    "head.weight": (1000, 1408),
    "head.bias": (1000,),
}
UNUSED_L = {
    "cls_token": (1, 1, 1024),
    "pos_embed": (1, 1025, 1024),
    "patch_embed.proj.weight": (1024, 3, 14, 14),
    "patch_embed.proj.bias": (1024,),
    "head.weight": (1000, 1024),
    "head.bias": (1000,),
}


def tiny_config(**kw) -> EvaConfig:
    base = dict(
        dim=32,
        depth=2,
        num_heads=2,
        hidden=64,
        mlp="gelu",
        mlp_norm=False,
        qkv_fused=True,
        qkv_bias=True,
        attn_norm=False,
        qk_norm=False,
        layer_scale=False,
        norm=False,
        fc_norm=True,
    )
    return EvaConfig(**{**base, **kw})


def tiny_uni3d(seed: int = 0, cfg: EvaConfig | None = None, unused: dict | None = None) -> Uni3D:
    """A randomly initialised small Uni3D (16 groups of 8 points, 16-d output), eval mode, frozen."""
    torch.manual_seed(seed)
    trunk = EvaTrunk(cfg or tiny_config(), unused or {})
    model = Uni3D(PointcloudEncoder(trunk, encoder_dim=24, embed_dim=16, num_group=16, group_size=8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model.eval().requires_grad_(False)


class FakeClip:
    """Deterministic stand-in for open_clip: a fixed random unit vector per text / image path."""

    def __init__(self, dim: int = 16) -> None:
        self.dim, self.calls = dim, []

    def _vec(self, key: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        return torch.nn.functional.normalize(torch.randn(self.dim, generator=g), dim=0)

    def encode_text(self, texts):
        self.calls.append(("text", list(texts)))
        return torch.stack([self._vec("t:" + t) for t in texts])

    def encode_image(self, paths):
        self.calls.append(("image", list(paths)))
        return torch.stack([self._vec("i:" + p) for p in paths])


def kernel_fps(points: np.ndarray, m: int) -> list[int]:
    """A literal emulation of pointnet2's furthest_point_sampling_kernel (per-thread strided scans, then
    the shared-memory tree reduction), independent of r3d's vectorised version."""
    pts = points.astype(np.float32)
    n, block = len(pts), cuda_fps_threads(len(pts))
    temp = np.full(n, 1e10, np.float32)
    mag = (pts * pts).sum(1)
    out, old = [0], 0
    for _ in range(1, m):
        best, besti = np.full(block, -1, np.float32), np.zeros(block, np.int64)
        for tid in range(block):
            for k in range(tid, n, block):
                if float(mag[k]) <= 1e-3:
                    continue
                d = np.float32(((pts[k] - pts[old]) ** 2).sum())
                temp[k] = min(d, temp[k])
                if temp[k] > best[tid]:
                    best[tid], besti[tid] = temp[k], k
        s = block // 2
        while s >= 1:
            for tid in range(s):
                if best[tid + s] > best[tid]:
                    best[tid], besti[tid] = best[tid + s], besti[tid + s]
            s //= 2
        old = int(besti[0])
        out.append(old)
    return out


def test_fps_matches_the_cuda_kernel_including_ties_and_the_origin_quirk():
    """r3d's FPS picks exactly the kernel's indices: start 0, |p|² ≤ 1e-3 never chosen, ties as the
    thread reduction resolves them (a lattice gives many exactly tied distances)."""
    g = torch.Generator().manual_seed(0)
    axis = torch.linspace(-1, 1, 5)
    lattice = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    near_origin = 0.01 * torch.randn(6, 3, generator=g)
    cloud = torch.cat([lattice, near_origin, torch.randn(30, 3, generator=g)])[:150]
    ref = kernel_fps(cloud.numpy(), 40)
    mine = farthest_point_sample(cloud[None], 40)[0].tolist()
    assert mine == ref
    assert mine[0] == 0 and len(set(mine)) == 40
    assert all(float((cloud[i] ** 2).sum()) > 1e-3 for i in mine[1:])


def test_fps_differs_from_textbook_fps_when_points_sit_near_the_centre():
    """The origin quirk matters: a textbook FPS would pick a point with |p|² ≤ 1e-3 that the kernel skips."""
    cloud = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0.0, 0.0, 0.02], [0.0, 0.9, 0.0]])
    # textbook: after ±x the farthest is (0, .9, 0), then the near-origin point (distance² ≈ 0.81 … 1)
    assert farthest_point_sample(cloud[None], 4)[0].tolist() == [0, 1, 3, 0]


def test_checkpoint_loads_strictly_with_or_without_module_prefix(tmp_path):
    """{'module': sd} with and without 'module.' prefixes reproduce the saved encoder exactly; the
    unused image-side parameters load too; the trunk config is read back from the weights."""
    unused = {
        "cls_token": (1, 1, 32),
        "pos_embed": (1, 5, 32),
        "patch_embed.proj.weight": (32, 3, 14, 14),
        "head.weight": (10, 32),
        "head.bias": (10,),
    }
    pc = torch.cat([torch.randn(1, 100, 3), torch.full((1, 100, 3), 0.4)], -1)
    variants = [
        ("module.", tiny_config()),
        ("", tiny_config(mlp="glu", hidden=40)),
        (
            "module.",
            tiny_config(
                mlp="swiglu", mlp_norm=True, qkv_fused=False, layer_scale=True, norm=True, fc_norm=False
            ),
        ),
    ]
    for i, (prefix, cfg) in enumerate(variants):
        model = tiny_uni3d(1, cfg, unused)
        path = tmp_path / f"m{i}.pt"
        torch.save({"module": {prefix + k: v for k, v in model.state_dict().items()}}, path)
        loaded = load_uni3d(path, num_group=16, group_size=8, num_heads=2)
        assert loaded.point_encoder.visual.cfg == cfg
        assert torch.equal(loaded.encode_pc(pc), model.encode_pc(pc))


def test_bad_checkpoints_fail_with_one_line_errors(tmp_path):
    model = tiny_uni3d()
    sd = {k: v for k, v in model.state_dict().items()}
    torch.save(
        {"module": {k: v for k, v in sd.items() if k != "point_encoder.trans2embed.bias"}}, tmp_path / "a.pt"
    )
    with pytest.raises(R3DError, match="missing"):
        load_uni3d(tmp_path / "a.pt", num_heads=2)
    torch.save({"module": {**sd, "point_encoder.extra": torch.zeros(1)}}, tmp_path / "b.pt")
    with pytest.raises(R3DError, match="unexpected"):
        load_uni3d(tmp_path / "b.pt", num_heads=2)
    with pytest.raises(R3DError, match="attention heads"):
        torch.save({"module": sd}, tmp_path / "c.pt")
        load_uni3d(tmp_path / "c.pt")  # a 32-wide trunk is no Uni3D size: heads must be given
    (tmp_path / "d.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(R3DError, match="cannot read"):
        load_uni3d(tmp_path / "d.pt")
    with pytest.raises(R3DError, match="fetch-weights"):
        load_uni3d(tmp_path / "missing.pt")


def _digest(sd: dict) -> tuple[str, int]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(sd.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16], len(sd)


@pytest.mark.parametrize("size,cfg,unused", [("g", GIANT, UNUSED_G), ("l", LARGE, UNUSED_L)])
def test_full_size_names_match_the_reference_and_load_strictly(size, cfg, unused):
    """A full-size Uni3D-g / -l built by r3d has exactly the reference's parameter names and shapes, and
    a state dict with those names loads strictly, with the trunk read back from it (meta device)."""
    with torch.device("meta"):
        model = Uni3D(PointcloudEncoder(EvaTrunk(cfg, unused), 512, 1024))
    sd = model.state_dict()
    assert _digest(sd) == REFERENCE_DIGESTS[size]
    with torch.device("meta"):
        rebuilt = build_uni3d(sd)
    rebuilt.load_state_dict(sd, strict=True, assign=True)
    assert rebuilt.point_encoder.visual.cfg == cfg
    if size == "g":
        assert math.isclose(sum(v.numel() for v in sd.values()) / 1e9, 1.017, abs_tol=0.001)


def test_embedding_ignores_mesh_placement_and_scale():
    """Preprocessing centres and scales to the unit sphere: a moved, scaled mesh embeds identically."""
    reward = Uni3DReward.from_modules(tiny_uni3d(), FakeClip(), num_points=300)
    mesh = trimesh.creation.box(extents=(1.0, 0.5, 0.3))
    moved = mesh.copy()
    moved.apply_scale(3.0)
    moved.apply_translation((5.0, -2.0, 1.0))
    a, _ = reward.embed([mesh])
    b, _ = reward.embed([moved])
    assert torch.allclose(a, b, atol=1e-5)
    cloud = mesh_to_cloud(mesh, 300, 0)
    assert cloud.shape == (300, 6) and np.allclose(cloud[:, 3:], 0.4)
    assert math.isclose(float(np.linalg.norm(cloud[:, :3], axis=1).max()), 1.0, rel_tol=1e-6)


def test_reward_is_cosine_to_template_averaged_text_or_image_target(tmp_path):
    """Text prompts average normalised template embeddings; image-file prompts use the image embedding;
    targets are cached; an empty mesh scores −1; it satisfies the Reward protocol."""
    clip = FakeClip()
    reward = Uni3DReward.from_modules(
        tiny_uni3d(), clip, templates=["a {}.", "the {} shape."], num_points=300
    )
    assert isinstance(reward, Reward)
    image = tmp_path / "cond.png"
    image.write_bytes(b"png")  # any existing file counts as an image prompt
    meshes = [trimesh.creation.icosphere(2), None, trimesh.creation.box()]
    prompts = ["chair", "chair", str(image)]
    out = reward(meshes, prompts)["uni3d"]
    emb, valid = reward.embed(meshes)
    text = torch.nn.functional.normalize(clip.encode_text(["a chair.", "the chair shape."]).mean(0), dim=0)
    assert math.isclose(float(out[0]), float(emb[0] @ text), abs_tol=1e-6)
    assert float(out[1]) == -1.0 and valid.tolist() == [True, False, True]
    assert math.isclose(float(out[2]), float(emb[2] @ clip.encode_image([str(image)])[0]), abs_tol=1e-6)
    n_calls = len(clip.calls)
    reward(meshes[:1], ["chair"])
    assert len(clip.calls) == n_calls + 0  # cached: no new CLIP call


def test_precomputed_targets_need_no_clip(tmp_path):
    target = torch.nn.functional.normalize(torch.randn(16), dim=0)
    save_file({"a lamp": target * 3}, str(tmp_path / "t.safetensors"))
    reward = Uni3DReward.from_modules(tiny_uni3d(), None, num_points=300)
    reward.add_targets(tmp_path / "t.safetensors")
    emb, _ = reward.embed([trimesh.creation.cylinder(0.3, 1.0)])
    assert math.isclose(
        float(reward([trimesh.creation.cylinder(0.3, 1.0)], ["a lamp"])["uni3d"][0]),
        float(emb[0] @ target),
        abs_tol=1e-6,
    )
    with pytest.raises(R3DError, match="no CLIP embedder"):
        reward([trimesh.creation.icosphere(1)], ["a chair"])


def test_templates_from_uni3d_style_json(tmp_path):
    (tmp_path / "t.json").write_text(
        '{"modelnet40_64": ["a point cloud model of {}.", "a {}."], "x": ["{}"]}'
    )
    assert load_templates(str(tmp_path / "t.json")) == ["a point cloud model of {}.", "a {}."]
    with pytest.raises(R3DError, match="templates"):
        load_templates(["no placeholder"])


def test_too_few_points_is_a_clear_error():
    with pytest.raises(R3DError, match="at least 16 points"):
        tiny_uni3d().encode_pc(torch.zeros(1, 10, 6))


def test_missing_weights_names_both_downloads_and_drops_clip_with_precomputed_targets(tmp_path, monkeypatch):
    """The dry-run hook: with an empty R3D_HOME it names `fetch-weights uni3d-g` and, since the prompt
    targets need CLIP, `fetch-weights eva02-e-14-plus`; precomputed target embeddings make CLIP
    unnecessary; present files report nothing."""
    from r3d.rewards.uni3d import Uni3DReward

    monkeypatch.setenv("R3D_HOME", str(tmp_path / "home"))
    problems = " ".join(Uni3DReward.missing_weights())
    assert "r3d fetch-weights uni3d-g" in problems and "r3d fetch-weights eva02-e-14-plus" in problems

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"x")
    targets = tmp_path / "targets.safetensors"
    save_file({"a chair": torch.ones(4)}, str(targets))
    assert Uni3DReward.missing_weights(weights=str(weights), target_embeddings=str(targets)) == []
    assert "target embeddings not found" in " ".join(
        Uni3DReward.missing_weights(weights=str(weights), target_embeddings=str(tmp_path / "none"))
    )
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"x")
    left = Uni3DReward.missing_weights(weights=str(weights), clip_pretrained=str(clip))
    assert all("fetch-weights" not in p for p in left)  # at most: open_clip is not installed
