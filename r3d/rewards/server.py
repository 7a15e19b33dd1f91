"""Serve any registered reward over HTTP for :class:`r3d.rewards.remote.RemoteReward`.

    python -m r3d.rewards.server --reward geometry --port 8000
    python -m r3d.rewards.server --reward semantic --option device=cuda --host 0.0.0.0 --port 8001

Endpoints (JSON; the format is in :mod:`r3d.rewards.remote`): ``POST /score`` scores a batch;
``GET /info`` describes the reward; ``GET /health`` answers ``{"ok": true}``. Standard library only
(``http.server``); put it behind a reverse proxy to expose it beyond a trusted network.

Load and abuse: a listen queue of :data:`BACKLOG` and a fixed pool of ``--workers`` threads (so 200
clients at once are all answered, queued rather than reset); each client has ``--read-timeout``
seconds to send its whole request, so slow clients cannot hold workers for long; bodies over
``--max-body-mb`` get 413 unread; the body is decoded as it streams in (base64 arrays straight into
their buffers), so memory grows by about the decoded size, not a multiple of the body. Requests are
read concurrently but scored one at a time (reward adapters need not be thread-safe).

Answers: malformed JSON, nesting deeper than :data:`MAX_DEPTH`, or an artifact that is not well formed
(see :mod:`r3d.rewards.remote`, e.g. a face index out of range) 400; no Content-Length 411; too big
413; request not received in time 408; too many body bytes in flight 503 with ``Retry-After``; a
reward that raises R3DError on the input 422; any other failure 500; each with ``{"error": "one
line"}``. r3d's client retries only 408/409/425/429, 5xx and transport failures, never another 4xx.
"""

from __future__ import annotations

import argparse
import binascii
import io
import json
import logging
import queue
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
import yaml

from r3d.core.errors import R3DError
from r3d.rewards.remote import Decoded, decode_artifact

log = logging.getLogger("r3d.rewards.server")

MAX_BODY_BYTES = 256 << 20  #: default largest request body (bytes); --max-body-mb changes it
MAX_DEPTH = 32  #: deepest JSON nesting accepted (the wire format needs 5)
WORKERS = 64  #: default connections handled at once; more wait in the listen queue
BACKLOG = 1024  #: listen queue (the kernel caps it at net.core.somaxconn)
READ_TIMEOUT_S = 60.0  #: default time a client has to send its whole request (headers and body)
WRITE_TIMEOUT_S = 30.0  #: time a client has to take the answer
LINGER_S = 2.0  #: after an early answer, how long unread body bytes are drained so the client sees it
_CHUNK = 1 << 20


# ------------------------------------------------------------------------------- streaming JSON body


class _Body:
    """The bytes of one request body, pulled from ``stream`` in chunks; ends at ``length`` bytes."""

    def __init__(self, stream: Any, length: int) -> None:
        self.stream, self.left = stream, length
        self.buf, self.pos = b"", 0

    def more(self) -> bool:
        """Append the next chunk to the unread bytes; False at the end of the body."""
        if self.left <= 0:
            return False
        chunk = self.stream.read1(min(_CHUNK, self.left))
        if not chunk:
            raise ValueError(f"the body ended {self.left} bytes before its Content-Length")
        self.left -= len(chunk)
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def ensure(self, n: int) -> None:
        """Have at least ``n`` unread bytes buffered, or all that remain."""
        while len(self.buf) - self.pos < n and self.more():
            pass

    def drain(self) -> None:
        """Read and drop the rest of the body (so that the client can read the answer)."""
        self.buf, self.pos = b"", 0
        while self.more():
            self.buf = b""


_WS = re.compile(rb"[ \t\r\n]*")
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_STRING_STOP = re.compile(rb'["\\]')
_MAX_TOKEN = 128  # longest number accepted, in characters


class _Reader:
    """A JSON reader over a :class:`_Body` that never holds the whole body: strings stream through, and
    the base64 value of every ``"data"`` key is decoded as it arrives into a :class:`Decoded`.

    Depth beyond ``max_depth``, NaN / Infinity, trailing bytes, non-UTF-8 text and bad base64 raise
    ValueError.
    """

    def __init__(self, body: _Body, max_depth: int) -> None:
        self.body, self.max_depth = body, max_depth

    def _skip_ws(self) -> bytes:
        """The next non-space byte (not consumed), b"" at the end of the body."""
        b = self.body
        while True:
            b.pos = _WS.match(b.buf, b.pos).end()
            if b.pos < len(b.buf):
                return b.buf[b.pos : b.pos + 1]
            if not b.more():
                return b""

    def _expect(self, char: bytes) -> None:
        got = self._skip_ws()
        if got != char:
            raise ValueError(f"expected {char.decode()!r}, got {got.decode('latin-1') or 'the end'!r}")
        self.body.pos += 1

    def document(self) -> Any:
        value = self._value(0, None)
        if self._skip_ws():
            raise ValueError("extra data after the JSON value")
        return value

    def _value(self, depth: int, key: str | None) -> Any:
        char = self._skip_ws()
        if char in (b"{", b"["):
            if depth >= self.max_depth:
                raise ValueError(f"JSON nested deeper than {self.max_depth} levels")
            self.body.pos += 1
            return self._object(depth + 1) if char == b"{" else self._array(depth + 1)
        if char == b'"':
            self.body.pos += 1
            return self._base64() if key == "data" else self._string()
        return self._scalar()

    def _object(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._skip_ws() == b"}":
            self.body.pos += 1
            return out
        while True:
            self._expect(b'"')
            key = self._string()
            self._expect(b":")
            out[key] = self._value(depth, key)
            if self._skip_ws() == b"}":
                self.body.pos += 1
                return out
            self._expect(b",")

    def _array(self, depth: int) -> list[Any]:
        out: list[Any] = []
        if self._skip_ws() == b"]":
            self.body.pos += 1
            return out
        while True:
            out.append(self._value(depth, None))
            if self._skip_ws() == b"]":
                self.body.pos += 1
                return out
            self._expect(b",")

    def _scalar(self) -> Any:
        b = self.body
        b.ensure(_MAX_TOKEN + 1)
        match = _SCALAR.match(b.buf, b.pos)
        if match is None or (match.end() == len(b.buf) and b.left > 0):
            raise ValueError(f"not a JSON value at {b.buf[b.pos : b.pos + 20].decode('latin-1')!r}")
        b.pos = match.end()
        return json.loads(match.group())

    def _raw_string(self, on_piece: Any) -> None:
        """Feed the raw bytes up to the closing quote (escapes undone by the caller) to ``on_piece``."""
        b = self.body
        while True:
            stop = _STRING_STOP.search(b.buf, b.pos)
            if stop is None:
                on_piece(b.buf[b.pos :])
                b.buf, b.pos = b"", 0
                if not b.more():
                    raise ValueError("unterminated string")
                continue
            on_piece(b.buf[b.pos : stop.start()])
            b.pos = stop.start()
            if b.buf[b.pos : b.pos + 1] == b'"':
                b.pos += 1
                return
            b.ensure(6)  # an escape: backslash + one character, or \uXXXX
            on_piece(b.buf[b.pos : b.pos + 2])
            b.pos += 2

    def _string(self) -> str:
        parts: list[bytes] = []
        self._raw_string(parts.append)
        raw = b"".join(parts)
        if b"\\" not in raw:
            return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
        return json.loads(b'"' + raw + b'"')

    def _base64(self) -> Decoded:
        out, pending = Decoded(), bytearray()

        def piece(raw: bytes) -> None:
            if raw[:1] == b"\\":
                if raw != b"\\/":
                    raise ValueError("bad base64: an escape other than \\/ in a data string")
                raw = b"/"
            pending.extend(raw)
            cut = len(pending) - len(pending) % 4
            if cut and pending[cut - 1 : cut] != b"=":  # keep the padded last quantum for the end
                out.extend(binascii.a2b_base64(pending[:cut], strict_mode=True))
                del pending[:cut]

        try:
            self._raw_string(piece)
            if pending:
                out.extend(binascii.a2b_base64(pending, strict_mode=True))
        except binascii.Error as exc:
            raise ValueError(f"bad base64 ({exc})") from None
        return out


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


# ------------------------------------------------------------------------------------------ server


class _DeadlineSocket(io.RawIOBase):
    """Raw reads from a socket that all end by one deadline (``time.monotonic()`` seconds): a client
    that dribbles its request byte by byte cannot hold a worker longer than the read timeout."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("read timeout")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _PooledHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a long listen queue and a fixed pool of ``workers`` daemon threads
    (instead of one new thread per connection): connections beyond the pool wait, queued, not refused."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, workers: int) -> None:
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        super().__init__(address, handler)
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for thread in self.workers:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.jobs.put((request, client_address))

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.process_request_thread(*job)  # handles, logs errors, closes the connection

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        for _ in self.workers:
            self.jobs.put(None)


class RewardServer:
    """A pooled HTTP server around one reward; ``port=0`` picks a free port (see :attr:`url`).

    Args:
        reward: any r3d reward (called one batch at a time).
        host, port: where to listen (127.0.0.1 by default).
        max_body_bytes: largest ``POST /score`` body; a bigger one is answered 413 unread.
        workers: connections served at once; more wait in a listen queue of :data:`BACKLOG`.
        read_timeout_s: time a client has to send its whole request (headers and body), else 408 or a
            closed connection.
        max_inflight_bytes: request bodies being read or scored at once, in declared bytes; a request
            that would exceed it is answered 503 with ``Retry-After`` (default 4 × max_body_bytes).
    """

    def __init__(
        self,
        reward: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_body_bytes: int = MAX_BODY_BYTES,
        workers: int = WORKERS,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_inflight_bytes: int | None = None,
    ) -> None:
        if max_body_bytes < 1 or workers < 1 or read_timeout_s <= 0:
            raise R3DError("reward server: max_body_bytes and workers must be >= 1, read_timeout_s > 0")
        self.reward = reward
        self.lock = threading.Lock()
        self.max_body_bytes, self.read_timeout_s = int(max_body_bytes), float(read_timeout_s)
        self.max_inflight_bytes = int(max_inflight_bytes or 4 * self.max_body_bytes)
        self._inflight, self._inflight_lock = 0, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # the answer's headers and body go out without a 40 ms stall

            def log_message(self, *args: Any) -> None:  # one line per request is noise at RL rates
                pass

            def setup(self) -> None:
                super().setup()
                self.rfile.close()  # replaced by a reader bound to the request's deadline
                deadline = time.monotonic() + server.read_timeout_s
                self.rfile = io.BufferedReader(_DeadlineSocket(self.connection, deadline), 1 << 16)
                self.body_left = 0  # unread body bytes, drained before closing after an early answer

            def _send(self, code: int, obj: dict[str, Any], retry_after_s: int | None = None) -> None:
                body = json.dumps(obj).encode("utf-8")
                try:
                    self.connection.settimeout(WRITE_TIMEOUT_S)
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if retry_after_s is not None:
                        self.send_header("Retry-After", str(retry_after_s))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:  # the client gave up (timeout, reset)
                    self.close_connection = True
                    self.body_left = 0

            def finish(self) -> None:
                """After an answer sent before the body was read (413, 400, 408...): half-close, then drop
                what the client still sends for up to LINGER_S (outside the body budget) — closing with
                unread bytes would reset the connection and lose the answer."""
                super().finish()
                if self.body_left <= 0:
                    return
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                    end = time.monotonic() + LINGER_S
                    while (left := end - time.monotonic()) > 0:
                        self.connection.settimeout(left)
                        if not self.connection.recv(_CHUNK):
                            break
                except OSError:
                    pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path == "/health":
                    return self._send(200, {"ok": True})
                if path in ("", "/info"):
                    return self._send(200, server.info())
                return self._send(404, {"error": f"no endpoint GET {self.path}; use /info or /health"})

            def do_POST(self) -> None:
                try:
                    size = int(self.headers.get("Content-Length", "-1"))
                except ValueError:
                    size = -1
                self.body_left = max(size, 0)
                if self.path.split("?")[0].rstrip("/") != "/score":
                    return self._send(404, {"error": f"no endpoint POST {self.path}; use /score"})
                if size < 0 or self.headers.get("Transfer-Encoding"):
                    return self._send(411, {"error": "a body with a Content-Length is required"})
                if size > server.max_body_bytes:
                    limit = server.max_body_bytes
                    return self._send(413, {"error": f"body of {size} bytes exceeds the limit of {limit}"})
                if not server._reserve(size):
                    busy = f"server busy: {server.max_inflight_bytes} bytes of request bodies in flight"
                    return self._send(503, {"error": busy}, retry_after_s=1)
                try:
                    self._score(size)
                finally:
                    server._release(size)

            def _score(self, size: int) -> None:
                body = _Body(self.rfile, size)
                try:
                    artifacts, prompts = parse_request(_Reader(body, MAX_DEPTH).document())
                    self.body_left = 0
                except TimeoutError:
                    self.close_connection = True
                    return self._send(
                        408, {"error": f"request not received within {server.read_timeout_s:g} s"}
                    )
                except (ValueError, R3DError) as exc:
                    self.body_left = body.left
                    return self._send(400, {"error": f"bad request: {' '.join(str(exc).split())[:300]}"})
                try:
                    return self._send(200, server.score(artifacts, prompts))
                except R3DError as exc:
                    return self._send(422, {"error": str(exc)})
                except Exception as exc:  # report, keep serving
                    return self._send(500, {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})

        self.httpd = _PooledHTTPServer((host, port), Handler, workers)
        self._thread: threading.Thread | None = None

    def _reserve(self, size: int) -> bool:
        with self._inflight_lock:
            if self._inflight + size > self.max_inflight_bytes:
                return False
            self._inflight += size
            return True

    def _release(self, size: int) -> None:
        with self._inflight_lock:
            self._inflight -= size

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
    ap.add_argument(
        "--max-body-mb",
        type=float,
        default=MAX_BODY_BYTES / 2**20,
        help="largest request body, MiB (bigger: 413) (default: %(default)g)",
    )
    ap.add_argument(
        "--workers", type=int, default=WORKERS, help="connections served at once (default: %(default)s)"
    )
    ap.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT_S,
        help="seconds a client has to send its whole request (default: %(default)g)",
    )
    args = ap.parse_args(argv)
    try:
        reward = build_reward(args.reward, **_options(args.option))
        server = RewardServer(
            reward,
            args.host,
            args.port,
            max_body_bytes=int(args.max_body_mb * 2**20),
            workers=args.workers,
            read_timeout_s=args.read_timeout,
        )
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
