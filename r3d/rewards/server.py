"""Serve any registered reward over HTTP for :class:`r3d.rewards.remote.RemoteReward`.

    python -m r3d.rewards.server --reward geometry --port 8000
    python -m r3d.rewards.server --reward semantic --option device=cuda --host 0.0.0.0 --port 8001

Endpoints (JSON; the format is in :mod:`r3d.rewards.remote`): ``POST /score`` scores a batch;
``GET /info`` describes the reward; ``GET /health`` answers ``{"ok": true}``. Requests are read
concurrently but scored one at a time (reward adapters need not be thread-safe). A malformed request
gets 400, a reward that raises R3DError on the input 422, any other failure 500, each with
``{"error": "one line"}``. Standard library only (``http.server``); put it behind a reverse proxy to
expose it beyond a trusted network.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
import yaml

from r3d.core.errors import R3DError
from r3d.rewards.remote import decode_artifact

MAX_BODY_BYTES = 1 << 30  # 1 GiB per request


def parse_request(payload: Any) -> tuple[list[Any], list[str]]:
    """(artifacts, prompts) of a decoded ``POST /score`` body; malformed input → ValueError / R3DError."""
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object with 'artifacts' and 'prompts'")
    artifacts, prompts = payload.get("artifacts"), payload.get("prompts")
    if not isinstance(artifacts, list) or not isinstance(prompts, list) or len(artifacts) != len(prompts):
        raise ValueError("'artifacts' and 'prompts' must be lists of the same length")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("'prompts' must hold strings")
    return [decode_artifact(a) for a in artifacts], prompts


class RewardServer:
    """A threaded HTTP server around one reward; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(self, reward: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.reward = reward
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # one line per request is noise at RL rates
                pass

            def _send(self, code: int, obj: dict[str, Any]) -> None:
                body = json.dumps(obj).encode("utf-8")
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path == "/health":
                    return self._send(200, {"ok": True})
                if path in ("", "/info"):
                    return self._send(200, server.info())
                return self._send(404, {"error": f"no endpoint GET {self.path}; use /info or /health"})

            def do_POST(self) -> None:
                if self.path.split("?")[0].rstrip("/") != "/score":
                    return self._send(404, {"error": f"no endpoint POST {self.path}; use /score"})
                try:
                    size = int(self.headers.get("Content-Length", "-1"))
                except ValueError:
                    size = -1
                if not 0 <= size <= MAX_BODY_BYTES:
                    return self._send(413 if size > 0 else 411, {"error": "bad or missing Content-Length"})
                try:
                    artifacts, prompts = parse_request(json.loads(self.rfile.read(size)))
                except (ValueError, R3DError) as exc:
                    return self._send(400, {"error": f"bad request: {exc}"})
                try:
                    return self._send(200, server.score(artifacts, prompts))
                except R3DError as exc:
                    return self._send(422, {"error": str(exc)})
                except Exception as exc:  # report, keep serving
                    return self._send(500, {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The scoring endpoint, e.g. ``http://127.0.0.1:8000/score``."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/score"

    def info(self) -> dict[str, Any]:
        r = self.reward
        return {
            "name": r.name,
            "higher_is_better": bool(getattr(r, "higher_is_better", True)),
            "value_range": list(getattr(r, "value_range", (0.0, 1.0))),
            "differentiable": False,
        }

    def score(self, artifacts: list[Any], prompts: list[str]) -> dict[str, Any]:
        """``{"name": headline, "scores": {component: [float] * B}}`` (one batch at a time)."""
        with self.lock, torch.no_grad():
            scores = self.reward(artifacts, prompts)
        out = {k: torch.as_tensor(v, dtype=torch.float32).reshape(-1).tolist() for k, v in scores.items()}
        return {"name": self.reward.name, "scores": out}

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def __enter__(self) -> RewardServer:
        """Serve from a background thread (tests, notebooks) until the block ends."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
        self.httpd.server_close()


def _options(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise R3DError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    return options


def main(argv: list[str] | None = None) -> int:
    """``python -m r3d.rewards.server``; returns the exit code (2 for a user mistake)."""
    from r3d.core.registry import REWARDS, build_reward

    ap = argparse.ArgumentParser(prog="python -m r3d.rewards.server", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reward", required=True, help=f"reward name ({', '.join(sorted(REWARDS))}) or module:Class"
    )
    ap.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="reward option (YAML value)"
    )
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 = all)")
    ap.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    args = ap.parse_args(argv)
    try:
        reward = build_reward(args.reward, **_options(args.option))
        server = RewardServer(reward, args.host, args.port)
    except (R3DError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"serving reward '{reward.name}' at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
