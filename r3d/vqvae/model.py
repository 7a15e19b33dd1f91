"""The sparse-structure VQ-VAE: TRELLIS encoder → (grouped) quantizer → TRELLIS decoder.

The quantizer acts on the encoder's posterior mean (as the published 3D VQ-VAE of ShapeLLM-Omni
does). Tokens are formed channels-last: the latent (B, C, r, r, r) is permuted to (B, r, r, r, C)
and ``group`` consecutive cells along the last spatial axis are concatenated, giving (B, r³/group,
group·C) tokens. ``group=1`` quantises every cell's C = 8 channels (4096 tokens of 8-d for a 16³
latent, the seed plan); ``group=4`` is ShapeLLM-Omni's layout (1024 tokens of 32-d).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from r3d.vqvae.quantizers import FSQ, VectorQuantizer
from r3d.vqvae.ss_vae import SparseStructureDecoder, SparseStructureEncoder


def group_tokens(z: torch.Tensor, group: int) -> torch.Tensor:
    """(B, C, X, Y, Z) → (B, X·Y·Z/group, group·C); ``group`` neighbours along Z, channel fastest."""
    b, c, x, y, zz = z.shape
    if zz % group:
        raise ValueError(f"latent depth {zz} is not divisible by group {group}")
    return z.permute(0, 2, 3, 4, 1).reshape(b, x * y * zz // group, group * c)


def ungroup_tokens(t: torch.Tensor, shape: tuple[int, int, int, int, int]) -> torch.Tensor:
    """Inverse of :func:`group_tokens` for a latent of ``shape`` (B, C, X, Y, Z)."""
    b, c, x, y, zz = shape
    return t.reshape(b, x, y, zz, c).permute(0, 4, 1, 2, 3).contiguous()


@dataclass
class VQOutput:
    """logits (B, 1, R, R, R); indices (B, T); mean (B, C, r, r, r) pre-quantisation latent."""

    logits: torch.Tensor
    indices: torch.Tensor
    mean: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class SSVQVAE(nn.Module):
    """Encoder, quantizer and decoder with the token grouping; ``forward(x)`` → :class:`VQOutput`."""

    def __init__(
        self,
        encoder: SparseStructureEncoder,
        decoder: SparseStructureDecoder,
        quantizer: VectorQuantizer | FSQ,
        group: int = 1,
    ) -> None:
        super().__init__()
        if encoder.latent_channels != decoder.latent_channels:
            raise ValueError(
                f"encoder latent {encoder.latent_channels} ≠ decoder latent {decoder.latent_channels} channels"
            )
        if quantizer.dim != group * encoder.latent_channels:
            raise ValueError(
                f"quantizer dim {quantizer.dim} ≠ group {group} × latent {encoder.latent_channels}"
            )
        self.encoder, self.decoder, self.quantizer, self.group = encoder, decoder, quantizer, group

    def quantize(self, mean: torch.Tensor):
        tokens = group_tokens(mean, self.group)
        q = self.quantizer(tokens.reshape(-1, tokens.shape[-1]))
        z_q = ungroup_tokens(q.z_q, tuple(mean.shape))
        return z_q, q.indices.reshape(tokens.shape[0], tokens.shape[1]), q.losses

    def forward(self, x: torch.Tensor, decode: bool = True) -> VQOutput:
        mean = self.encoder(x, sample_posterior=False)
        z_q, indices, losses = self.quantize(mean)
        logits = self.decoder(z_q) if decode else torch.empty(0, device=x.device)
        return VQOutput(logits, indices, mean, losses)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Occupancy (B, 1, R, R, R) → token indices (B, T)."""
        return self.quantize(self.encoder(x))[1]

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor, latent_res: int) -> torch.Tensor:
        """Token indices (B, T) → occupancy logits (B, 1, R, R, R)."""
        b = indices.shape[0]
        tokens = self.quantizer.lookup(indices)
        c = self.encoder.latent_channels
        z = ungroup_tokens(tokens, (b, c, latent_res, latent_res, latent_res))
        return self.decoder(z)
