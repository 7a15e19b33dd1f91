"""Multi-process data parallelism on torch.distributed (launched by torchrun or accelerate launch).

Every rank holds the same trainable weights, optimizer state and RNG streams; each rank samples
and scores its slice of the global batch; rewards are gathered before advantages, gradients are
averaged (all-reduce, exactly what DDP does for the trainable parameters) before each optimizer
step; rank 0 alone writes logs and checkpoints. CPU runs use the gloo backend.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> None:
    """Join the process group described by torchrun / accelerate's env vars (no-op for 1 process)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = (
            "nccl" if torch.cuda.is_available() and os.environ.get("R3D_DIST_BACKEND") != "gloo" else "gloo"
        )
        dist.init_process_group(backend)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-sized (n, ...) tensors of all ranks in rank order → (world·n, ...)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average .grad of ``params`` over ranks in one flattened all-reduce."""
    if world_size() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def average_scalars(values: dict[str, float]) -> dict[str, float]:
    """Mean of each scalar over ranks (keys must match on every rank)."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (e.g. a Ctrl-C seen by one process)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
