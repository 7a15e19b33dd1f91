"""Train r3d's tiny text–motion evaluators on the synthetic motion set.

    python -m r3d.motion.train_evaluator --kind t2m   # → r3d/assets/motion_t2m_tiny.safetensors
    python -m r3d.motion.train_evaluator --kind tmr   # → r3d/assets/motion_tmr_tiny.safetensors

Both are trained contrastively (symmetric InfoNCE over the batch, temperature τ, negatives with the
same motion label as the positive masked out, as TMR filters near-duplicate texts): the T2M-style
model with logits −‖t − m‖ / τ so that Euclidean matching distance is what it learns, the TMR-style
model with cosine logits. Text features are hashed word vectors (no GloVe / DistilBERT download).
Normalisation statistics: plain per-dimension mean/std of the training frames (deliberately not the
generator's grouped statistics, so the generator → evaluator re-normalisation is exercised).
At the end the held-out R-precision / matching score of the ground-truth motions is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from r3d.core.asset_training import LossBar, saved_line, start_training
from r3d.motion.evaluators import ASSETS, T2MEvaluator, TMREvaluator, save_evaluator
from r3d.motion.metrics import matching_score, r_precision
from r3d.motion.synthetic import MotionDataset, add_training_arguments, load_or_build
from r3d.motion.text import HashedWordVectors, token_sequences

TINY_T2M_DIMS = {
    "dim_pose": 263,
    "dim_word": 64,
    "dim_text_hidden": 128,
    "dim_coemb_hidden": 128,
    "dim_motion_hidden": 128,
    "dim_movement_enc_hidden": 128,
    "dim_movement_latent": 128,
}
TINY_TMR_DIMS = {
    "nfeats": 263,
    "text_nfeats": 64,
    "latent_dim": 128,
    "ff_size": 256,
    "num_layers": 2,
    "num_heads": 4,
}


def plain_stats(ds: MotionDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (floored at 1e-2) over the valid frames of a data set."""
    frames = np.concatenate([f[:n] for f, n in zip(ds.features, ds.lengths, strict=True)])
    return frames.mean(0).astype(np.float32), np.maximum(frames.std(0), 1e-2).astype(np.float32)


def build(kind: str, mean: np.ndarray, std: np.ndarray) -> T2MEvaluator | TMREvaluator:
    if kind == "t2m":
        return T2MEvaluator(
            TINY_T2M_DIMS, torch.from_numpy(mean), torch.from_numpy(std), HashedWordVectors(64, "t2m")
        )
    return TMREvaluator(
        TINY_TMR_DIMS,
        torch.from_numpy(mean),
        torch.from_numpy(std),
        lambda caps: token_sequences(caps, 64, "tmr"),
    )


def co_embed(
    model: T2MEvaluator | TMREvaluator, captions: list[str], motions: torch.Tensor, lengths: torch.Tensor
):
    """Differentiable (text, motion) embeddings of a batch of raw motions (input order)."""
    if isinstance(model, T2MEvaluator):
        x = model.prepare_motions(motions, lengths)
        return model.get_co_embeddings(*model.text_inputs(captions), x, lengths)
    x = (motions - model.mean) / (model.std + 1e-12)
    return model.encode_text(*model.text_features(captions)), model.encode_motion(x, lengths)


def contrastive_loss(
    model, text: torch.Tensor, motion: torch.Tensor, labels: list[str], tau: float
) -> torch.Tensor:
    """Symmetric InfoNCE; off-diagonal pairs with the same label are removed from the denominators."""
    if isinstance(model, T2MEvaluator):
        logits = -torch.cdist(text, motion) / tau
    else:
        t = torch.nn.functional.normalize(text, dim=-1)
        m = torch.nn.functional.normalize(motion, dim=-1)
        logits = t @ m.T / tau
    lab = np.array(labels)
    same = torch.from_numpy(lab[:, None] == lab[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(labels))
    return 0.5 * (
        torch.nn.functional.cross_entropy(logits, target)
        + torch.nn.functional.cross_entropy(logits.T, target)
    )


@torch.no_grad()
def evaluate_gt(model: T2MEvaluator | TMREvaluator, ds: MotionDataset, seed: int = 0) -> dict[str, float]:
    """Ground-truth R-precision (batches of 32, shuffled once) and matching score on a data set."""
    model.eval()
    order = np.random.default_rng(seed).permutation(len(ds))
    texts, motions = [], []
    for chunk in np.array_split(order, max(1, len(order) // 64)):
        sub = ds.subset(chunk)
        texts.append(model.embed_texts(sub.captions))
        motions.append(model.embed_motions(torch.from_numpy(sub.features), torch.from_numpy(sub.lengths)))
    t, m = torch.cat(texts).numpy(), torch.cat(motions).numpy()
    if isinstance(model, TMREvaluator):  # R-precision by cosine: rank on normalised embeddings
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
    rp = r_precision(t, m, 32, 3)
    return {
        "top1": float(rp[0]),
        "top2": float(rp[1]),
        "top3": float(rp[2]),
        "matching": matching_score(t, m, 32),
    }


def train(args: argparse.Namespace) -> dict[str, float]:
    console, rng, t0 = start_training(args)
    train_ds = load_or_build(args.n_train, args.data_seed, args.cache_dir)
    test_ds = load_or_build(args.n_test, args.data_seed + 1, args.cache_dir)
    console.print(f"data: {len(train_ds)} train / {len(test_ds)} held-out motions ({time.time() - t0:.0f}s)")
    mean, std = plain_stats(train_ds)
    model = build(args.kind, mean, std)
    params = [p for n, p in model.named_parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    feats, lens = torch.from_numpy(train_ds.features), torch.from_numpy(train_ds.lengths)
    with LossBar(console, f"train {args.kind}", args.steps, keep=0.95, digits=3) as bar:
        model.train()
        for _ in range(args.steps):
            idx = rng.choice(len(train_ds), args.batch_size, replace=False)
            text, motion = co_embed(model, [train_ds.captions[i] for i in idx], feats[idx], lens[idx])
            loss = contrastive_loss(model, text, motion, [train_ds.labels[i] for i in idx], args.tau)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            bar.step(loss.item())
    model.eval()
    report = evaluate_gt(model, test_ds)
    meta = {
        "kind": args.kind,
        "trained_by": f"python -m r3d.motion.train_evaluator --kind {args.kind} --steps {args.steps} "
        f"--n-train {args.n_train} --seed {args.seed}",
        "held_out_gt": report,
    }
    if args.kind == "t2m":
        meta["word_vectors"] = {"type": "hashed", "dim": 64, "salt": "t2m"}
    else:
        meta["text_features"] = {"type": "hashed", "dim": 64, "salt": "tmr"}
    out = Path(args.out or ASSETS / f"motion_{args.kind}_tiny.safetensors")
    save_evaluator(model, out, meta)
    console.print(f"{saved_line(out, t0)}; held-out GT: {json.dumps(report)}")
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=["t2m", "tmr"], default="t2m")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--n-test", type=int, default=640)
    add_training_arguments(ap)
    train(ap.parse_args(argv))


if __name__ == "__main__":
    main()
