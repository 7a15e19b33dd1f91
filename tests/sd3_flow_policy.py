"""Worked example of docs/adapters.md: a diffusers SD3-style flow transformer as an r3d policy.

``SD3Transformer2DModel`` + ``FlowMatchEulerDiscreteScheduler`` + ``AutoencoderKL`` at the sizes of
diffusers' own SD3 pipeline tests, randomly initialised and built locally (no download). Text
conditioning is a stand-in: each prompt gets fixed random embeddings ((L, 32) tokens and a (64,)
pooled vector) drawn from a generator seeded by the prompt, so no text encoder is needed.

Conventions: diffusers' flow-matching models already use r3d's σ convention (σ = 1 noise,
x_σ = (1 − σ)·x₀ + σ·ε, the transformer predicts v = ε − x₀), so ``velocity`` returns the guided
transformer output unchanged. The one conversion is the timestep: the transformer embeds
t = σ·num_train_timesteps (×1000), the scheduler's ``timesteps``; that scaling lives here.

Recipe: ``model: {name: "sd3_flow_policy:make", options: {guidance_scale: 4.5}}`` with this folder
on ``sys.path`` (pytest puts ``tests/`` there).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from PIL import Image

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write

# diffusers tests/pipelines/stable_diffusion_3: StableDiffusion3PipelineFastTests.get_dummy_components
TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 1,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "caption_projection_dim": 32,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 64,
    "out_channels": 4,
}
VAE_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (4,),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 1,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "shift_factor": 0.0609,
    "scaling_factor": 1.5035,
}
# The attention projections of SD3's joint blocks (those of diffusers' SD3 LoRA training script).
LORA_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
]


class SD3FlowPolicy:
    """An SD3-style diffusers model as an :class:`r3d.core.policy.FlowPolicy`.

    Latents (B, C, h, w) fp32 (C = 4 for the tiny config; the tiny VAE does not downsample, so images
    are h × w pixels); conditions ``{"embeds": (B, L, D), "pooled": (B, P)}``; ``decode`` returns PIL
    RGB images, as the pipeline does by default.
    """

    def __init__(
        self,
        transformer: SD3Transformer2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        guidance_scale: float = 4.5,
        latent_size: int = 8,
        text_tokens: int = 8,
        negative_prompt: str = "",
        seed: int = 0,
    ) -> None:
        self.network = transformer.eval()
        self.scheduler = scheduler
        self.vae = vae.eval().requires_grad_(False)
        self.guidance_scale = float(guidance_scale)
        self.latent_size = int(latent_size)
        self.text_tokens = int(text_tokens)
        self.seed = int(seed)
        names = {n for n, _ in transformer.named_modules()}
        self.lora_target_modules = [t for t in LORA_TARGETS if any(n.endswith(t) for n in names)]
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._negative = self._embed(negative_prompt)

    # ----------------------------------------------------------------- conditions
    def _embed(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Stand-in text encoder: fixed random ((L, D) tokens, (P,) pooled) per (seed, prompt)."""
        if prompt not in self._cache:
            digest = hashlib.sha256(f"{self.seed}\0{prompt}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            cfg = self.network.config
            tokens = torch.randn(self.text_tokens, cfg.joint_attention_dim, generator=gen)
            pooled = torch.randn(cfg.pooled_projection_dim, generator=gen)
            self._cache[prompt] = (tokens, pooled)
        return self._cache[prompt]

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """``{"embeds": (B, L, D), "pooled": (B, P)}`` fp32, cached per prompt."""
        for p in prompts:
            if not p.strip():
                raise R3DError("sd3_flow_policy: a prompt is empty")
        pairs = [self._embed(p) for p in prompts]
        return {"embeds": torch.stack([e for e, _ in pairs]), "pooled": torch.stack([q for _, q in pairs])}

    def negative_cond(self, batch: int) -> dict[str, torch.Tensor]:
        """The negative-prompt conditions repeated ``batch`` times (the pipeline's ``negative_*`` embeds)."""
        tokens, pooled = self._negative
        return {"embeds": tokens.expand(batch, -1, -1), "pooled": pooled.expand(batch, -1)}

    def select_cond(self, cond: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in cond.items()}

    # ----------------------------------------------------------------- sampling
    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """ε ~ N(0, I), (batch, C, h, w) fp32."""
        c = self.network.config.in_channels
        return torch.randn(batch, c, self.latent_size, self.latent_size, generator=generator)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The scheduler's own σ schedule (its shift included), (num_steps + 1,) from 1 to 0."""
        if num_steps < 1:
            raise R3DError(f"num_steps must be ≥ 1, got {num_steps}")
        self.scheduler.set_timesteps(num_steps)
        return self.scheduler.sigmas.float().cpu().clone()

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """v = ε − x₀ at σ (B,): the transformer's output at t = σ·1000, CFG u + g·(c − u) in one
        batched [negative; prompt] pass, as ``StableDiffusion3Pipeline`` runs it."""
        b = x.shape[0]
        t = sigma.to(torch.float32).expand(b) * self.scheduler.config.num_train_timesteps
        embeds, pooled = cond["embeds"], cond["pooled"]
        if self.guidance_scale > 1.0:
            neg = self.negative_cond(b)
            x, t = torch.cat([x, x]), torch.cat([t, t])
            embeds = torch.cat([neg["embeds"], embeds])
            pooled = torch.cat([neg["pooled"], pooled])
        out = self.network(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        if self.guidance_scale > 1.0:
            uncond, text = out.chunk(2)
            out = uncond + self.guidance_scale * (text - uncond)
        return out

    # ----------------------------------------------------------------- outputs
    @torch.no_grad()
    def decode(self, x: torch.Tensor, cond: Any = None) -> list[Image.Image]:
        """Final latents (B, C, h, w) → RGB images of h × w pixels, as the pipeline's default
        ``output_type="pil"``: VAE decode of x / scaling + shift, [−1, 1] → [0, 255] uint8."""
        cfg = self.vae.config
        images = self.vae.decode(x / cfg.scaling_factor + cfg.shift_factor, return_dict=False)[0]
        pixels = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return [Image.fromarray(p) for p in (pixels * 255).round().astype(np.uint8)]

    def save_preview(self, artifacts: list[Image.Image], labels: list[str], path: Path) -> Path:
        """The trainer's evaluation preview: one PNG row of the images, ×8 nearest (labels not drawn)."""
        w, h = artifacts[0].size
        row = Image.new("RGB", (w * len(artifacts), h))
        for i, image in enumerate(artifacts):
            row.paste(image, (i * w, 0))
        row = row.resize((row.width * 8, row.height * 8), Image.NEAREST)
        return atomic_write(path, lambda tmp: row.save(tmp, format="PNG"))


def make(
    guidance_scale: float = 4.5,
    latent_size: int = 8,
    shift: float = 1.0,
    text_tokens: int = 8,
    seed: int = 0,
) -> SD3FlowPolicy:
    """Recipe factory: the tiny SD3 modules from ``seed`` (same seed, same weights), fp32 on the CPU.

    ``shift``: the scheduler's σ shift (3.0 for SD3-medium); ``latent_size``: h = w of the latents.
    """
    with torch.random.fork_rng():  # seeded weights without touching the caller's global RNG
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
        torch.manual_seed(seed)
        vae = AutoencoderKL(**VAE_CONFIG)
    grid = transformer.config.pos_embed_max_size
    if not 1 <= latent_size <= grid:
        raise R3DError(
            f"latent_size must be within 1..{grid} (the position-embedding grid), got {latent_size}"
        )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    return SD3FlowPolicy(transformer, scheduler, vae, guidance_scale, latent_size, text_tokens, seed=seed)
