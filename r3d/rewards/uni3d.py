"""Uni3D reward: cosine between a mesh's Uni3D point-cloud embedding and the prompt's CLIP embedding.

Uni3D (BAAI) maps a coloured point cloud (B, N, 6) to a 1024-d embedding aligned with the EVA02-E-14-plus
CLIP space. r3d's encoder is its own weight-compatible implementation of the reference pipeline:

1. farthest-point sampling of ``num_group`` (512) centres exactly as the pointnet2 CUDA kernel Uni3D
   calls: start at index 0, running min-distance initialised to 1e10, points with |p|² ≤ 1e-3 never
   chosen, ties resolved like the kernel's 512-thread tree reduction (smallest bit-reversed k mod 512,
   then smallest k);
2. the ``group_size`` (64) nearest neighbours of each centre (‖a‖² + ‖b‖² − 2a·b distances), xyz made
   relative to the centre and concatenated with rgb;
3. a PointNet patch encoder (Conv1d-BN-ReLU-Conv1d, max pool, concat global, Conv1d-BN-ReLU-Conv1d, max
   pool) → ``encoder2trans``; plus a cls token and an MLP position embedding of the centres;
4. the EVA/ViT blocks of the timm trunk *without* rotary embeddings (Uni3D calls ``blk(x)``), then the
   trunk's ``norm`` and ``fc_norm`` on the cls token, then ``trans2embed``.

The checkpoint (``modelzoo/uni3d-*/model.pt``, state dict under ``module``, keys with or without a
``module.`` prefix) loads strictly; the trunk's size, depth, MLP kind and qkv layout are read from it.
The trunk mirrors timm's ``Eva`` parameter names (timm itself needs torchvision, which is not
importable next to every torch build); its unused image-side parameters (``cls_token``, ``pos_embed``,
``patch_embed``, ``head``) are loaded and ignored.

Preprocessing (Uni3D's evaluation protocol): ``num_points`` (10 000) area-weighted surface samples with
a fixed seed, centred on their mean and scaled to the unit sphere, rgb 0.4 grey (shape meshes carry no
colour), optional y↔z swap for Z-up meshes (Uni3D's training data is Y-up like glTF and Hunyuan3D).
Targets: a prompt that names an existing image file → its CLIP image embedding; any other prompt →
its CLIP text embedding averaged over templates (each normalised, the mean renormalised). CLIP runs
through ``open_clip`` (optional dependency, imported lazily) or comes precomputed from a safetensors
file; embeddings are cached per prompt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from r3d.core.errors import R3DError
from r3d.core.policy import declare_hooks
from r3d.rewards.semantic import mesh_points

#: EVA trunk width → attention heads (not recoverable from the weights): Uni3D-g/l/b/s/ti.
HEADS_BY_WIDTH = {1408: 16, 1024: 16, 768: 12, 384: 6, 192: 3}
#: Prefixes of trunk parameters that Uni3D's point path never uses (the image side of the ViT).
UNUSED_TRUNK_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "head.", "rope.", "reg_token")
#: r3d's own prompt templates for text targets (Uni3D's 64-template list can be passed instead).
DEFAULT_TEMPLATES = (
    "a 3D model of {}.",
    "a point cloud of {}.",
    "a 3D object of {}.",
    "a render of {}.",
    "a shape of {}.",
    "a 3D scan of {}.",
)
GREY = 0.4


# ----------------------------------------------------------------------------- grouping
def cuda_fps_threads(n: int) -> int:
    """Block size the pointnet2 kernel launches for n points: 2^⌊log₂ n⌋ capped to [1, 512]."""
    return max(min(1 << int(math.log(n) / math.log(2.0)), 512), 1)


def farthest_point_sample(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """Indices (B, m) int64 of pointnet2's CUDA ``furthest_point_sample`` on xyz (B, N, 3) fp32."""
    b, n, _ = xyz.shape
    xyz = xyz.float()
    x, y, z = xyz.unbind(-1)
    valid = (x * x + y * y + z * z).double() > 1e-3
    stride = cuda_fps_threads(n)
    bits = stride.bit_length() - 1
    k = torch.arange(n, device=xyz.device)
    tid = k % stride  # thread k runs on; each thread keeps its first maximum (strict >)
    rev = sum(((tid >> i) & 1) << (bits - 1 - i) for i in range(bits)) if bits else torch.zeros_like(k)
    # the shared-memory tree reduction keeps the left operand on ties, merging tid with tid + s for
    # s = stride/2 … 1: the lowest bit decides last, so ties go to the smallest bit-reversed thread id
    tie_key = rev * n + k
    temp = torch.full((b, n), 1e10, device=xyz.device)
    idx = torch.zeros(b, m, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    old = torch.zeros(b, dtype=torch.long, device=xyz.device)
    for j in range(1, m):
        p = xyz[rows, old]
        dx, dy, dz = x - p[:, :1], y - p[:, 1:2], z - p[:, 2:3]
        d = dx * dx + dy * dy + dz * dz
        temp = torch.where(valid, torch.minimum(d, temp), temp)
        cand = torch.where(valid, temp, torch.full_like(temp, -1.0))
        best = cand.max(dim=1, keepdim=True).values
        keys = torch.where(cand == best, tie_key, (stride + 1) * n)
        old = keys.argmin(dim=1)
        idx[:, j] = old
    return idx


def knn_indices(xyz: torch.Tensor, centers: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the k nearest points of xyz (B, N, 3) to each centre (B, G, 3)."""
    d = -2 * torch.matmul(centers, xyz.transpose(1, 2))
    d = d + (centers**2).sum(-1, keepdim=True) + (xyz**2).sum(-1).unsqueeze(1)
    return torch.topk(d, k, dim=-1, largest=False, sorted=False).indices


def group_points(
    xyz: torch.Tensor, rgb: torch.Tensor, num_group: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (B, G, 3), patch features (B, G, M, 6) = [xyz − centre, rgb])."""
    b = xyz.shape[0]
    if xyz.shape[1] < max(num_group, group_size):
        raise R3DError(f"Uni3D needs at least {max(num_group, group_size)} points, got {xyz.shape[1]}")
    rows = torch.arange(b, device=xyz.device)[:, None]
    centers = xyz[rows, farthest_point_sample(xyz, num_group)]
    nn_idx = knn_indices(xyz, centers, group_size)
    rows = rows[:, :, None]
    return centers, torch.cat([xyz[rows, nn_idx] - centers.unsqueeze(2), rgb[rows, nn_idx]], dim=-1)


class PatchEncoder(nn.Module):
    """PointNet over each patch (B, G, M, 6) → (B, G, C) (Uni3D's ``Encoder``; BatchNorm in eval)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.first_conv = nn.Sequential(
            nn.Conv1d(6, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, channels, 1)
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, g, m, _ = patches.shape
        f = self.first_conv(patches.reshape(b * g, m, 6).transpose(1, 2))
        f = torch.cat([f.amax(dim=2, keepdim=True).expand(-1, -1, m), f], dim=1)
        return self.second_conv(f).amax(dim=2).reshape(b, g, self.channels)


# ----------------------------------------------------------------------------- EVA trunk
@dataclass
class EvaConfig:
    """What an EVA trunk looks like, read from a state dict (``num_heads`` from the width table)."""

    dim: int
    depth: int
    num_heads: int
    hidden: int
    mlp: str  # "gelu" (fc1/fc2) | "glu" (packed fc1, SiLU(first half)·second half) | "swiglu" (fc1_g/fc1_x)
    mlp_norm: bool
    qkv_fused: bool
    qkv_bias: bool
    attn_norm: bool
    qk_norm: bool
    layer_scale: bool
    norm: bool
    fc_norm: bool

    @classmethod
    def infer(cls, sd: dict[str, torch.Tensor], num_heads: int | None = None) -> EvaConfig:
        if "blocks.0.norm1.weight" not in sd:
            raise R3DError("Uni3D checkpoint has no EVA trunk (point_encoder.visual.blocks.0.* missing)")
        dim = sd["blocks.0.norm1.weight"].shape[0]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        heads = num_heads or HEADS_BY_WIDTH.get(dim)
        if heads is None or dim % heads:
            raise R3DError(f"cannot tell the attention heads of a {dim}-wide Uni3D trunk; pass num_heads")
        if "blocks.0.mlp.fc1_g.weight" in sd:
            mlp, hidden = "swiglu", sd["blocks.0.mlp.fc1_g.weight"].shape[0]
        elif sd["blocks.0.mlp.fc1.weight"].shape[0] == 2 * sd["blocks.0.mlp.fc2.weight"].shape[1]:
            mlp, hidden = "glu", sd["blocks.0.mlp.fc2.weight"].shape[1]
        else:
            mlp, hidden = "gelu", sd["blocks.0.mlp.fc1.weight"].shape[0]
        fused = "blocks.0.attn.qkv.weight" in sd
        return cls(
            dim=dim,
            depth=depth,
            num_heads=heads,
            hidden=hidden,
            mlp=mlp,
            mlp_norm="blocks.0.mlp.norm.weight" in sd,
            qkv_fused=fused,
            qkv_bias=("blocks.0.attn.q_bias" if fused else "blocks.0.attn.q_proj.bias") in sd,
            attn_norm="blocks.0.attn.norm.weight" in sd,
            qk_norm="blocks.0.attn.q_norm.weight" in sd,
            layer_scale="blocks.0.gamma_1" in sd,
            norm="norm.weight" in sd,
            fc_norm="fc_norm.weight" in sd,
        )


def _ln(dim: int, on: bool = True) -> nn.Module:
    return nn.LayerNorm(dim, eps=1e-6) if on else nn.Identity()


class EvaAttention(nn.Module):
    """timm ``EvaAttention`` without RoPE: fused qkv with q/v biases (k has none) or separate projections."""

    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        d, self.heads = cfg.dim, cfg.num_heads
        if cfg.qkv_fused:
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(d)) if cfg.qkv_bias else None
            self.v_bias = nn.Parameter(torch.zeros(d)) if cfg.qkv_bias else None
        else:
            self.qkv = None
            self.q_proj = nn.Linear(d, d, bias=cfg.qkv_bias)
            self.k_proj = nn.Linear(d, d, bias=False)
            self.v_proj = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.q_norm = _ln(d // self.heads, cfg.qk_norm)
        self.k_norm = _ln(d // self.heads, cfg.qk_norm)
        self.norm = _ln(d, cfg.attn_norm)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.qkv is not None:
            bias = None
            if self.q_bias is not None:
                bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            q, k, v = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (
                p(x).view(b, n, self.heads, -1).transpose(1, 2)
                for p in (self.q_proj, self.k_proj, self.v_proj)
            )
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(self.norm(out.transpose(1, 2).reshape(b, n, c)))


class EvaMlp(nn.Module):
    """The three timm MLP kinds EVA uses (parameter names as in timm's Mlp / GluMlp / SwiGLU)."""

    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        d, h = cfg.dim, cfg.hidden
        self.kind = cfg.mlp
        if self.kind == "swiglu":
            self.fc1_g = nn.Linear(d, h)
            self.fc1_x = nn.Linear(d, h)
        else:
            self.fc1 = nn.Linear(d, 2 * h if self.kind == "glu" else h)
        self.norm = _ln(h, cfg.mlp_norm)
        self.fc2 = nn.Linear(h, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            h = F.silu(self.fc1_g(x)) * self.fc1_x(x)
        elif self.kind == "glu":
            gate, value = self.fc1(x).chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(self.fc1(x))
        return self.fc2(self.norm(h))


class EvaBlock(nn.Module):
    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        self.norm1 = _ln(cfg.dim)
        self.attn = EvaAttention(cfg)
        self.norm2 = _ln(cfg.dim)
        self.mlp = EvaMlp(cfg)
        self.gamma_1 = nn.Parameter(torch.ones(cfg.dim)) if cfg.layer_scale else None
        self.gamma_2 = nn.Parameter(torch.ones(cfg.dim)) if cfg.layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.norm1(x))
        x = x + (a if self.gamma_1 is None else self.gamma_1 * a)
        m = self.mlp(self.norm2(x))
        return x + (m if self.gamma_2 is None else self.gamma_2 * m)


class EvaTrunk(nn.Module):
    """The blocks and final norms of a timm EVA, plus its unused image-side parameters (``unused``
    maps their names to shapes; they are registered so that the checkpoint loads strictly)."""

    def __init__(self, cfg: EvaConfig, unused: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(EvaBlock(cfg) for _ in range(cfg.depth))
        self.norm = _ln(cfg.dim, cfg.norm)
        self.fc_norm = _ln(cfg.dim, cfg.fc_norm)
        for name, shape in unused.items():
            owner: nn.Module = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(torch.zeros(shape), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, 1 + G, dim) → normalised cls feature (B, dim)."""
        for block in self.blocks:
            x = block(x)
        return self.fc_norm(self.norm(x[:, 0]))


# ----------------------------------------------------------------------------- Uni3D
class PointcloudEncoder(nn.Module):
    """Uni3D's ``point_encoder``: grouping → patch encoder → EVA trunk → ``trans2embed``."""

    def __init__(
        self, trunk: EvaTrunk, encoder_dim: int, embed_dim: int, num_group: int = 512, group_size: int = 64
    ) -> None:
        super().__init__()
        dim = trunk.cfg.dim
        self.num_group, self.group_size = num_group, group_size
        self.encoder = PatchEncoder(encoder_dim)
        self.encoder2trans = nn.Linear(encoder_dim, dim)
        self.trans2embed = nn.Linear(dim, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.visual = trunk

    def forward(self, xyz: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        centers, patches = group_points(xyz, rgb, self.num_group, self.group_size)
        tokens = self.encoder2trans(self.encoder(patches))
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        x = x + torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centers)], dim=1)
        return self.trans2embed(self.visual(x))


class Uni3D(nn.Module):
    """``encode_pc(pc (B, N, 6) xyz+rgb) → (B, embed_dim)`` (unnormalised, as Uni3D returns it)."""

    def __init__(self, point_encoder: PointcloudEncoder) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.point_encoder = point_encoder

    def encode_pc(self, pc: torch.Tensor) -> torch.Tensor:
        if pc.ndim != 3 or pc.shape[-1] != 6:
            raise R3DError(f"Uni3D point clouds must be (B, N, 6) xyz+rgb, got {tuple(pc.shape)}")
        pc = pc.to(self.logit_scale.device, self.logit_scale.dtype)
        return self.point_encoder(pc[..., :3].contiguous(), pc[..., 3:].contiguous())


def build_uni3d(
    state: dict[str, torch.Tensor], num_group: int = 512, group_size: int = 64, num_heads: int | None = None
) -> Uni3D:
    """An (uninitialised) Uni3D whose every parameter matches ``state`` (keys without ``module.``)."""
    prefix = "point_encoder.visual."
    trunk_sd = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    cfg = EvaConfig.infer(trunk_sd, num_heads)
    unused = {k: tuple(v.shape) for k, v in trunk_sd.items() if k.startswith(UNUSED_TRUNK_PREFIXES)}
    try:
        encoder_dim = state["point_encoder.encoder2trans.weight"].shape[1]
        embed_dim = state["point_encoder.trans2embed.weight"].shape[0]
    except KeyError as exc:
        raise R3DError(f"not a Uni3D checkpoint: {exc.args[0]} missing") from None
    pe = PointcloudEncoder(EvaTrunk(cfg, unused), encoder_dim, embed_dim, num_group, group_size)
    return Uni3D(pe)


def default_weights() -> tuple[str, str]:
    """Where ``r3d fetch-weights uni3d-g`` and ``eva02-e-14-plus`` put the encoder and the CLIP file."""
    from r3d.core.weights import default_dir

    return (
        str(default_dir("uni3d-g") / "modelzoo" / "uni3d-g" / "model.pt"),
        str(default_dir("eva02-e-14-plus") / "open_clip_pytorch_model.bin"),
    )


def find_uni3d_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or the one ``model.pt`` under a folder; R3DError naming the fix otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        hits = sorted(path.glob("**/model.pt"))
        if len(hits) != 1:
            raise R3DError(f"{path} holds {len(hits)} model.pt files; name one (modelzoo/uni3d-*/model.pt)")
        path = hits[0]
    if not path.is_file():
        raise R3DError(f"Uni3D weights not found at {path}; download them with `r3d fetch-weights uni3d-g`")
    return path


def read_uni3d_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official ``model.pt`` (under ``module``; ``module.`` key prefixes removed)."""
    path = find_uni3d_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — an unreadable file is a user-facing error
        raise R3DError(f"cannot read Uni3D checkpoint {path}: {str(exc).splitlines()[0]}") from None
    state = ckpt.get("module", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise R3DError(f"{path} is not a Uni3D checkpoint (expected a dict with key 'module')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_uni3d(
    path: str | Path,
    device: str | torch.device = "cpu",
    num_group: int = 512,
    group_size: int = 64,
    num_heads: int | None = None,
) -> Uni3D:
    """Load an official Uni3D ``model.pt`` strictly (trunk size/depth inferred), eval mode, frozen, fp32."""
    state = read_uni3d_state(path)
    with torch.device("meta"):
        model = build_uni3d(state, num_group, group_size, num_heads)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise R3DError(
            f"Uni3D checkpoint does not match: missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- CLIP targets
class ClipEmbedder(Protocol):
    """Normalised CLIP embeddings: text (one row per text) and images (one row per image path)."""

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...

    def encode_image(self, paths: list[str]) -> torch.Tensor: ...


class OpenClipEmbedder:
    """EVA02-E-14-plus (or another open_clip model) from ``pretrained`` (a file or an open_clip tag)."""

    def __init__(self, model_name: str, pretrained: str, device: str | torch.device = "cpu") -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise R3DError(
                f"the uni3d reward needs open_clip for CLIP targets (pip install 'r3d[uni3d]'): {exc}; "
                "or give precomputed target_embeddings"
            ) from None
        self.device = torch.device(device)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained
        )
        self.model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        emb = self.model.encode_text(self.tokenizer(texts).to(self.device)).float()
        return F.normalize(emb, dim=-1).cpu()

    @torch.no_grad()
    def encode_image(self, paths: list[str]) -> torch.Tensor:
        from PIL import Image

        images = []
        for p in paths:
            img = Image.open(p).convert("RGBA")
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            images.append(self.preprocess(Image.alpha_composite(white, img).convert("RGB")))
        emb = self.model.encode_image(torch.stack(images).to(self.device)).float()
        return F.normalize(emb, dim=-1).cpu()


def load_templates(templates: Sequence[str] | str | None) -> list[str]:
    """Template list from a list, a JSON file (a list, or a dict: key ``modelnet40_64`` or its only
    value — Uni3D's data/templates.json works), or r3d's defaults."""
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, str):
        try:
            data = json.loads(Path(templates).read_text())
        except (OSError, ValueError) as exc:
            raise R3DError(f"cannot read templates file {templates}: {exc}") from None
        if isinstance(data, dict):
            data = data.get("modelnet40_64", next(iter(data.values())) if len(data) == 1 else None)
        templates = data
    out = [t for t in (templates or []) if isinstance(t, str) and "{}" in t]
    if not out:
        raise R3DError("uni3d templates must be strings containing '{}'")
    return out


# ----------------------------------------------------------------------------- reward
def mesh_to_cloud(mesh: Any, num_points: int, seed: int, swap_yz: bool = False) -> np.ndarray | None:
    """Uni3D input (num_points, 6) for one mesh: unit-sphere xyz + 0.4 grey rgb, or None when empty."""
    pts = mesh_points(mesh, num_points, seed)
    if pts is None:
        return None
    if swap_yz:
        pts = pts[:, [0, 2, 1]]
    return np.concatenate([pts, np.full_like(pts, GREY)], axis=1)


class Uni3DReward:
    """``uni3d``: cos(Uni3D(mesh), CLIP(prompt)) ∈ [−1, 1]; a None or empty mesh scores −1.

    Args:
        weights: ``model.pt`` (or a folder holding exactly one); default: ``r3d fetch-weights uni3d-g``'s.
        clip_model / clip_pretrained: open_clip model name and weights file or tag (default: the file
            ``r3d fetch-weights eva02-e-14-plus`` downloads).
        target_embeddings: safetensors file {prompt: (D,)} of precomputed CLIP targets (no open_clip).
        templates: text templates (list or JSON file); see :func:`load_templates`.
        num_points, num_group, group_size, seed, swap_yz, batch_size, device: see the module docstring.
    """

    name = "uni3d"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    differentiable = False

    def __init__(
        self,
        weights: str | None = None,
        clip_model: str = "EVA02-E-14-plus",
        clip_pretrained: str | None = None,
        target_embeddings: str | None = None,
        templates: list[str] | str | None = None,
        num_points: int = 10000,
        num_group: int = 512,
        group_size: int = 64,
        num_heads: int | None = None,
        seed: int = 0,
        swap_yz: bool = False,
        batch_size: int = 8,
        device: str = "auto",
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        default_encoder, default_clip = default_weights()
        model = load_uni3d(weights or default_encoder, dev, num_group, group_size, num_heads)
        clip_pretrained = clip_pretrained or default_clip
        self._clip_args = (clip_model, clip_pretrained, dev)
        self._init(model, None, load_templates(templates), num_points, seed, swap_yz, batch_size)
        if target_embeddings is not None:
            self.add_targets(target_embeddings)

    @staticmethod
    def missing_weights(
        weights: str | None = None,
        clip_pretrained: str | None = None,
        target_embeddings: str | None = None,
        **_: Any,
    ) -> list[str]:
        """What the constructor (and the first prompt's CLIP target) would miss, one message each naming
        the fix; [] when ready. Used by ``r3d grpo --dry-run``. CLIP is needed only without
        ``target_embeddings``; an open_clip tag (not a path) as ``clip_pretrained`` is not checked."""
        default_encoder, default_clip = default_weights()
        problems = []
        try:
            find_uni3d_checkpoint(weights or default_encoder)
        except R3DError as exc:
            problems.append(str(exc))
        if target_embeddings is not None:
            if not Path(target_embeddings).is_file():
                problems.append(f"target embeddings not found: {target_embeddings}")
            return problems
        clip_file = clip_pretrained or default_clip
        looks_like_path = clip_pretrained is None or "/" in clip_file or clip_file.endswith((".bin", ".pt"))
        if looks_like_path and not Path(clip_file).is_file():
            problems.append(
                f"CLIP weights for the prompt targets not found at {clip_file}; download them with "
                "`r3d fetch-weights eva02-e-14-plus` (or give precomputed target_embeddings)"
            )
        try:
            import open_clip  # noqa: F401
        except ImportError:
            problems.append(
                "CLIP targets need open_clip (pip install 'r3d[uni3d]'), or give precomputed target_embeddings"
            )
        return problems

    @classmethod
    def from_modules(
        cls,
        model: Uni3D,
        embedder: ClipEmbedder | None,
        templates: list[str] | None = None,
        num_points: int = 10000,
        seed: int = 0,
        swap_yz: bool = False,
        batch_size: int = 8,
    ) -> Uni3DReward:
        """A reward around an already built encoder and CLIP embedder (tests, notebooks)."""
        self = cls.__new__(cls)
        self._clip_args = None
        self._init(model, embedder, load_templates(templates), num_points, seed, swap_yz, batch_size)
        return self

    def _init(
        self,
        model: Uni3D,
        embedder: ClipEmbedder | None,
        templates: list[str],
        num_points: int,
        seed: int,
        swap_yz: bool,
        batch_size: int,
    ) -> None:
        self.model, self._embedder, self.templates = model, embedder, templates
        self.num_points, self.seed, self.swap_yz = int(num_points), int(seed), bool(swap_yz)
        self.batch_size = max(1, int(batch_size))
        self._targets: dict[str, torch.Tensor] = {}

    def add_targets(self, path: str | Path) -> None:
        """Cache precomputed target embeddings from a safetensors file {prompt: (D,)}."""
        from safetensors.torch import load_file

        try:
            table = load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise R3DError(f"cannot read target embeddings {path}: {exc}") from None
        self._targets.update({k: F.normalize(v.float().reshape(-1), dim=0) for k, v in table.items()})

    @property
    def embedder(self) -> ClipEmbedder:
        if self._embedder is None:
            if self._clip_args is None:
                raise R3DError("uni3d reward: no CLIP embedder and no precomputed target for this prompt")
            self._embedder = OpenClipEmbedder(*self._clip_args)
        return self._embedder

    def targets(self, prompts: Sequence[str]) -> torch.Tensor:
        """Normalised CLIP targets (B, D): image embedding for image-file prompts, else template-averaged text."""
        for p in dict.fromkeys(prompts):
            if p in self._targets:
                continue
            if Path(p).is_file():
                self._targets[p] = self.embedder.encode_image([p])[0]
            else:
                per_template = self.embedder.encode_text([t.format(p) for t in self.templates])
                self._targets[p] = F.normalize(F.normalize(per_template, dim=-1).mean(0), dim=0)
        return torch.stack([self._targets[p] for p in prompts])

    @torch.no_grad()
    def embed(self, artifacts: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised Uni3D embeddings (B, D) — zero rows for empty meshes, valid mask (B,))."""
        clouds = [mesh_to_cloud(m, self.num_points, self.seed, self.swap_yz) for m in artifacts]
        valid = torch.tensor([c is not None for c in clouds])
        dim = self.model.point_encoder.trans2embed.out_features
        out = torch.zeros(len(clouds), dim)
        ok = [i for i, c in enumerate(clouds) if c is not None]
        for start in range(0, len(ok), self.batch_size):
            idx = ok[start : start + self.batch_size]
            pc = torch.from_numpy(np.stack([clouds[i] for i in idx]))
            out[idx] = F.normalize(self.model.encode_pc(pc).float().cpu(), dim=-1)
        return out, valid

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        if len(artifacts) != len(prompts):
            raise R3DError(f"uni3d reward: {len(artifacts)} artifacts but {len(prompts)} prompts")
        emb, valid = self.embed(artifacts)
        cos = (emb * self.targets(prompts)).sum(-1) if valid.any() else torch.zeros(len(artifacts))
        return {self.name: torch.where(valid, cos, torch.full_like(cos, -1.0))}


declare_hooks(Uni3DReward, missing_weights=Uni3DReward.missing_weights)
