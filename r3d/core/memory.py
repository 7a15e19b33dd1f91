"""Memory accounting for ``r3d grpo --dry-run``: parameters, optimizer state, activations, totals.

Model-agnostic: it looks at ``nn.Module`` objects and runs callables, and imports no backend.

* Parameters are counted once each (shared tensors by identity) per dtype: bytes = numel · element size.
* Optimizer: AdamW keeps ``exp_avg`` and ``exp_avg_sq`` per trainable parameter, in the parameter's
  dtype (fp32 for peft's LoRA weights), plus gradients of the same size.
* Activations are *measured*, not modelled: :class:`SavedTensorMeter` installs
  ``torch.autograd.graph.saved_tensors_hooks`` and tracks the bytes autograd holds for the backward pass
  (each storage once, parameters and buffers excluded, released when the graph is freed); the peak over
  a forward + backward is the activation memory of that step. No CUDA allocator statistics are used, so
  the same measurement runs on the CPU and on the ``meta`` device (shapes only, nothing allocated).
  Transient buffers that autograd does not keep (attention workspaces, gradients of activations during
  the backward pass) are not included.
* While measuring, ``F.scaled_dot_product_attention`` on meta tensors is routed to the fused
  (flash-style) kernel's meta implementation, which keeps q, k, v, the output and the log-sum-exp, as the fused CUDA kernels
  do; otherwise meta would take the math path and count a full attention matrix per head.
* With gradient checkpointing the meter sees what the checkpoint keeps (each unit's inputs); the
  recomputation of one unit during the backward pass adds :func:`unit_peak` (the largest per-unit saved
  bytes measured with checkpointing off).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

_SHORT_DTYPE = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float64: "fp64",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.uint8: "uint8",
    torch.bool: "bool",
}


def dtype_name(dtype: torch.dtype) -> str:
    """Short dtype name: fp32, bf16, fp16, … (``str(dtype)`` without ``torch.`` otherwise)."""
    return _SHORT_DTYPE.get(dtype, str(dtype).removeprefix("torch."))


def format_bytes(n: float | None) -> str:
    """Human-readable binary size: 512 B, 3.2 KiB, 6.10 GiB; '-' for None."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


# ----------------------------------------------------------------------------- parameters
def find_modules(obj: Any, prefix: str = "", depth: int = 2) -> list[tuple[str, nn.Module]]:
    """The ``nn.Module`` objects ``obj`` holds, by attribute path (``network``, ``model.vae``, …).

    Looks through the attributes of ``obj`` and, ``depth − 1`` levels further, of its non-module
    attribute objects (a policy's model dataclass, a reward's lazily built CLIP embedder); each module
    is listed once, under the first path found.
    """
    found: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def visit(o: Any, path: str, level: int) -> None:
        if isinstance(o, nn.Module):
            if id(o) not in seen:
                seen.add(id(o))
                found.append((path or type(o).__name__, o))
            return
        if level == 0 or isinstance(o, torch.Tensor | str | bytes | int | float | bool | type(None)):
            return
        if isinstance(o, dict | list | tuple):
            return
        attrs = vars(o) if hasattr(o, "__dict__") else {}
        # ``network`` first: it is the module LoRA wraps and the name a reader expects
        for name in sorted(attrs, key=lambda k: (k != "network", k)):
            visit(attrs[name], f"{path}.{name}" if path else name.lstrip("_"), level - 1)

    visit(obj, prefix, depth)
    return found


@dataclass
class ParamCount:
    """Parameter count and bytes, in total and per dtype name ({'bf16': (count, bytes)})."""

    count: int = 0
    bytes: int = 0
    by_dtype: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, t: torch.Tensor) -> None:
        n, b = t.numel(), t.numel() * t.element_size()
        self.count += n
        self.bytes += b
        c, s = self.by_dtype.get(dtype_name(t.dtype), (0, 0))
        self.by_dtype[dtype_name(t.dtype)] = (c + n, s + b)

    @property
    def dtypes(self) -> str:
        return " + ".join(sorted(self.by_dtype)) or "-"


def count_parameters(
    modules: Iterable[nn.Module], trainable: bool | None = None, seen: set[int] | None = None
) -> ParamCount:
    """Parameters of ``modules`` (each tensor once; ``seen`` carries identities across calls).

    ``trainable``: True counts only ``requires_grad`` parameters, False only frozen ones, None all.
    """
    seen = set() if seen is None else seen
    out = ParamCount()
    for module in modules:
        for p in module.parameters():
            if id(p) in seen or (trainable is not None and p.requires_grad != trainable):
                continue
            seen.add(id(p))
            out.add(p)
    return out


def adamw_state_bytes(params: Iterable[torch.Tensor]) -> int:
    """AdamW state: exp_avg + exp_avg_sq in each parameter's dtype (torch's ``zeros_like(p)``)."""
    return sum(2 * p.numel() * p.element_size() for p in params)


# ----------------------------------------------------------------------------- activations
def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    """Identity of a tensor's storage (the StorageImpl address; meta tensors have storages too)."""
    storage = t.untyped_storage()
    return storage._cdata, storage.nbytes()


def _fused_attention_on_meta(sdpa: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``F.scaled_dot_product_attention`` that, on meta tensors, runs the fused (flash-style) kernel,
    whose autograd keeps q, k, v, out and the log-sum-exp — what CUDA's flash / memory-efficient
    kernels keep — instead of the math path's full attention matrix. Other devices: unchanged."""

    def attention(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        opts = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), args, strict=False)) | kwargs
        if q.device.type != "meta" or opts.get("attn_mask") is not None or opts.get("enable_gqa"):
            return sdpa(q, k, v, *args, **kwargs)
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q,
            k,
            v,
            float(opts.get("dropout_p", 0.0)),
            bool(opts.get("is_causal", False)),
            scale=opts.get("scale"),
        )
        return out[0]

    return attention


class _Held:
    """A saved tensor as autograd stores it; releasing it (graph freed) updates the meter."""

    __slots__ = ("tensor", "key", "meter", "__weakref__")

    def __init__(self, tensor: torch.Tensor, key: tuple[int, int] | None, meter: SavedTensorMeter) -> None:
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self) -> None:
        if self.key is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager measuring the bytes autograd keeps for backward (see the module docstring).

    ``peak``: the largest number of bytes held at once; ``total``: bytes of all distinct storages saved.
    ``exclude``: modules whose parameters and buffers are not activations. ``units``: modules whose
    saved bytes are also attributed per unit (``per_unit``, by position in the list).
    """

    def __init__(self, exclude: Iterable[nn.Module] = (), units: list[nn.Module] | None = None) -> None:
        self._excluded = {
            _storage_key(t) for m in exclude for t in [*m.parameters(), *m.buffers()] if t.numel()
        }
        self._refs: dict[tuple[int, int], int] = {}
        self.live = 0
        self.peak = 0
        self.total = 0
        self.units = units or []
        self.per_unit = [0] * len(self.units)
        self._current: int | None = None
        self._handles: list[Any] = []

    def _pack(self, t: torch.Tensor) -> Any:
        key = _storage_key(t) if t.numel() else None
        if key is None or key in self._excluded:
            return _Held(t, None, self)
        count = self._refs.get(key, 0)
        self._refs[key] = count + 1
        if count == 0:
            self.live += key[1]
            self.total += key[1]
            self.peak = max(self.peak, self.live)
            if self._current is not None:
                self.per_unit[self._current] += key[1]
        return _Held(t, key, self)

    @staticmethod
    def _unpack(held: Any) -> torch.Tensor:
        return held.tensor

    def _release(self, key: tuple[int, int]) -> None:
        count = self._refs.get(key, 0) - 1
        if count <= 0:
            self._refs.pop(key, None)
            self.live -= key[1]
        else:
            self._refs[key] = count

    def _enter_unit(self, index: int) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._current = index

        return hook

    def _leave_unit(self, *_: Any) -> None:
        self._current = None

    def __enter__(self) -> SavedTensorMeter:
        for i, unit in enumerate(self.units):
            self._handles.append(unit.register_forward_pre_hook(self._enter_unit(i)))
            self._handles.append(unit.register_forward_hook(self._leave_unit))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        # patched module-wide (not a TorchFunctionMode): checkpoint recomputation in the backward pass
        # must take the same attention path as the forward
        self._sdpa = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = _fused_attention_on_meta(self._sdpa)
        return self

    def __exit__(self, *exc: Any) -> None:
        F.scaled_dot_product_attention = self._sdpa
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def saved_peak(fn: Callable[[], Any], exclude: Iterable[nn.Module] = ()) -> int:
    """Peak bytes autograd keeps while ``fn()`` runs (``fn`` does its own forward and backward)."""
    meter = SavedTensorMeter(exclude)
    with meter:
        fn()
    return meter.peak


def unit_peak(fn: Callable[[], Any], units: list[nn.Module], exclude: Iterable[nn.Module] = ()) -> int:
    """The largest saved bytes of one unit (e.g. a transformer block) during ``fn()`` — what the
    recomputation of one checkpointed unit adds in the backward pass. Run ``fn`` with checkpointing off."""
    meter = SavedTensorMeter(exclude, units)
    with meter:
        fn()
    return max(meter.per_unit, default=0)


@dataclass
class Activation:
    """A measured activation size: ``bytes`` at ``batch`` and how it was obtained (``method``)."""

    bytes: int
    batch: int
    method: str


def measure_batched(
    measure: Callable[[int], int], batch_size: int, device: str, exact: bool | None = None
) -> Activation:
    """Activation bytes at ``batch_size`` from ``measure(b)`` (bytes at micro-batch b).

    On the meta device (``exact``) the full batch is measured directly (it costs nothing); elsewhere
    batches 1 and 2 are measured and extrapolated linearly: m(B) = m(1) + (B − 1)·(m(2) − m(1)).
    """
    exact = device == "meta" if exact is None else exact
    if exact or batch_size <= 2:
        return Activation(measure(batch_size), batch_size, f"measured at batch {batch_size} on {device}")
    one, two = measure(1), measure(2)
    value = one + (batch_size - 1) * max(two - one, 0)
    return Activation(value, batch_size, f"batch 1, 2 on {device} → {batch_size} (linear)")


# ----------------------------------------------------------------------------- devices
def available_memory(device: str) -> tuple[int | None, str]:
    """(free bytes, where the figure comes from) for ``device``: CUDA free memory, else system RAM."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None, "no CUDA device on this machine"
        free, total = torch.cuda.mem_get_info(dev)
        name = torch.cuda.get_device_name(dev)
        return int(free), f"{name}: {format_bytes(free)} free of {format_bytes(total)}"
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                info = {line.split(":")[0]: line.split()[1] for line in fh}
            free = int(info["MemAvailable"]) * 1024
            return (
                free,
                f"system RAM: {format_bytes(free)} available of {format_bytes(int(info['MemTotal']) * 1024)}",
            )
        except (OSError, KeyError, ValueError, IndexError):
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            return pages * size, "system RAM (total; availability unknown)"
    return None, f"no free-memory figure for device {device}"


# ----------------------------------------------------------------------------- the estimate
@dataclass
class Row:
    """One line of the estimate. ``count``: parameters (None for activations / buffers)."""

    component: str
    kind: str
    bytes: int | None
    device: str
    count: int | None = None
    dtypes: str = "-"
    note: str = ""


@dataclass
class MemoryEstimate:
    """Rows plus totals per device (``cuda`` and ``cuda:0`` count as one device)."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_params(self, component: str, kind: str, count: ParamCount, device: str, note: str = "") -> None:
        if count.count:
            self.rows.append(Row(component, kind, count.bytes, device, count.count, count.dtypes, note))

    def add(self, component: str, kind: str, nbytes: int | None, device: str, note: str = "") -> None:
        self.rows.append(Row(component, kind, nbytes, device, None, "-", note))

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            key = device_key(row.device)
            out[key] = out.get(key, 0) + (row.bytes or 0)
        return out

    def budget(self) -> list[dict[str, Any]]:
        """Per device: estimated total, free memory here (or None) and whether the total fits."""
        out = []
        for device, total in self.totals().items():
            free, source = available_memory(device)
            fits = None if free is None else total <= free
            out.append({"device": device, "total": total, "available": free, "source": source, "fits": fits})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "budget": self.budget(),
            "notes": self.notes,
        }


def device_key(device: str) -> str:
    """The device a row's bytes count against: ``cuda`` → ``cuda:0``, ``cpu``, …"""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{dev.index or 0}"
    return dev.type
