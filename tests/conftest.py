"""Test-wide settings.

The suite's models are tiny: one thread runs them as fast as two, and keeps the suite's time
steady when the machine is busy (an OpenMP team that shares its cores with other processes can
run many times slower). Subprocesses started by the tests inherit OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
