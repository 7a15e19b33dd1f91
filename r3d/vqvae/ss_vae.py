"""TRELLIS's sparse-structure VAE (encoder / decoder), weight-compatible with the released files.

Module and parameter names and shapes match ``trellis/models/sparse_structure_vae.py``, so that
``microsoft/TRELLIS-image-large`` ``ckpts/ss_enc_conv3d_16l8_fp16`` and ``ckpts/ss_dec_conv3d_16l8_fp16``
(each a ``.json`` ``{"name", "args"}`` plus a ``.safetensors``) load with ``strict=True``:

- encoder: ``input_layer`` Conv3d(in, c0, 3) → ``blocks`` = per stage ``num_res_blocks`` ResBlock3d and
  a DownsampleBlock3d (Conv3d k2 s2) between stages → ``middle_block`` → ``out_layer`` =
  [ChannelLayerNorm32, SiLU, Conv3d(c_last, 2·latent, 3)] → (mean, logvar). 64³ → 16³ with
  channels [32, 128, 512] and latent 8.
- decoder: ``input_layer`` Conv3d(latent, c0, 3) → ``middle_block`` → ``blocks`` with UpsampleBlock3d
  (Conv3d(c, 8·c', 3) + 3D pixel shuffle) → ``out_layer`` → one occupancy logit per cell.
- ResBlock3d: norm1 → SiLU → conv1 → norm2 → SiLU → conv2 (zero-initialised) + skip (1×1 conv if the
  width changes). ChannelLayerNorm32 normalises over channels in float32 (eps 1e-5).

``use_fp16`` keeps TRELLIS's behaviour: the convolutions of ``blocks`` and ``middle_block`` hold fp16
weights and run in fp16, the input/output layers and norms in fp32. On CPU r3d loads in fp32 by default
(:func:`load_trellis_ss`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from r3d.core.errors import R3DError

NormType = Literal["group", "layer"]


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32, result cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel axis of (B, C, *spatial), in float32.

    The values equal TRELLIS's (same ``layer_norm`` over a channels-last copy); the result keeps the
    channels-last strides instead of being copied back, so a model in ``channels_last_3d`` memory
    format (3-5x faster 3D convolutions on CPU) never converts layouts.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = x.dim()
        x = x.permute(0, *range(2, dims), 1).contiguous()
        x = super().forward(x)
        return x.permute(0, dims - 1, *range(1, dims - 1))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (32 groups) computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def norm_layer(norm_type: NormType, channels: int) -> nn.Module:
    if norm_type == "group":
        return GroupNorm32(32, channels)
    if norm_type == "layer":
        return ChannelLayerNorm32(channels)
    raise ValueError(f"norm_type must be 'group' or 'layer', got {norm_type!r}")


def pixel_shuffle_3d(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C·s³, H, W, D) → (B, C, H·s, W·s, D·s); channel index = c·s³ + (i·s + j)·s + k."""
    b, c, h, w, d = x.shape
    c_out = c // scale**3
    x = x.reshape(b, c_out, scale, scale, scale, h, w, d)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, h * scale, w * scale, d * scale)


class ResBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int | None = None, norm_type: NormType = "layer") -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.norm1 = norm_layer(norm_type, channels)
        self.norm2 = norm_layer(norm_type, self.out_channels)
        self.conv1 = nn.Conv3d(channels, self.out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip_connection = (
            nn.Conv3d(channels, self.out_channels, 1) if channels != self.out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


class DownsampleBlock3d(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, mode: Literal["conv", "avgpool"] = "conv"
    ) -> None:
        super().__init__()
        if mode not in ("conv", "avgpool") or (mode == "avgpool" and in_channels != out_channels):
            raise ValueError(f"invalid downsample mode {mode!r} for {in_channels}→{out_channels} channels")
        self.in_channels, self.out_channels = in_channels, out_channels
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if hasattr(self, "conv") else F.avg_pool3d(x, 2)


class UpsampleBlock3d(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, mode: Literal["conv", "nearest"] = "conv"
    ) -> None:
        super().__init__()
        if mode not in ("conv", "nearest") or (mode == "nearest" and in_channels != out_channels):
            raise ValueError(f"invalid upsample mode {mode!r} for {in_channels}→{out_channels} channels")
        self.in_channels, self.out_channels = in_channels, out_channels
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return pixel_shuffle_3d(self.conv(x), 2)
        return F.interpolate(x, scale_factor=2, mode="nearest")


_FP16_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def _convert(module: nn.Module, dtype: torch.dtype) -> None:
    for m in module.modules():
        if isinstance(m, _FP16_TYPES):
            for p in m.parameters():
                p.data = p.data.to(dtype)


class _Torso(nn.Module):
    """What encoder and decoder share: architecture record, stage / middle / head builders and the fp16
    switching of ``blocks`` and ``middle_block`` (TRELLIS's convert_to_fp16/fp32)."""

    blocks: nn.ModuleList
    middle_block: nn.Sequential

    def _configure(
        self,
        latent_channels: int,
        num_res_blocks: int,
        channels: list[int],
        num_res_blocks_middle: int,
        norm_type: NormType,
        use_fp16: bool,
    ) -> None:
        """Record the architecture (what :func:`config_of` writes back) and the working dtype."""
        self.latent_channels = latent_channels
        self.num_res_blocks, self.channels = num_res_blocks, list(channels)
        self.num_res_blocks_middle, self.norm_type = num_res_blocks_middle, norm_type
        self.use_fp16, self.dtype = use_fp16, torch.float16 if use_fp16 else torch.float32

    def _stages(self, resample: type[nn.Module]) -> nn.ModuleList:
        """``num_res_blocks`` ResBlocks per entry of ``channels``, ``resample`` between entries."""
        blocks, channels = nn.ModuleList(), self.channels
        for i, ch in enumerate(channels):
            blocks.extend(ResBlock3d(ch, ch, self.norm_type) for _ in range(self.num_res_blocks))
            if i < len(channels) - 1:
                blocks.append(resample(ch, channels[i + 1]))
        return blocks

    def _middle(self, ch: int) -> nn.Sequential:
        return nn.Sequential(*[ResBlock3d(ch, ch, self.norm_type) for _ in range(self.num_res_blocks_middle)])

    def _head(self, out_channels: int) -> nn.Sequential:
        """norm → SiLU → 3³ conv from the last stage's width to ``out_channels``."""
        ch = self.channels[-1]
        return nn.Sequential(
            norm_layer(self.norm_type, ch), nn.SiLU(), nn.Conv3d(ch, out_channels, 3, padding=1)
        )

    def convert_to_fp16(self) -> None:
        self.use_fp16, self.dtype = True, torch.float16
        _convert(self.blocks, torch.float16)
        _convert(self.middle_block, torch.float16)

    def convert_to_fp32(self) -> None:
        self.use_fp16, self.dtype = False, torch.float32
        _convert(self.blocks, torch.float32)
        _convert(self.middle_block, torch.float32)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class SparseStructureEncoder(_Torso):
    """Occupancy (B, in_channels, R, R, R) → latent (B, latent_channels, R/2^(n−1), …).

    ``forward(x, sample_posterior=False, return_raw=False)`` returns the posterior mean (or a sample
    ``mean + exp(logvar/2)·ε``); with ``return_raw`` it returns ``(z, mean, logvar)``.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        num_res_blocks: int,
        channels: list[int],
        num_res_blocks_middle: int = 2,
        norm_type: NormType = "layer",
        use_fp16: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self._configure(latent_channels, num_res_blocks, channels, num_res_blocks_middle, norm_type, use_fp16)
        # built in TRELLIS's order (the order random initialisation draws in)
        self.input_layer = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.blocks = self._stages(DownsampleBlock3d)
        self.middle_block = self._middle(channels[-1])
        self.out_layer = self._head(latent_channels * 2)
        if use_fp16:
            self.convert_to_fp16()

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = False, return_raw: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.input_layer(x).type(self.dtype)
        for block in self.blocks:
            h = block(h)
        h = self.middle_block(h).type(x.dtype)
        mean, logvar = self.out_layer(h).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        return (z, mean, logvar) if return_raw else z


class SparseStructureDecoder(_Torso):
    """Latent (B, latent_channels, r, r, r) → occupancy logits (B, out_channels, r·2^(n−1), …)."""

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        num_res_blocks: int,
        channels: list[int],
        num_res_blocks_middle: int = 2,
        norm_type: NormType = "layer",
        use_fp16: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self._configure(latent_channels, num_res_blocks, channels, num_res_blocks_middle, norm_type, use_fp16)
        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = self._middle(channels[0])
        self.blocks = self._stages(UpsampleBlock3d)
        self.out_layer = self._head(out_channels)
        if use_fp16:
            self.convert_to_fp16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x).type(self.dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.type(x.dtype))


MODELS: dict[str, type[_Torso]] = {
    "SparseStructureEncoder": SparseStructureEncoder,
    "SparseStructureDecoder": SparseStructureDecoder,
}

# TRELLIS-image-large's two files (under ckpts/ of the hub repo) and their configs.
TRELLIS_ENCODER_FILE = "ss_enc_conv3d_16l8_fp16"
TRELLIS_DECODER_FILE = "ss_dec_conv3d_16l8_fp16"
TRELLIS_ENCODER_ARGS: dict[str, Any] = {
    "in_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
    "channels": [32, 128, 512], "use_fp16": True,
}  # fmt: skip
TRELLIS_DECODER_ARGS: dict[str, Any] = {
    "out_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
    "channels": [512, 128, 32], "use_fp16": True,
}  # fmt: skip


def config_of(module: nn.Module) -> dict[str, Any]:
    """The ``{"name", "args"}`` JSON that rebuilds ``module`` (TRELLIS's config format)."""
    name = type(module).__name__
    if name not in MODELS:
        raise TypeError(f"not a sparse-structure module: {name}")
    io_key = "in_channels" if name == "SparseStructureEncoder" else "out_channels"
    args = {
        io_key: getattr(module, io_key),
        "latent_channels": module.latent_channels,
        "num_res_blocks": module.num_res_blocks,
        "num_res_blocks_middle": module.num_res_blocks_middle,
        "channels": list(module.channels),
        "norm_type": module.norm_type,
        "use_fp16": bool(getattr(module, "export_fp16", module.use_fp16)),
    }
    return {"name": name, "args": args}


def build_ss(
    config: dict[str, Any], fp16: bool | None = None
) -> SparseStructureEncoder | SparseStructureDecoder:
    """Build a module from a ``{"name", "args"}`` config (unknown names / arguments → R3DError).

    ``fp16`` overrides ``args.use_fp16`` for the computation (e.g. fp32 training on CPU) while the
    config's own flag is kept as ``module.export_fp16`` and written back by :func:`config_of`.
    """
    name = config.get("name")
    if name not in MODELS:
        raise R3DError(f"unknown sparse-structure model {name!r}; expected one of {', '.join(MODELS)}")
    args = dict(config.get("args", {}))
    export_fp16 = bool(args.get("use_fp16", False))
    if fp16 is not None:
        args["use_fp16"] = fp16
    try:
        module = MODELS[name](**args)
    except TypeError as exc:
        raise R3DError(f"bad arguments for {name}: {exc}") from None
    module.export_fp16 = export_fp16
    return module  # type: ignore[return-value]


def save_trellis_ss(module: nn.Module, prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``{prefix}.json`` and ``{prefix}.safetensors`` in TRELLIS's layout (atomic writes).

    The torso weights are stored in fp16 when the config says ``use_fp16`` (as TRELLIS ships them).
    """
    from safetensors.torch import save_file

    from r3d.core.io import atomic_write, atomic_write_json

    prefix = Path(prefix)
    config = config_of(module)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if config["args"]["use_fp16"]:  # TRELLIS's convert_to_fp16: convolutions of the torso in fp16
        torso = ("blocks.", "middle_block.")
        conv_like = {
            f"{name}.{p}"
            for name, m in module.named_modules()
            if isinstance(m, _FP16_TYPES)
            for p in ("weight", "bias")
        }
        state = {
            k: (v.half() if k.startswith(torso) and k in conv_like else v.float()) for k, v in state.items()
        }
    else:
        state = {k: v.float() for k, v in state.items()}
    js = atomic_write_json(prefix.with_name(prefix.name + ".json"), config)
    st = atomic_write(prefix.with_name(prefix.name + ".safetensors"), lambda p: save_file(state, str(p)))
    return js, st


def load_trellis_ss(
    prefix: str | os.PathLike, *, device: str | torch.device = "cpu", use_fp16: bool | None = None
) -> SparseStructureEncoder | SparseStructureDecoder:
    """Load ``{prefix}.json`` + ``{prefix}.safetensors`` exactly as TRELLIS ships them (strict keys).

    Returns the module in eval mode on ``device``. ``use_fp16``: None follows the JSON on CUDA and uses
    fp32 on CPU (fp16 3D convolutions are slow or missing there); True / False force it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    prefix = Path(prefix)
    js = prefix.with_name(prefix.name + ".json")
    st = prefix.with_name(prefix.name + ".safetensors")
    for p in (js, st):
        if not p.is_file():
            raise R3DError(
                f"missing {p}; a TRELLIS sparse-structure checkpoint is a .json + .safetensors pair, e.g. "
                f"microsoft/TRELLIS-image-large ckpts/{TRELLIS_ENCODER_FILE} and ckpts/{TRELLIS_DECODER_FILE}"
            )
    try:
        config = json.loads(js.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise R3DError(f"{js}: invalid JSON ({exc})") from None
    config = {"name": config.get("name"), "args": dict(config.get("args", {}))}
    device = torch.device(device)
    want_fp16 = bool(config["args"].get("use_fp16", False)) if use_fp16 is None else use_fp16
    if use_fp16 is None and device.type != "cuda":
        want_fp16 = False
    module = build_ss(config, fp16=want_fp16)
    try:
        state = load_file(str(st))
    except (SafetensorError, OSError) as exc:
        raise R3DError(f"{st}: unreadable safetensors ({exc})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise R3DError(f"{st} does not match {config['name']}{config['args']}: {first.strip()}") from None
    return module.to(device).eval()
