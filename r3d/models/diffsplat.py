"""DiffSplat (PixArt-Sigma backbone) as an r3d :class:`~r3d.core.policy.DiffusionPolicy`.

DiffSplat generates V = 4 views of "splatter images" — per-pixel 3D Gaussians — in the latent space of
an image VAE (Lin et al., 2025); Nabla-R2D3 aligns it to 2D rewards on rendered views. The pieces, with
the conventions of the public DiffSplat / Nabla-R2D3 code:

- Backbone: diffusers ``PixArtTransformer2DModel`` (4 latent + 6 Plücker input channels, 8 output
  channels of which the first 4 are the prediction — PixArt's learned sigma is dropped), with
  multi-view self-attention: every ``attn1`` attends over the tokens of all V views of a sample
  ((b v) n d → b (v n) d), cross-attention stays per view. ε-prediction by default; CFG
  ε = ε_u + g·(ε_c − ε_u) with negative-prompt embeddings, in one batched pass.
- Conditions: T5 prompt embeddings (transformers, max 300 tokens) with attention masks, cached.
- Cameras: 4 input views at azimuth 0/90/180/270°, elevation 10°, distance 1.4, normalised focal
  fx = fy = 1422.222/1024 (fov = 2·atan(0.5/fx) ≈ 39.6°); Y-up orbit identical to r3d.render.cameras.
  Plücker rays (o × d, d) per latent pixel, computed at image resolution then bilinearly resized, with
  DiffSplat's default pixel grid (x = j/(W − 1), the ``bug=True`` variant it was trained with).
- Decode (GSVAE): latents / scaling_factor + shift_factor → AutoencoderKL decoder with 12 output
  channels → clamp(−1, 1) → per pixel rgb [0:3], scale [3:6], rotation [6:10], opacity [10:11],
  depth [11:12]; rgb = ·0.5 + 0.5; s = s_min·u + s_max·(1 − u) with u = scale·0.5 + 0.5 (s_min 0.0005,
  s_max 0.02); opacity = ·0.5 + 0.5; quaternions (w, x, y, z) normalised; z-depth = depth + |camera|;
  centres unprojected with the OpenCV intrinsics on the grid x = j/(W − 1) — a
  :class:`r3d.render.splat.GaussianCloud` of V·H·W Gaussians per sample.
- Sampling: DDIM with η (1.0 in Nabla-R2D3: the ancestral / SDE-DPM-Solver-1 step), 20 steps, linear
  β from 1e-4 to 0.02 over 1000 steps, ``leading`` spacing with offset 1 (t = 951, 901, …, 1; the next
  point of every step is the next visited timestep, and ᾱ = 1 after the last).

``load_diffsplat`` loads real weights (a diffusers transformer folder, the GSVAE safetensors with
``vae.`` keys, a T5 text encoder); ``load_tiny_diffsplat`` builds randomly initialised tiny modules
from local configs for CPU tests. Rendering: r3d.render.splat (gsplat on CUDA when installed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from r3d.core.cache import ConditionCache
from r3d.core.errors import R3DError
from r3d.core.policy import declare_hooks
from r3d.render.cameras import Cameras, orbit, orbit_views
from r3d.render.splat import GaussianCloud, Gaussians, render_gaussians
from r3d.render.views import Views

# LoRA targets of Nabla-R2D3's DiffSplat training (those present in the network are used).
LORA_TARGETS = [
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "proj",
    "linear",
    "linear_1",
    "linear_2",
]


@dataclass
class DiffSplatConfig:
    """Representation, cameras and sampler of a DiffSplat model (defaults: the published PAS model)."""

    num_views: int = 4
    latent_channels: int = 4
    latent_size: int = 32  # 256 px views through a ×8 VAE
    image_size: int = 256
    elevation_deg: float = 10.0
    distance: float = 1.4
    fxfy: float = 1422.222 / 1024
    scale_min: float = 0.0005
    scale_max: float = 0.02
    guidance_scale: float = 5.0
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    steps_offset: int = 1
    scaling_factor: float = 0.13025  # SDXL VAE
    shift_factor: float = 0.0
    plucker_bug: bool = True
    azimuths_deg: tuple[float, ...] = field(default=(0.0, 90.0, 180.0, 270.0))

    @property
    def fov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 / self.fxfy))


class MVAttnProcessor:
    """Scaled-dot-product self-attention over the tokens of all views of a sample (DiffSplat's
    multi-view attention): (B·V, N, C) → attention on (B, V·N, C) → back to (B·V, N, C)."""

    def __init__(self, num_views: int) -> None:
        self.num_views = num_views

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("MVAttnProcessor is for self-attention only")
        bv, n, _ = hidden_states.shape
        v = self.num_views
        b = bv // v
        q, k, val = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        heads = attn.heads
        head_dim = q.shape[-1] // heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, v * n, heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(val), dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, v * n, heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.reshape(bv, n, -1)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def install_mv_attention(transformer: nn.Module, num_views: int) -> None:
    """Make every self-attention (``attn1``) of a PixArt transformer attend across views."""
    procs = {}
    for name, proc in transformer.attn_processors.items():
        procs[name] = MVAttnProcessor(num_views) if ".attn1." in name else proc
    transformer.set_attn_processor(procs)


def input_cameras(cfg: DiffSplatConfig, size: int, dtype: torch.dtype = torch.float32) -> Cameras:
    """The model's V input cameras (batch 1) at ``size`` pixels."""
    az = torch.tensor([list(cfg.azimuths_deg)], dtype=torch.float64)
    el = torch.full_like(az, cfg.elevation_deg)
    return orbit(el.to(dtype), az.to(dtype), cfg.distance, cfg.fov_deg, size)


def _opencv(c2w: torch.Tensor) -> torch.Tensor:
    """OpenGL camera-to-world rotations (..., 3, 3) → OpenCV (y down, z forward): negate columns 1, 2."""
    return c2w * torch.tensor([1.0, -1.0, -1.0], dtype=c2w.dtype, device=c2w.device)


def plucker_rays(cfg: DiffSplatConfig, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plücker embeddings (V, 6, size, size) of the input cameras: (o × d, d), world space."""
    cams = input_cameras(cfg, size, torch.float64)
    j = torch.arange(size, dtype=torch.float64)
    if cfg.plucker_bug:
        xs = j / (size - 1)  # + 0.5 − c_x with c_x = 0.5
        ys = j / (size - 1)
    else:
        xs = (j + 0.5) / size - 0.5
        ys = (j + 0.5) / size - 0.5
    y, x = torch.meshgrid(ys / cfg.fxfy, xs / cfg.fxfy, indexing="ij")
    d_cam = torch.stack([x, y, torch.ones_like(x)], -1)  # OpenCV camera rays (H, W, 3)
    rot = _opencv(cams.c2w[0])  # (V, 3, 3)
    d = torch.einsum("vij,hwj->vhwi", rot, d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = cams.position[0][:, None, None, :].expand_as(d)
    return torch.cat([torch.linalg.cross(o, d, dim=-1), d], -1).permute(0, 3, 1, 2).to(dtype)


def splatter_to_gaussians(splatter: torch.Tensor, cfg: DiffSplatConfig) -> Gaussians:
    """Decoded splatter images (B, V, 12, H, W) in [−1, 1] → Gaussians (B, V·H·W)."""
    b, v, _, h, w = splatter.shape
    rgb, scale, rot = splatter[:, :, 0:3], splatter[:, :, 3:6], splatter[:, :, 6:10]
    opacity, depth = splatter[:, :, 10], splatter[:, :, 11]
    cams = input_cameras(cfg, w, splatter.dtype)
    z = depth + cams.position[0].norm(dim=-1).to(splatter)[None, :, None, None]  # (B, V, H, W)
    xs = torch.arange(w, dtype=splatter.dtype, device=splatter.device) / (w - 1)
    ys = torch.arange(h, dtype=splatter.dtype, device=splatter.device) / (h - 1)
    yy, xx = torch.meshgrid((ys - 0.5) / cfg.fxfy, (xs - 0.5) / cfg.fxfy, indexing="ij")
    p_cam = torch.stack([xx * z, yy * z, z], -1)  # OpenCV camera space (B, V, H, W, 3)
    rot_cv = _opencv(cams.c2w[0]).to(splatter)
    means = (
        torch.einsum("vij,bvhwj->bvhwi", rot_cv, p_cam) + cams.position[0].to(splatter)[None, :, None, None]
    )
    u = scale * 0.5 + 0.5
    scales = cfg.scale_min * u + cfg.scale_max * (1.0 - u)

    def flat(t: torch.Tensor) -> torch.Tensor:  # (B, V, C, H, W) → (B, V·H·W, C)
        return t.permute(0, 1, 3, 4, 2).reshape(b, v * h * w, t.shape[2])

    return Gaussians(
        means=means.reshape(b, v * h * w, 3),
        scales=flat(scales),
        rotations=flat(rot),
        opacities=(opacity * 0.5 + 0.5).reshape(b, v * h * w),
        colors=flat(rgb * 0.5 + 0.5),
    )


class ByteTokenizer:
    """A vocabulary-free tokenizer for tiny test models: UTF-8 bytes + 1, 0 = padding, 1 = end."""

    pad_token_id = 0

    def __init__(self, max_length: int = 32) -> None:
        self.max_length = max_length

    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens = [b + 2 for b in p.encode("utf-8")][: self.max_length - 1] + [1]
            ids[i, : len(tokens)] = torch.tensor(tokens)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


class DiffSplatPolicy:
    """DiffSplat as a DiffusionPolicy; latents (B, V, C, h, w), conditions a dict of prompt embeddings."""

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        cfg: DiffSplatConfig,
        negative_prompt: str = "",
        render_backend: str = "auto",
    ) -> None:
        self.cfg = cfg
        self.network = transformer
        self.vae = vae.requires_grad_(False).eval()
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.prediction_type = cfg.prediction_type
        self.render_backend = render_backend
        install_mv_attention(transformer, cfg.num_views)
        names = {n for n, _ in transformer.named_modules()}
        self.lora_target_modules = [
            t for t in LORA_TARGETS if any(n == t or n.endswith("." + t) for n in names)
        ]
        self._cache: ConditionCache[tuple[torch.Tensor, torch.Tensor]] = ConditionCache()
        self._negative = self._embed([negative_prompt])
        self._plucker = plucker_rays(cfg, cfg.image_size)
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, 0)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # ----------------------------------------------------------------- conditions
    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(prompts)
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        out = self.text_encoder(input_ids=ids, attention_mask=mask)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return hidden.float(), mask

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"embeds": (B, L, D), "mask": (B, L)} of the prompts (cached per prompt)."""
        found = self._cache.get(prompts, lambda missing: list(zip(*self._embed(missing), strict=True)))
        return {
            "embeds": torch.stack([emb for emb, _ in found]),
            "mask": torch.stack([mask for _, mask in found]),
        }

    def select_cond(self, cond: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[index.to(v.device)] for k, v in cond.items()}

    def likelihood_mask(self, cond: Any) -> None:
        return None

    # ----------------------------------------------------------------- sampling
    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """ε ~ N(0, I) (batch, V, C, h, w) drawn from ``generator``, placed on the model's device."""
        c = self.cfg
        shape = (batch, c.num_views, c.latent_channels, c.latent_size, c.latent_size)
        return torch.randn(shape, generator=generator, device=generator.device).to(self.device)

    def schedule(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM ``leading`` timesteps (num_steps,) and ᾱ at them followed by 1.0 (num_steps + 1,)."""
        c = self.cfg
        step = c.num_train_timesteps // num_steps
        if step < 1:
            raise R3DError(f"num_steps must be ≤ {c.num_train_timesteps}, got {num_steps}")
        timesteps = (
            (torch.arange(num_steps) * step + c.steps_offset).flip(0).clamp(max=c.num_train_timesteps - 1)
        )
        alpha_bar = torch.cat([self.alphas_cumprod[timesteps], torch.ones(1, dtype=torch.float64)])
        return timesteps.long(), alpha_bar.float()

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Guided model output (ε by default) with x's layout (B, V, C, h, w); one [uncond; cond] pass."""
        c = self.cfg
        b, v = x.shape[:2]
        h = x.shape[-1]
        plucker = F.interpolate(self._plucker.to(x), size=(h, h), mode="bilinear", align_corners=False)
        inp = torch.cat([x, plucker[None].expand(b, -1, -1, -1, -1)], 2).flatten(0, 1)  # (B·V, C + 6, h, w)
        emb = cond["embeds"].to(x).repeat_interleave(v, 0)
        mask = cond["mask"].to(x.device).repeat_interleave(v, 0)
        neg_emb = self._negative[0].to(x).expand(b * v, -1, -1)
        neg_mask = self._negative[1].to(x.device).expand(b * v, -1)
        length = max(emb.shape[1], neg_emb.shape[1])
        emb, neg_emb = (F.pad(e, (0, 0, 0, length - e.shape[1])) for e in (emb, neg_emb))
        mask, neg_mask = (F.pad(m, (0, length - m.shape[1])) for m in (mask, neg_mask))
        t = timestep.to(x.device).repeat_interleave(v, 0)
        out = self.network(
            torch.cat([inp, inp]),
            encoder_hidden_states=torch.cat([neg_emb, emb]),
            encoder_attention_mask=torch.cat([neg_mask, mask]),
            timestep=torch.cat([t, t]),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0][:, : c.latent_channels]
        uncond, conditional = out.float().chunk(2)
        guided = uncond + c.guidance_scale * (conditional - uncond)
        return guided.reshape(b, v, c.latent_channels, h, h)

    # ----------------------------------------------------------------- decoding and rendering
    def decode_splatter(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean latents (B, V, C, h, w) → splatter images (B, V, 12, H, W) in [−1, 1] (differentiable)."""
        c = self.cfg
        b, v = x0.shape[:2]
        z = x0.flatten(0, 1) / c.scaling_factor + c.shift_factor
        dtype = next(self.vae.parameters()).dtype
        out = self.vae.decode(z.to(dtype)).sample.clamp(-1.0, 1.0).to(x0.dtype)
        return out.reshape(b, v, *out.shape[1:])

    def decode_gaussians(self, x0: torch.Tensor) -> Gaussians:
        return splatter_to_gaussians(self.decode_splatter(x0), self.cfg)

    def render_latents(self, x0: torch.Tensor, cameras: Cameras) -> Views:
        """Differentiable views of clean latents (the hook used by r3d.rewards.render2d)."""
        return render_gaussians(self.decode_gaussians(x0), cameras, backend=self.render_backend)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, cond: Any = None) -> list[GaussianCloud]:
        g = self.decode_gaussians(x.float())
        return [g.cloud(i) for i in range(x.shape[0])]

    def save_preview(self, artifacts: list[GaussianCloud], labels: list[str], path: Path) -> Path:
        """A PNG of evaluation samples, 4 orbit views each (the trainer's preview hook)."""
        from r3d.render.splat import gaussian_sheet

        def cameras(batch: int) -> Cameras:
            return orbit_views(
                batch, 4, elevation_deg=15.0, fov_deg=self.cfg.fov_deg, distance=self.cfg.distance, size=64
            )

        return gaussian_sheet(artifacts[:8], labels[:8], path, cameras)


# --------------------------------------------------------------------------- loaders


def load_gsvae(path: str | Path, vae_config: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """DiffSplat's GSVAE decoder: an AutoencoderKL with 12-channel conv_in / conv_out, loaded from a
    safetensors state dict with ``vae.`` keys (``tiny_decoder.`` keys are ignored)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise R3DError(f"GSVAE weights not found at {path}")
    try:
        config = AutoencoderKL.load_config(str(vae_config), local_files_only=True)
    except OSError as exc:
        raise R3DError(f"VAE config {vae_config!r} not available locally ({exc})") from None
    config.update(in_channels=12, out_channels=12)
    vae = AutoencoderKL.from_config(config)
    state = {k.removeprefix("vae."): v for k, v in load_file(str(path)).items() if k.startswith("vae.")}
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise R3DError(f"{path} is not a DiffSplat GSVAE: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return vae.to(dtype)


def _pretrained_transformer(path: str, subfolder: str | None) -> nn.Module:
    """``PixArtTransformer2DModel.from_pretrained`` with a one-line R3DError when it is not there."""
    from diffusers import PixArtTransformer2DModel

    try:
        return PixArtTransformer2DModel.from_pretrained(path, subfolder=subfolder)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise R3DError(
            f"DiffSplat transformer not available ({path}, subfolder {subfolder}): {first}"
        ) from None


def load_diffsplat(
    transformer: str,
    gsvae: str,
    text_encoder: str = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers",
    vae_config: str = "madebyollin/sdxl-vae-fp16-fix",
    transformer_subfolder: str | None = "transformer_ema",
    device: str = "cuda",
    dtype: str = "float32",
    guidance_scale: float = 5.0,
    prediction_type: str = "epsilon",
    negative_prompt: str = "",
    render_backend: str = "auto",
) -> DiffSplatPolicy:
    """The published DiffSplat-PixArt-Sigma model from local files (see the module docstring)."""
    from diffusers import PixArtTransformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    torch_dtype = getattr(torch, dtype)
    try:
        net = PixArtTransformer2DModel.from_pretrained(transformer, subfolder=transformer_subfolder)
        encoder = T5EncoderModel.from_pretrained(
            text_encoder, subfolder="text_encoder", torch_dtype=torch_dtype
        )
        tok = AutoTokenizer.from_pretrained(text_encoder, subfolder="tokenizer")
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise R3DError(f"DiffSplat weights not available ({transformer}, {text_encoder}): {first}") from None
    cfg = DiffSplatConfig(guidance_scale=guidance_scale, prediction_type=prediction_type)
    if net.config.in_channels != cfg.latent_channels + 6:
        raise R3DError(f"{transformer}: expected {cfg.latent_channels + 6} input channels (latent + Plücker)")

    def tokenize(prompts: list[str]) -> dict[str, torch.Tensor]:
        return tok(prompts, padding="max_length", max_length=300, truncation=True, return_tensors="pt")

    policy = DiffSplatPolicy(
        net.to(device),
        load_gsvae(gsvae, vae_config, torch_dtype).to(device),
        encoder.to(device),
        tokenize,
        cfg,
        negative_prompt,
        render_backend,
    )
    return policy


def load_tiny_diffsplat(
    seed: int = 0,
    latent_size: int = 8,
    num_views: int = 4,
    guidance_scale: float = 2.0,
    scale_min: float = 0.01,
    scale_max: float = 0.12,
    transformer: str | None = None,
    transformer_subfolder: str | None = "transformer_ema",
) -> DiffSplatPolicy:
    """A randomly initialised tiny DiffSplat (all real module classes, tiny configs) for CPU tests.

    PixArt transformer: 1 layer, 2 heads × 8, patch 2; GSVAE: a 2-level AutoencoderKL (×2), so
    splatter images are 2·latent_size pixels; T5: 1 layer, d_model 16; byte tokenizer. ``transformer``:
    a diffusers folder (e.g. ``r3d export --merge`` output) whose transformer replaces the random one
    (the VAE and T5 stay those of ``seed``).
    """
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = DiffSplatConfig(
        num_views=num_views,
        latent_size=latent_size,
        image_size=2 * latent_size,
        guidance_scale=guidance_scale,
        scaling_factor=1.0,
        scale_min=scale_min,
        scale_max=scale_max,
    )
    net = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=cfg.latent_channels + 6,
        out_channels=2 * cfg.latent_channels,
        num_layers=1,
        cross_attention_dim=16,
        caption_channels=16,
        sample_size=latent_size,
        patch_size=2,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )
    vae = AutoencoderKL(
        in_channels=12,
        out_channels=12,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=4,
        sample_size=2 * latent_size,
        scaling_factor=1.0,
    )
    t5 = T5EncoderModel(
        T5Config(vocab_size=258, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, dropout_rate=0.0)
    )
    if transformer is not None:
        net = _pretrained_transformer(transformer, transformer_subfolder)
    return DiffSplatPolicy(net, vae, t5, ByteTokenizer(), cfg)


def save_merged_diffsplat(
    policy: DiffSplatPolicy, folder: str | Path, options: dict[str, Any], dtype: torch.dtype | None = None
) -> Path:
    """``r3d export --merge`` writer: the merged PixArt transformer via diffusers ``save_pretrained`` in
    ``folder/transformer_ema/`` (DiffSplat's published subfolder). Returns ``folder``: give it as
    ``transformer`` (diffusers' ``from_pretrained(folder, subfolder="transformer_ema")`` reads it)."""
    import copy

    net = policy.network if dtype is None else copy.deepcopy(policy.network).to(dtype)
    net.save_pretrained(Path(folder) / "transformer_ema", safe_serialization=True)
    return Path(folder)


for _loader in (load_diffsplat, load_tiny_diffsplat):
    declare_hooks(_loader, save_merged=save_merged_diffsplat, weights_option="transformer")
