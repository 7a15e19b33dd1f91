"""Redirects against r3d's HTTP clients (issue 19, item 2): a redirecting reward server and a redirecting
judge as loopback servers. The API key must never reach another origin, and a POST answered 301/302/303
must not turn into a GET whose answer (a "Score: 7", a made-up reward) is used.

Two loopback servers on different ports are two origins (scheme, host and port differ in the port).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest
import torch
from test_remote_rewards import LoopbackServer

from r3d.chat.client import OpenAIChatClient, OpenAIEndpoint, Query
from r3d.core.errors import R3DError
from r3d.core.http import origin
from r3d.rewards.remote import RemoteReward

KEY = "sk-never-elsewhere"
SCORE = {"name": "evil", "scores": {"evil": [0.7]}}
INFO = {"name": "evil", "higher_is_better": True, "value_range": [0, 1], "differentiable": False}
CHAT = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Score: 7"}}]}


class Origin(LoopbackServer):
    """Loopback server that records every request (method, path, Authorization, body) and answers by
    ``route(method, path)`` → (status, extra headers, JSON object)."""

    def __init__(self, route):
        self.route, self.seen = route, []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                with server.lock:
                    server.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
                status, headers, obj = server.route(self.command, self.path)
                payload = json.dumps(obj).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.serve(Handler)


def redirect(code, location, answer=SCORE):
    """Route: every path except ``location``'s is redirected there with ``code``; it answers ``answer``."""

    def route(method, path):
        if urllib.parse.urlsplit(location).path == path:
            return 200, {}, answer
        return code, {"Location": location}, {"error": "moved"}

    return route


def everything(method, path):
    return 200, {}, INFO if path.endswith("/info") else CHAT if "chat" in path else SCORE


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("R3D_TEST_KEY", KEY)
    return "R3D_TEST_KEY"


def reward(url, key_env):
    return RemoteReward(url, name="mine", retries=2, backoff_s=0.01, timeout_s=5.0, api_key_env=key_env)


def test_origin_makes_default_ports_explicit():
    """http://h and http://h:80 are one origin; another port, scheme or host is another."""
    assert origin("http://H/a") == origin("http://h:80/b") == ("http", "h", 80)
    assert origin("https://h/a") == ("https", "h", 443)
    assert len({origin(u) for u in ("http://h:1/", "http://h:2/", "https://h:1/", "http://g:1/")}) == 4


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_post_redirected_to_another_origin_is_refused_and_the_key_stays_home(code, key):
    """Bug caught: urlopen followed 301/302/303 to any host with the Authorization header and used the
    GET's "score". Now the POST fails at once (one request, not retried) and the other origin never
    hears from the client."""
    with Origin(everything) as evil, Origin(redirect(code, evil.base + "/steal")) as home:
        with pytest.raises(
            R3DError, match=rf"HTTP {code}: redirect of a POST to another origin not followed"
        ):
            reward(home.base + "/score", key)([torch.zeros(1)], ["p"])
        assert len(home.seen) == 1 and home.seen[0][2] == f"Bearer {KEY}"
    assert evil.seen == []


def test_post_303_to_the_same_origin_is_not_turned_into_a_get(key):
    """A 303 after POST would make urllib GET the new address and use its answer; r3d refuses it."""
    with Origin(lambda m, p: (200, {}, SCORE) if m == "GET" else (303, {"Location": "/result"}, {})) as home:
        with pytest.raises(R3DError, match="HTTP 303: redirect of a POST to a GET not followed"):
            reward(home.base + "/score", key)([torch.zeros(1)], ["p"])
        assert [(m, p) for m, p, _, _ in home.seen] == [("POST", "/score")]


@pytest.mark.parametrize("code", [307, 308])
def test_same_origin_307_308_repost_with_body_and_key(code, key):
    """A same-origin 307/308 (a moved endpoint) is followed as a POST with the same body and key."""
    with Origin(redirect(code, "/v2/score")) as home:
        out = reward(home.base + "/score", key)([torch.zeros(1)], ["p"])
    assert out["mine"].tolist() == pytest.approx([0.7])
    (m1, p1, a1, b1), (m2, p2, a2, b2) = home.seen
    assert (m1, p1, m2, p2) == ("POST", "/score", "POST", "/v2/score")
    assert a1 == a2 == f"Bearer {KEY}" and b1 == b2 and json.loads(b2)["prompts"] == ["p"]


def test_get_follows_a_cross_origin_redirect_without_the_key(key):
    """GET /info may be redirected elsewhere (a CDN, a proxy): it is followed, but the Authorization
    header is dropped at the origin change (a same-origin hop keeps it)."""
    with Origin(everything) as other:
        hops = {
            "/info": (302, {"Location": "/info2"}, {}),
            "/info2": (301, {"Location": other.base + "/info"}, {}),
        }
        with Origin(lambda m, p: hops[p]) as home:
            remote = RemoteReward(home.base + "/score", api_key_env=key)
    assert remote.name == "evil"
    assert [(p, a) for _, p, a, _ in home.seen] == [("/info", f"Bearer {KEY}"), ("/info2", f"Bearer {KEY}")]
    assert [(p, a) for _, p, a, _ in other.seen] == [("/info", None)]


@pytest.mark.parametrize("code", [302, 303, 307])
def test_judge_redirect_never_yields_a_score_nor_leaks_the_key(code, monkeypatch):
    """The OpenAI-compatible judge client (bench-edit, vlm_judge): a redirected POST gives an error
    answer after one request — never the other server's "Score: 7" — and the key is not sent there."""
    monkeypatch.setenv("R3D_JUDGE_KEY", KEY)
    with Origin(everything) as evil, Origin(redirect(code, evil.base + "/steal/chat/completions")) as home:
        endpoint = OpenAIEndpoint(base_url=home.base + "/v1", api_key_env="R3D_JUDGE_KEY", backoff_s=0.01)
        (answer,) = OpenAIChatClient(endpoint, "judge", 16).generate([Query("Score this.", [])])
    assert answer.text is None and answer.requests == 1
    assert answer.error.startswith(f"HTTP {code}: redirect of a POST to another origin not followed")
    assert home.seen[0][2] == f"Bearer {KEY}" and evil.seen == []
