"""Checkpoints of VQ-VAE runs: atomic, resumable, loadable without the recipe.

A checkpoint is a folder written under a temporary name and renamed into place (atomic):

- ``model.json``: the encoder / decoder configs (TRELLIS ``{"name", "args"}``), the quantizer settings
  and the token grouping, enough to rebuild the model;
- ``model.safetensors``: the full state (``encoder.*``, ``decoder.*``, ``quantizer.*``), fp32;
- ``trainer.pt``: optimizer, scheduler, grad-scaler states and the step (``torch.load(weights_only=True)``);
- ``state.json``: step and the last metrics.

``run/checkpoints/latest`` names the newest one; ``run/final`` is the end-of-run checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write_json, atomic_write_text
from r3d.vqvae.model import SSVQVAE
from r3d.vqvae.quantizers import FSQ, VectorQuantizer
from r3d.vqvae.ss_vae import build_ss, config_of


def build_quantizer(q: dict[str, Any], dim: int) -> VectorQuantizer | FSQ:
    """Quantizer from its settings (the recipe's ``model.quantizer`` as a dict)."""
    if q.get("kind", "vq") == "fsq":
        return FSQ(dim, list(q.get("fsq_levels", [8, 8, 8, 4, 4])))
    return VectorQuantizer(
        codebook_size=int(q.get("codebook_size", 8192)),
        dim=dim,
        ema_decay=q.get("ema_decay", 0.99),
        dead_threshold=float(q.get("dead_threshold", 0.0)),
        usage_decay=float(q.get("usage_decay", 0.99)),
    )


def model_config(model: SSVQVAE, quantizer: dict[str, Any]) -> dict[str, Any]:
    return {
        "encoder": config_of(model.encoder),
        "decoder": config_of(model.decoder),
        "quantizer": dict(quantizer),
        "group": model.group,
    }


def build_model(config: dict[str, Any]) -> SSVQVAE:
    """Rebuild an (untrained) :class:`SSVQVAE` from a ``model.json`` dict."""
    enc, dec = build_ss(config["encoder"], fp16=False), build_ss(config["decoder"], fp16=False)
    group = int(config.get("group", 1))
    quant = build_quantizer(config["quantizer"], group * enc.latent_channels)
    return SSVQVAE(enc, dec, quant, group)  # type: ignore[arg-type]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }


def save_checkpoint(
    folder: str | os.PathLike,
    model: SSVQVAE,
    quantizer_cfg: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (core's :func:`r3d.core.checkpoint.write_folder`)."""
    from safetensors.torch import save_file

    from r3d.core.checkpoint import write_folder

    def write(tmp: Path) -> None:
        (tmp / "model.json").write_text(json.dumps(model_config(model, quantizer_cfg), indent=2) + "\n")
        save_file(_state(model), str(tmp / "model.safetensors"))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps(info or {}, indent=2) + "\n")

    return write_folder(folder, write)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run: ``checkpoints/latest``, else ``final``, else None."""
    run_dir = Path(run_dir)
    pointer = run_dir / "checkpoints" / "latest"
    if pointer.is_file():
        cand = run_dir / "checkpoints" / pointer.read_text().strip()
        if (cand / "model.safetensors").is_file():
            return cand
    if (run_dir / "final" / "model.safetensors").is_file():
        return run_dir / "final"
    return None


def record_latest(run_dir: str | os.PathLike, ckpt: Path, keep: int) -> None:
    """Point ``checkpoints/latest`` at ``ckpt`` (relative) and keep only the ``keep`` newest step folders."""
    ckdir = Path(run_dir) / "checkpoints"
    atomic_write_text(ckdir / "latest", os.path.relpath(ckpt, ckdir) + "\n")
    steps = sorted(p for p in ckdir.glob("step-*") if p.is_dir())
    for p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def load_state(ckpt: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model.json dict, state dict) of a checkpoint folder; missing / corrupt files → R3DError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    try:
        config = json.loads((ckpt / "model.json").read_text())
        state = load_file(str(ckpt / "model.safetensors"))
    except FileNotFoundError as exc:
        raise R3DError(f"not a VQ-VAE checkpoint: {ckpt} ({Path(exc.filename).name} missing)") from None
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise R3DError(f"corrupt checkpoint {ckpt}: {exc}") from None
    return config, state


def load_trainer_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The optimizer / scheduler / scaler states of ``ckpt``; a missing or unreadable (truncated,
    corrupt) ``trainer.pt`` is an R3DError."""
    path = Path(ckpt) / "trainer.pt"
    if not path.is_file():
        raise R3DError(f"checkpoint {ckpt} has no trainer state (trainer.pt); cannot resume from it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, refused global: many types
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise R3DError(f"cannot resume: {path} is damaged ({exc.__class__.__name__}: {first})") from None
    if not isinstance(state, dict):
        raise R3DError(f"cannot resume: {path} holds a {type(state).__name__}, not a trainer state")
    return state


def load_vqvae(path: str | os.PathLike, device: str | torch.device = "cpu") -> SSVQVAE:
    """Load a trained VQ-VAE (eval mode) from a run folder (its newest checkpoint) or a checkpoint."""
    path = Path(path)
    ckpt = path if (path / "model.json").is_file() else latest_checkpoint(path)
    if ckpt is None:
        raise R3DError(f"no checkpoint found in {path}")
    config, state = load_state(ckpt)
    model = build_model(config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def export_trellis(
    model: SSVQVAE,
    folder: str | os.PathLike,
    encoder_file: str,
    decoder_file: str,
    quantizer_cfg: dict[str, Any],
) -> list[Path]:
    """Write encoder/decoder in TRELLIS's format and the codebook (``quantizer.json`` + safetensors)."""
    from safetensors.torch import save_file

    from r3d.core.io import atomic_write
    from r3d.vqvae.ss_vae import save_trellis_ss

    folder = Path(folder)
    written = [
        *save_trellis_ss(model.encoder, folder / encoder_file),
        *save_trellis_ss(model.decoder, folder / decoder_file),
    ]
    qstate = _state(model.quantizer)
    meta = {**quantizer_cfg, "dim": model.quantizer.dim, "group": model.group}
    written.append(atomic_write_json(folder / "quantizer.json", meta))
    written.append(atomic_write(folder / "quantizer.safetensors", lambda p: save_file(qstate, str(p))))
    return written
