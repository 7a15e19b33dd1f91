"""TRELLIS sparse-structure VAE (weight-compatible) and the two-stage sparse-structure VQ-VAE."""

from r3d.vqvae.model import SSVQVAE, group_tokens, ungroup_tokens
from r3d.vqvae.quantizers import FSQ, VectorQuantizer
from r3d.vqvae.ss_vae import (
    SparseStructureDecoder,
    SparseStructureEncoder,
    load_trellis_ss,
    save_trellis_ss,
)

__all__ = [
    "FSQ",
    "SSVQVAE",
    "SparseStructureDecoder",
    "SparseStructureEncoder",
    "VectorQuantizer",
    "group_tokens",
    "load_trellis_ss",
    "save_trellis_ss",
    "ungroup_tokens",
]
