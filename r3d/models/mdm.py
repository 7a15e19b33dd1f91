"""MDM (Tevet et al., Motion Diffusion Model) — weight-compatible module and r3d policy adapter.

The network is MDM's ``trans_enc`` text-to-motion denoiser: x (B, 263, 1, T) → per-frame linear
``input_process.poseEmbedding``; a conditioning token = ``embed_timestep`` (sinusoidal table → Linear →
SiLU → Linear) + ``embed_text`` (Linear from the 512-d CLIP ViT-B/32 text embedding, zeroed for the
unconditional branch) prepended to the frames; sinusoidal positions; ``seqTransEncoder`` (post-norm
GELU transformer, sequence-first); ``output_process.poseFinal`` back to 263 features. It predicts x₀
(``predict_xstart``), with a cosine (or linear) β schedule over ``diffusion_steps`` (1000 for the
original models, 50 for ``humanml_enc_512_50steps``). Parameter names follow the official checkpoints
(``model000xxxxx.pt`` + ``args.json``); CLIP weights (``clip_model.*``) are not needed: the model takes
precomputed text embeddings.

The adapter :class:`MDMPolicy` implements :class:`r3d.core.policy.DiffusionPolicy`: DDIM transitions
on the respaced schedule, classifier-free guidance out = u + s·(c − u) inside ``predict`` (one forward
of the conditional and unconditional halves), padding frames masked from the likelihood and, with
``mask_frames``, from attention. ``load_tiny_motion`` gives r3d's small embedded MDM trained on the
synthetic motions (``python -m r3d.motion.train_mdm``), conditioned on hashed sentence features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from r3d.core.cache import ConditionCache
from r3d.core.errors import R3DError
from r3d.core.io import atomic_write
from r3d.core.policy import declare_hooks
from r3d.motion.artifacts import Motion
from r3d.motion.representation import FEATURE_DIM

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_MDM_PATH = ASSETS / "motion_mdm_tiny.safetensors"

MDM_HUMANML_CONFIG: dict[str, Any] = {
    "njoints": FEATURE_DIM,
    "nfeats": 1,
    "latent_dim": 512,
    "ff_size": 1024,
    "num_layers": 8,
    "num_heads": 4,
    "dropout": 0.1,
    "activation": "gelu",
    "clip_dim": 512,
    "cond_mask_prob": 0.1,
    "mask_frames": False,
    "pos_embed_max_len": 5000,
    "diffusion_steps": 1000,
    "noise_schedule": "cosine",
    "max_frames": 196,
}


# ----------------------------------------------------------------------------- network
class PositionalEncoding(nn.Module):
    """Sinusoidal table ``pe`` (max_len, 1, d) added to sequence-first inputs, then dropout."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[: x.shape[0]])


class TimestepEmbedder(nn.Module):
    """Integer timesteps (B,) → (1, B, d): the sinusoidal row of the shared table through an MLP."""

    def __init__(self, latent_dim: int, sequence_pos_encoder: PositionalEncoding) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.sequence_pos_encoder = sequence_pos_encoder
        self.time_embed = nn.Sequential(
            nn.Linear(latent_dim, latent_dim), nn.SiLU(), nn.Linear(latent_dim, latent_dim)
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.time_embed(self.sequence_pos_encoder.pe[timesteps]).permute(1, 0, 2)


class InputProcess(nn.Module):
    """(B, njoints, nfeats, T) → (T, B, d)."""

    def __init__(self, input_feats: int, latent_dim: int) -> None:
        super().__init__()
        self.poseEmbedding = nn.Linear(input_feats, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bs, nj, nf, nframes = x.shape
        return self.poseEmbedding(x.permute(3, 0, 1, 2).reshape(nframes, bs, nj * nf))


class OutputProcess(nn.Module):
    """(T, B, d) → (B, njoints, nfeats, T)."""

    def __init__(self, input_feats: int, latent_dim: int, njoints: int, nfeats: int) -> None:
        super().__init__()
        self.njoints, self.nfeats = njoints, nfeats
        self.poseFinal = nn.Linear(latent_dim, input_feats)

    def forward(self, output: torch.Tensor) -> torch.Tensor:
        nframes, bs, _ = output.shape
        return self.poseFinal(output).reshape(nframes, bs, self.njoints, self.nfeats).permute(1, 2, 3, 0)


class MDM(nn.Module):
    """MDM's text-conditioned ``trans_enc`` denoiser (x₀ prediction), official parameter names."""

    def __init__(
        self,
        njoints: int = FEATURE_DIM,
        nfeats: int = 1,
        latent_dim: int = 512,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_heads: int = 4,
        dropout: float = 0.1,
        activation: str = "gelu",
        clip_dim: int = 512,
        cond_mask_prob: float = 0.1,
        mask_frames: bool = False,
        pos_embed_max_len: int = 5000,
    ) -> None:
        super().__init__()
        self.njoints, self.nfeats, self.latent_dim = njoints, nfeats, latent_dim
        self.clip_dim = clip_dim
        self.cond_mask_prob = cond_mask_prob
        self.mask_frames = mask_frames
        self.input_process = InputProcess(njoints * nfeats, latent_dim)
        self.sequence_pos_encoder = PositionalEncoding(latent_dim, dropout, max_len=pos_embed_max_len)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_size, dropout, activation)
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.embed_timestep = TimestepEmbedder(latent_dim, self.sequence_pos_encoder)
        self.embed_text = nn.Linear(clip_dim, latent_dim)
        self.output_process = OutputProcess(njoints * nfeats, latent_dim, njoints, nfeats)

    def mask_cond(self, cond: torch.Tensor, uncond: bool | torch.Tensor = False) -> torch.Tensor:
        """Zero the text embedding (1, B, clip_dim) for unconditional samples; in training mode also
        drop it with probability ``cond_mask_prob`` (the classifier-free guidance training)."""
        if isinstance(uncond, bool):
            if uncond:
                return torch.zeros_like(cond)
            keep = torch.ones(cond.shape[1], device=cond.device, dtype=cond.dtype)
        else:
            keep = (~uncond.to(device=cond.device, dtype=torch.bool)).to(cond.dtype)
        if self.training and self.cond_mask_prob > 0:
            keep = keep * (1 - torch.bernoulli(torch.full_like(keep, self.cond_mask_prob)))
        return cond * keep.view(1, -1, 1)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        text_embed: torch.Tensor,
        uncond: bool | torch.Tensor = False,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, njoints, nfeats, T), timesteps (B,) int, text_embed (B, clip_dim); ``uncond`` a bool or
        (B,) bools; ``mask`` (B, T) True on valid frames (used for attention when ``mask_frames``).
        Returns the x₀ prediction (B, njoints, nfeats, T)."""
        bs = x.shape[0]
        if text_embed.shape != (bs, self.clip_dim):
            raise ValueError(f"text_embed must be ({bs}, {self.clip_dim}), got {tuple(text_embed.shape)}")
        emb = self.embed_timestep(timesteps) + self.embed_text(
            self.mask_cond(text_embed.unsqueeze(0), uncond)
        )
        h = self.input_process(x)
        padding = None
        if self.mask_frames and mask is not None:
            valid = mask.to(device=x.device, dtype=torch.bool)
            padding = torch.cat([torch.zeros(bs, 1, dtype=torch.bool, device=x.device), ~valid], dim=1)
        xseq = self.sequence_pos_encoder(torch.cat([emb, h], dim=0))
        out = self.seqTransEncoder(xseq, src_key_padding_mask=padding)[1:]
        return self.output_process(out)


# ----------------------------------------------------------------------------- diffusion schedule
def beta_schedule(name: str, steps: int) -> np.ndarray:
    """MDM's (improved-diffusion's) β: ``cosine`` ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β ≤ 0.999;
    ``linear`` from 1e-4 to 0.02 scaled by 1000/steps. float64 (steps,)."""
    if name == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if name == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array(
            [min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)], dtype=np.float64
        )
    raise R3DError(f"unknown noise_schedule '{name}'; use cosine or linear")


def respaced_timesteps(steps: int, num_steps: int) -> np.ndarray:
    """improved-diffusion's ``space_timesteps(steps, [num_steps])``: evenly spaced from 0 to steps−1."""
    if not 1 <= num_steps <= steps:
        raise R3DError(f"cannot sample with {num_steps} steps from a {steps}-step diffusion model")
    if num_steps == 1:
        return np.array([0])
    stride = (steps - 1) / (num_steps - 1)
    return np.array(sorted({round(i * stride) for i in range(num_steps)}), dtype=np.int64)


# ----------------------------------------------------------------------------- adapter
@dataclass
class MotionCond:
    """Conditions of a batch: text embeddings (B, clip_dim), motion lengths (B,), the prompts."""

    text: torch.Tensor
    lengths: torch.Tensor
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


class MDMPolicy:
    """An MDM-style network as an r3d ``DiffusionPolicy`` over normalised features (B, 263, 1, T).

    text_encoder: captions → (B, clip_dim) embeddings (CLIP for the official model, hashed sentence
    features for the tiny one). mean/std (263,): the generator's normalisation (HumanML3D's
    ``Mean.npy``/``Std.npy``), used by ``decode`` to return de-normalised features.
    length_fn: prompt → motion length in frames (default: ``default_length``; ``lengths`` dict first).
    The network is kept in eval mode (no dropout, no random condition drop) for rollout and training.
    """

    prediction_type = "sample"

    def __init__(
        self,
        network: MDM,
        text_encoder: Callable[[Sequence[str]], torch.Tensor],
        mean: torch.Tensor,
        std: torch.Tensor,
        diffusion_steps: int = 1000,
        noise_schedule: str = "cosine",
        max_frames: int = 196,
        guidance_scale: float = 2.5,
        default_length: int = 120,
        lengths: dict[str, int] | None = None,
        device: str | torch.device = "cpu",
        lora_target_modules: Sequence[str] = ("linear1", "linear2", "embed_text"),
    ) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.text_encoder = text_encoder
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        self.diffusion_steps = int(diffusion_steps)
        self.alphas_cumprod = np.cumprod(1.0 - beta_schedule(noise_schedule, self.diffusion_steps))
        self.max_frames = int(max_frames)
        self.guidance_scale = float(guidance_scale)
        self.default_length = int(default_length)
        self.lengths = dict(lengths or {})
        self.lora_target_modules = list(lora_target_modules)
        self._cache: ConditionCache[torch.Tensor] = ConditionCache()
        self._last_cond: MotionCond | None = None
        if not 1 <= self.default_length <= self.max_frames:
            raise R3DError(f"default_length {self.default_length} must be within 1..{self.max_frames} frames")

    # -- conditions
    def length_for(self, prompt: str) -> int:
        length = int(self.lengths.get(prompt, self.default_length))
        if not 1 <= length <= self.max_frames:
            raise R3DError(f"motion length {length} for '{prompt}' is outside 1..{self.max_frames} frames")
        return length

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            emb = torch.as_tensor(self.text_encoder(prompts), dtype=torch.float32)
        if emb.shape != (len(prompts), self.network.clip_dim):
            raise R3DError(
                f"text encoder returned {tuple(emb.shape)}, expected ({len(prompts)}, {self.network.clip_dim})"
            )
        return emb

    def encode_prompts(self, prompts: list[str], lengths: Sequence[int] | None = None) -> MotionCond:
        """Text embeddings (cached per prompt) and lengths (given, or ``length_for`` each prompt)."""
        embeddings = self._cache.get(prompts, self._embed)
        lens = [self.length_for(p) for p in prompts] if lengths is None else [int(n) for n in lengths]
        if any(not 1 <= n <= self.max_frames for n in lens):
            raise R3DError(f"motion lengths must be within 1..{self.max_frames} frames, got {lens}")
        text = torch.stack(embeddings) if prompts else torch.zeros(0, self.network.clip_dim)
        cond = MotionCond(text, torch.tensor(lens, dtype=torch.int64), list(prompts))
        self._last_cond = cond
        return cond

    def select_cond(self, cond: MotionCond, index: torch.Tensor) -> MotionCond:
        idx = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        return MotionCond(cond.text[idx], cond.lengths[idx], [cond.prompts[int(i)] for i in idx])

    def frame_mask(self, cond: MotionCond) -> torch.Tensor:
        """(B, T) True on the frames inside each motion's length."""
        return torch.arange(self.max_frames)[None, :] < cond.lengths[:, None]

    def likelihood_mask(self, cond: MotionCond) -> torch.Tensor:
        """(B, 1, 1, T) float: 1 on valid frames, 0 on padding (broadcasts against x)."""
        return self.frame_mask(cond).float()[:, None, None, :]

    # -- sampling
    def initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(
            (batch, self.network.njoints, self.network.nfeats, self.max_frames), generator=generator
        )

    def schedule(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Respaced timesteps (decreasing, int64) and ᾱ at each, followed by 1.0: MDM's own final ᾱ
        (guided-diffusion sets alphas_cumprod_prev[0] = 1, so its last step lands on clean data)."""
        ts = respaced_timesteps(self.diffusion_steps, num_steps)[::-1].copy()
        ab = np.concatenate([self.alphas_cumprod[ts], [1.0]])
        return torch.from_numpy(ts), torch.from_numpy(ab).float()

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, cond: MotionCond) -> torch.Tensor:
        """x₀ prediction with classifier-free guidance u + s·(c − u) (one batched forward of 2B)."""
        x = x.to(
            self.device
        ).contiguous()  # the same memory layout in rollout and training: bitwise-equal outputs
        t = torch.as_tensor(timestep, dtype=torch.int64, device=self.device).expand(x.shape[0])
        text = cond.text.to(self.device)
        mask = self.frame_mask(cond).to(self.device)
        if self.guidance_scale == 1.0:
            return self.network(x, t, text, False, mask).contiguous()
        b = x.shape[0]
        uncond = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(
            self.device
        )
        out = self.network(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, text]), uncond, torch.cat([mask, mask])
        )
        c, u = out[:b], out[b:]
        # contiguous: the kernel's sample, mean and log-prob reductions then have the same memory layout
        # (hence the same summation order) as the stored latents the trainer re-evaluates: ratio exactly 1.
        return (u + self.guidance_scale * (c - u)).contiguous()

    # -- outputs
    def decode(self, x: torch.Tensor, cond: MotionCond | None = None) -> list[Motion]:
        """Final x (B, 263, 1, T) → de-normalised :class:`Motion` cropped to each length.

        Lengths come from ``cond``; without it, from the last ``encode_prompts`` call when its batch
        size matches (the trainer encodes all prompts of a rollout, then decodes them), else T.
        """
        if cond is None and self._last_cond is not None and len(self._last_cond) == x.shape[0]:
            cond = self._last_cond
        lengths = cond.lengths.tolist() if cond is not None else [x.shape[-1]] * x.shape[0]
        feats = x.detach().float().cpu()[:, :, 0, :].permute(0, 2, 1) * self.std + self.mean
        return [Motion(f[:n].numpy()) for f, n in zip(feats, lengths, strict=True)]

    def reward_features(self, x: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward-gradient path's decode: x (B, 263, 1, T) → de-normalised features (B, L, 263), kept
        differentiable, and lengths (B,) per ``length_for``; L = the longest length, as ``batch_motions``
        pads ``decode``'s motions (evaluators ignore frames ≥ length, but T2M's convolutions see L)."""
        lengths = torch.tensor([self.length_for(p) for p in prompts], dtype=torch.int64)
        longest = int(lengths.max()) if len(prompts) else 1
        feats = x[:, :, 0, :longest].permute(0, 2, 1) * self.std.to(x) + self.mean.to(x)
        return feats, lengths

    def to_model_space(self, features: torch.Tensor) -> torch.Tensor:
        """De-normalised (B, T, 263) → normalised model layout (B, 263, 1, T)."""
        return ((features - self.mean) / self.std).permute(0, 2, 1).unsqueeze(2)

    def save_preview(self, artifacts: list[Motion], labels: list[str], path: Path) -> Path:
        """A PNG strip of evaluation samples (the trainer's preview hook)."""
        from r3d.motion.render import render_strip

        return render_strip([m.joints() for m in artifacts[:8]], path, labels[:8])


# ----------------------------------------------------------------------------- loading
def _read_checkpoint(path: Path, use_avg: bool) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise R3DError(f"MDM checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise R3DError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from None
    if use_avg and "model_avg" in state:
        return state["model_avg"]
    return state.get("model", state)


def mdm_config_from_args(args: dict[str, Any]) -> dict[str, Any]:
    """Map MDM's ``args.json`` to :class:`MDM` / adapter options; rejects architectures r3d lacks."""
    if args.get("arch", "trans_enc") != "trans_enc":
        raise R3DError(f"MDM arch '{args.get('arch')}' is not supported; r3d implements trans_enc")
    if args.get("text_encoder_type", "clip") != "clip" or args.get("emb_policy", "add") != "add":
        raise R3DError("only CLIP-conditioned MDM with emb_policy 'add' is supported")
    if args.get("dataset", "humanml") not in ("humanml", "kit"):
        raise R3DError(f"MDM dataset '{args.get('dataset')}' is not a text-to-motion data set")
    if args.get("pred_len", 0) or args.get("context_len", 0) or args.get("multi_target_cond", False):
        raise R3DError("prefix-completion / target-conditioned MDM variants are not supported")
    mapping = {
        "latent_dim": "latent_dim",
        "layers": "num_layers",
        "cond_mask_prob": "cond_mask_prob",
        "mask_frames": "mask_frames",
        "pos_embed_max_len": "pos_embed_max_len",
        "diffusion_steps": "diffusion_steps",
        "noise_schedule": "noise_schedule",
    }
    cfg = {dst: args[src] for src, dst in mapping.items() if src in args}
    if args.get("dataset") == "kit":
        cfg["njoints"] = 251
    return cfg


_NET_KEYS = (
    "njoints",
    "nfeats",
    "latent_dim",
    "ff_size",
    "num_layers",
    "num_heads",
    "dropout",
    "activation",
    "clip_dim",
    "cond_mask_prob",
    "mask_frames",
    "pos_embed_max_len",
)


def load_mdm(path: str | Path, use_avg: bool = False, **kwargs: Any) -> MDM:
    """Load an official MDM checkpoint (state dict, or ``{"model"/"model_avg": ...}``) into :class:`MDM`.

    Sizes come from HumanML3D's defaults, then ``args.json`` beside the checkpoint, then ``kwargs``.
    ``clip_model.*`` entries are ignored (text embeddings are inputs); the fixed sinusoidal tables
    (``*.pe``) are recomputed; every other parameter must match exactly.
    """
    path = Path(path)
    cfg = dict(MDM_HUMANML_CONFIG)
    args_file = path.with_name("args.json")
    if args_file.is_file():
        cfg.update(mdm_config_from_args(json.loads(args_file.read_text())))
    cfg.update(kwargs)
    model = MDM(**{k: cfg[k] for k in _NET_KEYS})
    state = {k: v for k, v in _read_checkpoint(path, use_avg).items() if not k.startswith("clip_model.")}
    state = {
        k: v
        for k, v in state.items()
        if k not in ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe")
    }
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise R3DError(f"{path}: not an MDM trans_enc state dict of this size ({detail})") from None
    missing = [k for k in missing if not k.endswith("sequence_pos_encoder.pe")]
    if missing or unexpected:
        raise R3DError(
            f"{path}: not an MDM trans_enc state dict of this size "
            f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    model.config = cfg
    return model.eval()


def save_tiny_mdm(
    model: MDM, path: str | Path, mean: np.ndarray, std: np.ndarray, meta: dict[str, Any]
) -> Path:
    """Write the tiny MDM: weights (fp32, without the fixed ``pe`` tables), ``mean``/``std``, JSON config."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith(".pe")}
    state["mean"] = torch.as_tensor(mean, dtype=torch.float32)
    state["std"] = torch.as_tensor(std, dtype=torch.float32)
    return atomic_write(
        Path(path), lambda tmp: save_file(state, str(tmp), metadata={"r3d": json.dumps(meta)})
    )


def hashed_text_encoder(dim: int, salt: str = "mdm") -> Callable[[Sequence[str]], torch.Tensor]:
    from r3d.motion.text import sentence_features

    def encode(captions: Sequence[str]) -> torch.Tensor:
        return sentence_features(captions, dim, salt)

    return encode


def load_tiny_motion(
    path: str | Path | None = None,
    guidance_scale: float | None = None,
    default_length: int | None = None,
    lengths: dict[str, int] | None = None,
    device: str = "cpu",
    lora_target_modules: Sequence[str] | None = None,
) -> MDMPolicy:
    """r3d's embedded text-to-motion policy (registry name ``tiny_motion``): a small MDM trained on the
    synthetic motions, conditioned on hashed sentence features. ``lengths`` maps prompts to frames."""
    from safetensors import safe_open

    path = Path(path) if path is not None else TINY_MDM_PATH
    if not path.is_file():
        raise R3DError(f"{path} is missing; train it with `python -m r3d.motion.train_mdm`")
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("r3d", "{}"))
    if "config" not in meta:
        raise R3DError(f"{path} is not an r3d tiny MDM (no config metadata)")
    cfg = meta["config"]
    state = load_file(str(path))
    mean, std = state.pop("mean"), state.pop("std")
    model = MDM(**{k: cfg[k] for k in _NET_KEYS if k in cfg})
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:
        missing, unexpected = [], ["<shape mismatch>"]
    if unexpected or [k for k in missing if not k.endswith(".pe")]:
        raise R3DError(f"{path}: weights do not match the recorded config")
    text = meta.get("text_features", {"dim": cfg["clip_dim"], "salt": "mdm"})
    return MDMPolicy(
        model,
        hashed_text_encoder(int(text["dim"]), text["salt"]),
        mean,
        std,
        diffusion_steps=cfg["diffusion_steps"],
        noise_schedule=cfg["noise_schedule"],
        max_frames=cfg["max_frames"],
        guidance_scale=meta.get("guidance_scale", 2.5) if guidance_scale is None else guidance_scale,
        default_length=meta.get("default_length", 80) if default_length is None else default_length,
        lengths=lengths,
        device=device,
        lora_target_modules=lora_target_modules or ("linear1", "linear2", "embed_text"),
    )


def clip_text_encoder(model_dir: str | Path, device: str = "cpu") -> Callable[[Sequence[str]], torch.Tensor]:
    """MDM's text conditioning from a local ``openai/clip-vit-base-patch32`` folder (transformers):
    the projected end-of-text feature (512-d) of the caption truncated to 20 words (22 tokens), as
    MDM does for HumanML3D (causal attention: MDM's zero padding after the end token does not change it)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    if not Path(model_dir).is_dir():
        raise R3DError(f"CLIP folder not found: {model_dir}")
    tokenizer = CLIPTokenizer.from_pretrained(model_dir)
    model = CLIPTextModelWithProjection.from_pretrained(model_dir).eval().to(device)

    @torch.no_grad()
    def encode(captions: Sequence[str]) -> torch.Tensor:
        enc = tokenizer(
            list(captions), padding="max_length", max_length=22, truncation=True, return_tensors="pt"
        )
        return model(**enc.to(device)).text_embeds.float().cpu()

    return encode


def load_mdm_policy(
    path: str | Path,
    mean: Any,
    std: Any,
    text_encoder: Callable[[Sequence[str]], torch.Tensor] | str | Path,
    guidance_scale: float = 2.5,
    default_length: int = 120,
    lengths: dict[str, int] | None = None,
    device: str = "cpu",
    use_avg: bool = False,
) -> MDMPolicy:
    """The official MDM as a policy: checkpoint + HumanML3D ``Mean.npy``/``Std.npy`` + a text encoder
    (a callable, or a local CLIP folder for :func:`clip_text_encoder`)."""
    model = load_mdm(path, use_avg=use_avg)
    cfg = model.config

    def stats(v: Any) -> torch.Tensor:
        if isinstance(v, str | Path):
            if not Path(v).is_file():
                raise R3DError(f"normalisation file not found: {v}")
            v = np.load(v, allow_pickle=False)
        t = torch.as_tensor(np.asarray(v), dtype=torch.float32).reshape(-1)
        if t.numel() != cfg["njoints"]:
            raise R3DError(f"normalisation statistics have {t.numel()} entries, expected {cfg['njoints']}")
        return t

    if isinstance(text_encoder, str | Path):
        text_encoder = clip_text_encoder(text_encoder, device)
    return MDMPolicy(
        model,
        text_encoder,
        stats(mean),
        stats(std),
        cfg["diffusion_steps"],
        cfg["noise_schedule"],
        cfg["max_frames"],
        guidance_scale,
        default_length,
        lengths,
        device,
    )


# ----------------------------------------------------------------------------- r3d export --merge
def _merged_state(network: MDM, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The network's state dict (official names, adapter already merged) on the CPU in ``dtype``."""
    return {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in network.state_dict().items()}


def save_merged_tiny_motion(
    policy: MDMPolicy, folder: str | Path, options: dict[str, Any], dtype: torch.dtype | None = None
) -> Path:
    """``r3d export --merge`` writer of ``tiny_motion``: ``folder/motion_mdm_tiny.safetensors`` in the
    shipped fp32 layout (:func:`save_tiny_mdm`, with the source file's metadata). Load it with ``path=``."""
    from safetensors import safe_open

    if dtype not in (None, torch.float32):
        raise R3DError(f"the tiny MDM is stored in float32, not {dtype}")
    source = Path(options.get("path") or TINY_MDM_PATH)
    with safe_open(str(source), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("r3d", "{}"))
    path = Path(folder) / "motion_mdm_tiny.safetensors"
    return save_tiny_mdm(policy.network.cpu(), path, policy.mean.numpy(), policy.std.numpy(), meta)


def save_merged_mdm(
    policy: MDMPolicy, folder: str | Path, options: dict[str, Any], dtype: torch.dtype | None = None
) -> Path:
    """``r3d export --merge`` writer of the official MDM: ``folder/<source name>.pt`` (e.g.
    ``model000475000.pt``), a plain state dict with the official key names (``pe`` tables included,
    no ``clip_model.*``, as MDM's ``load_model_wo_clip`` expects), and the source ``args.json`` beside
    it. Load it with ``path=`` (r3d) or MDM's own ``--model_path``."""
    source = Path(options["path"])
    name = source.name if source.suffix == ".pt" else "model000000000.pt"
    out = Path(folder) / name
    state = _merged_state(policy.network, dtype)
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    args = source.with_name("args.json")
    if args.is_file():
        atomic_write(out.with_name("args.json"), lambda tmp: tmp.write_bytes(args.read_bytes()))
    return out


declare_hooks(load_tiny_motion, save_merged=save_merged_tiny_motion, weights_option="path")
declare_hooks(load_mdm_policy, save_merged=save_merged_mdm, weights_option="path")
