"""The OpenAI-compatible judge against a loopback fake server that answers well, badly, slowly or not
at all: the report's scores and failure counts must come out exactly, and --resume redoes only the
failures.

The fake server binds 127.0.0.1 on an ephemeral port, serves at most ``max_requests`` requests, and
shuts itself down after ``lifetime_s`` seconds. The editor is replaced by an identity editor (the
editor is not under test here), so the runner's real edit and judge phases run in well under a second
per sample.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from r3d.commands.bench_edit import RECORDS, run_bench
from r3d.edit import BenchEditConfig, load_dataset
from r3d.edit.prompts import build_questions


class FakeJudgeServer:
    """OpenAI-compatible ``/v1/chat/completions`` on loopback, scripted per prompt.

    ``script(prompt_text, attempt)`` (attempt counts from 0 per distinct prompt) returns one of
    ``("text", content)``, ``("status", code)``, ``("sleep", seconds, content)`` or ``("garbage", body)``.
    """

    def __init__(self, script, max_requests=300, lifetime_s=90.0):
        self.script = script
        self.max_requests = max_requests
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
                with server.lock:
                    attempt = server.attempts[text]
                    server.attempts[text] += 1
                    total = sum(server.attempts.values())
                action = ("status", 503) if total > server.max_requests else server.script(text, attempt)
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("text", action[2])
                if action[0] == "status":
                    self._send(action[1], b'{"error": "scripted failure"}')
                elif action[0] == "garbage":
                    self._send(200, action[1].encode())
                else:
                    reply = {
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": action[1]}}]
                    }
                    self._send(200, json.dumps(reply).encode())

            def _send(self, code, payload):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.watchdog = threading.Timer(lifetime_s, self.httpd.shutdown)
        self.watchdog.daemon = True

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc):
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class IdentityEditor:
    """Stands in for the diffusers editor: returns the originals (the judge is under test)."""

    loads = 0

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def load(cls, cfg):
        cls.loads += 1
        return cls(cfg)

    def edit(self, images, instructions, seeds):
        return [im.copy() for im in images]

    def close(self):
        pass


@pytest.fixture
def identity_editor(monkeypatch):
    import r3d.edit.editors

    IdentityEditor.loads = 0
    monkeypatch.setattr(r3d.edit.editors, "Editor", IdentityEditor)
    return IdentityEditor


TIMEOUT_S = 1.0


def _cfg(url, protocol="single", limit=None):
    return BenchEditConfig.model_validate(
        {
            "limit": limit,
            "editor": {"model": "identity"},
            "judge": {
                "backend": "openai",
                "model": "fake-judge",
                "protocol": protocol,
                "batch_size": 4,
                "api": {
                    "base_url": url,
                    "timeout_s": TIMEOUT_S,
                    "retries": 2,
                    "backoff_s": 0.01,
                    "concurrency": 4,
                },
            },
        }
    )


def _prompt_index(protocol, limit=None):
    """prompt text → (sample id, question name, strict?) for every question the judge can ask."""
    index = {}
    for sample in load_dataset().samples[:limit]:
        for q in build_questions(sample, protocol, compare_original=False):
            index[q.prompt] = (sample.id, q.name, False)
            index[q.strict_prompt] = (sample.id, q.name, True)
    return index


# sample id → (script for a plain prompt by attempt, script for the strict retry, expected score or None)
SINGLE = {
    "physics-ball-shelf": (lambda a: ("text", "Score: 7"), None, 7.0),
    "physics-tilted-glass": (lambda a: ("text", "8.5/10"), None, 8.5),
    "environment-house-winter": (lambda a: ("text", "The edit looks fine overall."), ("text", "8"), 8.0),
    "environment-tree-rain": (lambda a: ("text", "Looks good!"), ("text", "Great job"), None),
    "social-handshake": (lambda a: ("status", 500) if a == 0 else ("text", "Rating: 6"), None, 6.0),
    "social-birthday-guests": (lambda a: ("status", 500), None, None),
    "causal-candle-hours": (
        lambda a: ("sleep", TIMEOUT_S + 0.5, "late") if a == 0 else ("text", '{"score": 4}'),
        None,
        4.0,
    ),
    "causal-ice-sun": (lambda a: ("text", "Score: 15"), ("text", "15"), None),
    "referential-middle-cup": (
        lambda a: ("garbage", "<html>502</html>") if a == 0 else ("text", "I would rate this a 3."),
        None,
        3.0,
    ),
    "referential-larger-square": (lambda a: ("text", "Score: 10/10"), None, 10.0),
}


def _single_script(index):
    def script(text, attempt):
        if text not in index:
            return ("status", 400)
        sample_id, _, strict = index[text]
        plain, strict_answer, _ = SINGLE[sample_id]
        return strict_answer if strict else plain(attempt)

    return script


def test_scores_and_failure_counts_are_exact(tmp_path, identity_editor):
    """A mix of valid, unparseable, failing, slow and garbled answers gives exactly the scores the
    script implies; failures are null with raw text and error, counted per category; the stricter
    retry rescues one answer and no score is ever invented."""
    index = _prompt_index("single")
    with FakeJudgeServer(_single_script(index)) as server:
        result = run_bench(_cfg(server.url), tmp_path, progress=False)
    report = result.report
    by_cat: dict[str, list[float]] = {}
    fails: Counter[str] = Counter()
    for sample in load_dataset().samples:
        expected = SINGLE[sample.id][2]
        if expected is None:
            fails[sample.category] += 1
        else:
            by_cat.setdefault(sample.category, []).append(expected)
    for category, stats in report["categories"].items():
        values = by_cat[category]
        assert stats["count"] == len(values) and stats["failures"] == fails[category], category
        assert stats["mean"] == round(statistics.fmean(values), 4)
        assert stats["std"] == round(statistics.pstdev(values), 4)
        assert (stats["min"], stats["max"], stats["median"]) == (
            min(values),
            max(values),
            statistics.median(values),
        )
    pooled = [v for values in by_cat.values() for v in values]
    assert report["overall"]["count"] == 7 and report["overall"]["failures"] == 3
    assert report["overall"]["mean"] == round(statistics.fmean(pooled), 4)
    assert (
        report["headline"] == round(statistics.fmean(statistics.fmean(v) for v in by_cat.values()), 4) == 6.45
    )

    records = {
        r["id"]: r
        for r in map(json.loads, (tmp_path / RECORDS).read_text().splitlines())
        if r["phase"] == "judge"
    }
    rain = records["environment-tree-rain"]
    assert rain["overall"] is None and rain["questions"][0]["raw"] == ["Looks good!", "Great job"]
    assert "unparseable answer: no score found" in rain["error"]
    assert records["environment-house-winter"]["questions"][0]["raw"] == ["The edit looks fine overall.", "8"]
    guests = records["social-birthday-guests"]
    assert "HTTP 500" in guests["error"] and guests["questions"][0]["requests"] == 3
    assert "outside 0-10" in records["causal-ice-sun"]["error"]
    assert records["causal-candle-hours"]["questions"][0]["requests"] == 2
    assert {f["id"] for f in report["failed_samples"]} == {
        "environment-tree-rain",
        "social-birthday-guests",
        "causal-ice-sun",
    }
    md = (tmp_path / "report.md").read_text()
    assert (
        "| environment | 2 | 1 | 1 | 0 | 0 | 8.000 |" in md
        and "**Headline (mean of category means, 0–10): 6.450**" in md
    )

    # --resume redoes exactly the three failed judgments (the edits are all done: no editor load)
    identity_editor.loads = 0
    with FakeJudgeServer(lambda text, attempt: ("text", "Score: 5")) as server:
        result = run_bench(_cfg(server.url), tmp_path, resume=True, progress=False)
        asked = {index[t][0] for t in server.attempts}
    assert identity_editor.loads == 0 and result.edited == 0 and result.judged == 3
    assert asked == {"environment-tree-rain", "social-birthday-guests", "causal-ice-sun"}
    assert (
        result.report["overall"]["failures"] == 0
        and result.report["categories"]["environment"]["mean"] == 6.5
    )


VIE = {  # sample id → {question: answers by attempt (last repeats)}; strict retries answer the same
    "physics-ball-shelf": {
        "edit_success": ["Score: 8"],
        "over_editing": ["7/10"],
        "naturalness": ['{"score": 9}'],
        "artifacts": ["I would rate it 6."],
    },
    "environment-house-winter": {"edit_success": ["Score: 12"]},
    "social-handshake": {},
    "causal-candle-hours": {"artifacts": [503]},
    "referential-middle-cup": {"naturalness": ["<garbage>", "Score: 4"]},
}
VIE_DEFAULT = {"physics-ball-shelf": "Score: 9", "environment-house-winter": "Score: 9", "social-handshake": "Score: 5",
               "causal-candle-hours": "Score: 8", "referential-middle-cup": "Score: 9"}  # fmt: skip


def test_viescore_combines_sc_and_pq_exactly(tmp_path, identity_editor):
    """VIEScore: SC = min(edit_success, over_editing), PQ = min(naturalness, artifacts), overall =
    √(SC·PQ); one unreadable or failed sub-score makes the sample a failure, never a partial score."""
    index = _prompt_index("viescore", limit=5)

    def script(text, attempt):
        sample_id, name, _ = index[text]
        answers = VIE[sample_id].get(name, [VIE_DEFAULT[sample_id]])
        answer = answers[min(attempt, len(answers) - 1)]
        if answer == 503:
            return ("status", 503)
        return ("garbage", "not json") if answer == "<garbage>" else ("text", answer)

    with FakeJudgeServer(script) as server:
        report = run_bench(_cfg(server.url, "viescore", limit=5), tmp_path, progress=False).report
    cats = report["categories"]
    assert cats["physics"]["mean"] == round(math.sqrt(7 * 6), 4)
    assert cats["physics"]["metrics"] == {
        "SC": 7.0,
        "PQ": 6.0,
        "edit_success": 8.0,
        "over_editing": 7.0,
        "naturalness": 9.0,
        "artifacts": 6.0,
    }
    assert cats["social"]["mean"] == 5.0 and cats["referential"]["mean"] == 6.0
    assert (cats["environment"]["failures"], cats["causal"]["failures"]) == (1, 1)
    assert cats["environment"]["mean"] is None and cats["causal"]["count"] == 0
    assert report["headline"] == round((math.sqrt(42) + 5 + 6) / 3, 4)
    assert report["overall"]["metrics"]["SC"] == 7.0 and report["overall"]["metrics"]["PQ"] == 5.0
