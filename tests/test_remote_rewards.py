"""Rewards over HTTP: the ``remote`` client against r3d's reward server and scripted loopback servers, and
the ``vlm_judge`` reward against the OpenAI-compatible fake judge server of the bench-edit tests.

Every server binds 127.0.0.1 on an ephemeral port and lives only inside its test.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from test_edit_openai_judge import FakeJudgeServer
from toy_policy import ToyReward, make

from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.grpo import GRPOTrainer
from r3d.core.registry import build_reward
from r3d.core.rewards import Reward, RewardMix
from r3d.motion.artifacts import Motion
from r3d.rewards.geometry import GeometryReward
from r3d.rewards.remote import RemoteReward, decode_artifact, encode_artifact
from r3d.rewards.server import RewardServer
from r3d.rewards.server import main as server_main

MESHES = Path("/work/shared/data/meshes")


def shared_meshes() -> list[trimesh.Trimesh]:
    from r3d.mesh.io import load_mesh

    names = ["cow", "stanford-bunny", "teapot", "spot", "fandisk"]
    if not all((MESHES / f"{n}.obj").is_file() for n in names):
        pytest.skip("shared real meshes not present")
    return [load_mesh(MESHES / f"{n}.obj") for n in names]


def test_remote_geometry_is_bit_identical_to_the_local_reward():
    """Real meshes (and an empty decode) sent as exact arrays in concurrent requests of 2 score exactly
    what the local reward scores, every component; the name and range come from GET /info."""
    meshes = shared_meshes()
    artifacts = [meshes[0], meshes[1], None, *meshes[2:]]
    local = GeometryReward()(artifacts, [""] * len(artifacts))
    with RewardServer(GeometryReward(), port=0) as server:
        remote = RemoteReward(server.url, batch_size=2, concurrency=3)
        assert isinstance(remote, Reward) and remote.name == "geometry" and remote.value_range == (0.0, 1.0)
        scores = remote(artifacts, [""] * len(artifacts))
    assert list(scores) == list(local)
    for key in local:
        assert torch.equal(scores[key], local[key]), key
    assert scores["geometry"][2] == 0.0


def test_artifacts_survive_the_wire_format():
    """Exact round trips through JSON: images (mode kept), motions, tensors, arrays, meshes as arrays;
    PLY / GLB meshes keep faces and float32 vertices; None stays None."""
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA")
    gray = Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8), "L")
    motion = Motion(rng.standard_normal((12, 263)).astype(np.float32), fps=20)
    tensor = torch.randn(3, 2, dtype=torch.float64)
    array = rng.integers(-5, 5, (4,)).astype(np.int64)
    box = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    box.vertices += rng.standard_normal(box.vertices.shape) * 1e-9  # float64 detail that float32 drops

    def wire(obj, **kw):
        return decode_artifact(json.loads(json.dumps(encode_artifact(obj, **kw))))

    for image in (rgba, gray):
        back = wire(image)
        assert back.mode == image.mode and np.array_equal(np.asarray(back), np.asarray(image))
    back = wire(motion)
    assert isinstance(back, Motion) and back.fps == 20 and np.array_equal(back.features, motion.features)
    assert torch.equal(wire(tensor), tensor) and np.array_equal(wire(array), array)
    exact = wire(box)
    assert np.array_equal(exact.vertices, box.vertices) and np.array_equal(exact.faces, box.faces)
    for fmt in ("ply", "glb"):
        back = wire(box, mesh_format=fmt)
        assert np.array_equal(back.vertices, box.vertices.astype(np.float32)), fmt
        assert np.array_equal(back.faces, box.faces), fmt
    assert wire(None) is None
    with pytest.raises(R3DError, match="unknown artifact type"):
        decode_artifact({"type": "video"})
    with pytest.raises(R3DError, match="cannot send a dict"):
        encode_artifact({"a": 1})


def test_a_recipe_trains_identically_with_the_reward_served_over_http(tmp_path):
    """GRPO on the toy policy with its reward behind the loopback server (tensors on the wire) gives the
    same metrics, bit for bit, as with the local reward."""
    cfg = GRPORecipe.model_validate(
        {
            "run": {"seed": 2},
            "prompts": {"train": ["left", "right"]},
            "sampler": {"num_steps": 4},
            "rewards": {"remote": {"weight": 1.0}},
            "train": {"iterations": 2, "prompts_per_iteration": 2, "group_size": 4, "batch_size": 8},
            "eval": {"every": 0, "samples_per_prompt": 2},
        }
    )

    def run(reward, name):
        trainer = GRPOTrainer(cfg, make(), RewardMix([reward], [1.0]), tmp_path / name, log=lambda _: None)
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in trainer.train()]

    with RewardServer(ToyReward(), port=0) as server:
        remote = run(build_reward("remote", url=server.url, batch_size=3), "remote")
    assert remote == run(ToyReward(), "local")
    assert "reward/side/raw" in remote[1]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) that serves ``handler`` inside a with block."""

    def serve(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class ScriptedServer(LoopbackServer):
    """Loopback server whose answer to the n-th POST (from 0) is ``script(n, body)`` → (status, obj) or
    ("sleep", seconds, status, obj); records the largest number of requests in flight at once."""

    def __init__(self, script):
        self.script, self.count, self.active, self.max_active = script, 0, 0, 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    n, server.count = server.count, server.count + 1
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                action = server.script(n, body)
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = action[2:]
                with server.lock:
                    server.active -= 1
                payload = json.dumps(action[1]).encode()
                try:
                    self.send_response(action[0])
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.serve(Handler)

    @property
    def url(self):
        return self.base + "/score"


def echo(body):
    """Score = the first value of each tensor artifact (so the order of the answers can be checked)."""
    values = [float(decode_artifact(a).reshape(-1)[0]) for a in body["artifacts"]]
    return 200, {"name": "echo", "scores": {"echo": values, "twice": [2 * v for v in values]}}


def client(url, **kw):
    return RemoteReward(url, name="mine", backoff_s=0.01, **{"retries": 2, "timeout_s": 2.0, **kw})


def test_requests_go_concurrently_bounded_and_come_back_in_order():
    """12 artifacts in requests of 2 with 3 in flight at most: 6 requests, never more than 3 at once,
    about two rounds of 0.25 s instead of six, and the scores in the artifacts' order."""
    with ScriptedServer(lambda n, body: ("sleep", 0.25, *echo(body))) as server:
        tic = time.perf_counter()
        out = client(server.url, batch_size=2, concurrency=3)(
            [torch.tensor([float(i)]) for i in range(12)], [""] * 12
        )
        elapsed = time.perf_counter() - tic
    assert server.count == 6 and server.max_active == 3 and elapsed < 1.2
    assert out["mine"].tolist() == list(range(12)) and out["twice"].tolist() == [2 * i for i in range(12)]


@pytest.mark.parametrize(
    ("script", "requests", "message"),
    [
        (lambda n, b: (503, {"error": "warming up"}) if n == 0 else echo(b), 2, None),
        (
            lambda n, b: (500, {"error": "CUDA out of memory"}),
            3,
            "HTTP 500: CUDA out of memory .after 3 request",
        ),
        (
            lambda n, b: (400, {"error": "bad request: no artifacts"}),
            1,
            "HTTP 400: bad request: no artifacts",
        ),
        (lambda n, b: ("sleep", 1.0, 200, {}) if n == 0 else echo(b), 2, None),
        (lambda n, b: (200, {"scores": {"echo": [1.0]}}), 1, "needs 'name' and 'scores'"),
        (lambda n, b: (200, {"name": "echo", "scores": {"echo": [1.0, 2.0]}}), 1, "must list 1 scores"),
        (lambda n, b: (200, {"name": "echo", "scores": {"echo": [None]}}), 1, "non-numeric"),
    ],
    ids=["503-then-ok", "500-always", "400", "timeout-then-ok", "no-name", "wrong-length", "null-score"],
)
def test_retries_and_one_line_errors(script, requests, message):
    """Retryable failures (5xx, timeouts) are retried with backoff; client errors and malformed answers
    fail at once; every failure is one R3DError naming the reward and URL, never a made-up score."""
    with ScriptedServer(script) as server:
        reward = client(server.url, timeout_s=0.5)
        if message is None:
            assert reward([torch.tensor([3.0])], ["p"])["mine"].tolist() == [3.0]
        else:
            with pytest.raises(R3DError, match=message) as err:
                reward([torch.tensor([3.0])], ["p"])
            assert f"reward 'mine' at {server.url}" in str(err.value) and "\n" not in str(err.value)
    assert server.count == requests


def test_unreachable_server_and_bad_options():
    """A closed port is a connection error after the retries; bad options fail at construction."""
    with ScriptedServer(echo) as server:
        url = server.url
    with pytest.raises(R3DError, match="connection error.*after 2 request"):
        client(url, retries=1)([None], [""])
    with pytest.raises(R3DError, match="url must be http"):
        RemoteReward("localhost:8000/score", name="x")
    with pytest.raises(R3DError, match="mesh_format"):
        RemoteReward("http://h/score", name="x", mesh_format="obj")
    with pytest.raises(R3DError, match="R3D_NO_SUCH_KEY is not set"):
        RemoteReward("http://h/score", name="x", api_key_env="R3D_NO_SUCH_KEY")


class PickyReward(ToyReward):
    """Raises R3DError on the prompt "bad" and a plain error on "crash"."""

    def __call__(self, artifacts, prompts):
        if "bad" in prompts:
            raise R3DError("prompt 'bad' is not a shape")
        if "crash" in prompts:
            raise RuntimeError("boom")
        return super().__call__(artifacts, prompts)


def test_server_status_codes():
    """The server answers 422 (not retried) when the reward rejects the input, 500 (retried) when it
    crashes, 400 for a malformed body, and keeps serving afterwards."""
    with RewardServer(PickyReward(), port=0) as server:
        reward = RemoteReward(server.url, retries=1, backoff_s=0.01)
        x = [torch.tensor([1.0, 0.0])]
        with pytest.raises(R3DError, match="HTTP 422: prompt 'bad' is not a shape .after 1 request"):
            reward(x, ["bad"])
        with pytest.raises(R3DError, match="HTTP 500: RuntimeError: boom .after 2 request"):
            reward(x, ["crash"])
        with pytest.raises(R3DError, match="HTTP 400: bad request: 'artifacts' and 'prompts'"):
            reward._call(server.url, {"artifacts": [None], "prompts": []})
        assert reward(x, ["right"])["side"].shape == (1,)


def test_server_command_line(capsys):
    """``python -m r3d.rewards.server`` serves a registered reward on a free port; a wrong reward name
    is a one-line error with exit code 2."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "r3d.rewards.server", "--reward", "geometry", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--option", "smooth_angle_deg=40"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving reward 'geometry' at http://127.0.0.1:"), line
        remote = RemoteReward(line.split()[4])
        box = trimesh.creation.box()
        assert torch.equal(
            remote([box], [""])["geometry"], GeometryReward(smooth_angle_deg=40)([box])["geometry"]
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert server_main(["--reward", "geometri"]) == 2
    assert capsys.readouterr().err == "error: unknown reward 'geometri'; did you mean 'geometry'?\n"


# ---------------------------------------------------------------------------------------------- vlm


def judge_script(text, attempt):
    """Answers by prompt: a readable score, a /10 fraction, prose without a score, or HTTP 500."""
    for prompt, action in {
        '"a cube"': ("text", "Score: 7"),
        '"a red square"': ("text", "I would say 8/10."),
        '"a pyramid"': ("text", "A nice pyramid!"),
        '"a chair"': ("status", 500),
    }.items():
        if prompt in text:
            return action
    return ("status", 400)


def test_vlm_judge_scores_and_never_invents_one(monkeypatch, caplog):
    """Meshes (rendered) and images are judged through the OpenAI-compatible endpoint; score/10 when the
    answer holds a score; 0 with failed = 1 when it holds none or the request failed after its retries;
    no request for an empty decode; the API key never appears in logs or the repr."""
    from r3d.rewards.vlm import VLMJudgeReward

    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    image = Image.new("RGB", (32, 32), (200, 20, 20))
    mesh = trimesh.creation.box()
    artifacts = [mesh, image, mesh, None, mesh]
    prompts = ["a cube", "a red square", "a pyramid", "a cube", "a chair"]
    with FakeJudgeServer(judge_script) as server, caplog.at_level(logging.WARNING):
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        reward = VLMJudgeReward(model="fake-judge", n_views=2, size=32, retries=1, backoff_s=0.01)
        out = reward(artifacts, prompts)
    assert out["vlm_judge"].tolist() == pytest.approx([0.7, 0.8, 0.0, 0.0, 0.0])
    assert out["failed"].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert reward.failures == 2 and reward.requests == 4
    asked = dict(server.attempts)
    assert sorted(asked.values()) == [1, 1, 1, 2]  # the chair's 500 was retried once
    mesh_q = next(t for t in asked if '"a cube"' in t)
    assert "2 views of one 3D shape" in mesh_q and "to 10 (perfectly)" in mesh_q
    assert "This image was generated" in next(t for t in asked if '"a red square"' in t)
    assert "no score found" in caplog.text and "HTTP 500" in caplog.text
    assert "sk-very-secret" not in caplog.text + repr(reward)


def test_vlm_judge_requests_run_concurrently():
    """8 images with 0.3 s answers and 4 requests in flight take about two rounds, not eight."""
    from r3d.rewards.vlm import VLMJudgeReward

    with FakeJudgeServer(lambda text, attempt: ("sleep", 0.3, "Score: 5")) as server:
        reward = VLMJudgeReward(model="fake", base_url=server.url, concurrency=4, question="{prompt}: score?")
        tic = time.perf_counter()
        out = reward([Image.new("RGB", (8, 8))] * 8, [f"p{i}" for i in range(8)])
        elapsed = time.perf_counter() - tic
    assert out["vlm_judge"].tolist() == [0.5] * 8 and elapsed < 1.5
    assert set(server.attempts) == {f"p{i}: score?" for i in range(8)}


def test_vlm_judge_with_no_server_raises():
    """When no request of a batch is answered the reward raises instead of scoring every sample 0."""
    from r3d.rewards.vlm import VLMJudgeReward

    with ScriptedServer(echo) as server:
        url = server.url.removesuffix("/score") + "/v1"
    reward = VLMJudgeReward(model="fake", base_url=url, retries=0)
    with pytest.raises(R3DError, match="vlm_judge: no answer from .*connection error"):
        reward([Image.new("RGB", (8, 8))], ["x"])
    with pytest.raises(R3DError, match="scores meshes and PIL images"):
        reward([torch.zeros(2)], ["x"])
