"""Train the semantic reward's PointNet classifier on procedural shapes and write its safetensors.

    python -m r3d.rewards.train_semantic --out r3d/assets/semantic_pointnet.safetensors [--steps N --seed S]

Data: ``--per-class`` random shapes of every class (half upright with ≤ 20° tilt like the generator's
data, half in a uniformly random orientation), their exact SDF on a 48³ grid, and from it three meshes
per shape: the fine marching-cubes mesh, a "policy-like" mesh (the SDF truncated to K³ cosine
coefficients, K ∈ {8, 10, 12}, decoded at 24³ or 32³ — what tiny-shapes produces) and a blocky 16³
mesh. Each is independently corrupted with probability 0.3 per kind: Gaussian vertex noise, one or two
small floating blobs, a hole cut around a surface point. Training adds a random rotation (yaw about
z, or uniform over SO(3) for half the batch), a small anisotropic scaling and point jitter, then
re-normalises to the unit sphere. Reports held-out accuracy per mesh kind.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh
from rich.console import Console
from rich.table import Table
from scipy.spatial.transform import Rotation

from r3d.core.asset_training import LossBar, asset_parser, run_script, train_info
from r3d.core.progress import task_progress
from r3d.mesh.shapes import CLASSES, grid_to_mesh, random_shape, sdf_grid
from r3d.models.tiny_shapes import coeffs_to_grid, grid_to_coeffs
from r3d.rewards.semantic import (
    PointNetClassifier,
    PointNetConfig,
    load_pointnet,
    mesh_points,
    save_pointnet,
)

console = Console()
KINDS = ("fine", "policy", "blocky")
FINE_RES = 48


def _truncated(grid: np.ndarray, k: int, res: int) -> trimesh.Trimesh | None:
    coeffs = grid_to_coeffs(torch.from_numpy(grid)[None].double(), k)
    return grid_to_mesh(coeffs_to_grid(coeffs, res)[0].float().numpy())


def corrupt(mesh: trimesh.Trimesh, rng: np.random.Generator, p: float = 0.3) -> trimesh.Trimesh:
    """Vertex noise, floaters and a hole, each applied with probability ``p``."""
    verts, faces = np.asarray(mesh.vertices).copy(), np.asarray(mesh.faces).copy()
    if rng.random() < p:  # hole: drop the faces near a random surface point
        centre = verts[rng.integers(len(verts))]
        near = np.linalg.norm(verts[faces].mean(axis=1) - centre, axis=1) < rng.uniform(0.08, 0.2)
        if near.sum() < len(faces) // 2:
            faces = faces[~near]
    if rng.random() < p:  # Gaussian vertex noise
        verts = verts + rng.normal(0.0, rng.uniform(0.005, 0.02), size=verts.shape)
    parts = [trimesh.Trimesh(verts, faces, process=False)]
    if rng.random() < p:  # one or two small floating blobs
        for _ in range(rng.integers(1, 3)):
            blob = trimesh.creation.icosphere(subdivisions=1, radius=rng.uniform(0.03, 0.08))
            blob.apply_translation(rng.uniform(-0.85, 0.85, size=3))
            parts.append(blob)
    return trimesh.util.concatenate(parts) if len(parts) > 1 else parts[0]


def make_clouds(
    per_class: int, num_points: int, seed: int, corrupt_p: float
) -> tuple[np.ndarray, np.ndarray]:
    """Clouds (N, len(KINDS), num_points, 3) float32 (unit sphere) and labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    rng.shuffle(labels)
    clouds = np.zeros((len(labels), len(KINDS), num_points, 3), dtype=np.float32)
    with task_progress(console) as bar:
        task = bar.add_task("procedural meshes", total=len(labels), info="")
        for n, c in enumerate(labels):
            shape = random_shape(int(c), rng, max_tilt_deg=None if rng.random() < 0.5 else 20.0)
            grid = sdf_grid(shape, FINE_RES)
            meshes = [
                grid_to_mesh(grid),
                _truncated(grid, int(rng.choice([8, 10, 12])), int(rng.choice([24, 32]))),
                _truncated(grid, 16, 16),
            ]
            for j, mesh in enumerate(meshes):
                clouds[n, j] = mesh_points(
                    corrupt(mesh, rng, corrupt_p), num_points, int(rng.integers(2**31))
                )
            bar.advance(task)
    return clouds, labels


def augment(points: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random rotation (yaw, or SO(3) for every other cloud), anisotropic scale 0.9–1.1 and jitter of
    (B, P, 3) clouds, then back into the unit sphere."""
    b = points.shape[0]
    seeds = torch.randint(2**31 - 1, (b,), generator=g).tolist()
    rots = []
    for i, s in enumerate(seeds):
        if i % 2:
            rots.append(Rotation.random(random_state=s).as_matrix())
        else:
            rots.append(Rotation.from_euler("z", np.random.default_rng(s).uniform(0, 2 * np.pi)).as_matrix())
    rot_t = torch.from_numpy(np.stack(rots)).float().transpose(1, 2)
    scale = 0.9 + 0.2 * torch.rand(b, 1, 3, generator=g)
    points = (points @ rot_t) * scale + 0.005 * torch.randn(points.shape, generator=g)
    points = points - points.mean(dim=1, keepdim=True)
    return points / points.norm(dim=-1).amax(dim=1).clamp_min(1e-9)[:, None, None]


@torch.no_grad()
def accuracy(model: PointNetClassifier, clouds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy per mesh kind and per class (over all kinds)."""
    out: dict[str, float] = {}
    preds = np.stack([model(torch.from_numpy(clouds[:, j])).argmax(-1).numpy() for j in range(len(KINDS))], 1)
    for j, kind in enumerate(KINDS):
        out[f"acc_{kind}"] = float((preds[:, j] == labels).mean())
    for c, name in enumerate(CLASSES):
        out[f"acc_{name}"] = float((preds[labels == c] == c).mean())
    return out


def fit(
    model: PointNetClassifier,
    clouds: np.ndarray,
    labels: np.ndarray,
    steps: int,
    batch: int,
    lr: float,
    train_points: int,
    seed: int,
) -> float:
    """Train ``model`` on clouds (N, kinds, P, 3) with labels (N,): AdamW, one-cycle schedule,
    cross-entropy with label smoothing 0.05, random ``train_points`` subsets, :func:`augment`.
    Returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(clouds).flatten(0, 1)  # (N·kinds, P, 3)
    y = torch.from_numpy(labels).repeat_interleave(clouds.shape[1])
    loss = torch.zeros(())
    with LossBar(console, "train", steps, every=50, digits=3) as bar:
        for _ in range(steps):
            idx = torch.randint(len(y), (batch,), generator=g)
            sub = torch.randperm(data.shape[1], generator=g)[:train_points]
            logits = model(augment(data[idx][:, sub], g))
            loss = torch.nn.functional.cross_entropy(logits, y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.step(loss.item())
    return float(loss.item())


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    t0 = time.time()
    clouds, labels = make_clouds(args.per_class, args.num_points, args.seed, args.corrupt)
    test_clouds, test_labels = make_clouds(
        args.test_per_class, args.num_points, args.seed + 10_000, args.corrupt
    )
    t_data = time.time() - t0
    model = PointNetClassifier(PointNetConfig(point_widths=tuple(args.widths)))
    t1 = time.time()
    final_loss = fit(model, clouds, labels, args.steps, args.batch, args.lr, args.train_points, args.seed)
    t_train = time.time() - t1
    info = train_info("r3d.rewards.train_semantic", args, t_data, t_train, final_loss=round(final_loss, 4))
    save_pointnet(args.out, model, {"train": info})
    model = load_pointnet(args.out)  # evaluate exactly what was saved (fp16 weights)
    acc = accuracy(model, test_clouds, test_labels)
    table = Table(
        title=f"semantic classifier, held-out ({args.test_per_class} shapes/class × {len(KINDS)} kinds)"
    )
    table.add_column("split")
    table.add_column("top-1 accuracy", justify="right")
    for key, value in acc.items():
        table.add_row(key.removeprefix("acc_"), f"{value:.3f}")
    console.print(table)
    console.print(f"data {t_data:.0f} s, training {t_train:.0f} s; wrote {args.out}")
    save_pointnet(args.out, model, {"train": info, "held_out": acc})
    return {"info": info, "held_out": acc}


def main(argv: list[str] | None = None) -> None:
    p = asset_parser(
        __doc__.split("\n\n")[0],
        steps=2500,
        batch=32,
        lr=1e-3,
        per_class=250,
        metrics_help="also write the training info and held-out accuracy to this JSON file",
    )
    p.add_argument("--test-per-class", type=int, default=40)
    p.add_argument(
        "--num-points", type=int, default=1024, help="points stored per mesh (and used at test time)"
    )
    p.add_argument("--train-points", type=int, default=512, help="random subset of points per training cloud")
    p.add_argument("--widths", type=int, nargs="+", default=list(PointNetConfig.point_widths))
    p.add_argument("--corrupt", type=float, default=0.3, help="probability of each corruption kind")
    run_script(p, argv, train)


if __name__ == "__main__":
    main()
