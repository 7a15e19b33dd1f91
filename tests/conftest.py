"""Test-suite setup: one torch thread per process.

The suite's models are tiny; on a small shared CPU, several threads per process are many times
slower than one (oversubscription), and subprocess tests inherit OMP_NUM_THREADS from here.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
