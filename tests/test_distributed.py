"""Data-parallel training: two CPU processes (gloo, launched by torchrun) reach the same parameters
as one process on the same global batch.

Why a VRNN can be compared exactly: every update draws the noise of the whole *global* batch from
the shared, identically seeded generator and each rank keeps its own rows, so a sequence gets the
same z-noise whichever rank holds it; the loss is scaled by world_size / global batch so that
DDP's gradient average equals the single-process mean. What remains is floating-point summation
order (gradients summed over two halves, then all-reduced), hence a small tolerance.
"""

import os
import subprocess
import sys

import pytest
import torch
from toydata import write_npz

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("extra", [["--no-tbptt"], []], ids=["sequences", "default"])
def test_two_gloo_processes_match_one_process(tmp_path, extra):
    data = write_npz(tmp_path / "toy.npz")
    args = ["-m", "vrnn", "train", "--data", str(data), "--model", "vrnn-gauss", "--preset",
            "tiny", "--max-steps", "6", "--batch-size", "8", "--val-interval", "3", "--device",
            "cpu", "--no-progress", "--seed", "3", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=180)
    assert multi.returncode == 0, multi.stdout + multi.stderr
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert one["step"] == two["step"] == 6
    for k in one["model"]:
        torch.testing.assert_close(two["model"][k], one["model"][k], rtol=1e-4, atol=1e-5)
    # the noise stream advanced identically: the global batch's noise was drawn on every rank
    assert torch.equal(one["rng"]["noise"], two["rng"]["noise"])
    # the work was split, not repeated: 6 updates of 8 sequences, summed over both ranks (a rank
    # that processed the whole batch would double this; the gradients could not tell)
    assert one["sequences_seen"] == two["sequences_seen"] == 6 * 8
    # metrics were reduced over ranks: the same validation bound
    assert two["best_bound"] == pytest.approx(one["best_bound"], rel=1e-4)
    # only rank 0 wrote: one metrics file with one header
    lines = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert sum(line.startswith("step,") for line in lines) == 1


def test_a_rank_that_joined_a_group_leaves_with_its_status_and_flushed_output():
    """exit_now skips interpreter shutdown (where gloo ranks were seen to abort) but must still
    deliver what was printed and the command's exit status; outside a group it does nothing."""
    code = ("import sys, vrnn.train.distributed as d\n"
            "d.exit_now(5)\n"  # never joined: returns
            "print('result line', end=''); print('warning', file=sys.stderr, end='')\n"
            "d._joined = True\n"
            "d.exit_now(3)\n"
            "raise SystemExit(9)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "result line", "warning")
