"""Test-suite setup: one torch thread per process.

The suite's models are tiny; on a small shared CPU, several threads per process are many times
slower than one (oversubscription), and subprocess tests inherit OMP_NUM_THREADS from here.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh ``R3D_CACHE_DIR`` under the test's tmp_path (no test reads or fills the user's cache)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("R3D_CACHE_DIR", str(path))
    return path
