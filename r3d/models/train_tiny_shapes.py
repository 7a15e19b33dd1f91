"""Train the tiny-shapes generator on procedural shapes and write its safetensors.

    python -m r3d.models.train_tiny_shapes --out r3d/assets/tiny_shapes.safetensors [--steps N --seed S]

Data: ``--per-class`` random shapes of every class (r3d.mesh.shapes), their exact SDF sampled
on a ``--grid``³ cell-centred grid and projected on the K³ cosine basis; latents standardised per
coefficient. Augmentation: the 8 symmetries of the square about z (flips and the x↔y swap act on the
coefficients as sign changes and a transpose). Objective: x₀-prediction MSE at σ ~ U(0, 1) on
x_σ = (1 − σ)x₀ + σε, condition dropped to the empty class with probability ``--cond-drop``; AdamW,
linear warm-up then cosine decay, EMA of the weights (the EMA is what is saved). At the end the saved
(fp16) model is evaluated: per class, the fraction of clean meshes and, when the semantic reward's
weights exist, its top-1 accuracy on ``--eval-per-class`` samples.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors import safe_open

from r3d.core.asset_training import LossBar, asset_parser, run_script, train_info
from r3d.core.progress import task_progress
from r3d.mesh.shapes import CLASSES, is_clean, random_shape, sdf_grid
from r3d.models.tiny_shapes import (
    TinyShapesConfig,
    TinyShapesNet,
    TinyShapesPolicy,
    grid_to_coeffs,
    load_tiny_shapes,
    save_tiny_shapes,
)

console = Console()


def make_coefficients(per_class: int, grid: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine coefficients (N, k, k, k) and labels (N,) of ``per_class`` random shapes per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    coeffs = []
    with task_progress(console) as bar:
        task = bar.add_task("procedural shapes", total=len(labels), info="")
        for start in range(0, len(labels), 64):
            chunk = labels[start : start + 64]
            grids = np.stack([sdf_grid(random_shape(int(c), rng), grid) for c in chunk])
            coeffs.append(grid_to_coeffs(torch.from_numpy(grids).double(), k).float())
            bar.advance(task, len(chunk))
    return torch.cat(coeffs), torch.from_numpy(labels)


def square_symmetry(c: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply a random symmetry of the square about z to each cosine series (B, k, k, k)."""
    k = c.shape[-1]
    odd = (torch.arange(k) % 2 == 1).float()
    sign = 1 - 2 * odd  # x → −x multiplies coefficient i by (−1)^i
    b = c.shape[0]
    flip_x, flip_y, swap = (torch.rand(3, b, generator=g) < 0.5).float()
    sx = 1 + flip_x[:, None] * (sign[None] - 1)  # (B, k)
    sy = 1 + flip_y[:, None] * (sign[None] - 1)
    c = c * sx[:, :, None, None] * sy[:, None, :, None]
    return torch.where(swap.bool()[:, None, None, None], c.transpose(1, 2), c)


def evaluate(
    policy: TinyShapesPolicy, per_class: int, num_steps: int, seed: int, semantic_weights: Path | None
) -> dict[str, dict[str, float]]:
    """Per class: clean-mesh fraction (and semantic top-1 accuracy when a classifier is available)."""
    classifier = None
    if semantic_weights is not None and semantic_weights.is_file():
        from r3d.rewards.semantic import SemanticReward

        classifier = SemanticReward(weights=semantic_weights)
    g = torch.Generator().manual_seed(seed)
    results: dict[str, dict[str, float]] = {}
    with task_progress(console) as bar:
        task = bar.add_task("evaluate", total=len(CLASSES), info="")
        for name in CLASSES:
            meshes = policy.decode(policy.sample([f"a {name}"] * per_class, num_steps, g))
            row = {"clean": float(np.mean([is_clean(m) for m in meshes]))}
            if classifier is not None:
                top = classifier.classify(meshes)
                row["semantic_acc"] = float(np.mean([t[0] == name for t in top]))
            results[name] = row
            bar.advance(task)
    return results


def train(args: argparse.Namespace) -> dict:
    """Generate the data, train, save the EMA weights to ``args.out``; returns the training info."""
    torch.manual_seed(args.seed)
    cfg = TinyShapesConfig(
        latent_size=args.latent_size,
        width=args.width,
        depth=args.depth,
        mlp_ratio=args.mlp_ratio,
        guidance_scale=args.guidance_scale,
    )
    t0 = time.time()
    coeffs, labels = make_coefficients(args.per_class, args.grid, cfg.latent_size, args.seed)
    t_data = time.time() - t0
    g = torch.Generator().manual_seed(args.seed + 1)
    sym = torch.cat([square_symmetry(coeffs, g) for _ in range(4)])
    mean, std = sym.mean(0), sym.std(0).clamp_min(1e-6)

    net = TinyShapesNet(cfg)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    warmup = min(200, args.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, args.steps - warmup)))

    n_params = sum(p.numel() for p in net.parameters())
    console.print(
        f"tiny-shapes: {n_params / 1e6:.2f} M parameters, latent {cfg.latent_size}³, data {len(labels)} shapes"
    )
    t1 = time.time()
    with LossBar(console, "train", args.steps, every=50) as bar:
        for step in range(args.steps):
            idx = torch.randint(len(labels), (args.batch,), generator=g)
            x0 = (square_symmetry(coeffs[idx], g) - mean) / std
            y = labels[idx].clone()
            y[torch.rand(args.batch, generator=g) < args.cond_drop] = cfg.n_classes
            sigma = torch.rand(args.batch, generator=g)
            eps = torch.randn(x0.shape, generator=g)
            s = sigma.view(-1, 1, 1, 1)
            loss = torch.nn.functional.mse_loss(net((1 - s) * x0 + s * eps, sigma, y), x0)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                decay = min(args.ema, (1 + step) / (10 + step))
                for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                    pe.lerp_(p, 1 - decay)
            bar.step(loss.item())
    t_train = time.time() - t1

    info = train_info(
        "r3d.models.train_tiny_shapes", args, t_data, t_train, final_loss=round(float(loss.item()), 5)
    )
    save_tiny_shapes(args.out, TinyShapesPolicy(ema.eval(), mean, std), {"train": info})
    console.print(f"data {t_data:.0f} s, training {t_train:.0f} s, final loss {info['final_loss']}")
    return info


def report(args: argparse.Namespace, info: dict) -> dict:
    """Evaluate the saved weights at ``args.out`` (fp16, exactly as shipped), print a table and store
    the evaluation in the file's metadata next to the training info."""
    policy = load_tiny_shapes(args.out)
    sem = Path(args.semantic_weights) if args.semantic_weights else None
    results = evaluate(policy, args.eval_per_class, args.eval_steps, args.seed + 7, sem)
    keys = list(next(iter(results.values())))
    table = Table(title=f"tiny-shapes, {args.eval_per_class} samples/class, {args.eval_steps} Euler steps")
    table.add_column("class")
    for key in keys:
        table.add_column(key, justify="right")
    for name, row in results.items():
        table.add_row(name, *(f"{v:.3f}" for v in row.values()))
    means = {key: float(np.mean([r[key] for r in results.values()])) for key in keys}
    table.add_row("mean", *(f"{v:.3f}" for v in means.values()))
    console.print(table)
    evaluation = {"samples_per_class": args.eval_per_class, "steps": args.eval_steps, "per_class": results}
    save_tiny_shapes(args.out, policy, {"train": info, "eval": {**evaluation, "mean": means}})
    console.print(f"wrote {args.out}")
    return {"train": info, "eval": evaluation, "mean": means}


def main(argv: list[str] | None = None) -> None:
    p = asset_parser(
        __doc__.split("\n\n")[0],
        steps=2000,
        batch=128,
        lr=1e-3,
        per_class=600,
        metrics_help="also write the training info and evaluation to this JSON file",
    )
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--grid", type=int, default=24, help="SDF samples per axis for the projection")
    p.add_argument("--latent-size", type=int, default=TinyShapesConfig.latent_size)
    p.add_argument("--width", type=int, default=TinyShapesConfig.width)
    p.add_argument("--depth", type=int, default=TinyShapesConfig.depth)
    p.add_argument("--mlp-ratio", type=int, default=TinyShapesConfig.mlp_ratio)
    p.add_argument("--guidance-scale", type=float, default=TinyShapesConfig.guidance_scale)
    p.add_argument("--eval-per-class", type=int, default=64)
    p.add_argument("--eval-steps", type=int, default=16)
    p.add_argument(
        "--semantic-weights",
        default=str(Path(__file__).resolve().parent.parent / "assets" / "semantic_pointnet.safetensors"),
    )
    p.add_argument("--eval-only", action="store_true", help="only (re-)evaluate the weights at --out")
    run_script(p, argv, lambda args: report(args, _trained_info(args)))


def _trained_info(args: argparse.Namespace) -> dict:
    """Train (the training info), or with --eval-only read the info stored in the weights at --out."""
    if not args.eval_only:
        return train(args)
    with safe_open(args.out, framework="pt") as f:
        return json.loads((f.metadata() or {}).get("train", "{}"))


if __name__ == "__main__":
    main()
