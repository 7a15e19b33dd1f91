"""Train r3d's tiny MDM on the synthetic motions (the embedded text-to-motion policy).

    python -m r3d.motion.train_mdm            # → r3d/assets/motion_mdm_tiny.safetensors

MDM's objective: x₀ prediction with a masked MSE over the valid frames, uniform timesteps of a
1000-step cosine schedule (no dropout: short CPU training), the text condition dropped with
probability 0.1 (classifier-free
guidance), AdamW with warm-up and cosine decay, an exponential moving average of the weights (the
EMA weights are saved). Conditioning: hashed unigram+bigram sentence features (256-d). Features are
normalised with HumanML3D-style grouped statistics of the training set.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch

from r3d.core.asset_training import LossBar, saved_line, start_training
from r3d.models.mdm import MDM, TINY_MDM_PATH, beta_schedule, save_tiny_mdm
from r3d.motion.representation import grouped_std
from r3d.motion.synthetic import MAX_LENGTH, add_training_arguments, load_or_build
from r3d.motion.text import sentence_features

TINY_MDM_CONFIG = {
    "njoints": 263,
    "nfeats": 1,
    "latent_dim": 128,
    "ff_size": 256,
    "num_layers": 4,
    "num_heads": 4,
    "dropout": 0.0,
    "activation": "gelu",
    "clip_dim": 256,
    "cond_mask_prob": 0.1,
    "mask_frames": True,
    "pos_embed_max_len": 1000,
    "diffusion_steps": 1000,
    "noise_schedule": "cosine",
    "max_frames": MAX_LENGTH,
}


def train(args: argparse.Namespace) -> Path:
    console, rng, t0 = start_training(args)
    ds = load_or_build(args.n_train, args.data_seed, args.cache_dir)
    frames = np.concatenate([f[:n] for f, n in zip(ds.features, ds.lengths, strict=True)])
    mean, std = grouped_std(frames)
    x_all = (
        torch.from_numpy((ds.features - mean) / std).permute(0, 2, 1).unsqueeze(2).contiguous()
    )  # (N, 263, 1, T)
    valid = torch.arange(MAX_LENGTH)[None, :] < torch.from_numpy(ds.lengths)[:, None]
    x_all = x_all * valid[:, None, None, :]
    text_all = sentence_features(ds.captions, TINY_MDM_CONFIG["clip_dim"], "mdm")
    console.print(f"data: {len(ds)} motions ({time.time() - t0:.0f}s)")

    cfg = TINY_MDM_CONFIG
    net_keys = [k for k in cfg if k not in ("diffusion_steps", "noise_schedule", "max_frames")]
    model = MDM(**{k: cfg[k] for k in net_keys})
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    ab = torch.from_numpy(
        np.cumprod(1 - beta_schedule(cfg["noise_schedule"], cfg["diffusion_steps"]))
    ).float()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"tiny MDM: {n_params / 1e6:.2f} M parameters")
    model.train()
    with LossBar(console, "train tiny MDM", args.steps, keep=0.98) as bar:
        for step in range(args.steps):
            idx = torch.from_numpy(rng.choice(len(ds), args.batch_size, replace=False))
            x0, text, mask = x_all[idx], text_all[idx], valid[idx]
            t = torch.randint(0, cfg["diffusion_steps"], (args.batch_size,))
            a = ab[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn_like(x0)
            pred = model(xt, t, text, False, mask)
            m = mask[:, None, None, :].float()
            loss = (((pred - x0) ** 2) * m).sum() / (m.sum() * x0.shape[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            decay = min(args.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
            bar.step(loss.item())
    running = bar.running
    meta = {
        "config": cfg,
        "text_features": {"type": "hashed", "dim": cfg["clip_dim"], "salt": "mdm"},
        "guidance_scale": args.guidance_scale,
        "default_length": 80,
        "trained_by": f"python -m r3d.motion.train_mdm --steps {args.steps} --batch-size {args.batch_size} "
        f"--n-train {args.n_train} --seed {args.seed}",
        "final_loss": running,
        "train_seconds": round(time.time() - t0),
    }
    out = Path(args.out or TINY_MDM_PATH)
    save_tiny_mdm(ema, out, mean, std, meta)
    console.print(f"{saved_line(out, t0)}, loss {running:.4f}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument(
        "--guidance-scale", type=float, default=2.5, help="recorded default CFG scale of the policy"
    )
    add_training_arguments(ap)
    train(ap.parse_args(argv))


if __name__ == "__main__":
    main()
