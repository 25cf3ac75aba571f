"""Small synthetic data files and a subprocess runner shared by the command-line tests."""

import os
import subprocess
import sys

import numpy as np


def vrnn(*args, cwd=None, check=True, timeout=180):
    """Run ``python -m vrnn ARGS`` in a subprocess; AssertionError with its output on failure."""
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    proc = subprocess.run([sys.executable, "-m", "vrnn", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vrnn {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def write_npz(path, x_dim=4, n_train=24, seed=0):
    """An .npz with train/valid/test splits of n_train/6/6 random sequences of 4-9 frames, in the
    pickle-free layout that ``--data`` reads (``vrnn.data.pack_sequences``)."""
    from vrnn.data import pack_sequences

    rng = np.random.default_rng(seed)

    def split(n):
        return [rng.normal(size=(int(rng.integers(4, 10)), x_dim)).astype(np.float32)
                for _ in range(n)]

    pack_sequences({"train": split(n_train), "valid": split(6), "test": split(6)}, path)
    return path


def tiny_train_config(data, out, **kw):
    """The tiny VRNN-Gauss on ``data``: 8 steps, validating every 4, written into ``out``."""
    from vrnn.train.loop import TrainConfig

    base = dict(data=data, model="vrnn-gauss", preset="tiny", max_steps=8, out_dir=str(out),
                batch_size=8, val_interval=4, log_interval=2, progress=False,
                tensorboard=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


# -- a command in the background, stopped by a signal ---------------------------------------------

def _sigint_default() -> None:
    """In the child before exec: SIGINT at its default, as a shell's foreground job has it (a job
    started with & from a script ignores SIGINT, and a Python started so would not see Ctrl-C)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_vrnn(folder, *args, group: bool = False):
    """``python -m vrnn ARGS`` in the background, unbuffered, its stdout and stderr in files in
    ``folder``; finish it with :func:`finish_vrnn`. ``group``: in a process group of its own,
    as a shell's job is (a terminal's Ctrl-C goes to the whole group)."""
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning", "PYTHONUNBUFFERED": "1"}
    paths = (folder / "bg.out", folder / "bg.err")
    with open(paths[0], "w") as out, open(paths[1], "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vrnn", *map(str, args)], stdout=out,
                                stderr=err, env=env, preexec_fn=_sigint_default,
                                process_group=0 if group else None)
    proc.paths = paths
    return proc


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: read from /proc; elsewhere none)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def finish_vrnn(proc, sig=None, timeout=120, group=False) -> tuple[int | None, str, str]:
    """Send ``sig`` (if any) to the command alone (``group``: to its process group, as a
    terminal's Ctrl-C), wait for it (past ``timeout`` killing it and its child processes, status
    None); (status, stdout, stderr)."""
    import signal

    if sig is not None and proc.poll() is None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in children_of(proc.pid):
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=30)
        code = None
    return code, proc.paths[0].read_text(), proc.paths[1].read_text()


def wait_until(condition, proc, what: str, timeout=120.0) -> None:
    """Poll ``condition()`` until true; fail (stopping ``proc``) if ``proc`` ends first or past
    ``timeout`` seconds."""
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            code, out, err = finish_vrnn(proc)
            pytest.fail(f"the command ended ({code}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            finish_vrnn(proc, timeout=0.1)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def metrics_rows(run_dir) -> int:
    """Rows of ``run_dir/metrics.csv`` (0 before it exists)."""
    try:
        return max(0, (run_dir / "metrics.csv").read_text().count("\n") - 1)
    except FileNotFoundError:
        return 0
