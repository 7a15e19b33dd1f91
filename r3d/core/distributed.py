"""Multi-process data parallelism on torch.distributed (launched by torchrun or accelerate launch).

Every rank holds the same trainable weights, optimizer state and RNG streams; each rank samples
and scores its slice of the global batch; rewards are gathered before advantages, gradients are
averaged (all-reduce, exactly what DDP does for the trainable parameters) before each optimizer
step; rank 0 alone writes logs and checkpoints. CPU runs use the gloo backend; on GPUs CUDA tensors
go over NCCL and CPU tensors (rewards, scalars) over gloo.

Launchers (all set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):

- ``torchrun --standalone --nproc_per_node N -m r3d grpo RECIPE``
- ``accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no
  --dynamo_backend no [--main_process_port 0] -m r3d grpo RECIPE`` — also on a CPU-only machine
  (accelerate then runs torchrun, and r3d picks gloo). ``accelerate launch --cpu --num_processes N``
  starts ONE process unless given an MPI hostfile (``--mpirun_hostfile``); r3d warns when it sees that.
- ``mpirun -n N python -m r3d grpo RECIPE`` (Open MPI / MPICH / MVAPICH ranks are read like
  accelerate reads them; MASTER_ADDR defaults to 127.0.0.1 and MASTER_PORT to 29500).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist

from r3d.core.errors import R3DError

# (r3d's variable, the MPI launchers' names for it), in the order accelerate reads them.
_MPI_ENV = {
    "RANK": ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"),
    "WORLD_SIZE": ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"),
    "LOCAL_RANK": ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK"),
}


def _env_from_mpi() -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK (and a local rendezvous) from an MPI launcher's variables."""
    for name, sources in _MPI_ENV.items():
        value = next((os.environ[s] for s in sources if s in os.environ), None)
        if value is not None:
            os.environ.setdefault(name, value)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")


_joined = False  # init_from_env ran in this process


def init_from_env() -> None:
    """Join the process group the launcher describes (no-op for 1 process); pins the GPU to LOCAL_RANK.

    Called once per run by the entry point (``r3d grpo``) before the policy is built, so that "cuda"
    means this rank's GPU. Idempotent: later calls in the same process return at once (no second
    warning, no second group). ``R3D_DIST_BACKEND=gloo`` forces gloo on a GPU machine.
    """
    global _joined
    if _joined:
        return
    _join()
    _joined = True


def _join() -> None:
    if not dist.is_available() or dist.is_initialized():
        return
    _env_from_mpi()
    if _launched_world_size() <= 1:
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
            warnings.warn(
                "accelerate launch --cpu --num_processes N started a single process (its multi-CPU mode "
                "needs --mpirun_hostfile); use accelerate launch --multi_gpu --num_processes N (gloo is "
                "picked on CPU) or torchrun --nproc_per_node N",
                stacklevel=3,
            )
        return
    backend = "gloo"
    if torch.cuda.is_available() and os.environ.get("R3D_DIST_BACKEND") != "gloo":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)


def _launched_world_size() -> int:
    """The process count the launcher's variables announce (WORLD_SIZE, or an MPI launcher's)."""
    for name in ("WORLD_SIZE", *_MPI_ENV["WORLD_SIZE"]):
        if name in os.environ:
            return int(os.environ[name])
    return 1


def check_joined() -> None:
    """R3DError when a launcher started several processes but this one has not joined their group
    (each would train alone and all would write the same run folder); call :func:`init_from_env`."""
    n = _launched_world_size()
    if n > 1 and world_size() == 1:
        raise R3DError(
            f"launched as one of {n} processes but not joined to their group: call "
            "r3d.core.distributed.init_from_env() before building the policy"
        )


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


def broadcast_from_main(tensors: list[torch.Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (DDP's start-of-training sync)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


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


def shutdown() -> None:
    """Leave the process group at the end of a run: a barrier, then ``destroy_process_group``.

    Without it a rank that exits first can abort another one whose gloo threads are still connected
    ("terminate called without an active exception"). No-op for one process.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
