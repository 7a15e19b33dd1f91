"""Hunyuan3D-2.1 (image → mesh) as an r3d policy: weight loading, conditioner, preprocessing, adapter.

``load_shape_model(model_dir)`` reads the official ``config.yaml`` + ``model.fp16.ckpt`` (one
checkpoint with the keys ``model``, ``vae`` and ``conditioner``; a ``.safetensors`` variant with
``model.``/``vae.``/``conditioner.`` key prefixes works too) into r3d's own weight-compatible modules
(:mod:`r3d.models.hunyuan3d_dit`, :mod:`r3d.models.hunyuan3d_vae`) and a transformers DINOv2. The
modules are built on the meta device and take the checkpoint's tensors (memory-mapped), so loading
needs no random initialisation and no second copy of the weights.

:class:`Hunyuan3DPolicy` is the :class:`r3d.core.policy.FlowPolicy`. Its prompts are image paths.
Hunyuan3D runs time the other way round (t = 0 noise, t = 1 data, output ≈ x_data − ε); at the
boundary σ = 1 − t and v = −output. Its sampler visits t = linspace(0, 1, N) and appends a final
t = 1, a step with dt = 0; r3d's ``sigmas(T)`` = 1 − linspace(0, 1, T + 1) drops it, so T r3d steps
are Hunyuan's ``num_inference_steps = T + 1``. Classifier-free guidance uses an all-zeros context,
out = out_u + s·(out_c − out_u), in one batched pass [cond; uncond].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
import yaml
from torch import nn
from torch.nn import functional as F

from r3d.core.cache import ConditionCache
from r3d.core.checkpoint import load_strict
from r3d.core.device import resolve_device
from r3d.core.errors import R3DError
from r3d.core.policy import declare_hooks
from r3d.models.hunyuan3d_dit import DiTConfig, HunyuanDiT
from r3d.models.hunyuan3d_keys import map_dino_keys
from r3d.models.hunyuan3d_vae import ShapeVAEDecoder, VAEConfig, logits_to_mesh, volume_logits

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAMES = ("model.fp16.ckpt", "model.fp16.safetensors", "model.ckpt", "model.safetensors")
SUBFOLDER = "hunyuan3d-dit-v2-1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The VAE encoder is not needed to generate; its keys in the ``vae`` state dict are skipped.
VAE_ENCODER_PREFIXES = ("encoder.", "pre_kl.")
DEFAULT_LORA_TARGETS = ["to_q", "to_k", "to_v", "out_proj"]
#: ``hunyuan3d-dit-v2-1/config.yaml`` of tencent/Hunyuan3D-2.1 (the architecture sections, the scheduler
#: and the image processor). Used to build the full-size modules on the meta device when the weights
#: are absent (``device="meta"``: shapes and memory estimates, e.g. ``r3d grpo --dry-run``).
HUNYUAN3D_21_CONFIG: dict[str, Any] = {
    "model": {
        "target": "hy3dshape.models.denoisers.hunyuandit.HunYuanDiTPlain",
        "params": {
            "input_size": 4096,
            "in_channels": 64,
            "hidden_size": 2048,
            "context_dim": 1024,
            "depth": 21,
            "num_heads": 16,
            "qk_norm": True,
            "text_len": 1370,
            "with_decoupled_ca": False,
            "use_attention_pooling": False,
            "qk_norm_type": "rms",
            "qkv_bias": False,
            "use_pos_emb": False,
            "num_moe_layers": 6,
            "num_experts": 8,
            "moe_top_k": 2,
        },
    },
    "vae": {
        "target": "hy3dshape.models.autoencoders.ShapeVAE",
        "params": {
            "num_latents": 4096,
            "embed_dim": 64,
            "num_freqs": 8,
            "include_pi": False,
            "heads": 16,
            "width": 1024,
            "num_encoder_layers": 8,
            "num_decoder_layers": 16,
            "qkv_bias": False,
            "qk_norm": True,
            "scale_factor": 1.0039506158752403,
            "geo_decoder_mlp_expand_ratio": 4,
            "geo_decoder_downsample_ratio": 1,
            "geo_decoder_ln_post": True,
            "point_feats": 4,
            "pc_size": 81920,
            "pc_sharpedge_size": 0,
        },
    },
    "conditioner": {
        "target": "hy3dshape.models.conditioner.SingleImageEncoder",
        "params": {
            "main_image_encoder": {
                "type": "DinoImageEncoder",
                "kwargs": {
                    "config": {
                        "attention_probs_dropout_prob": 0.0,
                        "drop_path_rate": 0.0,
                        "hidden_act": "gelu",
                        "hidden_dropout_prob": 0.0,
                        "hidden_size": 1024,
                        "image_size": 518,
                        "initializer_range": 0.02,
                        "layer_norm_eps": 1e-6,
                        "layerscale_value": 1.0,
                        "mlp_ratio": 4,
                        "model_type": "dinov2",
                        "num_attention_heads": 16,
                        "num_channels": 3,
                        "num_hidden_layers": 24,
                        "patch_size": 14,
                        "qkv_bias": True,
                        "torch_dtype": "float32",
                        "use_swiglu_ffn": False,
                    },
                    "image_size": 518,
                    "use_cls_token": True,
                },
            }
        },
    },
    "scheduler": {
        "target": "hy3dshape.schedulers.FlowMatchEulerDiscreteScheduler",
        "params": {"num_train_timesteps": 1000},
    },
    "image_processor": {
        "target": "hy3dshape.preprocessors.ImageProcessorV2",
        "params": {"size": 512, "border_ratio": 0.15},
    },
}
IMPLEMENTATIONS = ("r3d", "official")


# ----------------------------------------------------------------------------- image preprocessing
def _resize_channels(rgba: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize each uint8 channel of (H, W, C) separately (no alpha premultiplication) to (w, h)."""
    from PIL import Image

    chans = [np.asarray(Image.fromarray(rgba[..., c]).resize(size, resample)) for c in range(rgba.shape[-1])]
    return np.stack(chans, axis=-1)


def preprocess_image(image: Any, size: int = 512, border_ratio: float = 0.15) -> torch.Tensor:
    """An image path or PIL image → (1, 3, size, size) in [−1, 1], as Hunyuan3D's ``ImageProcessorV2``.

    The alpha mask's bounding box is scaled to (1 − border_ratio) of the square canvas (side = the
    longer image side), centred, composited on white, then resized to ``size``. An image without
    alpha counts as fully opaque (remove the background beforehand). PIL's box/bicubic filters stand
    in for OpenCV's area/cubic ones (pixel values can differ by interpolation rounding).
    """
    from PIL import Image, UnidentifiedImageError

    if not isinstance(image, Image.Image):
        try:
            image = Image.open(image)
            image.load()
        except (OSError, UnidentifiedImageError) as exc:
            raise R3DError(f"cannot read condition image {image}: {exc}") from None
    rgba = np.asarray(image.convert("RGBA"))
    mask = rgba[..., 3]
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise R3DError("condition image is empty (fully transparent)")
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = r1 - r0, c1 - c0
    if h == 0 or w == 0:
        raise R3DError("condition image is empty (its opaque region is one pixel thin)")
    side = max(rgba.shape[:2])
    scale = int(side * (1 - border_ratio)) / max(h, w)
    h2, w2 = int(h * scale), int(w * scale)
    canvas = np.zeros((side, side, 4), dtype=np.uint8)
    top, left = (side - h2) // 2, (side - w2) // 2
    area = Image.BOX if scale <= 1 else Image.BILINEAR  # OpenCV's INTER_AREA is bilinear when enlarging
    canvas[top : top + h2, left : left + w2] = _resize_channels(rgba[r0:r1, c0:c1], (w2, h2), area)
    alpha = canvas[..., 3:].astype(np.float32) / 255
    rgb = (canvas[..., :3] * alpha + 255 * (1 - alpha)).clip(0, 255).astype(np.uint8)
    rgb = _resize_channels(rgb, (size, size), Image.BICUBIC)
    return torch.from_numpy(rgb).float().div(255).mul(2).sub(1).permute(2, 0, 1)[None]


# ----------------------------------------------------------------------------- conditioner
class DinoImageEncoder(nn.Module):
    """DINOv2 (transformers) over images in [−1, 1] (B, 3, H, W) → tokens (B, 1 + (S/14)², D).

    Resize of the shorter side to S (bilinear, antialiased), centre crop S × S, ImageNet normalisation;
    the CLS token is kept when ``use_cls_token``.
    """

    def __init__(self, config: dict[str, Any], image_size: int = 518, use_cls_token: bool = True) -> None:
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        self.model = Dinov2Model(Dinov2Config(**config))
        self.image_size = int(image_size)
        self.use_cls_token = use_cls_token
        self.num_tokens = (self.image_size // 14) ** 2 + int(use_cls_token)
        self.hidden_size = int(self.model.config.hidden_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        param = next(self.model.parameters())
        x = (image.to(param.device).float() + 1) / 2
        h, w = x.shape[-2:]
        s = self.image_size
        new_h, new_w = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top, left = int(round((new_h - s) / 2.0)), int(round((new_w - s) / 2.0))
        x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        tokens = self.model(((x - mean) / std).to(param.device, param.dtype)).last_hidden_state
        return tokens if self.use_cls_token else tokens[:, 1:]


class Hunyuan3DConditioner(nn.Module):
    """``conditioner(image (B, 3, H, W) in [−1, 1]) → (B, L, D)``; the unconditional context is zeros."""

    def __init__(self, main_image_encoder: dict[str, Any]) -> None:
        super().__init__()
        kind = main_image_encoder.get("type")
        if kind != "DinoImageEncoder":
            raise R3DError(
                f"Hunyuan3D conditioner type {kind!r} is not supported (2.1 uses DinoImageEncoder)"
            )
        kw = main_image_encoder.get("kwargs", {})
        if "config" not in kw:
            raise R3DError("Hunyuan3D config: conditioner.params.main_image_encoder.kwargs.config is missing")
        self.main_image_encoder = DinoImageEncoder(
            kw["config"], kw.get("image_size", 518), kw.get("use_cls_token", True)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main_image_encoder(image)

    def unconditional(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        enc = self.main_image_encoder
        return torch.zeros(batch, enc.num_tokens, enc.hidden_size, device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------- loading
@dataclass
class Hunyuan3DShapeModel:
    """The three networks of the shape model plus the parsed config.

    ``dit(x, t, context)`` in Hunyuan's convention; ``vae.decode`` / ``vae.occupancy`` /
    ``vae.latent_shape``; ``conditioner(image)`` / ``conditioner.unconditional(batch, like)`` — r3d's
    modules or the wrappers of Tencent's (:mod:`r3d.models.hunyuan3d_official`); ``shift`` of the
    flow-matching scheduler; ``image_size`` / ``border_ratio`` of the image preprocessor.
    """

    dit: nn.Module
    vae: nn.Module
    conditioner: nn.Module
    config: dict[str, Any]
    shift: float = 1.0
    image_size: int = 512
    border_ratio: float = 0.15


def find_model_files(model_dir: str | Path) -> tuple[Path, Path]:
    """(config.yaml, checkpoint) in ``model_dir`` or its ``hunyuan3d-dit-v2-1`` subfolder."""
    root = Path(model_dir).expanduser()
    for folder in (root, root / SUBFOLDER):
        cfg = folder / CONFIG_NAME
        ckpts = [folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()]
        if cfg.is_file() and ckpts:
            return cfg, ckpts[0]
    raise R3DError(
        f"no Hunyuan3D-2.1 weights in {root} (need {CONFIG_NAME} and model.fp16.ckpt, also under "
        f"{SUBFOLDER}/); download them with `r3d fetch-weights hunyuan3d-2.1`"
    )


def read_config(path: str | Path) -> dict[str, Any]:
    """The official config.yaml as a dict with ``model``, ``vae`` and ``conditioner`` sections."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise R3DError(f"cannot read Hunyuan3D config {path}: {exc}") from None
    missing = [k for k in ("model", "vae", "conditioner") if not isinstance((cfg or {}).get(k), dict)]
    if missing:
        raise R3DError(f"Hunyuan3D config {path} lacks section(s) {', '.join(missing)}")
    target = cfg["model"].get("target", "")
    if target and not target.endswith("HunYuanDiTPlain"):
        raise R3DError(f"{path}: DiT {target!r} is not Hunyuan3D-2.1's HunYuanDiTPlain")
    return cfg


def build_modules(cfg: dict[str, Any]) -> tuple[HunyuanDiT, ShapeVAEDecoder, Hunyuan3DConditioner]:
    """Instantiate the three networks from a parsed config (use ``with torch.device('meta')`` to skip init)."""
    dit = HunyuanDiT(DiTConfig.from_params(cfg["model"].get("params", {})))
    vae = ShapeVAEDecoder(VAEConfig.from_params(cfg["vae"].get("params", {})))
    cond_params = cfg["conditioner"].get("params", {})
    if "main_image_encoder" not in cond_params:
        raise R3DError("Hunyuan3D config: conditioner.params.main_image_encoder is missing")
    return dit, vae, Hunyuan3DConditioner(cond_params["main_image_encoder"])


def read_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """{'model': sd, 'vae': sd, 'conditioner': sd} from a ``.ckpt`` (torch, weights only, mmap) or
    a ``.safetensors`` with ``model.``/``vae.``/``conditioner.`` key prefixes."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            ckpt: dict[str, dict[str, torch.Tensor]] = {}
            for key, value in load_file(str(path)).items():
                part, _, rest = key.partition(".")
                ckpt.setdefault(part, {})[rest] = value
            return ckpt
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unreadable file is a user-facing error
        raise R3DError(f"cannot read Hunyuan3D checkpoint {path}: {exc}") from None


def load_modules(
    cfg: dict[str, Any],
    ckpt: dict[str, dict[str, torch.Tensor]],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[HunyuanDiT, ShapeVAEDecoder, Hunyuan3DConditioner]:
    """Build on the meta device, take the checkpoint tensors (strict), cast, move, freeze, eval."""
    missing = [k for k in ("model", "vae", "conditioner") if k not in ckpt]
    if missing:
        raise R3DError(f"Hunyuan3D checkpoint lacks {', '.join(missing)} (keys: {', '.join(ckpt)})")
    with torch.device("meta"):
        dit, vae, cond = build_modules(cfg)
    load_strict(dit, ckpt["model"], "Hunyuan3D DiT")
    vae_state = {k: v for k, v in ckpt["vae"].items() if not k.startswith(VAE_ENCODER_PREFIXES)}
    load_strict(vae, vae_state, "Hunyuan3D VAE")
    load_strict(cond, map_dino_keys(ckpt["conditioner"], cond), "Hunyuan3D conditioner")
    for m in (dit, vae, cond):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return dit, vae, cond


def _check_implementation(implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise R3DError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")


def _shape_model(cfg: dict[str, Any], dit: nn.Module, vae: nn.Module, cond: nn.Module) -> Hunyuan3DShapeModel:
    sched = (cfg.get("scheduler") or {}).get("params", {}) or {}
    proc = (cfg.get("image_processor") or {}).get("params", {}) or {}
    border = proc.get("border_ratio")
    return Hunyuan3DShapeModel(
        dit,
        vae,
        cond,
        cfg,
        shift=float(sched.get("shift", 1.0)),
        image_size=int(proc.get("size", 512)),
        border_ratio=0.15 if border is None else float(border),
    )


def load_shape_model(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    implementation: str = "r3d",
) -> Hunyuan3DShapeModel:
    """Read the official ``config.yaml`` + ``model.fp16.ckpt`` from ``model_dir`` (see module docstring).

    ``implementation``: ``r3d`` (r3d's own modules) or ``official`` (Tencent's classes from an installed
    ``hy3dshape``, built from the config's ``target:`` entries, see :mod:`r3d.models.hunyuan3d_official`).
    """
    _check_implementation(implementation)
    cfg_path, ckpt_path = find_model_files(model_dir)
    cfg = read_config(cfg_path)
    if implementation == "official":
        from r3d.models.hunyuan3d_official import load_official_modules

        dit, vae, cond = load_official_modules(cfg, read_checkpoint(ckpt_path), device, dtype)
    else:
        dit, vae, cond = load_modules(cfg, read_checkpoint(ckpt_path), device, dtype)
    return _shape_model(cfg, dit, vae, cond)


def meta_shape_model(
    model_dir: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> Hunyuan3DShapeModel:
    """r3d's modules on the meta device, without weights: the config.yaml of ``model_dir`` when there is
    one, else Hunyuan3D-2.1's (:data:`HUNYUAN3D_21_CONFIG`). Full-size shapes for memory estimates."""
    cfg = HUNYUAN3D_21_CONFIG
    if model_dir is not None:
        root = Path(model_dir).expanduser()
        found = [f / CONFIG_NAME for f in (root, root / SUBFOLDER) if (f / CONFIG_NAME).is_file()]
        if found:
            cfg = read_config(found[0])
    with torch.device("meta"):
        dit, vae, cond = build_modules(cfg)
    for m in (dit, vae, cond):
        m.to(dtype=dtype).eval().requires_grad_(False)
    return _shape_model(cfg, dit, vae, cond)


def missing_weights(model_dir: str | None = None, implementation: str = "r3d", **_: Any) -> list[str]:
    """What ``load_hunyuan3d_policy`` would miss (one message each, naming the fix); [] when ready."""
    from r3d.core.weights import default_dir

    problems = []
    try:
        find_model_files(model_dir if model_dir is not None else default_dir("hunyuan3d-2.1"))
    except R3DError as exc:
        problems.append(str(exc))
    if implementation == "official":
        from r3d.models.hunyuan3d_official import import_hy3dshape

        try:
            import_hy3dshape()
        except R3DError as exc:
            problems.append(str(exc))
    return problems


# ----------------------------------------------------------------------------- policy
def hunyuan_times(num_steps: int, shift: float = 1.0) -> np.ndarray:
    """Hunyuan's t-schedule for ``num_steps`` r3d steps: linspace(0, 1, T + 1) (float64), shifted."""
    t = np.linspace(0.0, 1.0, num_steps + 1)
    return shift * t / (1 + (shift - 1) * t)


class Hunyuan3DPolicy:
    """Hunyuan3D-2.1 as a :class:`r3d.core.policy.FlowPolicy` (image paths as prompts).

    Latents (B, 4096, 64) fp32 on the CPU side of the trainer; the networks run on ``device`` in their
    dtype. ``decode`` returns ``trimesh.Trimesh`` (None where marching cubes finds no surface).
    """

    def __init__(
        self,
        model: Hunyuan3DShapeModel,
        cfg_scale: float = 5.0,
        decode_resolution: int = 384,
        num_chunks: int = 8000,
        mc_level: float = 0.0,
        bound: float = 1.01,
        lora_target_modules: list[str] | None = None,
    ) -> None:
        if cfg_scale < 0:
            raise R3DError(f"cfg_scale must be ≥ 0, got {cfg_scale}")
        self.model = model
        self.network = model.dit
        self.cfg_scale = float(cfg_scale)
        self.decode_resolution = int(decode_resolution)
        self.num_chunks = int(num_chunks)
        self.mc_level = float(mc_level)
        self.bound = float(bound)
        self.lora_target_modules = list(lora_target_modules or DEFAULT_LORA_TARGETS)
        self._cache: ConditionCache[torch.Tensor] = ConditionCache()

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.model.vae.latent_shape

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Condition tokens (B, L, D) for image paths, encoded once per path and cached (bounded)."""
        return torch.stack(self._cache.get(prompts, self._encode_images))

    def _encode_images(self, paths: list[str]) -> torch.Tensor:
        for path in paths:
            if not Path(path).is_file():
                raise R3DError(f"Hunyuan3D prompts are condition image paths; {path!r} is not a file")
        images = torch.cat(
            [preprocess_image(p, self.model.image_size, self.model.border_ratio) for p in paths]
        )
        cond = self.model.conditioner
        with torch.no_grad():
            tokens = torch.cat([cond(images[i : i + 8].to(self.device)) for i in range(0, len(paths), 8)])
        return tokens.to(self.dtype)

    def select_cond(self, cond: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return cond[index.to(cond.device)]

    def example_cond(self, batch: int) -> torch.Tensor:
        """Condition tokens (batch, L, D) of a blank white image, through the real conditioner (shape
        checks and memory measurements without condition images; works on the meta device)."""
        size = self.model.image_size
        image = torch.ones(batch, 3, size, size, device=self.device)
        with torch.no_grad():
            return self.model.conditioner(image).to(self.dtype)

    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """ε ~ N(0, I), (batch, N, C) fp32 on the generator's device."""
        return torch.randn((batch, *self.latent_shape), generator=generator, device=generator.device)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """σ = 1 − t over Hunyuan's t-schedule without its dt = 0 final step: (T + 1,) from 1 to 0."""
        if num_steps < 1:
            raise R3DError(f"num_steps must be ≥ 1, got {num_steps}")
        t = hunyuan_times(num_steps, self.model.shift)
        return torch.from_numpy(1.0 - t).float()

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Guided DiT output in Hunyuan's convention (≈ x_data − ε), fp32, on the model device."""
        x = x.to(self.device, self.dtype)
        t = t.to(self.device, self.dtype)
        cond = cond.to(self.device, self.dtype)
        if self.cfg_scale == 1.0:
            return self.network(x, t, cond).float()
        both = self.network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))
        out_c, out_u = both.float().chunk(2)
        return out_u + self.cfg_scale * (out_c - out_u)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Canonical v = −output at t = 1 − σ (σ (B,)); CFG inside; fp32 on x's device."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32).expand(x.shape[0])
        return -self.model_output(x, 1.0 - sigma, cond).to(x.device)

    @torch.no_grad()
    def sample(
        self, images: list[str], num_steps: int = 49, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Deterministic Euler sampling σ: 1 → 0 (Hunyuan's ``num_inference_steps`` = num_steps + 1)."""
        generator = generator or torch.Generator().manual_seed(0)
        cond = self.encode_prompts(images)
        x = self.initial_noise(len(images), generator)
        sig = self.sigmas(num_steps)
        for s, s_next in zip(sig[:-1], sig[1:], strict=True):
            x = x + (s_next - s) * self.velocity(x, s.expand(len(images)), cond)
        return x

    @torch.no_grad()
    def decode(self, x: torch.Tensor, cond: Any = None) -> list[trimesh.Trimesh | None]:
        """Final latents (B, N, C) → meshes, one sample at a time (chunked volume decoding)."""
        meshes = []
        for i in range(x.shape[0]):
            decoded = self.model.vae.decode(x[i : i + 1].to(self.device, self.dtype))
            grid = volume_logits(self.model.vae, decoded, self.decode_resolution, self.bound, self.num_chunks)
            meshes.append(logits_to_mesh(grid[0].cpu().numpy(), self.bound, self.mc_level))
        return meshes


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def load_hunyuan3d_policy(
    model_dir: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    cfg_scale: float = 5.0,
    decode_resolution: int = 384,
    num_chunks: int = 8000,
    mc_level: float = 0.0,
    gradient_checkpointing: bool = False,
    lora_target_modules: list[str] | None = None,
    implementation: str = "r3d",
) -> Hunyuan3DPolicy:
    """Recipe factory (``model: {name: hunyuan3d, options: {...}}``).

    ``model_dir`` defaults to where ``r3d fetch-weights hunyuan3d-2.1`` puts the files; ``dtype``
    float32 | bfloat16 | float16; ``implementation`` r3d (r3d's own modules) | official (Tencent's
    installed ``hy3dshape`` classes behind the same adapter); ``device="meta"`` builds r3d's modules
    without weights (see :func:`meta_shape_model`).
    """
    if dtype not in _DTYPES:
        raise R3DError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    _check_implementation(implementation)
    if model_dir is None:
        from r3d.core.weights import default_dir

        model_dir = str(default_dir("hunyuan3d-2.1"))
    if device == "meta":
        model = meta_shape_model(model_dir, _DTYPES[dtype])
    else:
        model = load_shape_model(model_dir, resolve_device(device), _DTYPES[dtype], implementation)
    model.dit.gradient_checkpointing = bool(gradient_checkpointing)
    return Hunyuan3DPolicy(
        model, cfg_scale, decode_resolution, num_chunks, mc_level, 1.01, lora_target_modules
    )


declare_hooks(load_hunyuan3d_policy, missing_weights=missing_weights)


# ----------------------------------------------------------------------------- r3d export --merge
def dit_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The DiT's state dict under the official ``model`` key names (Tencent's module inside the
    :class:`~r3d.models.hunyuan3d_official.OfficialDiT` wrapper, or r3d's own module)."""
    from r3d.models.hunyuan3d_official import OfficialDiT

    return (network.model if isinstance(network, OfficialDiT) else network).state_dict()


def merged_checkpoint(
    network: nn.Module, base: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype = torch.float16
) -> dict[str, dict[str, torch.Tensor]]:
    """The official checkpoint ``base`` ({'model', 'vae', 'conditioner'}) with ``model`` replaced by
    ``network``'s weights (the adapter merged into it), every tensor in ``dtype``. ``vae`` (encoder
    included) and ``conditioner`` (in the file's DINOv2 naming) keep their keys and values."""
    state = dit_state_dict(network)
    missing, extra = sorted(set(base["model"]) - set(state)), sorted(set(state) - set(base["model"]))
    if missing or extra:
        raise R3DError(
            f"merged DiT keys differ from the checkpoint's: {len(missing)} missing "
            f"({', '.join(missing[:3])}), {len(extra)} extra ({', '.join(extra[:3])}); merge the adapter first"
        )

    def cast(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # meta tensors stay on meta
        return {k: v.detach().to(v.device if v.is_meta else "cpu", dtype).contiguous() for k, v in sd.items()}

    return {"model": cast(state), "vae": cast(base["vae"]), "conditioner": cast(base["conditioner"])}


def save_merged_hunyuan3d(
    policy: Hunyuan3DPolicy, folder: str | Path, options: dict[str, Any], dtype: torch.dtype | None = None
) -> Path:
    """``r3d export --merge`` writer: ``folder/hunyuan3d-dit-v2-1/`` with the source ``config.yaml`` and
    ``model.fp16.ckpt`` (default; ``model.ckpt`` for float32): the official layout and key names, which
    r3d's strict loader and Tencent's code read. Returns ``folder`` (give it as ``model_dir``)."""
    from r3d.core.io import atomic_write

    dtype = dtype or torch.float16
    names = {torch.float16: "model.fp16.ckpt", torch.float32: "model.ckpt"}
    if dtype not in names:
        raise R3DError(f"Hunyuan3D checkpoints are float16 or float32, not {dtype}")
    model_dir = options.get("model_dir")
    if model_dir is None:
        from r3d.core.weights import default_dir

        model_dir = str(default_dir("hunyuan3d-2.1"))
    cfg_path, ckpt_path = find_model_files(model_dir)
    ckpt = merged_checkpoint(policy.network, read_checkpoint(ckpt_path), dtype)
    target = Path(folder) / SUBFOLDER
    atomic_write(target / CONFIG_NAME, lambda tmp: tmp.write_bytes(cfg_path.read_bytes()))
    atomic_write(target / names[dtype], lambda tmp: torch.save(ckpt, tmp))
    return Path(folder)


declare_hooks(load_hunyuan3d_policy, save_merged=save_merged_hunyuan3d, weights_option="model_dir")
