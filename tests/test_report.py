"""HTML reports without a browser: samples kept per evaluation, report.html of a run (every eval and
gold key, the guard, the pending evaluation, start/now pairs), the bench-edit and eval-motion pages,
self-containment (no URL fetched), escaping, and the trainer hook that must never stop training."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from r3d.cli.main import main
from r3d.commands.outputs import save_samples, split_label
from r3d.commands.runner import evaluation_preview
from r3d.core.errors import R3DError
from r3d.edit.dataset import EditSample
from r3d.motion.artifacts import Motion, save_motion_folder
from r3d.report import blocks as blocks
from r3d.report import line_chart, motion_cell, write_run_report

URL_ATTR = re.compile(r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def assert_self_contained(text: str) -> None:
    """No element loads anything from a URL, and every module specifier is in the inlined import map."""
    assert not URL_ATTR.search(text), URL_ATTR.search(text)
    assert "<link" not in text
    for spec in re.findall(r"""\bfrom\s*["']([^"']+)["']""", blocks.VIEWER_JS):
        assert spec in blocks.import_map()


def meshes() -> list:
    return [trimesh.creation.box(), trimesh.creation.cone(0.5, 1.0), None, trimesh.creation.icosphere(1)]


def toy_motion(frames: int = 12, shift: float = 0.0) -> Motion:
    feats = np.zeros((frames, 263), np.float32)
    feats[:, 3] = 0.9 + shift  # root height
    return Motion(feats)


def make_run(tmp_path: Path, guard: dict | None = None) -> Path:
    """A run folder as the trainer leaves it after evaluations at iterations 0 and 2 (no page yet)."""
    run = tmp_path / "run"
    run.mkdir(parents=True)
    records = [
        {"iteration": 0, "eval/reward": 1.0, "eval/semantic": 0.5, "eval/gold/analytic_iou": 0.40},
        {"iteration": 1, "reward": 1.05},
        {
            "iteration": 2,
            "reward": 1.1,
            "eval/reward": 1.2,
            "eval/semantic": 0.6,
            "eval/gold/analytic_iou": 0.30,
        },
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    labels = ["a cube | 1.00", "a cube | 1.50", "a cone | 0.50", "a cone | 1.00"]
    save_samples(meshes(), labels, run / "samples_start")
    save_samples(meshes(), [lab.replace("| 1", "| 2") for lab in labels], run / "samples_0002")
    if guard is not None:
        (run / "summary.json").write_text(json.dumps({"guard": guard}))
    return run


def test_save_samples_keeps_files_and_scores(tmp_path):
    """Each sample becomes NNN.<fmt> by type (GLB mesh, NPY motion, PNG image); an empty decode is
    kept as a null file; index.json holds prompt and parsed score in sample order. Catches: samples
    renumbered after a None, the score left inside the prompt, motions saved without features."""
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    arts = [trimesh.creation.box(), None, toy_motion(), image]
    labels = ["a cube | 1.25", "a cone | 0.5", "a man walks | -0.75", "a photo | x"]
    save_samples(arts, labels, tmp_path / "s")
    index = json.loads((tmp_path / "s" / "index.json").read_text())["samples"]
    assert [e["file"] for e in index] == ["000.glb", None, "002.npy", "003.png"]
    assert [(e["prompt"], e["score"]) for e in index] == [
        ("a cube", 1.25),
        ("a cone", 0.5),
        ("a man walks", -0.75),
        ("a photo | x", None),
    ]
    assert trimesh.load(tmp_path / "s" / "000.glb", force="mesh").vertices.shape[0] == 8
    assert np.load(tmp_path / "s" / "002.npy").shape == (12, 263)
    assert split_label("a | b | 2") == ("a | b", 2.0)
    with pytest.raises(R3DError, match="labels"):
        save_samples(arts, labels[:2], tmp_path / "t")


def test_run_report_shows_every_eval_and_gold_key_and_start_now_pairs(tmp_path):
    """report.html names every eval/* key (start, now, change), gives eval/gold/* their own charts,
    shows each held-out prompt's samples as start/now pairs of 3D viewers sharing a group, marks the
    empty decode, and is self-contained. Catches: gold keys dropped or mixed into the reward chart,
    pairs that do not turn together, a page that loads a CDN."""
    run = make_run(tmp_path)
    text = write_run_report(run).read_text()
    assert_self_contained(text)
    for key in ("semantic", "gold/analytic_iou"):
        assert f"<td>{key}</td>" in text
    assert "<td>0.4000</td><td>0.3000</td>" in text and 'class="down">-0.1000' in text
    assert "<h2>Gold measures</h2>" in text and ">analytic_iou</text>" in text
    assert text.count('class="cell mesh"') == 6  # 3 meshes per folder (one decode was empty)
    assert text.count('data-group="a cube#0"') == 2 and text.count('data-group="a cone#1"') == 2
    assert "empty decode" in text and "mean reward 1.250 → 2.250" in text
    assert '<script type="importmap">' in text and "data:text/javascript;base64," in text
    assert not (run / "summary.json").exists() and "guard" not in text.lower().split("<script")[0]


def test_run_report_guard_box_and_pending_evaluation(tmp_path):
    """A guard entry that fired is shown as a warning with its details; with pending=True the newest
    samples' mean score is plotted at the next iteration (its record is not in metrics.jsonl yet)."""
    run = make_run(tmp_path, guard={"fired": True, "measure": "gold/analytic_iou", "evaluations": 3})
    text = write_run_report(run, pending=True).read_text()
    assert 'class="warn"><b>Over-optimisation guard fired' in text and "gold/analytic_iou" in text
    assert "held-out @ 3: 1.7500" in text  # mean of the four scores 2.0, 2.5, 0.5, 2.0
    quiet = make_run(tmp_path / "q", guard={"fired": False})
    assert 'class="ok"><b>Over-optimisation guard</b>: no warning' in write_run_report(quiet).read_text()


def test_run_report_escapes_prompts(tmp_path):
    """A prompt with markup is text on the page, never markup."""
    run = tmp_path / "run"
    save_samples([trimesh.creation.box()], ["<script>alert(1)</script> | 1.0"], run / "samples_start")
    text = write_run_report(run).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert(1)" not in text


def test_evaluation_preview_keeps_samples_and_never_stops_training(tmp_path, monkeypatch):
    """The trainer's hook writes the contact sheet, samples_<tag>/ and report.html; when the page
    cannot be written the failure is logged and the hook returns normally."""
    run = tmp_path / "run"
    sheet = evaluation_preview(meshes(), ["a cube | 1.0"] * 4, run / "samples_start.png", policy=None)
    assert sheet is not None and sheet.is_file()
    assert (run / "samples_start" / "index.json").is_file() and (run / "report.html").is_file()

    def broken(*args, **kwargs):
        raise R3DError("disk says no")

    monkeypatch.setattr("r3d.report.write_run_report", broken)
    logged = []
    evaluation_preview(meshes(), ["a cube | 1.0"] * 4, run / "samples_0001.png", None, log=logged.append)
    assert (
        logged == ["report.html not updated: disk says no"]
        and (run / "samples_0001" / "index.json").is_file()
    )


def test_line_chart_and_cells_reject_or_survive_bad_input():
    """Charts drop non-finite points and say when nothing is left; a skeleton needs (T, 22, 3)."""
    svg = line_chart("r", {"a": [(0, float("nan")), (1, 2.0), (2, float("inf"))]})
    assert svg.count("<circle") == 1
    assert "no data yet" in line_chart("r", {"a": [(0, float("nan"))], "b": []})
    with pytest.raises(R3DError, match=r"\(T, 22, 3\)"):
        motion_cell(np.zeros((5, 21, 3)), "x")


def test_import_map_fails_clearly_when_vendored_three_changes(tmp_path, monkeypatch):
    """If an upgrade of the vendored three.js changes the relative imports the page rewrites, building
    a page with meshes fails with a one-line error instead of a page that loads nothing."""
    vendor = tmp_path / "three"
    for _, (file, _) in blocks._MODULES.items():
        (vendor / file).parent.mkdir(parents=True, exist_ok=True)
        (vendor / file).write_text("export {};")
    monkeypatch.setattr(blocks, "VENDOR", vendor)
    blocks.import_map.cache_clear()
    try:
        with pytest.raises(R3DError, match="expected import"):
            blocks.import_map()
    finally:
        blocks.import_map.cache_clear()


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return buf.getvalue()


def bench_folder(tmp_path: Path) -> tuple[dict, list[EditSample], Path]:
    """A bench-edit output folder: two judged samples (one raw text answer, one unparseable) and one
    whose edit failed, with the report dict the runner builds."""
    from r3d.edit.report import summarize

    out = tmp_path / "bench"
    samples = [
        EditSample("s1", "physics", "Drop <b>the</b> ball", image_bytes=png((200, 30, 30))),
        EditSample("s2", "physics", "Melt the ice", image_bytes=png((30, 30, 200))),
        EditSample("s3", "social", "Wave", image_bytes=png((30, 200, 30))),
    ]
    records = []
    for s, ok, raw in ((samples[0], True, "The edit is good. Score: 7"), (samples[1], False, "no idea")):
        (out / "images" / s.category).mkdir(parents=True, exist_ok=True)
        (out / "images" / s.category / f"{s.id}.png").write_bytes(png((90, 90, 90)))
        score = 7.0 if ok else None
        question = {"name": "score", "score": score, "raw": [raw], "error": None if ok else "no score found"}
        records.append(
            {
                "phase": "judge",
                "id": s.id,
                "category": s.category,
                "editor": "E",
                "judge": "J",
                "ok": ok,
                "image": f"images/{s.category}/{s.id}.png",
                "overall": score,
                "questions": [question],
            }
        )
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    outcomes = [
        {"id": "s1", "category": "physics", "status": "ok", "scores": {"overall": 7.0}},
        {"id": "s2", "category": "physics", "status": "failed", "scores": {}},
        {"id": "s3", "category": "social", "status": "edit_failed", "scores": {}},
    ]
    summary = summarize(outcomes, ["physics", "social"], ["overall"])
    report = {
        "data": {"path": "data.jsonl", "selected": 3},
        "editor": {"model": "tiny", "num_inference_steps": 2, "seed": 0, "fingerprint": "E"},
        "judge": {
            "model": "tiny",
            "backend": "local",
            "protocol": "single",
            "score_mode": "text",
            "fingerprint": "J",
        },
        **summary,
        "failed_samples": [
            {"id": "s2", "category": "physics", "status": "failed", "error": "no score found"},
            {"id": "s3", "category": "social", "status": "edit_failed", "error": "OutOfMemoryError: CUDA"},
        ],
    }
    return report, samples, out


def test_bench_edit_page_pairs_raw_answers_and_failures(tmp_path):
    """The bench-edit page has the per-category table, a source/edited pair per judged sample with
    the judge's raw answer and parsed score, the unparseable answer with its error, and every sample
    without a score with its reason; instructions are escaped; nothing is fetched."""
    from r3d.edit.report import html_report

    report, samples, out = bench_folder(tmp_path)
    text = html_report(report, samples, out).read_text()
    assert_self_contained(text)
    assert "<td>physics</td><td>2</td><td>1</td><td>1</td><td>0</td>" in text
    assert "<pre>The edit is good. Score: 7</pre>" in text and "parsed 7.000" in text
    assert "<pre>no idea</pre>" in text and "no score found" in text
    assert text.count('class="cell image"') == 5  # 3 sources + 2 edited
    assert "Samples without a score (2)" in text and "OutOfMemoryError: CUDA" in text
    assert "Drop &lt;b&gt;the&lt;/b&gt; ball" in text


def test_eval_motion_html_from_a_folder(tmp_path, capsys):
    """``eval-motion --motions DIR --html FILE`` writes the metric table with intervals and up to
    three animated skeletons per caption, and prints the page's path."""
    motions = [toy_motion(20, 0.01 * i) for i in range(32)]
    captions = ["a man walks"] * 4 + ["a man jumps"] + [f"pose {i}" for i in range(27)]
    folder = save_motion_folder(tmp_path / "m", motions, captions)
    html = tmp_path / "page.html"
    argv = ["eval-motion", "--reference-size", "64", "--num-samples", "32", "--motions", str(folder)]
    assert main([*argv, "--html", str(html)]) == 0
    assert f"page: {html}" in capsys.readouterr().out.replace("\n", "")
    text = html.read_text()
    assert_self_contained(text)
    assert "<th>ground truth</th><th>generated</th>" in text and re.search(
        r"<td>FID</td><td></td><td>[\d.]+ ± ", text
    )
    # the first four captions: three of "a man walks" (of four), then one each
    assert text.count('class="cell motion"') == 3 + 1 + 1 + 1 and "<h3>a man jumps</h3><" in text
    assert "<h3>pose 1</h3>" in text and "<h3>pose 2</h3>" not in text
