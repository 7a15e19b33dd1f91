"""Reward server under load: throughput, latency and answers at 1, 50 and 200 concurrent raw clients,
with and without 20 slow clients, and the server's peak memory for the largest body it accepts.

The server is ``python -m r3d.rewards.server`` in its own process on 127.0.0.1 (default options: its
worker pool, read timeout and body limit as users get them). Clients are threads of this process, each
sending its requests one after the other over fresh connections with ``http.client`` — no retries, so
a reset or timeout counts as unanswered. Every request scores one 12-face box with the ``geometry``
reward. The 20 slow clients are slow-loris connections that declare a 1 MB body and send a byte every
0.5 s (reconnecting when the server cuts them off), opened before the clients start.

The memory probe starts a second server with ``--max-body-mb`` = the body size and a trivial reward
(:class:`SizeReward`, so the decode is what is measured), sends one body of exactly that size (a float32
tensor), and reads the server's resident memory before and its peak after (``VmHWM``).

    python benchmarks/bench_server.py [--quick] [--out benchmarks/results]

Loopback only; every loop is bounded (fixed request counts, joins with timeouts).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, caption, md_table, ratio, write_result  # noqa: E402

LEVELS = (1, 50, 200)
SLOW_CLIENTS = 20
CLIENT_TIMEOUT_S = 60.0
WARMUP = 150  # requests before measuring: more than the server's 64 workers


class SizeReward:
    """Trivial reward for the memory probe: the number of elements of each tensor artifact."""

    name = "size"
    higher_is_better = True
    value_range = (0.0, float("inf"))
    differentiable = False

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, Any]:
        import torch

        return {"size": torch.tensor([float(a.numel()) for a in artifacts])}


class Server:
    """``python -m r3d.rewards.server`` in a child process on a free loopback port."""

    def __init__(self, reward: str, *options: str) -> None:
        cmd = [sys.executable, "-m", "r3d.rewards.server", "--reward", reward, "--port", "0", *options]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("serving reward"):
            self.close()
            raise RuntimeError(f"the reward server did not start: {line.strip() or 'no output'}")
        self.port = int(line.split()[4].rsplit(":", 1)[1].split("/")[0])

    def status_mib(self, field: str) -> float:
        """``VmRSS`` / ``VmHWM`` of the server process, MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{field} not in /proc/{self.proc.pid}/status")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def box_body() -> bytes:
    """One ``POST /score`` body: a 12-face box as exact arrays."""
    import trimesh

    from r3d.rewards.remote import encode_artifact

    return json.dumps({"artifacts": [encode_artifact(trimesh.creation.box())], "prompts": [""]}).encode()


def post(port: int, parts: Sequence[bytes]) -> tuple[int | None, float]:
    """One raw POST /score of the concatenated ``parts`` (sent piece by piece) → (status or None, s)."""
    tic = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    try:
        conn.putrequest("POST", "/score")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(sum(len(p) for p in parts)))
        conn.endheaders()
        for part in parts:
            conn.send(part)
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - tic
    except OSError:
        return None, time.perf_counter() - tic
    finally:
        conn.close()


def slow_loris(port: int, stop: threading.Event) -> None:
    """Hold a connection by dribbling a declared 1 MB body, a byte every 0.5 s, until ``stop``."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000\r\n\r\n")
                while not stop.wait(0.5):
                    sock.sendall(b" ")
        except OSError:  # cut off by the server's read deadline: come back
            stop.wait(0.1)


def run_level(port: int, clients: int, per_client: int, slow: int) -> dict[str, Any]:
    """``clients`` threads × ``per_client`` requests released together, ``slow`` slow-loris beside them."""
    body = [box_body()]
    stop = threading.Event()
    lorises = [threading.Thread(target=slow_loris, args=(port, stop), daemon=True) for _ in range(slow)]
    for t in lorises:
        t.start()
    if slow:
        time.sleep(1.0)  # let them take their workers
    results: list[tuple[int | None, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        barrier.wait()
        mine = [post(port, body) for _ in range(per_client)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    tic = time.perf_counter()
    for t in threads:
        t.join(timeout=CLIENT_TIMEOUT_S * per_client + 10)
    wall = time.perf_counter() - tic
    stop.set()
    for t in lorises:
        t.join(timeout=10)
    ok = sorted(s for code, s in results if code == 200)
    p95 = ok[min(len(ok) - 1, int(0.95 * len(ok)))] if ok else None
    return {
        "clients": clients,
        "slow_clients": slow,
        "requests": clients * per_client,
        "answered": len(ok),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "p50_ms": 1e3 * statistics.median(ok) if ok else None,
        "p95_ms": 1e3 * p95 if p95 is not None else None,
    }


def memory_probe(body_mib: int) -> dict[str, Any]:
    """Server RSS before and peak after one body of exactly ``body_mib`` MiB (the limit it is started with)."""
    import numpy as np

    size = body_mib << 20
    head = b'{"prompts": [""], "artifacts": [{"type": "tensor", "array": {"dtype": "<f4", "shape": ['
    tail = b'"}}]}'
    n = (size - len(head) - len(tail) - 40) * 3 // 16  # float32 values whose base64 fits
    data = base64.b64encode(np.zeros(n, np.float32).tobytes())
    middle = f'{n}], "data": "'.encode()
    parts = [head, middle, data, tail]
    parts.insert(1, b" " * (size - sum(len(p) for p in parts)))  # JSON whitespace: exactly the limit
    server = Server("benchmarks.bench_server:SizeReward", "--max-body-mb", str(body_mib))
    try:
        assert post(server.port, [b'{"prompts": [], "artifacts": []}'])[0] == 200  # warm: imports done
        before = server.status_mib("VmRSS")
        status, seconds = post(server.port, parts)
        peak = server.status_mib("VmHWM")
        too_big, _ = post(server.port, [b" " * (size + 1)])
    finally:
        server.close()
    return {
        "body_mib": size / 2**20,
        "decoded_mib": 4 * n / 2**20,
        "status": status,
        "over_limit_status": too_big,
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
    }


def measure(quick: bool = False, on_run: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every level with and without slow clients against one server, then the memory probe."""
    per_client = {1: 50, 50: 2, 200: 1} if quick else {1: 200, 50: 8, 200: 4}
    body_mib = 32 if quick else 256
    runs = []
    server = Server("geometry")
    try:
        for _ in range(WARMUP):  # lazy imports, and the first request of every worker thread (~10 ms)
            post(server.port, [box_body()])
        for slow in (0, SLOW_CLIENTS):
            for clients in LEVELS:
                if on_run is not None:
                    on_run(f"server {clients} clients, {slow} slow")
                runs.append(run_level(server.port, clients, per_client[clients], slow))
    finally:
        server.close()
    if on_run is not None:
        on_run(f"server memory, {body_mib} MiB body")
    return {"per_client": per_client, "runs": runs, "memory": memory_probe(body_mib)}


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """The load table (one row per level and slow-client count) and the memory table."""
    base = {r["slow_clients"]: r["requests_per_s"] for r in result["runs"] if r["clients"] == 1}
    rows = [
        [
            r["clients"],
            r["slow_clients"],
            f"{r['answered']} / {r['requests']}",
            f"{r['requests_per_s']:.0f}",
            _ms(r["p50_ms"]),
            _ms(r["p95_ms"]),
            ratio(r["requests_per_s"], base.get(r["slow_clients"])),
        ]
        for r in result["runs"]
    ]
    head = [
        "clients",
        "slow clients",
        "answered",
        "requests / s",
        "p50 ms",
        "p95 ms",
        "req/s vs 1 client (×)",
    ]
    note = (
        "Raw http.client clients (threads of one process, no retries), each scoring one 12-face box with "
        f"`geometry`, after {WARMUP} warm-up requests; server `python -m r3d.rewards.server` with its "
        "defaults in its own process."
    )
    m = result["memory"]
    growth = m["peak_rss_mib"] - m["rss_before_mib"]
    mem_rows = [
        [
            f"{m['body_mib']:.0f}",
            f"{m['decoded_mib']:.0f}",
            m["status"],
            m["over_limit_status"],
            f"{m['rss_before_mib']:.0f}",
            f"{m['peak_rss_mib']:.0f}",
            f"{growth:.0f}",
            ratio(growth, m["body_mib"]),
        ]
    ]
    mem_head = [
        "body MiB",
        "decoded MiB",
        "status",
        "1 byte more",
        "RSS before MiB",
        "peak MiB",
        "growth MiB",
        "growth / body (×)",
    ]
    mem_note = (
        "One body of exactly --max-body-mb (a float32 tensor, base64), trivial reward; "
        "peak = the server's VmHWM after it."
    )
    return [
        caption(info, note),
        "",
        *md_table(head, rows),
        "",
        caption(info, mem_note),
        "",
        *md_table(mem_head, mem_rows),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests and a 32 MiB body (about 30 s)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    result = measure(args.quick, on_run=lambda msg: print(msg, flush=True))
    write_result(Path(args.out), "server", "Reward server under load", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
