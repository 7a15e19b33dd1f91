"""First contact: the brief's commands as written, usage mistakes, help examples, imports.

Runs under whatever typer/click ``pip install`` resolves today (recent typer vendors click as
``typer._click``, which once turned every usage mistake into a traceback).
"""

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

import r3d
from r3d.cli.main import COMMANDS, main
from r3d.core.errors import R3DError


def r3d_command() -> list[str]:
    """The installed ``r3d`` console script of this interpreter's environment (else ``python -m r3d``)."""
    script = Path(sys.executable).parent / "r3d"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "r3d"]


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        r3d_command() + args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **env},
    )


# ------------------------------------------------------------------ usage mistakes
MISTAKES = [
    ["bogus-command"],
    *[[name, "--bogus-option"] for name in COMMANDS],
    ["voxelize"],  # missing argument
    ["score"],
    ["sample"],  # missing required option
    ["export"],
    ["voxelize", "a.obj", "--out", "v", "--resolution", "abc"],  # bad value type
    ["sample", "-p", "a cube", "-n", "x"],
    ["score", "a.obj", "--batch-size", "many"],
    ["eval-motion", "--replications", "abc"],
    ["bench-edit", "--limit", "ten"],
    ["grpo", "recipes/tiny_mesh.yaml", "--set", "train.iterations=abc"],  # bad recipe value
    ["grpo", "recipes/tiny_mesh.yaml", "--set", "train.iteratons=3"],  # unknown recipe key
    ["grpo", "recipes/no_such_recipe.yaml"],
    ["train-vqvae"],  # missing recipe
    ["fetch-weights", "no-such-weights"],  # unknown name
    ["score", "box.obj", "--rewards", "geometry,bogus"],  # unknown name in a list option
    ["eval-motion", "--evaluator", "bogus"],
    ["bench-edit", "--categories", "bogus", "--out", "x"],
]


@pytest.mark.parametrize("argv", MISTAKES, ids=lambda a: " ".join(a)[:60])
def test_every_usage_mistake_is_a_short_message_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    """No traceback and exit code 2 for an unknown command/option, a missing argument, a bad value
    type or an unknown name, for every subcommand."""
    monkeypatch.chdir(tmp_path)
    trimesh.creation.box().export(tmp_path / "box.obj")  # a real mesh for the mistakes that need one
    assert main(argv) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    assert "Error:" in text or "error:" in text
    assert len(text.strip().splitlines()) <= 6, text


def test_usage_mistake_through_the_console_script_has_no_traceback(tmp_path):
    """The installed ``r3d`` entry point itself (not only main()) exits 2 with a usage message."""
    result = run_cli(["voxelize"], tmp_path)
    assert result.returncode == 2
    assert "Usage: r3d voxelize" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_debug_still_shows_the_traceback_of_a_real_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(R3DError, match="recipe not found"):
        main(["--debug", "grpo", "missing.yaml"])
    main(["grpo", "missing.yaml"])  # and without --debug it is one line again (resets the flag)


# ------------------------------------------------------------------ help
@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_help_shows_a_runnable_example(name, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert "Example" in text
    assert f"r3d {name}" in text.split("Example", 1)[1]


# ------------------------------------------------------------------ the brief's four commands
def test_fetch_weights_family_name_offline_names_the_resolved_weights(tmp_path):
    """`r3d fetch-weights hunyuan3d` resolves to hunyuan3d-2.1; offline, one line says what to do."""
    result = run_cli(
        ["fetch-weights", "hunyuan3d"], tmp_path, HF_ENDPOINT="http://127.0.0.1:9", R3D_HOME=str(tmp_path)
    )
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) <= 2 and "Traceback" not in err
    assert "hunyuan3d-2.1" in err and "offline" in err


def test_fetch_weights_family_name_downloads_the_default_member(tmp_path, capsys):
    from fake_hub import FakeHub

    from r3d.core.weights import ALIASES, MANIFEST

    for alias, target in ALIASES.items():
        assert target in MANIFEST, alias
    spec = MANIFEST["hunyuan3d-2.1"]
    files = {f: f"content of {f}".encode() for f in spec.files}
    with FakeHub({spec.repo_id: files}) as hub:
        os.environ["HF_ENDPOINT"] = hub.endpoint
        try:
            assert main(["fetch-weights", "hunyuan3d", "--local-dir", str(tmp_path / "w")]) == 0
        finally:
            del os.environ["HF_ENDPOINT"]
    for name, data in files.items():
        assert (tmp_path / "w" / name).read_bytes() == data
    assert "hunyuan3d-2.1" in capsys.readouterr().out


def test_fetch_weights_list_shows_the_aliases(capsys):
    assert main(["fetch-weights", "--list"]) == 0
    assert "hunyuan3d → hunyuan3d-2.1" in capsys.readouterr().out


def test_grpo_mesh_uni3d_without_a_gpu_is_one_line_from_an_empty_folder(tmp_path):
    """recipes/mesh_uni3d.yaml is found among r3d's shipped recipes from any folder."""
    result = run_cli(["grpo", "recipes/mesh_uni3d.yaml"], tmp_path)
    if result.returncode == 0:
        pytest.skip("this machine has a GPU and the weights")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any(tmp_path.iterdir()), "a failed start must not leave a run folder"


def test_score_mesh_glb_in_an_empty_folder(tmp_path):
    trimesh.creation.annulus(0.3, 0.6, 0.4).export(tmp_path / "mesh.glb")
    result = run_cli(["score", "mesh.glb", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records[0]["ok"] and 0 <= records[0]["scores"]["geometry"] <= 1


def test_bench_edit_resume_with_nothing_to_resume_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench-edit", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "Traceback" not in err


def test_bench_edit_default_folder_and_resume_of_the_latest_run(tmp_path, monkeypatch, capsys):
    """`r3d bench-edit` writes runs/bench-edit/<date-time>/; after a kill (records cut short),
    `r3d bench-edit --resume` continues that latest run with its own recipe to the same report."""
    monkeypatch.chdir(tmp_path)
    assert main(["bench-edit", "--limit", "2", "--json"]) == 0
    capsys.readouterr()
    (run,) = (tmp_path / "runs" / "bench-edit").iterdir()
    full = json.loads((run / "report.json").read_text())
    records = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text(records[0] + "\n")  # as if killed after the first record
    (run / "report.json").unlink()
    assert main(["bench-edit", "--resume", "--json"]) == 0
    assert f"continuing runs/bench-edit/{run.name}" in capsys.readouterr().err
    resumed = json.loads((run / "report.json").read_text())
    assert resumed["overall"] == full["overall"]
    assert len(list((tmp_path / "runs" / "bench-edit").iterdir())) == 1


# ------------------------------------------------------------------ dependencies
def test_every_module_of_r3d_imports():
    """Every third-party module imported at module level is installed by `pip install -e .`."""
    failures = {}
    for info in pkgutil.walk_packages(r3d.__path__, "r3d."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 — report every failing module at once
            failures[info.name] = f"{type(exc).__name__}: {exc}"
    assert not failures


def test_the_version_comes_from_one_place():
    from importlib.metadata import version

    assert version("r3d") == r3d.__version__


def test_the_wheel_ships_every_recipe_where_a_wheel_install_looks(tmp_path):
    """`r3d grpo recipes/tiny_mesh.yaml` must work after `pip install r3d` too (not only in a checkout):
    the wheel carries every recipes/*.yaml as data files under share/r3d/recipes, the folder
    r3d.core.recipe looks in when there is no source checkout."""
    import subprocess
    import sys
    import zipfile

    from r3d.core import recipe

    root = Path(recipe.__file__).resolve().parents[2]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
    ]
    subprocess.run([*cmd, str(root)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("r3d-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.name for p in (root / "recipes").glob("*.yaml")}
    in_wheel = {Path(n).name for n in names if "/data/share/r3d/recipes/" in n}
    assert shipped and in_wheel == shipped
    assert str(recipe.shipped_recipes_dir()) == str(root / "recipes")  # a checkout uses its own folder
