"""Test-wide settings.

The suite's models are tiny: one thread runs them as fast as two, and keeps the suite's time
steady when the machine is busy (an OpenMP team that shares its cores with other processes can
run many times slower). Subprocesses started by the tests inherit OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import pytest  # noqa: E402

REQUIRE_DATA = os.environ.get("VRNN_REQUIRE_DATA") == "1"
"""Set by ``.ci/run``: there the set-up installs every built-in data set, so a test of the built-in
data (``test_*_builtin.py``) that skips for want of its data is a failure of the set-up, not a
skip."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_DATA and report.skipped and item.path.name.endswith("_builtin.py"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"VRNN_REQUIRE_DATA=1 but this built-in data test skipped: {reason}")
