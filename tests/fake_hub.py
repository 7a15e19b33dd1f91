"""A loopback stand-in for the Hugging Face hub (the few endpoints huggingface_hub downloads use).

Serves ``HEAD/GET /{repo}/resolve/{rev}/{path}`` (with Range requests) and
``GET /api/models/{repo}/revision/{rev}``; answers gated / missing repos and files with the hub's
``X-Error-Code`` headers; can cut a file's first download short to exercise resuming, and play a
hostile hub: list any name (``../..`` included), send no ETag or the hub's git-sha1 one, or serve
bytes other than those its ETag describes (``serve``). Binds
127.0.0.1 on an ephemeral port and serves only while the context manager is open.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(
        self,
        repos: dict[str, dict[str, bytes]],
        gated: set[str] = frozenset(),
        cut_first: dict[str, int] | None = None,
        etags: str = "sha256",
        serve: dict[str, bytes] | None = None,
    ):
        self.repos = repos
        self.etags = etags  # "sha256" (LFS files), "git" (regular files: git blob sha1) or "none"
        self.serve = dict(serve or {})  # path -> bytes sent instead of the listed content
        self.gated = set(gated)
        self.cut_first = dict(cut_first or {})  # path -> bytes to send before dropping the first GET
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _error(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, head: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                path = self.path.split("?")[0]
                if path.startswith("/api/models/"):
                    repo = path[len("/api/models/") :].split("/revision/")[0]
                    if repo not in hub.repos:
                        return self._error(404, "RepoNotFound")
                    body = json.dumps(
                        {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in hub.repos[repo]]}
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return None
                if "/resolve/" not in path:
                    return self._error(404, "EntryNotFound")
                repo, rest = path[1:].split("/resolve/", 1)
                filename = rest.split("/", 1)[1]
                if repo not in hub.repos:
                    return self._error(401, "RepoNotFound")
                if repo in hub.gated and not self.headers.get("Authorization"):
                    return self._error(401, "GatedRepo")
                if filename not in hub.repos[repo]:
                    return self._error(404, "EntryNotFound")
                listed = hub.repos[repo][filename]
                data = hub.serve.get(filename, listed)
                start = 0
                rng = self.headers.get("Range")
                if rng and not head:
                    start = int(rng.split("=")[1].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                if hub.etags == "sha256":
                    self.send_header("ETag", '"' + hashlib.sha256(listed).hexdigest() + '"')
                elif hub.etags == "git":
                    blob = f"blob {len(listed)}\0".encode() + listed
                    self.send_header("ETag", '"' + hashlib.sha1(blob).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return None
                cut = hub.cut_first.pop(filename, None)
                if cut is not None:
                    self.wfile.write(data[start : start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                self.wfile.write(data[start:])
                return None

            def do_HEAD(self):  # noqa: N802
                self._serve(head=True)

            def do_GET(self):  # noqa: N802
                self._serve(head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
