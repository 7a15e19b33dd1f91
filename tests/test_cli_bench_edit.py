"""``r3d bench-edit`` end to end, offline: tiny editor + tiny judge on the shipped sample, reports, a
SIGKILL mid-run resumed to the same report, split phases and one-line errors (through ``main``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from r3d.cli.main import main

FAST = ["--limit", "5", "--set", "editor.num_inference_steps=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run over the first five samples (one per category)."""
    out = tmp_path_factory.mktemp("bench") / "ref"
    assert main(["bench-edit", "--out", str(out), *FAST]) == 0
    return out


def test_offline_run_writes_images_records_and_reports(reference):
    """Edit + judge + report run offline: one image per sample under images/<category>/<id>.png, one
    edit and one judge record per sample, JSON / Markdown / PNG reports and a log."""
    report = json.loads((reference / "report.json").read_text())
    assert report["overall"]["samples"] == 5 and report["overall"]["count"] == 5
    assert set(report["categories"]) == {"physics", "environment", "social", "causal", "referential"}
    assert all(s["count"] == 1 and s["failures"] == 0 for s in report["categories"].values())
    assert 0.0 <= report["headline"] <= 10.0
    assert report["editor"]["model"] == "tiny" and report["judge"]["score_mode"] == "expected"
    recs = records(reference)
    assert sorted(r["phase"] for r in recs) == ["edit"] * 5 + ["judge"] * 5
    for r in recs:
        if r["phase"] == "edit":
            assert r["image"] == f"images/{r['category']}/{r['id']}.png"
            with Image.open(reference / r["image"]) as im:
                assert im.size == (128, 128)
        else:
            assert r["ok"] and r["questions"][0]["digit_mass"] > 0
    assert "| **all** | 5 | 5 | 0 | 0 | 0 |" in (reference / "report.md").read_text()
    assert (reference / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "judged referential-middle-cup" in (reference / "bench_edit.log").read_text()


def test_sigkill_then_resume_gives_the_same_report(reference, tmp_path, capsys):
    """Killed with SIGKILL after some samples, the resumed run redoes no completed sample and ends with
    the same report as the uninterrupted run."""
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "r3d", "bench-edit", "--out", str(out), *FAST]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "records.jsonl").is_file() and len(records(out)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished (or died) before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    before = records(out)
    done = {r["id"] for r in before if r["phase"] == "edit"}
    assert 2 <= len(done) < 5 and not any(r["phase"] == "judge" for r in before)

    code, stdout, _ = run(["bench-edit", "--out", str(out), *FAST, "--resume"], capsys)
    assert code == 0, stdout
    after = records(out)
    edits = [r["id"] for r in after if r["phase"] == "edit"]
    assert all(edits.count(i) == 1 for i in done), "a completed sample was edited again"
    assert len(edits) == len(set(edits)) == 5
    assert comparable(json.loads((out / "report.json").read_text())) == comparable(
        json.loads((reference / "report.json").read_text())
    )


def test_existing_run_needs_resume_and_resume_of_a_finished_run_does_nothing(reference, capsys):
    """Reusing --out without --resume is a one-line error; --resume on a finished run redoes nothing;
    --report-only rebuilds the same report from the records."""
    code, _, err = run(["bench-edit", "--out", str(reference), *FAST], capsys)
    assert (
        code == 2
        and "already holds a bench-edit run; pass --resume" in err
        and len(err.strip().splitlines()) == 1
    )
    before = (reference / "records.jsonl").read_text()
    code, out, _ = run(["bench-edit", "--out", str(reference), *FAST, "--resume"], capsys)
    assert code == 0 and "edited 0 (already done 5), judged 0 (already done 5)" in out
    assert (reference / "records.jsonl").read_text() == before
    report = json.loads((reference / "report.json").read_text())
    code, out, _ = run(["bench-edit", "--out", str(reference), *FAST, "--report-only", "--json"], capsys)
    assert code == 0 and comparable(json.loads(out)) == comparable(report)


def test_judge_only_adds_a_second_judge_without_editing(reference, tmp_path, capsys):
    """--judge-only with another judge protocol scores the existing edits (no new edit records) and
    reports VIEScore sub-scores; the first judge's records stay in place."""
    import shutil

    out = tmp_path / "second-judge"
    shutil.copytree(reference, out)
    argv = [
        "bench-edit",
        "--out",
        str(out),
        *FAST,
        "--judge-only",
        "--set",
        "judge.protocol=viescore",
        "--json",
    ]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["overall"]["count"] == 5 and set(report["overall"]["metrics"]) >= {"SC", "PQ"}
    recs = records(out)
    assert sum(r["phase"] == "edit" for r in recs) == 5 and sum(r["phase"] == "judge" for r in recs) == 10


def test_invalid_data_is_a_one_line_error(tmp_path, capsys):
    """Invalid records stop the run before any model loads, with a summary naming each problem."""
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"id": "a", "category": "physiks", "instruction": "x", "image": "a.png"})
        + "\n"
        + json.dumps({"id": "b", "category": "social", "image": "data:image/png;base64,!!"})
        + "\n"
    )
    code, _, err = run(["bench-edit", "--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "2 invalid" in err and "unknown category 'physiks'" in err and "missing field(s): instruction" in err
    )
    assert not (tmp_path / "o").exists()
