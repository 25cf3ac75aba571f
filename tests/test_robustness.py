"""The run folder through the real entry point (``python -m vrnn train``), issue 13's cases: two
runs on one --out, a folder with results but no last.pt, --overwrite then Ctrl-C, --resume from an
earlier checkpoint, SIGTERM, leftovers of kills, a damaged metrics.csv, an --out that cannot be
written. Each case runs a microscopic model for a handful of steps in a subprocess."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import finish_vrnn as finish
from toydata import metrics_rows, vrnn
from toydata import start_vrnn as start
from toydata import wait_until as wait_for

TRAIN = ("--model", "vrnn-gauss", "--preset", "tiny", "--batch-size", "8", "--val-interval", "3",
         "--device", "cpu", "--no-progress", "--no-tensorboard")
LONG = ("--max-steps", "100000", "--val-interval", "100000", "--log-interval", "1")
"""A run that goes on until a signal stops it (each test stops it within seconds)."""

posix_signals = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def write_npz(path: Path, x_dim=4, seed=0) -> Path:
    """24/6/6 random sequences of 4-9 frames, each split concatenated with its lengths (the
    documented .npz layout, which needs no pickle)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, n in (("train", 24), ("valid", 6), ("test", 6)):
        lengths = rng.integers(4, 10, size=n)
        arrays[name] = rng.normal(size=(int(lengths.sum()), x_dim)).astype(np.float32)
        arrays[f"{name}_lengths"] = lengths
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 6-step run (last.pt and best.pt, metrics.csv, config.json), copied by tests,
    and a copy of its last.pt at step 3 (``early``)."""
    root = tmp_path_factory.mktemp("robust")
    data = write_npz(root / "toy.npz")
    out = root / "base"
    vrnn("train", "--data", data, "--out", out, *TRAIN, "--max-steps", "3")
    shutil.copy(out / "last.pt", root / "early.pt")
    vrnn("train", "--data", data, "--out", out, *TRAIN, "--max-steps", "6", "--resume", "auto")
    return {"data": data, "out": out, "early": root / "early.pt"}


def copy_run(base, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base["out"], out)
    return out


def step_of(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


def error_line(proc) -> str:
    """The one line of a user error: status 2, no traceback, no raw errno."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) >= 1 and "Traceback" not in proc.stderr, proc.stderr
    line = [s for s in lines if "error:" in s]
    assert len(line) == 1, proc.stderr
    assert "Errno" not in line[0] and "invalid literal" not in line[0], line[0]
    return line[0]


def holds_lock(out: Path, pid: int) -> bool:
    try:
        return f'"pid": {pid},' in (out / ".lock").read_text()
    except FileNotFoundError:
        return False


# -- the cases ----------------------------------------------------------------------------------

@posix_signals
def test_a_second_train_on_the_same_out_refuses_while_the_first_runs(base, tmp_path):
    out = tmp_path / "run"
    first = start(tmp_path, "train", "--data", base["data"], "--out", out, *TRAIN, *LONG)
    wait_for(lambda: holds_lock(out, first.pid), first, "the first run's lock")
    second = vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--max-steps", "2",
                  "--resume", "auto", check=False)
    line = error_line(second)
    assert f"{out} is in use by pid {first.pid}" in line and "another --out" in line
    wait_for(lambda: metrics_rows(out) >= 1, first, "the first run to train")  # it goes on
    code, stdout, stderr = finish(first, signal.SIGINT)
    assert code == 130 and "interrupted" in stdout, f"status {code}:\n{stdout}\n{stderr}"
    assert step_of(out / "last.pt") >= 1 and not (out / ".lock").exists()


@posix_signals
def test_a_killed_runs_lock_is_taken_over_by_the_next_run_with_a_warning(base, tmp_path):
    out = tmp_path / "run"
    first = start(tmp_path, "train", "--data", base["data"], "--out", out, *TRAIN, *LONG)
    wait_for(lambda: metrics_rows(out) >= 1, first, "the first run to train")
    finish(first, signal.SIGKILL)  # no handler runs: the lock file stays behind
    assert holds_lock(out, first.pid)
    proc = vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--max-steps", "2",
                "--resume", "auto")
    assert f"taking over the lock of pid {first.pid}" in proc.stderr
    assert step_of(out / "last.pt") == 2 and not (out / ".lock").exists()


def test_a_folder_with_best_pt_and_metrics_but_no_last_pt_is_not_overwritten(base, tmp_path):
    out = copy_run(base, tmp_path)
    (out / "last.pt").unlink()
    (out / "config.json").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--max-steps", "2",
                check=False)
    line = error_line(proc)
    assert str(out) in line and "best.pt" in line and "metrics.csv" in line
    assert "--overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@posix_signals
def test_overwrite_then_an_early_ctrl_c_leaves_nothing_of_the_old_run(base, tmp_path):
    out = copy_run(base, tmp_path)
    old_best = (out / "best.pt").stat().st_ino
    proc = start(tmp_path, "train", "--data", base["data"], "--out", out, *TRAIN, *LONG,
                 "--overwrite", "--seed", "7")

    def cleared() -> bool:
        try:
            return (out / "best.pt").stat().st_ino != old_best
        except FileNotFoundError:
            return True

    wait_for(cleared, proc, "--overwrite to clear the folder")
    code, stdout, stderr = finish(proc, signal.SIGINT)
    # 130 from the command line's own handling, or (seen once in 5 suite runs, when the signal
    # landed in the start-up just after the clearing) the process ended by the SIGINT itself:
    # a shell shows 130 for both. What this test is about is what the folder holds afterwards.
    assert code in (130, -signal.SIGINT), stdout + stderr
    for ckpt in out.glob("*.pt"):  # whatever is there is the new run's
        assert torch.load(ckpt, weights_only=True)["train_config"]["seed"] == 7, ckpt.name
    if (out / "config.json").exists():
        assert '"seed": 7' in (out / "config.json").read_text()
    assert not list(out.glob(".trash-*")) and not (out / ".lock").exists()


def test_resume_from_an_earlier_checkpoint_into_its_folder_needs_rewind(base, tmp_path):
    out = copy_run(base, tmp_path)
    shutil.copy(base["early"], out / "best.pt")  # a best.pt at step 3 beside last.pt at step 6
    assert (step_of(out / "best.pt"), step_of(out / "last.pt")) == (3, 6)
    args = ("train", "--data", base["data"], "--out", out, *TRAIN, "--max-steps", "8",
            "--resume", out / "best.pt")
    line = error_line(vrnn(*args, check=False))
    assert "step 3" in line and "step 6" in line and "--rewind" in line
    assert step_of(out / "last.pt") == 6
    proc = vrnn(*args, "--rewind")
    assert "from step 6 to step 3" in proc.stderr
    assert step_of(out / "last.pt") == 8


@posix_signals
def test_sigterm_saves_last_pt_and_exits_like_a_signal(base, tmp_path):
    out = tmp_path / "run"
    proc = start(tmp_path, "train", "--data", base["data"], "--out", out, *TRAIN, *LONG)
    wait_for(lambda: metrics_rows(out) >= 2, proc, "a few logged steps")
    code, stdout, stderr = finish(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, f"status {code}:\n{stdout}\n{stderr}"  # 143
    assert "interrupted" in stdout
    assert step_of(out / "last.pt") >= 2
    assert not (out / ".lock").exists()
    vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--resume", "auto",
         "--max-steps", str(step_of(out / "last.pt") + 1))


def test_leftover_temporaries_of_kills_are_removed_at_start(base, tmp_path):
    out = copy_run(base, tmp_path)
    stale = [".last.pt.k3j2h1.tmp", ".best.pt.x9.tmp", ".metrics.csv.q1.tmp"]
    for name in stale:
        (out / name).write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("mine")
    vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--resume", "auto",
         "--max-steps", "7")
    assert not [name for name in stale if (out / name).exists()]
    assert (out / "notes.tmp").read_text() == "mine"
    assert step_of(out / "last.pt") == 7


def test_resume_drops_a_partial_metrics_line_from_a_kill_with_a_note(base, tmp_path):
    out = copy_run(base, tmp_path)
    with open(out / "metrics.csv", "a", newline="") as f:
        f.write("2,0,24,0.5,-123.25")  # a row cut short by a kill: no line end
    proc = vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--resume", "auto",
                "--max-steps", "7")
    assert "metrics.csv: dropped a partial last line (from an interrupted write)" in proc.stderr
    text = (out / "metrics.csv").read_text()
    assert "-123.25" not in text
    width = text.splitlines()[0].count(",")
    assert all(line.count(",") == width for line in text.splitlines())


def test_a_malformed_metrics_row_names_the_file_and_line(base, tmp_path):
    out = copy_run(base, tmp_path)
    lines = (out / "metrics.csv").read_text().splitlines(keepends=True)
    lines.insert(2, "three,0,0\r\n")
    (out / "metrics.csv").write_text("".join(lines), newline="")
    proc = vrnn("train", "--data", base["data"], "--out", out, *TRAIN, "--resume", "auto",
                "--max-steps", "7", check=False)
    line = error_line(proc)
    assert f"{out / 'metrics.csv'}, line 3" in line
    assert step_of(out / "last.pt") == 6


def test_an_out_that_is_a_file_is_one_line_naming_it(base, tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    line = error_line(vrnn("train", "--data", base["data"], "--out", f, *TRAIN,
                           "--max-steps", "2", check=False))
    assert f"{f} is a file, not a folder" in line
    assert f.read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
@pytest.mark.parametrize("below", [False, True])
def test_a_read_only_out_is_one_line_naming_it(base, tmp_path, below):
    """As root (who ignores permissions) the run drops root's permission override first (see
    test_run_folder.drop_root_permission_override); skipped where it cannot."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    out = ro / "run" if below else ro
    cmd = [sys.executable, "-m", "vrnn", "train", "--data", str(base["data"]), "--out", str(out),
           *TRAIN, "--max-steps", "2"]
    extra = {}
    if os.geteuid() == 0:
        if not sys.platform.startswith("linux"):
            pytest.skip("root, and no capabilities to drop on this platform")
        from test_run_folder import drop_root_permission_override

        extra["preexec_fn"] = drop_root_permission_override
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **extra)
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"cannot drop root's permission override here: {e}")
    finally:
        ro.chmod(0o755)
    line = error_line(proc)
    assert f"--out {out}" in line and "permission denied" in line
