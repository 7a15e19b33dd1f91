"""Helpers shared by the benchmark scripts: the machine description, timing, RSS, markdown tables.

Only the standard library is imported at module level, so the open3d worker (which runs under another
Python that may lack torch) can use :func:`timed` too.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny_mesh.yaml"


def default_meshes() -> Path:
    """The shared real test meshes: $R3D_SHARED_MESHES, else ../shared/data/meshes next to the repo."""
    return Path(os.environ.get("R3D_SHARED_MESHES", ROOT.parent / "shared" / "data" / "meshes"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


@functools.cache
def machine_info() -> dict[str, Any]:
    """The machine, collected once per process: CPU model, cores, RAM, OS, Python, torch and its threads.

    ``torch_threads`` is torch's intra-op thread count at the first call (the suite sets it to 1 first);
    ``load_avg_1min`` tells how busy the box was (other processes make timings noisy).
    """
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def machine_line(info: dict[str, Any] | None = None, threads: int | str | None = None) -> str:
    """One line naming the machine, e.g. ``AMD EPYC (x86_64), 2 cores, torch 2.13.0, 1 torch thread``.

    ``threads`` overrides the recorded torch thread count (an int, or a text such as "threads per row").
    """
    info = info or machine_info()
    n = info["torch_threads"] if threads is None else threads
    what = n if isinstance(n, str) else f"{n} torch thread{'s' if n != 1 else ''}"
    return f"{info['cpu']} ({info['arch']}), {info['usable_cores']} cores, torch {info['torch']}, {what}"


def caption(info: dict[str, Any] | None = None, note: str = "", threads: int | str | None = None) -> str:
    """The italic caption line placed above every table: the machine plus an optional note."""
    return f"*Machine: {machine_line(info, threads)}.{' ' + note if note else ''}*"


def timed(fn: Callable[[], T], repeat: int, warmup: int = 0) -> tuple[T, float]:
    """(last result, median wall seconds) of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeat):
        tic = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - tic)
    return out, statistics.median(times)


def ratio(num: float | None, den: float | None) -> str:
    """``num / den`` as ``1.23×``; ``–`` when either is missing or the denominator is 0."""
    if num is None or den is None or den == 0:
        return "–"
    return f"{num / den:.2f}×"


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux /proc; falls back to the peak elsewhere)."""
    rss = _proc_status_mib("VmRSS")
    return peak_rss_mib() if rss is None else rss


def peak_rss_mib() -> float:
    """Peak resident set size of this process's own memory so far, MiB.

    Linux: ``VmHWM`` of /proc/self/status. Not ``getrusage(...).ru_maxrss``: that survives execve, so a
    child started by a big parent would report the parent's peak. Elsewhere ru_maxrss is the fallback.
    """
    hwm = _proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    """Markdown table lines. ``align``: one ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or any(len(r) != len(headers) for r in rows):
        raise ValueError("every row and the alignment need one entry per header")
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return [
        "| " + " | ".join(headers) + " |",
        rule,
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def write_result(out: str | os.PathLike, stem: str, title: str, result: dict, body: list[str]) -> None:
    """``out/<stem>.json`` (the raw result) and ``out/<stem>.md`` (``# title`` + ``body``), both
    atomically; the markdown is printed too. Every bench script ends with this."""
    from r3d.core.io import atomic_write_json, atomic_write_text

    lines = [f"# {title}", "", *body, ""]
    atomic_write_json(Path(out) / f"{stem}.json", result)
    atomic_write_text(Path(out) / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))
