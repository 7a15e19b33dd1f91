"""Hunyuan3D-2.1 from the user's installed Tencent code (``hy3dshape``) behind r3d's adapter.

``model.options.implementation: official`` builds the DiT, the VAE and the conditioner from the
``target:`` entries of the official ``config.yaml`` (Tencent's own classes, e.g.
``hy3dshape.models.denoisers.hunyuandit.HunYuanDiTPlain``) instead of r3d's re-implementation, loads
``model.fp16.ckpt`` into them and wraps them so that :class:`r3d.models.hunyuan3d.Hunyuan3DPolicy` drives
them unchanged: the same time convention (their ``model(x, t, {'main': context})`` takes t ∈ [0, 1] with
0 = noise, like r3d's), the same CFG, the same LoRA target names (``to_q``, ``to_k``, ``to_v``,
``out_proj``: their attention modules carry these names).

The licence of Tencent's code forbids vendoring it, so r3d only imports an installation: put the
``hy3dshape`` folder of Tencent-Hunyuan/Hunyuan3D-2.1 on ``PYTHONPATH`` (or install it) together with its
own dependencies (torchvision, omegaconf, …).

One path for rollout and training: their mixture-of-experts block has a differentiable training branch
(masked per-expert calls) and a ``no_grad`` inference branch (``moe_infer``); the wrapper keeps the DiT
in training mode for good (no dropout is active in it) and sets the router's auxiliary loss to zero, so
sampling and the PPO update run the same differentiable code and the auxiliary loss never reaches the
gradients.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from r3d.core.checkpoint import load_strict
from r3d.core.errors import R3DError
from r3d.models.hunyuan3d_keys import map_dino_keys

#: The classes of Hunyuan3D-2.1's config.yaml, used when a section has no ``target:``.
DEFAULT_TARGETS = {
    "model": "hy3dshape.models.denoisers.hunyuandit.HunYuanDiTPlain",
    "vae": "hy3dshape.models.autoencoders.ShapeVAE",
    "conditioner": "hy3dshape.models.conditioner.SingleImageEncoder",
}
#: Prefixes of the VAE encoder in Tencent's ``ShapeVAE`` (not needed to generate).
_VAE_ENCODER_PREFIXES = ("encoder.", "pre_kl.")


def import_hy3dshape() -> Any:
    """The installed ``hy3dshape`` package, or a one-line R3DError saying how to get it."""
    try:
        return importlib.import_module("hy3dshape")
    except Exception as exc:  # noqa: BLE001 — a broken installation fails in many ways (ImportError, torchvision ops)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise R3DError(
            "model.options.implementation 'official' needs Tencent's hy3dshape package (the hy3dshape folder "
            "of Tencent-Hunyuan/Hunyuan3D-2.1 on PYTHONPATH, with its requirements); importing it failed: "
            f"{type(exc).__name__}: {detail}"
        ) from None


def instantiate(cfg: dict[str, Any], part: str) -> nn.Module:
    """Tencent's class named by ``cfg[part]['target']`` (default :data:`DEFAULT_TARGETS`) with its params."""
    import_hy3dshape()
    section = cfg.get(part) or {}
    target = section.get("target") or DEFAULT_TARGETS[part]
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise R3DError(
            f"config.yaml {part}.target {target!r} is not in the installed hy3dshape: {exc}"
        ) from None
    try:
        return cls(**(section.get("params") or {}))
    except TypeError as exc:
        raise R3DError(f"{target} does not accept the config's {part}.params: {exc}") from None


class OfficialDiT(nn.Module):
    """``dit(x (B, N, C), t (B,) ∈ [0, 1] with 0 = noise, context (B, L, D))`` over Tencent's DiT.

    The wrapped model lives at ``self.model`` (LoRA finds ``model.blocks.*.attn1.to_q`` etc.) and stays
    in training mode whatever ``.eval()`` is called on the wrapper (see the module docstring).
    ``gradient_checkpointing`` recomputes each of its blocks in the backward pass.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.gradient_checkpointing = False
        for module in model.modules():
            if hasattr(module, "gate") and hasattr(module, "experts"):  # a MoEBlock
                _zero_aux_loss(module.gate)
        for block in getattr(model, "blocks", []):
            _make_checkpointable(block, self)
        self.train(False)

    def train(self, mode: bool = True) -> OfficialDiT:
        super().train(mode)
        self.model.train(True)  # one differentiable MoE path, in rollout and training alike
        return self

    def checkpoint_units(self) -> list[nn.Module]:
        return list(getattr(self.model, "blocks", []))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, {"main": context})


def _zero_aux_loss(gate: nn.Module) -> None:
    """The router returns a zero, gradient-free auxiliary loss (weight 0), whatever the mode."""
    forward = gate.forward

    def no_aux(self: nn.Module, hidden_states: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        index, weight, _ = forward(hidden_states)
        return index, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)

    gate.alpha = 0.0
    gate.forward = types.MethodType(no_aux, gate)


def _make_checkpointable(block: nn.Module, owner: OfficialDiT) -> None:
    forward = block.forward

    def maybe_checkpointed(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if owner.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    block.forward = types.MethodType(maybe_checkpointed, block)


class OfficialVAE(nn.Module):
    """``decode(latents)`` / ``occupancy(decoded, points)`` / ``latent_shape`` over Tencent's ShapeVAE."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scale_factor = float(vae.scale_factor)
        self.latent_shape = tuple(vae.latent_shape)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion latents (B, N, C) → decoded tokens (B, N, width); applies 1/scale_factor first."""
        return self.vae.decode((1.0 / self.scale_factor) * latents)

    def occupancy(self, decoded: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Occupancy logits (B, P, 1) of points (B, P, 3) or (P, 3)."""
        if points.ndim == 2:
            points = points.expand(decoded.shape[0], -1, -1)
        return self.vae.geo_decoder(queries=points.to(decoded.dtype), latents=decoded)


class OfficialConditioner(nn.Module):
    """``conditioner(image (B, 3, H, W) in [−1, 1]) → (B, L, D)`` over Tencent's SingleImageEncoder."""

    def __init__(self, conditioner: nn.Module) -> None:
        super().__init__()
        self.conditioner = conditioner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conditioner(image)["main"]

    def unconditional(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return self.conditioner.unconditional_embedding(batch)["main"].to(like.device, like.dtype)


def load_official_modules(
    cfg: dict[str, Any],
    ckpt: dict[str, dict[str, torch.Tensor]],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[OfficialDiT, OfficialVAE, OfficialConditioner]:
    """Tencent's modules from ``cfg``'s targets with the checkpoint loaded (the DiT and the conditioner
    strictly; the VAE strictly on everything but its encoder, which generation does not use and which
    is loaded where the checkpoint has it), cast, moved, frozen, wrapped."""
    missing = [k for k in ("model", "vae", "conditioner") if k not in ckpt]
    if missing:
        raise R3DError(f"Hunyuan3D checkpoint lacks {', '.join(missing)} (keys: {', '.join(ckpt)})")
    dit, vae, cond = (instantiate(cfg, part) for part in ("model", "vae", "conditioner"))
    load_strict(dit, ckpt["model"], "Hunyuan3D DiT (official)", assign=False)
    decoder_state = {k: v for k, v in ckpt["vae"].items() if not k.startswith(_VAE_ENCODER_PREFIXES)}
    expected = {k for k in vae.state_dict() if not k.startswith(_VAE_ENCODER_PREFIXES)}
    extra, absent = sorted(set(decoder_state) - expected), sorted(expected - set(decoder_state))
    if extra or absent:
        raise R3DError(
            f"Hunyuan3D VAE (official) weights do not match: {len(absent)} missing ({', '.join(absent[:3])}), "
            f"{len(extra)} unexpected ({', '.join(extra[:3])})"
        )
    own = vae.state_dict()
    encoder_state = {  # the (unused) encoder too where the checkpoint has it with the right shapes
        k: v
        for k, v in ckpt["vae"].items()
        if k not in decoder_state and k in own and own[k].shape == v.shape
    }
    try:
        vae.load_state_dict({**decoder_state, **encoder_state}, strict=False)
    except RuntimeError as exc:
        raise R3DError(
            f"Hunyuan3D VAE (official) weights do not match: {str(exc).splitlines()[-1]}"
        ) from None
    load_strict(
        cond, map_dino_keys(ckpt["conditioner"], cond), "Hunyuan3D conditioner (official)", assign=False
    )
    wrapped = OfficialDiT(dit), OfficialVAE(vae), OfficialConditioner(cond)
    for m in wrapped:
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return wrapped
