"""The benchmark suite's report: machine in the header and above every table, a ratio column in each."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_voxelize, run_all  # noqa: E402
from benchmarks.common import current_rss_mib, machine_info, machine_line  # noqa: E402

INFO = {
    "cpu": "Test CPU 9000",
    "arch": "x86_64",
    "logical_cores": 4,
    "usable_cores": 2,
    "memory_gib": 8.0,
    "os": "Linux 6",
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
    "torch_threads": 1,
    "load_avg_1min": 0.1,
}

# Results shaped as each section's measure() returns them (numbers made up, structure real).
RESULTS = {
    "grpo": {
        "recipe": "recipes/tiny_mesh.yaml",
        "iterations": 3,
        "torch_threads": 1,
        "samples_per_iteration": 64,
        "train_steps_per_sample": 9,
        "kl_reference_forward": True,
        "median_seconds": {"sample_s": 0.2, "decode_s": 0.1, "reward_s": 0.5, "train_s": 0.4},
        "iteration_s": 1.2,
        "bare_sample_s": 0.15,
        "bare_train_s": 0.3,
    },
    "scaling": {
        "recipe": "recipes/tiny_mesh.yaml",
        "iterations": 2,
        "global_batch": 64,
        "runs": [
            {
                "processes": p,
                "threads": 1,
                "iteration_s": s,
                "phases_s": {"sample_s": 0.1, "decode_s": 0.1, "reward_s": 0.3, "train_s": 0.4},
                "rewards": [0.5, 0.6],
                "command_wall_s": 20.0,
                "speedup": 1.2 / s,
                "efficiency": 1.2 / s / p,
                "first_reward_equal": True,
                "max_reward_diff": 0.0,
            }
            for p, s in ((1, 1.2), (2, 0.8))
        ],
    },
    "voxelize": {
        "resolution": 64,
        "repeat": 1,
        "open3d": "open3d 0.20.0",
        "rows": [
            {
                "mesh": "a.obj",
                "faces": 12,
                "r3d_voxels": 100,
                "r3d_s": 0.01,
                "trimesh_voxels": 90,
                "trimesh_s": 0.02,
                "open3d_voxels": 100,
                "open3d_s": 0.005,
                "missing": 0,
                "extra": 0,
                "exact": True,
                "trimesh_differs": 10,
            }
        ],
    },
    "score": {
        "meshes": 2,
        "faces_total": 24,
        "batch_size": 16,
        "repeat": 1,
        "prompt": "a cube",
        "rows": [
            {"job": "load_mesh", "seconds": 0.1, "meshes_per_s": 20.0},
            {"job": "reward geometry", "seconds": 0.2, "meshes_per_s": 10.0},
        ],
        "skipped": {"semantic": "weights missing"},
    },
    "memory": {
        "rows": [{"probe": "grpo", "detail": "1 iteration", "rss_before_mib": 400.0, "peak_rss_mib": 600.0}]
    },
    "server": {
        "per_client": {1: 2, 50: 1, 200: 1},
        "runs": [
            {
                "clients": c,
                "slow_clients": slow,
                "requests": c,
                "answered": c,
                "wall_s": 1.0,
                "requests_per_s": 100.0 * c,
                "p50_ms": 2.0,
                "p95_ms": None if c == 200 else 5.0,
            }
            for slow in (0, 20)
            for c in (1, 50, 200)
        ],
        "memory": {
            "body_mib": 32.0,
            "decoded_mib": 24.0,
            "status": 200,
            "over_limit_status": 413,
            "seconds": 0.5,
            "rss_before_mib": 240.0,
            "peak_rss_mib": 268.0,
        },
    },
}


def tables(markdown: str) -> list[tuple[str, list[list[str]]]]:
    """(line above the table, rows split into cells) for every markdown table."""
    lines, out = markdown.splitlines(), []
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            above = next(line for line in reversed(lines[:i]) if line.strip())
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append((above, block))
        else:
            i += 1
    return out


def test_every_table_states_the_machine_and_has_a_consistent_ratio_column():
    """Each section's table sits under a caption naming the machine, has one cell per header in every
    row (a stray '|' would break this) and at least one (×)/(%) column whose cells are ratios."""
    report = run_all.render_report(RESULTS, INFO, "python benchmarks/run_all.py --quick", 12.0, True)
    assert "**Machine:** Test CPU 9000 (x86_64), 2 usable cores" in report.splitlines()[2]
    found = tables(report)
    assert len(found) == 8  # grpo and server have two tables each
    for above, (head, rule, *rows) in found:
        assert above.startswith("*Machine: Test CPU 9000 (x86_64), 2 cores, torch 2.13.0+cpu"), above
        assert len(rule) == len(head) and rows and all(len(r) == len(head) for r in rows), head
        ratio_cols = [j for j, h in enumerate(head) if h.endswith(("(×)", "(%)"))]
        assert ratio_cols, head
        for j in ratio_cols:
            assert all(r[j].endswith(("×", "%")) or r[j] == "–" for r in rows), (head[j], rows)


def test_failed_section_is_reported_not_dropped():
    """A section that raised shows 'Not measured' with its error; the other sections still render."""
    report = run_all.render_report(
        {"score": RESULTS["score"], "scaling": {"error": "RuntimeError: torchrun failed"}},
        INFO,
        "x",
        1.0,
        False,
    )
    assert "**Not measured** — RuntimeError: torchrun failed" in report
    assert "## 2. Mesh scoring throughput" in report


def test_machine_info_is_collected_once():
    """machine_info is cached: the header and every caption describe the same snapshot."""
    assert machine_info() is machine_info()
    assert machine_info()["torch"] in machine_line()


def test_peak_rss_of_a_child_is_its_own():
    """A small child started by this (torch-sized) process reports its own peak, not ours
    (getrusage's ru_maxrss would carry the parent's peak across exec)."""
    code = "from benchmarks.common import peak_rss_mib; print(peak_rss_mib())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) < 0.5 * current_rss_mib()


@pytest.fixture
def box_dir(tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    trimesh.creation.box(extents=(1.0, 0.6, 0.3)).export(folder / "box.obj")
    return folder


def test_run_all_measures_voxelisation_and_writes_report_and_json(box_dir, tmp_path, monkeypatch):
    """One real measurement end to end: r3d and trimesh are timed; without open3d the row says so."""
    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d → ImportError
    # the batch throughput and the JIT's cold compile start fresh processes (a minute): not here
    monkeypatch.setattr(run_all.Settings, "voxelize_meshes", property(lambda s: 0))
    monkeypatch.setattr(bench_voxelize, "jit_compile_seconds", lambda: {})
    monkeypatch.delenv("R3D_OPEN3D_PYTHON", raising=False)
    out = tmp_path / "results.md"
    code = run_all.main(["--only", "voxelize", "--meshes", str(box_dir), "--out", str(out), "--quick"])
    assert code == 0
    raw = json.loads(out.with_suffix(".json").read_text())
    (row,) = raw["sections"]["voxelize"]["rows"]
    assert row["r3d_voxels"] > 0 and row["r3d_s"] > 0 and row["trimesh_s"] > 0
    _, (head, _, cells) = tables(out.read_text())[0]
    cell = dict(zip(head, cells, strict=True))
    assert cell["open3d ms"] == bench_voxelize.NOT_INSTALLED
    assert cell["trimesh / r3d time (×)"].endswith("×")
    assert raw["machine"]["cpu"] in out.read_text().splitlines()[2]


def test_run_all_rejects_an_unknown_section(capsys):
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "voxelise"])
    assert exc.value.code == 2
    assert "unknown section(s) voxelise" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_suite_runs_every_section(tmp_path):
    """`run_all.py --quick` (about 2 minutes) measures all six sections and exits 0."""
    out = tmp_path / "results.md"
    cmd = [sys.executable, "benchmarks/run_all.py", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    raw = json.loads(out.with_suffix(".json").read_text())
    assert list(raw["sections"]) == list(run_all.SECTION_KEYS)
    assert not any("error" in s for s in raw["sections"].values())
    assert len(tables(out.read_text())) == 8


def test_server_bench_counts_answers_and_measures_the_largest_body():
    """The server bench end to end at a small scale against the real server process: 30 raw clients
    beside 3 slow-loris connections are all answered with latencies; a body of exactly the 2 MiB limit
    is accepted (200), one byte more is 413, and the server's peak memory is read after it."""
    from benchmarks import bench_server

    server = bench_server.Server("geometry")
    try:
        run = bench_server.run_level(server.port, clients=30, per_client=1, slow=3)
    finally:
        server.close()
    assert run["answered"] == run["requests"] == 30 and 0 < run["p50_ms"] <= run["p95_ms"]
    memory = bench_server.memory_probe(2)
    assert (memory["status"], memory["over_limit_status"]) == (200, 413)
    assert memory["body_mib"] == 2 and 1.4 < memory["decoded_mib"] < 1.5
    assert memory["peak_rss_mib"] >= memory["rss_before_mib"] > 0
