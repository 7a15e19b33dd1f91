"""Plots of a run's metrics (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from r3d.core.io import atomic_write, read_jsonl


def reward_curves(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Training reward (mean ± std) and held-out evaluation reward per component vs iteration → PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    if not records:
        return None
    path = Path(path) if path else run_dir / "reward_curve.png"
    train = [r for r in records if "reward" in r]
    evals = [r for r in records if "eval/reward" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if train:
        it = [r["iteration"] for r in train]
        mean = [r["reward"] for r in train]
        std = [r.get("reward_std", 0.0) for r in train]
        ax.plot(it, mean, label="train reward (mean)")
        ax.fill_between(
            it,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            alpha=0.2,
        )
    if evals:
        ax.plot(
            [r["iteration"] for r in evals], [r["eval/reward"] for r in evals], "o-", label="held-out reward"
        )
    ax.set_xlabel("iteration")
    ax.set_title("total reward")
    ax.legend()
    ax = axes[1]
    keys = sorted({k for r in evals for k in r if k.startswith("eval/") and k != "eval/reward"})
    for key in keys:
        pts = [(r["iteration"], r[key]) for r in evals if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key.removeprefix("eval/"))
    ax.set_xlabel("iteration")
    ax.set_title("held-out components")
    if keys:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path
