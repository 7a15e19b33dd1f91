"""Test-suite setup: one torch thread per process.

The suite's models are tiny; on a small shared CPU, several threads per process are many times
slower than one (oversubscription), and subprocess tests inherit OMP_NUM_THREADS from here.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def shared_meshes_dir() -> Path | None:
    """The project's folder of real test meshes (env ``R3D_SHARED_MESHES`` or ../shared/data/meshes),
    or None when it is not there."""
    for candidate in (
        os.environ.get("R3D_SHARED_MESHES"),
        Path(__file__).parents[1].parent / "shared/data/meshes",
    ):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("*.obj")):
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests, restored after (a recipe's ``run.threads`` changes it):
    tiny models run fastest single-threaded, and numerics then match subprocesses run with
    OMP_NUM_THREADS=1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh ``R3D_CACHE_DIR`` under the test's tmp_path (no test reads or fills the user's cache)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("R3D_CACHE_DIR", str(path))
    return path
